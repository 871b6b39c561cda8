"""The HTTP door's requests, decided by the session (a part of :class:`~relaycore.ClientSession`).

``GET /c/<channel>`` with a streaming ``Accept`` (:meth:`HTTPDoorSide._open_member`), and
``/s/<token>`` (:meth:`HTTPDoorSide._session_request`). The whole door is described in
:mod:`relaycore._http_sessions` and docs/transports.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from ._errors import HTTPError
from ._forms import MESSAGES, SSE, WireForm
from ._hooks import JoinAttempt, attempt_for
from ._http_sessions import SESSION_METHODS, SESSION_PREFIX, Poll, content_type, stream_form
from ._names import JoinOptions, parse_channel, parse_options
from ._outbox import Outbox
from ._session_later import LaterAnswers
from ._session_seams import Answer, Headers, method_not_allowed, origin
from ._texts import CLOSE_NORMAL, INVALID_JSON, ORIGIN_NOT_ALLOWED, SESSION_NOT_FOUND
from ._wire import encode

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["HTTPDoorSide"]

#: The transport a join over the HTTP door shows ``authorize``.
_TRANSPORTS = {SSE: "sse", MESSAGES: "long-poll"}
#: HTTP statuses of a message the hub did not relay, by drop reason (the body is its error text).
_DROPPED = {"rate": 429, "send_key": 403}


class HTTPDoorSide(LaterAnswers):
    """A session's HTTP door requests (see the module docstring)."""

    # The fields of the session this part sets (the rest of them: ClientSession's).
    __slots__ = ("namespace", "outbox", "stream", "stream_headers", "token")

    hub: Hub
    client: str
    namespace: str | None
    #: Where everything for this client goes (frames or whole messages).
    outbox: Outbox
    closing: tuple[int, str] | None

    if TYPE_CHECKING:

        def close(self, code: int, reason: str) -> None: ...

    def _init_http_door(self) -> None:
        #: This member's wire form when it came over plain HTTP (a stream's, or MESSAGES
        #: for long-poll), its answer's headers, and its token.
        self.stream: WireForm | None = None
        self.stream_headers: list[tuple[bytes, bytes]] = []
        self.token: str | None = None

    def _attempt(self, channel: str, options: JoinOptions, headers: Headers, transport: str) -> JoinAttempt | None:
        """What ``authorize`` is shown of this join (None: the host has no ``authorize``)."""
        if self.hub.hooks.authorize is None:
            return None
        return attempt_for(channel, options, headers, self.client, transport)

    def _streams(self, method: bytes, path: bytes, headers: Headers) -> bool:
        """Whether a request that asks for no upgrade joins a channel over the HTTP door."""
        return (
            method == b"GET"
            and path.startswith((b"/c/", b"/r/"))
            and self.hub.http.serving
            and stream_form(headers) is not None
        )

    def _door_request(
        self,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes,
        respond: Callable[[int, list[tuple[bytes, bytes]]], bytes] | None,
    ) -> Answer | None:
        """A request of the HTTP door: ``/s/<token>``, or a channel joined over it."""
        path, _, query = target.partition(b"?")
        if path.startswith(SESSION_PREFIX):
            answer = self._session_request(method, target[3:], body)
            return None if answer is None else answer.with_headers(self._cors)
        form = stream_form(headers)
        assert form is not None
        try:
            return self._open_member(form, path[3:], query, headers, respond)
        except HTTPError as exc:
            self._refused(exc)
            raise

    def _open_member(
        self,
        form: WireForm,
        raw_channel: bytes,
        query: bytes,
        headers: Headers,
        respond: Callable[[int, list[tuple[bytes, bytes]]], bytes] | None,
    ) -> Answer | None:
        """Join ``raw_channel`` over HTTP in ``form``; see the module docstring.

        A stream (SSE, NDJSON) goes on the session itself: its outbox becomes one of ``form``
        beginning with ``respond(200, headers)`` (the response head; None when the server
        sends it: ASGI, which reads ``self.stream_headers``), and None is returned as for a
        WebSocket opened. A long-poll member gets a session of its own; the answer is its first
        frames (None while the backplane decides: the session is answered later).
        """
        hub = self.hub
        registry = hub.http
        if not hub.origins.allows(origin(headers)):
            raise HTTPError(403, ORIGIN_NOT_ALLOWED)
        channel = parse_channel(raw_channel)
        self.namespace = hub.namespace(channel)
        options = parse_options(query)
        hub.admit_connection(self.client)
        token = registry.new_token()
        cors = hub.origins.cors(origin(headers))
        if cors:
            cors = [*cors, (b"access-control-expose-headers", b"relay-session")]
        answer_headers = [
            (b"content-type", content_type(form)),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            (b"relay-session", token.encode()),
            *cors,
        ]
        attempt = self._attempt(channel, options, headers, _TRANSPORTS.get(form, form.name))
        if form is MESSAGES:
            return self._park(channel, options, token, answer_headers, attempt)
        greeting = respond(200, answer_headers) if respond is not None else b""
        if form is SSE:
            greeting += b"event: session\ndata: " + encode({"token": token}) + b"\n\n"
        outbox = hub.new_outbox(form, self.outbox.door)
        outbox.peer = self.outbox.peer
        member = hub.join(channel, options, outbox, self, greeting, attempt)  # type: ignore[arg-type]
        self.outbox = outbox
        self.member = member
        self.stream = form
        self.stream_headers = answer_headers
        self.token = token
        registry.sessions[token] = self
        self.pending = member is None
        return None

    def _park(
        self,
        channel: str,
        options: JoinOptions,
        token: str,
        headers: list[tuple[bytes, bytes]],
        attempt: JoinAttempt | None,
    ) -> Answer | None:
        hub = self.hub
        registry = hub.http
        poll = Poll(registry, token, headers, hub.clock.monotonic())
        make: Callable[..., HTTPDoorSide] = type(self)  # the session class itself (ClientSession)
        member = make(hub, hub.new_outbox(MESSAGES, registry), poll, client=self.client)
        poll.member = member
        member.outbox.peer = poll
        member.namespace = self.namespace
        member.stream = MESSAGES
        member.token = token
        member.member = hub.join(channel, options, member.outbox, member, b"", attempt)  # type: ignore[arg-type]
        registry.sessions[token] = member
        registry.polls[token] = poll
        if member.member is None:
            member.pending = True
            poll.waiter = self
            self.pending = True
            self.awaiting = poll
            return None
        return poll.take()

    def _session_request(self, method: bytes, rest: bytes, body: bytes) -> Answer | None:
        """``/s/<token>[?...]``: poll (GET), send (POST) or leave (DELETE) as that member."""
        hub = self.hub
        raw_token, _, query = rest.partition(b"?")
        member = hub.http.sessions.get(raw_token.decode("latin-1"))
        if member is None and method in (b"GET", b"POST", b"DELETE"):
            return hub.forward_session(self, method, rest, body)  # a cluster: its node may hold it
        if member is None or (member.closing is not None and member.stream is not MESSAGES):
            raise HTTPError(404, SESSION_NOT_FOUND)
        if method == b"GET":
            poll = hub.http.polls.get(raw_token.decode("latin-1"))
            if poll is None:
                raise HTTPError(404, SESSION_NOT_FOUND)
            return poll.wait(self, hub.clock.monotonic())
        if member.closing is not None or member.member is None:
            raise HTTPError(404, SESSION_NOT_FOUND)
        if method == b"DELETE":
            member.close(CLOSE_NORMAL, "")
            return Answer(204, b"", [])
        if method != b"POST":
            raise method_not_allowed(SESSION_METHODS)
        params = parse_qs(query.decode("latin-1"), keep_blank_values=True)
        try:
            text = body.decode()
        except UnicodeDecodeError:
            raise HTTPError(400, INVALID_JSON) from None
        to = params.get("to")
        if to:
            text = "\x1f" + to[0] + "\x1f" + text
        dropped = hub.receive(member.member, text)
        if dropped is not None:
            reason, error = dropped
            if reason != "hook":  # the host dropped it: the sender is not told
                raise HTTPError(_DROPPED.get(reason, 400), error)
        if "close" in params:
            member.close(CLOSE_NORMAL, "")
        return Answer(204, b"", [])
