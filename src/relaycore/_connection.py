"""The framing adapter for raw byte streams: h11 and wsproto over a :class:`ClientSession`.

Theory of operation. A :class:`Connection` starts in ``HTTP``: h11 parses requests, and
each complete request goes to the connection's :class:`~relaycore.ClientSession`, which
decides it (every rule of PROTOCOL.md lives there). A WebSocket upgrade the session admits
is answered with 101 and the remaining bytes go to a wsproto frame parser (state
``WEBSOCKET``); whole messages go to the session, and a close the session decides comes
back through ``session_closed`` as a close frame. Plain requests (``POST /push/...``, ``GET
/version``, ``GET /health``) are answered through h11, with keep-alive. What belongs to the
framing stays here: HTTP parsing and its errors, the handshake headers, frames and their
fast path, pings, and the handshake, keepalive and close timers. Every byte the connection
must send is written to its :attr:`Connection.outbox`; bytes for *other* connections go to
theirs, through the hub. After each call, the transport flushes ``hub.take_ready()``.

Every byte the connection is owed counts against one bound, ``outbound_buffer_bytes``:
relayed frames, pongs, close frames and HTTP responses alike. While the outbox is over it,
:attr:`Connection.reading` is False and the transport stops reading (a peer that does not
read cannot make the relay owe it more); a WebSocket peer that goes over it is closed as a
slow consumer (1008). Pipelined HTTP requests are answered one at a time: after an answer,
``reading`` stays False until the transport has written it and calls
:meth:`Connection.resume`.

A close started by the relay (message too big, policy, shutdown) moves the connection to
``CLOSING``: the member has already left, a close frame is queued, and the transport keeps
reading until the peer answers (``CLOSED``) or its own timeout runs out. When the state is
``CLOSED`` the transport flushes what is left and closes the socket.

The connection's state moves through one table (:mod:`relaycore._connection_state`: the
public :class:`State` and the phases within it). The HTTP/1.1 side is
:mod:`relaycore._connection_http`, the WebSocket side :mod:`relaycore._connection_ws`; what
runs for every read (the frame fast path) and every call a transport or the session makes
is here.
"""

from __future__ import annotations

import h11
from wsproto.connection import Connection as FrameConnection
from wsproto.connection import ConnectionType
from wsproto.events import CloseConnection

from ._channel import Member
from ._connection_http import MAX_HEADER_BYTES, HTTPSide
from ._connection_state import ANSWERING, CLOSED, HTTP, STREAMING, WAITING, WEBSOCKET, Phase, State
from ._connection_stream import StreamSide
from ._connection_ws import WebSocketSide
from ._deflate import inflating
from ._fastpath import FrameScanner, take_text_frames
from ._hub import Hub
from ._session import ClientSession
from ._session_seams import Answer, Routes
from ._texts import CLOSE_GOING_AWAY

__all__ = ["Connection", "State"]

#: How long a connection that ended with a plain HTTP answer stays half-closed (see linger).
LINGER_SECONDS = 1.0
#: The opt-in /echo endpoint takes messages up to this size (or max_message_bytes if that
#: is larger): the largest message a conformance suite (Autobahn, cases 9.x) sends. It also
#: lets this much (or outbound_buffer_bytes) wait unread, plus the message being echoed,
#: before it closes the client (1008).
ECHO_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class Connection(HTTPSide, WebSocketSide, StreamSide):
    """One client connection to the relay, driven by plain calls.

    >>> from relaycore import Config, Hub
    >>> from relaycore.testing import FakeClock, seeded_uids
    >>> hub = Hub(Config(), FakeClock(), seeded_uids(1))
    >>> conn = Connection(hub)
    >>> conn.receive_data(b"GET /version HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    >>> conn.outbox.view().split(b"\\r\\n")[0]
    b'HTTP/1.1 200 OK'
    """

    __slots__ = ()

    def __init__(self, hub: Hub, *, client: str = "", routes: Routes | None = None) -> None:
        self.hub = hub
        #: Why the connection ended badly (a protocol error, a limit), for the log.
        self.problem: str | None = None
        limits = hub.config.limits
        self._ping_interval = limits.ping_interval
        self._ping_timeout = limits.ping_timeout
        self._close_timeout = limits.close_timeout
        self._handshake_timeout = limits.handshake_timeout
        now = hub.clock.monotonic()
        self._last_seen = now
        self._ping_sent = float("-inf")  # when our unanswered ping went out
        self._next_ping = float("inf")
        #: The monotonic time at which :meth:`tick` has something to do.
        self.deadline = now + self._handshake_timeout
        #: Bytes waiting for this connection's socket.
        self.outbox = hub.new_outbox()
        #: Where every decision about this client is made.
        self.session = ClientSession(hub, self.outbox, self, client=client, routes=routes)
        #: Where the connection stands (changed by ``_move`` only, through the table).
        self.state = State.HTTP
        self._phase = Phase.HTTP
        #: The close code this side sent or answered with, once closing.
        self.close_code: int | None = None
        self._http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self._ws: FrameConnection | None = None
        self._scanner: FrameScanner | None = None
        self._echo_backlog = 0
        self._request: h11.Request | None = None
        self._method = b""
        self._body = bytearray()
        self._parts: list[str | bytes] = []
        self._size = 0

    def __repr__(self) -> str:
        return f"<Connection {self.client or '?'} {self.state.value}>"

    @property
    def upgraded(self) -> bool:
        """True once the connection switched to WebSocket."""
        return self._ws is not None

    @property
    def client(self) -> str:
        """The peer's address, for per-client limits and logs (the forwarded client's
        address once a request from a trusted proxy says who that is)."""
        return self.session.client

    @property
    def member(self) -> Member | None:
        """The channel membership, once the WebSocket is open (None on ``/echo``)."""
        return self.session.member

    @property
    def reading(self) -> bool:
        """Whether the transport should read from the peer now.

        False while more than ``outbound_buffer_bytes`` wait in the outbox, while an HTTP
        answer waits to be written (call :meth:`resume` once the outbox is empty), and while
        the backplane decides a join or a push.
        """
        phase = self._phase
        return phase is not ANSWERING and phase is not WAITING and self.outbox.size <= self.outbox.limit

    @property
    def writing(self) -> bool:
        """True while bytes wait to be written: watch the socket for writability."""
        return self.outbox.size > 0

    @property
    def finished(self) -> bool:
        """True once the connection is ``CLOSED`` and everything it owed has been written."""
        return self.state is CLOSED and not self.outbox.size

    @property
    def linger(self) -> float:
        """How long a finished connection stays half-closed before the socket is closed.

        After a plain HTTP answer the client may still be sending (a body the relay did not
        want); closing at once could reset the connection before it read the answer. So
        the transport shuts down its writing side and reads (discarding) until the client's
        end of file, for at most this many seconds. A WebSocket ends with its close
        handshake: 0.
        """
        return 0.0 if self.upgraded or self.session.stream is not None else LINGER_SECONDS

    def data_to_send(self) -> bytes:
        """The next bytes to write (up to about 256 KiB); report what the socket took with :meth:`sent`."""
        return self.outbox.view()

    def sent(self, n: int) -> None:
        """The socket took the first ``n`` bytes of :meth:`data_to_send`.

        Once everything is written the connection goes on with input it held back
        (:meth:`resume`), which may queue more: check :attr:`writing` again.
        """
        outbox = self.outbox
        outbox.consume(n)
        if not outbox.size:
            self.resume()

    def resume(self) -> None:
        """The transport wrote the whole outbox: go on with input held back meanwhile.

        Pipelined HTTP requests are answered one at a time; the next one is handled here.
        Does nothing unless something was held back and the outbox is empty.
        """
        if self._phase is ANSWERING and not self.outbox:
            self._move(Phase.HTTP)
            # An answer over the bound (a large static file) is written out: nothing is
            # owed any more, so a WebSocket opened next on this connection starts afresh.
            self.outbox.overflowed = False
            self._drive_http()

    # -- input ----------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the socket; ``b""`` means the peer closed its side."""
        self._last_seen = self.hub.clock.monotonic()
        state = self.state
        if state is HTTP:
            self._http.receive_data(data)
            self._drive_http()
        elif state is CLOSED:
            return
        elif state is STREAMING:
            self._receive_stream(data)
        else:
            self._receive_ws(data)
        if self.outbox.overflowed:
            self._slow_consumer()

    def connection_lost(self) -> None:
        """The transport lost the socket (reset, timeout): leave without a handshake."""
        self.session.leave()
        if self._phase is not Phase.CLOSED:
            self._move(Phase.CLOSED)

    def close(self, code: int = CLOSE_GOING_AWAY, reason: str = "") -> None:
        """Start a close from this side (for example 1001 on shutdown)."""
        if self.state is State.HTTP:
            self._move(Phase.CLOSED)
            return
        self.session.close(code, reason)

    def shutdown(self) -> None:
        """The relay is going away: close 1001 (an HTTP connection just ends)."""
        if self.state is State.HTTP:
            self._move(Phase.CLOSED)
            return
        self.session.shutdown()

    def fail(self) -> None:
        """A bug while serving this connection: close 1011 (an HTTP connection just ends)."""
        if self.state is State.HTTP:
            self._move(Phase.CLOSED)
            return
        self.session.fail()

    def tick(self, now: float) -> None:
        """Enforce the timers; call it when ``now >= self.deadline``.

        - ``HTTP``: a request not completed within ``handshake_timeout`` closes the
          connection (idle keep-alive connections too).
        - ``WEBSOCKET``: a ping every ``ping_interval``; no frame at all within
          ``ping_timeout`` of a ping means a dead peer: it leaves and the connection ends.
        - ``CLOSING``: no answer to our close frame within ``close_timeout`` ends it.
        """
        state = self.state
        if now < self.deadline or state is State.CLOSED:
            return
        if self._phase is WAITING and self.session.awaiting is not None:
            self.session_answered(self.session.poll_timed_out())  # a long poll: nothing came
            return
        if state is STREAMING:
            self._tick_stream(now)
            if self.outbox.overflowed:
                self._slow_consumer()
            return
        if state is State.HTTP:
            self.problem = "no complete request in time"
            self.session.leave()  # a join still waiting for the backplane is withdrawn
            self._move(Phase.CLOSED)
        elif state is State.CLOSING:
            self.problem = "no answer to the close frame in time"
            self._move(Phase.CLOSED)
        else:
            self._keepalive(now)
            if self.outbox.overflowed:
                self._slow_consumer()
            return
        self.deadline = float("inf")

    # -- the session's transport side ---------------------------------------------------

    def session_opened(self) -> None:
        """The session's transport side: the backplane admitted the pending join."""
        if self._phase is WAITING:
            self._switch()
        else:  # the connection ended while the join waited
            self.session.leave()

    def session_refused(self, answer: Answer) -> None:
        """The session's transport side: the backplane refused the pending join."""
        if self._phase is WAITING:
            self._refuse(answer)

    def session_answered(self, answer: Answer) -> None:
        """The session's transport side: a plain request decided later (an HTTP push) is answered."""
        if self._phase is WAITING:
            self._move(Phase.HTTP)
            self._respond(answer)
            self._next_cycle()

    def session_closed(self, code: int, reason: str) -> None:
        """The session's transport side: send the close frame the session decided."""
        if self.state is STREAMING:
            self._close_stream(code, reason)
            return
        if self._ws is None or self.state is not WEBSOCKET:
            return
        self.close_code = code
        if self.session.problem is not None:
            self.problem = self.session.problem
        self._write_ws(CloseConnection(code=code, reason=reason))
        self._move(Phase.CLOSING)
        self.deadline = self.hub.clock.monotonic() + self._close_timeout

    # -- from HTTP to WebSocket, and the frames read ---------------------------------------

    def _switch(self) -> None:
        """The session opened a WebSocket (or a stream): from now on the bytes are frames."""
        if self.session.stream is not None:
            self._stream()
            return
        if self.session.echo:
            limit = self.session.message_limit = max(self.session.message_limit, ECHO_MAX_MESSAGE_BYTES)
            # Up to 16 MiB of echoes may wait unread (see _on_message), plus the one being echoed.
            self._echo_backlog = max(self.outbox.limit, ECHO_MAX_MESSAGE_BYTES)
            self.outbox.limit = self._echo_backlog + limit + 16
        trailing, _closed = self._http.trailing_data
        # HTTP is over for this connection: let the parser go (it is most of the memory
        # an idle connection would otherwise keep).
        del self._http
        self._request = None
        self._body = bytearray()
        self._move(Phase.WEBSOCKET_ECHO if self.session.echo else Phase.WEBSOCKET)
        self.deadline = self._next_ping = self.hub.clock.monotonic() + self._ping_interval
        self._ws = FrameConnection(ConnectionType.SERVER, inflating(self.outbox.form, self.session))
        self._scanner = FrameScanner()
        if trailing:
            self._receive_ws(trailing)

    def _receive_ws(self, data: bytes) -> None:
        ws, scanner = self._ws, self._scanner
        assert ws is not None and scanner is not None
        used = 0
        if data and scanner.at_rest and self.state is WEBSOCKET:
            # Whole simple text frames first, without wsproto (see _fastpath).
            messages, used = take_text_frames(data, self.session.message_limit)
            for text in messages:
                self._on_message(text)
                if self.state is not WEBSOCKET:
                    break  # the peer's data after our close frame is ignored, as in _on_fragment
        if self.state is CLOSED or used == len(data) > 0:
            return
        if used:
            data = data[used:]
        scanner.feed(data)
        ws.receive_data(data or None)
        self._drive_ws()
