"""The stock itty-sockets JavaScript client, run in Node.js, against ``relaycore serve``.

``tests/js/scenario.mjs`` drives the npm package ``itty-sockets`` (with ``ws`` as its WebSocket)
through joins, broadcasts, echo, direct messages, errors, push, a protected channel and HTTP push.
This module starts the real command-line server on each backend, plain and with TLS, runs the
scenario against it and then stops the server with SIGTERM.

Needs ``node`` on PATH and ``npm install`` run in ``tests/js``; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trustme

REPO = Path(__file__).resolve().parents[2]
JS_DIR = REPO / "tests" / "js"
SCENARIO = JS_DIR / "scenario.mjs"

# The scenario opens more connections from 127.0.0.1 within a second than the default
# connection rate allows; that limit has tests of its own.
CONFIG = """\
[limits]
connections_per_second_per_ip = 1000

[namespaces."secure"]
join_key = "jk"
send_key = "sk"
"""

EXPECTED_STEPS = [
    "self-join",
    "join-announced",
    "broadcast-chat",
    "no-echo",
    "non-object-messages",
    "direct-message",
    "direct-to-unknown-uid",
    "invalid-json",
    "push",
    "leave",
    "protected-channel",
    "http-push",
    "http-push-refused",
    "quiet",
]

STARTUP_TIMEOUT = 10.0
SCENARIO_TIMEOUT = 30.0
SHUTDOWN_TIMEOUT = 5.0


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH: the itty-sockets client test needs Node.js")
    for package in ("itty-sockets", "ws"):
        if not (JS_DIR / "node_modules" / package).is_dir():
            pytest.skip(f"tests/js/node_modules/{package} is missing: run `npm install` in tests/js")
    return node


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode} before listening:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"server not accepting on port {port} after {STARTUP_TIMEOUT} s:\n{log.read_text()}")
        time.sleep(0.05)


@pytest.mark.parametrize("scheme", ["ws", "wss"])
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_stock_itty_sockets_client(backend: str, scheme: str, tmp_path: Path) -> None:
    """The whole scenario, over plain TCP and over TLS (``wss://`` and ``https://`` push)."""
    node = _node()
    cfg = tmp_path / "relay.toml"
    cfg.write_text(CONFIG)
    log = tmp_path / "server.log"
    port = _free_port()
    cmd = [
        sys.executable, "-m", "transports", "serve",
        "--host", "127.0.0.1", "--port", str(port), "--config", str(cfg), "--backend", backend,
    ]  # fmt: skip
    env = dict(os.environ)
    if scheme == "wss":
        # A throwaway CA: the relay gets a certificate from it, Node trusts it.
        ca = trustme.CA()
        pem = tmp_path / "relay.pem"
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        env["NODE_EXTRA_CA_CERTS"] = str(tmp_path / "ca.pem")
        cmd += ["--certfile", str(pem)]
    with log.open("wb") as log_file:
        server = subprocess.Popen(cmd, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        _wait_until_listening(server, port, log)
        try:
            run = subprocess.run(
                [node, str(SCENARIO), f"{scheme}://127.0.0.1:{port}", f"itty-{backend}"],
                cwd=JS_DIR,
                env=env,
                capture_output=True,
                text=True,
                timeout=SCENARIO_TIMEOUT,
            )
        except subprocess.TimeoutExpired as exc:
            output = [
                x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (exc.stdout, exc.stderr)
            ]
            pytest.fail(f"scenario still running after {SCENARIO_TIMEOUT} s:\n" + "\n".join(output))
        assert run.returncode == 0, (
            f"scenario failed on {backend} (exit {run.returncode}):\n{run.stderr}\n"
            f"stdout:\n{run.stdout}\nserver log:\n{log.read_text()}"
        )
        lines = run.stdout.strip().splitlines()
        assert lines, f"scenario printed no summary; stderr:\n{run.stderr}"
        summary = json.loads(lines[-1])
        assert summary["ok"] is True
        assert summary["steps"] == EXPECTED_STEPS
        assert summary["checks"] > 100
        assert f"listening on {scheme}://127.0.0.1:{port}" in log.read_text()

        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=SHUTDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"server did not exit within {SHUTDOWN_TIMEOUT} s of SIGTERM:\n{log.read_text()}")
        assert code == 0, f"server exited with {code} after SIGTERM:\n{log.read_text()}"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
