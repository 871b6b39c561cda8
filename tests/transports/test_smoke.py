"""The server answers plain HTTP and relays a message, on both backends."""

from __future__ import annotations

import anyio
import pytest

from transports.server import RelayServer

pytestmark = pytest.mark.anyio


async def test_version_over_a_real_socket(relay: RelayServer) -> None:
    stream = await anyio.connect_tcp("127.0.0.1", relay.port)
    async with stream:
        await stream.send(b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        with anyio.fail_after(5):
            while True:
                try:
                    data += await stream.receive()
                except anyio.EndOfStream:
                    break
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.endswith(b"relaycore 0.1.0\n")
