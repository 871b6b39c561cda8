"""What the hub asks of the outside: a clock, a uid source, a backplane, a push's waiter.

The backplane seam is where a hub's decisions that may involve other processes are made.

Theory of operation. The hub never awaits. Admitting a member to a channel needs
decisions that, in a cluster of relays, only a shared store can make: a uid unique in the
channel across every node, the keys an open channel's first joiner set on whichever node,
the total counting every node. So :meth:`Hub.join <relaycore.Hub.join>` hands a
:class:`JoinRequest` to its backplane, which decides *now* or *later*:

- now: it returns the :class:`~relaycore.Member` (or raises
  :class:`~relaycore.HTTPError`), exactly as a single relay always did. The in-memory
  :class:`LocalBackplane`, the default, always decides now, so one process pays nothing.
- later: it returns None and, once the answer is in, calls
  :meth:`Hub.resolve_join <relaycore.Hub.resolve_join>`; the hub then tells the joiner's
  session through ``session.joined(member)`` or ``session.join_refused(error)``, the way
  h11 hands out events. A transport that drives such a backplane flushes the hub's ready
  outboxes after each resolution, as after any other call into the core.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ._channel import Member, Session
from ._errors import HTTPError
from ._names import JoinOptions
from ._outbox import Outbox

__all__ = ["Admitting", "Backplane", "Clock", "JoinRequest", "LocalBackplane", "PushWaiter", "UidSource"]

UidSource = Callable[[], str]
"""Returns a candidate uid: 6 characters of ``[A-Za-z0-9]``."""


class Clock(Protocol):
    """Injected time: wall time for ``date`` stamps, a monotonic time for deadlines."""

    def time(self) -> float:
        """Seconds since the epoch."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""


class PushWaiter(Protocol):
    """Waits for the answer of an HTTP push that a cluster decides later."""

    def pushed(self, recipients: int) -> None:
        """The push reached ``recipients`` members."""

    def push_failed(self, error: HTTPError) -> None:
        """The push could not be made (the cluster lost Redis meanwhile)."""


class Admitting(Protocol):
    """The hub as a backplane sees it: it admits a request once the backplane allows it."""

    def admit(self, request: JoinRequest) -> Member:
        """Make the member: its self-join and the others' join events go out now."""


class JoinRequest:
    """A connection asking to join channel ``name``, waiting for the backplane's decision."""

    __slots__ = ("can_send", "greeting", "name", "options", "outbox", "session")

    def __init__(self, name: str, options: JoinOptions, outbox: Outbox, session: Session, greeting: bytes) -> None:
        self.name = name
        self.options = options
        self.outbox = outbox
        self.session = session
        #: Bytes that must precede the self-join in the outbox (a handshake response).
        self.greeting = greeting
        #: False once the host's ``authorize`` took away the right to send.
        self.can_send = True

    def __repr__(self) -> str:
        return f"<JoinRequest {self.name!r}>"


class Backplane(Protocol):
    """Decides joins for a hub: at once (return the member) or later (return None)."""

    def join(self, hub: Admitting, request: JoinRequest) -> Member | None:
        """Admit ``request`` now (the member; HTTPError when refused), or return None and
        call ``hub.resolve_join(request)`` once the decision can be made."""


class LocalBackplane:
    """One process is the whole relay: every join is decided at once, in memory.

    >>> from relaycore import Config, Hub
    >>> from relaycore.testing import FakeClock, seeded_uids
    >>> isinstance(Hub(Config(), FakeClock(), seeded_uids(1)).backplane, LocalBackplane)
    True
    """

    __slots__ = ()

    def join(self, hub: Admitting, request: JoinRequest) -> Member:
        return hub.admit(request)
