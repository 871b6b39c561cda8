"""What the WebSocket itself looks like behind each front door: extensions and close reasons.

docs/protocol.md sections 12 and 13. An ASGI server builds the frames, so this is where the
doors may differ from the native server even though the relay decides the same things.
"""

from __future__ import annotations

import pytest
from doors import ASGI_DOORS, Relay, close_of, raw_peer, server_gap
from wsclient import clients, join_all, recv_json

from conftest import make_config, running

pytestmark = [pytest.mark.anyio, pytest.mark.doors]

DEFLATE = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


@server_gap(
    *ASGI_DOORS,
    raises=AssertionError,
    match=r"\Anegotiated sec-websocket-extensions: permessage-deflate;",
    reason="the ASGI server negotiates permessage-deflate itself when the client offers it (uvicorn: "
    "--ws-per-message-deflate, on by default; hypercorn: always), and compresses each message once per "
    "recipient; the relay cannot turn it off",
)
async def test_no_extension_is_negotiated(relay: Relay) -> None:
    async with raw_peer(relay.port) as peer:
        status, headers = await peer.upgrade("/c/room", headers=DEFLATE)
        assert status == 101
        assert "sec-websocket-extensions" not in headers, (
            f"negotiated sec-websocket-extensions: {headers.get('sec-websocket-extensions')}; all headers: {headers}"
        )


async def test_a_message_over_the_limit_is_closed_with_its_reason(door: str) -> None:
    config = make_config("[limits]\nmax_message_bytes = 64")
    async with running(config, door=door) as server, clients(server.port) as connect:
        watcher, big = await join_all(connect, "/c/room", "/c/room")
        await big.send('"' + "x" * 100 + '"')
        assert await close_of(big) == (1009, "message too big")
        assert (await recv_json(watcher))["type"] == "leave"


async def test_the_rate_limit_close_says_why(door: str) -> None:
    config = make_config("[limits]\nmessages_per_second = 0.1\nmessages_burst = 1")
    async with running(config, door=door) as server, clients(server.port) as connect:
        (flood,) = await join_all(connect, "/c/room")
        for n in range(4):
            await flood.send(str(n))
        assert [(await recv_json(flood))["message"] for _ in range(3)] == [
            f"Rate limit exceeded (warning {n} of 3)." for n in (1, 2, 3)
        ]
        assert await close_of(flood) == (1008, "rate limit exceeded")
