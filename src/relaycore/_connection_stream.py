"""The stream side of a :class:`~relaycore.Connection`: an HTTP door member's SSE or NDJSON response.

Theory of operation. A plain ``GET /c/<channel>`` that accepts a streaming type, once the
session admitted it (:mod:`relaycore._http_door`), is answered with a response head written
here (:func:`stream_head`: no length, ``connection: close``: the body is the stream and
ends with the connection) and the connection moves to ``STREAM``. From then on it only
writes: its outbox (of the stream's wire form) gets every frame the member is owed, a
keepalive every ``[http] keepalive_interval`` seconds, and at the end the form's close. What
the peer sends is ignored; its end of file is the member's leave. The outbox bound is the
WebSocket's: a reader that stops reading is closed as a slow consumer.
"""

from __future__ import annotations

from http import HTTPStatus

from ._connection_state import ConnectionBase, Phase

__all__ = ["StreamSide", "stream_head"]


def stream_head(status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The head of a stream's response: its body runs until the connection closes."""
    lines = [b"HTTP/1.1 %d %s" % (status, HTTPStatus(status).phrase.encode())]
    lines += [name + b": " + value for name, value in headers]
    lines += [b"connection: close", b"", b""]
    return b"\r\n".join(lines)


class StreamSide(ConnectionBase):
    """A connection while its phase is ``STREAM`` (see the module docstring)."""

    __slots__ = ()

    def _stream(self) -> None:
        """The session opened a stream: the connection now writes its outbox, only."""
        self.outbox = self.session.outbox
        del self._http  # HTTP is over for this connection (see Connection._switch)
        self._request = None
        self._body = bytearray()
        self._move(Phase.STREAMING)
        self.deadline = self.hub.clock.monotonic() + self.hub.config.http.keepalive_interval

    def _receive_stream(self, data: bytes) -> None:
        if not data:  # the client went away: its member leaves
            self.session.leave()
            self._move(Phase.CLOSED)

    def _tick_stream(self, now: float) -> None:
        keepalive = self.session.stream.keepalive() if self.session.stream is not None else b""
        if keepalive:
            self.outbox.write(keepalive, pin=False)
        self.deadline = now + self.hub.config.http.keepalive_interval

    def _close_stream(self, code: int, reason: str) -> None:
        """The relay ends the stream (its form's close), then the connection."""
        self.close_code = code
        if self.session.problem is not None:
            self.problem = self.session.problem
        if self.session.stream is not None:
            self.outbox.write(self.session.stream.close(code, reason))
        self.outbox.touch()  # the transport ends the connection once this is written
        self._move(Phase.CLOSED)
