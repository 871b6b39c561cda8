"""What a cluster node knows of a channel it serves: its replica, and the joins in flight.

A :class:`Replica` holds every member of the channel cluster-wide (an :class:`Entry` each,
with its node), in join order, as the channel's numbered records built it; the other nodes
that have members in it (where its messages go, kept as members come and go); the digests of
the keys the channel's first joiner set (kept in the :data:`~relaycore._access.DIGEST`
form, so :class:`~relaycore._access.Access` decides with them exactly as one relay does with
the keys); and this node's joins waiting for Redis (a :class:`Pending` each, by token).
"""

from __future__ import annotations

from typing import Any

from ._channel import JoiningSession, Member
from ._cluster_calls import SEP, run_head
from ._cluster_scripts import channel_keys
from ._protocols import JoinRequest

__all__ = ["Entry", "Pending", "Replica", "parse_entry", "raw", "tell_joined", "text"]


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
        "_far",
        "buffered",
        "buffered_bytes",
        "head",
        "home",
        "join_key",
        "keys",
        "leaving",
        "members",
        "name",
        "others",
        "pending",
        "pub",
        "send_key",
        "seq",
        "snapshot_asked",
        "synced",
    )

    def __init__(self, name: str, home: bytes) -> None:
        self.name = name
        #: The node keeping this replica.
        self.home = home
        #: The channel's names in Redis: members hash, keys hash, counter, pub/sub channel.
        self.keys = channel_keys(name)
        self.pub = self.keys[3]
        #: What starts the channel's run of messages in an ``M`` record to another node.
        self.head = run_head(name)
        #: Every member, in join order (changed through :meth:`add` and :meth:`drop` only).
        self.members: dict[str, Entry] = {}
        #: The other nodes with members in the channel: where its messages go.
        self.others: tuple[bytes, ...] = ()
        self._far: dict[bytes, int] = {}
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
        #: The SHA-256 digests of the keys the first joiner set (None: no such key).
        self.join_key: bytes | None = None
        self.send_key: bytes | None = None

    def add(self, entry: Entry) -> None:
        """A member joins the replica (last in join order)."""
        if entry.uid in self.members:
            self.drop(entry.uid)
        self.members[entry.uid] = entry
        node = entry.node
        if node != self.home:
            far = self._far
            count = far.get(node, 0)
            far[node] = count + 1
            if not count:
                self.others = tuple(far)

    def drop(self, uid: str) -> Entry | None:
        """Member ``uid`` leaves the replica: its entry (None if it was not in it)."""
        entry = self.members.pop(uid, None)
        if entry is not None and entry.node != self.home:
            far = self._far
            count = far[entry.node] - 1
            if count:
                far[entry.node] = count
            else:
                del far[entry.node]
                self.others = tuple(far)
        return entry

    def pending_uid(self, uid: str) -> tuple[str, Pending] | None:
        """The local join waiting for Redis with ``uid``, and its token."""
        for token, pending in self.pending.items():
            if pending.uid == uid:
                return token, pending
        return None

    def taken(self, uid: str) -> bool:
        """Whether ``uid`` is a member's, or a waiting join's, anywhere in the cluster."""
        return uid in self.members or self.pending_uid(uid) is not None

    def digests(self) -> list[bytes]:
        """The key digests as Redis keeps them (empty: no key)."""
        return [self.join_key or b"", self.send_key or b""]

    def keep_digests(self, join: Any, send: Any) -> None:
        """Take the key digests Redis has (empty: no key)."""
        self.join_key = raw(join) or None
        self.send_key = raw(send) or None

    def drop_buffered(self) -> None:
        """Forget the records waiting for a snapshot (a new one covers them)."""
        self.buffered.clear()
        self.buffered_bytes = 0


def text(value: Any) -> str:
    """A Redis reply as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def raw(value: Any) -> bytes:
    """A Redis reply as bytes."""
    return value if isinstance(value, bytes) else str(value).encode()


def parse_entry(uid: str, value: bytes) -> tuple[int, Entry]:
    """A field of the members hash: ``node \\x1f seq \\x1f announce \\x1f alias``."""
    node, seq, announce, alias = value.split(SEP, 3)
    return int(seq), Entry(uid, node, announce == b"1", alias.decode() or None)


def tell_joined(request: JoinRequest, member: Member) -> None:
    """Tell a join's session (one that can wait for the cluster) that it is in."""
    session = request.session
    if isinstance(session, JoiningSession):
        session.joined(member)
