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

Every rule of PROTOCOL.md that a client meets is decided here and only here: routes and
methods, the per-address connection rate, keys (through the hub), the client address behind
trusted proxies, the message size and its 1009, push validation and its JSON refusals,
``/health`` and ``/version``, slow consumers, the shutdown close. A framing adapter (the
h11 + wsproto :class:`~relaycore.Connection`) or a server that frames for us (ASGI) only
moves bytes and messages, and asks the session whenever it needs a decision.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Protocol
from urllib.parse import unquote_to_bytes

import msgspec

from ._channel import Member
from ._errors import HTTPError
from ._hub import Hub
from ._limits import client_address
from ._names import parse_channel, parse_options
from ._outbox import Outbox
from ._texts import (
    BODY_TOO_LARGE,
    CLOSE_ABNORMAL,
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLUSTER_UNAVAILABLE,
    INTERNAL_ERROR,
    INVALID_JSON_BODY,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    ORIGIN_NOT_ALLOWED,
    SHUTTING_DOWN,
    SLOW_CONSUMER,
    TOO_BIG,
    UPGRADE_REQUIRED,
)
from ._wire import parse_json

__all__ = [
    "Answer",
    "ClientSession",
    "Headers",
    "Routes",
    "SessionTransport",
    "__version__",
]

__version__ = "0.1.0"

TEXT_PLAIN = b"text/plain; charset=utf-8"
APPLICATION_JSON = b"application/json"

Headers = Sequence[tuple[bytes, bytes]]
"""Request headers as (name, value) pairs; names in lower case, as h11 and ASGI give them."""

#: The methods each of the relay's plain HTTP endpoints takes (a page's CORS preflight is told).
CORS_METHODS = {b"/health": b"GET, HEAD", b"/version": b"GET, HEAD"}
PUSH_METHODS = b"POST"

#: Paths that are the relay's own whether or not it serves them (``/echo`` when disabled):
#: never handed to :data:`Routes`, in any percent-encoding.
RELAY_PATHS = (b"/health", b"/version", b"/echo")
RELAY_PREFIXES = (b"/c/", b"/r/", b"/push/")


class Answer:
    """An HTTP answer the session decided: a response, or the refusal of an upgrade."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        #: Header pairs: content-type first, then any the decision adds (allow, retry-after).
        #: The transport adds content-length and its own connection handling.
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"<Answer {self.status} {self.body[:60]!r}>"


def _method_not_allowed(allowed: bytes) -> HTTPError:
    return HTTPError(405, METHOD_NOT_ALLOWED, [(b"allow", allowed)])


def _answer(status: int, body: bytes, content_type: bytes = TEXT_PLAIN, *, cors: Headers = ()) -> Answer:
    return Answer(status, body, [(b"content-type", content_type), *cors])


Routes = Callable[[bytes, bytes, Headers], "Answer | None"]
"""A transport's own HTTP paths: ``routes(method, path, headers)`` answers a plain request
(``path`` as sent, still percent-encoded, without the query) or returns None (404)."""


class SessionTransport(Protocol):
    """What a session needs of whatever carries its client (a framing adapter, an ASGI link)."""

    def session_closed(self, code: int, reason: str) -> None:
        """The relay closes the client: send what is queued, then the close (code, reason)."""

    def session_opened(self) -> None:
        """A join the backplane decided later was admitted: open the WebSocket now."""

    def session_refused(self, answer: Answer) -> None:
        """A join the backplane decided later was refused: answer the upgrade with ``answer``."""

    def session_answered(self, answer: Answer) -> None:
        """A plain request the backplane decided later (an HTTP push): answer it with ``answer``."""


class ClientSession:
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
        "_cors",
        "_peer_address",
        "_transport",
        "client",
        "closing",
        "echo",
        "echo_endpoint",
        "gone",
        "hub",
        "member",
        "message_limit",
        "namespace",
        "outbox",
        "pending",
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
    ) -> Answer | None:
        """Decide one request; ``upgrade`` when it asks for a WebSocket.

        ``handshake`` (framing adapters) gets the validated ``Sec-WebSocket-Key`` and returns
        the bytes that must precede everything (the 101 response); it is called only once
        the request is otherwise acceptable. ``extended_connect``: the WebSocket was asked
        for with an HTTP/2 (or HTTP/3) extended CONNECT (RFC 8441), which the server checked;
        it has none of HTTP/1.1's upgrade headers. Returns None when a WebSocket opened (the
        member joined; the handshake bytes and the self-join are in the outbox), else the answer.
        """
        self.client = client_address(self._peer_address, headers, self.hub.trusted_proxies)
        path, _, query = target.partition(b"?")
        upgrade = upgrade or extended_connect
        push = path.startswith(b"/push/")
        if push or path in CORS_METHODS:
            self._cors = self.hub.origins.cors(_origin(headers))
        try:
            if path.startswith((b"/c/", b"/r/")) or (path == b"/echo" and self.echo_endpoint):
                try:
                    channel = path[3:] if path.startswith((b"/c/", b"/r/")) else None
                    self._open(method, channel, query, headers, upgrade, handshake, extended_connect)
                except HTTPError as exc:
                    self._refused(exc)
                    raise
                return None
            if method == b"OPTIONS" and (push or path in CORS_METHODS):
                return self._preflight(headers, PUSH_METHODS if push else CORS_METHODS[path])
            if push:
                return self._push(method, path[6:], headers, body)  # None: the cluster answers later
            return self._plain(method, path, headers, upgrade)
        except HTTPError as exc:
            if push:
                self.hub.counters.push(exc.status)
            return self.refusal(exc, json=push)

    def _preflight(self, headers: Headers, methods: bytes) -> Answer:
        """A page's CORS preflight (``OPTIONS``) of a plain endpoint: 204, with the CORS
        headers when the page's origin is allowed (none otherwise: the browser then stops)."""
        self._cors = self.hub.origins.preflight(_origin(headers), methods + b", OPTIONS")
        return Answer(204, b"", [(b"allow", methods + b", OPTIONS"), *self._cors])

    def _refused(self, exc: HTTPError) -> None:
        """Count (and keep, for the log) a refused WebSocket upgrade."""
        self.hub.counters.refusal(exc.status)
        self.refused = exc.status
        self.problem = exc.message

    def refusal(self, exc: HTTPError, *, json: bool = False) -> Answer:
        """The answer to a refused request (JSON for HTTP push, as PROTOCOL.md section 5 says)."""
        if json:
            answer = _answer(exc.status, msgspec.json.encode({"ok": False, "error": exc.message}), APPLICATION_JSON)
        else:
            answer = _answer(exc.status, exc.message.encode())
        answer.headers += exc.headers
        answer.headers += self._cors
        return answer

    def body_too_large(self, target: bytes, headers: Headers = ()) -> Answer:
        """The answer to a request whose body is over :attr:`message_limit` (413)."""
        push = target.startswith(b"/push/")
        if push:
            self.hub.counters.push(413)
            self._cors = self.hub.origins.cors(_origin(headers))
        return self.refusal(HTTPError(413, BODY_TOO_LARGE), json=push)

    @staticmethod
    def upgrade_required() -> HTTPError:
        """The refusal of a plain request to a WebSocket endpoint (426)."""
        return HTTPError(426, UPGRADE_REQUIRED, [(b"upgrade", b"websocket"), (b"connection", b"Upgrade")])

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
        if method != b"GET":
            raise _method_not_allowed(b"GET")
        if not upgrade:
            raise self.upgrade_required()
        # HTTP/1.1's upgrade headers; an extended CONNECT has none (its server checked it).
        key = b"" if extended_connect else _upgrade_key(headers)
        if not self.hub.origins.allows(_origin(headers)):
            raise HTTPError(403, ORIGIN_NOT_ALLOWED)
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
        self.member = self.hub.join(channel, options, self.outbox, self, greeting)
        if self.member is None:
            self.pending = True

    def joined(self, member: Member) -> None:
        """The backplane admitted the pending join (the :class:`~relaycore.JoiningSession` side)."""
        self.pending = False
        if self.gone:  # the client left while it waited
            self.hub.leave(member)
            return
        self.member = member
        self._transport.session_opened()

    def join_refused(self, error: HTTPError) -> None:
        """The backplane refused the pending join."""
        self.pending = False
        self._refused(error)
        if not self.gone:
            self._transport.session_refused(self.refusal(error))

    def _push(self, method: bytes, raw_channel: bytes, headers: Headers, body: bytes) -> Answer | None:
        if method != b"POST":
            raise _method_not_allowed(b"POST")
        if not self.hub.origins.allows(_origin(headers)):
            raise HTTPError(403, ORIGIN_NOT_ALLOWED)  # a page may not push, even where it need not read
        channel = parse_channel(raw_channel)
        key = next((value for name, value in headers if name == b"x-send-key"), None)
        if len(body) > self.message_limit:
            raise HTTPError(413, BODY_TOO_LARGE)
        message = parse_json(body)
        if message is None:
            raise HTTPError(400, INVALID_JSON_BODY)
        text_key = None if key is None else bytes(key).decode("latin-1")
        reached = self.hub.push(channel, message, text_key, self.client, self)
        if reached is None:  # a cluster asks Redis; pushed() answers
            self.pending = True
            return None
        self.hub.counters.push(200)
        return self._pushed(reached)

    def _pushed(self, recipients: int) -> Answer:
        body = msgspec.json.encode({"ok": True, "recipients": recipients})
        return _answer(200, body, APPLICATION_JSON, cors=self._cors)

    def pushed(self, recipients: int) -> None:
        """The cluster delivered the pending push (the :class:`~relaycore.PushWaiter` side)."""
        self.pending = False
        self.hub.counters.push(200)
        if not self.gone:
            self._transport.session_answered(self._pushed(recipients))

    def push_failed(self, error: HTTPError) -> None:
        """The cluster could not make the pending push."""
        self.pending = False
        self.hub.counters.push(error.status)
        if not self.gone:
            self._transport.session_answered(self.refusal(error, json=True))

    def push_timed_out(self) -> Answer:
        """The answer when a pending push waited too long (the transport's bound): 503."""
        self.pending = False
        self.gone = True
        self.hub.counters.push(503)
        return self.refusal(HTTPError(503, CLUSTER_UNAVAILABLE, [(b"retry-after", b"1")]), json=True)

    def _plain(self, method: bytes, path: bytes, headers: Headers, upgrade: bool) -> Answer:
        hub = self.hub
        if path == b"/version" and method in (b"GET", b"HEAD"):
            return _answer(200, f"relaycore {__version__}\n".encode(), cors=self._cors)
        if path == b"/health" and method in (b"GET", b"HEAD"):
            health = {"status": "ok", "version": __version__, **hub.health()}
            return _answer(200, msgspec.json.encode(health), APPLICATION_JSON, cors=self._cors)
        if self.routes is not None and not upgrade and not _relay_path(path):
            answer = self.routes(method, path, headers)
            if answer is not None:
                return answer
        raise HTTPError(404, NOT_FOUND)

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
        member = self.member
        if member is not None:
            self._count_close(CLOSE_ABNORMAL if code is None else code)
            self.hub.leave(member)

    def _count_close(self, code: int) -> None:
        """Count how a member's WebSocket ended, once: the first close, the relay's or the client's."""
        member = self.member
        if member is not None and not self._close_counted:
            self._close_counted = True
            member.channel.tally.closed(code)


def _relay_path(path: bytes) -> bool:
    """Whether ``path`` (as sent, or percent-decoded) is one of the relay's own."""
    if path in RELAY_PATHS or path.startswith(RELAY_PREFIXES):
        return True
    if b"%" not in path:
        return False
    decoded = unquote_to_bytes(path)
    return decoded in RELAY_PATHS or decoded.startswith(RELAY_PREFIXES)


def message_size(data: str | bytes, room: int) -> int:
    """A message's size on the wire (UTF-8 for text): exact while it fits in ``room``, at
    least ``room + 1`` beyond (no encode is needed to know it is too big)."""
    if isinstance(data, bytes) or data.isascii() or len(data) > room:
        return len(data)  # str.isascii() is O(1) in CPython: no encode for ASCII text
    return len(data.encode())


def _origin(headers: Headers) -> bytes | None:
    """The request's ``Origin`` header (None: no page sent it)."""
    for name, value in headers:
        if name == b"origin":
            return bytes(value)
    return None


def _upgrade_key(headers: Headers) -> bytes:
    """Check a WebSocket upgrade's own headers (docs/protocol.md, section 4); return its key.

    A server that frames for us has done most of this already, but not every server checks
    the key's form.
    """
    joined: dict[bytes, bytes] = {}
    for name, value in headers:
        name = bytes(name).lower()
        joined[name] = joined[name] + b"," + bytes(value) if name in joined else bytes(value)
    if joined.get(b"upgrade", b"").strip().lower() != b"websocket":
        raise ClientSession.upgrade_required()
    tokens = {t.strip().lower() for t in joined.get(b"connection", b"").split(b",")}
    if b"upgrade" not in tokens:
        # An Upgrade header means nothing without the connection option (RFC 9110, 7.8):
        # a plain GET, as every ASGI server takes it too.
        raise ClientSession.upgrade_required()
    if joined.get(b"sec-websocket-version", b"").strip() != b"13":
        raise HTTPError(426, "Unsupported WebSocket version.", [(b"sec-websocket-version", b"13")])
    key = joined.get(b"sec-websocket-key", b"").strip()
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        valid = False
    if not valid:
        raise HTTPError(400, "Invalid Sec-WebSocket-Key.")
    return key
