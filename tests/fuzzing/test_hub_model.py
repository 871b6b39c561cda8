"""Model-based fuzzing of :class:`relaycore.Hub`.

A hypothesis state machine drives one hub with random joins (channels from a small set,
every option, keys right and wrong, open and reserved namespaces), leaves (also repeated),
kicks, broadcasts, direct messages (to members of the same channel, of other channels,
departed members, made-up uids), invalid JSON, HTTP pushes and clock ticks. A plain
model (channels as ordered lists of clients, plus each open channel's keys) predicts,
after every operation, the EXACT list of frames every client receives, so that:

- a direct message reaches its target only (never the sender); a broadcast reaches every
  other member, and the sender iff it asked for echo, exactly once, with one envelope;
- ``total`` in join and leave events is the member count after the change;
- the self-join is the first frame a client gets, with its ``users`` list when asked;
- refused joins (HTTP 403) and refused pushes change nothing and reach nobody;
- nothing reaches a client after it left;

and the invariants check the hub's own state against the model: ``hub.channels`` holds
exactly the non-empty channels, members in join order, uids unique within a channel and
matching ``[A-Za-z0-9]{6}``. The uid source repeats itself on purpose (a small pool), so
the hub's uniqueness handling and cross-channel uid collisions are exercised. Since an
emptied channel is removed and a later first joiner sets the keys afresh, any state that
survived the channel would show up as a join refused (or allowed) against the model.

Slow consumers. The model also keeps, for every client, the frames queued in its outbox
and their byte count, and applies the hub's slow-consumer rule itself: a frame that would
take a client's queue over the outbound limit is refused, and every member refused by one
delivery departs (in channel order) as a slow consumer. A departure announces one leave
per member gone (the k-th with ``total = before - 1 - k``); before they go out, the
remaining members are swept in order of free room (ties in channel order), and whoever
has less room than all the leaves so far departs as well, adding its own leave. The
survivors then get every leave, in order, and the sessions kicked are told
``(1008, "slow consumer")``. With the default 1 MiB limit (``HubMachine``) nobody is ever
slow; ``SlowHubMachine`` draws a limit of 120 to 4000 bytes and adds rules that make
many members slow at once: clients stop reading (``stall``, ``stall_many``, joins that
never read), read again later (their backlog is checked frame by frame, byte lengths
included), and top their queue up to an exact free room with a real frame (``fill``,
``fill_many``: an error frame answering a direct message to a made-up uid of a chosen
length); ``overflow_crowd`` stalls part of a big channel, fills it and broadcasts.
``test_mass_overflow_cascades`` replays a 30-member overflow step by step.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import event, target
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from relaycore import Config, HTTPError, Hub, LimitsConfig, NamespaceConfig, parse_json
from relaycore.testing import FakeClock, VirtualClient

from . import _grammar as g
from ._harness import strict_json

UID_RE = re.compile(r"[A-Za-z0-9]{6}\Z")
NAMESPACES = {
    "secret": NamespaceConfig(join_key="jk", send_key="sk"),
    "pub": NamespaceConfig(send_key="psk"),
    "locked": NamespaceConfig(),
}


def make_config(outbound_buffer_bytes: int | None = None) -> Config:
    # Rate limits are not part of this model: set them out of reach.
    limits: dict[str, Any] = {"messages_per_second": 1e9, "messages_burst": 10**9, "pushes_per_second_per_ip": 1e9}
    if outbound_buffer_bytes is not None:
        limits["outbound_buffer_bytes"] = outbound_buffer_bytes
    return Config(limits=LimitsConfig(**limits), namespaces=NAMESPACES)


CONFIG = make_config()
#: Outbound limits of SlowHubMachine: a single envelope, a long self-join ``users`` list or
#: a few dozen leaves are enough to overflow the smallest.
SLOW_LIMITS = st.sampled_from((160, 300, 800, 2000, 4000)) | st.integers(120, 4000)
#: Steps between the free rooms fill_many leaves (about one leave frame, or a few bytes).
SPREADS = (0, 0, 1, -1, 3, -5, 20, 45, 46, -46, 47, 60, -60)
#: How many members make a crowd (see SlowHubMachine.overflow_crowd).
CROWD = 8
CHANNELS = ("room", "room", "room", "lobby", "secret", "secret:vip", "pub/news", "locked")
PUSH_CHANNELS = ("room", "lobby", "secret", "secret:vip", "pub/news", "locked", "pub", "nowhere", "secret/x")
ALIASES = (None, "Alice", "Bob", "\u00c9l\u00e9onore", "a" * 64)
JOIN_KEYS = (None, "jk", "k1", "k2")
SEND_KEYS = (None, "sk", "psk", "k1", "k2")
PUSH_KEYS = (None, "sk", "psk", "k1", "wrong")
KICKS = ((1008, "slow consumer"), (1008, "rate limit exceeded"), (1000, "bye"), (4000, "kicked out"))
UID_POOL = ("aaaaaa", "bbbbbb", "cccccc", "dddddd", "AbC123", "zzzzz9")
INVALID = ("undefined", "", "{", "[1,]", "NaN", "'a'", "1 2")
INVALID_JSON = "Invalid JSON message."
SEND_KEY_REQUIRED = "Sending requires a valid sendKey."
SLOW = (1008, "slow consumer")
#: What the fill rule's made-up uids are made of (never a real uid: not [A-Za-z0-9]).
FILL_CHAR = "~"
MESSAGE_KEY = len(b',"message":')

Frame = dict[str, Any]


def colliding_uids(rng: random.Random) -> Callable[[], str]:
    """Half the uids come from a small pool (collisions galore), half are fresh."""
    alphabet = string.ascii_letters + string.digits

    def next_uid() -> str:
        if rng.random() < 0.5:
            return rng.choice(UID_POOL)
        return "".join(rng.choices(alphabet, k=6))

    return next_uid


def reservation(name: str) -> NamespaceConfig | None:
    """The longest reserved namespace covering ``name`` (PROTOCOL.md section 6)."""
    best: str | None = None
    for prefix in NAMESPACES:
        covers = name == prefix or name.startswith((prefix + ":", prefix + "/"))
        if covers and (best is None or len(prefix) > len(best)):
            best = prefix
    return None if best is None else NAMESPACES[best]


def compact_size(frame: Frame) -> int:
    """Bytes of ``frame`` as the hub encodes it: compact JSON, UTF-8 left unescaped."""
    return len(json.dumps(frame, separators=(",", ":"), ensure_ascii=False).encode())


def relay_size(head: Frame, raw: str) -> int:
    """Bytes of an envelope: its fields (``head``) plus the sender's text, embedded as is."""
    return compact_size(head) + MESSAGE_KEY + len(raw.encode())


@dataclass(eq=False)
class Client:
    vc: VirtualClient
    channel: str
    uid: str
    alias: str | None
    announce: bool
    echo: bool
    wants_users: bool
    can_send: bool
    joined: bool = True
    got_first: bool = False
    #: Not reading: what the hub queues for it stays in its outbox.
    stalled: bool = False
    #: The frames its outbox holds (decoded form, byte length), oldest first.
    pending: list[tuple[Frame, int]] = field(default_factory=list)
    #: Bytes its outbox holds (the sum of the lengths in ``pending``).
    queued: int = 0
    #: A frame was refused (or it was swept): the outbox takes nothing more, ever.
    overflowed: bool = False
    #: What its session was told: (code, reason), or None.
    kicked: tuple[int, str] | None = None

    def __repr__(self) -> str:
        state = "" if self.joined else " (left)"
        if self.stalled:
            state += f" stalled {self.queued}B"
        return f"<{self.uid} in {self.channel!r}{state}>"


@dataclass
class ModelChannel:
    members: list[Client] = field(default_factory=list)
    join_key: str | None = None
    send_key: str | None = None


def _who(client: Client) -> dict[str, Any]:
    """``uid`` and ``alias`` (only when set) of an announced client."""
    out: dict[str, Any] = {"uid": client.uid}
    if client.alias is not None:
        out["alias"] = client.alias
    return out


def _bucket(n: int) -> str:
    for low, high in ((1, 1), (2, 4), (5, 9), (10, 19)):
        if n <= high:
            return str(n) if low == high else f"{low}-{high}"
    return "20 or more"


class HubMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.limit = CONFIG.limits.outbound_buffer_bytes
        self.hub = Hub(CONFIG, self.clock, colliding_uids(random.Random(0)))
        self.clients: list[Client] = []
        self.channels: dict[str, ModelChannel] = {}
        #: Report coverage with hypothesis event()/target() (off when replayed by hand).
        self.reporting = True
        #: Slow-consumer departures of the current step: refused a frame, swept by leaves.
        self.refused = 0
        self.swept = 0
        self.most_slow = self.most_refused = 0

    @initialize(seed=st.integers(0, 2**32 - 1))
    def seed_uids(self, seed: int) -> None:
        self.hub = Hub(CONFIG, self.clock, colliding_uids(random.Random(seed)))

    # -- helpers --------------------------------------------------------------------------

    def now(self) -> int:
        return int(self.clock.time() * 1000)

    def live(self) -> list[Client]:
        return [c for c in self.clients if c.joined]

    def gone(self) -> list[Client]:
        return [c for c in self.clients if not c.joined]

    def room(self, client: Client) -> int:
        """Free bytes in the client's outbox, -1 once it overflowed (``Outbox.room``)."""
        return -1 if client.overflowed else self.limit - client.queued

    # -- the model of delivery --------------------------------------------------------------

    def queue(self, client: Client, frame: Frame, size: int, *, always: bool = False) -> bool:
        """One put into the client's outbox; False when refused (over the limit)."""
        assert client.joined, f"model error: queueing {frame!r} for {client!r}, not a member"
        if not always and (client.overflowed or client.queued + size > self.limit):
            client.overflowed = True
            return False
        client.pending.append((frame, size))
        client.queued += size
        return True

    def deliver(self, name: str, recipients: list[Client], frame: Frame, size: int, skip: Client | None = None) -> None:
        """One frame to every recipient but ``skip``; the refused ones depart together."""
        slow = [c for c in recipients if c is not skip and not self.queue(c, frame, size)]
        self.refused += len(slow)
        if slow:
            self.depart(name, [(c, SLOW) for c in slow])

    def relay(self, sender: Client | None, recipients: list[Client], value: Any, raw: str, skip: Client | None) -> None:
        head: Frame = {"date": self.now()}
        if sender is not None:
            head["uid"] = sender.uid
            if sender.alias is not None:
                head["alias"] = sender.alias
        name = sender.channel if sender is not None else recipients[0].channel
        self.deliver(name, recipients, {**head, "message": value}, relay_size(head, raw), skip)

    def error_frame(self, text: str) -> Frame:
        return {"type": "error", "message": text, "date": self.now()}

    def error(self, client: Client, text: str) -> None:
        frame = self.error_frame(text)
        self.deliver(client.channel, [client], frame, compact_size(frame))

    def leave_frame(self, client: Client, total: int) -> Frame:
        frame: Frame = {"type": "leave", "total": total, "date": self.now()}
        if client.announce:
            frame.update(_who(client))
        return frame

    def depart(self, name: str, departures: list[tuple[Client, tuple[int, str] | None]]) -> None:
        """Members leave ``name`` at once: leaves, the slow-consumer sweep, the kicks."""
        channel = self.channels[name]
        before = len(channel.members)
        gone: list[tuple[Client, tuple[int, str] | None]] = []
        for client, kick in departures:
            if client.joined:
                channel.members.remove(client)
                client.joined = False
                gone.append((client, kick))
        if channel.members:
            leaves: list[tuple[Frame, int]] = []
            need = 0
            for client, _ in gone:
                frame = self.leave_frame(client, before - 1 - len(leaves))
                leaves.append((frame, compact_size(frame)))
                need += leaves[-1][1]
            for client in sorted(channel.members, key=self.room):
                if self.room(client) >= need:
                    break
                channel.members.remove(client)
                client.joined = False
                client.overflowed = True
                gone.append((client, SLOW))
                self.swept += 1
                frame = self.leave_frame(client, before - 1 - len(leaves))
                leaves.append((frame, compact_size(frame)))
                need += leaves[-1][1]
            for client in channel.members:
                for frame, size in leaves:
                    assert self.queue(client, frame, size), f"model error: {client!r} has no room for the leaves"
        if not channel.members:
            del self.channels[name]
        for client, kick in gone:
            if kick is not None:
                client.kicked = kick

    # -- checking ------------------------------------------------------------------------

    def drain(self, client: Client, what: str) -> None:
        """The client reads its outbox: exactly the frames (and bytes) the model queued."""
        chunks = [bytes(chunk) for chunk in client.vc.outbox.take()]
        got = [strict_json(chunk) for chunk in chunks]
        if got and not client.got_first:
            first = got[0]
            assert first.get("type") == "join" and first.get("self") is True, (
                f"{what}: first frame of {client!r} is not its self-join: {first!r}"
            )
            client.got_first = True
        want = [frame for frame, _ in client.pending]
        assert got == want, f"{what}: {client!r} got {got!r}, expected {want!r}"
        sizes = [len(chunk) for chunk in chunks]
        want_sizes = [size for _, size in client.pending]
        assert sizes == want_sizes, f"{what}: {client!r} got frames of {sizes} bytes, expected {want_sizes}"
        client.pending.clear()
        client.queued = 0

    def settle(self, what: str) -> None:
        """After an operation: every client that reads gets exactly what the model predicts."""
        self.hub.take_ready()
        for client in self.clients:
            if not client.stalled:
                self.drain(client, what)
        slow = self.refused + self.swept
        if slow and self.reporting:
            event(f"slow consumers departing in one step: {_bucket(slow)}")
            if self.swept:
                event(f"swept by the leaves in one step: {_bucket(self.swept)}")
        self.most_slow = max(self.most_slow, slow)
        self.most_refused = max(self.most_refused, self.refused)
        self.refused = self.swept = 0

    def admit(self, name: str, join_key: str | None, send_key: str | None) -> bool | None:
        """The model's access decision: None when refused (403), else whether it may send."""
        res = reservation(name)
        if res is not None:
            in_play = res.join_key is not None or join_key is not None
            if in_play and join_key != res.join_key:
                return None
            if send_key is not None:
                return True if send_key == res.send_key else None
            return res.send_key is None
        channel = self.channels.get(name)
        if channel is None:
            return True
        if channel.join_key is not None and join_key != channel.join_key:
            return None
        return channel.send_key is None or send_key == channel.send_key

    def pick(self, index: int) -> Client:
        live = self.live()
        return live[index % len(live)]

    def do_join(
        self,
        name: str,
        alias: str | None,
        announce: bool,
        echo: bool,
        users: bool,
        join_key: str | None,
        send_key: str | None,
        *,
        stalled: bool = False,
    ) -> None:
        what = f"join {name!r} alias={alias!r} announce={announce} echo={echo} list={users} keys={join_key},{send_key}"
        decision = self.admit(name, join_key, send_key)
        try:
            vc = VirtualClient(
                self.hub,
                name,
                alias=alias,
                announce=announce,
                echo=echo,
                list=users,
                join_key=join_key,
                send_key=send_key,
            )
        except HTTPError as exc:
            assert decision is None, f"{what}: refused with {exc.status} {exc.message!r}, the model admits it"
            assert exc.status == 403, f"{what}: refused with {exc.status}, expected 403"
            self.settle(what)
            return
        assert decision is not None, f"{what}: admitted, the model refuses it"
        channel = self.channels.get(name)
        if channel is None:
            channel = self.channels[name] = ModelChannel()
            if reservation(name) is None:
                channel.join_key, channel.send_key = join_key, send_key
        client = Client(vc, name, vc.uid, alias, announce, echo, users, decision, stalled=stalled)
        channel.members.append(client)
        self.clients.append(client)
        date = self.now()
        total = len(channel.members)
        own: Frame = {"type": "join", "self": True, "uid": client.uid, "total": total, "date": date}
        if alias is not None:
            own["alias"] = alias
        if users:
            own["users"] = [
                {**_who(m), **({"self": True} if m is client else {})} for m in channel.members if m.announce
            ]
        self.queue(client, own, compact_size(own), always=True)
        if total > 1:
            join_event: Frame = {"type": "join", "total": total, "date": date}
            if announce:
                join_event.update(_who(client))
            self.deliver(name, list(channel.members), join_event, compact_size(join_event), skip=client)
        self.settle(what + (" (stalled)" if stalled else ""))

    # -- rules ----------------------------------------------------------------------------

    @rule(
        name=st.sampled_from(CHANNELS),
        alias=st.sampled_from(ALIASES),
        announce=st.booleans(),
        echo=st.booleans(),
        users=st.booleans(),
        join_key=st.sampled_from(JOIN_KEYS),
        send_key=st.sampled_from(SEND_KEYS),
    )
    def join(
        self,
        name: str,
        alias: str | None,
        announce: bool,
        echo: bool,
        users: bool,
        join_key: str | None,
        send_key: str | None,
    ) -> None:
        self.do_join(name, alias, announce, echo, users, join_key, send_key)

    @rule(
        alias=st.sampled_from(ALIASES),
        announce=st.booleans(),
        echo=st.booleans(),
        users=st.booleans(),
        send_key=st.sampled_from(SEND_KEYS),
    )
    def join_room(self, alias: str | None, announce: bool, echo: bool, users: bool, send_key: str | None) -> None:
        """Joins are the only way to grow channels: a second rule makes them twice as likely."""
        self.do_join("room", alias, announce, echo, users, None, send_key)

    @precondition(lambda self: self.live())
    @rule(index=st.integers(0, 63))
    def leave(self, index: int) -> None:
        client = self.pick(index)
        client.vc.leave()
        self.depart(client.channel, [(client, None)])
        self.settle(f"leave {client!r}")

    @precondition(lambda self: self.live())
    @rule(index=st.integers(0, 63), how=st.sampled_from(KICKS))
    def kick(self, index: int, how: tuple[int, str]) -> None:
        client = self.pick(index)
        self.hub.kick(client.vc.member, *how)
        assert client.vc.kicked == how, f"kick {client!r}: session told {client.vc.kicked!r}, expected {how!r}"
        self.depart(client.channel, [(client, how)])
        self.settle(f"kick {client!r} with {how!r}")

    @precondition(lambda self: self.gone())
    @rule(index=st.integers(0, 63))
    def leave_again(self, index: int) -> None:
        gone = self.gone()
        client = gone[index % len(gone)]
        client.vc.leave()
        self.hub.kick(client.vc.member, 1008, "again")
        self.settle(f"leave again {client!r}")

    @precondition(lambda self: self.live())
    @rule(index=st.integers(0, 63), value=g.json_values)
    def broadcast(self, index: int, value: Any) -> None:
        sender = self.pick(index)
        what = f"broadcast from {sender!r}: {value!r}"
        raw = json.dumps(value)
        sender.vc.send_text(raw)
        if not sender.can_send:
            self.error(sender, SEND_KEY_REQUIRED)
        else:
            members = list(self.channels[sender.channel].members)
            self.relay(sender, members, value, raw, None if sender.echo else sender)
        self.settle(what)

    @precondition(lambda self: self.live())
    @rule(
        index=st.integers(0, 63),
        towards=st.sampled_from(("member", "member", "other_channel", "departed", "made_up")),
        pick=st.integers(0, 63),
        value=g.json_values,
        legacy=st.booleans(),
    )
    def direct(self, index: int, towards: str, pick: int, value: Any, legacy: bool) -> None:
        sender = self.pick(index)
        if towards == "member":
            pool = [c.uid for c in self.channels[sender.channel].members if c is not sender]
        elif towards == "other_channel":
            pool = [c.uid for c in self.live() if c.channel != sender.channel]
        elif towards == "departed":
            pool = [c.uid for c in self.gone()]
        else:
            pool = ["nobody", "zzzzzz", "", "AAAAAA"]
        uid = pool[pick % len(pool)] if pool else "qqqqqq"
        if uid == sender.uid:
            return  # a direct message to oneself is outside this model
        what = f"direct from {sender!r} to {uid!r}: {value!r}"
        raw = json.dumps(value)
        sender.vc.send_text(f"@@{uid}@@{raw}" if legacy else f"\x1f{uid}\x1f{raw}")
        targets = [c for c in self.channels[sender.channel].members if c.uid == uid]
        if not sender.can_send:
            self.error(sender, SEND_KEY_REQUIRED)
        elif not targets:
            self.error(sender, f"User {uid} not found.")
        else:
            self.relay(sender, targets, value, raw, None)
        self.settle(what)

    @precondition(lambda self: self.live())
    @rule(index=st.integers(0, 63), text=st.sampled_from(INVALID), direct=st.booleans())
    def invalid_json(self, index: int, text: str, direct: bool) -> None:
        sender = self.pick(index)
        if direct:
            others = [c for c in self.channels[sender.channel].members if c is not sender]
            text = f"\x1f{others[0].uid if others else 'nobody'}\x1f{text}"
        sender.vc.send_text(text)
        self.error(sender, INVALID_JSON)
        self.settle(f"invalid JSON {text!r} from {sender!r}")

    @rule(name=st.sampled_from(PUSH_CHANNELS), key=st.sampled_from(PUSH_KEYS), value=g.json_values)
    def push(self, name: str, key: str | None, value: Any) -> None:
        what = f"push to {name!r} with key {key!r}: {value!r}"
        res = reservation(name)
        allowed = res is not None and res.send_key is not None and key == res.send_key
        raw = json.dumps(value)
        message = parse_json(raw)
        assert message is not None
        try:
            reached = self.hub.push(name, message, key)
        except HTTPError as exc:
            assert not allowed, f"{what}: refused with {exc.status} {exc.message!r}"
            assert exc.status == 403, f"{what}: refused with {exc.status}, expected 403"
            self.settle(what)
            return
        assert allowed, f"{what}: delivered to {reached}, the model refuses it"
        channel = self.channels.get(name)
        members = list(channel.members) if channel is not None else []
        assert reached == len(members), f"{what}: reported {reached} recipients, channel has {len(members)}"
        if members:
            self.relay(None, members, value, raw, None)
        self.settle(what)

    @rule(ms=st.integers(0, 90_000))
    def tick(self, ms: int) -> None:
        self.clock.advance(ms / 1000)
        self.settle(f"tick {ms} ms")

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def hub_matches_model(self) -> None:
        hub = self.hub
        assert set(hub.channels) == set(self.channels), (
            f"hub channels {sorted(hub.channels)} != model {sorted(self.channels)}"
        )
        for name, model in self.channels.items():
            channel = hub.channels[name]
            assert channel.members, f"empty channel {name!r} kept"
            uids = list(channel.members)
            assert uids == [c.uid for c in model.members], f"{name!r}: members {uids} != model order"
            assert len(set(uids)) == len(uids)
            for uid, member in channel.members.items():
                assert UID_RE.match(uid), f"uid {uid!r} is not [A-Za-z0-9]{{6}}"
                assert member.uid == uid and member.channel is channel
        assert hub.connections == sum(len(c.members) for c in self.channels.values())
        for client in self.clients:
            assert client.vc.member.joined == client.joined, f"{client!r}: joined={client.vc.member.joined}"

    @invariant()
    def outboxes_match_model(self) -> None:
        for client in self.clients:
            outbox = client.vc.outbox
            # Reading clients were drained; a stalled one holds what the model queued (a
            # departed one no more than it held when it went: nothing follows its last frame).
            assert outbox.size == client.queued, f"{client!r}: outbox holds {outbox.size} bytes, model {client.queued}"
            assert outbox.overflowed == client.overflowed, f"{client!r}: overflowed={outbox.overflowed}"
            assert client.vc.kicked == client.kicked, f"{client!r}: session told {client.vc.kicked!r}"
            if outbox.overflowed:
                assert not client.vc.member.joined, f"{client!r}: overflowed but still a member"
            only_self_join = len(client.pending) == 1 and client.pending[0][0].get("self") is True
            assert outbox.size <= self.limit or only_self_join, (
                f"{client!r}: {outbox.size} bytes queued, over the limit {self.limit}"
            )


class SlowHubMachine(HubMachine):
    """The same model with a small outbound limit, and clients that stop reading."""

    @initialize(seed=st.integers(0, 2**32 - 1), limit=SLOW_LIMITS)
    def seed_uids(self, seed: int, limit: int = 1000) -> None:
        self.limit = limit
        self.hub = Hub(make_config(limit), self.clock, colliding_uids(random.Random(seed)))

    def teardown(self) -> None:
        if self.reporting:
            target(float(self.most_slow), label="slow consumers departing in one step")
            target(float(self.most_refused), label="members refusing one frame")

    def stalled(self) -> list[Client]:
        return [c for c in self.clients if c.stalled]

    @rule(
        name=st.sampled_from(("room", "room", "pub/news")),
        joiners=st.lists(
            st.tuples(st.sampled_from(ALIASES), st.booleans(), st.booleans(), st.booleans(), st.booleans()),
            min_size=3,
            max_size=24,
        ),
    )
    def join_many(self, name: str, joiners: list[tuple[str | None, bool, bool, bool, bool]]) -> None:
        """Grow a channel fast; some joiners never read, not even their self-join."""
        for alias, announce, echo, users, stalled in joiners:
            self.do_join(name, alias, announce, echo, users, None, None, stalled=stalled)

    @rule(alias=st.sampled_from(ALIASES), announce=st.booleans(), users=st.booleans())
    def join_stalled(self, alias: str | None, announce: bool, users: bool) -> None:
        self.do_join("room", alias, announce, False, users, None, None, stalled=True)

    @precondition(lambda self: any(not c.stalled for c in self.live()))
    @rule(index=st.integers(0, 63))
    def stall(self, index: int) -> None:
        readers = [c for c in self.live() if not c.stalled]
        readers[index % len(readers)].stalled = True

    @precondition(lambda self: self.live())
    @rule(index=st.integers(0, 63), mask=st.lists(st.booleans(), min_size=1, max_size=6))
    def stall_many(self, index: int, mask: list[bool]) -> None:
        """Member i of a channel stops reading iff ``mask[i % len(mask)]``."""
        for i, client in enumerate(self.channels[self.pick(index).channel].members):
            client.stalled = client.stalled or mask[i % len(mask)]

    @precondition(lambda self: self.stalled())
    @rule(index=st.integers(0, 63))
    def read(self, index: int) -> None:
        """A stalled client (maybe kicked meanwhile) reads its whole backlog."""
        stalled = self.stalled()
        client = stalled[index % len(stalled)]
        self.hub.take_ready()
        self.drain(client, f"backlog of {client!r}")
        client.stalled = False

    @precondition(lambda self: self.live())
    @rule(index=st.integers(0, 63), slack=st.integers(-2, 120) | st.integers(-1, 3))
    def fill(self, index: int, slack: int) -> None:
        """Top a client's queue up so that ``slack`` bytes stay free (below 0: it overflows).

        The filler is the error frame answering a direct message to a made-up uid, whose
        length sets the frame's size. Stalled clients are picked first.
        """
        pool = [c for c in self.live() if c.stalled] or self.live()
        self.fill_up(pool[index % len(pool)], slack)

    @precondition(lambda self: self.stalled())
    @rule(index=st.integers(0, 63), slack=st.integers(-1, 80), spread=st.sampled_from(SPREADS))
    def fill_many(self, index: int, slack: int, spread: int) -> None:
        """Fill the stalled members of a channel, the k-th leaving ``slack + k * |spread|`` free.

        Then one frame can overflow them all at once, and with a spread near the size of
        a leave, the leaves of those refused sweep the others out one by one. A negative
        spread counts k from the last member, so that the sweep goes against join order.
        """
        stalled = self.stalled()
        self.fill_channel(stalled[index % len(stalled)].channel, slack, spread)

    def fill_channel(self, name: str, slack: int, spread: int) -> None:
        channel = self.channels.get(name)
        stalled = [c for c in channel.members if c.stalled] if channel else []
        if spread < 0:
            stalled.reverse()
        for k, client in enumerate(stalled):
            if client.joined:
                self.fill_up(client, slack + k * abs(spread))

    def crowds(self) -> list[str]:
        return [name for name, channel in self.channels.items() if len(channel.members) >= CROWD]

    @precondition(lambda self: self.crowds())
    @rule(
        index=st.integers(0, 63),
        mask=st.lists(st.booleans(), min_size=1, max_size=4),
        slack=st.integers(-1, 60),
        spread=st.sampled_from(SPREADS),
        value=g.json_values,
    )
    def overflow_crowd(self, index: int, mask: list[bool], slack: int, spread: int, value: Any) -> None:
        """Many slow members at once: stall part of a big channel, fill them, broadcast."""
        crowds = self.crowds()
        members = self.channels[crowds[index % len(crowds)]].members
        sender = members[index % len(members)]
        self.stall_many(self.live().index(sender), mask)
        self.fill_channel(sender.channel, slack, spread)
        if sender.joined:
            self.broadcast(self.live().index(sender), value)

    def fill_up(self, client: Client, slack: int) -> None:
        base = compact_size(self.error_frame("User  not found."))
        uid = FILL_CHAR * max(0, self.room(client) - slack - base)
        client.vc.send_text("0", to=uid)
        if not client.can_send:
            self.error(client, SEND_KEY_REQUIRED)
        else:
            self.error(client, f"User {uid} not found.")
        self.settle(f"fill {client!r} leaving {slack} bytes")


TestHubModel = HubMachine.TestCase
TestSlowHubModel = SlowHubMachine.TestCase


# -- a replayed mass overflow ----------------------------------------------------------------


def _replay_machine(limit: int) -> SlowHubMachine:
    machine = SlowHubMachine()
    machine.reporting = False
    machine.seed_uids(seed=7, limit=limit)
    return machine


def _check(machine: HubMachine) -> None:
    machine.hub_matches_model()
    machine.outboxes_match_model()


def test_mass_overflow_cascades() -> None:
    """30 members, 20 stalled ones refuse one broadcast, and the leaves sweep 4 more.

    Members 5..24 are left with less room than the envelope. Members 25..29 take it, then
    have room for exactly 20, 21, 22 and 23 leaves minus one byte (28, 25, 29 and 27:
    swept in that order, each sweep adding the leave that pushes out the next) and for
    exactly 24 leaves (26: it stays, with no room left). A later plain leave then sweeps
    member 26. Members 0..4 read all along.
    """
    limit = 2000
    m = _replay_machine(limit)
    for i in range(30):
        m.do_join(
            "room", ALIASES[i % len(ALIASES)] if i < 25 else None, i >= 25 or i % 3 == 0, False, False, None, None
        )
        _check(m)
    clients = list(m.channels["room"].members)
    assert len(clients) == 30 and all(c.joined for c in clients)
    for client in clients[5:]:
        client.stalled = True
    value = {"type": "chat", "text": "x" * 40}
    raw = json.dumps(value)
    sender = clients[0]
    head = {"uid": sender.uid, "date": m.now(), **({"alias": sender.alias} if sender.alias else {})}
    envelope = relay_size(head, raw)
    refused = clients[5:25]
    swept = [clients[28], clients[25], clients[29], clients[27]]
    survivor = clients[26]
    # The leaves the broadcast will cause, in departure order.
    leaves = [compact_size(m.leave_frame(c, 29 - k)) for k, c in enumerate(refused + swept)]
    need = [sum(leaves[:k]) for k in range(len(leaves) + 1)]
    rooms = {c: envelope - 1 - (k % envelope) for k, c in enumerate(refused)}
    rooms |= {c: envelope + need[20 + k] - 1 for k, c in enumerate(swept)}
    rooms[survivor] = envelope + need[24]
    for client in clients[5:]:
        m.fill_up(client, rooms[client])
        _check(m)
        assert m.room(client) == rooms[client], f"fill left {m.room(client)} bytes free, wanted {rooms[client]}"
    m.broadcast(m.live().index(sender), value)
    _check(m)
    assert [c for c in clients if c.joined] == [*clients[:5], survivor]
    assert all(c.kicked == SLOW and c.overflowed for c in refused + swept)
    assert m.room(survivor) == 0
    got = [frame for frame, _ in survivor.pending if frame.get("type") == "leave"]
    assert [frame["total"] for frame in got] == list(range(29, 5, -1))
    assert [frame["uid"] for frame in got[20:]] == [c.uid for c in swept]
    # The refused members' backlogs end with the filler, the swept ones' with the envelope.
    for client in refused + swept:
        last = client.pending[-1][0]
        assert ("type" not in last) == (client in swept), f"{client!r} last got {last!r}"
        m.read(m.stalled().index(client))
        _check(m)
    m.leave(m.live().index(clients[1]))
    _check(m)
    assert not survivor.joined and survivor.kicked == SLOW
    m.read(m.stalled().index(survivor))
    _check(m)
    assert m.channels["room"].members == [clients[0], *clients[2:5]]


@pytest.mark.parametrize("offset", [-1, 0, 1, 2, 5, 7])
def test_sweep_goes_by_free_room(offset: int) -> None:
    """B joined before C but has more room (``offset`` bytes over one leave; C has one
    byte less than a leave): C is swept first, then B. With equal rooms, join order wins."""
    m = _replay_machine(1000)
    for _ in range(4):
        m.do_join("room", None, True, False, False, None, None)
    x, b, c, d = m.clients
    for client in (b, c, d):
        client.stalled = True
    first = compact_size(m.leave_frame(x, 3))
    m.fill_up(b, first + offset)
    m.fill_up(c, first - 1)
    _check(m)
    m.leave(0)
    _check(m)
    assert not b.joined and not c.joined and b.kicked == c.kicked == SLOW
    order = [b, c] if offset < 0 else [c, b]
    got = [(frame["uid"], frame["total"]) for frame, _ in d.pending if frame.get("type") == "leave"]
    assert got == [(x.uid, 3), (order[0].uid, 2), (order[1].uid, 1)]
    for client in (b, c, d):
        m.read(m.stalled().index(client))
        _check(m)


def test_frame_that_fits_exactly() -> None:
    """A frame that fills the queue to the byte is taken; the next one is refused."""
    m = _replay_machine(500)
    m.do_join("room", "Bob", True, False, False, None, None)
    m.do_join("room", None, False, False, False, None, None, stalled=True)
    b = m.clients[1]
    m.fill_up(b, 0)
    _check(m)
    assert b.joined and b.vc.outbox.size == m.limit
    m.broadcast(0, None)
    _check(m)
    assert not b.joined and b.kicked == SLOW
    m.read(0)
    _check(m)


def test_self_join_over_the_limit() -> None:
    """A joiner whose self-join alone is over the limit gets it, then nothing more fits."""
    m = _replay_machine(300)
    for _ in range(5):
        m.do_join("room", "a" * 64, True, False, False, None, None)
    m.do_join("room", None, False, False, True, None, None, stalled=True)
    _check(m)
    joiner = m.clients[-1]
    assert joiner.joined and joiner.queued > m.limit
    m.do_join("room", None, False, False, False, None, None)
    _check(m)
    assert not joiner.joined and joiner.kicked == SLOW
    m.read(m.stalled().index(joiner))
    _check(m)
