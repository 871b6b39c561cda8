"""Fuzzing permessage-deflate (relaycore._deflate): the inflate path and the compressed frames.

A member that negotiated the extension sends messages compressed (or not), cut into
fragments and into ``receive_data`` chunks at random points, with pings between
fragments; or compressed data mutated byte by byte, or random bytes with RSV1 set. After
each example:

- no exception escapes;
- a message relayed to the bystander is exactly what was sent, and never over the limit;
- a message that inflates to more than the limit closes the sender with 1009, one that is
  not valid DEFLATE or not valid UTF-8 with 1007, a broken frame with 1002; nothing else;
- the connection keeps no decompressor once a message is over, whatever happened to it.

And for any payload, window and level, the frame a :class:`DeflateForm` renders inflates
back to the payload with that window.
"""

from __future__ import annotations

import json
import zlib

from hypothesis import event, given
from hypothesis import strategies as st

from core._frames import (
    OP_CLOSE,
    OP_TEXT,
    Peer,
    client_frame,
    continuation,
    parse_deflate_frames,
    parse_response,
    ping,
    upgrade_request,
)
from relaycore import Config, Hub, LimitsConfig
from relaycore._config import CompressionConfig
from relaycore._deflate import DeflateForm, Inflater
from relaycore.testing import FakeClock, seeded_uids

LIMIT = 2048
CONFIG = Config(limits=LimitsConfig(max_message_bytes=LIMIT), compression=CompressionConfig(threshold_bytes=64))
OFFER = {"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"}
#: The closes a sender of broken compressed input may get: too big, invalid data, protocol.
CLOSES = {1009, 1007, 1002}


def compress(payload: bytes, level: int, bits: int, flush: int) -> bytes:
    """``payload`` as a client may compress it: a sync flush (its tail left off, as RFC 7692
    says) or a final block (which the RFC allows too)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -bits)
    data = compressor.compress(payload) + compressor.flush(flush)
    return data[:-4] if flush == zlib.Z_SYNC_FLUSH else data


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=8), inner, max_size=8),
    max_leaves=60,
)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """A JSON message, sometimes repeated until it is over the limit (compressed, it is small)."""
    value = json.dumps(draw(json_values), ensure_ascii=draw(st.booleans())).encode()
    if draw(st.integers(0, 3)) == 0:
        value = b"[" + b",".join([value] * (LIMIT // max(len(value), 1) + draw(st.integers(0, 3)))) + b"]"
    return value


@st.composite
def fragments(draw: st.DrawFn, data: bytes, rsv: int) -> bytes:
    """``data`` as one message in one or more frames (RSV1 on the first only), pings between."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    out = b""
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        if index == 0:
            out += client_frame(OP_TEXT, piece, fin=last, rsv=rsv)
        else:
            out += continuation(piece, fin=last)
        if not last and draw(st.booleans()):
            out += ping(b"p")
    return out


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` in pieces, as reads deliver it (never an empty one: that would be the end)."""
    points = sorted({p % (len(data) + 1) for p in points})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    return [piece for piece in pieces if piece]


class Room:
    """A hub, a deflate sender and a plain bystander that reads what is relayed."""

    def __init__(self) -> None:
        self.hub = Hub(CONFIG, FakeClock(1_700_000_000.0), seeded_uids(11))
        self.sender = self.join(OFFER)
        self.bystander = self.join({})
        self.sender.drain()

    def join(self, headers: dict[str, str]) -> Peer:
        peer = Peer(self.hub)
        peer.feed(upgrade_request("/c/room", headers=headers))
        response, _ = parse_response(peer.drain())
        assert response.status == 101
        return peer

    def relayed(self) -> list[bytes]:
        frames = parse_deflate_frames(self.bystander.drain())
        return [json.dumps(f.json()["message"]).encode() for _, f in frames if b'"message"' in f.payload]

    def close_code(self) -> int | None:
        frames = [f for _, f in parse_deflate_frames(self.sender.drain()) if f.opcode == OP_CLOSE]
        return frames[-1].close_code if frames else None

    def no_decompressor_kept(self) -> bool:
        ws = self.sender.conn._ws
        assert ws is not None
        extensions = [ext for ext in ws._proto.extensions if isinstance(ext, Inflater)]
        return all(ext._inflate is None for ext in extensions)


@given(
    messages=st.lists(st.tuples(payloads(), st.booleans(), st.integers(1, 9), st.integers(9, 15)), max_size=4),
    final_block=st.booleans(),
    data=st.data(),
)
def test_compressed_messages_arrive_whole_or_close_1009(
    messages: list[tuple[bytes, bool, int, int]], final_block: bool, data: st.DataObject
) -> None:
    room = Room()
    stream = b""
    for payload, compressed, level, bits in messages:
        if compressed:
            flush = zlib.Z_FINISH if final_block else zlib.Z_SYNC_FLUSH
            stream += data.draw(fragments(compress(payload, level, bits, flush), 4))
        else:
            stream += data.draw(fragments(payload, 0))
    for chunk in cut(stream, data.draw(st.lists(st.integers(0, 1 << 20), max_size=8))):
        room.sender.feed(chunk)
    relayed = room.relayed()
    code = room.close_code()
    fits = [json.dumps(json.loads(payload)).encode() for payload, _, _, _ in messages if len(payload) <= LIMIT]
    first_too_big = next((i for i, (p, _, _, _) in enumerate(messages) if len(p) > LIMIT), None)
    if first_too_big is None:
        assert code is None and relayed == fits
    else:
        event("a message over the limit")
        assert code == 1009
        expected = [json.dumps(json.loads(p)).encode() for p, _, _, _ in messages[:first_too_big]]
        assert relayed == expected
    assert room.no_decompressor_kept() or code is not None


@given(
    payload=payloads(),
    mutations=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=6),
    noise=st.binary(max_size=200),
    use_noise=st.booleans(),
    data=st.data(),
)
def test_broken_compressed_input_closes_cleanly(
    payload: bytes, mutations: list[tuple[int, int]], noise: bytes, use_noise: bool, data: st.DataObject
) -> None:
    room = Room()
    body = bytearray(compress(payload, 6, 15, zlib.Z_SYNC_FLUSH))
    if use_noise:
        body = bytearray(noise)
    elif body:
        for where, value in mutations:
            body[where % len(body)] = value
    room.sender.feed(data.draw(fragments(bytes(body), 4)))
    code = room.close_code()
    for message in room.relayed():
        assert len(message) <= LIMIT * 2  # re-encoded by the check; the relayed text was within it
    assert code is None or code in CLOSES, code
    event(f"close {code}")


@given(
    payload=st.binary(max_size=3000) | payloads(),
    bits=st.integers(9, 15),
    level=st.integers(1, 9),
    threshold=st.sampled_from((0, 64, 512)),
)
def test_a_rendered_frame_inflates_back_to_its_payload(payload: bytes, bits: int, level: int, threshold: int) -> None:
    frame = DeflateForm(bits, level, threshold).render(payload)
    (compressed, parsed), *rest = parse_deflate_frames(frame, bits=bits)
    assert not rest and parsed.payload == payload
    assert compressed == (frame[0] == 0xC1)
    if compressed:
        assert len(payload) >= threshold and len(frame) < len(payload) + 10
