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
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from enum import Enum
from http import HTTPStatus

import h11
from wsproto.connection import Connection as FrameConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError

from ._channel import Member
from ._errors import HTTPError
from ._fastpath import FrameScanner, take_text_frames
from ._hub import Hub
from ._session import Answer, ClientSession, Routes, message_size
from ._texts import CLOSE_GOING_AWAY

__all__ = ["Connection", "State"]

#: h11's state of a client that asked for an upgrade (documented, though not in h11's ``__all__``).
MIGHT_SWITCH_PROTOCOL = h11.MIGHT_SWITCH_PROTOCOL  # type: ignore[attr-defined]

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEADER_BYTES = 16 * 1024
#: How long a connection that ended with a plain HTTP answer stays half-closed (see linger).
LINGER_SECONDS = 1.0
#: The opt-in /echo endpoint takes messages up to this size (or max_message_bytes if that
#: is larger): the largest message a conformance suite (Autobahn, cases 9.x) sends. It also
#: lets this much (or outbound_buffer_bytes) wait unread, plus the message being echoed,
#: before it closes the client (1008).
ECHO_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: An HTTP answer body longer than this (a static file) is queued in pieces this size, so
#: that a socket taking it bit by bit never makes the outbox copy what is left of it.
ANSWER_PIECE = 64 * 1024


class State(Enum):
    """Where a connection stands."""

    HTTP = "http"
    WEBSOCKET = "websocket"
    CLOSING = "closing"
    CLOSED = "closed"


class Connection:
    """One client connection to the relay, driven by plain calls.

    >>> from relaycore import Config, Hub
    >>> from relaycore.testing import FakeClock, seeded_uids
    >>> hub = Hub(Config(), FakeClock(), seeded_uids(1))
    >>> conn = Connection(hub)
    >>> conn.receive_data(b"GET /version HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    >>> conn.outbox.view().split(b"\\r\\n")[0]
    b'HTTP/1.1 200 OK'
    """

    __slots__ = (
        "_body",
        "_close_timeout",
        "_echo",
        "_echo_backlog",
        "_handshake_timeout",
        "_held",
        "_http",
        "_last_seen",
        "_method",
        "_next_ping",
        "_parts",
        "_ping_interval",
        "_ping_sent",
        "_ping_timeout",
        "_request",
        "_scanner",
        "_size",
        "_waiting",
        "_ws",
        "close_code",
        "deadline",
        "hub",
        "outbox",
        "problem",
        "session",
        "state",
    )

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
        self.state = State.HTTP
        #: The close code this side sent or answered with, once closing.
        self.close_code: int | None = None
        self._http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self._ws: FrameConnection | None = None
        self._scanner: FrameScanner | None = None
        self._echo = False
        self._echo_backlog = 0
        self._request: h11.Request | None = None
        self._method = b""
        self._body = bytearray()
        self._parts: list[str | bytes] = []
        self._size = 0
        #: An HTTP answer waits to be written before the next request is looked at.
        self._held = False
        #: An upgrade waits for the backplane's decision on its join.
        self._waiting = False

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

        False while more than ``outbound_buffer_bytes`` wait in the outbox, and while an
        HTTP answer waits to be written (call :meth:`resume` once the outbox is empty).
        """
        return not self._held and not self._waiting and self.outbox.size <= self.outbox.limit

    @property
    def writing(self) -> bool:
        """True while bytes wait to be written: watch the socket for writability."""
        return self.outbox.size > 0

    @property
    def finished(self) -> bool:
        """True once the connection is ``CLOSED`` and everything it owed has been written."""
        return self.state is State.CLOSED and not self.outbox.size

    @property
    def linger(self) -> float:
        """How long a finished connection stays half-closed before the socket is closed.

        After a plain HTTP answer the client may still be sending (a body the relay did not
        want); closing at once could reset the connection before it read the answer. So
        the transport shuts down its writing side and reads (discarding) until the client's
        end of file, for at most this many seconds. A WebSocket ends with its close
        handshake: 0.
        """
        return 0.0 if self.upgraded else LINGER_SECONDS

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
        if self._held and not self.outbox:
            self._held = False
            if self.state is State.HTTP:
                # An answer over the bound (a large static file) is written out: nothing is
                # owed any more, so a WebSocket opened next on this connection starts afresh.
                self.outbox.overflowed = False
                self._drive_http()

    # -- input ----------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the socket; ``b""`` means the peer closed its side."""
        self._last_seen = self.hub.clock.monotonic()
        if self.state is State.HTTP:
            self._http.receive_data(data)
            self._drive_http()
        elif self.state is State.CLOSED:
            return
        else:
            self._receive_ws(data)
        if self.outbox.overflowed:
            self._slow_consumer()

    def connection_lost(self) -> None:
        """The transport lost the socket (reset, timeout): leave without a handshake."""
        self.session.leave()
        self.state = State.CLOSED

    def close(self, code: int = CLOSE_GOING_AWAY, reason: str = "") -> None:
        """Start a close from this side (for example 1001 on shutdown)."""
        if self.state is State.HTTP:
            self.state = State.CLOSED
            return
        self.session.close(code, reason)

    def shutdown(self) -> None:
        """The relay is going away: close 1001 (an HTTP connection just ends)."""
        if self.state is State.HTTP:
            self.state = State.CLOSED
            return
        self.session.shutdown()

    def fail(self) -> None:
        """A bug while serving this connection: close 1011 (an HTTP connection just ends)."""
        if self.state is State.HTTP:
            self.state = State.CLOSED
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
        if state is State.HTTP:
            self.problem = "no complete request in time"
            self.session.leave()  # a join still waiting for the backplane is withdrawn
            self.state = State.CLOSED
        elif state is State.CLOSING:
            self.problem = "no answer to the close frame in time"
            self.state = State.CLOSED
        else:
            self._keepalive(now)
            if self.outbox.overflowed:
                self._slow_consumer()
            return
        self.deadline = float("inf")

    def _keepalive(self, now: float) -> None:
        sent = self._ping_sent
        outstanding = self._last_seen < sent  # nothing at all arrived since our ping
        if outstanding and now >= sent + self._ping_timeout:
            self.problem = "no pong in time (dead peer)"
            self.session.leave()
            self.state = State.CLOSED
            self.deadline = float("inf")
            return
        if now >= self._next_ping:
            if not outstanding:
                sent = self._ping_sent = now
                outstanding = True
                self._write_ws(Ping())
            self._next_ping = now + self._ping_interval
        self.deadline = min(self._next_ping, sent + self._ping_timeout if outstanding else float("inf"))

    def _slow_consumer(self) -> None:
        """The peer is owed more than the bound (its own pongs, echoes): close it, 1008."""
        if self.state is State.WEBSOCKET:
            self.session.slow_consumer()

    # -- HTTP -----------------------------------------------------------------------

    def _drive_http(self) -> None:
        while self.state is State.HTTP:
            if self.outbox:
                # An answer is still unwritten: the next request waits for resume().
                self._held = True
                return
            try:
                event = self._http.next_event()
            except h11.RemoteProtocolError as exc:
                # Not the parser's message: it quotes the raw line, which may carry keys.
                status = exc.error_status_hint
                self.problem = f"malformed HTTP request ({status})"
                text = "Bad request." if status == 400 else f"{HTTPStatus(status).phrase}."
                self._refuse(self.session.refusal(HTTPError(status, text)))
                return
            if event is h11.NEED_DATA:
                return
            if event is h11.PAUSED:
                if self._http.our_state is h11.DONE and self._http.their_state is h11.DONE:
                    self._http.start_next_cycle()
                    continue
                if self._request is None:
                    return
                self._handle(self._request)
                continue
            if isinstance(event, h11.Request):
                self._request = event
                self._method = event.method  # known before any refusal (HEAD has no body)
                self._body.clear()
                if _head_size(event) > MAX_HEADER_BYTES:
                    # h11 bounds a head that arrives in pieces; one that arrives whole here.
                    self._refuse(self.session.refusal(HTTPError(431, "Request header fields too large.")))
                    return
                if self._declared_body(event) > self.session.message_limit:
                    self._refuse(self.session.body_too_large(event.target, event.headers))
                    return
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > self.session.message_limit and self._request is not None:
                    self._refuse(self.session.body_too_large(self._request.target, self._request.headers))
                    return
            elif isinstance(event, h11.EndOfMessage):
                if self._request is not None and self._http.their_state is not MIGHT_SWITCH_PROTOCOL:
                    self._handle(self._request)
            elif isinstance(event, h11.ConnectionClosed):
                self.state = State.CLOSED

    @staticmethod
    def _declared_body(request: h11.Request) -> int:
        for name, value in request.headers:
            if name == b"content-length":
                return int(value)
        return 0

    def _handle(self, request: h11.Request) -> None:
        self._request = None
        self._method = request.method
        # A refused WebSocket upgrade ends the connection: the client may already have
        # sent frames after its request, which must not be read as a next request.
        upgrade = self._http.their_state is MIGHT_SWITCH_PROTOCOL
        answer = self.session.request(
            request.method,
            request.target,
            request.headers,
            bytes(self._body),
            upgrade=upgrade,
            handshake=_greeting,
        )
        if answer is None:
            if self.session.pending:
                self._waiting = True  # nothing more is read until the backplane decides
            else:
                self._switch()
            return
        if upgrade:
            self._refuse(answer)
            return
        self._respond(answer)
        self._next_cycle()

    def session_opened(self) -> None:
        """The session's transport side: the backplane admitted the pending join."""
        self._waiting = False
        if self.state is State.HTTP:
            self._switch()
        else:  # the connection ended while the join waited
            self.session.leave()

    def session_refused(self, answer: Answer) -> None:
        """The session's transport side: the backplane refused the pending join."""
        self._waiting = False
        if self.state is State.HTTP:
            self._refuse(answer)

    def session_answered(self, answer: Answer) -> None:
        """The session's transport side: a plain request decided later (an HTTP push) is answered."""
        self._waiting = False
        if self.state is State.HTTP:
            self._respond(answer)
            self._next_cycle()

    def _switch(self) -> None:
        """The session opened a WebSocket: from now on the bytes are frames."""
        if self.session.echo:
            self._echo = True
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
        self.state = State.WEBSOCKET
        self.deadline = self._next_ping = self.hub.clock.monotonic() + self._ping_interval
        self._ws = FrameConnection(ConnectionType.SERVER)
        self._scanner = FrameScanner()
        if trailing:
            self._receive_ws(trailing)

    def _respond(self, answer: Answer, *, close: bool = False) -> None:
        content_type, *extra = answer.headers
        headers = [content_type]
        if answer.status != 204:  # No Content has no length (RFC 9110, 8.6)
            headers.append((b"content-length", str(len(answer.body)).encode()))
        if close:
            headers += [h for h in extra if h[0] != b"connection"]
            headers.append((b"connection", b"close"))
        else:
            headers += extra
        status = answer.status
        head = h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase.encode())
        send = self._http.send
        out = send(head) or b""
        body = b""
        if self._method != b"HEAD":
            body = send(h11.Data(data=answer.body)) or b""
        end = send(h11.EndOfMessage()) or b""
        if len(body) <= ANSWER_PIECE:
            self.outbox.write(out + body + end)
            return
        self.outbox.write(out)
        for start in range(0, len(body), ANSWER_PIECE):
            self.outbox.write(body[start : start + ANSWER_PIECE])
        self.outbox.write(end)

    def _refuse(self, answer: Answer) -> None:
        """Answer a request that ends the connection (an upgrade refused, a malformed
        request, a body too large) and close."""
        if self._http.our_state is h11.SEND_RESPONSE:
            self._respond(answer, close=True)
        else:
            # h11 cannot answer a request line it could not parse: write a minimal response.
            status, body = answer.status, answer.body
            head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            head += (
                f"content-type: text/plain; charset=utf-8\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
            )
            self.outbox.write(head.encode() + body)
        self.state = State.CLOSED

    def _next_cycle(self) -> None:
        http = self._http
        if http.our_state is h11.MUST_CLOSE or http.their_state is h11.MUST_CLOSE:
            self.state = State.CLOSED
        elif http.our_state is h11.DONE and http.their_state is h11.DONE:
            http.start_next_cycle()
            self.deadline = self.hub.clock.monotonic() + self._handshake_timeout

    # -- WebSocket --------------------------------------------------------------------

    def _receive_ws(self, data: bytes) -> None:
        ws, scanner = self._ws, self._scanner
        assert ws is not None and scanner is not None
        used = 0
        if data and scanner.at_rest and self.state is State.WEBSOCKET:
            # Whole simple text frames first, without wsproto (see _fastpath).
            messages, used = take_text_frames(data, self.session.message_limit)
            for text in messages:
                self._on_message(text)
                if self.state is not State.WEBSOCKET:
                    break  # the peer's data after our close frame is ignored, as in _on_fragment
        if self.state is State.CLOSED or used == len(data) > 0:
            return
        if used:
            data = data[used:]
        scanner.feed(data)
        ws.receive_data(data or None)
        self._drive_ws()

    def _drive_ws(self) -> None:
        ws = self._ws
        assert ws is not None
        for event in ws.events():
            if self.state is State.CLOSED:
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
        if self.state is not State.WEBSOCKET:
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
        if self._echo:
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
        self.state = State.CLOSED

    def session_closed(self, code: int, reason: str) -> None:
        """The session's transport side: send the close frame the session decided."""
        ws = self._ws
        if ws is None or self.state is not State.WEBSOCKET:
            return
        self.close_code = code
        if self.session.problem is not None:
            self.problem = self.session.problem
        self._write_ws(CloseConnection(code=code, reason=reason))
        self.state = State.CLOSING
        self.deadline = self.hub.clock.monotonic() + self._close_timeout

    def _write_ws(self, event: TextMessage | BytesMessage | Ping | Pong | CloseConnection) -> None:
        assert self._ws is not None
        # Once closing, wsproto refuses to send more; that is the protocol, not an error.
        with contextlib.suppress(LocalProtocolError):
            # Only a close frame must survive a slow consumer's dropped backlog.
            self.outbox.write(self._ws.send(event), pin=isinstance(event, CloseConnection))


def _head_size(request: h11.Request) -> int:
    return len(request.target) + sum(len(name) + len(value) + 4 for name, value in request.headers)


def _greeting(key: bytes) -> bytes:
    """The 101 response to an upgrade whose (validated) Sec-WebSocket-Key is ``key``.

    Written by hand rather than through h11: the session may still refuse the join (403,
    429), and h11 must then still be able to send that answer instead.
    """
    accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
