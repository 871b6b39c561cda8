"""The core tests' in-memory Redis (tests/core/_redis_model.py) against a real ``redis-server``.

The cluster tests of tests/core run only on :class:`RedisModel`, a Python rewrite of each Lua
script of :data:`relaycore.SCRIPTS`. Here random sequences of the same calls go to both: the
model, and the real scripts on a real Redis (started on a free port, no persistence, stopped
by pid; FLUSHALL before every example), sent the way ``transports/redis_backplane.py`` sends
them with coredis (``decode_responses=False``; a batch is one pipeline of EVALSHAs and
PUBLISHes, a lone publish a plain PUBLISH; the heartbeat a SET PX and an SADD). After every
step the two must agree on

- every reply, types included (``bytes``/``int``/``list``/None);
- every key the cluster uses: its type, its value (a hash field by field, and in order while
  Redis keeps it a listpack; a set as a set), whether it has a TTL and roughly how long;
- every message published, on which channel and in which order (a pattern subscriber
  hears everything on the real one; the model keeps :attr:`RedisModel.published`).

Two levels: :class:`ScriptMachine` makes the calls itself (joins with and without
announce, alias and keys, first joiners setting the key digests, reserved joins, uid
clashes, leaves, syncs and the "forget" sync, pushes, publishes, heartbeats, lapsed
heartbeats and the reaper, FLUSHALL), including argument mixes the hub never sends;
:class:`HubMachine` runs :class:`~relaycore.ClusterHub` nodes (the core tests'
:class:`FakeCluster`) and mirrors every call they make: clients joining (open, reserved and
push namespaces, keys, aliases, every node drawing the same uids), leaving, sending,
pushing; the transport's steps in any order; outages and re-registration (``sync``),
repair, Redis restarted without data, nodes killed and reaped, a live node's heartbeat
lapsing.

What is normalised, and why (nothing else is):

- Redis iterates a hash in insertion order only while it is a listpack; a member value
  over 64 bytes (a long alias: ``MAX_ALIAS`` is 64 characters) makes it a hashtable, in
  an order of its own. For a channel whose ``rc:m:*`` hash is (or may have been, during
  the step) a hashtable, what comes out of HGETALL is compared as a set: the join's
  snapshot, the sync's members and conflicts, the uids of an ``L`` record. The model
  always keeps insertion order (:meth:`RedisModel.hgetall`). The other channels' hashes,
  replies and records are compared in order.
- Sets are hashtables (or intsets, sorted, for numeric names) in Redis 7.0 (small ones
  listpacks from 7.2), insertion-ordered dicts in the model, and the reaper walks
  ``rc:nodes`` and each ``rc:o:<node>``:
  a reap's records are compared channel by channel (each channel's own order is exact);
  when two or more nodes are reaped at once, their blocks on a channel come in Redis's
  set order, so there the numbers and the records are compared as multisets.
- Hub-level only: a PUBLISH's reply (how many subscribers got it) is not compared, since
  the model's subscribers are the hubs and Redis's only the test's pattern subscriber;
  the hubs never read it. The script level compares it (the model gets a catch-all
  subscriber).

A heartbeat that lapses is deleted in Redis (:meth:`RedisModel.expire` in the model); a
TTL is compared to within a minute, since Redis's runs down and the model's does not.
``RELAYCORE_SOAK=1`` runs twenty times the examples, twice as long, freshly random.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import coredis
import msgspec
import pytest
from coredis.retry import NoRetryPolicy
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from redisproc import RedisProcess

from core._redis_model import Client, FakeCluster, Node, RedisModel
from relaycore import (
    SCRIPTS,
    Call,
    ClusterConfig,
    Config,
    HTTPError,
    LimitsConfig,
    NamespaceConfig,
    channel_keys,
    parse_json,
)
from relaycore._cluster_scripts import key_digest, node_keys
from relaycore.testing import FakeClock, seeded_uids

SEP = b"\x1f"
SOAK = os.environ.get("RELAYCORE_SOAK") == "1"
# A soak outlasts the suite's per-test timeout; a normal run takes seconds.
pytestmark = [pytest.mark.timeout(3600)] if SOAK else []
#: The pub/sub channel the test publishes to after a step, to know it heard everything before.
MARK = b"test:mark"
#: How far a real TTL may have run down below the model's (which never runs down).
TTL_SLACK_MS = 60_000
LISTPACK = (b"listpack", b"ziplist")

# One round trip: every key with its type, value, PTTL and encoding (nothing else is in there).
_DUMP = """
local out = {}
for _, key in ipairs(redis.call('KEYS', '*')) do
  local t = redis.call('TYPE', key)['ok']
  local v = {}
  if t == 'string' then v = redis.call('GET', key)
  elseif t == 'hash' then v = redis.call('HGETALL', key)
  elseif t == 'set' then v = redis.call('SMEMBERS', key) end
  out[#out + 1] = {key, t, v, redis.call('PTTL', key), redis.call('OBJECT', 'ENCODING', key)}
end
return out
"""

# The channels' members hashes that are not listpacks (HGETALL then has an order of its own).
_UNORDERED = """
local out = {}
for _, key in ipairs(redis.call('KEYS', 'rc:m:*')) do
  local encoding = redis.call('OBJECT', 'ENCODING', key)
  if encoding ~= 'listpack' and encoding ~= 'ziplist' then out[#out + 1] = key end
end
return out
"""


# -- the real Redis, used from synchronous code ----------------------------------------------


class RealRedis:
    """A coredis client (and a pattern subscriber hearing every channel) on a real Redis,
    running in a blocking portal's event loop so that the synchronous hubs can use it."""

    def __init__(self, portal: anyio.from_thread.BlockingPortal, url: str) -> None:
        self.portal = portal
        self.url = url
        #: Every pub/sub message heard, in order (the marks left out).
        self.messages: list[tuple[bytes, bytes]] = []
        self._read = 0
        self._marks = 0
        self._heard = 0
        self._heard_all: anyio.Event | None = None
        self.client: Any = None
        self.scripts: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[RealRedis]:
        client: Any = coredis.Redis.from_url(
            self.url, decode_responses=False, retry_policy=NoRetryPolicy(), stream_timeout=10
        )
        async with client:
            self.client = client
            # As the driver registers them: one script object per name.
            self.scripts = {name: client.register_script(text) for name, text in SCRIPTS.items()}
            self.scripts["_dump"] = client.register_script(_DUMP)
            self.scripts["_unordered"] = client.register_script(_UNORDERED)
            pubsub = client.pubsub(retry_policy=None, ignore_subscribe_messages=True)
            async with pubsub:
                await pubsub.psubscribe(**{"*": self._on_message})
                yield self

    def _on_message(self, message: Any) -> None:
        channel, data = bytes(message["channel"]), bytes(message["data"])
        if channel == MARK:
            self._heard = int(data)
            if self._heard == self._marks and self._heard_all is not None:
                self._heard_all.set()
            return
        self.messages.append((channel, data))

    # each method below is one round trip

    def batch(self, calls: list[Call]) -> tuple[list[Any], set[bytes]]:
        """Run ``calls`` as the driver does; their replies, and the members hashes that were
        hashtables before or after them (see the module's docs)."""
        replies, unordered = self.portal.call(self._batch, calls)
        return replies, unordered

    async def _batch(self, calls: list[Call]) -> tuple[list[Any], set[bytes]]:
        client = self.client
        if len(calls) == 1 and calls[0].script == "publish":  # the driver's lone publish
            call = calls[0]
            return [await client.publish(call.keys[0], bytes(call.args[0]))], set()
        requests = []
        async with client.pipeline(transaction=False) as pipe:
            before = self.scripts["_unordered"](keys=[], args=[], client=pipe)
            for call in calls:
                if call.script == "publish":
                    requests.append(pipe.publish(call.keys[0], bytes(call.args[0])))
                else:
                    requests.append(self.scripts[call.script](keys=call.keys, args=call.args, client=pipe))
            after = self.scripts["_unordered"](keys=[], args=[], client=pipe)
        replies = [await request for request in requests]
        return replies, {*await before, *await after}

    def beat(self, node: bytes, px: int) -> None:
        """A node's heartbeat, as the driver's ``_beat`` sends it (without the reaper)."""

        async def beat() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.set(b"rc:n:" + node, b"1", px=px)
                pipe.sadd(b"rc:nodes", [node])

        self.portal.call(beat)

    def delete(self, key: bytes) -> None:
        self.portal.call(self.client.delete, [key])

    def flushall(self) -> None:
        self.portal.call(self.client.flushall)

    def dump(self) -> tuple[list[Any], list[tuple[bytes, bytes]]]:
        """Every key (see ``_DUMP``), and the messages published since the last call, all of
        them (a mark published after them has come back)."""

        async def dump() -> list[Any]:
            self._marks += 1
            self._heard_all = anyio.Event()
            async with self.client.pipeline(transaction=False) as pipe:
                keys = self.scripts["_dump"](keys=[], args=[], client=pipe)
                pipe.publish(MARK, b"%d" % self._marks)
            with anyio.fail_after(10):
                await self._heard_all.wait()
            return list(await keys)

        keys = self.portal.call(dump)
        fresh = self.messages[self._read :]
        self._read = len(self.messages)
        return keys, fresh


@pytest.fixture(scope="module")
def real_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealRedis]:
    directory: Path = tmp_path_factory.mktemp("redis")
    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        process = RedisProcess(directory)
        try:
            portal.call(process.start)
            real = RealRedis(portal, process.url)
            with portal.wrap_async_context_manager(real.session()):
                yield real
        finally:
            process.stop()  # by its pid (the Popen's)


# -- comparing -------------------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (b"1" is not 1, [] is not None)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _pairs(flat: Any) -> Any:
    if not isinstance(flat, list) or len(flat) % 2:
        return flat
    return sorted([list(pair) for pair in zip(flat[::2], flat[1::2], strict=True)])


def normal_reply(call: Call, reply: Any, unordered: set[bytes]) -> Any:
    """``reply`` with what came out of HGETALL in a sorted order, when Redis's order of the
    call's members hash is its own (its key is in ``unordered``: see the module's docs)."""
    if not call.keys or call.keys[0] not in unordered or not isinstance(reply, list):
        return reply
    if call.script == "join" and len(reply) == 6:
        return [*reply[:5], _pairs(reply[5])]
    if call.script == "sync" and len(reply) == 5 and isinstance(reply[1], list):
        return [reply[0], sorted(reply[1]), _pairs(reply[2]), *reply[3:]]
    return reply


def normal_messages(messages: list[tuple[bytes, bytes]], *, unordered: set[bytes], reaped: int | None) -> Any:
    """Messages as compared: as published, unless normalised (see the module's docs).
    ``unordered``: the members hashes whose order was Redis's own; ``reaped``: how many
    nodes the step's reap dropped (None: no reap in the step)."""
    out = []
    for channel, data in messages:
        if data[:1] == b"L" and b"rc:m:" + channel[5:] in unordered:
            head, *uids = data.split(SEP)
            data = SEP.join([head, *sorted(uids)])
        out.append((channel, data))
    if reaped is None:
        return out
    by_channel: dict[bytes, list[bytes]] = {}
    for channel, data in out:
        by_channel.setdefault(channel, []).append(data)
    if reaped <= 1:
        return sorted(by_channel.items())
    return sorted(
        (channel, sorted(int(d[1:].split(SEP, 1)[0]) for d in records), sorted(d.split(SEP, 1)[1] for d in records))
        for channel, records in by_channel.items()
    )


def long_alias(call: Call) -> bool:
    """Whether ``call`` may store a member value over 64 bytes (its hash turns hashtable,
    maybe only for a while: the batch may empty it again)."""
    args = [arg if isinstance(arg, bytes) else str(arg).encode() for arg in call.args]
    if call.script == "join":
        return len(args[3]) > 24
    if call.script == "sync":
        return any(len(alias) > 24 for alias in args[8 : 6 + 3 * int(args[5]) : 3])
    return False


def model_rows(model: RedisModel) -> dict[bytes, tuple[str, Any]]:
    rows: dict[bytes, tuple[str, Any]] = {}
    for key, value in model.strings.items():
        rows[key] = ("string", value)
    for key in model.hashes:
        rows[key] = ("hash", model.hgetall(key))
    for key in model.sets:
        rows[key] = ("set", sorted(model.smembers(key)))
    return rows


def key_differences(model: RedisModel, dump: list[Any]) -> list[str]:
    """What differs between the model's keys and Redis's (empty: nothing)."""
    real = {row[0]: row for row in dump}
    mine = model_rows(model)
    problems = [f"only in Redis: {key!r} = {real[key][2]!r}" for key in sorted(real.keys() - mine.keys())]
    problems += [f"only in the model: {key!r} = {mine[key][1]!r}" for key in sorted(mine.keys() - real.keys())]
    for key in sorted(real.keys() & mine.keys()):
        _, kind, value, pttl, encoding = real[key]
        my_kind, my_value = mine[key]
        if kind.decode() != my_kind:
            problems.append(f"{key!r}: a {kind.decode()} in Redis, a {my_kind} in the model")
            continue
        if kind == b"hash":
            if _pairs(value) != _pairs(my_value):
                problems.append(f"{key!r}: Redis has {value!r}, the model {my_value!r}")
            elif encoding in LISTPACK and value != my_value:
                problems.append(f"{key!r}: same fields, another order: Redis {value!r}, the model {my_value!r}")
        elif kind == b"set":
            if sorted(value) != my_value:
                problems.append(f"{key!r}: Redis has {sorted(value)!r}, the model {my_value!r}")
        elif not same(value, my_value):
            problems.append(f"{key!r}: Redis has {value!r}, the model {my_value!r}")
        ttl = model.ttl.get(key)
        if ttl is None and pttl != -1:
            problems.append(f"{key!r}: a TTL in Redis ({pttl} ms left), none in the model")
        elif ttl is not None and not ttl - TTL_SLACK_MS < pttl <= ttl:
            problems.append(f"{key!r}: {pttl} ms left in Redis, a TTL of {ttl} ms in the model")
    return problems


class Everything:
    """A model pub/sub connection subscribed to every channel, as the test's pattern
    subscriber is on the real Redis (so that PUBLISH counts the same on both)."""

    class _All:
        def __contains__(self, channel: object) -> bool:
            return True

    def __init__(self) -> None:
        self.channels = self._All()
        self.inbox: list[tuple[bytes, bytes]] = []


class Differ:
    """One model and the real Redis, kept in step: every call goes to both."""

    def __init__(self, real: RealRedis, model: RedisModel, *, count_publishes: bool) -> None:
        real.flushall()
        real.dump()
        self.real = real
        self.model = model
        self.count_publishes = count_publishes
        self._seen = len(model.published)
        #: This step: the members hashes whose HGETALL order may be Redis's own; how many
        #: nodes a reap dropped.
        self._unordered: set[bytes] = set()
        self._reaped: int | None = None
        #: Whether a comparison failed (nothing is compared after that).
        self.failed = False

    def compare(self, done: list[tuple[Call, Any]]) -> None:
        """The model ran these calls (one batch, its replies given): run them on Redis the
        way the driver does and compare every reply."""
        calls = [call for call, _ in done]
        replies, unordered = self.real.batch(calls)
        unordered |= {call.keys[0] for call in calls if long_alias(call)}
        self._unordered |= unordered
        for (call, mine), theirs in zip(done, replies, strict=True):
            if call.script == "publish" and not self.count_publishes:
                continue
            if not same(normal_reply(call, mine, unordered), normal_reply(call, theirs, unordered)):
                self.failed = True
                raise AssertionError(
                    f"{call.script} keys={call.keys!r} args={call.args!r}:\n"
                    f"  the model replied {mine!r}\n  Redis replied     {theirs!r}"
                )

    def run(self, calls: list[Call]) -> list[Any]:
        """Run one batch on both (the model's first); the model's replies."""
        done = [(call, self.model.run(call)) for call in calls]
        self.compare(done)
        return [reply for _, reply in done]

    def beat(self, node: bytes, px: int) -> None:
        self.model.set(b"rc:n:" + node, b"1", px=px)
        self.model.sadd(b"rc:nodes", node)
        self.real.beat(node, px)

    def lapse(self, node: bytes) -> None:
        """The node's heartbeat runs out."""
        key = b"rc:n:" + node
        self.model.expire(key)
        self.real.delete(key)

    def reap(self) -> int:
        model = self.model
        dead = [node for node in model.smembers(b"rc:nodes") if not model.exists(b"rc:n:" + node)]
        self._reaped = max(self._reaped or 0, len(dead))
        return int(self.run([Call("reap", [], [])])[0])

    def flushall(self) -> None:
        self.model.flushall()
        self.real.flushall()

    def check(self) -> None:
        """After a step: the same keys, and the same messages published during it."""
        keys, theirs = self.real.dump()
        problems = key_differences(self.model, keys)
        if problems:
            self.failed = True
            raise AssertionError("the keys differ:\n  " + "\n  ".join(problems))
        mine = self.model.published[self._seen :]
        self._seen = len(self.model.published)
        unordered, reaped = self._unordered, self._reaped
        self._unordered, self._reaped = set(), None
        normal = [normal_messages(sent, unordered=unordered, reaped=reaped) for sent in (mine, theirs)]
        if normal[0] != normal[1]:
            self.failed = True
            raise AssertionError(
                f"the messages published differ (unordered={sorted(unordered)}, reaped={reaped}):\n"
                f"  the model: {mine!r}\n  Redis:     {theirs!r}"
            )


def machine_settings(examples: int, steps: int) -> settings:
    return settings(
        max_examples=examples * (20 if SOAK else 1),
        stateful_step_count=steps * (2 if SOAK else 1),
        derandomize=not SOAK,  # the same examples on every run (a soak explores anew)
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        report_multiple_bugs=False,  # one failure, shrunk (a second is usually the first again)
        # No explain phase: it traces every line while it replays, minutes against Redis.
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    )


# -- the scripts themselves ------------------------------------------------------------------

NODES = [b"a.1", b"b.1", b"c.1"]
#: Numeric names make the node's channel set an intset (sorted) in Redis; "ü {x}" is UTF-8
#: and has braces in the key's hash tag.
CHANNELS = ["room", "42", "7", "ü {x}"]
UIDS = ["u1", "u2", "u3", "u4", "u5"]
#: The heartbeat's TTL (long: it must not run out in the real Redis while an example runs).
HEARTBEAT_MS = 600_000
#: A 64-character alias is allowed (MAX_ALIAS) and makes the members hash a hashtable, whose
#: order is Redis's own: it is drawn only on the last channel, so that the others always
#: compare HGETALL's order too.
ALIASES = ["", "Al", "ü"]
LONG_ALIAS = "x" * 64
KEYS = [None, "k1", "k2"]

nodes = st.sampled_from(NODES)
channels = st.sampled_from(CHANNELS)
uids = st.sampled_from(UIDS)
flags = st.sampled_from([b"0", b"1"])


def aliases(name: str) -> st.SearchStrategy[bytes]:
    choices = [*ALIASES, LONG_ALIAS] if name == CHANNELS[-1] else ALIASES
    return st.sampled_from(choices).map(str.encode)


digests = st.sampled_from(KEYS).map(key_digest)


class Shown(Call):
    """A call that shows all of itself, so that a failing case can be replayed."""

    def __repr__(self) -> str:
        return f"Call({self.script!r}, {self.keys!r}, {self.args!r})"


@st.composite
def join_calls(draw: st.DrawFn) -> Call:
    """As ``ClusterHub._ask_join`` makes it (any mix of flags, keys and uid)."""
    node, name = draw(nodes), draw(channels)
    m, k, s, pub = channel_keys(name)
    args = [
        draw(uids),
        node,
        draw(flags),  # announce
        draw(aliases(name)),
        str(draw(st.integers(1, 99))),  # token
        draw(digests),  # join key
        draw(digests),  # send key
        draw(flags),  # snapshot
        draw(flags),  # reserved namespace
        pub,
        name.encode(),
    ]
    return Shown("join", [m, k, s, node_keys(node.decode())[1]], args)


@st.composite
def leave_calls(draw: st.DrawFn) -> Call:
    node, name = draw(nodes), draw(channels)
    m, k, s, pub = channel_keys(name)
    gone = draw(st.lists(uids, max_size=4))
    last = draw(st.sampled_from([b"0", b"0", b"0", b"1"]))  # the node's last member: rc:o loses it
    args = [node, pub, last, name.encode(), *gone]
    return Shown("leave", [m, k, s, node_keys(node.decode())[1]], args)


@st.composite
def sync_calls(draw: st.DrawFn) -> Call:
    """A re-registration (members, joins in flight, the keys last known), or a "forget"."""
    node, name = draw(nodes), draw(channels)
    m, k, s, pub = channel_keys(name)
    if draw(st.integers(0, 3)):
        members = draw(st.lists(st.tuples(uids, flags, aliases(name)), max_size=4))
        keep = draw(st.lists(uids, max_size=2))
        head = [node, pub, draw(digests), draw(digests), name.encode(), str(len(members))]
        args = head + [part for member in members for part in member] + keep
    else:  # ClusterHub._forget
        args = [node, pub, b"", b"", name.encode(), b"0"]
    return Shown("sync", [m, k, s, node_keys(node.decode())[1]], args)


@st.composite
def push_calls(draw: st.DrawFn) -> Call:
    m, _, _, pub = channel_keys(draw(channels))
    return Shown("push", [m], [pub, b"M" + SEP + draw(st.sampled_from([b"{}", b'"hi"']))])


@st.composite
def publish_calls(draw: st.DrawFn) -> Call:
    node = draw(nodes)
    target = draw(st.one_of(channels.map(lambda name: channel_keys(name)[3]), nodes.map(lambda n: b"rc:d:" + n)))
    return Shown("publish", [target], [bytearray(b"M" + node + SEP + draw(st.sampled_from([b"1", b"{}"])))])


calls = st.one_of(join_calls(), leave_calls(), sync_calls(), push_calls(), publish_calls())


class ScriptMachine(RuleBasedStateMachine):
    """Calls of every script with arguments drawn at random, one at a time or a pipeline
    of several, with heartbeats, lapses, the reaper and FLUSHALL in between."""

    real: RealRedis

    def __init__(self) -> None:
        super().__init__()
        model = RedisModel()
        model.subscribers.append(Everything())
        self.differ = Differ(self.real, model, count_publishes=True)

    @initialize()
    def start(self) -> None:
        for node in NODES:
            self.differ.beat(node, HEARTBEAT_MS)

    @rule(call=calls)
    def one(self, call: Call) -> None:
        self.differ.run([call])

    @rule(batch=st.lists(calls, min_size=2, max_size=5))
    def pipeline(self, batch: list[Call]) -> None:
        self.differ.run(batch)

    @rule(node=nodes, event=st.sampled_from(["beat", "reap", "lapse", "die", "die", "restart"]))
    def heartbeat(self, node: bytes, event: str) -> None:
        """A node's heartbeat (again), the reaper, a node's heartbeat lapsing (and the
        reaper at once: "die"), or Redis restarted without its data (the nodes then say
        they are alive again)."""
        if event == "beat":
            self.differ.beat(node, HEARTBEAT_MS)
        elif event == "reap":
            self.differ.reap()
        elif event in ("lapse", "die"):
            if event == "die":  # preferably a node with members the reaper will drop
                owners = [each for each in NODES if self.reapable(each)] or [node]
                node = owners[NODES.index(node) % len(owners)]
                if b"rc:n:" + node not in self.differ.model.ttl:
                    self.differ.beat(node, HEARTBEAT_MS)  # it was silent, and came back
            if b"rc:n:" + node in self.differ.model.ttl:
                self.differ.lapse(node)
                if event == "die":
                    self.differ.reap()
        elif event == "restart":
            self.differ.flushall()
            self.start()

    def reapable(self, node: bytes) -> bool:
        """Whether ``node`` has members in a channel of its ``rc:o`` set."""
        model = self.differ.model
        for name in model.smembers(b"rc:o:" + node):
            if any(
                value.startswith(node + SEP) for value in model.hashes.get(channel_keys(name.decode())[0], {}).values()
            ):
                return True
        return False

    @invariant()
    def agree(self) -> None:
        self.differ.check()


def test_the_model_runs_the_scripts_as_redis_does(real_redis: RealRedis) -> None:
    ScriptMachine.real = real_redis
    run_state_machine_as_test(ScriptMachine, settings=machine_settings(examples=40, steps=30))


# -- the hubs' own calls ---------------------------------------------------------------------

FAST = LimitsConfig(messages_per_second=1e9, messages_burst=10**9, pushes_per_second_per_ip=1e9)
HUB_CONFIG = Config(
    limits=FAST,
    namespaces={"vip": NamespaceConfig(join_key="door"), "pub": NamespaceConfig(send_key="push-key")},
    # Heartbeat keys must not run out in the real Redis while an example runs.
    cluster=ClusterConfig(node_timeout=600.0),
)
HUB_CHANNELS = ["room", "7", "vip:1", "pub:1"]
HUB_ALIASES = [None, "x", "ü", None, "x", "ü", None, "y" * 64]
#: Mostly none, so that more joins get in; "door" is the reserved namespace's.
HUB_KEYS = [None, None, None, "k1", "k2", "door"]
#: "+reap": another live node's heartbeat runs the reaper right after.
FAULTS = ["outage", "outage", "kill", "kill+reap", "lapse", "lapse+reap", "beat", "reap", "repair", "restart"]


class DiffModel(RedisModel):
    """The model, noting each call of the batch a node is sending (see :class:`DiffNode`)."""

    def __init__(self) -> None:
        super().__init__()
        self.batch: list[tuple[Call, Any]] | None = None

    def run(self, call: Call) -> Any:
        reply = super().run(call)
        if self.batch is not None:
            self.batch.append((call, reply))
        return reply


class DiffNode(Node):
    """A FakeCluster node whose every batch (and heartbeat) also goes to the real Redis."""

    cluster: DiffCluster
    model: DiffModel

    def send(self) -> bool:
        self.model.batch = []
        try:
            busy = super().send()
        finally:
            done, self.model.batch = self.model.batch, None
        if done:
            self.cluster.differ.compare(done)
        return busy

    def beat(self) -> None:
        self.cluster.differ.beat(self.hub.node_raw, int(self.hub.config.cluster.node_timeout * 1000))


class DiffCluster(FakeCluster):
    """:class:`FakeCluster` with :class:`DiffNode`s, all drawing the same uids (clashes)."""

    def __init__(self, real: RealRedis) -> None:
        # Not FakeCluster.__init__: it would make plain nodes on a plain model.
        self.model = DiffModel()
        self.differ = Differ(real, self.model, count_publishes=False)
        self.clock = FakeClock()
        self.config = HUB_CONFIG
        seeds = {"a": 5, "b": 5, "c": 5}
        self.nodes = {name: DiffNode(self, f"{name}.1", seeded_uids(seed)) for name, seed in seeds.items()}
        for node in self.nodes.values():
            node.connect()

    def reap(self) -> int:
        return self.differ.reap()


class Waiter:
    """An HTTP push waiting for Redis's count (which the replies' comparison checks)."""

    def pushed(self, recipients: int) -> None:
        pass

    def push_failed(self, error: HTTPError) -> None:
        pass


class Step:
    """One step of :class:`HubMachine`: what kind, and its arguments."""

    def __init__(self, kind: str, **fields: Any) -> None:
        self.kind = kind
        self.fields = fields

    def __repr__(self) -> str:
        return f"Step({self.kind!r}" + "".join(f", {k}={v!r}" for k, v in self.fields.items()) + ")"


#: Each kind of step, and how its arguments are drawn (only those: a failing case shrinks
#: best when a step draws nothing it does not use).
STEP_ARGUMENTS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "settle": {},
    "join": {
        "node": st.sampled_from("abc"),
        "name": st.sampled_from(HUB_CHANNELS),
        "options": st.fixed_dictionaries(
            {
                "announce": st.booleans(),
                "alias": st.sampled_from(HUB_ALIASES),
                "join_key": st.sampled_from(HUB_KEYS),
                "send_key": st.sampled_from(HUB_KEYS),
            }
        ),
    },
    "leave": {"pick": st.integers(0, 10**6)},
    "send": {"pick": st.integers(0, 10**6)},
    # pub:2 is never served, so Redis counts its members (the push script).
    "push": {"node": st.sampled_from("abc"), "name": st.sampled_from(["pub:1", "pub:2"])},
    "transport": {"picks": st.lists(st.integers(0, 10**6), min_size=1, max_size=8)},
    "trouble": {"node": st.sampled_from("abc"), "fault": st.sampled_from(FAULTS)},
}
#: How often each kind of step comes (settle first: what a failing case's other steps shrink to).
HUB_STEPS = (
    ["settle"] * 2 + ["join"] * 6 + ["leave"] * 2 + ["send"] * 2 + ["push"] + ["transport"] * 3 + ["trouble"] * 4
)
hub_steps = st.one_of([st.builds(Step, st.just(kind), **STEP_ARGUMENTS[kind]) for kind in HUB_STEPS])


class HubMachine(RuleBasedStateMachine):
    """Three ClusterHub nodes on the model, every call they make mirrored on Redis."""

    real: RealRedis

    def __init__(self) -> None:
        super().__init__()
        self.cluster = DiffCluster(self.real)
        self.clients: list[Client] = []
        self.dead: set[str] = set()
        self.sent = itertools.count()

    @initialize(counts=st.lists(st.integers(0, 3), min_size=3, max_size=3))
    def populate(self, counts: list[int]) -> None:
        """A few members on each node in "room", and one in "7", all admitted."""
        for node, count in zip("abc", counts, strict=True):
            for _ in range(count):
                self.clients.append(Client(self.cluster[node], "room", announce=True))
        self.clients.append(Client(self.cluster["a"], "7"))
        self.cluster.run_until_idle()

    @rule(step=hub_steps)
    def act(self, step: Step) -> None:
        """One step (a single rule, so that the kinds come as often as HUB_STEPS says)."""
        getattr(self, f"do_{step.kind}")(**step.fields)

    def do_join(self, node: str, name: str, options: dict[str, Any]) -> None:
        if node not in self.dead:  # online or not
            self.clients.append(Client(self.cluster[node], name, **options))

    def do_leave(self, pick: int) -> None:
        if self.clients:
            self.clients[pick % len(self.clients)].leave()

    def do_send(self, pick: int) -> None:
        if self.clients:
            client = self.clients[pick % len(self.clients)]
            if client.member is not None and client.member.joined and not client.gone:
                client.send({"n": next(self.sent)})

    def do_push(self, node: str, name: str) -> None:
        if node not in self.dead:
            message = parse_json(msgspec.json.encode({"push": next(self.sent)}))
            assert message is not None
            self.cluster[node].hub.push(name, message, "push-key", waiter=Waiter())

    def do_transport(self, picks: list[int]) -> None:
        for pick in picks:
            actions = self.cluster.actions()
            if actions:
                actions[pick % len(actions)]()

    def do_settle(self) -> None:
        self.cluster.run_until_idle()

    def do_trouble(self, node: str, fault: str) -> None:
        """What happens to a node and to Redis."""
        cluster = self.cluster
        target = cluster[node]
        alive = node not in self.dead
        online = alive and target.connected
        beating = target.hub.heartbeat_key in cluster.model.ttl
        if fault == "outage" and alive:
            # The node loses Redis, or gets it back and registers its members again (sync).
            if target.connected:
                target.disconnect()
            else:
                target.connect()
        elif fault.startswith("kill") and alive and len(self.dead) < 2:
            # Its process dies, nobody tells its hub, and its heartbeat runs out.
            self.dead.add(node)
            target.disconnect(tell=False)
            if beating:
                cluster.differ.lapse(target.hub.node_raw)
            if fault.endswith("+reap"):
                self.reap_by_another(target)
        elif fault.startswith("lapse") and online and beating:
            cluster.differ.lapse(target.hub.node_raw)  # a live node's heartbeat came late once
            if fault.endswith("+reap"):
                self.reap_by_another(target)
        elif fault == "beat" and online:
            target.beat()
        elif fault == "reap" and online:
            target.beat()  # the driver's heartbeat: SET, SADD, then the reaper
            cluster.reap()
        elif fault == "repair" and online:
            target.hub.repair()
        elif fault == "restart":
            # Redis restarts without its data: every connected node loses it and comes back.
            cluster.differ.flushall()
            for name, each in cluster.nodes.items():
                if name not in self.dead and each.connected:
                    each.disconnect()
                    each.connect()

    def reap_by_another(self, target: Node) -> None:
        """The heartbeat of another live node, and its reaper."""
        for name, each in self.cluster.nodes.items():
            if name not in self.dead and each.connected and each is not target:
                each.beat()
                self.cluster.reap()
                return

    @invariant()
    def agree(self) -> None:
        self.cluster.differ.check()

    def teardown(self) -> None:
        if not self.cluster.differ.failed:  # a failed step is reported as it is
            self.cluster.run_until_idle()
            self.cluster.differ.check()


def test_the_hubs_calls_get_the_same_replies_from_the_model_and_redis(real_redis: RealRedis) -> None:
    HubMachine.real = real_redis
    run_state_machine_as_test(HubMachine, settings=machine_settings(examples=40, steps=25))
