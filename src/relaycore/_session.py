"""The session layer: one client's dealings with the relay, whatever carries them.

Theory of operation. A transport makes one :class:`ClientSession` per client and hands it
what any transport can give: a request (method, target, headers, body; for a WebSocket
upgrade, a way to build the handshake answer), then whole messages, the peer's close, and
the loss of the connection. The session answers with decisions and effects:

- an :class:`Answer` (status, headers, body) for every plain HTTP request and for every
  refused upgrade; ``None`` from :meth:`ClientSession.request` when a WebSocket opened, with
  what must go first (the handshake answer, the self-join) already in the outbox, or when
  the hub's backplane decides the join later (:attr:`ClientSession.pending`): the session
  then calls the transport's ``session_opened()`` or ``session_refused(answer)``;
- messages for this client and for others, put into outboxes through the hub;
- a close, handed to the transport's ``session_closed(code, reason)`` exactly once.

The transport is any object with those methods (:class:`SessionTransport`). It may also
hand the session :data:`Routes`: HTTP paths of its own (metrics, static files), asked for a
plain request only once the relay's own paths (``/c/``, ``/r/``, ``/push/``, ``/health``,
``/version``, ``/echo``) did not take it.

Every rule of PROTOCOL.md that a client meets is decided in the session layer and only
there: routes and methods, the per-address connection rate, keys (through the hub), the
client address behind trusted proxies, the message size and its 1009, slow consumers, the
shutdown close here; what an upgrade must show in :mod:`relaycore._upgrade`; push
validation and its JSON refusals, ``/health``, ``/version`` and CORS preflights in
:mod:`relaycore._endpoints`; the answers and the transport's side in
:mod:`relaycore._session_seams`. A framing adapter (the h11 + wsproto
:class:`~relaycore.Connection`) or a server that frames for us (ASGI) only moves bytes and
messages, and asks the session whenever it needs a decision.
"""

from __future__ import annotations

from collections.abc import Callable

from ._channel import Member
from ._endpoints import CORS_METHODS, PUSH_METHODS, plain, preflight, push_request, pushed
from ._errors import HTTPError
from ._forms import MESSAGES
from ._http_door import HTTPDoorSide
from ._http_sessions import SESSION_METHODS, SESSION_PREFIX, Poll
from ._hub import Hub
from ._limits import client_address
from ._names import parse_channel, parse_options
from ._outbox import Outbox
from ._session_seams import Answer, Headers, Routes, SessionTransport, origin, refusal
from ._texts import (
    BODY_TOO_LARGE,
    CLOSE_ABNORMAL,
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    INTERNAL_ERROR,
    SHUTTING_DOWN,
    SLOW_CONSUMER,
    TOO_BIG,
)
from ._upgrade import check_upgrade, upgrade_required

__all__ = [
    "Answer",
    "ClientSession",
    "Headers",
    "Routes",
    "SessionTransport",
    "__version__",
]

__version__ = "0.1.0"


class ClientSession(HTTPDoorSide):
    """One client of the relay, decided framing-neutrally.

    >>> from relaycore import Config, Hub, MessageOutbox
    >>> from relaycore.testing import FakeClock, seeded_uids
    >>> hub = Hub(Config(), FakeClock(), seeded_uids(1))
    >>> class Link:  # the transport's side: here, nothing to do
    ...     def session_closed(self, code, reason): pass
    ...     def session_opened(self): pass
    ...     def session_refused(self, answer): pass
    >>> session = ClientSession(hub, MessageOutbox(1 << 20, hub.ready), Link())
    >>> upgrade = [(b"upgrade", b"websocket"), (b"connection", b"Upgrade"), (b"sec-websocket-version", b"13"),
    ...            (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ==")]
    >>> session.request(b"GET", b"/c/room?alias=Ann", upgrade, upgrade=True) is None
    True
    >>> session.outbox.take()[0][:30]
    b'{"type":"join","self":true,"ui'
    >>> session.request(b"GET", b"/version", []).body
    b'relaycore 0.1.0\\n'
    """

    __slots__ = (
        "_close_counted",
        "_peer_address",
        "client",
        "closing",
        "echo",
        "echo_endpoint",
        "hub",
        "message_limit",
        "problem",
        "refused",
        "routes",
    )

    def __init__(
        self,
        hub: Hub,
        outbox: Outbox,
        transport: SessionTransport,
        *,
        client: str = "",
        echo_endpoint: bool | None = None,
        routes: Routes | None = None,
    ) -> None:
        self.hub = hub
        #: Where everything for this client goes (frames or whole messages).
        self.outbox = outbox
        self._transport = transport
        #: A join is waiting for the backplane's decision.
        self.pending = False
        #: The client went away (it may still have a join pending).
        self.gone = False
        #: The address the per-client limits count (the forwarded client's, once a request
        #: from a trusted proxy says who that is).
        self.client = client
        self._peer_address = client
        #: The channel membership, once a WebSocket opened.
        self.member: Member | None = None
        #: True once the opt-in ``/echo`` endpoint opened (no channel; the adapter echoes).
        self.echo = False
        #: The close the relay decided (code, reason), once it did.
        self.closing: tuple[int, str] | None = None
        #: Why the client was closed badly (a limit, a policy) or refused, for the log.
        self.problem: str | None = None
        #: The HTTP status of a refused upgrade, for the log.
        self.refused: int | None = None
        #: The namespace label of the channel asked for (see :meth:`Hub.namespace`), once known.
        self.namespace: str | None = None
        #: The transport's own HTTP paths, asked after the relay's own.
        self.routes = routes
        self._close_counted = False
        #: The HTTP door: this member's form, answer headers and token (HTTPDoorSide), and
        #: the long-poll member this request waits on.
        self._init_http_door()
        self.awaiting: Poll | None = None
        #: The CORS headers of this request's answers (the plain endpoints only), once known.
        self._cors: list[tuple[bytes, bytes]] = []
        #: The largest message (WebSocket, or HTTP push body) a client may send, in bytes.
        self.message_limit = hub.config.limits.max_message_bytes
        #: Whether this door serves the opt-in ``/echo`` endpoint (the config's by default).
        self.echo_endpoint = hub.config.server.echo_endpoint if echo_endpoint is None else echo_endpoint

    def __repr__(self) -> str:
        return f"<ClientSession {self.client or '?'} {self.member!r}>"

    # -- requests -----------------------------------------------------------------------

    def request(
        self,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes = b"",
        *,
        upgrade: bool = False,
        handshake: Callable[[bytes], bytes] | None = None,
        extended_connect: bool = False,
        respond: Callable[[int, list[tuple[bytes, bytes]]], bytes] | None = None,
    ) -> Answer | None:
        """Decide one request; ``upgrade`` when it asks for a WebSocket.

        ``handshake`` (framing adapters) gets the validated ``Sec-WebSocket-Key`` and returns
        the bytes that must precede everything (the 101 response); it is called only once
        the request is otherwise acceptable. ``extended_connect``: the WebSocket was asked
        for with an HTTP/2 (or HTTP/3) extended CONNECT (RFC 8441), which the server checked;
        it has none of HTTP/1.1's upgrade headers. Returns None when a WebSocket opened (the
        member joined; the handshake bytes and the self-join are in the outbox), else the answer.

        A plain ``GET`` of a channel that accepts a streaming type joins over the HTTP door
        (:mod:`relaycore._http_door`): a stream sets :attr:`stream` and returns None, its
        outbox (a new one, of the stream's form) beginning with ``respond(status, headers)``,
        the response head a framing adapter writes (None: the server sends it).
        """
        self.client = client_address(self._peer_address, headers, self.hub.trusted_proxies)
        path, _, query = target.partition(b"?")
        upgrade = upgrade or extended_connect
        push = path.startswith(b"/push/")
        door = path.startswith(SESSION_PREFIX)
        if push or door or path in CORS_METHODS:
            self._cors = self.hub.origins.cors(origin(headers))
        try:
            if (door and method != b"OPTIONS") or (not upgrade and self._streams(method, path, headers)):
                return self._door_request(method, target, headers, body, respond)
            if path.startswith((b"/c/", b"/r/")) or (path == b"/echo" and self.echo_endpoint):
                try:
                    channel = path[3:] if path.startswith((b"/c/", b"/r/")) else None
                    self._open(method, channel, query, headers, upgrade, handshake, extended_connect)
                except HTTPError as exc:
                    self._refused(exc)
                    raise
                return None
            if method == b"OPTIONS" and (push or door or path in CORS_METHODS):
                methods = PUSH_METHODS if push else SESSION_METHODS if door else CORS_METHODS[path]
                answer, self._cors = preflight(self.hub, headers, methods)
                return answer
            if push:
                return self._push(method, path[6:], headers, body)  # None: the cluster answers later
            return plain(
                self.hub, self.routes, method, path, headers, upgrade=upgrade, version=__version__, cors=self._cors
            )
        except HTTPError as exc:
            if push:
                self.hub.counters.push(exc.status)
            return self.refusal(exc, json=push)

    def _refused(self, exc: HTTPError) -> None:
        """Count (and keep, for the log) a refused WebSocket upgrade."""
        self.hub.counters.refusal(exc.status)
        self.refused = exc.status
        self.problem = exc.message

    def refusal(self, exc: HTTPError, *, json: bool = False) -> Answer:
        """The answer to a refused request (JSON for HTTP push, as PROTOCOL.md section 5 says)."""
        return refusal(exc, self._cors, json=json)

    def body_too_large(self, target: bytes, headers: Headers = ()) -> Answer:
        """The answer to a request whose body is over :attr:`message_limit` (413)."""
        push = target.startswith(b"/push/")
        if push:
            self.hub.counters.push(413)
            self._cors = self.hub.origins.cors(origin(headers))
        return self.refusal(HTTPError(413, BODY_TOO_LARGE), json=push)

    @staticmethod
    def upgrade_required() -> HTTPError:
        """The refusal of a plain request to a WebSocket endpoint (426)."""
        return upgrade_required()

    def _open(
        self,
        method: bytes,
        raw_channel: bytes | None,
        query: bytes,
        headers: Headers,
        upgrade: bool,
        handshake: Callable[[bytes], bytes] | None,
        extended_connect: bool,
    ) -> None:
        """Open a WebSocket: join ``raw_channel``, or (None) the opt-in ``/echo`` endpoint."""
        key = check_upgrade(method, headers, self.hub.origins, upgrade=upgrade, extended_connect=extended_connect)
        greeting = handshake(key) if handshake is not None else b""
        channel = parse_channel(raw_channel) if raw_channel is not None else None
        if channel is not None:
            self.namespace = self.hub.namespace(channel)
        options = parse_options(query)
        if channel is None:
            # /echo is for conformance suites, which open hundreds of connections a second:
            # the per-address connection rate guards the channels only.
            self.outbox.write(greeting)
            self.echo = True
            return
        self.hub.admit_connection(self.client)
        attempt = self._attempt(channel, options, headers, "websocket")
        self.member = self.hub.join(channel, options, self.outbox, self, greeting, attempt)
        if self.member is None:
            self.pending = True

    def _push(self, method: bytes, raw_channel: bytes, headers: Headers, body: bytes) -> Answer | None:
        channel, message, key = push_request(self.hub, method, raw_channel, headers, body, self.message_limit)
        reached = self.hub.push(channel, message, key, self.client, self)
        if reached is None:  # a cluster asks Redis; pushed() answers
            self.pending = True
            return None
        self.hub.counters.push(200)
        return pushed(reached, self._cors)

    # -- a WebSocket --------------------------------------------------------------------

    def message(self, data: str | bytes) -> None:
        """One whole message from the client (``bytes``: a binary message).

        Over :attr:`message_limit` (UTF-8 bytes) it is not relayed: the client is closed 1009.
        """
        limit = self.message_limit
        if len(data) * 4 > limit and message_size(data, limit) > limit:
            self.too_big()
        elif self.member is not None and self.closing is None:
            self.hub.receive(self.member, data)

    def too_big(self) -> None:
        """The client's message is over :attr:`message_limit`: close 1009."""
        self._dropped("size")
        self.close(CLOSE_TOO_BIG, TOO_BIG)

    def slow_consumer(self) -> None:
        """The client is owed more than ``outbound_buffer_bytes`` (its own pongs, echoes)."""
        self._dropped("slow_consumer")
        self.close(CLOSE_POLICY, SLOW_CONSUMER)

    def _dropped(self, reason: str) -> None:
        """Count a drop decided here (a member's first: the close that follows ends it)."""
        member = self.member
        if member is not None and self.closing is None:
            member.channel.tally.dropped[reason] += 1

    def shutdown(self) -> None:
        """The relay is going away: close 1001."""
        self.close(CLOSE_GOING_AWAY, SHUTTING_DOWN)

    def fail(self) -> None:
        """A bug while serving this client: close 1011 (the others carry on)."""
        self.close(CLOSE_INTERNAL_ERROR, INTERNAL_ERROR)

    def close(self, code: int, reason: str) -> None:
        """Close on the relay's initiative: the member leaves (the others are told), then
        the transport's ``session_closed`` sends the close. Only the first close counts."""
        member = self.member
        if member is not None and member.joined:
            self.hub.kick(member, code, reason)  # calls kick() below after the leave
        else:
            self.kick(code, reason)

    def kick(self, code: int, reason: str) -> None:
        """The hub's side (the :class:`~relaycore.Session` protocol): the member was removed."""
        if self.closing is not None:
            return
        self.closing = (code, reason)
        if self.token is not None and self.stream is not MESSAGES:
            self.hub.http.discard(self.token)  # a long-poll member's last frames are still fetched
        self._count_close(code)
        if code not in (CLOSE_NORMAL, CLOSE_GOING_AWAY):
            self.problem = reason
        if self.outbox.overflowed:
            # A slow consumer: its backlog would only delay the close.
            self.outbox.drop_backlog()
        self._transport.session_closed(code, reason)

    def leave(self, code: int | None = None) -> None:
        """The client is gone (it closed, or the connection was lost): leave the channel.

        ``code`` is the close code the client sent, if it sent one (None: the connection
        was lost, counted as 1006 unless the relay had closed it already).
        """
        self.gone = True
        if self.token is not None:
            self.hub.http.discard(self.token)
        member = self.member
        if member is not None:
            self._count_close(CLOSE_ABNORMAL if code is None else code)
            member.left = code
            self.hub.leave(member)

    def _count_close(self, code: int) -> None:
        """Count how a member's WebSocket ended, once: the first close, the relay's or the client's."""
        member = self.member
        if member is not None and not self._close_counted:
            self._close_counted = True
            member.channel.tally.closed(code)


def message_size(data: str | bytes, room: int) -> int:
    """A message's size on the wire (UTF-8 for text): exact while it fits in ``room``, at
    least ``room + 1`` beyond (no encode is needed to know it is too big)."""
    if isinstance(data, bytes) or data.isascii() or len(data) > room:
        return len(data)  # str.isascii() is O(1) in CPython: no encode for ASCII text
    return len(data.encode())
