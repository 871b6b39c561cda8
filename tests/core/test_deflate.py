"""permessage-deflate on the native server's connection (RFC 7692; relaycore._deflate).

The answer to every form of offer; a broadcast compressed once per parameter set, the same
bytes object in every such member's outbox; the threshold; inbound messages inflated
without a decompressor kept between them; and a deflate bomb closed 1009 with the memory
it cost bounded by the message limit.
"""

from __future__ import annotations

import json
import os
import tracemalloc
import zlib

import pytest

from relaycore import Config, Hub, LimitsConfig, ServerConfig
from relaycore._config import CompressionConfig
from relaycore._deflate import DeflateForm, Inflater, deflate, deflate_form, negotiate
from relaycore._wire import text_frame
from relaycore.testing import FakeClock, seeded_uids
from relaycore.texts import CLOSE_INVALID_DATA, CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG, TOO_BIG

from ._frames import (
    OP_CLOSE,
    OP_TEXT,
    Peer,
    client_frame,
    compressed_text,
    continuation,
    deflated,
    parse_deflate_frames,
    parse_response,
    ping,
    text,
    upgrade_request,
)

LIMIT = 100_000
THRESHOLD = 512
CONFIG = Config(limits=LimitsConfig(max_message_bytes=LIMIT), compression=CompressionConfig(threshold_bytes=THRESHOLD))
BASE = b"permessage-deflate; server_no_context_takeover; client_no_context_takeover"
OFFER = "permessage-deflate; client_max_window_bits"  # what browsers offer


def state(players: int) -> bytes:
    """A JSON state message of the kind a game or a dashboard broadcasts."""
    names = ["alice", "bob", "carol", "dave", "erin"]
    return json.dumps(
        {
            "type": "state",
            "tick": 18_211,
            "players": [
                {"id": f"p{i:04d}", "name": names[i % 5], "x": i * 7.25, "y": 1000 - i * 3.5, "hp": i % 101}
                for i in range(players)
            ],
        },
        separators=(",", ":"),
    ).encode()


MESSAGE = state(30)  # about 2 KB


@pytest.fixture
def hub() -> Hub:
    return Hub(CONFIG, FakeClock(1_700_000_000.0), seeded_uids(7))


def join(hub: Hub, offer: str | None = OFFER, target: str = "/c/room") -> tuple[Peer, dict[str, str]]:
    """A member (offering ``offer``), its 101's headers, everything it was sent so far read."""
    peer = Peer(hub)
    peer.feed(upgrade_request(target, headers={"Sec-WebSocket-Extensions": offer} if offer else {}))
    response, _ = parse_response(peer.drain())
    assert response.status == 101, response
    return peer, response.headers


def one_frame(peer: Peer, *, bits: int = 15) -> tuple[bool, bytes]:
    """The one frame ``peer`` was sent since the last read: whether it came compressed, and
    its payload (inflated)."""
    frames = parse_deflate_frames(peer.drain(), bits=bits)
    assert len(frames) == 1, frames
    compressed, frame = frames[0]
    return compressed, frame.payload


def close_of(peer: Peer) -> tuple[int | None, str]:
    frames = [frame for _, frame in parse_deflate_frames(peer.drain()) if frame.opcode == OP_CLOSE]
    assert frames, "no close frame"
    return frames[-1].close_code, frames[-1].close_reason


# -- negotiation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offer", "answer", "bits"),
    [
        ("permessage-deflate", BASE, 15),
        ("permessage-deflate; client_max_window_bits", BASE, 15),
        ("permessage-deflate; client_max_window_bits=10", BASE, 15),
        ("permessage-deflate; server_no_context_takeover; client_no_context_takeover", BASE, 15),
        ("permessage-deflate; server_max_window_bits=10", BASE + b"; server_max_window_bits=10", 10),
        ("permessage-deflate; server_max_window_bits=15", BASE + b"; server_max_window_bits=15", 15),
        ('permessage-deflate; server_max_window_bits="12"', BASE + b"; server_max_window_bits=12", 12),
        ("Permessage-Deflate; Server_Max_Window_Bits=11", BASE + b"; server_max_window_bits=11", 11),
        ("x-webkit-deflate-frame, permessage-deflate", BASE, 15),
        # The first offer it can accept wins (RFC 7692, 5): 8 is declined, zlib starts at 9.
        ("permessage-deflate; server_max_window_bits=8, permessage-deflate", BASE, 15),
        ("permessage-deflate; server_max_window_bits=9, permessage-deflate", BASE + b"; server_max_window_bits=9", 9),
    ],
)
def test_an_offer_is_answered_without_context_takeover(offer: str, answer: bytes, bits: int) -> None:
    accepted = negotiate([(b"sec-websocket-extensions", offer.encode())], CONFIG.compression)
    assert accepted is not None
    assert accepted.answer == answer
    assert accepted.form.bits == bits


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; server_max_window_bits=8",  # valid, but zlib cannot keep to it
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=09",  # a leading zero
        "permessage-deflate; server_max_window_bits",  # the server's window needs a value
        "permessage-deflate; server_max_window_bits=",
        "permessage-deflate; client_max_window_bits=16",
        "permessage-deflate; server_no_context_takeover=1",  # takes no value
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",  # twice
        "permessage-deflate; mystery",  # not defined for an offer
        "x-webkit-deflate-frame",
        "",
    ],
)
def test_an_offer_it_cannot_accept_is_declined(offer: str) -> None:
    assert negotiate([(b"sec-websocket-extensions", offer.encode())], CONFIG.compression) is None


def test_offers_over_several_header_lines_are_read_in_order() -> None:
    headers = [
        (b"sec-websocket-extensions", b"permessage-deflate; mystery"),
        (b"Sec-WebSocket-Extensions", b"permessage-deflate; server_max_window_bits=13"),
    ]
    accepted = negotiate(headers, CONFIG.compression)
    assert accepted is not None and accepted.form.bits == 13


def test_nothing_is_negotiated_when_compression_is_off() -> None:
    off = CompressionConfig(enabled=False)
    assert negotiate([(b"sec-websocket-extensions", OFFER.encode())], off) is None
    hub = Hub(Config(compression=off), FakeClock(), seeded_uids(1))
    peer, headers = join(hub)
    assert "sec-websocket-extensions" not in headers
    assert type(peer.conn.outbox.form) is not DeflateForm


def test_the_101_carries_the_answer_and_the_outbox_its_form(hub: Hub) -> None:
    peer, headers = join(hub)
    assert headers["sec-websocket-extensions"] == BASE.decode()
    assert peer.conn.outbox is peer.conn.session.outbox
    assert peer.conn.outbox.form is deflate_form(15, 6, THRESHOLD)
    plain, headers = join(hub, None)
    assert "sec-websocket-extensions" not in headers
    assert not isinstance(plain.conn.outbox.form, DeflateForm)


def test_one_form_per_parameter_set() -> None:
    assert deflate_form(15, 6, 512) is deflate_form(15, 6, 512)
    assert deflate_form(10, 6, 512) is not deflate_form(15, 6, 512)
    assert deflate_form(15, 1, 512) is not deflate_form(15, 6, 512)


# -- compressed once ----------------------------------------------------------------------


def test_a_broadcast_is_compressed_once_for_every_member_of_a_parameter_set(hub: Hub) -> None:
    first, _ = join(hub)
    second, _ = join(hub)
    plain, _ = join(hub, None)
    sender, _ = join(hub, None)
    for peer in (first, second, plain):
        peer.drain()  # the joins that followed theirs
    sender.feed(text(MESSAGE))
    # The same bytes object in both deflate members' outboxes: compressed once.
    assert first.conn.outbox.view() is second.conn.outbox.view()
    compressed, payload = one_frame(first)
    assert compressed and json.loads(payload)["message"] == json.loads(MESSAGE)
    assert one_frame(second) == (compressed, payload)
    wire = plain.drain()  # the member without the extension: the plain frame, as before
    assert wire == text_frame(payload)
    assert len(second.conn.outbox.form.message(payload)) * 3 < len(wire)


def test_each_window_gets_its_own_compression(hub: Hub) -> None:
    small, headers = join(hub, "permessage-deflate; server_max_window_bits=9")
    assert headers["sec-websocket-extensions"].endswith("server_max_window_bits=9")
    large, _ = join(hub)
    sender, _ = join(hub, None)
    small.drain()
    large.drain()
    big = state(400)  # 30 KB: a window of 512 bytes and one of 32 KiB compress it apart
    sender.feed(text(big))
    assert small.conn.outbox.view() != large.conn.outbox.view()
    for peer, bits in ((small, 9), (large, 15)):
        compressed, payload = one_frame(peer, bits=bits)
        assert compressed and json.loads(payload)["message"] == json.loads(big)


def test_under_the_threshold_a_message_goes_as_it_is(hub: Hub) -> None:
    member, _ = join(hub)
    sender, _ = join(hub, None)
    member.drain()
    sender.feed(text(b'{"hi":1}'))
    compressed, payload = one_frame(member)
    assert not compressed and json.loads(payload)["message"] == {"hi": 1}
    # The threshold counts the frame's JSON, envelope included.
    envelope = len(payload) - len(b'{"hi":1}')
    sender.feed(text(b'"' + b"a" * (THRESHOLD - envelope - 2) + b'"'))
    compressed, payload = one_frame(member)
    assert len(payload) == THRESHOLD and compressed


def test_the_self_join_and_presence_are_under_the_threshold() -> None:
    hub = Hub(Config(compression=CompressionConfig(threshold_bytes=THRESHOLD)), FakeClock(), seeded_uids(2))
    peer = Peer(hub)
    peer.feed(upgrade_request("/c/room", headers={"Sec-WebSocket-Extensions": OFFER}))
    _, rest = parse_response(peer.drain())
    (compressed, frame), *_ = parse_deflate_frames(rest)
    assert not compressed and frame.json()["self"] is True


def test_a_payload_that_does_not_shrink_goes_plain() -> None:
    form = deflate_form(15, 6, 16)
    noise = os.urandom(600)
    assert form.squeeze(noise) is None
    assert form.render(noise) == text_frame(noise)


def test_a_departure_batch_is_rendered_once_for_the_form() -> None:
    form = DeflateForm(15, 6, 16)
    leaves = [b'{"type":"leave","total":3,"date":1}', b'{"type":"leave","total":2,"date":1}']
    first = form.batch(leaves)
    assert form.batch(leaves) is first
    assert form.batch(list(leaves)) is first  # the same payloads, in another list
    assert form.batch(leaves[:1]) != first


def test_a_frame_compressed_here_inflates_with_any_window_the_client_allowed() -> None:
    payload = state(200)
    for bits in range(9, 16):
        data = deflate(payload, 6, bits)
        assert zlib.decompressobj(-bits).decompress(data + b"\x00\x00\xff\xff") == payload


# -- inbound ------------------------------------------------------------------------------


def test_a_compressed_message_is_inflated_and_relayed(hub: Hub) -> None:
    sender, _ = join(hub)
    receiver, _ = join(hub, None)
    sender.drain()
    sender.feed(compressed_text(MESSAGE))
    assert json.loads(receiver.drain()[4:])["message"] == json.loads(MESSAGE)
    assert sender.conn.state.value == "websocket"


def test_a_fragmented_compressed_message_with_a_ping_between_is_inflated(hub: Hub) -> None:
    sender, _ = join(hub)
    receiver, _ = join(hub, None)
    sender.drain()
    data = deflated(MESSAGE)
    third = len(data) // 3
    sender.feed(client_frame(OP_TEXT, data[:third], fin=False, rsv=4))
    sender.feed(ping(b"!"))
    sender.feed(continuation(data[third : 2 * third], fin=False) + continuation(data[2 * third :]))
    assert json.loads(receiver.drain()[4:])["message"] == json.loads(MESSAGE)
    assert [frame.opcode for _, frame in parse_deflate_frames(sender.drain())] == [0xA]  # the pong


def test_compressed_and_plain_messages_alternate(hub: Hub) -> None:
    sender, _ = join(hub)
    receiver, _ = join(hub, None)
    sender.drain()
    for i in range(4):
        frame = compressed_text(b'{"n":%d}' % i) if i % 2 else text(b'{"n":%d}' % i)
        sender.feed(frame)
    got = [json.loads(frame.payload)["message"] for _, frame in parse_deflate_frames(receiver.drain())]
    assert got == [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}]


def test_no_decompressor_is_kept_between_messages(hub: Hub) -> None:
    sender, _ = join(hub)
    sender.feed(compressed_text(MESSAGE[: THRESHOLD * 2]))
    ws = sender.conn._ws
    assert ws is not None
    (inflater,) = ws._proto.extensions
    assert isinstance(inflater, Inflater) and inflater._inflate is None


def test_context_taken_over_by_the_client_is_invalid_data(hub: Hub) -> None:
    """The answer asked for client_no_context_takeover: a message that refers back to the
    one before cannot be inflated on its own."""
    sender, _ = join(hub)
    sender.drain()
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    first = compressor.compress(MESSAGE) + compressor.flush(zlib.Z_SYNC_FLUSH)
    second = compressor.compress(MESSAGE) + compressor.flush(zlib.Z_SYNC_FLUSH)
    sender.feed(client_frame(OP_TEXT, first[:-4], rsv=4))
    sender.feed(client_frame(OP_TEXT, second[:-4], rsv=4))
    assert close_of(sender)[0] == CLOSE_INVALID_DATA


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (
            client_frame(OP_TEXT, deflated(b"[1]"), fin=False, rsv=4) + client_frame(0x0, b"", rsv=4),
            CLOSE_PROTOCOL_ERROR,
        ),
        (client_frame(0x9, b"", rsv=4), CLOSE_PROTOCOL_ERROR),  # RSV1 on a control frame
        (client_frame(OP_TEXT, b"\xff\xff\xff not deflate", rsv=4), CLOSE_INVALID_DATA),
        (client_frame(OP_TEXT, deflated(b'"\xff\xfe"'), rsv=4), CLOSE_INVALID_DATA),  # invalid UTF-8 inside
        (client_frame(OP_TEXT, deflated(b"[1]"), rsv=2), CLOSE_PROTOCOL_ERROR),  # RSV2: no extension uses it
    ],
    ids=["rsv1-on-continuation", "rsv1-on-ping", "not-deflate", "invalid-utf8", "rsv2"],
)
def test_broken_compressed_frames_close_the_connection(hub: Hub, frames: bytes, code: int) -> None:
    sender, _ = join(hub)
    sender.drain()
    sender.feed(frames)
    assert close_of(sender)[0] == code


def test_rsv1_without_the_extension_is_still_a_protocol_error(hub: Hub) -> None:
    plain, _ = join(hub, None)
    plain.feed(compressed_text(MESSAGE))
    assert close_of(plain)[0] == CLOSE_PROTOCOL_ERROR


# -- the limit and the deflate bomb ------------------------------------------------------


def test_a_message_that_inflates_to_the_limit_is_relayed_one_byte_more_is_too_big(hub: Hub) -> None:
    sender, _ = join(hub)
    receiver, _ = join(hub, None)
    sender.drain()
    at_limit = b'"' + b"a" * (LIMIT - 2) + b'"'
    sender.feed(compressed_text(at_limit))
    assert len(receiver.drain()) > LIMIT
    sender.feed(compressed_text(b'"' + b"a" * (LIMIT - 1) + b'"'))
    assert close_of(sender) == (CLOSE_TOO_BIG, TOO_BIG)


def test_a_deflate_bomb_closes_1009_and_costs_no_more_than_the_limit(hub: Hub) -> None:
    sender, _ = join(hub)
    receiver, _ = join(hub, None)
    sender.drain()
    receiver.drain()
    # 20 MB of zeros in one frame of about 20 KB, sent in a fragmented message for good measure.
    bomb = deflated(b"[" + b"0," * 10_000_000 + b"0]")
    assert len(bomb) < 25_000
    tracemalloc.start()
    try:
        sender.feed(client_frame(OP_TEXT, bomb[:100], fin=False, rsv=4) + continuation(bomb[100:]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert close_of(sender) == (CLOSE_TOO_BIG, TOO_BIG)
    assert peak < 4 * LIMIT, f"inflating the bomb took {peak} bytes at its peak"
    assert json.loads(receiver.drain()[2:])["type"] == "leave"  # the others learn it left


def test_the_bomb_counts_as_a_message_too_big(hub: Hub) -> None:
    sender, _ = join(hub)
    witness, _ = join(hub, None)
    channel = sender.conn.member.channel if sender.conn.member else None
    assert channel is not None
    sender.feed(compressed_text(b"[" + b"0," * 100_000 + b"0]"))
    assert channel.tally.dropped["size"] == 1
    assert witness.conn.member is not None


def test_endless_empty_blocks_are_too_big_too(hub: Hub) -> None:
    """Compressed bytes that inflate to nothing cannot go on for ever."""
    sender, _ = join(hub)
    sender.drain()
    empty_block = b"\x00\x00\x00\xff\xff"  # an empty stored block: five bytes, nothing out
    sender.feed(client_frame(OP_TEXT, empty_block * (2 * LIMIT // 5), rsv=4))
    assert close_of(sender) == (CLOSE_TOO_BIG, TOO_BIG)


# -- the echo endpoint -------------------------------------------------------------------


def test_the_echo_endpoint_inflates_and_compresses_every_message_back() -> None:
    hub = Hub(Config(server=ServerConfig(echo_endpoint=True)), FakeClock(), seeded_uids(1))
    peer = Peer(hub)
    peer.feed(upgrade_request("/echo", headers={"Sec-WebSocket-Extensions": OFFER}))
    response, _ = parse_response(peer.drain())
    assert response.headers["sec-websocket-extensions"] == BASE.decode()
    peer.feed(compressed_text(MESSAGE) + text(b"short"))
    frames = parse_deflate_frames(peer.drain())
    assert [(compressed, frame.payload) for compressed, frame in frames] == [(True, MESSAGE), (True, b"short")]
