"""Presence: members coming into channels and going, and what the others hear of it.

Theory of operation. A joiner gets a uid unique in its channel, then a self-join frame
(its uid, the channel's total, the announced members if it asked for the list), and the
others get one join event; a departure takes members out of their channel and the others
get one leave event per member, the k-th carrying ``total = before - 1 - k``. An event
names its member (``uid``, ``alias``) only when that member asked to be announced.

The *totals* and the *list* count whatever membership the caller passes: one relay counts
its channel's members, a cluster node counts its replica of the channel (every node's
members). Both hubs make their presence frames here, so the frames are the same wherever
a member is connected.

The leaves of one departure go out as one batch per member. A member that cannot take the
whole batch is a slow consumer and departs in the same pass (which adds one more leave for
the others); :meth:`Presence.announce_leaves` finds all such members with one sort and one
sweep, however the crowd cascades, and never recurses.

A channel with more members than ``coalesce_above`` (``[presence]`` or its namespace's
``presence_coalesce_above``) has a :class:`~relaycore._crowd.Crowd`: most of its events are
then not sent one by one but coalesced into one event carrying the total, sent from
:meth:`Presence.tick` at most once per ``interval`` (the rule is written in
:mod:`relaycore._crowd`). Every event of both hubs passes the same rule here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from ._access import Access
from ._channel import Channel, Departure, Member, Present
from ._config import Config
from ._counters import Counters
from ._crowd import Crowd
from ._errors import RelayUsageError
from ._fanout import Fanout
from ._forms import WireForm
from ._limits import TokenBucket
from ._protocols import Clock, JoinRequest, UidSource
from ._texts import CLOSE_POLICY, SLOW_CONSUMER
from ._wire import JoinFrame, LeaveFrame, SelfJoinFrame, UserEntry, encode, text_frame

__all__ = ["Presence", "event"]


def event(frame: JoinFrame | LeaveFrame, who: Present) -> bytes:
    """A join or leave event about ``who``, encoded: named only if ``who`` is announced."""
    if who.announce:
        frame.uid, frame.alias = who.uid, who.alias
    return encode(frame)


def _room(member: Member) -> int:
    return member.outbox.room()


class Presence:
    """Admits members into channels and tells the others, for one hub."""

    __slots__ = ("_access", "_clock", "_counters", "_dirty", "_fanout", "_limits", "_now_ms", "_presence", "_uids")

    def __init__(
        self,
        config: Config,
        clock: Clock,
        uids: UidSource,
        now_ms: Callable[[], int],
        access: Access,
        counters: Counters,
        fanout: Fanout,
    ) -> None:
        self._limits = config.limits
        self._presence = config.presence
        #: The channels whose members may not know the current total (an ordered set).
        self._dirty: dict[Channel, None] = {}
        self._clock = clock
        self._uids = uids
        self._now_ms = now_ms
        self._access = access
        self._counters = counters
        self._fanout = fanout

    def open(self, name: str) -> Channel:
        """A channel named ``name`` with its namespace's reservation and counters (not yet listed)."""
        prefix, reservation = self._access.lookup(name)
        channel = Channel(name, reservation, self._counters.tally(prefix))
        presence = self._presence
        above = presence.coalesce_above
        if reservation is not None and reservation.presence_coalesce_above is not None:
            above = reservation.presence_coalesce_above
        if above:
            channel.crowd = Crowd(above, presence.interval)
        return channel

    def new_uid(self, taken: Callable[[str], bool]) -> str:
        """A uid from the hub's uid source that is not ``taken``."""
        for _ in range(1000):
            uid = self._uids()
            if not taken(uid):
                return uid
        raise RelayUsageError("the uid source keeps repeating itself")

    def enroll(
        self, channel: Channel, uid: str, request: JoinRequest, can_send: bool, everyone: Collection[Present]
    ) -> Member:
        """Make ``request``'s member ``uid`` of ``channel`` and tell everyone.

        The joiner's outbox gets the request's greeting first, then its self-join; the
        others get a join event. ``everyone`` is the membership the totals and ``users``
        count, the joiner among them (a cluster node counts every node's).
        """
        limits = self._limits
        bucket = TokenBucket(limits.messages_per_second, limits.messages_burst, self._clock.monotonic())
        member = Member(uid, request.options, channel, request.outbox, request.session, bucket)
        member.can_send = can_send
        channel.members[uid] = member
        channel._changed()
        request.outbox.write(request.greeting)
        if channel.crowd is not None and len(channel.members) == 1:
            channel.crowd.count(everyone)  # the channel is new here: count who is in it
        self._greet(member, request.options.list, everyone)
        return member

    def _greet(self, member: Member, with_users: bool, everyone: Collection[Present]) -> None:
        """The joiner's self-join and the others' join event."""
        channel = member.channel
        total = len(everyone)
        date = self._now_ms()
        users = None
        if with_users:
            users = [UserEntry(uid=m.uid, alias=m.alias, is_self=m.uid == member.uid) for m in everyone if m.announce]
        own = encode(SelfJoinFrame(uid=member.uid, alias=member.alias, total=total, date=date, users=users))
        # Never refused: a member cannot be cut off before it even knows its uid.
        member.outbox.put_always(own, text_frame(own))
        if len(channel.members) > 1:
            self.announce(channel, JoinFrame(total=total, date=date), member, member)

    def announce(
        self, channel: Channel, frame: JoinFrame | LeaveFrame, who: Present, skip: Member | None = None
    ) -> None:
        """Tell the members of ``channel`` (but ``skip``) that ``who`` joined or left,
        now, or in the channel's next coalesced event (see :mod:`relaycore._crowd`)."""
        crowd = channel.crowd
        if crowd is not None and not crowd.exact(frame, who):
            self._dirty[channel] = None
            return
        self._fanout.broadcast(channel, event(frame, who), skip)

    def tick(self, now: float) -> None:
        """Send the coalesced events that are due: to each channel whose members may not
        know its current total, one event carrying it, at most once per ``interval``."""
        dirty = self._dirty
        if not dirty:
            return
        date = self._now_ms()
        for channel in list(dirty):
            crowd = channel.crowd
            if crowd is None or not crowd.dirty or not channel.members:
                del dirty[channel]  # told meanwhile, or gone
            elif crowd.due(now):
                del dirty[channel]
                # Slow consumers depart here, and their leaves may mark the channel again.
                self._fanout.broadcast(channel, encode(crowd.summary(now, date)), None)

    @staticmethod
    def remove(channel: Channel, departures: list[Departure]) -> list[Departure]:
        """Take the departing members still in ``channel`` out of it; return those departures."""
        members = channel.members
        gone: list[Departure] = []
        for departure in departures:
            member = departure[0]
            if members.get(member.uid) is member:
                del members[member.uid]
                gone.append(departure)
        if gone:
            channel._changed()
        return gone

    def announce_leaves(self, channel: Channel, gone: list[Departure], before: int) -> None:
        """Tell the members left in ``channel`` about every departure in ``gone``, in order.

        ``before`` is the total the first leave counts down from. A remaining member whose
        outbox cannot take all of the leaves is a slow consumer: it departs too (appended to
        ``gone``, kicked by the caller), which adds one more leave for the others. The
        members are swept in order of free room, so finding every such member is one sort
        and one pass, however the crowd cascades. In a channel with a
        :class:`~relaycore._crowd.Crowd`, the leaves it coalesces are not sent here.
        """
        date = self._now_ms()
        members = channel.members
        crowd = channel.crowd
        # The members by wire form: a leave's size differs from one form to another.
        kinds: dict[WireForm, list[Member]] = {}
        for member in members.values():
            kind = kinds.get(member.outbox.form)
            if kind is None:
                kind = kinds[member.outbox.form] = []
            kind.append(member)
        payloads: list[bytes] = []
        frames: list[bytes] = []
        need = dict.fromkeys(kinds, 0)  # bytes of the leaves so far, in each form

        def add(member: Member, k: int) -> None:
            """The leave of ``member``, the ``k``-th of this departure: sent, or coalesced."""
            frame = LeaveFrame(total=before - 1 - k, date=date)
            if crowd is not None and not crowd.exact(frame, member):
                self._dirty[channel] = None
                return
            payload = event(frame, member)
            payloads.append(payload)
            frames.append(text_frame(payload))
            for form in need:
                need[form] += len(form.message(payload))

        for k, (member, _, _) in enumerate(gone):
            add(member, k)
        if payloads:
            _sweep(channel, kinds, need, gone, add)
        channel._changed()
        if not members or not payloads:
            return
        joined = b"".join(frames)
        for member in channel.everyone:
            # Cannot be refused: every member left has room for all of it (swept above).
            member.outbox.put_batch(payloads, joined)


def _sweep(
    channel: Channel,
    kinds: dict[WireForm, list[Member]],
    need: dict[WireForm, int],
    gone: list[Departure],
    add: Callable[[Member, int], None],
) -> None:
    """Take out of ``channel`` (into ``gone``) every member of ``kinds`` with less room than
    ``need`` bytes in its form; each one's leave is ``add``-ed, which may raise ``need``."""
    members = channel.members
    for kind in kinds.values():
        kind.sort(key=_room)
    cursor = dict.fromkeys(kinds, 0)
    swept = True
    while swept:
        swept = False
        for form, kind in kinds.items():
            i = cursor[form]
            while i < len(kind) and kind[i].outbox.room() < need[form]:
                member = kind[i]
                i += 1
                del members[member.uid]
                member.outbox.overflowed = True
                channel.tally.dropped["slow_consumer"] += 1
                gone.append((member, CLOSE_POLICY, SLOW_CONSUMER))
                add(member, len(gone) - 1)
                swept = True
            cursor[form] = i
