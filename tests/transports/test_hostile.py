"""Hostile input over real sockets: the right status or close code, never a crash, a hang
or a leak, and the server keeps serving everyone else."""

from __future__ import annotations

import logging
import struct

import anyio
import pytest
from rawws import BINARY, PING, TEXT, RawPeer, frame, http
from wsclient import clients, joined, recv_json

from conftest import make_config, running
from transports.server import RelayServer

pytestmark = pytest.mark.anyio


async def still_serving(server: RelayServer) -> None:
    status, _, body = await http(server.port, b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200 and body.startswith(b"relaycore ")


async def refused(server: RelayServer, data: bytes) -> tuple[int, bytes]:
    """Send raw bytes; return the status of the answer, and check the connection closes."""
    peer = await RawPeer.connect(server.port)
    try:
        await peer.send(data)
        status, _, body = await peer.response()
        await peer.read_to_eof()
        return status, body
    finally:
        await peer.aclose()


async def test_oversized_request_headers_get_431(relay: RelayServer) -> None:
    request = b"GET /c/room HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * 20_000 + b"\r\n\r\n"
    assert (await refused(relay, request))[0] == 431
    await still_serving(relay)


async def test_endless_headers_are_cut_off(relay: RelayServer) -> None:
    peer = await RawPeer.connect(relay.port)
    await peer.send(b"GET /c/room HTTP/1.1\r\n")
    status = None
    with anyio.fail_after(5):
        try:
            for n in range(2_000):  # the server stops us long before 2,000 headers
                await peer.send(f"X-H{n}: {'v' * 30}\r\n".encode())
        except (anyio.BrokenResourceError, ConnectionResetError, BrokenPipeError):
            pass
        try:
            status = (await peer.response())[0]
        except (EOFError, ConnectionResetError):
            status = None
    await peer.aclose()
    assert status in (431, None)  # answered 431, or reset while we were still sending
    await still_serving(relay)


async def test_invalid_http_gets_400(relay: RelayServer) -> None:
    assert (await refused(relay, b"HELLO THERE\r\n\r\n"))[0] == 400
    assert (await refused(relay, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"))[0] == 400
    await still_serving(relay)


async def test_tls_client_hello_on_the_plain_port_gets_400(relay: RelayServer) -> None:
    hello = bytes.fromhex("16030100a5010000a10303") + bytes(32) + b"\x00\x00\x02\x13\x01\x01\x00"
    assert (await refused(relay, hello))[0] == 400
    await still_serving(relay)


@pytest.mark.parametrize(
    ("name", "bad_frame", "code"),
    [
        ("invalid UTF-8", frame(TEXT, b'"\xff\xfe"'), 1007),
        ("reserved opcode", frame(0x3, b"x"), 1002),
        ("compressed without negotiation", frame(TEXT, b'"x"', rsv=4), 1002),
        ("unmasked client frame", frame(TEXT, b'"x"', mask=False), 1002),
        ("control frame too long", frame(PING, b"x" * 126), 1002),
        ("fragmented control frame", frame(PING, b"x", fin=False), 1002),
        ("continuation with nothing to continue", frame(0x0, b"x"), 1002),
        ("bad close code", frame(0x8, struct.pack("!H", 999)), 1002),
        ("close reason not UTF-8", frame(0x8, struct.pack("!H", 1000) + b"\xff"), 1007),
    ],
    ids=lambda value: "frame" if isinstance(value, bytes) else str(value),  # the masks are random
)
async def test_bad_frames_close_with_the_right_code_and_others_carry_on(
    name: str, bad_frame: bytes, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relaycore")
    async with running() as server, clients(server.port) as connect:
        watcher = await joined(connect, "/c/room")
        peer = await RawPeer.connect(server.port)
        assert (await peer.upgrade("/c/room"))[0] == 101
        await peer.read_json()
        assert (await recv_json(watcher))["type"] == "join"
        await peer.send(bad_frame)
        assert await peer.read_close() == code, name
        await peer.aclose()
        assert (await recv_json(watcher))["type"] == "leave"
        other = await joined(connect, "/c/room?echo")
        await other.send('"still here"')
        assert (await recv_json(other))["message"] == "still here"
    ended = [r for r in caplog.records if "ended" in r.getMessage()]
    assert len(ended) == 1 and ended[0].levelno == logging.INFO, [r.getMessage() for r in caplog.records]


async def test_binary_frames_get_an_error_not_a_close(relay: RelayServer) -> None:
    peer = await RawPeer.connect(relay.port)
    assert (await peer.upgrade("/c/room"))[0] == 101
    await peer.read_json()
    await peer.send(frame(BINARY, b"\x00\x01"))
    assert (await peer.read_json())["message"] == "Binary messages are not supported."
    await peer.aclose()


async def test_thousands_of_half_open_connections_are_reaped() -> None:
    config = make_config("[limits]\nhandshake_timeout = 1.0")
    async with running(config) as server:
        peers = []
        for n in range(1_000):
            peer = await RawPeer.connect(server.port)
            if n % 2:
                await peer.send(b"GET /c/room HTTP/1.1\r\nHost: x\r\n")  # never finished
            peers.append(peer)
        await still_serving(server)
        # Every one of them is closed by the server (EOF), none is kept.
        with anyio.fail_after(20):
            for peer in peers:
                await peer.read_to_eof(timeout=20)
            while len(server._peers) > 0:
                await anyio.sleep(0.05)
        for peer in peers:
            await peer.aclose()
        await still_serving(server)


async def test_keys_never_reach_the_log(relay: RelayServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await refused(relay, b"GET /c/room?joinKey=SECRET1 HTTP/1.1 junk\r\n\r\n")
    await refused(relay, b"POST /push/x HTTP/1.1\r\nx-send-key SECRET2\r\n\r\n")
    await still_serving(relay)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "malformed HTTP request" in logged  # the refusals were logged...
    assert "SECRET" not in logged  # ...without the keys they carried
