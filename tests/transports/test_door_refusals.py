"""Refusals are real HTTP answers behind every front door: status, text, headers.

docs/protocol.md section 4: a refused upgrade is a plain HTTP response with a
``text/plain; charset=utf-8`` body, and the TCP connection ends with it. Behind ASGI the
relay sends it through the server's ``websocket.http.response`` extension (uvicorn and
hypercorn both have it), so a client sees the same 400, 403 or 429 as from the native server.
"""

from __future__ import annotations

import pytest
from doors import Relay, refusal
from rawws import http, upgrade_status

from conftest import make_config, running

pytestmark = [pytest.mark.anyio, pytest.mark.doors]

CONFIG = """
[namespaces."locked"]
join_key = "jk"
send_key = "sk"
"""

JOIN_KEY_REQUIRED = "Joining requires a valid joinKey."

REFUSED_UPGRADES = [
    ("/c/locked:room", 403, JOIN_KEY_REQUIRED),
    ("/c/locked:room?joinKey=nope", 403, JOIN_KEY_REQUIRED),
    ("/c/locked:room?joinKey=jk&sendKey=nope", 403, "Invalid sendKey for this namespace."),
    ("/c/", 400, "Channel name must be 1 to 256 bytes."),
    ("/c/" + "a" * 257, 400, "Channel name must be 1 to 256 bytes."),
    ("/c/%FF%FE", 400, "Channel name is not valid UTF-8."),
    ("/c/room?alias=" + "a" * 65, 400, "Alias must be at most 64 characters."),
    ("/c/room?alias=%FF", 400, "Query string is not valid UTF-8."),
]


@pytest.fixture
def config() -> object:
    return make_config(CONFIG)


@pytest.mark.parametrize(
    ("path", "status", "text"),
    REFUSED_UPGRADES,
    ids=["no-join-key", "wrong-join-key", "wrong-send-key", "empty-channel", "long-channel", "channel-not-utf8",
         "long-alias", "query-not-utf8"],
)  # fmt: skip
async def test_refused_upgrade_is_a_plain_text_answer_and_the_end_of_the_connection(
    relay: Relay, path: str, status: int, text: str
) -> None:
    answer, headers, body, rest = await refusal(relay.port, path)
    assert (answer, body.decode()) == (status, text)
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert rest == b"", f"after the refusal the server sent {rest!r} (b'...': it kept the connection open)"


async def test_connection_rate_refusal_says_when_to_retry(door: str) -> None:
    async with running(make_config("[limits]\nconnections_per_second_per_ip = 1"), door=door) as server:
        assert await upgrade_status(server.port, "/c/room") == 101
        status, headers, body, rest = await refusal(server.port, "/c/room")
        assert (status, body) == (429, b"Too many connections; slow down.")
        assert headers["retry-after"] == "1" and headers["content-type"] == "text/plain; charset=utf-8"
        assert rest == b""


@pytest.mark.parametrize(
    ("request_bytes", "status", "text", "header"),
    [
        (b"GET /c/room HTTP/1.1\r\nHost: x\r\n\r\n", 426, "WebSocket upgrade required.", ("upgrade", "websocket")),
        (b"POST /c/room HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405, "Method not allowed.",
         ("allow", "GET")),
        (b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 404, "Not found.", None),
        (b"DELETE /health HTTP/1.1\r\nHost: x\r\n\r\n", 404, "Not found.", None),
    ],
    ids=["plain-get-on-a-channel", "post-on-a-channel", "unknown-path", "delete-health"],
)  # fmt: skip
async def test_plain_requests_are_refused_in_plain_text(
    relay: Relay, request_bytes: bytes, status: int, text: str, header: tuple[str, str] | None
) -> None:
    answer, headers, body = await http(relay.port, request_bytes)
    assert (answer, body.decode()) == (status, text)
    assert headers["content-type"] == "text/plain; charset=utf-8"
    if header is not None:
        name, value = header
        assert headers[name].lower() == value.lower()
