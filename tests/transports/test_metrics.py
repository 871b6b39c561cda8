"""``GET /metrics``: what the relay counted, read back exactly, behind the native server and uvicorn.

Counters grow for the life of a relay, and a uvicorn process is shared by the tests of one
configuration, so each scenario compares two scrapes: before and after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from doors import NATIVE_DOORS, Relay, wait_for_connections
from prometheus_client.parser import text_string_to_metric_families
from rawws import http, post, upgrade_request
from redisproc import redis_server
from wsclient import Client, clients, expect_close, join_all, recv_json

from conftest import make_config, running
from relaycore import Config, ConfigError
from transports.server import RelayServer

pytestmark = [pytest.mark.anyio, pytest.mark.doors(*NATIVE_DOORS, "uvicorn")]

LIMIT = 1024
CONFIG = make_config(
    f"""
[limits]
max_message_bytes = {LIMIT}
messages_per_second = 0.001
messages_burst = 10

[metrics]
enabled = true

[namespaces."game"]
send_key = "sk"
"""
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(path: str, headers: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n".encode()


async def scrape(relay: Relay, headers: str = "") -> Samples:
    status, fields, body = await http(relay.port, get("/metrics", headers))
    assert status == 200, body
    assert fields["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name{labels}``, which must be in the scrape (a renamed or unexported
    metric fails here rather than reading as 0)."""
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"no sample {name}{labels or ''} in the scrape; it has {sorted({k[0] for k in samples})}"
    return samples[key]


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much ``name{labels}`` grew; it may be new since ``before``, but must be in ``after``."""
    return value(after, name, **labels) - before.get((name, tuple(sorted(labels.items()))), 0.0)


def counted(before: Samples, after: Samples, prefix: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the counters named ``prefix...`` that changed."""
    return {
        key: after[key] - before.get(key, 0.0)
        for key in after
        if key[0].startswith(prefix) and after[key] != before.get(key, 0.0)
    }


async def relayed(client: Client) -> str:
    """The next frame, which must be a relayed message: its text, as the relay counted it."""
    text = await client.recv()
    assert isinstance(text, str) and "message" in json.loads(text) and "type" not in json.loads(text), text
    return text


async def error_of(client: Client) -> str:
    frame = await recv_json(client)
    assert frame["type"] == "error", frame
    return str(frame["message"])


async def test_a_scenario_is_counted_exactly(door: str) -> None:
    async with running(CONFIG, door=door) as relay:
        before = await scrape(relay)
        out_bytes = {"": 0, "game": 0}
        async with clients(relay.port) as connect:
            big = await connect("/c/room")
            await recv_json(big)
            await big.send(json.dumps("x" * (LIMIT + 100)))
            assert await expect_close(big) == 1009

            ann = await connect("/c/room")
            await recv_json(ann)
            bob = await connect("/c/room")
            bob_uid = (await recv_json(bob))["uid"]
            await recv_json(ann)  # Bob's join
            game, listener = await join_all(connect, "/c/game:1?sendKey=sk", "/c/game:1")
            flood = await connect("/c/flood")
            await recv_json(flood)
            during = await scrape(relay)
            assert value(during, "relaycore_connections") == 5
            assert value(during, "relaycore_channels", namespace="") == 2
            assert value(during, "relaycore_channels", namespace="game") == 1
            assert value(during, "relaycore_members", namespace="") == 3
            assert value(during, "relaycore_members", namespace="game") == 2

            for n in range(3):
                await ann.send(json.dumps({"n": n, "text": "é"}))
                out_bytes[""] += len((await relayed(bob)).encode())
            await ann.send(f"\x1f{bob_uid}\x1f" + '{"direct":true}')
            out_bytes[""] += len((await relayed(bob)).encode())
            await ann.send("undefined")
            assert await error_of(ann) == "Invalid JSON message."
            await ann.send('\x1fnobody\x1f"hello?"')
            assert await error_of(ann) == "User nobody not found."
            for n in range(11):  # a burst of 10, then one over the rate
                await flood.send(str(n))
            assert (await error_of(flood)).startswith("Rate limit exceeded")

            await game.send('"go"')
            out_bytes["game"] += len((await relayed(listener)).encode())
            await listener.send('"me too"')
            assert await error_of(listener) == "Sending requires a valid sendKey."
            status, _, _ = await http(relay.port, post("/push/game:1", b'{"pushed":1}', "x-send-key: sk\r\n"))
            assert status == 200
            for member in (game, listener):
                out_bytes["game"] += len((await relayed(member)).encode())
            assert (await http(relay.port, post("/push/game:1", b"1", "x-send-key: nope\r\n")))[0] == 403
            assert (await http(relay.port, post("/push/room", b"1")))[0] == 403

            assert (await http(relay.port, upgrade_request("/c/game:2?sendKey=guess")))[0] == 403
            assert (await http(relay.port, upgrade_request("/c/")))[0] == 400
        await wait_for_connections(relay.port, 0)
        after = await scrape(relay)

    assert value(after, "relaycore_connections") == 0
    assert counted(before, after, "relaycore_messages_received") == {
        ("relaycore_messages_received_total", (("namespace", ""),)): 3 + 1 + 1 + 1 + 11,
        ("relaycore_messages_received_total", (("namespace", "game"),)): 2,
    }
    assert counted(before, after, "relaycore_messages_delivered") == {
        ("relaycore_messages_delivered_total", (("namespace", ""),)): 4,
        ("relaycore_messages_delivered_total", (("namespace", "game"),)): 3,
    }
    assert delta(before, after, "relaycore_bytes_out_total", namespace="") == out_bytes[""]
    assert delta(before, after, "relaycore_bytes_out_total", namespace="game") == out_bytes["game"]
    drops = {key[1]: n for key, n in counted(before, after, "relaycore_messages_dropped").items()}
    assert drops == {
        (("namespace", ""), ("reason", "size")): 1,
        (("namespace", ""), ("reason", "invalid_json")): 1,
        (("namespace", ""), ("reason", "unknown_uid")): 1,
        (("namespace", ""), ("reason", "rate")): 1,
        (("namespace", "game"), ("reason", "send_key")): 1,
    }
    closes = {key[1]: n for key, n in counted(before, after, "relaycore_closes").items()}
    assert closes == {
        (("code", "1009"), ("namespace", "")): 1,
        (("code", "1000"), ("namespace", "")): 3,
        (("code", "1000"), ("namespace", "game")): 2,
    }
    refused = {key[1]: n for key, n in counted(before, after, "relaycore_handshakes_refused").items()}
    assert refused == {(("status", "403"),): 1, (("status", "400"),): 1}
    pushes = {key[1]: n for key, n in counted(before, after, "relaycore_pushes").items()}
    assert pushes == {(("status", "200"),): 1, (("status", "403"),): 2}


TOKEN_CONFIG = make_config('[metrics]\nenabled = true\ntoken = "s3cret-token"\n')


async def test_a_token_guards_the_metrics(door: str) -> None:
    async with running(TOKEN_CONFIG, door=door) as relay:
        for headers in ("", "Authorization: Bearer wrong\r\n", "Authorization: s3cret-token\r\n"):
            status, fields, _ = await http(relay.port, get("/metrics", headers))
            assert status == 401, headers
            assert fields["www-authenticate"] == "Bearer"
        samples = await scrape(relay, "Authorization: Bearer s3cret-token\r\n")
        assert value(samples, "relaycore_connections") == 0


async def test_metrics_are_off_by_default(door: str) -> None:
    async with running(make_config(), door=door) as relay:
        status, _, body = await http(relay.port, get("/metrics"))
        assert status == 404
        assert body == b"Not found."


@pytest.mark.doors(*NATIVE_DOORS)
async def test_each_relay_has_its_own_registry(anyio_backend: str) -> None:
    async with running(CONFIG) as one, running(CONFIG) as two, clients(one.port) as connect:
        member = await connect("/c/room")
        await recv_json(member)
        assert value(await scrape(one), "relaycore_connections") == 1
        assert value(await scrape(two), "relaycore_connections") == 0
        assert one.metrics.registry is not two.metrics.registry


def test_the_metrics_table_reads_from_the_file_and_the_environment() -> None:
    config = Config.from_toml(b'[metrics]\nenabled = true\ntoken = "t"\n', env={"RELAYCORE_METRICS_TOKEN": "u"})
    assert (config.metrics.enabled, config.metrics.token) == (True, "u")
    assert Config().metrics.enabled is False
    with pytest.raises(ConfigError, match="tokn"):
        Config.from_toml(b"[metrics]\ntokn = 1\n", env={})


def test_metrics_without_prometheus_client_are_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigError, match=r"relaycore\[metrics\]"):
        RelayServer(CONFIG)
    code = (
        "import sys; sys.modules['prometheus_client'] = None; from transports.cli import main; "
        "sys.exit(main(['serve', '--port', '0']))"
    )
    env = {name: value for name, value in os.environ.items() if not name.startswith("RELAYCORE_")}
    env["RELAYCORE_METRICS_ENABLED"] = "true"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == "relaycore: metrics need prometheus-client: pip install 'relaycore[metrics]'"


@pytest.mark.doors(*NATIVE_DOORS)
async def test_a_cluster_node_exports_its_cluster_counters(anyio_backend: str, tmp_path: Path) -> None:
    """Two in-process nodes on a real Redis: a broadcast crosses, the ping comes back."""
    async with redis_server(tmp_path) as redis:
        config = make_config(
            f'[cluster]\nredis_url = "{redis.url}"\nheartbeat_interval = 0.1\nnode_timeout = 1.0\n'
            "[metrics]\nenabled = true\n"
        )
        async with running(config) as one, running(config) as two, clients(one.port) as connect_one:
            with anyio.fail_after(10):
                while one.backplane.ping_seconds is None or two.backplane.ping_seconds is None:
                    await anyio.sleep(0.05)
            async with clients(two.port) as connect_two:
                sender = await connect_one("/c/room")
                await recv_json(sender)
                far = await connect_two("/c/room")
                await recv_json(far)
                await recv_json(sender)  # the far member's join
                await sender.send('"across"')
                assert (await recv_json(far))["message"] == "across"
                samples = await scrape(one)
                far_samples = await scrape(two)
    assert value(samples, "relaycore_cluster_online") == 1
    assert value(samples, "relaycore_cluster_connects_total") == 1
    assert value(samples, "relaycore_cluster_reconnects_total") == 0
    assert value(samples, "relaycore_cluster_outages_total") == 0
    assert value(samples, "relaycore_cluster_published_total") == 1
    assert value(samples, "relaycore_cluster_publish_batches_total") >= 1
    assert 0 < value(samples, "relaycore_cluster_ping_seconds") < 5
    assert value(far_samples, "relaycore_cluster_records_received_total") >= 1
    assert value(far_samples, "relaycore_messages_delivered_total", namespace="") == 1
    assert value(samples, "relaycore_messages_received_total", namespace="") == 1
    assert value(samples, "relaycore_connections") == value(far_samples, "relaycore_connections") == 1
