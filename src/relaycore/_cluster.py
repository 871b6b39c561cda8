"""A hub that is one node of a cluster: several relay processes on one Redis, one relay.

Theory of operation. Every node keeps its own members, exactly as a single relay does, and
a *replica* of each channel it serves (has members or joins in flight in): every member of
the channel cluster-wide, with its node, in join order. Redis holds the truth, changed only
by the Lua scripts below, each atomic:

- ``rc:m:{C}`` hash uid -> ``node \\x1f seq \\x1f announce \\x1f alias``: the members of C;
- ``rc:k:{C}`` the SHA-256 digests of the keys C's first joiner set (open channels);
- ``rc:s:{C}`` C's event counter; ``rc:c:{C}`` C's pub/sub channel;
- ``rc:o:<node>`` the channels a node has members in; ``rc:n:<node>`` its heartbeat (with a
  TTL); ``rc:nodes`` every node known; ``rc:d:<node>`` its own pub/sub channel.

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
then, already encoded, to each other node with members in the channel, on that node's own
channel: the messages of a burst for one node share one ``M`` record whatever their
channels, and no node hears its own messages back. The receiving node hands the same bytes
to its members, the messages of one record to each member in one batch. A node publishes
nothing for a channel no other node has members in, and subscribes only to channels it
serves. Direct messages go to the target's node only.

The core decides; the transport only carries. It takes :attr:`ClusterHub.calls` (scripts and
publishes, in order), keeps the subscriptions equal to :attr:`ClusterHub.subscriptions`,
feeds every pub/sub message to :meth:`ClusterHub.feed`, and reports each script's reply to
the call's ``reply``. When Redis goes away it calls :meth:`ClusterHub.offline`: from then on
the node is a relay of its own (joins and leaves decided and announced locally, messages
delivered locally); :meth:`ClusterHub.online` after reconnecting re-registers every member
(``sync``) and, a node timeout later, :meth:`ClusterHub.repair` drops the members of nodes
that did not come back.

The node is a :class:`~relaycore.Hub` (its members, presence frames, fan-out and key rules
are the hub's own, used as they are) with these parts of its own, one module each:

- ``_cluster_calls``: :class:`Call` and the queue of calls for Redis (``M`` records, one
  per node and burst; the publish bound);
- ``_cluster_replica``: a channel's replica, its members anywhere, its joins in flight;
- ``_cluster_replication``: records and snapshots applied to the replicas, syncs;
- ``_cluster_joins``: a join asked of Redis, or decided here while Redis is away;
- ``_cluster_scripts``: the Redis keys and the Lua scripts;
- here: what the transport drives, and the hub's four seams a node overrides
  (:meth:`~relaycore.Hub.broadcast`, :meth:`~relaycore.Hub.forward`,
  :meth:`~relaycore.Hub.deliver_push`, :meth:`~relaycore.Hub.departed`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import msgspec

from ._channel import Channel, Departure, Member
from ._cluster_calls import SEP, Call, CallQueue
from ._cluster_host import ClusterHostSide
from ._cluster_joins import Joining
from ._cluster_replica import Replica
from ._cluster_replication import Replication
from ._cluster_scripts import SCRIPTS, channel_keys, node_keys
from ._config import Config
from ._errors import HTTPError
from ._fanout import envelope
from ._hub import Hub
from ._protocols import Admitting, JoinRequest, PushWaiter, UidSource
from ._texts import CLUSTER_UNAVAILABLE

__all__ = ["SCRIPTS", "Call", "ClusterHub", "channel_keys"]


class _Plane:
    """The node's backplane: every join goes through the cluster (the node decides it)."""

    __slots__ = ("node",)

    def __init__(self, node: ClusterHub) -> None:
        self.node = node

    def join(self, hub: Admitting, request: JoinRequest) -> Member | None:
        return self.node.joining.join(request)


class ClusterHub(ClusterHostSide, Hub):
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
        #: Counters for logs and metrics.
        self.stats = {
            "records_in": 0,
            "bytes_in": 0,
            "published": 0,
            "dropped_messages": 0,
            "uid_conflicts": 0,
            "resyncs": 0,
        }
        #: What Redis is to do, in order, and whether Redis is reachable.
        self.queue = CallQueue(self.node_raw, config.cluster, self.stats)
        #: The channels served, each kept equal to Redis.
        self.replication = Replication(self, self.queue, self.node_raw, self.channels_key, self.direct_key, self.stats)
        # What each broadcast looks at, bound once.
        self._replicas = self.replication.replicas
        self._publish = self.queue.publish
        tokens = itertools.count(1)
        #: Joins on their way through Redis.
        self.joining = Joining(self, self.replication, self.queue, self.node_raw, self.channels_key, tokens)
        self._tokens = tokens
        #: Long polls asked of other nodes, by request id (``_cluster_host``).
        self._remote_polls: dict[bytes, Any] = {}
        self.http.suffix = self._token_suffix()
        #: HTTP pushes waiting for Redis's count, by token.
        self._pushes: dict[int, PushWaiter] = {}

    # -- what the transport drives ------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        """What Redis is to do, in order (taken by the transport with :meth:`take_calls`)."""
        return self.queue.calls

    @property
    def on_calls(self) -> Callable[[], None]:
        """Called when :attr:`calls` gets its first entry (the transport's wake-up)."""
        return self.queue.wake

    @on_calls.setter
    def on_calls(self, wake: Callable[[], None]) -> None:
        self.queue.wake = wake

    @property
    def is_online(self) -> bool:
        """Whether Redis is reachable (the transport says, with :meth:`online` and :meth:`offline`)."""
        return self.queue.online

    @property
    def replicas(self) -> dict[str, Replica]:
        """Channels served, by name."""
        return self.replication.replicas

    @property
    def subscriptions(self) -> set[bytes]:
        """The pub/sub channels this node must be subscribed to."""
        return self.replication.subscriptions

    def take_calls(self) -> list[Call]:
        """Everything queued for Redis, in order (and forget it)."""
        return self.queue.take()

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
        else:
            self.replication.receive(channel, data)

    def offline(self) -> None:
        """Redis is gone: decide everything here until :meth:`online`.

        Queued calls are dropped (messages to other nodes are lost: at-most-once); leaves
        Redis has not confirmed are announced here, and joins waiting for Redis are
        admitted here, now.
        """
        self.queue.online = False
        self.queue.drop()
        waiters = list(self._pushes.values())
        self._pushes.clear()
        for waiter in waiters:
            waiter.push_failed(HTTPError(503, CLUSTER_UNAVAILABLE, [(b"retry-after", b"1")]))
        for replica in list(self.replicas.values()):
            self.replication.alone(replica)
            self.joining.decide_here(replica)
            self.replication.unserve_if_idle(replica)

    def online(self) -> None:
        """Redis is back (or reached for the first time): register every member again."""
        self.queue.online = True
        self.replication.resume()

    def repair(self) -> None:
        """A node timeout after :meth:`online`: forget the members of nodes that are gone."""
        if self.is_online:
            self.replication.repair()

    # -- the hub's seams ------------------------------------------------------------------

    def departed(self, channel: Channel, gone: list[Departure], before: int) -> None:
        """Members of this node left: Redis is asked, and everyone hears of it from its ``L``
        record; without Redis, this node announces them itself, as one relay does."""
        replica = self.replicas.get(channel.name)
        if replica is None:
            return
        if self.is_online:
            uids = [member.uid for member, _, _ in gone]
            replica.leaving.update(uids)
            self.replication.ask_leave(replica, uids)
        else:
            decided = len(gone)
            before = len(replica.members)
            for member, _, _ in gone:
                replica.drop(member.uid)
            super().departed(channel, gone, before)  # slow consumers swept in the same pass
            for member, _, _ in gone[decided:]:
                replica.drop(member.uid)
        if not channel.members and self.channels.get(channel.name) is channel:
            self.replication.unserve_if_idle(replica)

    def broadcast(self, channel: Channel, payload: bytes, skip: Member | None) -> None:
        """A member's message: to this node's members now, then to the other nodes with
        members in the channel, as part of each one's ``M`` record."""
        if skip is None or len(channel.members) > 1:  # (the sender alone here: no frame to make)
            super().broadcast(channel, payload, skip)
        replica = self._replicas.get(channel.name)
        if replica is not None:
            others = replica.others
            if others:
                self._publish(others, replica.head, payload)

    def forward(self, member: Member, uid: str, message: msgspec.Raw) -> bool:
        """A direct message to a member of another node: published on that node's channel."""
        replica = self.replicas.get(member.channel.name)
        entry = None if replica is None else replica.members.get(uid)
        if replica is None or entry is None or entry.node == self.node_raw:
            return False
        payload = envelope(self.now_ms(), message, member)
        record = b"D" + uid.encode() + SEP + payload + SEP + member.channel.name.encode()
        self.queue.publish_direct(entry.node, record)
        return True

    def deliver_push(self, name: str, message: msgspec.Raw, waiter: PushWaiter | None) -> int | None:
        """An HTTP push to every member cluster-wide. A channel this node does not serve is
        pushed through Redis: then None is returned and ``waiter.pushed(n)`` gets the count."""
        payload = envelope(self.now_ms(), message)
        replica = self.replicas.get(name)
        channel = self.channels.get(name)
        if not self.is_online or waiter is None or (replica is not None and replica.synced):
            if channel is not None:
                self.fanout.broadcast(channel, payload, None, channel.tally)
            here = 0 if channel is None else len(channel.members)
            if replica is None or not self.is_online:
                return here  # without Redis, only the members here were reached
            if replica.others:
                self.queue.publish(replica.others, replica.head, payload)
            return len(replica.members)
        m, _, _, pub = channel_keys(name)
        token = next(self._tokens)
        self._pushes[token] = waiter

        def reply(result: Any) -> None:
            if self._pushes.pop(token, None) is not None:
                waiter.pushed(int(result))

        self.queue.call(Call("push", [m], [pub, b"M" + SEP + payload], reply))
        return None

    def _on_direct(self, data: bytes) -> None:
        kind = data[:1]
        if kind == b"M":
            self.replication.receive_messages(data)
            return
        if kind != b"D":
            self._on_host_record(data)  # the host's calls, the HTTP door (_cluster_host)
            return
        uid, _, rest = data[1:].partition(SEP)
        payload, _, name = rest.partition(SEP)
        local = self.channels.get(name.decode())
        target = None if local is None else local.members.get(uid.decode())
        if target is not None and local is not None:
            self.fanout.deliver((target,), payload, None, local.tally)
