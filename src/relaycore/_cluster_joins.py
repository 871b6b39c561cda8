"""A join's way through the cluster: from the node's backplane to Redis and back.

Theory of operation. A join to a reserved namespace is decided here at once (the
configuration is the same on every node); an open channel's keys are decided by the join
script, atomically, from the digests Redis keeps. The node picks a uid free in its replica
and sends the join script with a token of its own; the script may answer that the uid is
taken (another node's joiner got it first: the node picks another and asks again), that
the join key is wrong (the join is refused), or that the member is in. The joiner is
admitted when its own ``J`` record comes back (see :mod:`relaycore._cluster_replication`),
so it hears exactly the events after its join. The first join of a channel the node did not
serve also asks for the members as they are (the snapshot).

While Redis is away the node decides joins itself, as one relay does, with the same rule
(:class:`~relaycore._access.Access`, in its digest form) and a uid free in its replica.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ._access import DIGEST
from ._channel import JoiningSession, Member
from ._cluster_calls import Call, CallQueue
from ._cluster_replica import Entry, Pending, Replica, tell_joined, text
from ._cluster_replication import Replication
from ._cluster_scripts import key_digest
from ._errors import HTTPError
from ._hub import Hub
from ._protocols import JoinRequest
from ._texts import JOIN_KEY_REQUIRED

__all__ = ["Joining"]


class Joining:
    """The joins of one node: asked of Redis, or decided here while Redis is away."""

    __slots__ = ("_channels_key", "_hub", "_node_raw", "_queue", "_replication", "_tokens")

    def __init__(
        self,
        hub: Hub,
        replication: Replication,
        queue: CallQueue,
        node_raw: bytes,
        channels_key: bytes,
        tokens: Iterator[int],
    ) -> None:
        self._hub = hub
        self._replication = replication
        self._queue = queue
        self._node_raw = node_raw
        self._channels_key = channels_key
        #: The node's numbers for its joins and pushes (one sequence for both).
        self._tokens = tokens

    def join(self, request: JoinRequest) -> Member | None:
        """The node's backplane decision: the member now (Redis away), or None and later."""
        name = request.name
        access = self._hub.access
        reservation = access.reservation(name)
        can_send = None if reservation is None else access.reserved(reservation, request.options)
        replica = self._replication.serve(name)
        if not self._queue.online:
            try:
                return self._admit_here(replica, request, can_send, None)
            except HTTPError:
                self._replication.unserve_if_idle(replica)
                raise
        token = str(next(self._tokens))
        pending = replica.pending[token] = Pending(request, self._uid(replica), can_send)
        self._ask(replica, token, pending)
        return None

    def decide_here(self, replica: Replica) -> None:
        """Redis is gone: admit (or refuse) here, now, every join still waiting for it."""
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
                tell_joined(request, member)

    def _uid(self, replica: Replica) -> str:
        return self._hub.presence.new_uid(replica.taken)

    def _ask(self, replica: Replica, token: str, pending: Pending) -> None:
        options = pending.request.options
        snapshot = not replica.synced and not replica.snapshot_asked
        replica.snapshot_asked = replica.snapshot_asked or snapshot
        reserved = pending.can_send is not None
        m, k, s, pub = replica.keys
        args = [
            pending.uid,
            self._node_raw,
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
            self._reply(replica, token, snapshot, reserved, result)

        self._queue.call(Call("join", [m, k, s, self._channels_key], args, reply))

    def _reply(self, replica: Replica, token: str, snapshot: bool, reserved: bool, result: Any) -> None:
        replication = self._replication
        if replication.replicas.get(replica.name) is not replica:
            return
        status = text(result[0])
        if status == "ok" and not reserved:
            replica.keep_digests(result[3], result[4])
        pending = replica.pending.get(token)
        if pending is None:  # admitted already: its own record came first
            return
        if snapshot and status != "ok":
            replica.snapshot_asked = False
        if status == "taken":
            pending.uid = self._uid(replica)
            self._ask(replica, token, pending)
            return
        if status == "key":
            del replica.pending[token]
            self._refused(replica, pending.request, HTTPError(403, JOIN_KEY_REQUIRED))
            if replication.replicas.get(replica.name) is replica and not replica.synced and not replica.snapshot_asked:
                replication.sync(replica, drop_missing=True)  # the joins behind it still need a snapshot
            return
        if pending.can_send is None:
            pending.can_send = bool(int(result[2]))
        if snapshot:
            replication.load(replica, int(result[1]) - 1, result[5], drop_missing=True)

    def _admit_here(self, replica: Replica, request: JoinRequest, can_send: bool | None, uid: str | None) -> Member:
        """Admit ``request`` on this node's own authority (Redis unreachable)."""
        options = request.options
        if can_send is None:
            can_send = self._hub.access.open(replica, options, not replica.members, DIGEST)
        if uid is None or uid in replica.members:
            uid = self._uid(replica)
        replica.add(Entry(uid, self._node_raw, options.announce, options.alias))
        return self._replication.admit(replica, request, uid, can_send)

    def _refused(self, replica: Replica, request: JoinRequest, error: HTTPError) -> None:
        session = request.session
        self._replication.unserve_if_idle(replica)
        if isinstance(session, JoiningSession):
            session.join_refused(error)
