"""The hub: presence, routing, keys, reservations, HTTP push and slow consumers.

Members are :class:`relaycore.testing.VirtualClient` objects (no sockets), or bare
:class:`relaycore.Outbox` instances where the exact bytes matter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest

from relaycore import Config, HTTPError, Hub, JoinOptions, LimitsConfig, NamespaceConfig, Outbox, parse_json
from relaycore.testing import FakeClock, VirtualClient, seeded_uids

START = 1_700_000_000.0
T0 = 1_700_000_000_000
SEND_KEY_REQUIRED = "Sending requires a valid sendKey."
UID_RE = re.compile(r"[A-Za-z0-9]{6}")


class Client(VirtualClient):
    """A VirtualClient that can also tell which frames arrived since the last look."""

    _read = 0

    def new(self) -> list[Any]:
        frames = self.received()
        fresh = frames[self._read :]
        self._read = len(frames)
        return list(fresh)


class Session:
    """The least a hub needs of a connection: somewhere to record kicks."""

    def __init__(self) -> None:
        self.kicks: list[tuple[int, str]] = []

    def kick(self, code: int, reason: str) -> None:
        self.kicks.append((code, reason))


def make_hub(config: Config | None = None, *, clock: FakeClock | None = None, seed: int = 1) -> Hub:
    return Hub(config or Config(), clock or FakeClock(START), seeded_uids(seed))


def raw(value: Any) -> msgspec.Raw:
    parsed = parse_json(msgspec.json.encode(value))
    assert parsed is not None
    return parsed


def frame_json(frame: bytes) -> Any:
    """Decode one server text frame (short or medium header) built by the hub."""
    assert frame[0] == 0x81
    n = frame[1]
    start = 2 if n < 126 else 4
    return json.loads(frame[start:])


@pytest.fixture
def hub() -> Hub:
    return make_hub()


# -- self-join ------------------------------------------------------------------------------


def test_self_join_is_the_first_frame_with_uid_alias_total_and_date(hub: Hub) -> None:
    alice = Client(hub, "room", alias="Alice")
    assert alice.new() == [{"type": "join", "self": True, "uid": alice.uid, "alias": "Alice", "total": 1, "date": T0}]
    bob = Client(hub, "room")
    assert bob.new() == [{"type": "join", "self": True, "uid": bob.uid, "total": 2, "date": T0}]


def test_self_join_has_no_users_without_list(hub: Hub) -> None:
    Client(hub, "room", announce=True)
    bob = Client(hub, "room", announce=True)
    assert "users" not in bob.new()[0]


def test_users_list_is_empty_when_nobody_announced(hub: Hub) -> None:
    Client(hub, "room")
    carol = Client(hub, "room", list=True)
    assert carol.new()[0]["users"] == []


def test_users_lists_announced_members_in_join_order_with_own_entry(hub: Hub) -> None:
    a = Client(hub, "room", announce=True, alias="A")
    Client(hub, "room")  # not announced: not listed
    c = Client(hub, "room", announce=True)
    d = Client(hub, "room", announce=True, alias="D", list=True)
    assert d.new() == [
        {
            "type": "join",
            "self": True,
            "uid": d.uid,
            "alias": "D",
            "total": 4,
            "date": T0,
            "users": [{"uid": a.uid, "alias": "A"}, {"uid": c.uid}, {"uid": d.uid, "alias": "D", "self": True}],
        }
    ]


def test_users_list_leaves_out_the_joiner_who_did_not_announce(hub: Hub) -> None:
    a = Client(hub, "room", announce=True)
    e = Client(hub, "room", list=True, alias="E")
    assert e.new()[0]["users"] == [{"uid": a.uid}]


def test_users_list_follows_join_order_after_a_leave_and_rejoin(hub: Hub) -> None:
    a = Client(hub, "room", announce=True)
    b = Client(hub, "room", announce=True)
    a.leave()
    a2 = Client(hub, "room", announce=True)
    d = Client(hub, "room", list=True)
    assert d.new()[0]["users"] == [{"uid": b.uid}, {"uid": a2.uid}]


# -- others' join / leave ---------------------------------------------------------------------


def test_join_of_a_member_who_did_not_announce_is_anonymous(hub: Hub) -> None:
    a = Client(hub, "room")
    a.new()
    Client(hub, "room", alias="Bob")
    assert a.new() == [{"type": "join", "total": 2, "date": T0}]


def test_join_of_an_announced_member_carries_uid_and_alias(hub: Hub) -> None:
    a = Client(hub, "room")
    a.new()
    b = Client(hub, "room", alias="Bob", announce=True)
    c = Client(hub, "room", announce=True)
    assert a.new() == [
        {"type": "join", "uid": b.uid, "alias": "Bob", "total": 2, "date": T0},
        {"type": "join", "uid": c.uid, "total": 3, "date": T0},
    ]


def test_joiner_gets_no_join_event_about_itself(hub: Hub) -> None:
    Client(hub, "room")
    b = Client(hub, "room", announce=True, echo=True)
    assert [f["type"] for f in b.new()] == ["join"]
    assert b.new() == []


def test_leave_events_carry_uid_and_alias_only_when_announced(hub: Hub) -> None:
    a = Client(hub, "room")
    b = Client(hub, "room", alias="Bob", announce=True)
    c = Client(hub, "room", alias="Carol")
    a.new()
    b.leave()
    c.leave()
    assert a.new() == [
        {"type": "leave", "uid": b.uid, "alias": "Bob", "total": 2, "date": T0},
        {"type": "leave", "total": 1, "date": T0},
    ]


def test_leaving_twice_sends_one_leave(hub: Hub) -> None:
    a = Client(hub, "room")
    b = Client(hub, "room")
    a.new()
    b.leave()
    b.leave()
    assert a.new() == [{"type": "leave", "total": 1, "date": T0}]


def test_totals_count_every_connection_announced_or_not(hub: Hub) -> None:
    a = Client(hub, "room")
    totals = [a.new()[0]["total"]]
    others = [Client(hub, "room", announce=i % 2 == 0) for i in range(3)]
    totals += [f["total"] for f in a.new()]
    for other in others:
        other.leave()
    totals += [f["total"] for f in a.new()]
    assert totals == [1, 2, 3, 4, 3, 2, 1]


def test_other_channels_hear_nothing(hub: Hub) -> None:
    a = Client(hub, "room")
    b = Client(hub, "other", announce=True)
    a.new()
    b.send({"x": 1})
    b.leave()
    assert a.new() == []


# -- broadcast ----------------------------------------------------------------------------------


def test_broadcast_reaches_every_other_member_but_not_the_sender(hub: Hub) -> None:
    a = Client(hub, "room", alias="Alice")
    b = Client(hub, "room")
    c = Client(hub, "room")
    for client in (a, b, c):
        client.new()
    a.send({"type": "chat", "text": "hi"})
    expected = {"uid": a.uid, "alias": "Alice", "date": T0, "message": {"type": "chat", "text": "hi"}}
    assert b.new() == [expected]
    assert c.new() == [expected]
    assert a.new() == []


def test_broadcast_envelope_has_no_alias_key_when_sender_has_none(hub: Hub) -> None:
    a = Client(hub, "room")
    b = Client(hub, "room")
    b.new()
    a.send([1, "two", None])
    assert b.new() == [{"uid": a.uid, "date": T0, "message": [1, "two", None]}]


def test_payload_type_stays_inside_message_and_envelope_has_none(hub: Hub) -> None:
    a = Client(hub, "room", alias="A")
    b = Client(hub, "room")
    b.outbox.take()
    a.send_text('{"type":"chat","uid":"spoof","date":1}')
    (payload,) = b.outbox.take()
    decoded = json.loads(payload)
    assert decoded == {"uid": a.uid, "alias": "A", "date": T0, "message": {"type": "chat", "uid": "spoof", "date": 1}}
    assert payload.endswith(b',"message":{"type":"chat","uid":"spoof","date":1}}')


def test_echo_sends_the_sender_the_same_envelope_bytes(hub: Hub) -> None:
    a = Client(hub, "room", echo=True, alias="A")
    b = Client(hub, "room")
    a.outbox.take()
    b.outbox.take()
    a.send({"n": 1, "s": "hé"})
    (to_a,) = a.outbox.take()
    (to_b,) = b.outbox.take()
    assert to_a == to_b
    assert to_a is to_b
    assert json.loads(to_a) == {"uid": a.uid, "alias": "A", "date": T0, "message": {"n": 1, "s": "hé"}}


def test_invalid_json_from_a_member_is_an_error_to_it_only(hub: Hub) -> None:
    a = Client(hub, "room")
    b = Client(hub, "room")
    a.new()
    b.new()
    a.send_text("undefined")
    assert a.new() == [{"type": "error", "message": "Invalid JSON message.", "date": T0}]
    assert b.new() == []


# -- direct messages ------------------------------------------------------------------------


def test_direct_message_reaches_only_the_target(hub: Hub) -> None:
    a = Client(hub, "room", echo=True, alias="A")
    b = Client(hub, "room")
    c = Client(hub, "room")
    for client in (a, b, c):
        client.new()
    a.send({"secret": 1}, to=b.uid)
    assert b.new() == [{"uid": a.uid, "alias": "A", "date": T0, "message": {"secret": 1}}]
    assert a.new() == []  # never echoed, even with echo on
    assert c.new() == []


def test_direct_message_to_an_unknown_uid_is_an_error_naming_it(hub: Hub) -> None:
    a = Client(hub, "room")
    b = Client(hub, "room")
    a.new()
    b.new()
    a.send({"x": 1}, to="zzzzzz")
    assert a.new() == [{"type": "error", "message": "User zzzzzz not found.", "date": T0}]
    assert b.new() == []


def test_direct_message_cannot_cross_channels(hub: Hub) -> None:
    a = Client(hub, "room")
    elsewhere = Client(hub, "other")
    a.new()
    elsewhere.new()
    a.send({"x": 1}, to=elsewhere.uid)
    assert a.new() == [{"type": "error", "message": f"User {elsewhere.uid} not found.", "date": T0}]
    assert elsewhere.new() == []


# -- ephemeral keys on open channels ------------------------------------------------------------


def test_first_joiner_sets_the_send_key_others_without_it_listen_only(hub: Hub) -> None:
    owner = Client(hub, "room", send_key="s")
    listener = Client(hub, "room")
    wrong = Client(hub, "room", send_key="nope")
    for client in (owner, listener, wrong):
        client.new()
    listener.send({"x": 1})
    listener.send({"x": 2}, to=owner.uid)
    wrong.send({"x": 3})
    assert listener.new() == [{"type": "error", "message": SEND_KEY_REQUIRED, "date": T0}] * 2
    assert wrong.new() == [{"type": "error", "message": SEND_KEY_REQUIRED, "date": T0}]
    assert owner.new() == []
    owner.send({"ok": True})
    assert listener.new() == [{"uid": owner.uid, "date": T0, "message": {"ok": True}}]
    assert wrong.new() == [{"uid": owner.uid, "date": T0, "message": {"ok": True}}]


def test_joiner_with_the_channel_send_key_can_send(hub: Hub) -> None:
    Client(hub, "room", send_key="s")
    sender = Client(hub, "room", send_key="s")
    listener = Client(hub, "room")
    sender.new()
    listener.new()
    sender.send({"x": 1})
    assert sender.new() == []
    assert listener.new() == [{"uid": sender.uid, "date": T0, "message": {"x": 1}}]


def test_first_joiner_sets_the_join_key(hub: Hub) -> None:
    owner = Client(hub, "room", join_key="j")
    owner.new()
    for options in ({}, {"join_key": "nope"}, {"send_key": "j"}):
        with pytest.raises(HTTPError) as info:
            Client(hub, "room", **options)
        assert info.value.status == 403
    assert owner.new() == []  # a refused joiner is never announced
    assert len(hub.channels["room"].members) == 1
    guest = Client(hub, "room", join_key="j")
    assert guest.new()[0]["total"] == 2


def test_keys_offered_by_later_joiners_of_a_keyless_channel_are_ignored(hub: Hub) -> None:
    first = Client(hub, "room")
    Client(hub, "room", join_key="x", send_key="y")
    third = Client(hub, "room")  # not refused: the channel has no join key
    first.new()
    third.new()
    third.send({"n": 3})
    assert third.new() == []
    assert first.new() == [{"uid": third.uid, "date": T0, "message": {"n": 3}}]


def test_keys_outlive_their_setter_while_the_channel_has_members(hub: Hub) -> None:
    owner = Client(hub, "room", join_key="j", send_key="s")
    Client(hub, "room", join_key="j")
    owner.leave()
    with pytest.raises(HTTPError) as info:
        Client(hub, "room")
    assert info.value.status == 403


def test_keys_vanish_when_the_channel_empties(hub: Hub) -> None:
    owner = Client(hub, "room", join_key="j", send_key="s")
    owner.leave()
    assert "room" not in hub.channels
    newcomer = Client(hub, "room")  # no join key any more, and it sets none
    other = Client(hub, "room")
    newcomer.new()
    other.new()
    other.send({"free": True})  # no send key any more
    assert other.new() == []
    assert newcomer.new() == [{"uid": other.uid, "date": T0, "message": {"free": True}}]


# -- reservations from the configuration --------------------------------------------------------

RESERVED = Config(
    namespaces={
        "myapp": NamespaceConfig(join_key="j", send_key="s"),
        "myapp/private": NamespaceConfig(join_key="p"),
        "open": NamespaceConfig(),
        "feed": NamespaceConfig(send_key="f"),
    }
)


@pytest.fixture
def reserved() -> Hub:
    return make_hub(RESERVED)


@pytest.mark.parametrize("options", [{}, {"join_key": "wrong"}, {"join_key": "J"}, {"send_key": "s"}])
def test_join_key_of_a_reserved_namespace_is_required(reserved: Hub, options: dict[str, Any]) -> None:
    with pytest.raises(HTTPError) as info:
        Client(reserved, "myapp:room", **options)
    assert info.value.status == 403
    assert reserved.channels == {}


def test_namespace_covers_itself_and_its_subchannels(reserved: Hub) -> None:
    for channel in ("myapp", "myapp:room", "myapp/room", "myapp/privateer"):
        with pytest.raises(HTTPError):
            Client(reserved, channel)
        Client(reserved, channel, join_key="j")
    Client(reserved, "myapps:x")  # not covered: open


def test_longest_namespace_decides_the_join_key(reserved: Hub) -> None:
    with pytest.raises(HTTPError):
        Client(reserved, "myapp/private:x", join_key="j")
    Client(reserved, "myapp/private:x", join_key="p")


def test_refused_join_on_a_live_reserved_channel_changes_nothing(reserved: Hub) -> None:
    member = Client(reserved, "myapp:room", join_key="j")
    member.new()
    with pytest.raises(HTTPError):
        Client(reserved, "myapp:room", join_key="bad")
    assert member.new() == []
    assert list(reserved.channels) == ["myapp:room"]
    assert len(reserved.channels["myapp:room"].members) == 1


def test_member_without_the_send_key_of_a_reservation_listens_only(reserved: Hub) -> None:
    sender = Client(reserved, "myapp:room", join_key="j", send_key="s")
    listener = Client(reserved, "myapp:room", join_key="j")
    sender.new()
    listener.new()
    listener.send({"x": 1})
    listener.send({"x": 2}, to=sender.uid)
    assert listener.new() == [{"type": "error", "message": SEND_KEY_REQUIRED, "date": T0}] * 2
    assert sender.new() == []
    sender.send({"y": 1})
    sender.send({"y": 2}, to=listener.uid)
    assert listener.new() == [
        {"uid": sender.uid, "date": T0, "message": {"y": 1}},
        {"uid": sender.uid, "date": T0, "message": {"y": 2}},
    ]


def test_wrong_send_key_on_a_reservation_is_refused(reserved: Hub) -> None:
    with pytest.raises(HTTPError) as info:
        Client(reserved, "myapp:room", join_key="j", send_key="wrong")
    assert info.value.status == 403


def test_send_key_only_reservation_admits_anyone_to_listen(reserved: Hub) -> None:
    sender = Client(reserved, "feed:live", send_key="f")
    listener = Client(reserved, "feed:live")
    sender.new()
    listener.new()
    listener.send({"x": 1})
    assert listener.new() == [{"type": "error", "message": SEND_KEY_REQUIRED, "date": T0}]
    sender.send({"x": 2})
    assert listener.new() == [{"uid": sender.uid, "date": T0, "message": {"x": 2}}]
    with pytest.raises(HTTPError) as info:
        Client(reserved, "feed:live", join_key="anything")
    assert info.value.status == 403


def test_join_key_only_reservation_lets_members_send_and_refuses_send_keys(reserved: Hub) -> None:
    a = Client(reserved, "myapp/private:room", join_key="p")
    b = Client(reserved, "myapp/private:room", join_key="p")
    a.new()
    b.send({"x": 1})
    assert a.new() == [{"uid": b.uid, "date": T0, "message": {"x": 1}}]
    with pytest.raises(HTTPError) as info:
        Client(reserved, "myapp/private:room", join_key="p", send_key="anything")
    assert info.value.status == 403


@pytest.mark.parametrize("options", [{"join_key": "x"}, {"send_key": "x"}, {"join_key": "x", "send_key": "y"}])
def test_reservation_without_keys_refuses_offered_keys(reserved: Hub, options: dict[str, Any]) -> None:
    with pytest.raises(HTTPError) as info:
        Client(reserved, "open:room", **options)  # no ephemeral keys under a reservation
    assert info.value.status == 403
    assert reserved.channels == {}


def test_reservation_without_keys_is_open_to_join_and_send(reserved: Hub) -> None:
    a = Client(reserved, "open:room")
    b = Client(reserved, "open:room")
    a.new()
    b.send({"hi": 1})
    assert a.new() == [{"uid": b.uid, "date": T0, "message": {"hi": 1}}]


# -- channel lifecycle and uids --------------------------------------------------------------


def test_channel_exists_while_it_has_members(hub: Hub) -> None:
    assert hub.channels == {}
    a = Client(hub, "room")
    b = Client(hub, "room")
    assert list(hub.channels) == ["room"]
    a.leave()
    assert list(hub.channels) == ["room"]
    b.leave()
    assert hub.channels == {}


def test_uids_are_six_alphanumerics_unique_in_the_channel(hub: Hub) -> None:
    clients = [Client(hub, "room") for _ in range(200)]
    uids = [c.uid for c in clients]
    assert all(UID_RE.fullmatch(uid) for uid in uids)
    assert len(set(uids)) == len(uids)
    assert set(hub.channels["room"].members) == set(uids)


def test_same_seed_gives_the_same_uids() -> None:
    def uids(seed: int) -> list[str]:
        hub = make_hub(seed=seed)
        return [Client(hub, "room").uid for _ in range(5)]

    assert uids(42) == uids(42)
    assert uids(42) != uids(43)


def test_uid_stays_unique_when_the_source_repeats_itself() -> None:
    def repeating() -> Iterator[str]:
        yield "AAAAAA"
        yield "AAAAAA"
        yield "AAAAAA"
        yield "BBBBBB"

    values = repeating()
    source: Callable[[], str] = lambda: next(values)  # noqa: E731
    hub = Hub(Config(), FakeClock(START), source)
    a = Client(hub, "room", announce=True)
    b = Client(hub, "room", announce=True, list=True)
    assert (a.uid, b.uid) == ("AAAAAA", "BBBBBB")
    assert b.new()[0]["users"] == [{"uid": "AAAAAA"}, {"uid": "BBBBBB", "self": True}]


def test_uid_is_new_on_every_connection(hub: Hub) -> None:
    a = Client(hub, "room")
    Client(hub, "room")
    first = a.uid
    a.leave()
    assert Client(hub, "room").uid != first


# -- dates ------------------------------------------------------------------------------------------


def test_dates_come_from_the_injected_clock() -> None:
    clock = FakeClock(START)
    hub = make_hub(clock=clock)
    a = Client(hub, "room")
    clock.advance(1.5)
    b = Client(hub, "room")
    clock.advance(0.25)
    b.send({"x": 1})
    clock.advance(0.0015)
    a.send({"x": 2}, to="nobody")
    clock.advance(1)
    b.leave()
    assert [f["date"] for f in a.new()] == [T0, T0 + 1500, T0 + 1750, T0 + 1751, T0 + 2751]
    assert b.new()[0]["date"] == T0 + 1500


def test_date_is_present_even_when_the_clock_reads_zero() -> None:
    hub = make_hub(clock=FakeClock(0.0))
    a = Client(hub, "room")
    b = Client(hub, "room")
    b.send({"x": 1})
    assert a.new() == [
        {"type": "join", "self": True, "uid": a.uid, "total": 1, "date": 0},
        {"type": "join", "total": 2, "date": 0},
        {"uid": b.uid, "date": 0, "message": {"x": 1}},
    ]


# -- HTTP push -----------------------------------------------------------------------------------


PUSH = Config(namespaces={"feed": NamespaceConfig(send_key="f"), "open": NamespaceConfig()})


def test_push_to_an_open_channel_is_forbidden() -> None:
    hub = make_hub(PUSH)
    a = Client(hub, "room", send_key="s")  # an ephemeral key does not allow pushing
    a.new()
    for key in (None, "s"):
        with pytest.raises(HTTPError) as info:
            hub.push("room", raw({"x": 1}), key)
        assert info.value.status == 403
    assert a.new() == []


def test_push_under_a_reservation_without_send_key_is_forbidden() -> None:
    hub = make_hub(PUSH)
    a = Client(hub, "open:room")
    a.new()
    with pytest.raises(HTTPError) as info:
        hub.push("open:room", raw(1), "anything")
    assert info.value.status == 403
    assert a.new() == []


@pytest.mark.parametrize("key", [None, "", "F", "f ", "wrong"])
def test_push_with_a_missing_or_wrong_key_is_forbidden(key: str | None) -> None:
    hub = make_hub(PUSH)
    a = Client(hub, "feed:live")
    a.new()
    with pytest.raises(HTTPError) as info:
        hub.push("feed:live", raw(1), key)
    assert info.value.status == 403
    assert a.new() == []


def test_push_reaches_every_member_with_date_and_message_only() -> None:
    hub = make_hub(PUSH)
    a = Client(hub, "feed:live", alias="A", echo=True)
    b = Client(hub, "feed:live")  # listen-only members receive pushes too
    c = Client(hub, "feed:other")
    for client in (a, b, c):
        client.new()
    assert hub.push("feed:live", raw({"type": "news", "n": 1}), "f") == 2
    expected = [{"date": T0, "message": {"type": "news", "n": 1}}]
    assert a.new() == expected
    assert b.new() == expected
    assert c.new() == []


def test_push_to_the_namespace_itself_and_to_an_empty_channel() -> None:
    hub = make_hub(PUSH)
    a = Client(hub, "feed")
    a.new()
    assert hub.push("feed", raw(None), "f") == 1
    assert a.new() == [{"date": T0, "message": None}]
    assert hub.push("feed:nobody", raw(1), "f") == 0
    assert "feed:nobody" not in hub.channels


# -- one encode, shared bytes ----------------------------------------------------------------------


def _join(hub: Hub, **options: Any) -> tuple[Outbox, Session, Any]:
    outbox = hub.new_outbox()
    session = Session()
    member = hub.join("room", JoinOptions(**options), outbox, session)
    return outbox, session, member


def test_every_recipient_gets_the_very_same_frame_object(hub: Hub) -> None:
    out1, _, _ = _join(hub)
    out2, _, _ = _join(hub)
    out3, _, sender = _join(hub, echo=True, alias="S")
    for outbox in (out1, out2, out3):
        outbox.take()
    hub.send(sender, raw({"type": "chat", "text": "hi"}))
    (f1,), (f2,), (f3,) = out1.take(), out2.take(), out3.take()
    assert f1 is f2
    assert f2 is f3
    assert frame_json(f1) == {"uid": sender.uid, "alias": "S", "date": T0, "message": {"type": "chat", "text": "hi"}}


def test_presence_and_push_frames_are_shared_too() -> None:
    hub = make_hub(PUSH)
    outboxes = [hub.new_outbox() for _ in range(3)]
    members = [hub.join("feed:x", JoinOptions(), o, Session()) for o in outboxes]
    for outbox in outboxes:
        outbox.take()
    _join_late = hub.join("feed:x", JoinOptions(announce=True), hub.new_outbox(), Session())
    joins = [o.take() for o in outboxes]
    assert joins[0][0] is joins[1][0] is joins[2][0]
    assert frame_json(joins[0][0]) == {"type": "join", "uid": _join_late.uid, "total": 4, "date": T0}
    hub.push("feed:x", raw([1]), "f")
    pushes = [o.take() for o in outboxes]
    assert pushes[0][0] is pushes[1][0] is pushes[2][0]
    hub.leave(members[0])
    leaves = [o.take() for o in outboxes[1:]]
    assert leaves[0][0] is leaves[1][0]
    assert frame_json(leaves[0][0]) == {"type": "leave", "total": 3, "date": T0}


def test_greeting_comes_before_the_self_join(hub: Hub) -> None:
    outbox = hub.new_outbox()
    member = hub.join("room", JoinOptions(), outbox, Session(), greeting=b"HTTP/1.1 101 ...\r\n\r\n")
    data = outbox.view()
    assert data.startswith(b"HTTP/1.1 101 ...\r\n\r\n")
    assert frame_json(data[len(b"HTTP/1.1 101 ...\r\n\r\n") :]) == {
        "type": "join",
        "self": True,
        "uid": member.uid,
        "total": 1,
        "date": T0,
    }


def test_outboxes_with_new_bytes_are_on_the_ready_list_once(hub: Hub) -> None:
    out1, _, m1 = _join(hub)
    out2, _, _ = _join(hub)
    out1.take()
    out2.take()
    hub.take_ready()
    hub.send(m1, raw(1))
    hub.send(m1, raw(2))
    assert hub.take_ready() == [out2]
    assert hub.take_ready() == []
    assert out1.size == 0


# -- slow consumers ------------------------------------------------------------------------------


def test_slow_consumer_is_kicked_and_the_others_get_everything() -> None:
    hub = make_hub(Config(limits=LimitsConfig(outbound_buffer_bytes=400)))
    slow = Client(hub, "room", announce=True, alias="Slow")
    fast = Client(hub, "room")
    sender = Client(hub, "room")
    fast.new()
    sender.new()
    sent = []
    for i in range(12):
        message = {"i": i, "pad": "x" * 40}
        sent.append({"uid": sender.uid, "date": T0, "message": message})
        sender.send(message)
        fast.new()  # the fast member keeps up: its outbox is drained after every message
        sender.new()
    assert slow.kicked == (1008, "slow consumer")
    assert not slow.member.joined
    assert slow.outbox.size <= 400
    got = [f for f in slow.received() if "message" in f]
    refused = len(got)  # the first message that did not fit
    assert 0 < refused < 12
    assert got == sent[:refused]
    leave = {"type": "leave", "uid": slow.uid, "alias": "Slow", "total": 2, "date": T0}
    assert fast.received()[2:] == [*sent[: refused + 1], leave, *sent[refused + 1 :]]
    assert sender.received()[1:] == [leave]
    assert len(hub.channels["room"].members) == 2


def test_slow_consumer_on_a_byte_outbox_is_kicked_with_1008() -> None:
    hub = make_hub(Config(limits=LimitsConfig(outbound_buffer_bytes=300)))
    slow_out, slow_session, slow = _join(hub, announce=True)
    fast_out, _, _ = _join(hub)
    _, _, sender = _join(hub)
    fast_out.take()
    frames = []
    for i in range(10):
        hub.send(sender, raw({"i": i, "pad": "y" * 30}))
        frames += [frame_json(f) for f in fast_out.take()]
    assert slow_session.kicks == [(1008, "slow consumer")]
    assert slow_out.overflowed
    assert slow_out.size <= 300
    assert [f["message"]["i"] for f in frames if "message" in f] == list(range(10))
    assert {"type": "leave", "uid": slow.uid, "total": 2, "date": T0} in frames


# -- shutdown ---------------------------------------------------------------------------------------


def test_after_shutdown_leaves_send_no_leave_events(hub: Hub) -> None:
    a = Client(hub, "room", announce=True)
    b = Client(hub, "room", announce=True)
    c = Client(hub, "room")
    b.new()
    c.new()
    hub.shutdown()
    a.leave()
    b.leave()
    assert c.new() == []
    c.leave()
    assert hub.channels == {}
