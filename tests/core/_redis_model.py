"""An in-memory Redis running the cluster's scripts, and a harness of ClusterHub nodes on it.

- :class:`RedisModel`: the keys a cluster uses (strings, hashes, sets, pub/sub) and each Lua
  script of :data:`relaycore.SCRIPTS` rewritten in Python, command for command, with the
  reply shapes coredis gives with ``decode_responses=False``: bulk strings as ``bytes``,
  integers as ``int``, Lua tables as lists, Lua ``false`` as None.
- :class:`FakeCluster`: several :class:`relaycore.ClusterHub` nodes on one model, each with
  the transport's side done by plain calls (:class:`Node`): send the queued calls (one
  pipeline), answer their replies, feed the pub/sub messages, in any order the test likes.
- :class:`Client`: a member as its WebSocket client sees it (the frames in its outbox).

Time never runs down in the model: a key with a TTL lives until a test expires it
(:meth:`RedisModel.expire`), which is how a node's heartbeat is made to lapse.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec

from relaycore import SCRIPTS, Call, ClusterHub, Config, HTTPError, JoinOptions, Member
from relaycore.testing import FakeClock, seeded_uids

from ._frames import parse_frames

SEP = b"\x1f"
DAY_MS = 86_400_000


def _b(value: Any) -> bytes:
    """An argument as Redis receives it (coredis encodes ``str`` and numbers)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


class RedisModel:
    """The Redis state a cluster uses, changed only by commands and the scripts below.

    Sets are insertion-ordered dicts, so every run iterates them the same way. That is one
    order Redis may give, not the only one: Redis keeps a set in an order of its own (sorted
    if all its members are integers), and a hash in insertion order only while it is a
    listpack (at most 128 fields of at most 64 bytes: a member with a 64-character alias
    is over). Nothing may depend on those orders (the reaper's, HGETALL's); the rest is
    compared with a real Redis by tests/transports/test_redis_model_vs_redis.py.
    """

    def __init__(self) -> None:
        self.strings: dict[bytes, bytes] = {}
        self.hashes: dict[bytes, dict[bytes, bytes]] = {}
        self.sets: dict[bytes, dict[bytes, None]] = {}
        #: Keys with an expiry, and its length in ms (it never runs down by itself).
        self.ttl: dict[bytes, int] = {}
        #: The pub/sub connections: anything with ``channels`` and ``inbox``.
        self.subscribers: list[Any] = []
        #: Every PUBLISH, in order: (channel, data).
        self.published: list[tuple[bytes, bytes]] = []

    # -- commands -------------------------------------------------------------------------

    def exists(self, key: bytes) -> bool:
        return key in self.strings or key in self.hashes or key in self.sets

    def delete(self, key: bytes) -> None:
        self.strings.pop(key, None)
        self.hashes.pop(key, None)
        self.sets.pop(key, None)
        self.ttl.pop(key, None)

    def expire(self, key: bytes) -> None:
        """Let ``key``'s TTL run out now."""
        assert key in self.ttl, f"{key!r} has no TTL"
        self.delete(key)

    def flushall(self) -> None:
        """A Redis restarted without its data (pub/sub connections are lost too)."""
        self.strings.clear()
        self.hashes.clear()
        self.sets.clear()
        self.ttl.clear()

    def get(self, key: bytes) -> bytes | None:
        return self.strings.get(key)

    def set(self, key: bytes, value: bytes, px: int | None = None) -> None:
        self.delete(key)
        self.strings[key] = value
        if px is not None:
            self.ttl[key] = px

    def incr(self, key: bytes) -> int:
        value = int(self.strings.get(key, b"0")) + 1
        self.strings[key] = b"%d" % value  # INCR keeps a TTL
        return value

    def persist(self, key: bytes) -> None:
        self.ttl.pop(key, None)

    def pexpire(self, key: bytes, ms: int) -> None:
        if self.exists(key):
            self.ttl[key] = ms

    def hget(self, key: bytes, field: bytes) -> bytes | None:
        return self.hashes.get(key, {}).get(field)

    def hmget(self, key: bytes, *fields: bytes) -> list[bytes | None]:
        return [self.hget(key, field) for field in fields]

    def hexists(self, key: bytes, field: bytes) -> bool:
        return field in self.hashes.get(key, {})

    def hset(self, key: bytes, field: bytes, value: bytes) -> None:
        self.hashes.setdefault(key, {})[field] = value

    def hdel(self, key: bytes, field: bytes) -> None:
        table = self.hashes.get(key)
        if table is not None:
            table.pop(field, None)
            if not table:  # an empty hash does not exist
                self.delete(key)

    def hlen(self, key: bytes) -> int:
        return len(self.hashes.get(key, {}))

    def hgetall(self, key: bytes) -> list[bytes]:
        """Field, value, field, value... (a flat list, as Lua sees it)."""
        return [item for pair in self.hashes.get(key, {}).items() for item in pair]

    def sadd(self, key: bytes, member: bytes) -> None:
        self.sets.setdefault(key, {})[member] = None

    def srem(self, key: bytes, member: bytes) -> None:
        table = self.sets.get(key)
        if table is not None:
            table.pop(member, None)
            if not table:
                self.delete(key)

    def smembers(self, key: bytes) -> list[bytes]:
        return list(self.sets.get(key, {}))

    def publish(self, channel: bytes, data: bytes) -> int:
        data = bytes(data)
        self.published.append((channel, data))
        receivers = [sub for sub in self.subscribers if channel in sub.channels]
        for sub in receivers:
            sub.inbox.append((channel, data))
        return len(receivers)

    # -- the scripts ----------------------------------------------------------------------

    def run(self, call: Call) -> Any:
        """Execute one call of a hub, as the transport's pipeline does; return its reply."""
        keys = [_b(key) for key in call.keys]
        args = [_b(arg) for arg in call.args]
        if call.script == "publish":
            return self.publish(keys[0], args[0])
        assert call.script in SCRIPTS, call.script
        return getattr(self, f"script_{call.script}")(keys, args)

    def script_join(self, keys: list[bytes], argv: list[bytes]) -> list[Any]:
        m, k, s, o = keys
        uid, node, announce, alias, token, jd, sd, snap, reserved, pub, name = argv
        if self.hexists(m, uid):
            return [b"taken"]
        can_send = 1
        stored: list[bytes | None] = [None, None]
        if reserved == b"0":
            if not self.exists(m):
                self.delete(k)
                if jd:
                    self.hset(k, b"j", jd)
                if sd:
                    self.hset(k, b"s", sd)
                stored = [jd, sd]
            else:
                stored = self.hmget(k, b"j", b"s")
                if stored[0] is not None and stored[0] != jd:
                    return [b"key"]
                if stored[1] is not None and stored[1] != sd:
                    can_send = 0
        snapshot = self.hgetall(m) if snap == b"1" else []
        seq = self.incr(s)
        self.persist(s)
        self.hset(m, uid, SEP.join([node, b"%d" % seq, announce, alias]))
        self.sadd(o, name)
        self.publish(pub, b"J%d" % seq + SEP + SEP.join([node, uid, announce, token, b"%d" % can_send, alias]))
        return [b"ok", seq, can_send, stored[0] or b"", stored[1] or b"", snapshot]

    def script_leave(self, keys: list[bytes], argv: list[bytes]) -> int:
        m, k, s, o = keys
        node, pub, last, name, *uids = argv
        mark = node + SEP
        gone = []
        for uid in uids:
            value = self.hget(m, uid)
            if value is not None and value.startswith(mark):
                self.hdel(m, uid)
                gone.append(uid)
        if gone:
            seq = self.incr(s)
            self.publish(pub, b"L%d" % seq + SEP + SEP.join(gone))
        if not self.exists(m):
            self.delete(k)
            self.pexpire(s, DAY_MS)
        if last == b"1":
            self.srem(o, name)
        return len(gone)

    def script_sync(self, keys: list[bytes], argv: list[bytes]) -> list[Any]:
        m, k, s, o = keys
        node, pub, jd, sd, name = argv[:5]
        last = 6 + 3 * int(argv[5])
        triples = [argv[i : i + 3] for i in range(6, last, 3)]
        keep = set(argv[last:])
        mark = node + SEP
        if not self.exists(m):
            self.delete(k)
            if jd:
                self.hset(k, b"j", jd)
            if sd:
                self.hset(k, b"s", sd)
        mine = {uid for uid, _, _ in triples}
        flat = self.hgetall(m)
        gone, conflicts = [], []
        for uid, value in zip(flat[::2], flat[1::2], strict=True):
            ours = value.startswith(mark)
            if ours and uid not in mine and uid not in keep:
                self.hdel(m, uid)
                gone.append(uid)
            elif not ours and uid in mine:
                mine.discard(uid)
                conflicts.append(uid)
        if gone:
            seq = self.incr(s)
            self.publish(pub, b"L%d" % seq + SEP + SEP.join(gone))
        for uid, announce, alias in triples:
            if uid in mine and not self.hexists(m, uid):
                seq = self.incr(s)
                self.hset(m, uid, SEP.join([node, b"%d" % seq, announce, alias]))
                self.publish(pub, b"J%d" % seq + SEP + SEP.join([node, uid, announce, b"", b"1", alias]))
        if triples or keep:
            self.sadd(o, name)
            self.persist(s)
        else:
            self.srem(o, name)
        if not self.exists(m):
            self.delete(k)
            self.pexpire(s, DAY_MS)
        stored = self.hmget(k, b"j", b"s")
        return [int(self.get(s) or b"0"), conflicts, self.hgetall(m), stored[0] or b"", stored[1] or b""]

    def script_push(self, keys: list[bytes], argv: list[bytes]) -> int:
        n = self.hlen(keys[0])
        if n > 0:
            self.publish(argv[0], argv[1])
        return n

    def script_reap(self, keys: list[bytes], argv: list[bytes]) -> int:
        reaped = 0
        for node in self.smembers(b"rc:nodes"):
            if self.exists(b"rc:n:" + node):
                continue
            mark = node + SEP
            for name in self.smembers(b"rc:o:" + node):
                tag = b"{" + name + b"}"
                m, s = b"rc:m:" + tag, b"rc:s:" + tag
                flat = self.hgetall(m)
                gone = [uid for uid, value in zip(flat[::2], flat[1::2], strict=True) if value.startswith(mark)]
                for uid in gone:
                    self.hdel(m, uid)
                if gone:
                    seq = self.incr(s)
                    self.publish(b"rc:c:" + tag, b"L%d" % seq + SEP + SEP.join(gone))
                    reaped += len(gone)
                if not self.exists(m):
                    self.delete(b"rc:k:" + tag)
                    self.pexpire(s, DAY_MS)
            self.delete(b"rc:o:" + node)
            self.srem(b"rc:nodes", node)
        return reaped

    # -- what tests look at ---------------------------------------------------------------

    def members(self, channel: str) -> dict[str, bytes]:
        """Channel ``channel``'s members hash: uid -> node."""
        table = self.hashes.get(b"rc:m:{" + channel.encode() + b"}", {})
        return {uid.decode(): value.split(SEP, 1)[0] for uid, value in table.items()}


class Node:
    """One ClusterHub and the transport's side of it, driven by plain calls.

    Like the real driver, a batch of calls is one pipeline: subscriptions are added before
    it, every call runs in Redis, and only then are the replies given, in order (the next
    batch waits for them); pub/sub messages wait in :attr:`inbox` until fed.
    """

    def __init__(self, cluster: FakeCluster, name: str, uids: Any) -> None:
        self.cluster = cluster
        self.model = cluster.model
        self.hub = ClusterHub(cluster.config, cluster.clock, uids, node=name)
        self.name = name
        #: What the pub/sub connection is subscribed to (in the model).
        self.channels: set[bytes] = set()
        #: Pub/sub messages received and not yet fed to the hub, oldest first.
        self.inbox: deque[tuple[bytes, bytes]] = deque()
        #: Replies of the batch in flight, not yet given to the hub.
        self.replies: list[tuple[Call, Any]] = []
        #: Every call taken from the hub, in order.
        self.sent: list[Call] = []
        self.connected = False
        #: Held back by :meth:`FakeCluster.step` (a test feeds them itself).
        self.hold_inbox = False
        self.hold_replies = False

    def __repr__(self) -> str:
        return f"<Node {self.name}>"

    def connect(self) -> None:
        """A connection session begins: heartbeat, subscribe, ``online()``."""
        self.beat()
        self.model.subscribers.append(self)
        self.connected = True
        self.subscribe()
        self.hub.online()

    def beat(self) -> None:
        self.model.set(self.hub.heartbeat_key, b"1", px=int(self.hub.config.cluster.node_timeout * 1000))
        self.model.sadd(b"rc:nodes", self.hub.node_raw)

    def disconnect(self, *, tell: bool = True) -> None:
        """The connection to Redis is lost: calls in flight and unread messages with it.

        ``tell=False``: the process died, so nobody tells its hub.
        """
        if self in self.model.subscribers:
            self.model.subscribers.remove(self)
        self.connected = False
        self.channels.clear()
        self.inbox.clear()
        self.replies.clear()
        if tell:
            self.hub.offline()

    def subscribe(self) -> bool:
        wanted = self.hub.subscriptions - self.channels
        self.channels |= wanted
        return bool(wanted)

    def unsubscribe(self) -> bool:
        unwanted = self.channels - self.hub.subscriptions
        self.channels -= unwanted
        return bool(unwanted)

    def send(self) -> bool:
        """Send the hub's queued calls as one pipeline (unless a batch is in flight)."""
        if not self.connected or self.replies:
            return False
        changed = self.subscribe()
        calls = self.hub.take_calls()
        self.sent += calls
        for call in calls:
            result = self.model.run(call)
            if call.reply is not None:
                self.replies.append((call, result))
        if not self.replies:
            changed |= self.unsubscribe()
        return changed or bool(calls)

    def answer(self) -> bool:
        """Give the hub the replies of the batch in flight."""
        replies, self.replies = self.replies, []
        for call, result in replies:
            assert call.reply is not None
            call.reply(result)
        self.unsubscribe()
        return bool(replies)

    def feed(self, count: int | None = None) -> int:
        """Feed the oldest ``count`` (default: all) pub/sub messages to the hub."""
        fed = 0
        while self.inbox and (count is None or fed < count):
            channel, data = self.inbox.popleft()
            self.hub.feed(channel, data)
            fed += 1
        return fed


class FakeCluster:
    """Several nodes on one :class:`RedisModel`, each online from the start.

    ``nodes`` names them; node ``x`` is ``cluster["x"]`` and its hub's node name is
    ``"x.1"``. ``uids`` gives a node its uid source (default: ``seeded_uids`` with a seed
    of its own).
    """

    def __init__(self, nodes: str = "ab", config: Config | None = None, uids: dict[str, Any] | None = None) -> None:
        self.model = RedisModel()
        self.clock = FakeClock()
        self.config = config or Config()
        uids = uids or {}
        self.nodes = {
            name: Node(self, f"{name}.1", uids.get(name) or seeded_uids(100 + i)) for i, name in enumerate(nodes)
        }
        for node in self.nodes.values():
            node.connect()

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    def step(self) -> bool:
        """Every node sends its calls, then answers its replies, then feeds its messages
        (except what is held back); True if anything happened."""
        live = [node for node in self.nodes.values() if node.connected]
        busy = False
        for node in live:
            busy |= node.send()
        for node in live:
            if not node.hold_replies:
                busy |= node.answer()
        for node in live:
            if not node.hold_inbox:
                busy |= node.feed() > 0
        for node in self.nodes.values():
            node.hub.take_ready()
        return busy

    def run_until_idle(self, limit: int = 10_000) -> None:
        for _ in range(limit):
            if not self.step():
                return
        raise AssertionError("the cluster never settles")

    def actions(self) -> list[Callable[[], object]]:
        """Every transport action possible now (send, answer, feed one message), node by node."""
        actions: list[Callable[[], object]] = []
        for node in self.nodes.values():
            if not node.connected:
                continue
            if not node.replies and (node.hub.calls or node.hub.subscriptions != node.channels):
                actions.append(node.send)
            if node.replies:
                actions.append(node.answer)
            if node.inbox:
                actions.append(functools.partial(node.feed, 1))
        return actions

    def reap(self) -> int:
        """A node's heartbeat runs the reaper (its pub/sub messages go out as usual)."""
        return self.model.script_reap([], [])


class Client:
    """A member as its WebSocket client sees it; also the session the hub talks to.

    Like :class:`relaycore.ClientSession`, a client that leaves while its join waits for
    the cluster leaves as soon as it is admitted.
    """

    def __init__(self, node: Node, channel: str, **options: Any) -> None:
        self.hub = node.hub
        self.node = node
        self.outbox = node.hub.new_outbox()
        self.member: Member | None = None
        self.refused: HTTPError | None = None
        self.kicked: tuple[int, str] | None = None
        self.gone = False
        #: Every text frame's payload received so far, oldest first.
        self.payloads: list[bytes] = []
        self._read = 0
        try:
            member = self.hub.join(channel, JoinOptions(**options), self.outbox, self)
        except HTTPError as exc:
            self.refused = exc
        else:
            self.member = member

    def __repr__(self) -> str:
        return f"<Client {self.member.uid if self.member else '?'} on {self.node.name}>"

    # the session's side
    def joined(self, member: Member) -> None:
        self.member = member
        if self.gone:
            self.hub.leave(member)

    def join_refused(self, error: HTTPError) -> None:
        self.refused = error

    def kick(self, code: int, reason: str) -> None:
        self.kicked = (code, reason)

    # the client's side
    @property
    def uid(self) -> str:
        assert self.member is not None, "not (yet) a member"
        return self.member.uid

    def send(self, value: Any, to: str | None = None) -> None:
        text = msgspec.json.encode(value).decode()
        assert self.member is not None
        self.hub.receive(self.member, text if to is None else f"\x1f{to}\x1f{text}")

    def leave(self) -> None:
        self.gone = True
        if self.member is not None:
            self.hub.leave(self.member)

    def raw(self) -> list[bytes]:
        """Every frame's payload so far (reading what the outbox holds)."""
        outbox = self.outbox
        while outbox:
            data = outbox.view()
            outbox.consume(len(data))
            self.payloads += [frame.payload for frame in parse_frames(data)]
        return self.payloads

    def frames(self) -> list[Any]:
        """Every frame so far, decoded."""
        return [msgspec.json.decode(payload) for payload in self.raw()]

    def new(self) -> list[Any]:
        """The frames received since the last call."""
        frames = self.frames()
        fresh = frames[self._read :]
        self._read = len(frames)
        return fresh
