"""The answers a session gives later: joins a backplane decides, pushes a cluster counts,
long polls that wait for frames (the :class:`~relaycore.ClientSession`'s side of them).

A transport hands a request to the session and gets None back when the answer must wait:
the session (:attr:`~relaycore.ClientSession.pending`) then tells the transport through
``session_opened()``, ``session_refused(answer)`` or ``session_answered(answer)`` once it is
decided, or the transport's own bound runs out first (:meth:`LaterAnswers.push_timed_out`,
:meth:`LaterAnswers.poll_timed_out`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._channel import Member
from ._endpoints import pushed
from ._errors import HTTPError
from ._session_seams import Answer, SessionTransport
from ._texts import CLUSTER_UNAVAILABLE

if TYPE_CHECKING:
    from ._http_sessions import Poll
    from ._hub import Hub

__all__ = ["LaterAnswers"]


class LaterAnswers:
    """The decisions that come after the request (a part of :class:`~relaycore.ClientSession`)."""

    # The fields these decisions share with the rest of the session (set by its __init__).
    __slots__ = ("_cors", "_transport", "awaiting", "gone", "member", "pending")

    hub: Hub
    pending: bool
    gone: bool
    member: Member | None
    awaiting: Poll | None
    _transport: SessionTransport
    _cors: list[tuple[bytes, bytes]]

    if TYPE_CHECKING:

        def _refused(self, exc: HTTPError) -> None: ...
        def refusal(self, exc: HTTPError, *, json: bool = False) -> Answer: ...

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

    def answered(self, answer: Answer) -> None:
        """A request decided later (a long poll) is answered."""
        self.pending = False
        self.awaiting = None
        if not self.gone:
            self._transport.session_answered(answer.with_headers(self._cors))

    def poll_timed_out(self) -> Answer:
        """The answer when a long poll waited ``[http] poll_wait`` seconds for nothing: ``[]``."""
        self.pending = False
        poll, self.awaiting = self.awaiting, None
        assert poll is not None
        return poll.give_up(self, self.hub.clock.monotonic()).with_headers(self._cors)

    def pushed(self, recipients: int) -> None:
        """The cluster delivered the pending push (the :class:`~relaycore.PushWaiter` side)."""
        self.pending = False
        self.hub.counters.push(200)
        if not self.gone:
            self._transport.session_answered(pushed(recipients, self._cors))

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
