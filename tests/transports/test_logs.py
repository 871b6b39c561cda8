"""Structured logs: ``relaycore --log-format json serve`` writes one JSON object per line,
with the fields a collector wants, and never message content, keys or channel names."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from rawws import RawPeer, frame, http, post, text
from relayproc import relay_process
from wsclient import clients, expect_close, recv_json

from transports.logs import JSONFormatter

pytestmark = pytest.mark.anyio

REQUIRED = {"time", "level", "logger", "event", "message"}


def parsed(lines: list[str]) -> list[dict[str, Any]]:
    entries = []
    for line in lines:
        entry = json.loads(line)
        assert isinstance(entry, dict), line
        assert entry.keys() >= REQUIRED, line
        entries.append(entry)
    return entries


async def test_a_run_with_refusals_and_closes_logs_json_lines_without_content_or_keys(
    anyio_backend: str, tmp_path: Path
) -> None:
    secret = uuid.uuid4().hex
    marker, join_key, send_key, wrong = (f"{what}-{secret}" for what in ("MARKER", "JOINKEY", "SENDKEY", "WRONGKEY"))
    room = f"vault:room-{secret}"
    config = f"""
[limits]
max_message_bytes = 1024
messages_burst = 2
messages_per_second = 0.001
connections_per_second_per_ip = 1000

[namespaces."vault"]
join_key = "{join_key}"
send_key = "{send_key}"
"""
    async with relay_process(anyio_backend, tmp_path, config, options=["--log-format", "json"]) as relay:
        query = f"joinKey={join_key}&sendKey={send_key}"
        async with clients(relay.port) as connect:
            member = await connect(f"/c/{room}?{query}")
            await recv_json(member)
            await member.send(json.dumps({"text": marker}))  # relayed to nobody; never logged
            await member.send(f"{marker} is not JSON")
            assert (await recv_json(member))["type"] == "error"
            for _ in range(3):  # over the burst: three warnings close it
                await member.send(json.dumps(marker))
            assert await expect_close(member) == 1008

            big = await connect("/c/open-room")
            await recv_json(big)
            await big.send(json.dumps(marker * 100))
            assert await expect_close(big) == 1009

        peer = await RawPeer.connect(relay.port)
        assert (await peer.upgrade(f"/c/{room}?joinKey={wrong}"))[0] == 403
        await peer.aclose()
        peer = await RawPeer.connect(relay.port)
        assert (await peer.upgrade(f"/c/{room}?{query}"))[0] == 101
        await peer.read_json()
        await peer.send(text(marker) + frame(0x1, marker.encode(), mask=False))  # unmasked: 1002
        assert await peer.read_close() == 1002
        await peer.aclose()

        body = json.dumps({"text": marker}).encode()
        assert (await http(relay.port, post(f"/push/{room}", body, f"x-send-key: {send_key}\r\n")))[0] == 200
        assert (await http(relay.port, post(f"/push/{room}", body, f"x-send-key: {wrong}\r\n")))[0] == 403
        await relay.wait_for_line(lambda line: "1002" in line, 5.0, "about the protocol error")
    log = relay.log_path.read_text()
    entries = parsed(log.splitlines())

    for needle in (marker, secret, join_key, send_key, wrong):
        assert needle not in log
    events = [entry["event"] for entry in entries]
    assert events[0] == "listening" and entries[0]["address"].startswith("ws://127.0.0.1:")
    assert events[-2:] == ["signal", "stopped"]
    ended = {entry["code"]: entry for entry in entries if entry["event"] == "connection.ended"}
    assert ended[1008] | {"time": None} == {
        "time": None,
        "level": "info",
        "logger": "relaycore.server",
        "event": "connection.ended",
        "message": "connection from 127.0.0.1 ended: rate limit exceeded",
        "client": "127.0.0.1",
        "namespace": "vault",
        "code": 1008,
        "reason": "rate limit exceeded",
    }
    assert (ended[1009]["namespace"], ended[1009]["reason"]) == ("", "message too big")
    assert ended[1002]["namespace"] == "vault"
    (refused,) = [entry for entry in entries if entry["event"] == "upgrade.refused"]
    assert refused["status"] == 403 and refused["namespace"] == "vault" and refused["client"] == "127.0.0.1"
    assert refused["reason"] == "Joining requires a valid joinKey."
    assert all(entry["time"].endswith("Z") and entry["level"] in ("info", "warning") for entry in entries)


def test_an_exception_is_logged_by_type_and_frames_not_by_its_text() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    log = logging.getLogger("relaycore.test")
    handler = Keep()
    log.addHandler(handler)
    try:
        content = "MARKER-" + "0xdead"  # not in the source line the traceback quotes
        try:
            raise ValueError(f"the content {content}")
        except ValueError:
            log.exception("connection from %s failed", "10.0.0.1", extra={"event": "connection.failed"})
    finally:
        log.removeHandler(handler)
    line = JSONFormatter().format(records[0])
    assert "\n" not in line and "MARKER-0xdead" not in line
    entry = json.loads(line)
    assert entry["exception"] == "ValueError" and "test_logs.py" in entry["traceback"]
    assert entry["event"] == "connection.failed" and entry["message"] == "connection from 10.0.0.1 failed"


def test_lines_of_other_libraries_are_named_by_their_logger() -> None:
    record = logging.LogRecord("uvicorn.error", logging.WARNING, "", 0, "hello", None, None)
    entry = json.loads(JSONFormatter(pid=True).format(record))
    assert entry["event"] == "uvicorn.error" and entry["level"] == "warning" and isinstance(entry["pid"], int)


def _run_json(
    args: list[str], *, prelude: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``relaycore --log-format json ARGS`` in a fresh interpreter (``prelude`` runs first)."""
    code = f"import sys; {prelude or 'pass'}; from transports.cli import main; sys.exit(main(sys.argv[1:]))"
    environ = {name: value for name, value in os.environ.items() if not name.startswith("RELAYCORE_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", code, "--log-format", "json", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=environ,
    )


@pytest.mark.parametrize(
    ("case", "args", "prelude", "env", "says"),
    [
        (
            "metrics without prometheus-client",
            ["serve", "--port", "0"],
            "sys.modules['prometheus_client'] = None",
            {"RELAYCORE_METRICS_ENABLED": "true"},
            "metrics need prometheus-client",
        ),
        ("an unknown setting", ["serve", "--port", "0"], "", {"RELAYCORE_SERVER_NOPE": "1"}, "RELAYCORE_SERVER_NOPE"),
        ("a usage error", ["serve", "--port", "many"], "", {}, "invalid int value"),
        ("a missing command", [], "", {}, "required"),
        ("a missing TLS file", ["serve", "--port", "0", "--certfile", "/nonexistent.pem"], "", {}, "TLS certificate"),
    ],
    ids=lambda value: value if isinstance(value, str) and " " in value else None,
)
def test_start_up_failures_are_json_lines_too(
    case: str, args: list[str], prelude: str, env: dict[str, str], says: str
) -> None:
    result = _run_json(args, prelude=prelude, env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert lines, f"{case}: nothing on standard error"
    entries = parsed(lines)  # every line, not just the last: a stray text line fails here
    assert entries[-1]["level"] == "error"
    assert entries[-1]["event"] == "failed"
    assert says in entries[-1]["message"]


def test_a_port_in_use_is_a_json_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run_json(["serve", "--port", str(port)])
    assert result.returncode == 1, result.stderr
    (entry,) = parsed(result.stderr.splitlines())
    assert entry["event"] == "failed" and f"cannot listen on 127.0.0.1:{port}" in entry["message"]


def test_text_format_failures_stay_one_plain_line() -> None:
    code = "import sys; from transports.cli import main; sys.exit(main(['serve', '--port', '0', '--certfile', '/x']))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.startswith("relaycore: cannot load the TLS certificate: "), result.stderr
