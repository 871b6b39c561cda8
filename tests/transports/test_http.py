"""The relay's plain HTTP face over real sockets, behind every front door.

PROTOCOL.md section 1 (endpoints, channel and alias bounds on the upgrade) and section 5
(HTTP push), with the message-size limit of section 8 applied to push bodies.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote

import pytest
from doors import Relay
from rawws import RawPeer, http, post, upgrade_status
from wsclient import Client, clients, joined, recv_json

from relaycore import Config

pytestmark = [pytest.mark.anyio, pytest.mark.doors]

LIMIT = 1024

CONFIG = f"""
[limits]
max_message_bytes = {LIMIT}
connections_per_second_per_ip = 1000.0
pushes_per_second_per_ip = 1000.0

[namespaces]
"news" = {{ send_key = "sk" }}
"members" = {{ join_key = "jk" }}
"bare" = {{}}
""".encode()

PUSH_KEY = "x-send-key: sk\r\n"
MARKER = "nothing-came-before-me"


@pytest.fixture
def config() -> Config:
    """A small message limit, a push namespace, a join-only one and one without keys."""
    return Config.from_toml(CONFIG)


def get(path: str, headers: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode()


def upgrade_request(path: str, key: str | None) -> bytes:
    """A WebSocket upgrade request whose Sec-WebSocket-Key is ``key`` (omitted if None)."""
    key_line = "" if key is None else f"Sec-WebSocket-Key: {key}\r\n"
    return get(path, f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n{key_line}")


def chunked_post(path: str, chunks: list[bytes], headers: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n{headers}\r\n".encode()
    body = b"".join(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for chunk in chunks)
    return head + body + b"0\r\n\r\n"


async def push_marker(port: int, channel: str) -> None:
    """Push MARKER: a reader's next message proves that nothing reached it before."""
    status, _, _ = await http(port, post(f"/push/{channel}", json.dumps(MARKER).encode(), PUSH_KEY))
    assert status == 200


async def undelivered_push(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request``, a push to ``news:today`` that must deliver nothing, while a member
    reads the channel: its answer, once MARKER was the member's next message."""
    async with clients(port) as connect:
        reader = await joined(connect, "/c/news:today")
        answer = await http(port, request)
        await push_marker(port, "news:today")
        assert await next_message(reader) == MARKER
    return answer


async def assert_nobody_in_room(port: int) -> None:
    """Nobody joined ``room`` through a refused request: the next member is its first."""
    async with clients(port) as connect:
        assert (await recv_json(await connect("/c/room")))["total"] == 1


async def next_message(reader: Client) -> Any:
    return (await recv_json(reader))["message"]


def json_body(headers: dict[str, str], body: bytes) -> Any:
    assert headers["content-type"].startswith("application/json"), headers
    return json.loads(body)


def assert_refusal(headers: dict[str, str], body: bytes) -> None:
    """A push refusal: exactly ``{"ok":false,"error":<non-empty text>}``."""
    answer = json_body(headers, body)
    assert set(answer) == {"ok", "error"} and answer["ok"] is False, answer
    assert isinstance(answer["error"], str) and answer["error"], answer


# -- plain endpoints -------------------------------------------------------------------


async def test_version_is_plain_text_naming_relaycore(relay: Relay) -> None:
    status, headers, body = await http(relay.port, get("/version"))
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    assert body.startswith(b"relaycore ") and body.strip() != b"relaycore"


async def test_health_is_json_with_status_ok(relay: Relay) -> None:
    status, headers, body = await http(relay.port, get("/health"))
    assert status == 200
    assert json_body(headers, body)["status"] == "ok"


@pytest.mark.parametrize("path", ["/", "/nope", "/c", "/r", "/versions", "/health/extra", "/C/room"])
async def test_unknown_paths_are_404(relay: Relay, path: str) -> None:
    status, _, _ = await http(relay.port, get(path))
    assert status == 404


@pytest.mark.parametrize(
    ("headers", "status", "body"),
    [
        ("", 426, b"WebSocket upgrade required."),
        (
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            426,
            b"WebSocket upgrade required.",
        ),
        (
            "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            426,
            b"WebSocket upgrade required.",
        ),
    ],
    ids=["plain-get", "no-upgrade-header", "no-connection-upgrade"],
)
async def test_channel_get_without_a_valid_upgrade_is_refused(
    relay: Relay, headers: str, status: int, body: bytes
) -> None:
    """docs/protocol.md section 4: without both upgrade headers the request is no upgrade at
    all (checks 2 and 3), on every door."""
    answer, _, text = await http(relay.port, get("/c/room", headers))
    assert (answer, text) == (status, body)
    await assert_nobody_in_room(relay.port)


async def test_upgrade_without_a_websocket_key_is_400(relay: Relay) -> None:
    status, _, _ = await http(relay.port, upgrade_request("/c/room", None))
    assert status == 400
    await assert_nobody_in_room(relay.port)


@pytest.mark.parametrize(
    "key",
    ["", "not base64 at all!", base64.b64encode(b"x" * 15).decode(), base64.b64encode(b"x" * 17).decode()],
    ids=["empty", "not-base64", "15-bytes", "17-bytes"],
)
async def test_bad_websocket_key_is_400(relay: Relay, key: str) -> None:
    status, _, _ = await http(relay.port, upgrade_request("/c/room", key))
    assert status == 400
    await assert_nobody_in_room(relay.port)


# -- channel and alias bounds on the upgrade --------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/c/", "/r/", "/c/?alias=x", "/c/" + "a" * 257, "/c/" + "%61" * 257, "/c/" + quote("é" * 129)],
    ids=["empty", "empty-legacy", "empty-with-query", "257-bytes", "257-bytes-encoded", "258-bytes-utf8"],
)
async def test_empty_or_oversized_channel_is_400(relay: Relay, path: str) -> None:
    assert await upgrade_status(relay.port, path) == 400


async def test_channel_of_exactly_256_bytes_after_decoding_works(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        first = await connect("/c/" + "a" * 256)
        assert (await recv_json(first))["total"] == 1
        # 768 bytes of path, 256 bytes of channel: the bound applies after decoding.
        second = await connect("/c/" + "%61" * 256)
        assert (await recv_json(second))["total"] == 2
        wide = await connect("/c/" + quote("é" * 128))  # 128 characters, 256 bytes
        assert (await recv_json(wide))["total"] == 1


@pytest.mark.parametrize("query", ["alias=" + "a" * 65, "as=" + "a" * 65, "alias=" + quote("é" * 65)])
async def test_alias_over_64_characters_is_400(relay: Relay, query: str) -> None:
    assert await upgrade_status(relay.port, f"/c/room?{query}") == 400


@pytest.mark.parametrize("alias", ["a" * 64, "é" * 64])
async def test_alias_of_64_characters_works(relay: Relay, alias: str) -> None:
    async with clients(relay.port) as connect:
        hello = await recv_json(await connect(f"/c/room?alias={quote(alias)}"))
        assert hello["alias"] == alias


# -- HTTP push ---------------------------------------------------------------------------


async def test_push_reaches_every_member_without_sender_fields(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        readers = [await joined(connect, "/c/news:today") for _ in range(3)]
        for position, reader in enumerate(readers):
            for _ in range(len(readers) - 1 - position):
                await recv_json(reader)  # the later joins
        outsider = await joined(connect, "/c/news:tomorrow")

        status, headers, body = await http(
            relay.port, post("/push/news:today", b'{"headline":"hi","n":[1,2]}', "X-Send-Key: sk\r\n")
        )
        assert status == 200
        assert json_body(headers, body) == {"ok": True, "recipients": 3}

        frames = [await reader.recv() for reader in readers]
        assert frames[0] == frames[1] == frames[2]  # one envelope for every recipient
        assert isinstance(frames[0], str)
        pushed = json.loads(frames[0])
        assert pushed == {"date": pushed["date"], "message": {"headline": "hi", "n": [1, 2]}}
        assert isinstance(pushed["date"], int)
        await push_marker(relay.port, "news:tomorrow")
        assert await next_message(outsider) == MARKER


async def test_push_to_the_namespace_itself(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        reader = await joined(connect, "/c/news")
        status, headers, body = await http(relay.port, post("/push/news", b"42", PUSH_KEY))
        assert (status, json_body(headers, body)) == (200, {"ok": True, "recipients": 1})
        assert await next_message(reader) == 42


async def test_push_to_an_empty_channel_reaches_nobody(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        elsewhere = await joined(connect, "/c/news:other")
        status, headers, body = await http(relay.port, post("/push/news:empty", b'"hello"', PUSH_KEY))
        assert status == 200
        assert json_body(headers, body) == {"ok": True, "recipients": 0}
        await push_marker(relay.port, "news:other")
        assert await next_message(elsewhere) == MARKER


@pytest.mark.parametrize("body", [b"{", b"undefined", b"", b"1 2", b"{'a': 1}", b"\xff\xfe"])
async def test_push_with_a_body_that_is_not_json_is_400(relay: Relay, body: bytes) -> None:
    status, headers, answer = await undelivered_push(relay.port, post("/push/news:today", body, PUSH_KEY))
    assert status == 400
    assert json_body(headers, answer) == {"ok": False, "error": "Invalid JSON body."}


@pytest.mark.parametrize(
    ("channel", "query", "key_header"),
    [
        pytest.param("news:today", "sendKey=sk", "", id="missing-key"),
        pytest.param("news:today", "sendKey=sk", "x-send-key: SK\r\n", id="wrong-case-key"),
        pytest.param("news:today", "sendKey=sk", "x-send-key: s\r\n", id="prefix-of-key"),
        pytest.param("news:today", "sendKey=sk", "x-send-key: jk\r\n", id="other-key"),
        pytest.param("open:room", "", PUSH_KEY, id="no-reservation"),
        pytest.param("newsroom", "", PUSH_KEY, id="not-under-namespace"),
        pytest.param("members:x", "joinKey=jk", "x-send-key: jk\r\n", id="reservation-without-send-key"),
        pytest.param("bare:x", "", PUSH_KEY, id="reservation-without-keys"),
    ],
)
async def test_push_without_the_namespace_send_key_is_403(
    relay: Relay, channel: str, query: str, key_header: str
) -> None:
    async with clients(relay.port) as connect:
        reader = await joined(connect, f"/c/{channel}?{query}")
        speaker = await joined(connect, f"/c/{channel}?{query}")
        await recv_json(reader)  # the speaker's join
        status, headers, body = await http(relay.port, post(f"/push/{channel}", b'{"x":1}', key_header))
        assert status == 403
        assert_refusal(headers, body)
        await speaker.send(json.dumps(MARKER))
        assert await next_message(reader) == MARKER


async def test_ephemeral_send_key_of_an_open_channel_does_not_allow_push(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        reader = await joined(connect, "/c/open:room?sendKey=sk")
        speaker = await joined(connect, "/c/open:room?sendKey=sk")
        await recv_json(reader)  # the speaker's join
        status, headers, body = await http(relay.port, post("/push/open:room", b"1", PUSH_KEY))
        assert status == 403
        assert_refusal(headers, body)
        await speaker.send(json.dumps(MARKER))
        assert await next_message(reader) == MARKER


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_push_with_another_method_is_405(relay: Relay, method: str) -> None:
    request = f"{method} /push/news:today HTTP/1.1\r\nHost: x\r\n{PUSH_KEY}Content-Length: 1\r\n\r\n1"
    status, _, _ = await undelivered_push(relay.port, request.encode())
    assert status == 405


async def test_push_body_of_exactly_the_limit_is_delivered(relay: Relay) -> None:
    body = b'"' + b"x" * (LIMIT - 2) + b'"'
    async with clients(relay.port) as connect:
        reader = await joined(connect, "/c/news:today")
        status, headers, answer = await http(relay.port, post("/push/news:today", body, PUSH_KEY))
        assert (status, json_body(headers, answer)) == (200, {"ok": True, "recipients": 1})
        assert await next_message(reader) == "x" * (LIMIT - 2)


async def test_push_body_over_the_limit_with_content_length_is_413(relay: Relay) -> None:
    body = b'"' + b"x" * (LIMIT - 1) + b'"'
    status, _, _ = await undelivered_push(relay.port, post("/push/news:today", body, PUSH_KEY))
    assert status == 413


async def test_chunked_push_body_is_delivered(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        reader = await joined(connect, "/c/news:today")
        request = chunked_post("/push/news:today", [b'{"parts":', b'"two"}'], PUSH_KEY)
        status, headers, body = await http(relay.port, request)
        assert (status, json_body(headers, body)) == (200, {"ok": True, "recipients": 1})
        assert await next_message(reader) == {"parts": "two"}


async def test_chunked_push_body_over_the_limit_is_413(relay: Relay) -> None:
    # Each chunk is under the limit; together they are over it.
    chunks = [b'"' + b"x" * 599, b"x" * 600, b"x" * 600 + b'"']
    status, _, _ = await undelivered_push(relay.port, chunked_post("/push/news:today", chunks, PUSH_KEY))
    assert status == 413


# -- connections ---------------------------------------------------------------------------


async def test_keep_alive_connection_answers_every_request(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        reader = await joined(connect, "/c/news:today")
        peer = await RawPeer.connect(relay.port)
        try:
            await peer.send(get("/version"))
            status, _, body = await peer.response()
            assert status == 200 and body.startswith(b"relaycore ")

            await peer.send(post("/push/news:today", b'{"n":1}', PUSH_KEY))
            status, headers, body = await peer.response()
            assert (status, json_body(headers, body)) == (200, {"ok": True, "recipients": 1})
            assert (await recv_json(reader))["message"] == {"n": 1}

            # Pipelined: two requests in one write, answered in order.
            await peer.send(post("/push/news:today", b'{"n":2}', PUSH_KEY) + get("/health"))
            status, headers, body = await peer.response()
            assert (status, json_body(headers, body)) == (200, {"ok": True, "recipients": 1})
            status, headers, body = await peer.response()
            assert status == 200 and json_body(headers, body)["status"] == "ok"
            assert (await recv_json(reader))["message"] == {"n": 2}
        finally:
            await peer.aclose()


@pytest.mark.parametrize(
    "request_line",
    [b"THIS IS NOT HTTP\r\n\r\n", b"GET /version\r\n\r\n", b"\x00\xff\x16\x03\x01\r\n\r\n"],
    ids=["words", "no-version", "binary"],
)
async def test_malformed_request_is_400_and_closed_and_others_are_served(relay: Relay, request_line: bytes) -> None:
    async with clients(relay.port) as connect:
        alice = await joined(connect, "/c/room")
        bob = await joined(connect, "/c/room")
        await recv_json(alice)  # bob's join

        peer = await RawPeer.connect(relay.port)
        try:
            await peer.send(request_line)
            status, headers, _ = await peer.response()
            assert status == 400
            # The server closes the connection (after the body, if it has no Content-Length).
            rest = await peer.read_to_eof()
            assert rest == b"" or "content-length" not in headers, rest
            assert b"HTTP/" not in rest, rest
        finally:
            await peer.aclose()

        status, _, _ = await http(relay.port, get("/health"))
        assert status == 200
        await alice.send('{"still":"here"}')
        assert (await recv_json(bob))["message"] == {"still": "here"}
        newcomer = await connect("/c/room")
        assert (await recv_json(newcomer))["total"] == 3
