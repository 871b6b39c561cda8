"""transports._door: what every front door shares, so that a relay is the same behind each.

The configuration a door loads, the clock and uids it injects, which event loop runs, the
hub it serves (the one config-vs-hub rule) and what it fits the hub out with, and the log
lines about one client. How the doors then behave alike is the door suite's business
(test_relay.py and the other modules marked ``doors``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import anyio
import pytest

from core._frames import UPGRADE_HEADERS
from relaycore import ClientSession, ClusterHub, Config, ConfigError, Hub, MessageOutbox, RelayUsageError
from relaycore.testing import FakeClock, seeded_uids
from transports._door import (
    SystemClock,
    config_from_environment,
    door_hub,
    door_parts,
    event_class,
    load_config,
    log_ended,
    log_refused,
    running_asyncio_loop,
    secure_uids,
)
from transports.redis_backplane import RedisBackplane


def hub_for(toml: bytes | str = b"") -> Hub:
    return Hub(Config.from_toml(toml, env={}), FakeClock(), seeded_uids(0))


# -- configuration ---------------------------------------------------------------------------


def test_load_config_reads_the_file_then_the_overrides(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text("[limits]\nmax_message_bytes = 4096\nmessages_burst = 7\n")
    config = load_config(str(path), {"RELAYCORE_LIMITS_MESSAGES_BURST": "9"})
    assert (config.limits.max_message_bytes, config.limits.messages_burst) == (4096, 9)
    assert load_config(None, {}) == Config()


def test_the_environment_names_the_file_and_overrides_it(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text("[server]\nport = 9000\n")
    environ = {"RELAYCORE_CONFIG": str(path), "RELAYCORE_SERVER_HOST": "0.0.0.0"}
    config = config_from_environment(environ)  # RELAYCORE_CONFIG itself is no unknown setting
    assert (config.server.port, config.server.host) == (9000, "0.0.0.0")
    with pytest.raises(ConfigError, match="RELAYCORE_SERVER_PORTT"):
        config_from_environment({"RELAYCORE_SERVER_PORTT": "1"})


# -- the clock and uids ----------------------------------------------------------------------


def test_the_system_clock_is_wall_time_and_a_monotonic_time() -> None:
    clock = SystemClock()
    assert abs(clock.time() - time.time()) < 1.0
    first = clock.monotonic()
    assert clock.monotonic() >= first and abs(first - time.monotonic()) < 1.0


def test_secure_uids_are_six_letters_or_digits_and_do_not_repeat() -> None:
    uids = [secure_uids() for _ in range(2000)]
    assert all(len(uid) == 6 and uid.isascii() and uid.isalnum() for uid in uids)
    assert len(set(uids)) == len(uids)


# -- which event loop runs -------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_running_loop_and_its_event_class(anyio_backend: str) -> None:
    if anyio_backend == "asyncio":
        assert running_asyncio_loop() is asyncio.get_running_loop()
        assert event_class() is asyncio.Event
    else:
        import trio

        assert running_asyncio_loop() is None
        assert event_class() is trio.Event


def test_outside_any_loop_the_event_class_is_anyio_s() -> None:
    assert running_asyncio_loop() is None
    assert event_class() is anyio.Event


# -- the hub and its parts -------------------------------------------------------------------


def test_door_hub_makes_a_hub_or_a_cluster_node_for_a_config() -> None:
    assert type(door_hub()) is Hub and door_hub().config == Config()
    clustered = Config.from_toml(b'[cluster]\nredis_url = "redis://127.0.0.1:1/0"\n', env={})
    assert isinstance(door_hub(clustered), ClusterHub)


def test_door_hub_takes_a_hub_with_its_own_config_clock_and_uids() -> None:
    hub = Hub(Config(), FakeClock(), seeded_uids(0))
    assert door_hub(None, hub) is hub and door_hub(Config(), hub) is hub  # an equal config is the same
    with pytest.raises(RelayUsageError, match=r"differs from hub\.config"):
        door_hub(Config.from_toml(b"[limits]\nmessages_burst = 1\n", env={}), hub)
    with pytest.raises(RelayUsageError, match="clock and uids"):
        door_hub(hub=hub, uids=secure_uids)


def test_a_plain_hub_has_only_the_browser_client() -> None:
    parts = door_parts(hub_for(), lambda: None)
    assert (parts.backplane, parts.metrics) == (None, None)
    assert parts.routes is not None and (parts.routes.metrics, parts.routes.static) == (None, None)
    assert parts.routes(b"GET", b"/other", []) is None
    script = parts.routes(b"GET", b"/client.js", [])
    assert script is not None and script.status == 200


def test_a_cluster_node_gets_its_redis_driver() -> None:
    node = door_hub(Config.from_toml(b'[cluster]\nredis_url = "redis://127.0.0.1:1/0"\n', env={}))
    assert isinstance(door_parts(node, lambda: None).backplane, RedisBackplane)
    unreachable = ClusterHub(Config(), FakeClock(), seeded_uids(0), node="n1")
    with pytest.raises(ConfigError, match=r"cluster\.redis_url"):
        door_parts(unreachable, lambda: None)


def test_metrics_and_static_files_are_routes_and_metrics_is_never_a_file(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<h1>hi</h1>")
    (tmp_path / "metrics").write_text("not the metrics")
    routes = door_parts(hub_for(f'[server]\nstatic_dir = "{tmp_path}"\n'), lambda: None).routes
    assert routes is not None and routes.metrics is None
    page = routes(b"GET", b"/", [])
    assert page is not None and (page.status, page.body) == (200, b"<h1>hi</h1>")
    assert routes(b"GET", b"/metrics", []) is None and routes(b"GET", b"/%6Detrics", []) is None

    parts = door_parts(hub_for("[metrics]\nenabled = true\n"), lambda: None)
    assert parts.routes is not None and parts.metrics is parts.routes.metrics is not None
    answer = parts.routes(b"GET", b"/metrics", [])
    assert answer is not None and answer.status == 200 and b"relaycore_" in answer.body
    with pytest.raises(ConfigError, match="static_dir"):
        door_parts(hub_for('[server]\nstatic_dir = "/nonexistent/x"\n'), lambda: None)


# -- log lines -------------------------------------------------------------------------------


class _Transport:
    def session_closed(self, code: int, reason: str) -> None:
        pass

    def session_opened(self) -> None:
        pass

    def session_refused(self, answer: object) -> None:
        pass

    def session_answered(self, answer: object) -> None:
        pass


def _refused_session() -> ClientSession:
    """A session whose upgrade to ``myapp:secret-room`` with the wrong key was refused."""
    config = Config.from_toml(b'[namespaces."myapp"]\njoin_key = "right-key"\n', env={})
    hub = Hub(config, FakeClock(), seeded_uids(0))
    session = ClientSession(hub, MessageOutbox(1 << 20, hub.ready), _Transport(), client="10.0.0.7")
    answer = session.request(b"GET", b"/c/myapp:secret-room?joinKey=wrong-key", UPGRADE_HEADERS, upgrade=True)
    assert answer is not None and answer.status == 403
    return session


def test_the_refused_and_ended_lines_name_the_client_never_a_key_or_channel(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("relaycore.test_door")
    session = _refused_session()
    with caplog.at_level(logging.INFO, logger=log.name):
        log_refused(log, session)
        log_ended(log, session, "slow consumer", code=1008)
    refused, ended = caplog.records
    assert refused.getMessage() == "upgrade from 10.0.0.7 refused: 403 Joining requires a valid joinKey."
    assert (refused.event, refused.client, refused.namespace, refused.status) == (  # type: ignore[attr-defined]
        "upgrade.refused",
        "10.0.0.7",
        "myapp",
        403,
    )
    assert ended.getMessage() == "connection from 10.0.0.7 ended: slow consumer"
    assert (ended.event, ended.code, ended.reason) == ("connection.ended", 1008, "slow consumer")  # type: ignore[attr-defined]
    for record in (refused, ended):
        shown = record.getMessage() + repr(vars(record))
        assert "wrong-key" not in shown and "right-key" not in shown and "secret-room" not in shown
