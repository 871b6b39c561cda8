"""The client's events, and how a relay's frame becomes one (docs/protocol.md)."""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import msgspec

__all__ = [
    "Close",
    "Error",
    "Event",
    "Frame",
    "Join",
    "Leave",
    "Message",
    "Reconnect",
    "User",
    "decode_frame",
    "event_of",
]


class User(msgspec.Struct, frozen=True):
    """An announced member, as listed in ``channel.users``."""

    uid: str
    alias: str | None = None


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """A relayed message. ``uid``/``alias`` are None for an HTTP push (or an alias-less sender);
    ``kind`` is the payload's own string ``type``, when the payload is an object that has one."""

    type: Literal["message"] = "message"
    uid: str | None = None
    alias: str | None = None
    date: int
    message: Any
    kind: str | None = None


class Join(msgspec.Struct, frozen=True, kw_only=True):
    """Someone else joined; ``uid``/``alias`` only if they announced. ``total`` counts everyone."""

    type: Literal["join"] = "join"
    uid: str | None = None
    alias: str | None = None
    total: int
    date: int


class Leave(msgspec.Struct, frozen=True, kw_only=True):
    """Someone else left; ``uid``/``alias`` only if they announced."""

    type: Literal["leave"] = "leave"
    uid: str | None = None
    alias: str | None = None
    total: int
    date: int


class Error(msgspec.Struct, frozen=True, kw_only=True):
    """The relay's error frame, e.g. ``Sending requires a valid sendKey.`` (not an exception:
    the connection stays open)."""

    type: Literal["error"] = "error"
    message: str
    date: int


class Reconnect(msgspec.Struct, frozen=True, kw_only=True):
    """The connection dropped and is back: the new self-join, after ``attempt`` dials."""

    type: Literal["reconnect"] = "reconnect"
    uid: str
    alias: str | None = None
    total: int
    date: int
    attempt: int


class Close(msgspec.Struct, frozen=True, kw_only=True):
    """Given to ``on("close")`` handlers once, when the channel has closed."""

    type: Literal["close"] = "close"
    code: int | None
    reason: str


Event: TypeAlias = Message | Join | Leave | Error | Reconnect


class Frame(msgspec.Struct):
    """Any frame from the relay (docs/protocol.md section 5), every key optional."""

    type: str | None = None
    self_: bool = msgspec.field(default=False, name="self")
    uid: str | None = None
    alias: str | None = None
    total: int = 0
    date: int = 0
    users: list[User] | None = None
    message: Any | msgspec.UnsetType = msgspec.UNSET


decode_frame = msgspec.json.Decoder(Frame).decode


def event_of(frame: Frame) -> Event | None:
    """The event a frame stands for; None for what the client does not know (skipped)."""
    if frame.type is None:
        if frame.message is msgspec.UNSET:
            return None
        payload = frame.message
        kind = payload.get("type") if isinstance(payload, dict) else None
        return Message(
            uid=frame.uid,
            alias=frame.alias,
            date=frame.date,
            message=payload,
            kind=kind if isinstance(kind, str) else None,
        )
    if frame.type == "join" and not frame.self_:
        return Join(uid=frame.uid, alias=frame.alias, total=frame.total, date=frame.date)
    if frame.type == "leave":
        return Leave(uid=frame.uid, alias=frame.alias, total=frame.total, date=frame.date)
    if frame.type == "error":
        text = frame.message if isinstance(frame.message, str) else ""
        return Error(message=text, date=frame.date)
    return None
