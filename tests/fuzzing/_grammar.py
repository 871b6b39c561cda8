"""A small grammar of client byte streams, as hypothesis strategies.

Everything is built by hand (not with h11 or wsproto) so that the streams can be wrong in
every way a real peer can be wrong: HTTP requests with bad or missing upgrade headers,
odd methods, versions, framings and bodies; WebSocket frames that are unmasked, carry
reserved bits or opcodes, lie about their length, are fragmented (well or badly), close
with odd payloads, hold invalid UTF-8, deeply nested or oversized JSON. Streams can then be
mutated byte by byte, or be plain random bytes.

Shrinking goes towards the first entry of every ``sampled_from`` and towards 0 for
integers, so the well-formed choice always comes first: a minimal failing example shows
only the irregularities that matter.
"""

from __future__ import annotations

import base64
import itertools
import json
import struct
from collections.abc import Sequence
from typing import Any

from hypothesis import event
from hypothesis import strategies as st

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
RESERVED_OPCODES = (0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF)

MASK = b"\x37\xfa\x21\x3d"
SAMPLE_KEY = "dGhlIHNhbXBsZSBub25jZQ=="

#: Channel names as they appear in a path (percent-encoded where needed).
CHANNELS = (
    "room",
    "lobby",
    "ns",
    "ns:sub",
    "ns/deep/x",
    "pub/news",
    "open%3Ax",
    "%E2%9C%93",
    "%ff",
    "",
    "a" * 257,
    "x%00y",
)

#: Query string parts; a query is a few of them joined with ``&``.
QUERY_PARTS = (
    "announce",
    "echo",
    "list",
    "alias=Bob",
    "as=Al",
    "joinKey=jk",
    "sendKey=sk",
    "echo=false",
    "announce=1",
    "list=true",
    "joinKey=bad",
    "sendKey=bad",
    "joinKey=",
    "alias=" + "z" * 65,
    "alias=%ff",
    "alias=%C3%A9t%C3%A9",
    "%zz",
    "a=b+c",
)

METHODS = ("GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "CONNECT", "G\x7fT", "get")
VERSIONS = ("HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1", "HTTP/1.1 extra")

UPGRADE_VALUES = ("websocket", "WebSocket", " websocket ", "h2c", "websocket, h2c", "")
CONNECTION_VALUES = ("Upgrade", "keep-alive, Upgrade", "upgrade", "close", "keep-alive", "Upgrade, close", "")
WS_VERSION_VALUES = ("13", "8", "13, 8", "")
KEY_VALUES = (
    SAMPLE_KEY,
    base64.b64encode(b"0123456789abcde").decode(),  # 15 bytes
    base64.b64encode(b"0123456789abcdefg").decode(),  # 17 bytes
    "not base64!",
    "",
    " " + SAMPLE_KEY + " ",
)
EXTRA_HEADERS = (
    ("X-Send-Key", "sk"),
    ("X-Send-Key", "wrong"),
    ("Expect", "100-continue"),
    ("Sec-WebSocket-Extensions", "permessage-deflate"),
    ("Sec-WebSocket-Protocol", "chat"),
    ("Upgrade", "websocket"),
    ("Connection", "close"),
    ("X-Long", "v" * 20_000),
    ("X-Bytes", "\xe9\xff"),
    ("Bad Header", "x"),
    ("X-Folded", "a\r\n b"),
)

CLOSE_CODES = (
    1000,
    1001,
    1002,
    1003,
    1007,
    1008,
    1009,
    1010,
    1011,
    1004,
    1005,
    1006,
    1012,
    1013,
    1014,
    1015,
    1016,
    2999,
    3000,
    3999,
    4000,
    4999,
    5000,
    0,
    999,
    65535,
)
CLOSE_REASONS = (b"", b"bye", "\u00e9t\u00e9".encode(), b"\xff\xfe", b"r" * 123, b"r" * 124)

INVALID_JSON = ("undefined", "", "{", "[1,]", "NaN", "'a'", "01", "\x00", "1 2", '{"a":1}x')
BAD_UTF8 = (b'"\xff"', b'"\xc3"', b'"\xed\xa0\x80"', b'"\xf4\x90\x80\x80"', b'{"a":"\xe2\x82"}', b"\xc0\xaf")
DEPTHS = (1, 64, 500, 1000, 1500, 5000)
BIG_SIZES = (100, 2030, 2046, 2100, 70_000)

# -- JSON ------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10,
)


@st.composite
def json_texts(draw: st.DrawFn) -> str:
    """A JSON document, formatted one of a few ways."""
    value = draw(json_values)
    separators = draw(st.sampled_from(((",", ":"), (", ", ": "))))
    text = json.dumps(value, ensure_ascii=draw(st.booleans()), separators=separators)
    return draw(st.sampled_from(("", " ", "\n"))) + text


@st.composite
def deep_json(draw: st.DrawFn) -> str:
    """JSON nested ``depth`` levels deep (valid JSON at every depth)."""
    depth = draw(st.sampled_from(DEPTHS))
    kind = draw(st.sampled_from(("array", "object")))
    event(f"deep JSON: {depth} levels")
    if kind == "array":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


# -- HTTP ------------------------------------------------------------------------------


@st.composite
def queries(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.sampled_from(QUERY_PARTS), max_size=4))
    return "&".join(parts)


ENDPOINTS = ("upgrade", "push", "upgrade", "push", "version", "health", "echo", "other")


@st.composite
def targets(draw: st.DrawFn, endpoint: str) -> str:
    """A request target for ``endpoint`` (sometimes in an odd form)."""
    channel = draw(st.sampled_from(CHANNELS))
    odd = draw(st.integers(0, 7)) == 7
    if endpoint == "upgrade":
        query = draw(queries())
        prefix = draw(st.sampled_from(("c", "r")))
        if odd:
            return draw(st.sampled_from((f"http://relay.test/c/{channel}", f"c/{channel}", "/c", "/c/../version")))
        return f"/{prefix}/{channel}" + (f"?{query}" if query or draw(st.booleans()) else "")
    if endpoint == "push":
        return f"/push/{channel}" + ("?x" if odd else "")
    if endpoint in ("version", "health", "echo"):
        return f"/{endpoint}" + (draw(st.sampled_from(("?x=1", "/", "%20"))) if odd else "")
    return draw(st.sampled_from(("/nope", "/", "*", "/push", "/%2e%2e/", "/C/room")))


@st.composite
def bodies(draw: st.DrawFn, endpoint: str) -> bytes:
    if endpoint != "push" and draw(st.integers(0, 3)) < 3:
        return b""
    kind = draw(st.sampled_from(("json", "deep", "invalid", "big", "bad_utf8", "none", "random")))
    if kind == "none":
        return b""
    if kind == "json":
        return draw(json_texts()).encode()
    if kind == "invalid":
        return draw(st.sampled_from(INVALID_JSON)).encode()
    if kind == "deep":
        return draw(deep_json()).encode()
    if kind == "big":
        return b'"' + b"x" * draw(st.sampled_from(BIG_SIZES)) + b'"'
    if kind == "bad_utf8":
        return draw(st.sampled_from(BAD_UTF8))
    return draw(st.binary(max_size=40))


def _header_value(draw: st.DrawFn, valid: str, alternatives: Sequence[str]) -> str | None:
    """The valid value most of the time; else an alternative, or no header at all."""
    choice = draw(st.integers(0, 9))
    if choice < 8:
        return valid
    if choice == 8:
        return None
    return draw(st.sampled_from(alternatives))


@st.composite
def http_requests(draw: st.DrawFn, *, upgrade: bool | None = None) -> bytes:
    """One HTTP request from the grammar: line, headers, framing, body."""
    endpoint = draw(st.sampled_from(ENDPOINTS))
    usual = "POST" if endpoint == "push" else "GET"
    method = usual if draw(st.integers(0, 4)) < 4 else draw(st.sampled_from(METHODS))
    target = draw(targets(endpoint))
    version = "HTTP/1.1" if draw(st.integers(0, 5)) < 5 else draw(st.sampled_from(VERSIONS))
    headers: list[tuple[str, str]] = []
    if draw(st.integers(0, 9)) < 9:
        headers.append(("Host", "relay.test"))
    if upgrade is None:
        upgrade = endpoint in ("upgrade", "echo")
        if draw(st.integers(0, 5)) == 5:
            upgrade = not upgrade
    wants_upgrade = upgrade
    if wants_upgrade:
        for name, valid, alternatives in (
            ("Upgrade", "websocket", UPGRADE_VALUES),
            ("Connection", "Upgrade", CONNECTION_VALUES),
            ("Sec-WebSocket-Version", "13", WS_VERSION_VALUES),
            ("Sec-WebSocket-Key", SAMPLE_KEY, KEY_VALUES),
        ):
            value = _header_value(draw, valid, alternatives)
            if value is not None:
                headers.append((name, value))
    headers += draw(st.lists(st.sampled_from(EXTRA_HEADERS), max_size=2))
    body = draw(bodies(endpoint))
    framing = draw(st.sampled_from(("length", "chunked", "short", "long", "none", "huge")))
    if framing == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
        cut = draw(st.integers(0, len(body)))
        chunks = [part for part in (body[:cut], body[cut:]) if part]
        body = b"".join(b"%x\r\n" % len(part) + part + b"\r\n" for part in chunks) + b"0\r\n\r\n"
    elif framing == "length" and (body or draw(st.booleans())):
        headers.append(("Content-Length", str(len(body))))
    elif framing == "short":
        headers.append(("Content-Length", str(max(0, len(body) - 1))))
    elif framing == "long":
        headers.append(("Content-Length", str(len(body) + 3)))
    elif framing == "huge":
        headers.append(("Content-Length", str(10**12)))
    order = draw(st.permutations(range(len(headers)))) if draw(st.integers(0, 4)) == 4 else range(len(headers))
    head = f"{method} {target} {version}\r\n" + "".join(f"{headers[i][0]}: {headers[i][1]}\r\n" for i in order)
    return head.encode("latin-1") + b"\r\n" + body


@st.composite
def valid_upgrades(
    draw: st.DrawFn, *, channels: Sequence[str] = ("room", "room", "lobby", "room", "ns", "ns:sub")
) -> bytes:
    """A well-formed WebSocket opening handshake on ``/c/`` or ``/r/`` (it may still be refused)."""
    prefix = draw(st.sampled_from(("c", "r")))
    channel = draw(st.sampled_from(channels))
    query = draw(queries())
    if channel.startswith("ns") and draw(st.booleans()):
        query = "joinKey=jk&" + query
    target = f"/{prefix}/{channel}" + (f"?{query}" if query else "")
    return websocket_handshake(target)


def websocket_handshake(target: str) -> bytes:
    """The canonical opening handshake for ``target``."""
    return (
        f"GET {target} HTTP/1.1\r\nHost: relay.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


# -- WebSocket frames --------------------------------------------------------------------


def encode_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = MASK,
    length: int | None = None,
    form: str = "minimal",
) -> bytes:
    """One client frame; ``length`` overrides the declared length (to lie about it)."""
    declared = len(payload) if length is None else max(0, length)
    head = bytearray([(0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)])
    mask_bit = 0x80 if mask is not None else 0
    if form == "minimal":
        form = "7" if declared < 126 else "16" if declared < 65536 else "64"
    if form == "16" and declared >= 65536:
        form = "64"
    if form == "7" and declared >= 126:
        form = "16" if declared < 65536 else "64"
    if form == "7":
        head.append(mask_bit | declared)
    elif form == "16":
        head.append(mask_bit | 126)
        head += struct.pack("!H", declared)
    else:
        head.append(mask_bit | 127)
        head += struct.pack("!Q", min(declared, 2**64 - 1))
    if mask is None:
        return bytes(head) + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes(head) + mask + masked


@st.composite
def frame_shapes(draw: st.DrawFn) -> dict[str, Any]:
    """How a frame is encoded: regular most of the time, else broken one way or another."""
    if draw(st.integers(0, 11)) < 11:
        return {}
    what = draw(st.sampled_from(("unmasked", "mask", "rsv", "length", "form")))
    if what == "unmasked":
        return {"mask": None}
    if what == "mask":
        return {"mask": draw(st.binary(min_size=4, max_size=4))}
    if what == "rsv":
        return {"rsv": draw(st.integers(1, 7))}
    if what == "length":
        lie = draw(st.sampled_from((1, -1, 2, -3, 126, 127, 65535, 65536, 2**31, 2**63 - 1, 2**63, 2**64 - 1)))
        return {"lie": lie}
    return {"form": draw(st.sampled_from(("16", "64")))}


def _apply_shape(opcode: int, payload: bytes, fin: bool, shape: dict[str, Any]) -> bytes:
    lie = shape.get("lie")
    length = None
    if lie is not None:
        length = len(payload) + lie if abs(lie) < 100 else lie
    return encode_frame(
        opcode,
        payload,
        fin=fin,
        rsv=shape.get("rsv", 0),
        mask=shape.get("mask", MASK),
        length=length,
        form=shape.get("form", "minimal"),
    )


@st.composite
def text_payloads(draw: st.DrawFn, uids: Sequence[str]) -> bytes:
    """What a client puts in a text message: JSON, direct messages, and everything that is not."""
    kind = draw(
        st.sampled_from(
            ("json", "deep", "direct", "json", "legacy", "deep", "direct_nosep", "invalid", "big", "bad_utf8", "text")
        )
    )
    if kind == "json":
        return draw(json_texts()).encode()
    if kind in ("direct", "legacy", "direct_nosep"):
        uid = draw(st.sampled_from(uids))
        body = draw(json_texts() | st.sampled_from(INVALID_JSON))
        if kind == "direct":
            return f"\x1f{uid}\x1f{body}".encode()
        if kind == "legacy":
            return f"@@{uid}@@{body}".encode()
        return f"\x1f{uid}".encode()
    if kind == "invalid":
        return draw(st.sampled_from(INVALID_JSON)).encode()
    if kind == "deep":
        return draw(deep_json()).encode()
    if kind == "big":
        return b'"' + "\u00e9".encode() * (draw(st.sampled_from(BIG_SIZES)) // 2) + b'"'
    if kind == "bad_utf8":
        return draw(st.sampled_from(BAD_UTF8))
    return draw(st.text(max_size=30)).encode()


@st.composite
def close_payloads(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(("code", "empty", "one_byte")))
    if kind == "empty":
        return b""
    if kind == "one_byte":
        return b"\x03"
    return struct.pack("!H", draw(st.sampled_from(CLOSE_CODES))) + draw(st.sampled_from(CLOSE_REASONS))


@st.composite
def frames(draw: st.DrawFn, uids: Sequence[str]) -> bytes:
    """One client frame, or a few for a fragmented message."""
    kind = draw(
        st.sampled_from(
            (
                "text",
                "close",
                "text",
                "fragmented",
                "text",
                "close",
                "binary",
                "ping",
                "fragmented",
                "pong",
                "reserved",
                "continuation",
                "raw_utf8_split",
            )
        )
    )
    parts: list[tuple[int, bytes, bool]]
    if kind == "text":
        parts = [(OP_TEXT, draw(text_payloads(uids)), True)]
    elif kind == "binary":
        parts = [(OP_BINARY, draw(st.binary(max_size=40)), True)]
    elif kind == "ping":
        payload = draw(st.sampled_from((b"", b"hi")) | st.binary(min_size=120, max_size=130))
        parts = [(OP_PING, payload, draw(st.integers(0, 5)) < 5)]
    elif kind == "pong":
        parts = [(OP_PONG, draw(st.binary(max_size=8)), True)]
    elif kind == "close":
        parts = [(OP_CLOSE, draw(close_payloads()), True)]
    elif kind == "reserved":
        parts = [(draw(st.sampled_from(RESERVED_OPCODES)), draw(st.binary(max_size=8)), draw(st.booleans()))]
    elif kind == "continuation":
        parts = [(OP_CONTINUATION, draw(text_payloads(uids)), draw(st.booleans()))]
    elif kind == "raw_utf8_split":
        # A valid message whose UTF-8 characters are cut in the middle by the fragment boundary.
        raw = '["\u00e9\u20ac\U0001f600"]'.encode()
        cut = draw(st.integers(1, len(raw) - 1))
        parts = [(OP_TEXT, raw[:cut], False), (OP_CONTINUATION, raw[cut:], True)]
    else:
        parts = draw(fragmented_parts(uids))
    out = bytearray()
    for opcode, payload, fin in parts:
        out += _apply_shape(opcode, payload, fin, draw(frame_shapes()))
    return bytes(out)


@st.composite
def fragmented_parts(draw: st.DrawFn, uids: Sequence[str]) -> list[tuple[int, bytes, bool]]:
    """A message split into fragments, possibly interleaved with control frames, possibly broken."""
    first = draw(st.sampled_from((OP_TEXT, OP_BINARY)))
    payload = draw(text_payloads(uids))
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), min_size=1, max_size=4)))
    pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
    parts = [(first if i == 0 else OP_CONTINUATION, piece, i == len(pieces) - 1) for i, piece in enumerate(pieces)]
    if draw(st.booleans()):
        at = draw(st.integers(1, len(parts)))
        control = draw(st.sampled_from(((OP_PING, b"p"), (OP_PONG, b""), (OP_CLOSE, b"\x03\xe8"))))
        parts.insert(at, (control[0], control[1], True))
    breakage = draw(st.sampled_from(("none", "none", "no_end", "new_start", "fin_first")))
    if breakage == "no_end":
        parts[-1] = (parts[-1][0], parts[-1][1], False)
    elif breakage == "new_start" and len(parts) > 1:
        parts[1] = (OP_TEXT, parts[1][1], parts[1][2])
    elif breakage == "fin_first":
        parts[0] = (parts[0][0], parts[0][1], True)
    return parts


# -- streams -----------------------------------------------------------------------------


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few byte-level mutations (flips, overwrites, cuts, inserts, copies)."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(("flip", "set", "delete", "insert", "duplicate", "truncate")))
        pos = draw(st.integers(0, len(out)))
        if op == "flip" and pos < len(out):
            out[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and pos < len(out):
            out[pos] = draw(st.sampled_from((0x00, 0xFF, 0x80, 0x7F, 0x0D, 0x0A, 0x1F, 0x7E)))
        elif op == "delete":
            del out[pos : pos + draw(st.integers(1, 8))]
        elif op == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "duplicate":
            size = draw(st.integers(1, 16))
            out[pos:pos] = out[pos : pos + size]
        elif op == "truncate":
            del out[pos:]
    return bytes(out)


def split(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """``data`` cut at ``cuts`` (positions), without empty pieces (an empty read means EOF)."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


def compact(data: bytes) -> str:
    """A Python expression equal to ``data``, with long repetitions written as ``b'..' * n``.

    Failing examples then stay readable (a 5000-deep JSON array is one short term).
    """
    terms: list[str] = []
    literal = bytearray()
    i = 0
    n = len(data)
    while i < n:
        best_period, best_count = 0, 0
        for period in range(1, 9):
            unit = data[i : i + period]
            if len(unit) < period:
                break
            count = 1
            while data[i + count * period : i + (count + 1) * period] == unit:
                count += 1
            if period * count >= 32 and period * count > best_period * best_count:
                best_period, best_count = period, count
        if best_count:
            if literal:
                terms.append(repr(bytes(literal)))
                literal.clear()
            terms.append(f"{bytes(data[i : i + best_period])!r} * {best_count}")
            i += best_period * best_count
        else:
            literal.append(data[i])
            i += 1
    if literal or not terms:
        terms.append(repr(bytes(literal)))
    return " + ".join(terms)
