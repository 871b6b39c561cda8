"""A member behind any door: the sans-I/O half a third-party transport drives.

Theory of operation. A door that is not HTTP (a raw TCP line protocol, a message queue, a
test double) still wants every rule of the relay: the join's options and keys, presence,
rate and size limits, the slow-consumer bound, keepalives, the close. :class:`Stream` is
all of that for one client, with no I/O: the door makes one per client with its wire form
(:class:`~relaycore.WireForm`) and itself as the outbox's :class:`~relaycore.Door`, then

- :meth:`Stream.join` with a channel and its options (the query string of a WebSocket URL),
  from a client address: the member's self-join is in the outbox (or, when the backplane
  decides later, :attr:`Stream.pending` until it does); a refusal raises
  :class:`~relaycore.HTTPError` with the protocol's status and text;
- :meth:`Stream.message` for each whole message the client sends (its JSON text, or
  ``\\x1f<uid>\\x1f<JSON>`` for one member);
- :meth:`Stream.lost` when the client is gone;
- :meth:`Stream.tick` when ``deadline`` has passed: a keepalive in the form every
  ``[http] keepalive_interval`` seconds.

After each of those calls (and in its :meth:`~relaycore.Door.wake`) the door writes what
the outbox holds (``view()`` and ``consume(n)``, or ``take()``); the members of other doors
it reached are handed to their own doors by :meth:`Hub.wake <relaycore.Hub.wake>`. Once
:attr:`Stream.closed` is set (the relay closed the member: a slow consumer, a rate-limit
ban, shutdown; its form's close is the last bytes queued), the door ends the connection
when the outbox is written out (:attr:`Stream.finished`).
"""

from __future__ import annotations

from ._forms import WireForm
from ._hub import Hub
from ._names import parse_channel, parse_options
from ._outbox import Door
from ._session import ClientSession
from ._session_seams import Answer, Headers
from ._texts import CLOSE_NORMAL, CLOSE_POLICY

__all__ = ["Stream"]


class Stream:
    """One client of a door, decided by the core (see the module docstring)."""

    __slots__ = ("closed", "deadline", "form", "hub", "outbox", "refusal", "session")

    def __init__(self, hub: Hub, form: WireForm, door: Door, *, client: str = "", peer: object = None) -> None:
        self.hub = hub
        self.form = form
        #: What the client is owed, in ``form`` (``outbox.peer`` is ``peer``: the door's own).
        self.outbox = hub.new_outbox(form, door)
        self.outbox.peer = peer
        self.session = ClientSession(hub, self.outbox, self, client=client)
        #: The close the relay decided (code, reason), once it did.
        self.closed: tuple[int, str] | None = None
        #: The refusal of a join the backplane decided later, once it did.
        self.refusal: Answer | None = None
        #: When :meth:`tick` has something to do (monotonic seconds).
        self.deadline = hub.clock.monotonic() + hub.config.http.keepalive_interval

    def __repr__(self) -> str:
        return f"<Stream {self.form.name} {self.session.member!r}>"

    @property
    def pending(self) -> bool:
        """True while the backplane decides the join."""
        return self.session.pending

    @property
    def finished(self) -> bool:
        """True once the relay closed the member and everything it owed is out."""
        return self.closed is not None and not self.outbox

    def join(self, channel: str | bytes, query: str | bytes = b"", headers: Headers = ()) -> None:
        """Join ``channel`` with the options of ``query`` (``alias=Ann&announce=true``...).

        Every rule of a WebSocket join applies: the channel name, keys, the per-address
        connection rate. Raises HTTPError (400, 403, 429) when refused; nothing changed then.
        """
        raw = channel.encode() if isinstance(channel, str) else channel
        name = parse_channel(raw)
        hub, session = self.hub, self.session
        session.namespace = hub.namespace(name)
        options = parse_options(query.encode() if isinstance(query, str) else query)
        hub.admit_connection(session.client)
        attempt = session._attempt(name, options, headers, self.form.name)
        member = hub.join(name, options, self.outbox, session, b"", attempt)
        session.member = member
        session.pending = member is None

    def message(self, text: str | bytes) -> None:
        """One whole message from the client (``bytes``: binary, which the protocol refuses)."""
        self.session.message(text)

    def lost(self) -> None:
        """The client is gone: its member leaves (the others are told)."""
        self.session.leave()

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """End the member on the door's initiative (its form's close is queued)."""
        self.session.close(code, reason)

    def tick(self, now: float) -> None:
        """Call when ``now >= deadline``: a keepalive in the form, if it has one."""
        if now < self.deadline or self.closed is not None:
            return
        keepalive = self.form.keepalive()
        if keepalive:
            self.outbox.write(keepalive, pin=False)
        if self.outbox.overflowed:
            self.session.slow_consumer()
        self.deadline = now + self.hub.config.http.keepalive_interval

    # -- the session's transport side ---------------------------------------------------

    def session_closed(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        self.outbox.write(self.form.close(code, reason))
        self.outbox.touch()

    def session_opened(self) -> None:
        self.outbox.touch()

    def session_refused(self, answer: Answer) -> None:
        self.refusal = answer
        self.closed = (CLOSE_POLICY, answer.body.decode(errors="replace"))
        self.outbox.touch()

    def session_answered(self, answer: Answer) -> None:
        pass
