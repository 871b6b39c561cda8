"""The WebSocket side of a :class:`~relaycore.Connection`: wsproto's frames, and the frames we send.

Theory of operation. Once a connection is a WebSocket, the bytes it reads are frames. Whole
simple text frames are taken off the front by the fast path (:mod:`relaycore._fastpath`, in
``Connection.receive_data``); everything else goes to a wsproto frame parser, whose events
are handled here: fragments are joined (and counted against the size limit as they come),
pings answered, and a close frame from the peer answered and the connection ``CLOSED``. A
whole message goes to the session, or back to the client on ``/echo``
(``WEBSOCKET_ECHO``). After our own close frame (``CLOSING``) the peer's data frames are
ignored. The keepalive pings and every frame we send go out here too.
"""

from __future__ import annotations

import contextlib

from wsproto.connection import Connection as FrameConnection
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError

from ._connection_state import CLOSED, ECHO, WEBSOCKET, ConnectionBase, Phase, State
from ._session import message_size

__all__ = ["WebSocketSide"]


class WebSocketSide(ConnectionBase):
    """A connection's frames while its State is ``WEBSOCKET`` or ``CLOSING`` (see the module docstring)."""

    __slots__ = ()

    def _drive_ws(self) -> None:
        ws = self._ws
        assert ws is not None
        for event in ws.events():
            if self.state is CLOSED:
                return
            if isinstance(event, TextMessage | BytesMessage):
                self._on_fragment(
                    bytes(event.data) if isinstance(event.data, bytearray) else event.data, event.message_finished
                )
            elif isinstance(event, Ping):
                self._write_ws(event.response())
            elif isinstance(event, Pong):
                pass
            elif isinstance(event, CloseConnection):
                self._on_close(ws, event)
                return

    def _on_fragment(self, data: str | bytes, finished: bool) -> None:
        if self.state is not WEBSOCKET:
            return  # after our close frame, the peer's data frames are ignored
        limit = self.session.message_limit
        size = self._size + message_size(data, limit - self._size)
        if size > limit:
            self._parts.clear()
            self._size = 0
            self.session.too_big()
            return
        if not finished:
            self._parts.append(data)
            self._size = size
            return
        if self._parts:
            self._parts.append(data)
            joined: str | bytes = "".join(self._parts) if isinstance(data, str) else b"".join(self._parts)  # type: ignore[arg-type]
            self._parts.clear()
            self._size = 0
            data = joined
        self._on_message(data)

    def _on_message(self, data: str | bytes) -> None:
        if self._phase is ECHO:
            if self.outbox.size > self._echo_backlog:
                # A client that sends and never reads: bound what waits for it.
                self._slow_consumer()
                return
            self._write_ws(TextMessage(data=data) if isinstance(data, str) else BytesMessage(data=data))
        else:
            self.session.message(data)

    def _on_close(self, ws: FrameConnection, event: CloseConnection) -> None:
        self.session.leave(event.code)
        if ws.state is ConnectionState.REMOTE_CLOSING:
            # The peer started the close: answer it, then the TCP connection may go.
            self.close_code = event.code
            self._write_ws(event.response())
        elif ws.state is ConnectionState.OPEN:
            # wsproto reports a protocol error (1002, 1007) as a close event.
            self.close_code = event.code
            self.problem = event.reason or f"protocol error {event.code}"
            self._write_ws(CloseConnection(code=event.code, reason=event.reason or ""))
        self._move(Phase.CLOSED)

    def _slow_consumer(self) -> None:
        """The peer is owed more than the bound (its own pongs, echoes): close it, 1008."""
        if self.state is WEBSOCKET or self.state is State.STREAMING:
            self.session.slow_consumer()

    def _keepalive(self, now: float) -> None:
        sent = self._ping_sent
        outstanding = self._last_seen < sent  # nothing at all arrived since our ping
        if outstanding and now >= sent + self._ping_timeout:
            self.problem = "no pong in time (dead peer)"
            self.session.leave()
            self._move(Phase.CLOSED)
            self.deadline = float("inf")
            return
        if now >= self._next_ping:
            if not outstanding:
                sent = self._ping_sent = now
                outstanding = True
                self._write_ws(Ping())
            self._next_ping = now + self._ping_interval
        self.deadline = min(self._next_ping, sent + self._ping_timeout if outstanding else float("inf"))

    def _write_ws(self, event: TextMessage | BytesMessage | Ping | Pong | CloseConnection) -> None:
        assert self._ws is not None
        # Once closing, wsproto refuses to send more; that is the protocol, not an error.
        with contextlib.suppress(LocalProtocolError):
            # Only a close frame must survive a slow consumer's dropped backlog.
            self.outbox.write(self._ws.send(event), pin=isinstance(event, CloseConnection))
