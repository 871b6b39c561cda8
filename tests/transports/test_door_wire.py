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
ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


@server_gap(
    *ASGI_DOORS,
    raises=AssertionError,
    match=r"\Aanswered: permessage-deflate;",
    reason="the ASGI server negotiates permessage-deflate itself, with context takeover both ways: a "
    "compressor and a decompressor per connection, and every message compressed once per recipient "
    "(uvicorn's default websockets-sansio: 12-bit windows, memLevel 5, off with --ws-per-message-deflate "
    "false; hypercorn: wsproto's defaults, 15-bit windows, always on); the relay cannot change its answer",
)
async def test_permessage_deflate_is_answered_without_context_takeover(relay: Relay) -> None:
    async with raw_peer(relay.port) as peer:
        status, headers = await peer.upgrade("/c/room", headers=DEFLATE)
        assert status == 101
        answer = headers.get("sec-websocket-extensions")
        assert answer == ANSWER, f"answered: {answer}; all headers: {headers}"


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
