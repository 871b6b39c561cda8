"""The hub: channels, members, presence, access keys and routing.

Theory of operation. A :class:`Hub` owns every channel of one relay process. A
transport (or the per-connection driver) calls :meth:`Hub.join` with a :class:`Session`
(something the hub can ``kick``) and an :class:`~relaycore.Outbox`; the hub answers with a
:class:`Member`. From then on, :meth:`Hub.send`, :meth:`Hub.send_direct` and
:meth:`Hub.leave` route messages. Nothing here knows about WebSocket framing beyond one
shared frame build: every message is encoded ONCE, framed ONCE, and the same two bytes
objects are put into every recipient's outbox.

Time and identity are injected: ``clock`` gives the wall time for ``date`` stamps, ``uids``
makes candidate uids. The hub never touches sockets or the event loop.

The hub's public methods are also the seam for clustering: a cluster-aware hub keeps
the same methods and adds fan-out to other nodes (uid allocation, keys and presence are
each decided in one overridable method: ``_new_uid``, ``_admit``, ``_presence``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import msgspec

from ._channel import Channel, Departure, JoiningSession, Member, Present, Session, same_key
from ._config import Config, NamespaceConfig
from ._counters import Counters, Tally
from ._errors import HTTPError, RelayUsageError
from ._limits import ClientLimiter, TokenBucket, TrustedProxies
from ._names import JoinOptions, NamespaceTable
from ._origins import Origins
from ._outbox import Outbox
from ._protocols import Backplane, Clock, JoinRequest, LocalBackplane, PushWaiter, UidSource
from ._texts import (
    BINARY_UNSUPPORTED,
    CLOSE_POLICY,
    INVALID_JSON,
    JOIN_KEY_REQUIRED,
    SEND_KEY_REQUIRED,
    SLOW_CONSUMER,
    rate_limited,
    user_not_found,
)
from ._wire import (
    Envelope,
    ErrorFrame,
    JoinFrame,
    LeaveFrame,
    SelfJoinFrame,
    UserEntry,
    encode,
    parse_json,
    text_frame,
)

__all__ = ["Hub"]


#: Rate-limit warnings within WARNING_WINDOW seconds before the sender is closed.
MAX_WARNINGS = 3
WARNING_WINDOW = 60.0


def _room(member: Member) -> int:
    return member.outbox.room()


class Hub:
    """Every channel of one relay, and the routing between their members.

    >>> from relaycore.testing import FakeClock, seeded_uids
    >>> hub = Hub(Config(), FakeClock(), seeded_uids(1))
    """

    def __init__(self, config: Config, clock: Clock, uids: UidSource, *, backplane: Backplane | None = None) -> None:
        self.config = config
        self.clock = clock
        self._uids = uids
        #: Decides joins: at once in memory (the default), or later for a cluster.
        self.backplane: Backplane = backplane or LocalBackplane()
        self._namespaces = NamespaceTable(config.namespaces)
        #: What the relay did, counted where it decided it (read by metrics exporters).
        self.counters = Counters(config.namespaces)
        #: Live channels by name.
        self.channels: dict[str, Channel] = {}
        #: Outboxes with bytes to flush; see :meth:`take_ready`.
        self.ready: list[Outbox] = []
        #: Set by :meth:`shutdown`: members then leave without presence events.
        self.closing = False
        limits = config.limits
        #: WebSocket joins per client address.
        self.joins = ClientLimiter(limits.connections_per_second_per_ip, max(1.0, limits.connections_per_second_per_ip))
        #: HTTP pushes per client address.
        self.pushes = ClientLimiter(limits.pushes_per_second_per_ip, max(1.0, limits.pushes_per_second_per_ip))
        #: The proxies believed about who their client is, and the one header they say it in.
        self.trusted_proxies = TrustedProxies(config.server.trusted_proxies, header=config.server.forwarded_header)
        #: The web origins whose pages may open WebSockets and read the HTTP endpoints.
        self.origins = Origins(config.server.allowed_origins)

    # -- outboxes ---------------------------------------------------------------

    def new_outbox(self) -> Outbox:
        """An outbox registered with this hub's ready list, sized by the config."""
        return Outbox(self.config.limits.outbound_buffer_bytes, self.ready)

    def take_ready(self) -> list[Outbox]:
        """Return (and clear) the outboxes that got bytes since the last call."""
        ready = self.ready
        if not ready:
            return ready
        taken = ready[:]
        ready.clear()
        for outbox in taken:
            outbox.queued = False
        return taken

    def now_ms(self) -> int:
        """The ``date`` stamp: the injected wall clock in whole milliseconds."""
        return int(self.clock.time() * 1000)

    @property
    def connections(self) -> int:
        """How many members all channels hold."""
        return sum(len(channel.members) for channel in self.channels.values())

    def health(self) -> dict[str, Any]:
        """What ``/health`` reports of the hub."""
        return {"channels": len(self.channels), "connections": self.connections}

    def namespace(self, name: str) -> str:
        """The namespace label of channel ``name``: the reserved prefix covering it, or ``""``."""
        prefix = self._namespaces.lookup(name)
        return "" if prefix is None else prefix

    # -- membership ---------------------------------------------------------------

    def join(
        self, name: str, options: JoinOptions, outbox: Outbox, session: Session, greeting: bytes = b""
    ) -> Member | None:
        """Ask to admit a connection to channel ``name``; the backplane decides.

        Decided at once (always, with the default in-memory backplane): raises HTTPError(403)
        when the keys do not allow it (no state is changed then); on success returns the
        member, the joiner's outbox holds ``greeting`` (bytes that must come first, such as
        the handshake response) then its self-join frame, and every other member got a join
        event. Decided later: returns None, and the session hears ``joined(member)`` or
        ``join_refused(error)`` from :meth:`resolve_join`.
        """
        return self.backplane.join(self, JoinRequest(name, options, outbox, session, greeting))

    def resolve_join(self, request: JoinRequest) -> Member | None:
        """A backplane decided ``request`` later: admit it now and tell its session."""
        session = request.session
        if not isinstance(session, JoiningSession):
            raise RelayUsageError("a join decided later needs a session with joined() and join_refused()")
        try:
            member = self.admit(request)
        except HTTPError as exc:
            session.join_refused(exc)
            return None
        session.joined(member)
        return member

    def admit(self, request: JoinRequest) -> Member:
        """Decide ``request`` in this process (the in-memory backplane's decision)."""
        name, options = request.name, request.options
        channel = self.channels.get(name)
        fresh = channel is None
        if channel is None:
            channel = self._new_channel(name)
        can_send = self._admit(channel, options, fresh)
        if fresh:
            self.channels[name] = channel
        member = self._enroll(channel, self._new_uid(channel), request, can_send)
        self._presence_join(member, options.list, channel.members.values())
        return member

    def _enroll(self, channel: Channel, uid: str, request: JoinRequest, can_send: bool) -> Member:
        """Make ``request``'s member ``uid`` of ``channel``; its greeting goes into its outbox first."""
        limits = self.config.limits
        bucket = TokenBucket(limits.messages_per_second, limits.messages_burst, self.clock.monotonic())
        member = Member(uid, request.options, channel, request.outbox, request.session, bucket)
        member.can_send = can_send
        channel.members[uid] = member
        channel._changed()
        request.outbox.write(request.greeting)
        return member

    def leave(self, member: Member) -> None:
        """Remove a member (any way it goes); the others get a leave event.

        Calling it again for the same member does nothing.
        """
        if member.joined:
            self._depart(member.channel, [(member, None, "")])

    def shutdown(self) -> None:
        """The relay is going away: from now on nobody is told about leaves.

        Every member is being closed at once; a leave event to each of them about all the
        others would be a storm of frames nobody will read.
        """
        self.closing = True

    def kick(self, member: Member, code: int, reason: str) -> None:
        """Remove a member on the relay's initiative and ask its session to close."""
        if member.joined:
            self._depart(member.channel, [(member, code, reason)])

    # -- limits -------------------------------------------------------------------

    def admit_connection(self, client: str) -> None:
        """Count a new WebSocket connection from ``client``; HTTPError(429) over the rate."""
        if not self.joins.take(client, self.clock.monotonic()):
            raise HTTPError(429, "Too many connections; slow down.", [(b"retry-after", b"1")])

    def tick(self, now: float) -> None:
        """Periodic housekeeping: forget the rate state of clients gone quiet."""
        self.joins.prune(now)
        self.pushes.prune(now)

    def _allow(self, member: Member) -> bool:
        """Spend a message token; over the rate, warn (and close at the third warning)."""
        now = self.clock.monotonic()
        if member.bucket.take(now):
            return True
        warnings = member.warnings
        warnings[:] = [t for t in warnings if now - t < WARNING_WINDOW]
        warnings.append(now)
        self._drop(member, "rate", rate_limited(len(warnings), MAX_WARNINGS))
        if len(warnings) >= MAX_WARNINGS:
            self.kick(member, CLOSE_POLICY, "rate limit exceeded")
        return False

    # -- messages -----------------------------------------------------------------

    def receive(self, member: Member, text: str | bytes) -> None:
        """Handle one complete data message from ``member`` (PROTOCOL.md section 4).

        ``str`` is a text message: a JSON value to broadcast, or ``\x1f<uid>\x1f<JSON>`` /
        ``@@<uid>@@<JSON>`` for one member. ``bytes`` is a binary message, which the
        protocol does not carry: the sender gets an error frame.
        """
        member.channel.tally.received += 1
        if not self._allow(member):
            return
        if not isinstance(text, str):
            self._drop(member, "binary", BINARY_UNSUPPORTED)
            return
        uid = None
        if text.startswith("\x1f"):
            uid, sep, text = text[1:].partition("\x1f")
        elif text.startswith("@@"):
            uid, sep, text = text[2:].partition("@@")
        message = parse_json(text)
        if message is None or (uid is not None and not sep):
            self._drop(member, "invalid_json", INVALID_JSON)
        elif uid is None:
            self.send(member, message)
        else:
            self.send_direct(member, uid, message)

    def send(self, member: Member, message: msgspec.Raw) -> None:
        """Broadcast a validated JSON value from ``member`` to its channel."""
        if not member.can_send:
            self._drop(member, "send_key", SEND_KEY_REQUIRED)
            return
        envelope = Envelope(uid=member.uid, alias=member.alias, date=self.now_ms(), message=message)
        channel = member.channel
        self._deliver(channel.everyone, encode(envelope), None if member.echo else member, channel.tally)

    def send_direct(self, member: Member, uid: str, message: msgspec.Raw) -> None:
        """Send a validated JSON value from ``member`` to member ``uid`` of its channel only."""
        if not member.can_send:
            self._drop(member, "send_key", SEND_KEY_REQUIRED)
            return
        target = member.channel.members.get(uid)
        if target is None:
            self._drop(member, "unknown_uid", user_not_found(uid))
            return
        envelope = Envelope(uid=member.uid, alias=member.alias, date=self.now_ms(), message=message)
        self._deliver((target,), encode(envelope), None, member.channel.tally)

    def push(
        self, name: str, message: msgspec.Raw, key: str | None, client: str = "", waiter: PushWaiter | None = None
    ) -> int | None:
        """HTTP push: deliver ``message`` (no sender) to channel ``name``.

        Returns how many members it reached (a cluster may instead return None and tell
        ``waiter.pushed(n)`` later; one process always answers at once). Raises HTTPError(403) unless ``name`` falls
        under a reserved namespace whose send key equals ``key``, and HTTPError(429) when
        ``client`` pushes faster than ``pushes_per_second_per_ip``.
        """
        self._push_allowed(name, key, client)
        channel = self.channels.get(name)
        if channel is None:
            return 0
        recipients = channel.everyone
        self._deliver(recipients, encode(Envelope(date=self.now_ms(), message=message)), None, channel.tally)
        return len(recipients)

    def _push_allowed(self, name: str, key: str | None, client: str) -> None:
        """The rate and key checks of an HTTP push (HTTPError 429 or 403)."""
        if not self.pushes.take(client, self.clock.monotonic()):
            raise HTTPError(429, "Too many pushes; slow down.", [(b"retry-after", b"1")])
        reservation = self._reservation(name)
        if reservation is None or reservation.send_key is None:
            raise HTTPError(403, "Pushing requires a reserved namespace with a sendKey.")
        if not same_key(key, reservation.send_key):
            raise HTTPError(403, "Pushing requires a valid x-send-key.")

    def error(self, member: Member, text: str) -> None:
        """Send an error frame to ``member`` only."""
        self._deliver((member,), encode(ErrorFrame(message=text, date=self.now_ms())), None)

    def _drop(self, member: Member, reason: str, text: str) -> None:
        """``member``'s message is not relayed, for ``reason`` (counted): it gets error ``text``."""
        member.channel.tally.dropped[reason] += 1
        self.error(member, text)

    # -- decisions (overridable by a cluster-aware hub) ---------------------------------

    def _reservation(self, name: str) -> NamespaceConfig | None:
        prefix = self._namespaces.lookup(name)
        return None if prefix is None else self.config.namespaces[prefix]

    def _new_channel(self, name: str) -> Channel:
        """A channel named ``name`` with its namespace's reservation and counters (not yet listed)."""
        prefix = self._namespaces.lookup(name)
        if prefix is None:
            return Channel(name, None, self.counters.tally(""))
        return Channel(name, self.config.namespaces[prefix], self.counters.tally(prefix))

    def _admit(self, channel: Channel, options: JoinOptions, fresh: bool) -> bool:
        """Check the join key; return whether the joiner may send (PROTOCOL.md section 6)."""
        reservation = channel.reservation
        if reservation is not None:
            return self._admit_reserved(reservation, options)
        if fresh:
            # The first joiner of an open channel sets its keys until it empties.
            channel.join_key = options.join_key
            channel.send_key = options.send_key
            return True
        if channel.join_key is not None and not same_key(options.join_key, channel.join_key):
            raise HTTPError(403, JOIN_KEY_REQUIRED)
        return channel.send_key is None or same_key(options.send_key, channel.send_key)

    @staticmethod
    def _admit_reserved(reservation: NamespaceConfig, options: JoinOptions) -> bool:
        """The keys of a reserved namespace: HTTPError(403) or whether the joiner may send."""
        key_in_play = reservation.join_key is not None or options.join_key is not None
        if key_in_play and not same_key(options.join_key, reservation.join_key):
            raise HTTPError(403, JOIN_KEY_REQUIRED)
        if options.send_key is not None:
            if not same_key(options.send_key, reservation.send_key):
                raise HTTPError(403, "Invalid sendKey for this namespace.")
            return True
        return reservation.send_key is None

    def _new_uid(self, channel: Channel) -> str:
        for _ in range(1000):
            uid = self._uids()
            if uid not in channel.members:
                return uid
        raise RelayUsageError("the uid source keeps repeating itself")

    def _presence_join(self, member: Member, with_users: bool, everyone: Collection[Present]) -> None:
        """The joiner's self-join and the others' join event. ``everyone`` is the channel's
        membership the totals and ``users`` count, the joiner among them (a cluster counts
        every node's)."""
        channel = member.channel
        total = len(everyone)
        date = self.now_ms()
        users = None
        if with_users:
            users = [UserEntry(uid=m.uid, alias=m.alias, is_self=m.uid == member.uid) for m in everyone if m.announce]
        own = encode(SelfJoinFrame(uid=member.uid, alias=member.alias, total=total, date=date, users=users))
        # Never refused: a member cannot be cut off before it even knows its uid.
        member.outbox.put_always(own, text_frame(own))
        if len(channel.members) > 1:
            frame = JoinFrame(total=total, date=date)
            if member.announce:
                frame.uid, frame.alias = member.uid, member.alias
            self._deliver(channel.everyone, encode(frame), member)

    # -- delivery -----------------------------------------------------------------

    def _deliver(
        self, recipients: Sequence[Member], payload: bytes, skip: Member | None, relayed: Tally | None = None
    ) -> None:
        """Put one encoded message into every recipient's outbox (framed once).

        The recipients are members of one channel (``skip``, if given, is one of them);
        those whose outbox refuses the message are closed as slow consumers, all in one
        departure. A relayed message (a broadcast, a direct message, a push, not a presence
        event or an error) is counted in the ``relayed`` tally, its channel's.
        """
        frame = text_frame(payload)
        slow: list[Departure] | None = None
        for member in recipients:
            if member is not skip and not member.outbox.put(payload, frame):
                if slow is None:
                    slow = []
                slow.append((member, CLOSE_POLICY, SLOW_CONSUMER))
        if relayed is not None:
            reached = len(recipients) if skip is None else len(recipients) - 1
            if slow is not None:
                reached -= len(slow)
            relayed.delivered += reached
            relayed.bytes_out += reached * len(payload)
        if slow is not None:
            channel = slow[0][0].channel
            channel.tally.dropped["slow_consumer"] += len(slow)
            self._depart(channel, slow)

    def _depart(self, channel: Channel, departures: list[Departure]) -> None:
        """Remove members from ``channel``, announce their leaves, then close the kicked ones.

        Departures never recurse, however many members go at once: those who cannot take
        the leave announcements are found first and depart in the same pass (see
        :meth:`_announce_leaves`), the leaves then go out once, and only then are the
        sessions asked to close (which never calls back into the hub's routing).
        """
        members = channel.members
        before = len(members)
        gone = self._remove(channel, departures)
        if not gone:
            return
        if members and not self.closing:
            self._announce_leaves(channel, gone, before)
        if not members and self.channels.get(channel.name) is channel:
            # The channel, its keys and its uids vanish with the last member.
            del self.channels[channel.name]
        for member, code, reason in gone:
            if code is not None:
                member.session.kick(code, reason)

    @staticmethod
    def _remove(channel: Channel, departures: list[Departure]) -> list[Departure]:
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

    def _announce_leaves(self, channel: Channel, gone: list[Departure], before: int) -> None:
        """Tell the members left in ``channel`` about every departure in ``gone``, in order.

        The k-th leave carries ``total = before - 1 - k``. A remaining member whose outbox
        cannot take all of the leaves is a slow consumer: it departs too (appended to
        ``gone``, kicked by the caller), which adds one more leave for the others. The
        members are swept in order of free room, so finding every such member is one
        sort and one pass, however the crowd cascades.
        """
        date = self.now_ms()
        payloads: list[bytes] = []
        frames: list[bytes] = []
        need = [0, 0]  # bytes of the leaves so far: [unframed, framed]

        def add(member: Member) -> None:
            frame = LeaveFrame(total=before - 1 - len(payloads), date=date)
            if member.announce:
                frame.uid, frame.alias = member.uid, member.alias
            payload = encode(frame)
            framed = text_frame(payload)
            payloads.append(payload)
            frames.append(framed)
            need[0] += len(payload)
            need[1] += len(framed)

        for member, _, _ in gone:
            add(member)
        members = channel.members
        kinds: list[list[Member]] = [[], []]
        for member in members.values():
            kinds[member.outbox.framed].append(member)
        for kind in kinds:
            kind.sort(key=_room)
        cursor = [0, 0]
        swept = True
        while swept:
            swept = False
            for k in (0, 1):
                kind, i = kinds[k], cursor[k]
                while i < len(kind) and kind[i].outbox.room() < need[k]:
                    member = kind[i]
                    i += 1
                    del members[member.uid]
                    member.outbox.overflowed = True
                    channel.tally.dropped["slow_consumer"] += 1
                    gone.append((member, CLOSE_POLICY, SLOW_CONSUMER))
                    add(member)
                    swept = True
                cursor[k] = i
        channel._changed()
        if not members:
            return
        joined = b"".join(frames)
        for member in channel.everyone:
            # Cannot be refused: every member left has room for all of it (swept above).
            member.outbox.put_batch(payloads, joined)
