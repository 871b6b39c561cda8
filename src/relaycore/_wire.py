"""The wire model: every frame the relay sends, as msgspec Structs.

Each server -> client frame is one JSON object in one TEXT frame. Absent fields are
omitted (``omit_defaults``), never sent as ``null``: a stock client spreads the envelope
over the payload, so a stray ``"type": null`` would break its routing.

A relayed payload travels as :class:`msgspec.Raw`: it is validated once on the way in
and copied byte for byte into the envelope, never decoded into Python objects.
"""

from __future__ import annotations

import struct

import msgspec

__all__ = [
    "Envelope",
    "ErrorFrame",
    "JoinFrame",
    "LeaveFrame",
    "SelfJoinFrame",
    "UserEntry",
    "encode",
    "parse_json",
    "text_frame",
]


class Envelope(msgspec.Struct, omit_defaults=True, kw_only=True):
    """A relayed message: broadcast, direct, or HTTP push (no ``uid`` then)."""

    uid: str | None = None
    alias: str | None = None
    date: int
    message: msgspec.Raw


class UserEntry(msgspec.Struct, omit_defaults=True):
    """One announced member in a self-join's ``users`` list."""

    uid: str
    alias: str | None = None
    is_self: bool = msgspec.field(default=False, name="self")


class SelfJoinFrame(msgspec.Struct, kw_only=True, tag_field="type", tag="join", omit_defaults=True):
    """The first frame of every connection, sent only to the joiner."""

    # Default False so that omit_defaults keeps it; __post_init__ makes it True.
    is_self: bool = msgspec.field(default=False, name="self")
    uid: str
    alias: str | None = None
    total: int
    date: int
    users: list[UserEntry] | None = None

    def __post_init__(self) -> None:
        self.is_self = True


class JoinFrame(msgspec.Struct, kw_only=True, tag_field="type", tag="join", omit_defaults=True):
    """Someone else joined (``uid``/``alias`` only when they announced)."""

    uid: str | None = None
    alias: str | None = None
    total: int
    date: int


class LeaveFrame(msgspec.Struct, kw_only=True, tag_field="type", tag="leave", omit_defaults=True):
    """Someone else left (``uid``/``alias`` only when they announced)."""

    uid: str | None = None
    alias: str | None = None
    total: int
    date: int


class ErrorFrame(msgspec.Struct, tag_field="type", tag="error"):
    """An error, sent only to the connection concerned."""

    message: str
    date: int


encode = msgspec.json.Encoder().encode
"""Encode a frame Struct to JSON bytes."""

_raw_decoder = msgspec.json.Decoder(msgspec.Raw)


def parse_json(data: str | bytes | bytearray) -> msgspec.Raw | None:
    """Validate one JSON value; return it as Raw, or None when it is not JSON.

    Bytes must be valid UTF-8 throughout (msgspec does not check inside strings when
    it only skips over a value), since the value is relayed in a TEXT frame.

    >>> bytes(parse_json('{"a": 1}'))
    b'{"a": 1}'
    >>> parse_json("undefined") is None
    True
    """
    try:
        if isinstance(data, bytes | bytearray) and not data.isascii():
            bytes(data).decode("utf-8")
        return _raw_decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None  # RecursionError: nesting deeper than the decoder goes


_short = struct.Struct("!BB").pack
_medium = struct.Struct("!BBH").pack
_long = struct.Struct("!BBQ").pack


def text_frame(payload: bytes) -> bytes:
    """Frame ``payload`` as one unmasked, final WebSocket TEXT frame (server side).

    Server frames are never masked, so the same bytes serve every recipient.
    """
    n = len(payload)
    if n < 126:
        return _short(0x81, n) + payload
    if n < 65536:
        return _medium(0x81, 126, n) + payload
    return _long(0x81, 127, n) + payload
