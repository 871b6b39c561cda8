"""The native server on a Unix socket (``relaycore serve --uds PATH``, ``[server] uds``).

- In process, on both backends: members chat over the socket (the core's client wire on an
  anyio Unix stream), ``/health`` answers, and the socket file is gone once the server stops.
- ``relaycore serve --uds PATH`` behind Debian's nginx (``proxy_pass http://unix:PATH``), with
  ``trusted_proxies = ["unix"]``: the stock itty-sockets client runs its whole scenario
  through nginx, and the per-address limits count the clients nginx names, not nginx.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import msgspec
import pytest
from doors import SCENARIO_CONFIG, require_node, run_scenario
from redisproc import free_port

from conftest import make_config
from prerequisites import nginx_binary
from relaycore.client import Accepted, ClientConnection, Refused, Text
from transports.server import RelayServer

pytestmark = pytest.mark.anyio

STARTUP_TIMEOUT = 10.0


class UnixMember:
    """A member on the relay's Unix socket, speaking through the core's client wire."""

    def __init__(self, stream: anyio.abc.ByteStream, wire: ClientConnection) -> None:
        self.stream = stream
        self.wire = wire
        self.pending: list[object] = []

    @classmethod
    async def join(cls, path: str, target: str) -> UnixMember:
        stream = await anyio.connect_unix(path)
        member = cls(stream, ClientConnection("localhost", target))
        await stream.send(member.wire.request())
        first = await member.next()
        assert isinstance(first, Accepted), first
        return member

    async def next(self) -> object:
        with anyio.fail_after(5):
            while not self.pending:
                self.pending += self.wire.receive_data(await self.stream.receive())
        return self.pending.pop(0)

    async def frame(self) -> dict[str, object]:
        event = await self.next()
        assert isinstance(event, Text), event
        decoded = msgspec.json.decode(event.data)
        assert isinstance(decoded, dict)
        return decoded

    async def send(self, text: str) -> None:
        await self.stream.send(self.wire.send_text(text))


async def test_members_chat_over_a_unix_socket(anyio_backend: str, tmp_path: Path) -> None:
    path = str(tmp_path / "relay.sock")
    config = make_config(f'[server]\nuds = "{path}"')
    server = RelayServer(config)
    async with anyio.create_task_group() as tg:
        addresses = await tg.start(server.serve)
        assert addresses == [(path, 0)]
        ann = await UnixMember.join(path, "/c/room?alias=Ann")
        assert (await ann.frame())["total"] == 1
        bob = await UnixMember.join(path, "/c/room")
        assert (await bob.frame())["total"] == 2
        assert (await ann.frame())["type"] == "join"
        await bob.send('{"hi":1}')
        relayed = await ann.frame()
        assert relayed["message"] == {"hi": 1} and "alias" not in relayed
        assert server.hub.connections == 2
        server.shutdown()
    assert not os.path.exists(path), "the socket file outlived the server"


async def test_a_stale_socket_file_is_replaced_and_another_file_is_not(anyio_backend: str, tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as old:
        old.bind(str(stale))  # left behind, as by a relay killed with -9
    server = RelayServer(make_config(f'[server]\nuds = "{stale}"'))
    assert server.bind() == [(str(stale), 0)]
    server._close_listeners()
    regular = tmp_path / "notes.txt"
    regular.write_text("mine")
    with pytest.raises(OSError):
        RelayServer(make_config(f'[server]\nuds = "{regular}"')).bind()
    assert regular.read_text() == "mine"


async def test_a_refusal_reaches_a_unix_socket_client(anyio_backend: str, tmp_path: Path) -> None:
    path = str(tmp_path / "relay.sock")
    server = RelayServer(make_config(f'[server]\nuds = "{path}"\n[namespaces."locked"]\njoin_key = "k"'))
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        stream = await anyio.connect_unix(path)
        wire = ClientConnection("localhost", "/c/locked:room")
        await stream.send(wire.request())
        with anyio.fail_after(5):
            events: list[object] = []
            while not events:
                events += wire.receive_data(await stream.receive())
        assert isinstance(events[0], Refused) and events[0].status == 403
        await stream.aclose()
        server.shutdown()


# -- behind nginx ---------------------------------------------------------------------------------

NGINX_CONF = """\
daemon off;
user root;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://unix:{socket};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 90s;
        }}
    }}
}}
"""


@contextmanager
def process(command: list[str], log: Path, ready: object) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` (output to ``log``) until ``ready()`` is true; stop it by pid after."""
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not ready():  # type: ignore[operator]
            assert proc.poll() is None, f"{command[0]} exited:\n{log.read_text(errors='replace')}"
            assert time.monotonic() < deadline, f"{command[0]} not ready:\n{log.read_text(errors='replace')}"
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
def test_the_itty_sockets_client_through_nginx_to_a_unix_socket(anyio_backend: str, tmp_path: Path) -> None:
    nginx = nginx_binary()
    node = require_node()
    sock = tmp_path / "relay.sock"
    config = tmp_path / "relay.toml"
    config.write_text(SCENARIO_CONFIG + '\n[server]\ntrusted_proxies = ["unix"]\n')
    relay = [sys.executable, "-m", "transports", "serve", "--uds", str(sock), "--config", str(config)]
    relay += ["--backend", anyio_backend]
    port = free_port()
    (tmp_path / "nginx.conf").write_text(NGINX_CONF.format(dir=tmp_path, port=port, socket=sock))
    with (
        process(relay, tmp_path / "relay.log", sock.exists),
        process(
            [nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
            tmp_path / "nginx.log",
            lambda: listening(port),
        ),
    ):
        run_scenario(node, f"ws://127.0.0.1:{port}", "uds", None, lambda: (tmp_path / "relay.log").read_text())
        # The relay believes nginx (a trusted peer on its socket) about who the client is:
        # its log names the client's address, not "unix".
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(
                b"GET /c/secure:room HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            assert raw.recv(200).startswith(b"HTTP/1.1 403")
        deadline = time.monotonic() + 5
        while "upgrade from 127.0.0.1 refused" not in (tmp_path / "relay.log").read_text():
            assert time.monotonic() < deadline, (tmp_path / "relay.log").read_text()
            time.sleep(0.05)
        assert "listening on unix:" in (tmp_path / "relay.log").read_text()
    assert not sock.exists()
