"""The stock itty-sockets JavaScript client, run in Node.js, against the relay behind every door.

``tests/js/scenario.mjs`` drives the npm package ``itty-sockets`` (with ``ws`` as its WebSocket)
through joins, broadcasts, echo, direct messages, errors, push, a protected channel and HTTP push.
On the native doors this module starts the real command-line server (``relaycore serve``) on
that backend, plain and with TLS, runs the scenario against it and then stops the server with
SIGTERM. On the ASGI doors the scenario talks, unchanged, to ``uvicorn transports.asgi:app`` and
``hypercorn -k asyncio|trio transports.asgi:app`` (the shared processes of ``doors.py``).

Needs ``node`` on PATH and ``npm ci`` run in ``tests/js``; skipped otherwise, and a failure under CI
(``tests/prerequisites.py``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trustme
from doors import NATIVE_DOORS, POOL, REPO, SCENARIO_CONFIG, require_node, run_scenario

pytestmark = pytest.mark.doors

STARTUP_TIMEOUT = 10.0
SHUTDOWN_TIMEOUT = 5.0


_LISTENING = re.compile(r"listening on (wss?)://127\.0\.0\.1:(\d+)")


def _wait_until_listening(proc: subprocess.Popen[bytes], log: Path) -> int:
    """The port the command-line server reports it listens on (it was started with port 0)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        match = _LISTENING.search(log.read_text(errors="replace"))
        if match:
            return int(match.group(2))
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode} before listening:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"server not listening after {STARTUP_TIMEOUT} s:\n{log.read_text()}")
        time.sleep(0.02)


def _native(backend: str, scheme: str, tmp_path: Path) -> None:
    """The scenario against ``relaycore serve --backend <backend>``, then a clean SIGTERM."""
    node = require_node()
    cfg = tmp_path / "relay.toml"
    cfg.write_text(SCENARIO_CONFIG)
    log = tmp_path / "server.log"
    cmd = [
        sys.executable, "-m", "transports", "serve",
        "--host", "127.0.0.1", "--port", "0", "--config", str(cfg), "--backend", backend,
    ]  # fmt: skip
    # `ws` offers permessage-deflate, as browsers do: the native server accepts it for every socket.
    env = {**_environment(), "EXPECT_EXTENSION": "permessage-deflate"}
    if scheme == "wss":
        # A throwaway CA: the relay gets a certificate from it, Node trusts it.
        ca = trustme.CA()
        pem = tmp_path / "relay.pem"
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        env["NODE_EXTRA_CA_CERTS"] = str(tmp_path / "ca.pem")
        cmd += ["--certfile", str(pem)]
    with log.open("wb") as log_file:
        server = subprocess.Popen(cmd, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT, env=_environment())
    try:
        port = _wait_until_listening(server, log)
        assert f"listening on {scheme}://127.0.0.1:{port}" in log.read_text()
        run_scenario(node, f"{scheme}://127.0.0.1:{port}", f"itty-{backend}", env, log.read_text)

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


def _environment() -> dict[str, str]:
    """This environment without ``RELAYCORE_*``: the server would read them as settings."""
    return {name: value for name, value in os.environ.items() if not name.startswith("RELAYCORE_")}


def test_stock_itty_sockets_client(door: str, tmp_path: Path) -> None:
    """The whole scenario over plain TCP, behind every door."""
    if door in NATIVE_DOORS:
        _native(door.removeprefix("native-"), "ws", tmp_path)
        return
    node = require_node()
    process = POOL.get(door, SCENARIO_CONFIG)
    try:
        run_scenario(node, f"ws://127.0.0.1:{process.port}", f"itty-{door}", None, process.log)
    finally:
        POOL.release(process)


@pytest.mark.doors(*NATIVE_DOORS)
def test_stock_itty_sockets_client_over_tls(door: str, tmp_path: Path) -> None:
    """The scenario over ``wss://`` and ``https://`` push (TLS is the native server's own)."""
    _native(door.removeprefix("native-"), "wss", tmp_path)
