"""The HTTP door's members by token, and the long-poll ones parked in the hub.

The requests themselves are decided in :mod:`relaycore._http_door`; this part is what the
hub holds.

The HTTP door: channel members over plain HTTP, where WebSockets do not get through.

Theory of operation. A ``GET /c/<channel>?<options>`` that asks for no upgrade but accepts
a streaming type joins the channel as a WebSocket request would (every rule of PROTOCOL.md
applies: options, keys, reserved namespaces, the per-address connection rate, origins),
and the member gets the same frames, in a wire form chosen by the ``Accept`` header
(:func:`stream_form`):

- ``text/event-stream``: Server-Sent Events on this response. A named ``session`` event
  gives the token first, then each frame is one default event (:data:`relaycore.SSE`);
- ``application/x-ndjson``: one frame's JSON per line on this response (:data:`relaycore.NDJSON`);
- ``application/json``: long-poll. The member is parked here (:class:`Poll`); the answer is
  the array of its frames so far, and ``GET /s/<token>`` fetches the next ones, waiting up
  to ``[http] poll_wait`` seconds for at least one.

Every answer carries ``relay-session: <token>``: a random token (the hub's token source;
the transports give 144 bits), valid while its member is in the channel, never logged.
``POST /s/<token>`` sends the body as the member's message (``?to=<uid>``: to one member;
``?close``: then leave), ``DELETE /s/<token>`` leaves. :class:`HTTPSessions` (the hub's
``http``) holds the members by token; it is the :class:`~relaycore.Door` of the parked
long-poll outboxes: when one gets frames, the request waiting on it is answered.

A streaming member's close, keepalives and slow-consumer bound are the core's, as for a
WebSocket: its outbox is bounded the same way, a keepalive is its form's
(:meth:`~relaycore.WireForm.keepalive`) every ``[http] keepalive_interval`` seconds, and a
close the relay decides ends the stream with its form's close.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ._channel import Member
from ._config import HTTPConfig
from ._forms import MESSAGES, NDJSON, SSE, WireForm
from ._outbox import Outbox
from ._session_seams import Answer, Headers
from ._texts import CLOSE_GOING_AWAY, POLL_EXPIRED

__all__ = ["SESSION_METHODS", "SESSION_PREFIX", "HTTPSessions", "Poll", "content_type", "stream_form"]

#: The paths of a member's own endpoints: ``/s/<token>``.
SESSION_PREFIX = b"/s/"
#: The methods ``/s/<token>`` answers (a CORS preflight says them).
SESSION_METHODS = b"GET, POST, DELETE"

_MODES: dict[bytes, WireForm] = {
    b"text/event-stream": SSE,
    b"application/x-ndjson": NDJSON,
    b"application/json": MESSAGES,
}
_CONTENT_TYPES = {SSE: b"text/event-stream", NDJSON: b"application/x-ndjson", MESSAGES: b"application/json"}


def content_type(form: WireForm) -> bytes:
    """The ``content-type`` of a member's answers in ``form``."""
    return _CONTENT_TYPES[form]


class Waiter(Protocol):
    """A request waiting for a long-poll member's frames (a session of the connection that asked)."""

    pending: bool
    awaiting: Poll | None

    def answered(self, answer: Answer) -> None: ...


class Parked(Protocol):
    """A long-poll member's own session, as its :class:`Poll` sees it."""

    outbox: Outbox
    pending: bool
    member: Member | None
    closing: tuple[int, str] | None
    stream: WireForm | None

    def close(self, code: int, reason: str) -> None: ...


def stream_form(headers: Headers) -> WireForm | None:
    """The wire form a request's ``Accept`` asks for (the first the relay knows), or None."""
    for name, value in headers:
        if bytes(name).lower() == b"accept":
            for item in bytes(value).lower().split(b","):
                form = _MODES.get(item.partition(b";")[0].strip())
                if form is not None:
                    return form
    return None


class HTTPSessions:
    """The HTTP door's members by token; the door of the parked long-poll outboxes."""

    __slots__ = ("config", "polls", "sessions", "suffix", "tokens")

    def __init__(self, config: HTTPConfig) -> None:
        self.config = config
        #: Makes a token (None: no door gave one, and the HTTP door is off).
        self.tokens: Callable[[], str] | None = None
        #: The members by token (streaming and long-poll).
        self.sessions: dict[str, Parked] = {}
        #: The long-poll members by token.
        self.polls: dict[str, Poll] = {}
        #: What ends every token (a cluster node: its own name, so that any node finds it).
        self.suffix = ""

    @property
    def serving(self) -> bool:
        """Whether the door is on (enabled, and a token source given)."""
        return self.config.enabled and self.tokens is not None

    def new_token(self) -> str:
        assert self.tokens is not None
        token = self.tokens() + self.suffix
        while token in self.sessions:
            token = self.tokens() + self.suffix
        return token

    def discard(self, token: str) -> None:
        """The member of ``token`` is gone: forget the token."""
        self.sessions.pop(token, None)
        self.polls.pop(token, None)

    def wake(self, outboxes: list[Outbox]) -> None:
        """The :class:`~relaycore.Door` side: parked outboxes got frames."""
        for outbox in outboxes:
            poll: Poll = outbox.peer
            poll.ready()

    def tick(self, now: float) -> None:
        """A long-poll member that has not polled for ``poll_timeout`` seconds has left."""
        timeout = self.config.poll_timeout
        for poll in [p for p in self.polls.values() if getattr(p.waiter, "remote", False)]:
            # A request from another node gives up after poll_wait: answer [] first, so
            # that no frame is taken for a request nobody waits for any more.
            if now - poll.seen > max(0.0, self.config.poll_wait - 1.0) and poll.waiter is not None:
                waiter, poll.waiter = poll.waiter, None
                waiter.answered(Answer(200, b"[]", poll.headers))
        for poll in [p for p in self.polls.values() if p.waiter is None and now - p.seen > timeout]:
            if poll.ended:  # its last frames were never fetched
                self.discard(poll.token)
            else:
                poll.seen = now
                poll.member.close(CLOSE_GOING_AWAY, POLL_EXPIRED)


class Poll:
    """A parked long-poll member: its session's transport, and the request waiting on it."""

    __slots__ = ("ended", "headers", "member", "registry", "seen", "token", "waiter")

    def __init__(self, registry: HTTPSessions, token: str, headers: list[tuple[bytes, bytes]], now: float) -> None:
        self.registry = registry
        self.token = token
        #: The headers of every answer to a poll.
        self.headers = headers
        #: The member's own session (set once made).
        self.member: Parked
        #: The request waiting for frames (a session of the connection that asked).
        self.waiter: Waiter | None = None
        #: When the member last polled (monotonic seconds).
        self.seen = now
        #: The relay closed the member: what is left goes to the next poll, then 404.
        self.ended = False

    def take(self) -> Answer:
        """The frames queued so far, as one JSON array (the last ones: the token ends)."""
        if self.ended:
            self.registry.discard(self.token)
        chunks = self.member.outbox.take()
        return Answer(200, b"[" + b",".join(chunks) + b"]", self.headers)

    def ready(self) -> None:
        """Frames came (or the end): answer the waiting request, if any."""
        waiter = self.waiter
        if waiter is not None and (self.member.outbox or self.ended) and not self.member.pending:
            self.waiter = None
            waiter.answered(self.take())

    def wait(self, session: Waiter, now: float) -> Answer | None:
        """``session`` polls: the frames now, or None (``session`` waits; see :meth:`ready`)."""
        self.seen = now
        if self.waiter is not None:  # a newer poll supersedes the one waiting
            self.waiter.answered(Answer(200, b"[]", self.headers))
        if self.member.outbox or self.ended:
            self.waiter = None
            return self.take()
        self.waiter = session
        session.pending = True
        session.awaiting = self
        return None

    def give_up(self, session: object, now: float) -> Answer:
        """``session`` waited ``poll_wait`` seconds for nothing: answer ``[]``."""
        if self.waiter is session:
            self.waiter = None
        self.seen = now
        return Answer(200, b"[]", self.headers)

    # -- the member session's transport -------------------------------------------------

    def session_opened(self) -> None:
        self.ready()

    def session_refused(self, answer: Answer) -> None:
        self.registry.discard(self.token)
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            waiter.answered(answer)

    def session_answered(self, answer: Answer) -> None:
        pass

    def session_closed(self, code: int, reason: str) -> None:
        self.ended = True
        self.ready()
