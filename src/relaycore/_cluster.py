"""A hub that is one node of a cluster: several relay processes on one Redis, one relay.

Theory of operation. Every node keeps its own members, exactly as a single relay does, and
a *replica* of each channel it serves (has members or joins in flight in): every member of
the channel cluster-wide, with its node, in join order. Redis holds the truth, changed only
by the Lua scripts below, each atomic:

- ``rc:m:{C}`` hash uid -> ``node \\x1f seq \\x1f announce \\x1f alias``: the members of C;
- ``rc:k:{C}`` the SHA-256 digests of the keys C's first joiner set (open channels);
- ``rc:s:{C}`` C's event counter; ``rc:c:{C}`` C's pub/sub channel;
- ``rc:o:<node>`` the channels a node has members in; ``rc:n:<node>`` its heartbeat (with a
  TTL); ``rc:nodes`` every node known; ``rc:d:<node>`` its direct-message channel.

A join or leave script changes the hash, takes the next number from the counter and
publishes the event (``J`` or ``L`` record) on ``rc:c:{C}`` in the same atomic step, so every
node subscribed to C sees every change of C in one order, numbered. A node applies them to
its replica in that order, and that is the only place presence frames come from: a join's
self-join, and the join and leave events every node's members hear, all with totals counted
from the replica, the same on every node. A node's own joiner is admitted when its own ``J``
record comes back (matched by a token), so it hears exactly the events after its join.
A node that starts serving C subscribes first, then asks its first join script for the
members as they were (the snapshot); records that arrive before the snapshot wait, and
those it already counts are skipped by their number.

Messages never wait for Redis: a member's broadcast goes to the node's own members at once,
then to the other nodes as one ``M`` record (several messages to one channel share a
record), already encoded; each node hands the same bytes to its members. A node publishes
nothing for a channel no other node serves, and subscribes only to channels it serves, so it
never receives traffic for the others. Direct messages go to the target's node only.

The core decides; the transport only carries. It takes :attr:`ClusterHub.calls` (scripts and
publishes, in order), keeps the subscriptions equal to :attr:`ClusterHub.subscriptions`,
feeds every pub/sub message to :meth:`ClusterHub.feed`, and reports each script's reply to
the call's ``reply``. When Redis goes away it calls :meth:`ClusterHub.offline`: from then on
the node is a relay of its own (joins and leaves decided and announced locally, messages
delivered locally); :meth:`ClusterHub.online` after reconnecting re-registers every member
(``sync``) and, a node timeout later, :meth:`ClusterHub.repair` drops the members of nodes
that did not come back.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import msgspec

from ._channel import Channel, Departure, JoiningSession, Member
from ._cluster_scripts import SCRIPTS, channel_keys, key_digest, node_keys
from ._config import Config
from ._errors import HTTPError, RelayUsageError
from ._hub import Hub
from ._protocols import Admitting, JoinRequest, PushWaiter, UidSource
from ._texts import (
    CLOSE_INTERNAL_ERROR,
    CLUSTER_UNAVAILABLE,
    JOIN_KEY_REQUIRED,
    SEND_KEY_REQUIRED,
    UID_CONFLICT,
    user_not_found,
)
from ._wire import Envelope, JoinFrame, LeaveFrame, encode

__all__ = ["SCRIPTS", "Call", "ClusterHub", "channel_keys"]

SEP = b"\x1f"
#: Between the messages of one ``M`` record (never inside encoded JSON).
MSG_SEP = b"\x1e"
#: An ``M`` record is closed at this size; the next message starts another.
MAX_RECORD = 1 << 20
#: Records (and their bytes) buffered for a channel waiting for its snapshot, before it is
#: synced afresh instead.
MAX_BUFFERED = 100_000
MAX_BUFFERED_BYTES = 16 << 20


class Call:
    """One thing for Redis, in order: ``script`` is a name of :data:`SCRIPTS` or ``"publish"``.

    For a publish, ``keys`` is ``[channel]`` and ``args`` is ``[data]``. ``reply`` (if any)
    takes the script's result; a call whose connection failed is simply dropped (the
    transport reports the failure through :meth:`ClusterHub.offline`).
    """

    __slots__ = ("args", "keys", "reply", "script")

    def __init__(
        self, script: str, keys: list[bytes], args: list[Any], reply: Callable[[Any], None] | None = None
    ) -> None:
        self.script = script
        self.keys = keys
        self.args = args
        self.reply = reply

    def __repr__(self) -> str:
        return f"<Call {self.script} {self.keys[:1]!r}>"


class Entry:
    """A member as the replica knows it: anywhere in the cluster."""

    __slots__ = ("alias", "announce", "node", "uid")

    def __init__(self, uid: str, node: bytes, announce: bool, alias: str | None) -> None:
        self.uid = uid
        self.node = node
        self.announce = announce
        self.alias = alias


class Pending:
    """A local join sent to Redis, waiting for its own ``J`` record."""

    __slots__ = ("can_send", "request", "uid")

    def __init__(self, request: JoinRequest, uid: str, can_send: bool | None) -> None:
        self.request = request
        self.uid = uid
        #: Decided here for a reserved namespace; by the join script (None) otherwise.
        self.can_send = can_send


class Replica:
    """What a node knows of a channel it serves: every member, cluster-wide."""

    __slots__ = (
        "buffered",
        "buffered_bytes",
        "join_digest",
        "keys",
        "leaving",
        "members",
        "name",
        "pending",
        "pub",
        "send_digest",
        "seq",
        "snapshot_asked",
        "synced",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.keys = channel_keys(name)
        self.pub = self.keys[3]
        #: Every member, in join order.
        self.members: dict[str, Entry] = {}
        #: The number of the last record applied.
        self.seq = 0
        #: False until the snapshot came: records wait in ``buffered``.
        self.synced = False
        self.snapshot_asked = False
        self.buffered: list[bytes] = []
        self.buffered_bytes = 0
        #: Local joins by token.
        self.pending: dict[str, Pending] = {}
        #: This node's members that left, whose ``L`` record has not come back yet.
        self.leaving: set[str] = set()
        self.join_digest = b""
        self.send_digest = b""

    def pending_uid(self, uid: str) -> tuple[str, Pending] | None:
        for token, pending in self.pending.items():
            if pending.uid == uid:
                return token, pending
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _raw(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _entry(uid: str, value: bytes) -> tuple[int, Entry]:
    node, seq, announce, alias = value.split(SEP, 3)
    return int(seq), Entry(uid, node, announce == b"1", alias.decode() or None)


def _messages_in(call: Call) -> int:
    """How many messages a publish call carries."""
    data = call.args[0]
    return data.count(MSG_SEP) + 1 if data[:1] == b"M" else 1


class _Plane:
    """The node's backplane: every join goes through the cluster (the node decides it)."""

    __slots__ = ("node",)

    def __init__(self, node: ClusterHub) -> None:
        self.node = node

    def join(self, hub: Admitting, request: JoinRequest) -> Member | None:
        return self.node._join(request)


class ClusterHub(Hub):
    """A :class:`~relaycore.Hub` that is one node of a cluster (see the module's docs).

    ``node`` names this node in the cluster; it must be new on every start (the transport
    adds a random part to the configured ``node_id``), so a restarted node is never taken
    for its own predecessor.

    >>> from relaycore.testing import FakeClock, seeded_uids
    >>> hub = ClusterHub(Config(), FakeClock(), seeded_uids(1), node="a.1")
    >>> hub.subscriptions == {b"rc:d:a.1"}
    True
    """

    def __init__(self, config: Config, clock: Any, uids: UidSource, *, node: str) -> None:
        super().__init__(config, clock, uids, backplane=_Plane(self))
        self.node = node
        self.node_raw = node.encode()
        self.heartbeat_key, self.channels_key, self.direct_key = node_keys(node)
        #: Channels served, by name.
        self.replicas: dict[str, Replica] = {}
        #: What Redis is to do, in order (taken by the transport).
        self.calls: list[Call] = []
        #: The pub/sub channels this node must be subscribed to.
        self.subscriptions: set[bytes] = {self.direct_key}
        #: Whether Redis is reachable (the transport says).
        self.is_online = False
        #: Called when :attr:`calls` gets its first entry (the transport's wake-up).
        self.on_calls: Callable[[], None] = _nothing
        self._batches: dict[bytes, Call] = {}
        self._queued = 0
        self._tokens = itertools.count(1)
        #: HTTP pushes waiting for Redis's count, by token.
        self._pushes: dict[int, PushWaiter] = {}
        #: Channels no longer served whose last leaves Redis may not have heard of.
        self._unsettled: set[str] = set()
        #: Counters for logs and metrics.
        self.stats = {
            "records_in": 0,
            "bytes_in": 0,
            "published": 0,
            "dropped_messages": 0,
            "uid_conflicts": 0,
            "resyncs": 0,
        }

    # -- what the transport drives ------------------------------------------------------

    def take_calls(self) -> list[Call]:
        """Everything queued for Redis, in order (and forget it)."""
        calls = self.calls
        self.calls = []
        self._batches.clear()
        self._queued = 0
        return calls

    def health(self) -> dict[str, Any]:
        health = super().health()
        health["cluster"] = {"node": self.node, "online": self.is_online, "served": len(self.replicas), **self.stats}
        return health

    def feed(self, channel: bytes, data: bytes) -> None:
        """A pub/sub message arrived on ``channel``."""
        stats = self.stats
        stats["records_in"] += 1
        stats["bytes_in"] += len(data)
        if channel == self.direct_key:
            self._on_direct(data)
            return
        replica = self.replicas.get(channel[6:-1].decode())
        if replica is None or not data:
            return
        if replica.synced:
            self._apply(replica, data)
            return
        replica.buffered.append(data)
        replica.buffered_bytes += len(data)
        if len(replica.buffered) > MAX_BUFFERED or replica.buffered_bytes > MAX_BUFFERED_BYTES:
            self._resync(replica)

    def offline(self) -> None:
        """Redis is gone: decide everything here until :meth:`online`.

        Queued calls are dropped (messages to other nodes are lost: at-most-once); leaves
        Redis has not confirmed are announced here, and joins waiting for Redis are
        admitted here, now.
        """
        self.is_online = False
        self.stats["dropped_messages"] += sum(_messages_in(call) for call in self.calls if call.script == "publish")
        self.take_calls()
        waiters = list(self._pushes.values())
        self._pushes.clear()
        for waiter in waiters:
            waiter.push_failed(HTTPError(503, CLUSTER_UNAVAILABLE, [(b"retry-after", b"1")]))
        for replica in list(self.replicas.values()):
            replica.synced = True
            replica.snapshot_asked = False
            replica.buffered.clear()
            replica.buffered_bytes = 0
            members = replica.members
            gone = [members.pop(uid) for uid in sorted(replica.leaving) if uid in members]
            replica.leaving.clear()
            self._announce_gone(replica, gone, len(members) + len(gone))
            for token, pending in list(replica.pending.items()):
                # One by one: a joiner that left meanwhile must not empty the channel
                # under the joins still waiting behind it.
                del replica.pending[token]
                request = pending.request
                try:
                    member = self._admit_here(replica, request, pending.can_send, pending.uid)
                except HTTPError as exc:
                    self._refused(replica, request, exc)
                else:
                    self._tell_joined(request, member)
            self._unserve_if_idle(replica)

    def online(self) -> None:
        """Redis is back (or reached for the first time): register every member again."""
        self.is_online = True
        for replica in self.replicas.values():
            self._sync(replica, drop_missing=False)
        for name in sorted(self._unsettled):
            if name in self.replicas:
                self._unsettled.discard(name)  # its sync settles it
            else:
                self._forget(name)

    def repair(self) -> None:
        """A node timeout after :meth:`online`: forget the members of nodes that are gone."""
        if self.is_online:
            for replica in self.replicas.values():
                self._sync(replica, drop_missing=True)

    # -- joins ----------------------------------------------------------------------------

    def _join(self, request: JoinRequest) -> Member | None:
        name = request.name
        reservation = self._reservation(name)
        can_send = None if reservation is None else self._admit_reserved(reservation, request.options)
        replica = self.replicas.get(name)
        if replica is None:
            replica = self.replicas[name] = Replica(name)
            replica.synced = not self.is_online
            self.subscriptions.add(replica.pub)
        if not self.is_online:
            try:
                return self._admit_here(replica, request, can_send, None)
            except HTTPError:
                self._unserve_if_idle(replica)
                raise
        token = str(next(self._tokens))
        pending = replica.pending[token] = Pending(request, self._fresh_uid(replica), can_send)
        self._ask_join(replica, token, pending)
        return None

    def _ask_join(self, replica: Replica, token: str, pending: Pending) -> None:
        options = pending.request.options
        snapshot = not replica.synced and not replica.snapshot_asked
        replica.snapshot_asked = replica.snapshot_asked or snapshot
        reserved = pending.can_send is not None
        m, k, s, pub = replica.keys
        args = [
            pending.uid,
            self.node_raw,
            b"1" if options.announce else b"0",
            (options.alias or "").encode(),
            token,
            key_digest(options.join_key),
            key_digest(options.send_key),
            b"1" if snapshot else b"0",
            b"1" if reserved else b"0",
            pub,
            replica.name.encode(),
        ]

        def reply(result: Any) -> None:
            self._join_reply(replica, token, snapshot, reserved, result)

        self._call(Call("join", [m, k, s, self.channels_key], args, reply))

    def _join_reply(self, replica: Replica, token: str, snapshot: bool, reserved: bool, result: Any) -> None:
        if self.replicas.get(replica.name) is not replica:
            return
        status = _text(result[0])
        if status == "ok" and not reserved:
            replica.join_digest, replica.send_digest = _raw(result[3]), _raw(result[4])
        pending = replica.pending.get(token)
        if pending is None:  # admitted already: its own record came first
            return
        if snapshot and status != "ok":
            replica.snapshot_asked = False
        if status == "taken":
            pending.uid = self._fresh_uid(replica)
            self._ask_join(replica, token, pending)
            return
        if status == "key":
            del replica.pending[token]
            self._refused(replica, pending.request, HTTPError(403, JOIN_KEY_REQUIRED))
            if self.replicas.get(replica.name) is replica and not replica.synced and not replica.snapshot_asked:
                self._sync(replica, drop_missing=True)  # the joins behind it still need a snapshot
            return
        if pending.can_send is None:
            pending.can_send = bool(int(result[2]))
        if snapshot:
            self._load(replica, int(result[1]) - 1, result[5], drop_missing=True)

    def _fresh_uid(self, replica: Replica) -> str:
        for _ in range(1000):
            uid = self._uids()
            if uid not in replica.members and replica.pending_uid(uid) is None:
                return uid
        raise RelayUsageError("the uid source keeps repeating itself")

    def _may_send(self, replica: Replica, pending: Pending) -> bool:
        """The send-key decision for a join Redis admitted, from the channel's key digests."""
        if pending.can_send is not None:
            return pending.can_send
        return not replica.send_digest or key_digest(pending.request.options.send_key) == replica.send_digest

    def _admit_here(self, replica: Replica, request: JoinRequest, can_send: bool | None, uid: str | None) -> Member:
        """Admit ``request`` on this node's own authority (Redis unreachable)."""
        options = request.options
        if can_send is None:
            if not replica.members:
                replica.join_digest = key_digest(options.join_key)
                replica.send_digest = key_digest(options.send_key)
                can_send = True
            else:
                if replica.join_digest and key_digest(options.join_key) != replica.join_digest:
                    raise HTTPError(403, JOIN_KEY_REQUIRED)
                can_send = not replica.send_digest or key_digest(options.send_key) == replica.send_digest
        if uid is None or uid in replica.members:
            uid = self._fresh_uid(replica)
        replica.members[uid] = Entry(uid, self.node_raw, options.announce, options.alias)
        return self._admit_local(replica, request, uid, can_send)

    def _admit_local(self, replica: Replica, request: JoinRequest, uid: str, can_send: bool) -> Member:
        """Make the member (already in the replica) and send the presence frames."""
        name = replica.name
        channel = self.channels.get(name)
        if channel is None:
            channel = self.channels[name] = self._new_channel(name)
        member = self._enroll(channel, uid, request, can_send)
        self._presence_join(member, request.options.list, replica.members.values())
        return member

    def _admit_pending(self, replica: Replica, token: str, pending: Pending) -> None:
        del replica.pending[token]
        member = self._admit_local(replica, pending.request, pending.uid, self._may_send(replica, pending))
        self._tell_joined(pending.request, member)

    def _tell_joined(self, request: JoinRequest, member: Member) -> None:
        session = request.session
        if isinstance(session, JoiningSession):
            session.joined(member)

    def _refused(self, replica: Replica, request: JoinRequest, error: HTTPError) -> None:
        session = request.session
        self._unserve_if_idle(replica)
        if isinstance(session, JoiningSession):
            session.join_refused(error)

    # -- records --------------------------------------------------------------------------

    def _apply(self, replica: Replica, data: bytes) -> None:
        """Apply one record, in the cluster's order."""
        kind = data[:1]
        if kind == b"M":
            node, _, messages = data[1:].partition(SEP)
            local = self.channels.get(replica.name)
            if node != self.node_raw and local is not None:
                for payload in messages.split(MSG_SEP):
                    self._deliver(local.everyone, payload, None, local.tally)
            return
        fields = data[1:].split(SEP)
        seq = int(fields[0])
        if seq <= replica.seq:
            return  # already counted (in the snapshot)
        replica.seq = seq
        if kind == b"J":
            self._apply_join(replica, fields)
        elif kind == b"L":
            self._apply_leave(replica, [raw.decode() for raw in fields[1:]])

    def _apply_join(self, replica: Replica, fields: list[bytes]) -> None:
        node, uid, announce, token = fields[1], fields[2].decode(), fields[3] == b"1", fields[4].decode()
        alias = SEP.join(fields[6:]).decode() or None
        if uid in replica.members:
            return
        replica.members[uid] = entry = Entry(uid, node, announce, alias)
        if node != self.node_raw:
            self._announce(replica, JoinFrame(total=len(replica.members), date=self.now_ms()), entry)
            return
        pending = replica.pending.get(token) if token else None
        if pending is not None:
            if pending.can_send is None:
                pending.can_send = fields[5] == b"1"  # the record came before the script's reply
            self._admit_pending(replica, token, pending)
            return
        local = self.channels.get(replica.name)
        if local is None or uid not in local.members:
            # Registered for a client that is gone (or unknown): it leaves again.
            del replica.members[uid]
            self._ask_leave(replica, [uid])

    def _apply_leave(self, replica: Replica, uids: list[str]) -> None:
        local = self.channels.get(replica.name)
        gone: list[Entry] = []
        ours_dropped = False
        for uid in uids:
            replica.leaving.discard(uid)
            entry = replica.members.pop(uid, None)
            if entry is None:
                continue
            if local is not None and uid in local.members:
                # One of ours was dropped from Redis (this node looked dead): register it again.
                replica.members[uid] = entry
                ours_dropped = True
                continue
            gone.append(entry)
        self._announce_gone(replica, gone, len(replica.members) + len(gone))
        if ours_dropped:
            self._sync(replica, drop_missing=True)

    def _announce(self, replica: Replica, frame: JoinFrame | LeaveFrame, entry: Entry) -> None:
        local = self.channels.get(replica.name)
        if local is None or self.closing:
            return
        if entry.announce:
            frame.uid, frame.alias = entry.uid, entry.alias
        self._deliver(local.everyone, encode(frame), None)

    def _announce_gone(self, replica: Replica, gone: list[Entry], before: int) -> None:
        date = self.now_ms()
        for k, entry in enumerate(gone):
            self._announce(replica, LeaveFrame(total=before - 1 - k, date=date), entry)

    def _load(self, replica: Replica, seq: int, flat: list[Any], *, drop_missing: bool) -> None:
        """Make the replica what Redis says (a snapshot at record ``seq``), telling the local
        members about every difference; then apply the records that waited."""
        snapshot = sorted((_entry(_text(flat[i]), _raw(flat[i + 1])) for i in range(0, len(flat), 2)), key=_first)
        known = replica.members
        fresh = {entry.uid: entry for _, entry in snapshot}
        local = self.channels.get(replica.name)
        if drop_missing:
            gone = [e for uid, e in known.items() if uid not in fresh and (local is None or uid not in local.members)]
            for entry in gone:
                del known[entry.uid]
            self._announce_gone(replica, gone, len(known) + len(gone))
        for entry in fresh.values():
            if entry.uid in known:
                continue
            known[entry.uid] = entry
            if entry.node != self.node_raw:
                self._announce(replica, JoinFrame(total=len(known), date=self.now_ms()), entry)
                continue
            found = replica.pending_uid(entry.uid)
            if found is not None:  # its record is older than the snapshot: admitted from it
                self._admit_pending(replica, *found)
            elif local is None or entry.uid not in local.members:
                del known[entry.uid]
                self._ask_leave(replica, [entry.uid])
        replica.seq = seq
        replica.synced = True
        waiting, replica.buffered = replica.buffered, []
        replica.buffered_bytes = 0
        for data in waiting:
            if self.replicas.get(replica.name) is not replica or not replica.synced:
                break  # synced afresh meanwhile: the new snapshot covers the rest
            self._apply(replica, data)

    def _sync(self, replica: Replica, *, drop_missing: bool) -> None:
        """Register this node's members of the channel again and reload the replica."""
        if not self.is_online:
            return
        replica.synced = False
        replica.snapshot_asked = True
        local = self.channels.get(replica.name)
        members = list(local.members.values()) if local is not None else []
        args: list[Any] = [
            self.node_raw,
            replica.pub,
            replica.join_digest,
            replica.send_digest,
            replica.name.encode(),
            str(len(members)),
        ]
        for member in members:
            args += [member.uid, b"1" if member.announce else b"0", (member.alias or "").encode()]
        args += [pending.uid for pending in replica.pending.values()]

        def reply(result: Any) -> None:
            if self.replicas.get(replica.name) is not replica:
                return
            self._conflicts(replica, [_text(uid) for uid in result[1]])
            if result[3] or result[4]:
                replica.join_digest, replica.send_digest = _raw(result[3]), _raw(result[4])
            self._load(replica, int(result[0]), result[2], drop_missing=drop_missing)

        self._call(Call("sync", [*replica.keys[:3], self.channels_key], args, reply))

    def _forget(self, name: str) -> None:
        """Remove whatever Redis still has of this node in a channel it no longer serves."""
        m, k, s, pub = channel_keys(name)

        def reply(result: Any) -> None:
            if name not in self.replicas:
                self._unsettled.discard(name)

        args = [self.node_raw, pub, b"", b"", name.encode(), b"0"]
        self._call(Call("sync", [m, k, s, self.channels_key], args, reply))

    def _resync(self, replica: Replica) -> None:
        self.stats["resyncs"] += 1
        replica.buffered.clear()
        replica.buffered_bytes = 0
        self._sync(replica, drop_missing=True)

    def _conflicts(self, replica: Replica, uids: list[str]) -> None:
        """Members admitted here while Redis was away whose uid another node has: closed."""
        local = self.channels.get(replica.name)
        for uid in uids:
            self.stats["uid_conflicts"] += 1
            entry = replica.members.pop(uid, None)
            member = local.members.pop(uid, None) if local is not None else None
            if member is None or local is None:
                continue
            local._changed()
            if entry is not None:
                self._announce(replica, LeaveFrame(total=len(replica.members), date=self.now_ms()), entry)
            member.session.kick(CLOSE_INTERNAL_ERROR, UID_CONFLICT)
        if local is not None and not local.members and self.channels.get(local.name) is local:
            del self.channels[local.name]

    # -- leaving --------------------------------------------------------------------------

    def _depart(self, channel: Channel, departures: list[Departure]) -> None:
        members = channel.members
        gone = self._remove(channel, departures)
        if not gone:
            return
        replica = self.replicas.get(channel.name)
        if replica is not None and self.is_online:
            uids = [member.uid for member, _, _ in gone]
            replica.leaving.update(uids)
            self._ask_leave(replica, uids)
        elif replica is not None:
            # Redis is away: this node announces its leaves itself, as a single relay does.
            before = len(replica.members)
            decided = len(gone)
            for member, _, _ in gone:
                replica.members.pop(member.uid, None)
            if members and not self.closing:
                self._announce_leaves(channel, gone, before)  # slow consumers swept in one pass
            for member, _, _ in gone[decided:]:
                replica.members.pop(member.uid, None)
        if not members and self.channels.get(channel.name) is channel:
            del self.channels[channel.name]
            if replica is not None:
                self._unserve_if_idle(replica)
        for member, code, reason in gone:
            if code is not None:
                member.session.kick(code, reason)

    def _ask_leave(self, replica: Replica, uids: list[str]) -> None:
        m, k, s, pub = replica.keys
        name = replica.name
        local = self.channels.get(name)
        last = (local is None or not local.members) and not replica.pending
        args: list[Any] = [self.node_raw, pub, b"1" if last else b"0", name.encode(), *uids]

        def reply(result: Any) -> None:
            if name not in self.replicas:
                self._unsettled.discard(name)

        self._call(Call("leave", [m, k, s, self.channels_key], args, reply))

    def _unserve_if_idle(self, replica: Replica) -> None:
        local = self.channels.get(replica.name)
        if replica.pending or (local is not None and local.members):
            return
        if self.replicas.get(replica.name) is replica:
            del self.replicas[replica.name]
            self.subscriptions.discard(replica.pub)
            if replica.leaving or not self.is_online:
                self._unsettled.add(replica.name)

    # -- messages -------------------------------------------------------------------------

    def send(self, member: Member, message: msgspec.Raw) -> None:
        if not member.can_send:
            self._drop(member, "send_key", SEND_KEY_REQUIRED)
            return
        channel = member.channel
        payload = encode(Envelope(uid=member.uid, alias=member.alias, date=self.now_ms(), message=message))
        self._deliver(channel.everyone, payload, None if member.echo else member, channel.tally)
        replica = self.replicas.get(channel.name)
        if replica is not None and len(replica.members) > len(channel.members):
            self._publish(replica.pub, payload)

    def send_direct(self, member: Member, uid: str, message: msgspec.Raw) -> None:
        if uid in member.channel.members:
            super().send_direct(member, uid, message)
            return
        if not member.can_send:
            self._drop(member, "send_key", SEND_KEY_REQUIRED)
            return
        replica = self.replicas.get(member.channel.name)
        entry = None if replica is None else replica.members.get(uid)
        if replica is None or entry is None or entry.node == self.node_raw:
            self._drop(member, "unknown_uid", user_not_found(uid))
            return
        payload = encode(Envelope(uid=member.uid, alias=member.alias, date=self.now_ms(), message=message))
        record = b"D" + uid.encode() + SEP + payload + SEP + member.channel.name.encode()
        if self.is_online and self._reserve(len(record)):
            self._batches.pop(replica.pub, None)  # the sender's later broadcasts go after it
            self._call(Call("publish", [b"rc:d:" + entry.node], [record]))

    def push(
        self, name: str, message: msgspec.Raw, key: str | None, client: str = "", waiter: PushWaiter | None = None
    ) -> int | None:
        """HTTP push to every member cluster-wide. A channel this node does not serve is
        pushed through Redis: then None is returned and ``waiter.pushed(n)`` gets the count."""
        self._push_allowed(name, key, client)
        payload = encode(Envelope(date=self.now_ms(), message=message))
        replica = self.replicas.get(name)
        channel = self.channels.get(name)
        if not self.is_online or waiter is None or (replica is not None and replica.synced):
            if channel is not None:
                self._deliver(channel.everyone, payload, None, channel.tally)
            here = 0 if channel is None else len(channel.members)
            if replica is None or not self.is_online:
                return here  # without Redis, only the members here were reached
            if len(replica.members) > here:
                self._publish(replica.pub, payload)
            return len(replica.members)
        m, _, _, pub = channel_keys(name)
        token = next(self._tokens)
        self._pushes[token] = waiter

        def reply(result: Any) -> None:
            if self._pushes.pop(token, None) is not None:
                waiter.pushed(int(result))

        self._call(Call("push", [m], [pub, b"M" + SEP + payload], reply))
        return None

    def _on_direct(self, data: bytes) -> None:
        if data[:1] != b"D":
            return
        uid, _, rest = data[1:].partition(SEP)
        payload, _, name = rest.partition(SEP)
        local = self.channels.get(name.decode())
        target = None if local is None else local.members.get(uid.decode())
        if target is not None and local is not None:
            self._deliver((target,), payload, None, local.tally)

    # -- queueing -------------------------------------------------------------------------

    def _call(self, call: Call) -> None:
        if not self.is_online:
            return
        calls = self.calls
        if call.script != "publish" and call.keys:
            # Messages sent before a join or leave go out before it.
            self._batches.pop(b"rc:c:" + call.keys[0][5:], None)
        calls.append(call)
        if len(calls) == 1:
            self.on_calls()

    def _reserve(self, size: int) -> bool:
        """Count ``size`` bytes against the publish bound; False (and one more drop) when over."""
        if self._queued + size > self.config.cluster.publish_buffer_bytes:
            self.stats["dropped_messages"] += 1
            return False
        self._queued += size
        self.stats["published"] += 1
        return True

    def _publish(self, pub: bytes, payload: bytes) -> None:
        """Queue ``payload`` for the other nodes serving the channel (bounded; at-most-once)."""
        if not self.is_online:
            return
        size = len(payload) + 1
        if not self._reserve(size):
            return
        batch = self._batches.get(pub)
        if batch is not None:
            data: bytearray = batch.args[0]
            if len(data) + size <= MAX_RECORD:
                data += MSG_SEP
                data += payload
                return
        batch = Call("publish", [pub], [bytearray(b"M" + self.node_raw + SEP + payload)])
        self._batches[pub] = batch
        self.calls.append(batch)
        if len(self.calls) == 1:
            self.on_calls()


def _first(item: tuple[int, Entry]) -> int:
    return item[0]


def _nothing() -> None:
    pass
