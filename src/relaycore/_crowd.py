"""Presence in a crowd: the join and leave events of a big channel, coalesced.

Theory of operation. Telling every member of a channel about every join and leave costs
N²/2 frames to fill it to N members. A channel whose namespace (or the relay) sets
``coalesce_above`` (``[presence]``, or ``presence_coalesce_above`` in a namespace's table)
has a :class:`Crowd`, and its events follow one rule:

- an event whose ``total`` is at most ``coalesce_above`` goes out as it happens, as in any
  channel, so a channel that never grows past the bound never sees a difference;
- above it, an event about a member who did not announce is not sent. The channel is
  marked *dirty* instead, and at the hub's first tick at least ``interval`` seconds after
  the channel's previous coalesced event, its members get ONE event carrying only the
  channel's current ``total``: a ``join`` when the total is at least the one they were last
  told, a ``leave`` when it is lower;
- an event about an announced member goes out as it happens while the channel holds at
  most ``coalesce_above`` announced members (they are counted apart from the others), so a
  few named members among a crowd are still seen coming and going; past that count their
  events are coalesced too. Such an event costs one frame per member, and there are never
  more than ``coalesce_above`` of those members at once.

Every event that goes out tells every member the current total, so it clears the dirty
mark. The core has no timer: the hub keeps the dirty channels, and each call of
:meth:`~relaycore.Hub.tick` sends the coalesced event of those whose interval is over
(:meth:`Crowd.due`). Every door calls it: the native server about four times a second, the
ASGI app once a second (and as requests come), the harness when it advances.

The rule counts whatever membership the hub counts: one relay its channel, a cluster node
its replica (every node's members). A node applies it to the events its own members hear,
so in a cluster each node sends its members at most one coalesced event per interval per
channel, with the cluster-wide total.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from ._wire import JoinFrame, LeaveFrame

__all__ = ["Crowd"]


class Counted(Protocol):
    """What the rule needs of a member (here or on another node): whether it announced."""

    @property
    def announce(self) -> bool: ...


class Crowd:
    """The coalesced presence of one channel (see the module's docs).

    >>> crowd = Crowd(2, 1.0)
    >>> class Who:
    ...     uid, alias, announce = "abc123", None, False
    >>> [crowd.exact(JoinFrame(total=n, date=0), Who()) for n in (2, 3)]
    [True, False]
    >>> crowd.dirty, crowd.told
    (True, 2)
    """

    __slots__ = ("above", "announced", "dirty", "everyone", "interval", "next_at", "told")

    def __init__(self, above: int, interval: float) -> None:
        #: Events with a ``total`` over this are coalesced (those of few announced members aside).
        self.above = above
        #: Seconds between two coalesced events.
        self.interval = interval
        #: The announced members of the channel, counted as they come and go.
        self.announced = 0
        #: The total every member was last told.
        self.told = 0
        #: Whether some member may not know the current total.
        self.dirty = False
        #: The monotonic time before which no coalesced event goes out.
        self.next_at = 0.0
        #: The membership the totals count (a live view: the channel's, or a node's replica).
        self.everyone: Collection[Counted] = ()

    def count(self, everyone: Collection[Counted]) -> None:
        """Count the announced members of ``everyone`` (the channel's first member here)
        and keep ``everyone`` to count the totals from."""
        self.everyone = everyone
        self.announced = sum(1 for who in everyone if who.announce)

    def exact(self, frame: JoinFrame | LeaveFrame, who: Counted) -> bool:
        """Whether the event ``frame`` about ``who`` goes out now (else it is coalesced);
        ``who`` is counted in or out of the announced members."""
        joins = type(frame) is JoinFrame
        announced = who.announce
        if announced and joins:
            self.announced += 1
        exact = frame.total <= self.above or (announced and self.announced <= self.above)
        if announced and not joins:
            self.announced -= 1
        if exact:
            self.told = frame.total
            self.dirty = False
        else:
            self.dirty = True
        return exact

    def due(self, now: float) -> bool:
        """Whether a coalesced event may go out at ``now`` (the mark stays until it does)."""
        return now >= self.next_at

    def summary(self, now: float, date: int) -> JoinFrame | LeaveFrame:
        """The coalesced event to send at ``now``: the current total, as a join or a leave.

        The mark is cleared and the next one may go out ``interval`` seconds later; the
        announced members are counted afresh, whatever came and went unseen.
        """
        everyone = self.everyone
        total = len(everyone)
        self.announced = sum(1 for who in everyone if who.announce)
        frame: JoinFrame | LeaveFrame
        frame = JoinFrame(total=total, date=date) if total >= self.told else LeaveFrame(total=total, date=date)
        self.told = total
        self.dirty = False
        self.next_at = now + self.interval
        return frame
