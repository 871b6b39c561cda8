"""Wire forms: how one kind of door carries the frames the hub makes.

Theory of operation. The hub encodes every frame ONCE, as the JSON text a WebSocket member
receives (the *payload*). A door carries payloads in its own *wire form*: a WebSocket TEXT
frame, a whole message handed to a server that frames for us (ASGI), a Server-Sent Event,
one line of newline-delimited JSON, or anything a third-party door defines. A form is a
sans-I/O renderer of three things: a message (:meth:`WireForm.render`), the end of the
stream with a close code and reason (:meth:`WireForm.close`) and a keepalive
(:meth:`WireForm.keepalive`).

Each outbox has one form (``Outbox.form``). A delivery to many members renders its payload
once per form present, never per recipient: :meth:`WireForm.message` keeps the last payload
it rendered and its rendering, and a delivery puts the same payload object into every
recipient's outbox in a row, so every member of one form after the first gets the bytes
already made. The WebSocket frame, which nearly every delivery needs, is made by the
delivery itself (:func:`relaycore.text_frame`) and passed along.

A form is a singleton per kind (and per parameter set, for a form with parameters): its
memo is only worth anything when every outbox of the form shares it.
"""

from __future__ import annotations

import struct

from ._wire import encode, text_frame

__all__ = ["MESSAGES", "NDJSON", "SSE", "WEBSOCKET", "WireForm"]


class WireForm:
    """How a door carries payloads (subclass it and override :meth:`render`; see the module docstring)."""

    __slots__ = ("_last", "_rendered", "name")

    def __init__(self, name: str) -> None:
        #: A short name for logs and metrics (``"websocket"``, ``"sse"``...).
        self.name = name
        self._last = b""
        self._rendered = self.render(b"")

    def __repr__(self) -> str:
        return f"<WireForm {self.name}>"

    def render(self, payload: bytes) -> bytes:
        """One payload (a frame's JSON text) as this form carries it."""
        return payload

    def message(self, payload: bytes) -> bytes:
        """:meth:`render`, done once for a run of the same payload object."""
        if payload is not self._last:
            self._rendered = self.render(payload)
            self._last = payload
        return self._rendered

    def batch(self, payloads: list[bytes]) -> bytes:
        """Several payloads rendered and joined, in order."""
        return b"".join(map(self.message, payloads))

    def close(self, code: int, reason: str) -> bytes:
        """The last bytes of a stream the relay ends (b"": none; the stream just ends)."""
        return b""

    def keepalive(self) -> bytes:
        """Bytes that keep an idle stream open through proxies (b"": none needed)."""
        return b""


class _WebSocketForm(WireForm):
    """WebSocket TEXT frames, unmasked (server side): the native door's form."""

    __slots__ = ()

    def render(self, payload: bytes) -> bytes:
        return text_frame(payload)

    def close(self, code: int, reason: str) -> bytes:
        body = struct.pack("!H", code) + reason.encode()[:123]
        return bytes((0x88, len(body))) + body

    def keepalive(self) -> bytes:
        return b"\x89\x00"  # an empty ping


def one_line(payload: bytes) -> bytes:
    """``payload`` on one line. A relayed message is copied as the sender wrote it, and
    its JSON may hold line breaks; in valid JSON they can only be whitespace (a string
    cannot hold a raw control character), so a space replaces each and the value is the same."""
    if b"\n" in payload or b"\r" in payload:
        return payload.replace(b"\r", b" ").replace(b"\n", b" ")
    return payload


class _EventStreamForm(WireForm):
    """Server-Sent Events: each frame one default (``message``) event whose data is its JSON."""

    __slots__ = ()

    def render(self, payload: bytes) -> bytes:
        return b"data: " + one_line(payload) + b"\n\n"

    def close(self, code: int, reason: str) -> bytes:
        # A named event: an EventSource's onmessage never sees it; a client that listens
        # for "close" learns why the relay ended the stream.
        return b"event: close\ndata: " + encode({"code": code, "reason": reason}) + b"\n\n"

    def keepalive(self) -> bytes:
        return b": keepalive\n\n"


class _LinesForm(WireForm):
    """Newline-delimited JSON: each frame's JSON on a line of its own; a blank line keeps
    the stream alive (a reader skips blank lines)."""

    __slots__ = ()

    def render(self, payload: bytes) -> bytes:
        return one_line(payload) + b"\n"

    def keepalive(self) -> bytes:
        return b"\n"


#: WebSocket TEXT frames (the native server's WebSockets).
WEBSOCKET: WireForm = _WebSocketForm("websocket")
#: Whole payloads, unframed: a server that frames for us (ASGI), a long-poll's array.
MESSAGES: WireForm = WireForm("messages")
#: ``text/event-stream`` (the HTTP door's SSE mode).
SSE: WireForm = _EventStreamForm("sse")
#: ``application/x-ndjson`` (the HTTP door's streaming mode, and line-based doors).
NDJSON: WireForm = _LinesForm("ndjson")
