"""transports.server: the native server (RelayServer) itself, on both backends.

What it is made of and its lifecycle: bind (before serving, or by ``serve``), the addresses
it reports, a port shared with other processes, serve until ``shutdown``. What it does as a
relay is the door suite's (test_relay.py and the other door modules, on every door); its
graceful stop is test_shutdown.py's, TLS test_tls.py's, Unix sockets test_uds.py's, the
``--workers`` supervisor test_workers.py's, hostile input test_hostile.py's and failures
test_faults.py's.
"""

from __future__ import annotations

import socket

import anyio
import pytest
from rawws import http
from wsclient import clients, join_all, recv_json

from conftest import make_config
from transports.server import RelayServer

pytestmark = pytest.mark.anyio

VERSION = b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


async def test_version_over_a_real_socket(relay: RelayServer) -> None:
    stream = await anyio.connect_tcp("127.0.0.1", relay.port)
    async with stream:
        await stream.send(VERSION)
        data = b""
        with anyio.fail_after(5):
            while True:
                try:
                    data += await stream.receive()
                except anyio.EndOfStream:
                    break
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.endswith(b"relaycore 0.1.0\n")


async def test_a_message_is_relayed(relay: RelayServer) -> None:
    async with clients(relay.port) as connect:
        alice, bob = await join_all(connect, "/c/smoke", "/c/smoke")
        await alice.send('{"hello":"bob"}')
        assert (await recv_json(bob))["message"] == {"hello": "bob"}


async def test_bound_before_serving_it_serves_on_those_sockets_until_shutdown() -> None:
    server = RelayServer(make_config())
    addresses = server.bind("127.0.0.1", 0)
    assert addresses == server.addresses == [("127.0.0.1", server.port)] and server.port != 0
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            assert await tg.start(server.serve) == addresses  # what task_status reports
            status, _, body = await http(server.port, VERSION)
            assert status == 200 and body.startswith(b"relaycore ")
            server.shutdown()  # serve returns by itself: the task group ends
    with pytest.raises(OSError):
        await http(server.port, VERSION)  # the listener is closed


async def test_shutdown_before_serving_does_nothing() -> None:
    server = RelayServer(make_config())
    server.shutdown()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve, "127.0.0.1", 0)
            assert (await http(server.port, VERSION))[0] == 200  # still serving
            server.shutdown()


async def test_serve_listens_on_every_host_given_with_one_port() -> None:
    server = RelayServer(make_config())
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            addresses = await tg.start(server.serve, ["127.0.0.1", "::1"], 0)
            assert sorted(host for host, _ in addresses) == ["127.0.0.1", "::1"]
            assert {port for _, port in addresses} == {server.port}
            for host in ("127.0.0.1", "::1"):
                assert (await http(server.port, VERSION, host))[0] == 200
            server.shutdown()


def test_a_taken_port_is_an_os_error_when_binding() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            RelayServer(make_config()).bind("127.0.0.1", taken.getsockname()[1])


async def test_reuse_port_lets_servers_share_a_port() -> None:
    first, second = RelayServer(make_config()), RelayServer(make_config())
    port = first.bind("127.0.0.1", 0, reuse_port=True)[0][1]
    assert second.bind("127.0.0.1", port, reuse_port=True) == [("127.0.0.1", port)]
    with pytest.raises(OSError):
        RelayServer(make_config()).bind("127.0.0.1", port)  # one without it may not
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for server in (first, second):
                await tg.start(server.serve)
            assert (await http(port, VERSION))[0] == 200
            for server in (first, second):
                server.shutdown()


def test_its_parts_are_there_only_when_configured() -> None:
    plain = RelayServer(make_config())
    assert (plain.backplane, plain.metrics, plain.ssl_context) == (None, None, None)
    assert plain.routes is not None and plain.routes.static is None  # /client.js only
    assert plain.config is plain.hub.config
    measured = RelayServer(make_config("[metrics]\nenabled = true\n"))
    assert measured.metrics is not None and measured.routes is not None and measured.backplane is None
