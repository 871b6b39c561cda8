"""TLS (wss:// and https://): the same relay behind an ``ssl.MemoryBIO`` session per
connection, with a certificate made for the test by a throwaway CA (trustme)."""

from __future__ import annotations

import json
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import trustme
from rawws import RawPeer
from wsclient import clients, recv_json

from conftest import make_config, running
from transports.server import RelayServer

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
async def server(server_context: ssl.SSLContext) -> AsyncIterator[RelayServer]:
    """A relay serving TLS only, with a short handshake timeout and a 256 KiB outbox (and a
    long close timeout: a slow consumer reads its close frame only after a whole broadcast)."""
    config = make_config(
        """
[limits]
handshake_timeout = 1.0
close_timeout = 60.0
outbound_buffer_bytes = 262144
messages_per_second = 100000.0
messages_burst = 100000

[namespaces."news"]
send_key = "sk"
"""
    )
    async with running(config, ssl_context=server_context) as server:
        yield server


async def test_members_talk_over_wss(server: RelayServer, client_context: ssl.SSLContext) -> None:
    async with clients(server.port, tls=client_context) as connect:
        alice = await connect("/c/secure?alias=alice")
        bob = await connect("/c/secure")
        hello = await recv_json(alice)
        assert hello["type"] == "join" and hello["self"] is True
        assert (await recv_json(bob))["self"] is True
        assert (await recv_json(alice))["type"] == "join"
        await alice.send('{"hi":1}')
        got = await recv_json(bob)
        assert got["message"] == {"hi": 1} and got["alias"] == "alice"
        # Many messages at once, some large: they arrive whole and in order.
        big = "x" * 40_000
        for i in range(50):
            await bob.send(json.dumps([i, big if i % 5 == 0 else ""]))
        for i in range(50):
            assert (await recv_json(alice))["message"] == [i, big if i % 5 == 0 else ""]


async def test_http_push_and_health_over_https(server: RelayServer, client_context: ssl.SSLContext) -> None:
    async with clients(server.port, tls=client_context) as connect:
        member = await connect("/c/news:pushed")
        await recv_json(member)
        peer = await RawPeer.connect_tls(server.port, client_context)
        await peer.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = await peer.response()
        assert status == 200 and json.loads(body)["connections"] >= 1
        payload = b'{"from":"backend"}'
        await peer.send(
            b"POST /push/news:pushed HTTP/1.1\r\nHost: x\r\nX-Send-Key: sk\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
        )
        status, _, body = await peer.response()
        assert status == 200, body
        assert (await recv_json(member))["message"] == {"from": "backend"}
        await peer.aclose()


async def test_a_member_that_stops_reading_is_closed_as_a_slow_consumer(
    server: RelayServer, client_context: ssl.SSLContext
) -> None:
    async with clients(server.port, tls=client_context) as connect:
        stalled = await RawPeer.connect_tls(server.port, client_context, rcvbuf=4096)
        status, _ = await stalled.upgrade("/c/slow")
        assert status == 101
        sender = await connect("/c/slow")
        reader = await connect("/c/slow")
        await recv_json(sender)
        await recv_json(reader)
        assert (await recv_json(sender))["type"] == "join"
        chunk = json.dumps("y" * 10_000)
        received = [0]

        async def send_all() -> None:
            for n in range(2_000):  # 20 MB against a 256 KiB outbound buffer
                # The reader keeps within the bound (15 messages of 10 KB are owed to it at
                # most); only the stalled member falls behind.
                while n - received[0] > 15:
                    await anyio.sleep(0.001)
                await sender.send(chunk)

        async with anyio.create_task_group() as inner:
            inner.start_soon(send_all)
            while received[0] < 2_000:
                got = await recv_json(reader, timeout=30)
                if "message" in got:
                    assert got["message"] == "y" * 10_000
                    received[0] += 1
        # The stalled member reads what was sent before its close frame, then 1008.
        assert await stalled.read_close(timeout=10) == 1008
        await stalled.aclose()


async def test_plain_bytes_on_the_tls_port_cost_only_that_connection(
    server: RelayServer, client_context: ssl.SSLContext
) -> None:

    plain = await RawPeer.connect(server.port)
    await plain.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    rest = await plain.read_to_eof()
    assert b"HTTP/1.1" not in rest  # no plaintext answer; at most a TLS alert
    await plain.aclose()
    # A client that connects and never starts TLS is dropped after handshake_timeout.
    silent = await RawPeer.connect(server.port)
    with anyio.fail_after(5):
        assert await silent.read_to_eof() == b""
    await silent.aclose()
    async with clients(server.port, tls=client_context) as connect:
        member = await connect("/c/after")
        assert (await recv_json(member))["self"] is True


def test_the_command_line_serves_wss_with_a_certificate_file(
    ca: trustme.CA, client_context: ssl.SSLContext, tmp_path: Path
) -> None:
    """``relaycore serve --certfile`` (key in the same file) answers a wss:// client."""
    import socket
    import subprocess

    cert = ca.issue_cert("127.0.0.1")
    pem = tmp_path / "relay.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "transports", "serve", "--port", str(port), "--certfile", str(pem)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert f"wss://127.0.0.1:{port}" in line, line

        async def check() -> None:
            peer = await RawPeer.connect_tls(port, client_context)
            status, _ = await peer.upgrade("/c/cli")
            assert status == 101
            assert (await peer.read_json())["self"] is True
            await peer.aclose()

        anyio.run(check)
    finally:
        process.terminate()
        process.wait(10)


def test_a_missing_certificate_is_a_clear_error(tmp_path: Path) -> None:
    import subprocess

    missing = tmp_path / "nope.pem"
    result = subprocess.run(
        [sys.executable, "-m", "transports", "serve", "--port", "0", "--certfile", str(missing)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "cannot load the TLS certificate" in result.stderr


def test_a_key_without_a_certificate_is_refused_before_anything_starts(tmp_path: Path) -> None:
    import subprocess

    with pytest.raises(ValueError, match="needs a certificate"):
        RelayServer(make_config('[server]\ntls_keyfile = "key.pem"'))
    result = subprocess.run(
        [sys.executable, "-m", "transports", "serve", "--port", "0", "--keyfile", str(tmp_path / "key.pem")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "needs a certificate" in result.stderr
