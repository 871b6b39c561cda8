"""The per-connection driver, fed raw HTTP and WebSocket bytes as a socket would.

Client frames are built (and masked) by hand in ``_frames``; what the connection writes
is read back from ``conn.outbox`` and parsed, so every assertion is about the bytes a
real client would receive.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

import relaycore
from relaycore import Config, Connection, Hub, LimitsConfig, NamespaceConfig, ServerConfig, State, __version__
from relaycore._connection_state import NEXT, SHOWN, ConnectionBase, Phase
from relaycore.testing import DeferredBackplane, FakeClock, seeded_uids

from ._frames import (
    OP_CLOSE,
    OP_PONG,
    OP_TEXT,
    SAMPLE_ACCEPT,
    Peer,
    binary,
    client_frame,
    close,
    continuation,
    fragmented,
    open_ws,
    parse_frames,
    parse_response,
    parse_responses,
    ping,
    request,
    text,
    upgrade_request,
)

START = 1_700_000_000.0
T0 = 1_700_000_000_000
LIMIT = 1024

CONFIG = Config(
    limits=LimitsConfig(max_message_bytes=LIMIT),
    namespaces={"feed": NamespaceConfig(send_key="f"), "vip": NamespaceConfig(join_key="j")},
)


@pytest.fixture
def hub() -> Hub:
    return Hub(CONFIG, FakeClock(START), seeded_uids(3))


def _leave(total: int) -> dict[str, object]:
    return {"type": "leave", "total": total, "date": T0}


# -- plain HTTP ------------------------------------------------------------------------------


def test_version_is_plain_text(hub: Hub) -> None:
    peer = Peer(hub)
    peer.feed(request("GET", "/version"))
    response = peer.response()
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.body == f"relaycore {__version__}\n".encode()
    assert peer.state() is State.HTTP


def test_health_is_json_with_status_ok(hub: Hub) -> None:
    open_ws(hub, "/c/room")
    peer = Peer(hub)
    peer.feed(request("GET", "/health"))
    response = peer.response()
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["status"] == "ok"


@pytest.mark.parametrize("target", ["/", "/nope", "/c", "/cx/room", "/push", "/versions", "/health/x"])
def test_unknown_path_is_404(hub: Hub, target: str) -> None:
    peer = Peer(hub)
    peer.feed(request("GET", target))
    assert peer.response().status == 404
    assert hub.channels == {}


def test_keep_alive_serves_two_requests_on_one_connection(hub: Hub) -> None:
    peer = Peer(hub)
    peer.feed(request("GET", "/version") + request("GET", "/health"))
    first, second = parse_responses(peer.drain())
    assert first.status == 200
    assert second.status == 200
    assert second.json()["status"] == "ok"
    peer.feed(request("GET", "/nope"))
    assert peer.response().status == 404
    peer.feed(request("GET", "/version"))
    assert peer.response().status == 200
    assert peer.state() is State.HTTP


def test_malformed_request_line_is_400_and_closes(hub: Hub) -> None:
    peer = Peer(hub)
    peer.feed(b"THIS IS NOT HTTP\r\n\r\n")
    response = peer.response()
    assert response.status == 400
    assert peer.state() is State.CLOSED


def test_eof_before_any_request_closes(hub: Hub) -> None:
    peer = Peer(hub)
    peer.feed(b"")
    assert peer.state() is State.CLOSED
    assert peer.drain() == b""


# -- the opening handshake ---------------------------------------------------------------------


def test_get_channel_without_upgrade_is_426(hub: Hub) -> None:
    peer = Peer(hub)
    peer.feed(request("GET", "/c/room"))
    response = peer.response()
    assert response.status == 426
    assert response.headers["upgrade"].lower() == "websocket"
    assert hub.channels == {}


@pytest.mark.parametrize("key", ["", "short", "!!!!not-base64!!!!!!!!==", "dGhlIHNhbXBsZSBub25jZQ"])
def test_bad_websocket_key_is_400(hub: Hub, key: str) -> None:
    peer = Peer(hub)
    peer.feed(upgrade_request("/c/room", key=key))
    assert peer.response().status == 400
    assert hub.channels == {}


def test_channel_over_256_bytes_is_400(hub: Hub) -> None:
    peer = Peer(hub)
    peer.feed(upgrade_request("/c/" + "a" * 257))
    assert peer.response().status == 400
    assert hub.channels == {}


def test_channel_of_256_bytes_is_accepted(hub: Hub) -> None:
    open_ws(hub, "/c/" + "%C3%A9" * 128)
    assert list(hub.channels) == ["é" * 128]


def test_empty_channel_is_400(hub: Hub) -> None:
    peer = Peer(hub)
    peer.feed(upgrade_request("/c/"))
    assert peer.response().status == 400


def test_alias_over_64_characters_is_400(hub: Hub) -> None:
    peer = Peer(hub)
    peer.feed(upgrade_request("/c/room?alias=" + "x" * 65))
    assert peer.response().status == 400
    assert hub.channels == {}


def test_wrong_join_key_is_403_and_nobody_hears_of_it(hub: Hub) -> None:
    member, _ = open_ws(hub, "/c/vip:room?joinKey=j")
    peer = Peer(hub)
    peer.feed(upgrade_request("/c/vip:room?joinKey=wrong"))
    response, rest = parse_response(peer.drain())
    assert response.status == 403
    assert rest == b""
    assert member.drain() == b""
    assert len(hub.channels["vip:room"].members) == 1


def test_upgrade_answers_101_with_the_accept_then_the_self_join_first(hub: Hub) -> None:
    peer = Peer(hub)
    peer.feed(upgrade_request("/c/room%3A1?alias=Al&announce"))
    response, rest = parse_response(peer.drain())
    assert response.status == 101
    assert response.headers["upgrade"].lower() == "websocket"
    assert response.headers["connection"].lower() == "upgrade"
    assert response.headers["sec-websocket-accept"] == SAMPLE_ACCEPT
    (hello,) = parse_frames(rest)
    assert peer.conn.member is not None
    assert hello.json() == {
        "type": "join",
        "self": True,
        "uid": peer.conn.member.uid,
        "alias": "Al",
        "total": 1,
        "date": T0,
    }
    assert peer.state() is State.WEBSOCKET
    assert list(hub.channels) == ["room:1"]


def test_legacy_r_path_joins_the_same_channel(hub: Hub) -> None:
    a, _ = open_ws(hub, "/c/room")
    _, hello = open_ws(hub, "/r/room")
    assert hello["total"] == 2
    assert a.messages() == [{"type": "join", "total": 2, "date": T0}]


def test_frames_sent_with_the_handshake_are_handled_after_the_self_join(hub: Hub) -> None:
    other, _ = open_ws(hub, "/c/room")
    peer = Peer(hub)
    peer.feed(upgrade_request("/c/room?echo") + text('{"early":1}') + text('{"early":2}'))
    response, rest = parse_response(peer.drain())
    assert response.status == 101
    assert peer.conn.member is not None
    uid = peer.conn.member.uid
    assert [f.json() for f in parse_frames(rest)] == [
        {"type": "join", "self": True, "uid": uid, "total": 2, "date": T0},
        {"uid": uid, "date": T0, "message": {"early": 1}},
        {"uid": uid, "date": T0, "message": {"early": 2}},
    ]
    assert other.messages() == [
        {"type": "join", "total": 2, "date": T0},
        {"uid": uid, "date": T0, "message": {"early": 1}},
        {"uid": uid, "date": T0, "message": {"early": 2}},
    ]


def test_handshake_and_frames_fed_one_byte_at_a_time(hub: Hub) -> None:
    other, _ = open_ws(hub, "/c/room")
    peer = Peer(hub)
    for byte in upgrade_request("/c/room") + text('{"slow":true}'):
        peer.feed(bytes([byte]))
    response, rest = parse_response(peer.drain())
    assert response.status == 101
    assert [f.json()["type"] for f in parse_frames(rest)] == ["join"]
    assert other.messages() == [
        {"type": "join", "total": 2, "date": T0},
        {"uid": _uid(peer), "date": T0, "message": {"slow": True}},
    ]


# -- messages ------------------------------------------------------------------------------------


@pytest.fixture
def pair(hub: Hub) -> tuple[Peer, Peer]:
    a, _ = open_ws(hub, "/c/room?alias=A")
    b, _ = open_ws(hub, "/c/room")
    a.drain()
    return a, b


def _uid(peer: Peer) -> str:
    assert peer.conn.member is not None
    return peer.conn.member.uid


def test_broadcast_between_two_connections(pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    a.feed(text('{"type":"chat","text":"hi"}'))
    assert b.messages() == [{"uid": _uid(a), "alias": "A", "date": T0, "message": {"type": "chat", "text": "hi"}}]
    assert a.drain() == b""


def test_broadcast_relays_the_payload_bytes_unchanged(pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    a.feed(text('{ "b" : [1, 2.50] ,"a":"h\\u00e9"}'))
    (frame,) = b.frames()
    assert frame.payload.endswith(b',"message":{ "b" : [1, 2.50] ,"a":"h\\u00e9"}}')


@pytest.mark.parametrize("bad", ["undefined", "{not json", "", "{} {}", "hello"])
def test_invalid_json_gets_an_error_frame_and_the_connection_stays_open(pair: tuple[Peer, Peer], bad: str) -> None:
    a, b = pair
    a.feed(text(bad))
    assert a.messages() == [{"type": "error", "message": "Invalid JSON message.", "date": T0}]
    assert b.drain() == b""
    assert a.state() is State.WEBSOCKET
    a.feed(text("1"))
    assert b.messages() == [{"uid": _uid(a), "alias": "A", "date": T0, "message": 1}]


def test_binary_frame_is_refused_with_an_error_frame(pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    a.feed(binary(b'{"x":1}'))
    assert a.messages() == [{"type": "error", "message": "Binary messages are not supported.", "date": T0}]
    assert b.drain() == b""
    assert a.state() is State.WEBSOCKET


def test_fragmented_message_is_relayed_once_whole(pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    a.feed(fragmented('{"long":"' + "é" * 20 + '"}', 5, 6, 1))  # splits inside a character too
    assert b.messages() == [{"uid": _uid(a), "alias": "A", "date": T0, "message": {"long": "é" * 20}}]


def test_ping_between_fragments_is_answered_and_the_message_still_arrives(pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    a.feed(text('{"n":', fin=False) + ping(b"mid") + continuation("1}"))
    (pong,) = a.frames()
    assert (pong.opcode, pong.payload) == (OP_PONG, b"mid")
    assert b.messages() == [{"uid": _uid(a), "alias": "A", "date": T0, "message": {"n": 1}}]


def test_whole_frames_fragments_and_control_frames_keep_their_order(pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    stream = text('{"n":1}') + text('{"n":', fin=False) + ping(b"x") + continuation("2}") + text('{"n":3}')
    stream += text('{"n":4}') + ping(b"y") + text('{"n":5}')
    for cut in (len(stream), 9, 17):  # in one read, and cut inside frames
        a.feed(stream[:cut])
        if cut < len(stream):
            a.feed(stream[cut:])
        assert [f.payload for f in a.frames()] == [b"x", b"y"]
        assert [m["message"]["n"] for m in b.messages()] == [1, 2, 3, 4, 5]


def test_a_text_frame_cut_across_reads_is_relayed_once_whole(pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    frame = text('{"long":"' + "\u00e9" * 200 + '"}')  # a 16-bit length
    for i in range(0, len(frame), 7):
        a.feed(frame[i : i + 7])
    a.feed(text('{"next":1}'))
    assert [m["message"] for m in b.messages()] == [{"long": "\u00e9" * 200}, {"next": 1}]


def test_direct_message_reaches_only_its_target(hub: Hub) -> None:
    a, _ = open_ws(hub, "/c/room?echo")
    b, _ = open_ws(hub, "/c/room")
    c, _ = open_ws(hub, "/c/room")
    for peer in (a, b):
        peer.drain()
    a.feed(text("\x1f" + _uid(b) + '\x1f{"secret":1}'))
    assert b.messages() == [{"uid": _uid(a), "date": T0, "message": {"secret": 1}}]
    assert a.drain() == b""
    assert c.drain() == b""


def test_legacy_direct_message_form_is_accepted(hub: Hub) -> None:
    a, _ = open_ws(hub, "/c/room")
    b, _ = open_ws(hub, "/c/room")
    c, _ = open_ws(hub, "/c/room")
    a.drain()
    b.drain()
    a.feed(text("@@" + _uid(b) + '@@{"legacy":true}'))
    assert b.messages() == [{"uid": _uid(a), "date": T0, "message": {"legacy": True}}]
    assert a.drain() == b""
    assert c.drain() == b""


def test_direct_message_to_an_unknown_uid_is_an_error(pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    a.feed(text('\x1fnobody\x1f{"x":1}'))
    assert a.messages() == [{"type": "error", "message": "User nobody not found.", "date": T0}]
    assert b.drain() == b""


@pytest.mark.parametrize("frame", ['\x1fabc{"x":1}', "\x1fabcdef\x1fundefined", '@@abc{"x":1}'])
def test_malformed_direct_message_is_invalid_json(pair: tuple[Peer, Peer], frame: str) -> None:
    a, b = pair
    a.feed(text(frame))
    assert a.messages() == [{"type": "error", "message": "Invalid JSON message.", "date": T0}]
    assert b.drain() == b""


def test_listen_only_member_gets_the_send_key_error(hub: Hub) -> None:
    owner, _ = open_ws(hub, "/c/room?sendKey=s")
    listener, _ = open_ws(hub, "/c/room")
    owner.drain()
    listener.feed(text('{"x":1}') + text("\x1f" + _uid(owner) + '\x1f{"x":2}'))
    error = {"type": "error", "message": "Sending requires a valid sendKey.", "date": T0}
    assert listener.messages() == [error, error]
    assert owner.drain() == b""


# -- closing --------------------------------------------------------------------------------------


def test_messages_then_close_in_one_packet_are_all_relayed_before_the_leave(pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    a.feed(text('{"n":1}') + text('{"n":2}') + text('{"n":3}') + close(1000))
    uid = _uid(a)
    assert b.messages() == [
        {"uid": uid, "alias": "A", "date": T0, "message": {"n": 1}},
        {"uid": uid, "alias": "A", "date": T0, "message": {"n": 2}},
        {"uid": uid, "alias": "A", "date": T0, "message": {"n": 3}},
        _leave(1),
    ]
    (reply,) = a.frames()
    assert reply.opcode == OP_CLOSE
    assert reply.close_code == 1000
    assert a.state() is State.CLOSED


def test_close_handshake_is_answered_and_the_others_told(pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    b.feed(close(1000, "bye"))
    (reply,) = b.frames()
    assert reply.opcode == OP_CLOSE
    assert reply.close_code == 1000
    assert b.state() is State.CLOSED
    assert b.conn.close_code == 1000
    assert a.messages() == [_leave(1)]
    b.feed(text('{"late":1}'))  # nothing is read after the close
    assert a.drain() == b""


def test_close_without_a_code_is_answered(pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    b.feed(close(None))
    (reply,) = b.frames()
    assert reply.opcode == OP_CLOSE
    assert reply.close_code in (None, 1000)
    assert b.state() is State.CLOSED
    assert a.messages() == [_leave(1)]


def test_eof_is_a_leave(pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    b.feed(b"")
    assert b.state() is State.CLOSED
    assert a.messages() == [_leave(1)]
    assert "room" in b.hub.channels
    a.feed(b"")
    assert b.hub.channels == {}


def test_connection_lost_is_a_leave(pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    b.conn.connection_lost()
    assert b.state() is State.CLOSED
    assert a.messages() == [_leave(1)]


def test_ping_is_answered_with_a_pong_of_the_same_payload(pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    a.feed(ping(b"are you there"))
    (pong,) = a.frames()
    assert pong.opcode == OP_PONG
    assert pong.payload == b"are you there"
    assert a.state() is State.WEBSOCKET
    assert b.drain() == b""


def test_relay_initiated_close_waits_for_the_peer(pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    a.conn.close(1001, "going away")
    (frame,) = a.frames()
    assert (frame.opcode, frame.close_code, frame.close_reason) == (OP_CLOSE, 1001, "going away")
    assert a.state() is State.CLOSING
    assert b.messages() == [_leave(1)]
    a.feed(text('{"ignored":1}') + close(1001))
    assert b.drain() == b""
    assert a.state() is State.CLOSED


# -- message size -----------------------------------------------------------------------------------


def _string_of(n_bytes: int) -> str:
    """A JSON string value exactly ``n_bytes`` long once encoded."""
    return '"' + "a" * (n_bytes - 2) + '"'


def test_message_at_the_size_limit_is_relayed(pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    a.feed(text(_string_of(LIMIT)))
    assert b.messages() == [{"uid": _uid(a), "alias": "A", "date": T0, "message": "a" * (LIMIT - 2)}]
    assert a.state() is State.WEBSOCKET


def _assert_closed_as_too_big(a: Peer, b: Peer) -> None:
    sent = [(f.opcode, f.close_code if f.opcode == OP_CLOSE else f.payload[:60]) for f in a.frames()]
    assert sent == [(OP_CLOSE, 1009)]
    assert a.conn.close_code == 1009
    assert a.state() is State.CLOSING
    assert b.messages() == [_leave(1)]
    a.feed(close(1009))
    assert a.state() is State.CLOSED
    assert b.drain() == b""


def test_message_over_the_size_limit_closes_with_1009(pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    a.feed(text(_string_of(LIMIT + 1)))
    _assert_closed_as_too_big(a, b)


def test_size_limit_counts_utf8_bytes(pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    a.feed(text('"' + "é" * 600 + '"'))  # 602 characters, 1202 bytes
    _assert_closed_as_too_big(a, b)


def test_size_limit_applies_across_fragments(pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    a.feed(fragmented(_string_of(LIMIT + 200), 600))
    _assert_closed_as_too_big(a, b)


def test_size_limit_across_many_small_fragments(pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    a.feed(fragmented(_string_of(LIMIT + 1), *([100] * 10)))
    _assert_closed_as_too_big(a, b)


def test_size_limit_counts_utf8_bytes_across_fragments(pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    message = '"' + "é" * 550 + '"'  # 552 characters, 1102 bytes
    a.feed(fragmented(message, 401, 400))  # 401 + 400 + 301 bytes
    _assert_closed_as_too_big(a, b)


def test_size_limit_counts_utf8_bytes_across_many_fragments(pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    message = '"' + "é" * 799 + '"'  # 1600 bytes
    a.feed(fragmented(message, *([200] * 7)))
    _assert_closed_as_too_big(a, b)


def test_binary_message_over_the_size_limit_closes_with_1009(pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    a.feed(binary(b"x" * (LIMIT + 1)))
    _assert_closed_as_too_big(a, b)


# -- protocol errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frames",
    [
        text(b'"\xff\xfe"'),
        text(b'"\xed\xa0\x80"'),  # an encoded surrogate
        text(b'"\xc3', fin=False) + continuation(b'("'),  # broken across fragments
        text(b'"\xc3', fin=True),  # truncated at the end of the message
    ],
    ids=["bad-bytes", "surrogate", "across-fragments", "truncated"],
)
def test_invalid_utf8_in_a_text_frame_closes_with_1007(pair: tuple[Peer, Peer], frames: bytes) -> None:
    a, b = pair
    a.feed(frames)
    (frame,) = a.frames()
    assert frame.opcode == OP_CLOSE
    assert frame.close_code == 1007
    assert a.state() is State.CLOSED
    assert b.messages() == [_leave(1)]


@pytest.mark.parametrize(
    "bad_frame",
    [
        client_frame(0x1, b"1", rsv=0b100),  # RSV1 without an extension
        client_frame(0x1, b"1", rsv=0b001),  # RSV3
        client_frame(0x3, b"1"),  # reserved data opcode
        client_frame(0xB, b""),  # reserved control opcode
        client_frame(0x1, b"1", mask=None),  # clients must mask
        continuation(b"1"),  # continuation with nothing to continue
        client_frame(0x9, b"", fin=False),  # fragmented control frame
        client_frame(0x9, b"x" * 126),  # control frame payload over 125 bytes
        text('{"a":', fin=False) + text("1}"),  # a new message inside a fragmented one
        close(999),  # close code that may not be sent
        client_frame(0x8, b"\x03"),  # close payload of one byte
    ],
    ids=[
        "rsv1",
        "rsv3",
        "opcode-3",
        "opcode-B",
        "unmasked",
        "lone-continuation",
        "fragmented-ping",
        "long-ping",
        "interleaved-text",
        "close-999",
        "close-1-byte",
    ],
)
def test_protocol_error_closes_with_1002(pair: tuple[Peer, Peer], bad_frame: bytes) -> None:
    a, b = pair
    a.feed(bad_frame)
    (frame,) = a.frames()
    assert frame.opcode == OP_CLOSE
    assert frame.close_code == 1002
    assert a.state() is State.CLOSED
    assert b.messages() == [_leave(1)]


# -- HTTP push ------------------------------------------------------------------------------------


def _push(hub: Hub, target: str, body: bytes, key: str | None = "f", **headers: str) -> Peer:
    peer = Peer(hub)
    all_headers = dict(headers)
    if key is not None:
        all_headers["x-send-key"] = key
    all_headers.setdefault("Content-Type", "application/json")
    peer.feed(request("POST", target, all_headers, body))
    return peer


def test_push_with_the_send_key_reaches_the_members(hub: Hub) -> None:
    member, _ = open_ws(hub, "/c/feed:live")
    peer = _push(hub, "/push/feed:live", b'{"type":"news","n":1}')
    response = peer.response()
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"ok": True, "recipients": 1}
    assert member.messages() == [{"date": T0, "message": {"type": "news", "n": 1}}]
    assert peer.state() is State.HTTP


def test_push_channel_is_percent_decoded(hub: Hub) -> None:
    a, _ = open_ws(hub, "/c/feed:live")
    b, _ = open_ws(hub, "/c/feed:live")
    a.drain()
    response = _push(hub, "/push/feed%3Alive", b"[1,2]").response()
    assert response.json() == {"ok": True, "recipients": 2}
    assert a.messages() == [{"date": T0, "message": [1, 2]}]
    assert b.messages() == [{"date": T0, "message": [1, 2]}]


def test_push_to_an_empty_channel_is_200_with_no_recipients(hub: Hub) -> None:
    response = _push(hub, "/push/feed:nobody", b"1").response()
    assert response.status == 200
    assert response.json() == {"ok": True, "recipients": 0}


@pytest.mark.parametrize("body", [b"undefined", b"{", b"{} {}", b""])
def test_push_with_an_invalid_json_body_is_400(hub: Hub, body: bytes) -> None:
    member, _ = open_ws(hub, "/c/feed:live")
    response = _push(hub, "/push/feed:live", body).response()
    assert response.status == 400
    assert response.json() == {"ok": False, "error": "Invalid JSON body."}
    assert member.drain() == b""


def test_push_body_that_is_not_utf8_is_400(hub: Hub) -> None:
    member, _ = open_ws(hub, "/c/feed:live")
    response = _push(hub, "/push/feed:live", b'{"x":"\xff\xfe"}').response()
    assert response.status == 400
    assert response.json() == {"ok": False, "error": "Invalid JSON body."}
    assert member.drain() == b""


@pytest.mark.parametrize(
    ("target", "key"),
    [("/push/feed:live", "wrong"), ("/push/feed:live", None), ("/push/room", "f"), ("/push/vip:room", "j")],
)
def test_push_without_the_right_key_is_403(hub: Hub, target: str, key: str | None) -> None:
    member, _ = open_ws(hub, "/c/" + target.removeprefix("/push/") + ("?joinKey=j" if "vip" in target else ""))
    response = _push(hub, target, b'{"x":1}', key).response()
    assert response.status == 403
    body = response.json()
    assert body["ok"] is False
    assert isinstance(body["error"], str) and body["error"]
    assert member.drain() == b""


def test_get_on_push_is_405(hub: Hub) -> None:
    peer = Peer(hub)
    peer.feed(request("GET", "/push/feed:live", {"x-send-key": "f"}))
    response = peer.response()
    assert response.status == 405
    assert response.headers["allow"] == "POST"


def test_push_body_at_the_limit_is_accepted(hub: Hub) -> None:
    response = _push(hub, "/push/feed:live", _string_of(LIMIT).encode()).response()
    assert response.status == 200


def test_push_body_over_the_limit_by_content_length_is_413(hub: Hub) -> None:
    member, _ = open_ws(hub, "/c/feed:live")
    peer = _push(hub, "/push/feed:live", _string_of(LIMIT + 1).encode())
    assert peer.response().status == 413
    assert peer.state() is State.CLOSED
    assert member.drain() == b""


def test_push_body_over_the_limit_announced_before_it_arrives_is_413(hub: Hub) -> None:
    peer = Peer(hub)
    peer.feed(request("POST", "/push/feed:live", {"x-send-key": "f", "Content-Length": str(10 * LIMIT)}))
    assert peer.response().status == 413
    assert peer.state() is State.CLOSED


def test_chunked_push_body_over_the_limit_is_413(hub: Hub) -> None:
    member, _ = open_ws(hub, "/c/feed:live")
    body = _string_of(LIMIT + 1).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:600], body[600:])) + b"0\r\n\r\n"
    peer = Peer(hub)
    peer.feed(request("POST", "/push/feed:live", {"x-send-key": "f", "Transfer-Encoding": "chunked"}, chunks))
    assert peer.response().status == 413
    assert peer.state() is State.CLOSED
    assert member.drain() == b""


def test_chunked_push_body_under_the_limit_is_delivered(hub: Hub) -> None:
    member, _ = open_ws(hub, "/c/feed:live")
    chunks = b'3\r\n{"a\r\n4\r\n":1}\r\n0\r\n\r\n'
    peer = Peer(hub)
    peer.feed(request("POST", "/push/feed:live", {"x-send-key": "f", "Transfer-Encoding": "chunked"}, chunks))
    assert peer.response().json() == {"ok": True, "recipients": 1}
    assert member.messages() == [{"date": T0, "message": {"a": 1}}]


def test_two_pushes_on_one_keep_alive_connection(hub: Hub) -> None:
    member, _ = open_ws(hub, "/c/feed:live")
    peer = Peer(hub)
    one = request("POST", "/push/feed:live", {"x-send-key": "f"}, b"1")
    two = request("POST", "/push/feed:live", {"x-send-key": "f"}, b"2")
    peer.feed(one + two)
    responses = parse_responses(peer.drain())
    assert [r.json() for r in responses] == [{"ok": True, "recipients": 1}] * 2
    assert member.messages() == [{"date": T0, "message": 1}, {"date": T0, "message": 2}]
    assert peer.state() is State.HTTP


def test_connection_object_needs_no_io(hub: Hub) -> None:
    conn = Connection(hub, client="1.2.3.4")
    assert conn.client == "1.2.3.4"
    assert conn.state is State.HTTP
    assert conn.outbox.view() == b""


# -- more handshakes, big frames, slow consumers, shutdown ----------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Connection": "keep-alive, Upgrade"},
        {"Upgrade": "WebSocket", "Connection": "upgrade"},
    ],
    ids=["firefox-connection", "mixed-case"],
)
def test_upgrade_header_variants_of_real_browsers(hub: Hub, headers: dict[str, str]) -> None:
    peer = Peer(hub)
    peer.feed(upgrade_request("/c/room", headers=headers))
    response, rest = parse_response(peer.drain())
    assert response.status == 101
    assert response.headers["sec-websocket-accept"] == SAMPLE_ACCEPT
    assert parse_frames(rest)[0].json()["self"] is True


def test_unsupported_websocket_version_is_refused(hub: Hub) -> None:
    peer = Peer(hub)
    peer.feed(upgrade_request("/c/room", headers={"Sec-WebSocket-Version": "8"}))
    response = peer.response()
    assert (response.status, response.body) == (426, b"Unsupported WebSocket version.")
    assert response.headers["sec-websocket-version"] == "13"
    assert hub.channels == {}


def test_send_key_header_name_is_case_insensitive(hub: Hub) -> None:
    member, _ = open_ws(hub, "/c/feed:live")
    peer = Peer(hub)
    peer.feed(request("POST", "/push/feed:live", {"X-Send-Key": "f"}, b'"hi"'))
    assert peer.response().json() == {"ok": True, "recipients": 1}
    assert member.messages() == [{"date": T0, "message": "hi"}]


def test_message_over_64_kib_travels_with_a_64_bit_length() -> None:
    hub = Hub(Config(), FakeClock(START), seeded_uids(5))
    a, _ = open_ws(hub, "/c/room")
    b, _ = open_ws(hub, "/c/room")
    a.drain()
    value = "z" * 70_000
    a.feed(text('"' + value + '"'))
    (frame,) = b.frames()
    assert frame.json() == {"uid": _uid(a), "date": T0, "message": value}


def test_slow_connection_is_closed_with_1008_and_the_others_told() -> None:
    hub = Hub(Config(limits=LimitsConfig(outbound_buffer_bytes=1000)), FakeClock(START), seeded_uids(9))
    slow, _ = open_ws(hub, "/c/room")
    fast, _ = open_ws(hub, "/c/room")
    sender, _ = open_ws(hub, "/c/room")
    fast.drain()
    relayed = []
    for i in range(20):
        sender.feed(text(f'{{"i":{i},"pad":"{"p" * 40}"}}'))
        relayed += fast.messages()
    assert slow.state() is State.CLOSING
    assert slow.conn.close_code == 1008
    frames = slow.frames()
    assert (frames[-1].opcode, frames[-1].close_code, frames[-1].close_reason) == (OP_CLOSE, 1008, "slow consumer")
    got = [f.json()["message"]["i"] for f in frames[:-1] if "message" in f.json()]
    assert got == list(range(len(got)))
    assert [m["message"]["i"] for m in relayed if "message" in m] == list(range(20))
    assert {"type": "leave", "total": 2, "date": T0} in relayed
    assert sender.messages() == [{"type": "leave", "total": 2, "date": T0}]


def test_shutdown_closes_with_1001_and_sends_no_leaves(hub: Hub) -> None:
    a, _ = open_ws(hub, "/c/room")
    b, _ = open_ws(hub, "/c/room")
    a.drain()
    hub.shutdown()
    for peer in (a, b):
        peer.conn.close(1001)
    for peer in (a, b):
        (frame,) = peer.frames()
        assert (frame.opcode, frame.close_code) == (OP_CLOSE, 1001)
        assert peer.state() is State.CLOSING
    assert hub.channels == {}


# -- the /echo endpoint ----------------------------------------------------------------------


def _echo_peer(limit: int = LIMIT) -> Peer:
    config = Config(server=ServerConfig(echo_endpoint=True), limits=LimitsConfig(max_message_bytes=limit))
    peer = Peer(Hub(config, FakeClock(START), seeded_uids(3)))
    peer.feed(upgrade_request("/echo"))
    response, rest = parse_response(peer.drain())
    assert response.status == 101 and rest == b""
    return peer


def _big_text(size: int) -> bytes:
    """A text frame of ``size`` bytes with the all-zero mask (fast to build at any size)."""
    return b"\x81\xff" + size.to_bytes(8, "big") + b"\x00" * 4 + b"a" * size


def test_echo_sends_every_message_back_unchanged() -> None:
    peer = _echo_peer()
    peer.feed(text("not even JSON") + text('{"a":1}') + fragmented("in three parts", 3, 4))
    assert [(f.opcode, f.payload) for f in peer.frames()] == [
        (OP_TEXT, b"not even JSON"),
        (OP_TEXT, b'{"a":1}'),
        (OP_TEXT, b"in three parts"),
    ]


def test_echo_takes_messages_up_to_16_mib_whatever_max_message_bytes() -> None:
    """Conformance suites send up to 16 MiB (Autobahn 9.x); /echo is opt-in, for them."""
    peer = _echo_peer(limit=1024)
    size = 16 * 1024 * 1024
    peer.feed(_big_text(size))
    (frame,) = peer.frames()
    assert (frame.opcode, len(frame.payload)) == (OP_TEXT, size)
    peer.feed(_big_text(size + 1))
    assert [(f.opcode, f.close_code) for f in peer.frames()] == [(OP_CLOSE, 1009)]


def test_echo_closes_a_client_that_sends_and_never_reads() -> None:
    peer = _echo_peer()
    message = _big_text(1024 * 1024)
    for _ in range(16):  # 16 MiB of echoes may wait unread
        peer.feed(message)
    assert peer.state() is State.WEBSOCKET
    peer.feed(message)
    assert peer.state() is State.CLOSING and peer.conn.close_code == 1008
    data = b""
    while peer.conn.outbox:  # one drain() is one send()'s worth
        data += peer.drain()
    frames = parse_frames(data)
    assert [f.opcode for f in frames] == [OP_TEXT] * 16 + [OP_CLOSE]
    assert frames[-1].close_code == 1008


# -- the state table ------------------------------------------------------------------------------

CONNECTION_MODULES = ("_connection.py", "_connection_state.py", "_connection_http.py", "_connection_ws.py")


def test_each_phase_shows_the_public_state_its_name_starts_with() -> None:
    assert set(NEXT) == set(SHOWN) == set(Phase)
    assert set(SHOWN.values()) == set(State)
    assert all(phase.name.startswith(state.name) for phase, state in SHOWN.items())
    assert NEXT[Phase.CLOSED] == frozenset()


def test_a_move_the_table_does_not_have_is_a_bug(hub: Hub) -> None:
    conn = Connection(hub)
    with pytest.raises(AssertionError, match="HTTP -> CLOSING"):
        conn._move(Phase.CLOSING)
    assert conn.state is State.HTTP


def test_the_state_changes_in_one_place() -> None:
    """Only ``_move`` (and ``__init__``) assign ``state`` or ``_phase``: every change goes
    through the table."""
    core = Path(relaycore.__file__).resolve().parent
    where = []
    for name in CONNECTION_MODULES:
        for function in ast.walk(ast.parse((core / name).read_text(encoding="utf-8"))):
            if not isinstance(function, ast.FunctionDef) or function.name in ("_move", "__init__"):
                continue
            for node in ast.walk(function):
                targets = node.targets if isinstance(node, ast.Assign) else []
                if isinstance(node, ast.AugAssign | ast.AnnAssign):
                    targets = [node.target]
                where += [
                    f"{name}:{node.lineno} {function.name}"
                    for target in targets
                    if isinstance(target, ast.Attribute) and target.attr in ("state", "_phase")
                ]
    assert not where, where


class PushWaitingHub(Hub):
    """A hub whose pushes are answered later, as a cluster's are."""

    waiter: Any = None

    def push(self, name: str, message: Any, key: str | None, client: str = "", waiter: Any = None) -> int | None:
        self.waiter = waiter
        return None


def _echo_hub() -> Hub:
    return Hub(Config(server=ServerConfig(echo_endpoint=True)), FakeClock(START), seeded_uids(3))


def test_every_move_of_the_table_happens_and_no_other(monkeypatch: pytest.MonkeyPatch, hub: Hub) -> None:
    seen: set[tuple[Phase, Phase]] = set()
    move = ConnectionBase._move

    def recording(self: ConnectionBase, phase: Phase) -> None:
        seen.add((self._phase, phase))
        move(self, phase)

    monkeypatch.setattr(ConnectionBase, "_move", recording)
    # HTTP -> HTTP_ANSWERING -> HTTP (pipelined requests), then -> CLOSED (the connection lost)
    peer = Peer(hub)
    peer.feed(request("GET", "/version") * 3)
    assert peer.conn._phase is Phase.HTTP_ANSWERING and not peer.conn.reading and peer.state() is State.HTTP
    assert len(parse_responses(peer.conn.outbox.view())) == 1
    peer.conn.outbox.consume(peer.conn.outbox.size)
    peer.conn.resume()
    assert peer.conn._phase is Phase.HTTP_ANSWERING
    peer.conn.connection_lost()
    # HTTP -> CLOSED (a malformed request)
    Peer(hub).feed(b"NOT HTTP\r\n\r\n")
    # HTTP -> WEBSOCKET -> CLOSING -> CLOSED (the relay's close, answered)
    member, _ = open_ws(hub, "/c/room")
    member.conn.close(1001)
    member.feed(close(1001))
    # WEBSOCKET -> CLOSED (the peer's close)
    open_ws(hub, "/c/room")[0].feed(close())
    # HTTP -> HTTP_WAITING -> WEBSOCKET, and -> CLOSED (the client gone meanwhile)
    backplane = DeferredBackplane()
    deferred = Hub(CONFIG, FakeClock(START), seeded_uids(3), backplane=backplane)
    waiting, gone = Peer(deferred), Peer(deferred)
    for peer in (waiting, gone):
        peer.feed(upgrade_request("/c/room"))
        assert peer.conn._phase is Phase.HTTP_WAITING and not peer.conn.reading
    gone.conn.connection_lost()
    backplane.decide()
    assert waiting.state() is State.WEBSOCKET
    # HTTP_WAITING -> HTTP (a push answered later)
    pushes = PushWaitingHub(CONFIG, FakeClock(START), seeded_uids(3))
    pusher = Peer(pushes)
    pusher.feed(request("POST", "/push/room", body=b'"hi"'))
    assert pusher.conn._phase is Phase.HTTP_WAITING
    pushes.waiter.pushed(1)
    assert pusher.response().json() == {"ok": True, "recipients": 1} and pusher.conn._phase is Phase.HTTP
    # HTTP -> WEBSOCKET_ECHO -> CLOSING (shutdown), and -> CLOSED (the peer's close)
    echoes = [Peer(_echo_hub()), Peer(_echo_hub())]
    for peer in echoes:
        peer.feed(upgrade_request("/echo"))
        assert peer.conn._phase is Phase.WEBSOCKET_ECHO and peer.state() is State.WEBSOCKET
    echoes[0].conn.shutdown()
    echoes[1].feed(close())
    # HTTP -> STREAMING -> CLOSED (an HTTP door stream; the client's end of file)
    stream_request = request("GET", "/c/room", {"Accept": "text/event-stream"})
    hub.http.tokens = iter(f"token{n}" for n in range(100)).__next__
    streaming = Peer(hub)
    streaming.feed(stream_request)
    assert streaming.state() is State.STREAMING
    streaming.feed(b"")
    # HTTP_WAITING -> STREAMING (a stream's join decided later)
    deferred.http.tokens = iter(f"token{n}" for n in range(100)).__next__
    later = Peer(deferred)
    later.feed(stream_request)
    assert later.conn._phase is Phase.HTTP_WAITING
    backplane.decide()
    assert later.state() is State.STREAMING
    assert seen == {(phase, after) for phase, moves in NEXT.items() for after in moves}
