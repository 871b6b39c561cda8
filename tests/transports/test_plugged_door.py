"""A door from another package: ``examples/ndjson-door``, installed as its own package
(pip, into a directory of its own), is run by ``relaycore serve`` from its configuration
alone (``[doors.ndjson]``), and its members chat with WebSocket members in one channel.
Raw TCP sockets are its clients; both anyio backends."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from relayproc import relay_process
from wsclient import clients, join, recv_json

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "ndjson-door"

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example door installed with pip into a directory of its own (put on PYTHONPATH)."""
    target = tmp_path_factory.mktemp("ndjson-door")
    build = tmp_path_factory.mktemp("ndjson-door-src")
    source = build / "src"
    subprocess.run(["cp", "-r", str(EXAMPLE), str(source)], check=True)  # pip builds in place
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(source)]
    subprocess.run(command, check=True, timeout=120)
    assert (target / "relaycore_ndjson_door.py").exists()
    assert list(target.glob("relaycore_ndjson_door-*.dist-info/entry_points.txt"))
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LineMember:
    """A member of the NDJSON door over a raw TCP socket."""

    def __init__(self, sock: anyio.abc.SocketStream) -> None:
        self.sock = sock
        self.lines = BufferedByteReceiveStream(sock)

    @classmethod
    async def join(cls, port: int, first: str) -> LineMember:
        sock = await anyio.connect_tcp("127.0.0.1", port)
        await sock.send(first.encode() + b"\n")
        return cls(sock)

    async def frame(self, timeout: float = 5.0) -> Any:
        with anyio.fail_after(timeout):
            while True:
                line = await self.lines.receive_until(b"\n", 1 << 20)
                if line.strip():
                    return json.loads(line)

    async def send(self, text: str) -> None:
        await self.sock.send(text.encode() + b"\n")


async def test_the_installed_ndjson_door_chats_with_websocket_members(
    anyio_backend: str, installed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(installed), os.environ.get("PYTHONPATH", "")]))
    door_port = free_port()
    config = f'[doors.ndjson]\nhost = "127.0.0.1"\nport = {door_port}\n\n[namespaces."vip"]\njoin_key = "jk"\n'
    async with relay_process(anyio_backend, tmp_path, config) as relay, clients(relay.port) as connect:
        ws, _ = await join(connect, "/c/lobby?alias=Web&announce=true")
        tcp = await LineMember.join(door_port, "lobby?alias=Tcp&announce=true")
        hello = await tcp.frame()
        assert (hello["type"], hello["self"], hello["alias"], hello["total"]) == ("join", True, "Tcp", 2)
        joined = await recv_json(ws)
        assert (joined["type"], joined["alias"], joined["total"]) == ("join", "Tcp", 2)
        # Both ways, one frame per line; a direct message; the protocol's error frame.
        await ws.send('{"text": "hello tcp"}')
        got = await tcp.frame()
        assert got["message"] == {"text": "hello tcp"} and got["alias"] == "Web"
        await tcp.send('{"text": "hello ws"}')
        got = await recv_json(ws)
        assert got["message"] == {"text": "hello ws"} and got["uid"] == hello["uid"]
        await tcp.send(f'\x1f{joined["uid"] and (await _uid(ws, tcp))}\x1f"just you"')
        assert (await recv_json(ws))["message"] == "just you"
        await tcp.send("{not json")
        assert (await tcp.frame())["message"] == "Invalid JSON message."
        # A refused join: one error line, then the end.
        refused = await LineMember.join(door_port, "vip:room")
        line = await refused.frame()
        assert line == {"type": "error", "status": 403, "message": "Joining requires a valid joinKey."}
        # Leaving: the WebSocket member hears it.
        await tcp.sock.aclose()
        leave = await recv_json(ws)
        assert (leave["type"], leave["uid"], leave["total"]) == ("leave", hello["uid"], 1)


async def _uid(ws: Any, tcp: LineMember) -> str:
    await ws.send('"ping"')
    return str((await tcp.frame())["uid"])


async def test_an_unknown_door_is_a_clear_start_up_error(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text("[doors.nosuch]\nport = 1\n")
    result = subprocess.run(
        [sys.executable, "-m", "transports", "serve", "--port", "0", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("RELAYCORE_")},
    )
    assert result.returncode == 2
    assert "`doors.nosuch`: no installed door is named 'nosuch'" in result.stderr
