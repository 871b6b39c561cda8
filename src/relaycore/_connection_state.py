"""Where a :class:`~relaycore.Connection` stands: its phases and the one table they move through.

Theory of operation. A transport reads a connection's public :class:`State`: ``HTTP``,
``WEBSOCKET``, ``STREAMING`` (an HTTP door member's SSE or NDJSON stream), ``CLOSING`` or
``CLOSED``. Within those five the connection moves through
the eight values of :class:`Phase`, the way h11's connection moves through its states: an
HTTP connection is reading a request (``HTTP``), holding the next request back until its
answer is written (``HTTP_ANSWERING``), or waiting for the backplane to decide a join or a
push (``HTTP_WAITING``); an open WebSocket is a channel member's (``WEBSOCKET``) or the
opt-in ``/echo`` endpoint's (``WEBSOCKET_ECHO``). Every move goes through
:meth:`ConnectionBase._move`, which checks it against :data:`NEXT` (a move the table does
not have is a bug in the core) and keeps :attr:`ConnectionBase.state` on the phase's State.

================  ==========  ==============================================================
phase             State       moves to
================  ==========  ==============================================================
HTTP              HTTP        HTTP_ANSWERING (an answer is unwritten), HTTP_WAITING (the
                              backplane decides, a long poll waits), WEBSOCKET,
                              WEBSOCKET_ECHO (an upgrade admitted), STREAMING (a stream
                              admitted), CLOSED (a refusal, the peer's end, a timeout)
HTTP_ANSWERING    HTTP        HTTP (the answer is written: ``resume``), CLOSED
HTTP_WAITING      HTTP        HTTP (a push or a poll answered), WEBSOCKET, STREAMING (a join
                              admitted), CLOSED
STREAMING         STREAMING   CLOSED (the relay's close, the peer's end, the connection lost)
WEBSOCKET         WEBSOCKET   CLOSING (the relay's close frame), CLOSED (the peer's close,
                              a protocol error, a dead peer, the connection lost)
WEBSOCKET_ECHO    WEBSOCKET   as WEBSOCKET
CLOSING           CLOSING     CLOSED (the peer's answer, or ``close_timeout``)
CLOSED            CLOSED      nothing: the transport flushes what is left and closes
================  ==========  ==============================================================

:class:`ConnectionBase` holds the fields every side of a connection shares: the HTTP/1.1
side (:mod:`relaycore._connection_http`), the WebSocket side
(:mod:`relaycore._connection_ws`) and the connection itself (:mod:`relaycore._connection`).
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import h11
    from wsproto.connection import Connection as FrameConnection

    from ._fastpath import FrameScanner
    from ._hub import Hub
    from ._outbox import Outbox
    from ._session import ClientSession

__all__ = [
    "ANSWERING",
    "CLOSED",
    "ECHO",
    "HTTP",
    "NEXT",
    "SHOWN",
    "STREAMING",
    "WAITING",
    "WEBSOCKET",
    "ConnectionBase",
    "Phase",
    "State",
]


class State(Enum):
    """Where a connection stands."""

    HTTP = "http"
    WEBSOCKET = "websocket"
    STREAMING = "streaming"
    CLOSING = "closing"
    CLOSED = "closed"


class Phase(Enum):
    """Where a connection stands within its :class:`State` (see the module docstring)."""

    HTTP = "http"  # reading a request
    HTTP_ANSWERING = "http answering"  # an answer is unwritten: the next request waits
    HTTP_WAITING = "http waiting"  # the backplane decides a join or a push: nothing is read
    WEBSOCKET = "websocket"  # a channel member's WebSocket
    WEBSOCKET_ECHO = "websocket echo"  # the /echo endpoint's WebSocket: messages come back
    STREAMING = "streaming"  # an HTTP door member's stream (SSE, NDJSON): the relay only writes
    CLOSING = "closing"  # our close frame is out, the peer's answer awaited
    CLOSED = "closed"


#: The one table of moves: from each phase, the phases it may move to.
NEXT: dict[Phase, frozenset[Phase]] = {
    Phase.HTTP: frozenset(
        {Phase.HTTP_ANSWERING, Phase.HTTP_WAITING, Phase.WEBSOCKET, Phase.WEBSOCKET_ECHO, Phase.STREAMING, Phase.CLOSED}
    ),
    Phase.HTTP_ANSWERING: frozenset({Phase.HTTP, Phase.CLOSED}),
    Phase.HTTP_WAITING: frozenset({Phase.HTTP, Phase.WEBSOCKET, Phase.STREAMING, Phase.CLOSED}),
    Phase.STREAMING: frozenset({Phase.CLOSED}),
    Phase.WEBSOCKET: frozenset({Phase.CLOSING, Phase.CLOSED}),
    Phase.WEBSOCKET_ECHO: frozenset({Phase.CLOSING, Phase.CLOSED}),
    Phase.CLOSING: frozenset({Phase.CLOSED}),
    Phase.CLOSED: frozenset(),
}

#: The public State each phase shows.
SHOWN: dict[Phase, State] = {
    Phase.HTTP: State.HTTP,
    Phase.HTTP_ANSWERING: State.HTTP,
    Phase.HTTP_WAITING: State.HTTP,
    Phase.WEBSOCKET: State.WEBSOCKET,
    Phase.WEBSOCKET_ECHO: State.WEBSOCKET,
    Phase.STREAMING: State.STREAMING,
    Phase.CLOSING: State.CLOSING,
    Phase.CLOSED: State.CLOSED,
}

# The paths run for every read and every message compare with these module-level names:
# Python 3.11 reads an Enum member (``State.CLOSED``) through a descriptor, about 0.15 µs.
HTTP, WEBSOCKET, CLOSED, STREAMING = State.HTTP, State.WEBSOCKET, State.CLOSED, State.STREAMING
ANSWERING, WAITING, ECHO = Phase.HTTP_ANSWERING, Phase.HTTP_WAITING, Phase.WEBSOCKET_ECHO


class ConnectionBase:
    """The fields of a connection, and :meth:`_move`, the one place its phase changes."""

    __slots__ = (
        "_body",
        "_close_timeout",
        "_echo_backlog",
        "_handshake_timeout",
        "_http",
        "_last_seen",
        "_method",
        "_next_ping",
        "_parts",
        "_phase",
        "_ping_interval",
        "_ping_sent",
        "_ping_timeout",
        "_request",
        "_scanner",
        "_size",
        "_ws",
        "close_code",
        "deadline",
        "hub",
        "outbox",
        "problem",
        "session",
        "state",
    )

    hub: Hub
    session: ClientSession
    #: Bytes waiting for this connection's socket.
    outbox: Outbox
    #: Where the connection stands (the public face of ``_phase``; changed by _move only).
    state: State
    _phase: Phase
    #: Why the connection ended badly (a protocol error, a limit), for the log.
    problem: str | None
    #: The close code this side sent or answered with, once closing.
    close_code: int | None
    #: The monotonic time at which :meth:`~relaycore.Connection.tick` has something to do.
    deadline: float
    _ping_interval: float
    _ping_timeout: float
    _close_timeout: float
    _handshake_timeout: float
    _last_seen: float
    _ping_sent: float  # when our unanswered ping went out
    _next_ping: float
    # The HTTP/1.1 side (let go once the connection is a WebSocket).
    _http: h11.Connection
    _request: h11.Request | None
    _method: bytes
    _body: bytearray
    # The WebSocket side.
    _ws: FrameConnection | None
    _scanner: FrameScanner | None
    _parts: list[str | bytes]
    _size: int
    _echo_backlog: int

    def _move(self, phase: Phase) -> None:
        """Move to ``phase``, as :data:`NEXT` allows."""
        if phase not in NEXT[self._phase]:
            raise AssertionError(f"connection phase {self._phase.name} -> {phase.name}")  # a bug here
        self._phase = phase
        self.state = SHOWN[phase]
