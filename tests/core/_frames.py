"""Byte-level helpers for the tests: the one home of frame and HTTP building and parsing.

- client side: HTTP requests and MASKED WebSocket frames, built by hand (over
  :func:`relaycore.client.client_frame`, the one masked-frame encoder) so that the tests do
  not trust the same library the core uses;
- server side: a parser for the HTTP responses and the (unmasked) frames the core writes.

The core's tests drive a :class:`relaycore.Connection` with them directly; the transport
tests' raw socket peer (``tests/transports/rawws.py``) builds and reads its bytes with them.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from relaycore import Connection, Hub, State
from relaycore.client import client_frame as frame_of_client

#: The opcodes of RFC 6455 section 5.2.
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

#: The example key of RFC 6455 section 1.3, and the accept value it must produce.
SAMPLE_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
SAMPLE_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

_MASK = b"\x37\xfa\x21\x3d"

#: A valid upgrade request's headers as a server hands them on (lower-case names, bytes: an
#: ASGI scope's, ``ClientSession.request``'s), the key last.
UPGRADE_HEADERS = [
    (b"host", b"relay.test"),
    (b"upgrade", b"websocket"),
    (b"connection", b"Upgrade"),
    (b"sec-websocket-version", b"13"),
    (b"sec-websocket-key", SAMPLE_KEY.encode()),
]


# -- client -> server ------------------------------------------------------------------


def client_frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, mask: bytes | None = _MASK
) -> bytes:
    """One client frame; masked unless ``mask`` is None (which a server must refuse)."""
    return frame_of_client(opcode, payload, mask, fin=fin, rsv=rsv)


def text(data: str | bytes, *, fin: bool = True) -> bytes:
    """A text frame (``bytes`` are sent as they are, to allow invalid UTF-8)."""
    return client_frame(OP_TEXT, data.encode() if isinstance(data, str) else data, fin=fin)


def binary(data: bytes, *, fin: bool = True) -> bytes:
    return client_frame(OP_BINARY, data, fin=fin)


def continuation(data: str | bytes, *, fin: bool = True) -> bytes:
    return client_frame(OP_CONTINUATION, data.encode() if isinstance(data, str) else data, fin=fin)


def fragmented(data: str, *sizes: int) -> bytes:
    """A text message split into frames of ``sizes`` bytes (the rest goes in the last one)."""
    raw = data.encode()
    out = b""
    start = 0
    for i, size in enumerate(sizes):
        out += client_frame(OP_TEXT if i == 0 else OP_CONTINUATION, raw[start : start + size], fin=False)
        start += size
    return out + client_frame(OP_CONTINUATION if sizes else OP_TEXT, raw[start:], fin=True)


def ping(payload: bytes = b"") -> bytes:
    return client_frame(OP_PING, payload)


def close_payload(code: int | None = 1000, reason: str = "") -> bytes:
    """The payload of a close frame: the code and the UTF-8 reason (None: no code, no reason)."""
    return b"" if code is None else struct.pack("!H", code) + reason.encode()


def close(code: int | None = 1000, reason: str = "") -> bytes:
    return client_frame(OP_CLOSE, close_payload(code, reason))


def request(method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    """A plain HTTP/1.1 request; ``content-length`` is added for a body unless given."""
    all_headers = {"Host": "relay.test"}
    all_headers.update(headers or {})
    if body and not any(name.lower() in ("content-length", "transfer-encoding") for name in all_headers):
        all_headers["Content-Length"] = str(len(body))
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in all_headers.items()) + "\r\n"
    return head.encode() + body


def upgrade_request(target: str, *, key: str = SAMPLE_KEY, headers: dict[str, str] | None = None) -> bytes:
    """A WebSocket opening handshake for ``target``."""
    all_headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13",
    }
    all_headers.update(headers or {})
    return request("GET", target, all_headers)


# -- server -> client ------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One frame written by the server."""

    fin: bool
    opcode: int
    payload: bytes

    def json(self) -> Any:
        assert self.opcode == OP_TEXT, f"expected a text frame, got opcode {self.opcode}"
        return json.loads(self.payload.decode())

    @property
    def close_code(self) -> int | None:
        assert self.opcode == OP_CLOSE
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> str:
        assert self.opcode == OP_CLOSE
        return self.payload[2:].decode()


def head_size(second: int, *, masked: bool = False) -> int:
    """How many bytes a frame's head takes, from its second byte (the length field's size,
    and the mask key's if ``masked``)."""
    extended = {126: 2, 127: 8}.get(second & 0x7F, 0)
    return 2 + extended + (4 if masked else 0)


def read_head(head: bytes, *, masked: bool = False) -> tuple[bool, int, int, bytes]:
    """A whole frame head (:func:`head_size` bytes): fin, opcode, payload length and mask key.

    Fails on reserved bits, and on a frame masked when it must not be (or the reverse).
    """
    b0, b1 = head[0], head[1]
    assert b0 & 0x70 == 0, "reserved bits set in a frame"
    assert bool(b1 & 0x80) == masked, "a client frame must be masked" if masked else "a server frame must not be"
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack_from("!H", head, 2)
    elif n == 127:
        (n,) = struct.unpack_from("!Q", head, 2)
    return bool(b0 & 0x80), b0 & 0x0F, n, head[-4:] if masked else b""


def unmask(payload: bytes, mask: bytes) -> bytes:
    return bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))


def parse_frames(data: bytes, *, masked: bool = False) -> list[Frame]:
    """Split server bytes into frames; fails on a masked, reserved-bit or truncated frame.

    ``masked``: the bytes are a client's, whose frames must all be masked (and are unmasked here).
    """
    frames: list[Frame] = []
    pos = 0
    while pos < len(data):
        size = head_size(data[pos + 1], masked=masked)
        fin, opcode, n, mask = read_head(data[pos : pos + size], masked=masked)
        pos += size
        assert pos + n <= len(data), "truncated frame"
        payload = data[pos : pos + n]
        frames.append(Frame(fin, opcode, unmask(payload, mask) if masked else payload))
        pos += n
    return frames


def take_frames(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Remove every complete server frame from ``buffer`` (bytes as a socket delivers them,
    a frame perhaps cut anywhere): (opcode, payload) in order; an incomplete one stays."""
    out: list[tuple[int, bytes]] = []
    pos, end = 0, len(buffer)
    while end - pos >= 2:
        start = pos + head_size(buffer[pos + 1])
        if start > end:
            break
        _, opcode, n, _ = read_head(bytes(buffer[pos:start]))
        if start + n > end:
            break
        out.append((opcode, bytes(buffer[start : start + n])))
        pos = start + n
    del buffer[:pos]
    return out


@dataclass(frozen=True)
class Response:
    """One HTTP response written by the server."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """The status and the headers (names lower-cased) of an HTTP response head."""
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers


def parse_response(data: bytes) -> tuple[Response, bytes]:
    """Parse one HTTP response from the front of ``data``; return it and what follows."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, f"incomplete HTTP response head: {data[:200]!r}"
    status_line = head.decode("latin-1").partition("\r\n")[0]
    assert status_line.split(" ", 1)[0] == "HTTP/1.1", status_line
    code, headers = parse_head(head)
    if code == 101 or code == 204 or code == 304:
        return Response(code, headers, b""), rest
    length = int(headers["content-length"])
    assert len(rest) >= length, "truncated HTTP response body"
    return Response(code, headers, rest[:length]), rest[length:]


def parse_responses(data: bytes) -> list[Response]:
    """Every HTTP response in ``data`` (for keep-alive)."""
    out: list[Response] = []
    while data:
        response, data = parse_response(data)
        out.append(response)
    return out


# -- a connection seen from its client ------------------------------------------------


class Peer:
    """A :class:`relaycore.Connection` plus what its client has read so far."""

    def __init__(self, hub: Hub, client: str = "1.2.3.4") -> None:
        self.hub = hub
        self.conn = Connection(hub, client=client)

    def feed(self, data: bytes) -> None:
        self.conn.receive_data(data)

    def state(self) -> State:
        return self.conn.state

    def drain(self) -> bytes:
        """Everything the connection wrote since the last drain.

        Written out as a transport does: the whole outbox, then :meth:`Connection.resume`
        (which answers the next pipelined request), until nothing more comes.
        """
        outbox, written = self.conn.outbox, []
        while True:
            while outbox:
                data = outbox.view()
                outbox.consume(len(data))
                written.append(data)
            self.conn.resume()
            if not outbox:
                return b"".join(written)

    def frames(self) -> list[Frame]:
        return parse_frames(self.drain())

    def messages(self) -> list[Any]:
        """The new frames, each decoded as JSON (all must be text frames)."""
        return [frame.json() for frame in self.frames()]

    def response(self) -> Response:
        response, rest = parse_response(self.drain())
        assert rest == b"", f"unexpected bytes after the response: {rest[:200]!r}"
        return response


def open_ws(hub: Hub, target: str, client: str = "1.2.3.4") -> tuple[Peer, dict[str, Any]]:
    """Open a WebSocket on ``target``; return the peer and its self-join frame."""
    peer = Peer(hub, client)
    peer.feed(upgrade_request(target))
    response, rest = parse_response(peer.drain())
    assert response.status == 101, response
    frames = parse_frames(rest)
    assert len(frames) == 1, frames
    hello = frames[0].json()
    assert hello["type"] == "join" and hello["self"] is True, hello
    return peer, hello


# -- permessage-deflate ------------------------------------------------------------------


def deflated(payload: bytes, *, bits: int = 15) -> bytes:
    """``payload`` compressed as a client with permessage-deflate sends it (RFC 7692, 7.2.1):
    its own raw DEFLATE stream, the sync flush's last four bytes left off."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -bits)
    return (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def compressed_text(payload: bytes, *, fin: bool = True) -> bytes:
    """A text frame carrying ``payload`` compressed (RSV1 set)."""
    return client_frame(OP_TEXT, deflated(payload), fin=fin, rsv=4)


def parse_deflate_frames(data: bytes, *, bits: int = 15) -> list[tuple[bool, Frame]]:
    """Split server bytes into frames as a client with permessage-deflate reads them: each
    frame with whether it came compressed (RSV1), its payload inflated if so (RFC 7692, 7.2.2)."""
    frames: list[tuple[bool, Frame]] = []
    pos = 0
    while pos < len(data):
        size = head_size(data[pos + 1])
        compressed = bool(data[pos] & 0x40)
        fin, opcode, n, _ = read_head(bytes([data[pos] & ~0x40]) + data[pos + 1 : pos + size])
        pos += size
        assert pos + n <= len(data), "truncated frame"
        payload = data[pos : pos + n]
        if compressed:
            payload = zlib.decompressobj(-bits).decompress(payload + b"\x00\x00\xff\xff")
        frames.append((compressed, Frame(fin, opcode, payload)))
        pos += n
    return frames
