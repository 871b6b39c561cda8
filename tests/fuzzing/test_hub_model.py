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
"""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
CONFIG = Config(
    # Rate limits are not part of this model: set them out of reach.
    limits=LimitsConfig(messages_per_second=1e9, messages_burst=10**9, pushes_per_second_per_ip=1e9),
    namespaces=NAMESPACES,
)
CHANNELS = ("room", "room", "room", "lobby", "secret", "secret:vip", "pub/news", "locked")
PUSH_CHANNELS = ("room", "lobby", "secret", "secret:vip", "pub/news", "locked", "pub", "nowhere", "secret/x")
ALIASES = (None, "Alice", "Bob", "\u00c9l\u00e9onore", "a" * 64)
JOIN_KEYS = (None, "jk", "k1", "k2")
SEND_KEYS = (None, "sk", "psk", "k1", "k2")
PUSH_KEYS = (None, "sk", "psk", "k1", "wrong")
UID_POOL = ("aaaaaa", "bbbbbb", "cccccc", "dddddd", "AbC123", "zzzzz9")
INVALID = ("undefined", "", "{", "[1,]", "NaN", "'a'", "1 2")
INVALID_JSON = "Invalid JSON message."
SEND_KEY_REQUIRED = "Sending requires a valid sendKey."


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


@dataclass(eq=False)
class Client:
    vc: VirtualClient
    channel: str
    uid: str
    alias: str | None
    announce: bool
    echo: bool
    list: bool
    can_send: bool
    joined: bool = True
    got_first: bool = False

    def __repr__(self) -> str:
        return f"<{self.uid} in {self.channel!r}{'' if self.joined else ' (left)'}>"


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


class HubMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.hub = Hub(CONFIG, self.clock, colliding_uids(random.Random(0)))
        self.clients: list[Client] = []
        self.channels: dict[str, ModelChannel] = {}

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

    def expect(self, what: str, expected: dict[Client, list[dict[str, Any]]]) -> None:
        """Every client received exactly the frames in ``expected`` (others: nothing)."""
        self.hub.take_ready()
        for client in self.clients:
            got = [strict_json(bytes(chunk)) for chunk in client.vc.outbox.take()]
            want = expected.get(client, [])
            if got and not client.got_first:
                first = got[0]
                assert first.get("type") == "join" and first.get("self") is True, (
                    f"{what}: first frame of {client!r} is not its self-join: {first!r}"
                )
                client.got_first = True
            assert got == want, f"{what}: {client!r} got {got!r}, expected {want!r}"

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

    def relay_expectation(
        self, sender: Client, recipients: list[Client], message: Any
    ) -> dict[Client, list[dict[str, Any]]]:
        envelope: dict[str, Any] = {"uid": sender.uid, "date": self.now(), "message": message}
        if sender.alias is not None:
            envelope["alias"] = sender.alias
        return {c: [envelope] for c in recipients}

    def remove(self, client: Client, what: str) -> None:
        """Model a member going (leave or kick): the others get a leave event."""
        channel = self.channels[client.channel]
        channel.members.remove(client)
        client.joined = False
        expected: dict[Client, list[dict[str, Any]]] = {}
        if channel.members:
            frame: dict[str, Any] = {"type": "leave", "total": len(channel.members), "date": self.now()}
            if client.announce:
                frame.update(_who(client))
            expected = {c: [frame] for c in channel.members}
        else:
            del self.channels[client.channel]
        self.expect(what, expected)

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
            self.expect(what, {})
            return
        assert decision is not None, f"{what}: admitted, the model refuses it"
        channel = self.channels.get(name)
        if channel is None:
            channel = self.channels[name] = ModelChannel()
            if reservation(name) is None:
                channel.join_key, channel.send_key = join_key, send_key
        client = Client(vc, name, vc.uid, alias, announce, echo, users, decision)
        others = list(channel.members)
        channel.members.append(client)
        self.clients.append(client)
        date = self.now()
        total = len(channel.members)
        own: dict[str, Any] = {"type": "join", "self": True, "uid": client.uid, "total": total, "date": date}
        if alias is not None:
            own["alias"] = alias
        if users:
            own["users"] = [
                {**_who(m), **({"self": True} if m is client else {})} for m in channel.members if m.announce
            ]
        event: dict[str, Any] = {"type": "join", "total": total, "date": date}
        if announce:
            event.update(_who(client))
        expected: dict[Client, list[dict[str, Any]]] = {c: [event] for c in others}
        expected[client] = [own]
        self.expect(what, expected)

    @rule(
        alias=st.sampled_from(ALIASES),
        announce=st.booleans(),
        echo=st.booleans(),
        users=st.booleans(),
        send_key=st.sampled_from(SEND_KEYS),
    )
    def join_room(self, alias: str | None, announce: bool, echo: bool, users: bool, send_key: str | None) -> None:
        """Joins are the only way to grow channels: a second rule makes them twice as likely."""
        self.join("room", alias, announce, echo, users, None, send_key)

    @precondition(lambda self: self.live())
    @rule(index=st.integers(0, 63))
    def leave(self, index: int) -> None:
        live = self.live()
        client = live[index % len(live)]
        client.vc.leave()
        self.remove(client, f"leave {client!r}")

    @precondition(lambda self: self.live())
    @rule(index=st.integers(0, 63))
    def kick(self, index: int) -> None:
        live = self.live()
        client = live[index % len(live)]
        self.hub.kick(client.vc.member, 1008, "slow consumer")
        assert client.vc.kicked == (1008, "slow consumer"), f"kick {client!r}: session not told"
        self.remove(client, f"kick {client!r}")

    @precondition(lambda self: self.gone())
    @rule(index=st.integers(0, 63))
    def leave_again(self, index: int) -> None:
        gone = self.gone()
        client = gone[index % len(gone)]
        client.vc.leave()
        self.hub.kick(client.vc.member, 1008, "again")
        self.expect(f"leave again {client!r}", {})

    @precondition(lambda self: self.live())
    @rule(index=st.integers(0, 63), value=g.json_values)
    def broadcast(self, index: int, value: Any) -> None:
        live = self.live()
        sender = live[index % len(live)]
        what = f"broadcast from {sender!r}: {value!r}"
        sender.vc.send_text(json.dumps(value))
        if not sender.can_send:
            error = {"type": "error", "message": SEND_KEY_REQUIRED, "date": self.now()}
            self.expect(what, {sender: [error]})
            return
        members = self.channels[sender.channel].members
        recipients = [m for m in members if m is not sender or sender.echo]
        self.expect(what, self.relay_expectation(sender, recipients, value))

    @precondition(lambda self: self.live())
    @rule(
        index=st.integers(0, 63),
        towards=st.sampled_from(("member", "member", "other_channel", "departed", "made_up")),
        pick=st.integers(0, 63),
        value=g.json_values,
        legacy=st.booleans(),
    )
    def direct(self, index: int, towards: str, pick: int, value: Any, legacy: bool) -> None:
        live = self.live()
        sender = live[index % len(live)]
        if towards == "member":
            pool = [c.uid for c in self.channels[sender.channel].members if c is not sender]
        elif towards == "other_channel":
            pool = [c.uid for c in live if c.channel != sender.channel]
        elif towards == "departed":
            pool = [c.uid for c in self.gone()]
        else:
            pool = ["nobody", "zzzzzz", "", "AAAAAA"]
        uid = pool[pick % len(pool)] if pool else "qqqqqq"
        if uid == sender.uid:
            return  # a direct message to oneself is outside this model
        what = f"direct from {sender!r} to {uid!r}: {value!r}"
        text = json.dumps(value)
        sender.vc.send_text(f"@@{uid}@@{text}" if legacy else f"\x1f{uid}\x1f{text}")
        if not sender.can_send:
            self.expect(what, {sender: [{"type": "error", "message": SEND_KEY_REQUIRED, "date": self.now()}]})
            return
        targets = [c for c in self.channels[sender.channel].members if c.uid == uid]
        if not targets:
            error = {"type": "error", "message": f"User {uid} not found.", "date": self.now()}
            self.expect(what, {sender: [error]})
            return
        self.expect(what, self.relay_expectation(sender, targets, value))

    @precondition(lambda self: self.live())
    @rule(index=st.integers(0, 63), text=st.sampled_from(INVALID), direct=st.booleans())
    def invalid_json(self, index: int, text: str, direct: bool) -> None:
        live = self.live()
        sender = live[index % len(live)]
        if direct:
            others = [c for c in self.channels[sender.channel].members if c is not sender]
            text = f"\x1f{others[0].uid if others else 'nobody'}\x1f{text}"
        sender.vc.send_text(text)
        error = {"type": "error", "message": INVALID_JSON, "date": self.now()}
        self.expect(f"invalid JSON {text!r} from {sender!r}", {sender: [error]})

    @rule(name=st.sampled_from(PUSH_CHANNELS), key=st.sampled_from(PUSH_KEYS), value=g.json_values)
    def push(self, name: str, key: str | None, value: Any) -> None:
        what = f"push to {name!r} with key {key!r}: {value!r}"
        res = reservation(name)
        allowed = res is not None and res.send_key is not None and key == res.send_key
        message = parse_json(json.dumps(value))
        assert message is not None
        try:
            reached = self.hub.push(name, message, key)
        except HTTPError as exc:
            assert not allowed, f"{what}: refused with {exc.status} {exc.message!r}"
            assert exc.status == 403, f"{what}: refused with {exc.status}, expected 403"
            self.expect(what, {})
            return
        assert allowed, f"{what}: delivered to {reached}, the model refuses it"
        channel = self.channels.get(name)
        members = channel.members if channel is not None else []
        assert reached == len(members), f"{what}: reported {reached} recipients, channel has {len(members)}"
        frame = {"date": self.now(), "message": value}
        self.expect(what, {c: [frame] for c in members})

    @rule(ms=st.integers(0, 90_000))
    def tick(self, ms: int) -> None:
        self.clock.advance(ms / 1000)
        self.expect(f"tick {ms} ms", {})

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


TestHubModel = HubMachine.TestCase
