"""The native server on a Unix socket (``relaycore serve --uds PATH``, ``[server] uds``).

- In process, on both backends: members chat over the socket (the core's client wire on an
  anyio Unix stream), ``/health`` answers, and the socket file is gone once the server stops.
- ``relaycore serve --uds PATH`` behind Debian's nginx (``proxy_pass http://unix:PATH``), with
  ``trusted_proxies = ["unix"]``: the stock itty-sockets client runs its whole scenario
  through nginx, and the per-address limits count the clients nginx names, not nginx.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import anyio
import msgspec
import pytest
from doors import SCENARIO_CONFIG, require_node, run_scenario
from nginxproc import nginx, process

from conftest import make_config
from relaycore.client import Accepted, ClientConnection, Refused, Text
from transports.server import RelayServer

pytestmark = pytest.mark.anyio


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

#: The ``location`` for a relay on a Unix socket, upgrades passed on, the client named.
UDS_LOCATION = """\
location / {{
    proxy_pass http://unix:{socket};
    proxy_http_version 1.1;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $connection_upgrade;
    proxy_set_header Host $host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_read_timeout 90s;
}}"""
UPGRADE_MAP = "map $http_upgrade $connection_upgrade { default upgrade; '' close; }"


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
def test_the_itty_sockets_client_through_nginx_to_a_unix_socket(anyio_backend: str, tmp_path: Path) -> None:
    node = require_node()
    sock = tmp_path / "relay.sock"
    config = tmp_path / "relay.toml"
    config.write_text(SCENARIO_CONFIG + '\n[server]\ntrusted_proxies = ["unix"]\n')
    relay = [sys.executable, "-m", "transports", "serve", "--uds", str(sock), "--config", str(config)]
    relay += ["--backend", anyio_backend]
    with (
        process(relay, tmp_path / "relay.log", sock.exists),
        nginx(tmp_path, UDS_LOCATION.format(socket=sock), http=UPGRADE_MAP) as port,
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
