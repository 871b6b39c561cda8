"""A cluster node's replicas: each served channel kept equal to Redis, and told to its members.

Theory of operation. A node serves a channel while it has members in it or joins in flight:
it is subscribed to the channel's pub/sub channel and keeps a :class:`Replica` of it. Every
change of the channel's members reaches every serving node as a numbered record (``J``, a
join; ``L``, leaves), and :class:`Replication` applies them in their order; that is the only
place the node's members hear of other members coming and going (through the hub's
:class:`~relaycore._presence.Presence`, totals counted from the replica). A node's own
joiner is admitted here too, when its own ``J`` record comes back.

A replica is loaded from a snapshot of Redis's members hash (asked for by the first join,
or by a *sync*): records that arrive before it wait, and those the snapshot already counts
are skipped by their number. A sync registers the node's members again (after an outage,
or when a node was taken for dead) and reloads the replica, telling the members every
difference.

Messages from other nodes come in ``M`` records on the node's own channel, several channels
to a record (see :mod:`relaycore._cluster_calls`). Each channel's messages of one record reach
each local member in one batch: the frames made once and joined once, one put per member,
the members that cannot take the whole batch departing together as slow consumers. While a
replica waits for its snapshot, its messages wait with its records, in their order.
"""

from __future__ import annotations

from typing import Any

from ._access import DIGEST
from ._channel import Channel, Departure, Member
from ._cluster_calls import MSG_SEP, SEP, Call, CallQueue, runs
from ._cluster_replica import Entry, Pending, Replica, parse_entry, raw, tell_joined, text
from ._cluster_scripts import channel_keys
from ._hub import Hub
from ._protocols import JoinRequest
from ._texts import CLOSE_INTERNAL_ERROR, CLOSE_POLICY, SLOW_CONSUMER, UID_CONFLICT
from ._wire import JoinFrame, LeaveFrame, text_frame

__all__ = ["MAX_BUFFERED", "MAX_BUFFERED_BYTES", "Replication"]

#: Records (and their bytes) buffered for a channel waiting for its snapshot, before it is
#: synced afresh instead.
MAX_BUFFERED = 100_000
MAX_BUFFERED_BYTES = 16 << 20


def _first(item: tuple[int, Entry]) -> int:
    return item[0]


class Replication:
    """The replicas of the channels one node serves (see the module's docs)."""

    __slots__ = ("_channels_key", "_hub", "_node_raw", "_queue", "_stats", "replicas", "subscriptions", "unsettled")

    def __init__(
        self,
        hub: Hub,
        queue: CallQueue,
        node_raw: bytes,
        channels_key: bytes,
        direct_key: bytes,
        stats: dict[str, int],
    ) -> None:
        self._hub = hub
        self._queue = queue
        self._node_raw = node_raw
        self._channels_key = channels_key
        self._stats = stats
        #: Channels served, by name.
        self.replicas: dict[str, Replica] = {}
        #: The pub/sub channels this node must be subscribed to.
        self.subscriptions: set[bytes] = {direct_key}
        #: Channels no longer served whose last leaves Redis may not have heard of.
        self.unsettled: set[str] = set()

    # -- serving --------------------------------------------------------------------------

    def serve(self, name: str) -> Replica:
        """The replica of channel ``name``, served from now on if it was not."""
        replica = self.replicas.get(name)
        if replica is None:
            replica = self.replicas[name] = Replica(name, self._node_raw)
            replica.synced = not self._queue.online
            self.subscriptions.add(replica.pub)
        return replica

    def unserve_if_idle(self, replica: Replica) -> None:
        """Stop serving a channel with no members here and no joins in flight."""
        local = self._hub.channels.get(replica.name)
        if replica.pending or (local is not None and local.members):
            return
        if self.replicas.get(replica.name) is replica:
            del self.replicas[replica.name]
            self.subscriptions.discard(replica.pub)
            if replica.leaving or not self._queue.online:
                self.unsettled.add(replica.name)

    def alone(self, replica: Replica) -> None:
        """Redis is gone: the replica is this node's to keep; leaves Redis has not confirmed
        are announced now."""
        replica.synced = True
        replica.snapshot_asked = False
        replica.drop_buffered()
        gone = [entry for entry in map(replica.drop, sorted(replica.leaving)) if entry is not None]
        replica.leaving.clear()
        self._announce_gone(replica, gone, len(replica.members) + len(gone))

    def resume(self) -> None:
        """Redis is back: register every member again, settle the channels left meanwhile."""
        for replica in self.replicas.values():
            self.sync(replica, drop_missing=False)
        for name in sorted(self.unsettled):
            if name in self.replicas:
                self.unsettled.discard(name)  # its sync settles it
            else:
                self._forget(name)

    def repair(self) -> None:
        """Forget the members of nodes that are gone: every replica reloaded from Redis."""
        for replica in self.replicas.values():
            self.sync(replica, drop_missing=True)

    # -- records --------------------------------------------------------------------------

    def receive(self, channel: bytes, data: bytes) -> None:
        """A record arrived on a channel's pub/sub channel ``rc:c:{name}``."""
        replica = self.replicas.get(channel[6:-1].decode())
        if replica is None or not data:
            return
        if replica.synced:
            self._apply(replica, data)
            return
        replica.buffered.append(data)
        replica.buffered_bytes += len(data)
        if len(replica.buffered) > MAX_BUFFERED or replica.buffered_bytes > MAX_BUFFERED_BYTES:
            self._stats["resyncs"] += 1
            replica.drop_buffered()
            self.sync(replica, drop_missing=True)

    def receive_messages(self, record: bytes) -> None:
        """An ``M`` record on this node's own channel: messages of the channels it serves."""
        replicas, channels, broadcast = self.replicas, self._hub.channels, self._hub.fanout.broadcast
        for name, payloads in runs(record).items():
            replica = replicas.get(name)
            if replica is None:
                continue  # no longer served here
            if not replica.synced:  # in its place among the channel's records waiting for the snapshot
                self.receive(replica.pub, b"M" + SEP + MSG_SEP.join(payloads))
                continue
            local = channels.get(name)
            if local is None:
                continue
            if len(payloads) == 1:  # (one message: as any delivery)
                broadcast(local, payloads[0], None, local.tally)
            else:
                self.deliver(local, payloads)

    def deliver(self, local: Channel, payloads: list[bytes]) -> None:
        """Messages from another node, to this node's members of ``local``: one batch per
        member (the frames made once and joined once); those whose outbox cannot take the
        batch are slow consumers, departing together."""
        frames = b"".join(map(text_frame, payloads))
        slow: list[Departure] | None = None
        recipients = local.everyone
        for member in recipients:
            if not member.outbox.put_batch(payloads, frames):
                if slow is None:
                    slow = []
                slow.append((member, CLOSE_POLICY, SLOW_CONSUMER))
        tally = local.tally
        reached = len(recipients) - (0 if slow is None else len(slow))
        tally.delivered += reached * len(payloads)
        tally.bytes_out += reached * sum(map(len, payloads))
        if slow is not None:
            tally.dropped["slow_consumer"] += len(slow)
            self._hub.depart(local, slow)

    def _apply(self, replica: Replica, data: bytes) -> None:
        """Apply one record, in the cluster's order."""
        kind = data[:1]
        if kind == b"M":  # an HTTP push from a node not serving the channel, or waiting messages
            local = self._hub.channels.get(replica.name)
            if local is not None:
                self.deliver(local, data[1:].partition(SEP)[2].split(MSG_SEP))
            return
        fields = data[1:].split(SEP)
        seq = int(fields[0])
        if seq <= replica.seq:
            return  # already counted (in the snapshot)
        replica.seq = seq
        if kind == b"J":
            self._apply_join(replica, fields)
        elif kind == b"L":
            self._apply_leave(replica, [field.decode() for field in fields[1:]])

    def _apply_join(self, replica: Replica, fields: list[bytes]) -> None:
        node, uid, announce, token = fields[1], fields[2].decode(), fields[3] == b"1", fields[4].decode()
        alias = SEP.join(fields[6:]).decode() or None
        if uid in replica.members:
            return
        entry = Entry(uid, node, announce, alias)
        replica.add(entry)
        if node != self._node_raw:
            self._announce(replica, JoinFrame(total=len(replica.members), date=self._hub.now_ms()), entry)
            return
        pending = replica.pending.get(token) if token else None
        if pending is not None:
            if pending.can_send is None:
                pending.can_send = fields[5] == b"1"  # the record came before the script's reply
            self._admit_pending(replica, token, pending)
            return
        local = self._hub.channels.get(replica.name)
        if local is None or uid not in local.members:
            # Registered for a client that is gone (or unknown): it leaves again.
            replica.drop(uid)
            self.ask_leave(replica, [uid])

    def _apply_leave(self, replica: Replica, uids: list[str]) -> None:
        local = self._hub.channels.get(replica.name)
        gone: list[Entry] = []
        ours_dropped = False
        for uid in uids:
            replica.leaving.discard(uid)
            entry = replica.drop(uid)
            if entry is None:
                continue
            if local is not None and uid in local.members:
                # One of ours was dropped from Redis (this node looked dead): register it again.
                replica.add(entry)
                ours_dropped = True
                continue
            gone.append(entry)
        self._announce_gone(replica, gone, len(replica.members) + len(gone))
        if ours_dropped:
            self.sync(replica, drop_missing=True)

    def _announce(self, replica: Replica, frame: JoinFrame | LeaveFrame, entry: Entry) -> None:
        local = self._hub.channels.get(replica.name)
        if local is None or self._hub.closing:
            return
        self._hub.presence.announce(local, frame, entry)

    def _announce_gone(self, replica: Replica, gone: list[Entry], before: int) -> None:
        date = self._hub.now_ms()
        for k, entry in enumerate(gone):
            self._announce(replica, LeaveFrame(total=before - 1 - k, date=date), entry)

    # -- snapshots ------------------------------------------------------------------------

    def load(self, replica: Replica, seq: int, flat: list[Any], *, drop_missing: bool) -> None:
        """Make the replica what Redis says (a snapshot at record ``seq``), telling the local
        members about every difference; then apply the records that waited."""
        snapshot = sorted((parse_entry(text(flat[i]), raw(flat[i + 1])) for i in range(0, len(flat), 2)), key=_first)
        known = replica.members
        fresh = {entry.uid: entry for _, entry in snapshot}
        local = self._hub.channels.get(replica.name)
        if drop_missing:
            gone = [e for uid, e in known.items() if uid not in fresh and (local is None or uid not in local.members)]
            for entry in gone:
                replica.drop(entry.uid)
            self._announce_gone(replica, gone, len(known) + len(gone))
        for entry in fresh.values():
            if entry.uid in known:
                continue
            replica.add(entry)
            if entry.node != self._node_raw:
                self._announce(replica, JoinFrame(total=len(known), date=self._hub.now_ms()), entry)
                continue
            found = replica.pending_uid(entry.uid)
            if found is not None:  # its record is older than the snapshot: admitted from it
                self._admit_pending(replica, *found)
            elif local is None or entry.uid not in local.members:
                replica.drop(entry.uid)
                self.ask_leave(replica, [entry.uid])
        replica.seq = seq
        replica.synced = True
        waiting, replica.buffered = replica.buffered, []
        replica.buffered_bytes = 0
        for data in waiting:
            if self.replicas.get(replica.name) is not replica or not replica.synced:
                break  # synced afresh meanwhile: the new snapshot covers the rest
            self._apply(replica, data)

    def sync(self, replica: Replica, *, drop_missing: bool) -> None:
        """Register this node's members of the channel again and reload the replica."""
        if not self._queue.online:
            return
        replica.synced = False
        replica.snapshot_asked = True
        local = self._hub.channels.get(replica.name)
        members = list(local.members.values()) if local is not None else []
        args: list[Any] = [self._node_raw, replica.pub, *replica.digests(), replica.name.encode(), str(len(members))]
        for member in members:
            args += [member.uid, b"1" if member.announce else b"0", (member.alias or "").encode()]
        args += [pending.uid for pending in replica.pending.values()]

        def reply(result: Any) -> None:
            if self.replicas.get(replica.name) is not replica:
                return
            self._conflicts(replica, [text(uid) for uid in result[1]])
            if result[3] or result[4]:
                replica.keep_digests(result[3], result[4])
            self.load(replica, int(result[0]), result[2], drop_missing=drop_missing)

        self._queue.call(Call("sync", [*replica.keys[:3], self._channels_key], args, reply))

    def _forget(self, name: str) -> None:
        """Remove whatever Redis still has of this node in a channel it no longer serves."""
        m, k, s, pub = channel_keys(name)

        def reply(result: Any) -> None:
            if name not in self.replicas:
                self.unsettled.discard(name)

        args = [self._node_raw, pub, b"", b"", name.encode(), b"0"]
        self._queue.call(Call("sync", [m, k, s, self._channels_key], args, reply))

    def _conflicts(self, replica: Replica, uids: list[str]) -> None:
        """Members admitted here while Redis was away whose uid another node has: closed."""
        channels = self._hub.channels
        local = channels.get(replica.name)
        for uid in uids:
            self._stats["uid_conflicts"] += 1
            entry = replica.drop(uid)
            member = local.members.get(uid) if local is not None else None
            if member is None or local is None:
                continue
            self._hub.presence.remove(local, [(member, CLOSE_INTERNAL_ERROR, UID_CONFLICT)])
            if entry is not None:
                self._announce(replica, LeaveFrame(total=len(replica.members), date=self._hub.now_ms()), entry)
            member.session.kick(CLOSE_INTERNAL_ERROR, UID_CONFLICT)
        if local is not None and not local.members and channels.get(local.name) is local:
            del channels[local.name]

    # -- this node's members --------------------------------------------------------------

    def admit(self, replica: Replica, request: JoinRequest, uid: str, can_send: bool) -> Member:
        """Make the member (already in the replica) and send the presence frames."""
        name = replica.name
        channels = self._hub.channels
        channel: Channel | None = channels.get(name)
        if channel is None:
            channel = channels[name] = self._hub.presence.open(name)
        return self._hub.presence.enroll(channel, uid, request, can_send, replica.members.values())

    def _admit_pending(self, replica: Replica, token: str, pending: Pending) -> None:
        del replica.pending[token]
        if pending.can_send is not None:
            can_send = pending.can_send
        else:  # decided by Redis from the digests, as one relay decides from the keys
            can_send = self._hub.access.may_send(replica, pending.request.options, DIGEST)
        member = self.admit(replica, pending.request, pending.uid, can_send)
        tell_joined(pending.request, member)

    def ask_leave(self, replica: Replica, uids: list[str]) -> None:
        """Ask Redis to remove this node's members ``uids`` from the channel."""
        m, k, s, pub = replica.keys
        name = replica.name
        local = self._hub.channels.get(name)
        last = (local is None or not local.members) and not replica.pending
        args: list[Any] = [self._node_raw, pub, b"1" if last else b"0", name.encode(), *uids]

        def reply(result: Any) -> None:
            if name not in self.replicas:
                self.unsettled.discard(name)

        self._queue.call(Call("leave", [m, k, s, self._channels_key], args, reply))
