"""ClusterHub without I/O: several nodes on an in-memory Redis (tests/core/_redis_model.py).

Each test drives the nodes' transport side by hand (send the calls, answer them, feed the
pub/sub messages) and checks what the clients would see: the frames in their outboxes.
What must hold (the module docs of ``relaycore/_cluster.py``, PROTOCOL.md):

- presence is cluster-wide: totals and ``users`` count every node, and every member hears
  the same joins and leaves with the same totals, in one order, whatever node it is on;
- a broadcast goes to the sender's node at once and to the others as one record, encoded
  once; a node publishes nothing for a channel nobody else serves; a direct message goes
  to its target's node only;
- a joiner hears exactly the events after its join, however its node's pub/sub lags
  behind the join script's reply;
- the first joiner's keys hold on every node until the channel empties;
- without Redis a node serves its members alone; back online it registers them again,
  and repair drops the members of nodes that did not come back; a silent node is reaped;
- the publish buffer is bounded, and a crowd of stalled members is closed without
  recursion.

"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from relaycore import Config, HTTPError, LimitsConfig, NamespaceConfig, parse_json, text_frame
from relaycore._cluster_calls import run_head, runs
from relaycore.testing import seeded_uids

from ._redis_model import Client, FakeCluster
from .test_crowd import check_live_view, leave_room, shallow_stack

T0 = 1_700_000_000_000
ROOM = "room"
SEND_KEY_REQUIRED = "Sending requires a valid sendKey."
JOIN_KEY_REQUIRED = "Joining requires a valid joinKey."
PUSH_CONFIG = Config(namespaces={"pub": NamespaceConfig(send_key="push-key")})
#: Rate limits are not what these tests are about.
FAST = LimitsConfig(messages_per_second=1e9, messages_burst=10**9, pushes_per_second_per_ip=1e9)


def raw(value: Any) -> msgspec.Raw:
    parsed = parse_json(msgspec.json.encode(value))
    assert parsed is not None
    return parsed


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).hexdigest().encode()


def presence(frames: list[Any]) -> list[tuple[str, str | None, int]]:
    """The others' joins and leaves among ``frames``: (type, uid if announced, total)."""
    return [
        (f["type"], f.get("uid"), f["total"]) for f in frames if f.get("type") in ("join", "leave") and "self" not in f
    ]


def settled(*clients: Client) -> FakeCluster:
    """Run the clients' cluster until idle and forget what the clients received so far."""
    cluster = clients[0].node.cluster
    cluster.run_until_idle()
    for client in clients:
        client.new()
    return cluster


def assert_replicas_match(cluster: FakeCluster, channel: str = ROOM) -> None:
    """Every connected node serving ``channel`` knows exactly the members Redis has, on their nodes."""
    truth = cluster.model.members(channel)
    for node in cluster.nodes.values():
        replica = node.hub.replicas.get(channel)
        if replica is not None and node.connected:
            assert {uid: entry.node for uid, entry in replica.members.items()} == truth, node


def keys_of(cluster: FakeCluster, channel: str = ROOM) -> dict[bytes, bytes]:
    return cluster.model.hashes.get(b"rc:k:{" + channel.encode() + b"}", {})


class Waiter:
    """An HTTP push waiting for the cluster's count."""

    def __init__(self) -> None:
        self.counts: list[int] = []
        self.failures: list[HTTPError] = []

    def pushed(self, recipients: int) -> None:
        self.counts.append(recipients)

    def push_failed(self, error: HTTPError) -> None:
        self.failures.append(error)


# -- presence across nodes ------------------------------------------------------------------


def test_self_join_totals_and_users_count_every_node() -> None:
    c = FakeCluster("abc")
    alice = Client(c["a"], ROOM, announce=True, alias="Alice")
    c.run_until_idle()
    bob = Client(c["b"], ROOM, announce=True, list=True)
    assert bob.member is None and bob.frames() == [], "admitted only once its J record is back"
    c.run_until_idle()
    carol = Client(c["c"], ROOM, list=True, alias="Carol")
    c.run_until_idle()
    assert alice.new() == [
        {"type": "join", "self": True, "uid": alice.uid, "alias": "Alice", "total": 1, "date": T0},
        {"type": "join", "uid": bob.uid, "total": 2, "date": T0},
        {"type": "join", "total": 3, "date": T0},
    ]
    assert bob.new() == [
        {
            "type": "join",
            "self": True,
            "uid": bob.uid,
            "total": 2,
            "date": T0,
            "users": [{"uid": alice.uid, "alias": "Alice"}, {"uid": bob.uid, "self": True}],
        },
        {"type": "join", "total": 3, "date": T0},
    ]
    assert carol.new() == [
        {
            "type": "join",
            "self": True,
            "uid": carol.uid,
            "alias": "Carol",
            "total": 3,
            "date": T0,
            "users": [{"uid": alice.uid, "alias": "Alice"}, {"uid": bob.uid}],
        }
    ]
    assert_replicas_match(c)


def test_joins_and_leaves_reach_every_node_in_one_order_with_the_same_totals() -> None:
    c = FakeCluster("abc")
    watchers = [Client(c[name], ROOM) for name in "abc"]
    settled(*watchers)
    c["c"].hold_inbox = True  # node c lags behind: the order it applies must still be the same
    x = Client(c["a"], ROOM, announce=True, alias="X")
    y = Client(c["b"], ROOM, announce=True)
    z = Client(c["c"], ROOM)
    c.run_until_idle()
    x.leave()
    late = Client(c["c"], ROOM, announce=True)
    y.leave()
    c.run_until_idle()
    assert z.member is None, "node c has not seen its own J record yet"
    c["c"].hold_inbox = False
    c.run_until_idle()
    views = [w.new() for w in watchers]
    assert views[0] == views[1] == views[2]
    # The scripts ran node by node (a, b, c) in each round: that is the cluster's order.
    assert presence(views[0]) == [
        ("join", x.uid, 4),
        ("join", y.uid, 5),
        ("join", None, 6),
        ("leave", x.uid, 5),
        ("leave", y.uid, 4),
        ("join", late.uid, 5),
    ]
    assert presence(z.frames()) == [("leave", x.uid, 5), ("leave", y.uid, 4), ("join", late.uid, 5)]
    assert_replicas_match(c)


def test_a_client_gone_before_its_join_was_decided_joins_and_leaves_at_once() -> None:
    c = FakeCluster()
    watcher = Client(c["a"], ROOM)
    settled(watcher)
    quitter = Client(c["b"], ROOM, announce=True)
    quitter.leave()  # the socket closed while the join script was on its way
    c.run_until_idle()
    uid = quitter.uid
    assert presence(watcher.new()) == [("join", uid, 2), ("leave", uid, 1)]
    assert c.model.members(ROOM) == {watcher.uid: b"a.1"}
    assert ROOM not in c["b"].hub.replicas and c["b"].hub.subscriptions == {b"rc:d:b.1"}


# -- messages -------------------------------------------------------------------------------


def test_a_broadcast_goes_out_locally_at_once_and_to_the_other_node_after_its_record() -> None:
    c = FakeCluster()
    ann = Client(c["a"], ROOM, alias="Ann")
    near = Client(c["a"], ROOM)
    far = Client(c["b"], ROOM)
    settled(ann, near, far)
    ann.send({"n": 1})
    expected = b'{"uid":"%s","alias":"Ann","date":%d,"message":{"n":1}}' % (ann.uid.encode(), T0)
    assert near.raw()[-1] == expected, "the sender's own node does not wait for Redis"
    assert ann.new() == [], "no echo unless asked"
    calls = c["a"].hub.calls
    assert [(call.script, call.keys) for call in calls] == [("publish", [b"rc:d:b.1"])], "to b's own channel"
    c["a"].send()
    assert far.new() == [] and len(c["b"].inbox) == 1, "published, not yet fed"
    assert not c["a"].inbox, "a node never hears its own messages back"
    c["b"].feed()
    assert far.raw()[-1] == expected, "the other node hands out the very same bytes"
    assert near.new() == far.new() == [json.loads(expected)]


def test_messages_in_a_burst_share_one_record_and_keep_their_order() -> None:
    c = FakeCluster()
    talker = Client(c["a"], ROOM)
    far = Client(c["b"], ROOM)
    settled(talker, far)
    for n in range(5):
        talker.send(n)
    assert len(c["a"].hub.calls) == 1, "one M record for the burst"
    c.run_until_idle()
    assert [f["message"] for f in far.new()] == [0, 1, 2, 3, 4]


def test_no_publish_while_no_other_node_serves_the_channel() -> None:
    c = FakeCluster()
    talker = Client(c["a"], ROOM)
    near = Client(c["a"], ROOM)
    elsewhere = Client(c["b"], "other")
    settled(talker, near, elsewhere)
    assert b"rc:c:{room}" not in c["b"].channels, "a node subscribes to the channels it serves only"
    talker.send("alone")
    assert [f["message"] for f in near.new()] == ["alone"]
    assert c["a"].hub.take_calls() == []
    guest = Client(c["b"], ROOM)
    settled(talker, near, guest)
    talker.send("together")
    assert [call.script for call in c["a"].hub.calls] == ["publish"]
    c.run_until_idle()
    assert [f["message"] for f in guest.new()] == ["together"]
    guest.leave()
    settled(talker, near)
    assert b"rc:c:{room}" not in c["b"].channels
    talker.send("alone again")
    assert c["a"].hub.take_calls() == []
    assert elsewhere.new() == []


def test_a_direct_message_to_another_node_goes_to_that_node_only() -> None:
    c = FakeCluster("abc")
    sender = Client(c["a"], ROOM, alias="S")
    mate = Client(c["a"], ROOM)
    target = Client(c["b"], ROOM)
    neighbour = Client(c["b"], ROOM)
    stranger = Client(c["c"], ROOM)
    settled(sender, mate, target, neighbour, stranger)
    sender.send({"secret": 1}, to=target.uid)
    assert [(call.script, call.keys) for call in c["a"].hub.calls] == [("publish", [b"rc:d:b.1"])]
    mark = len(c.model.published)
    c.run_until_idle()
    assert [channel for channel, _ in c.model.published[mark:]] == [b"rc:d:b.1"]
    assert target.new() == [{"uid": sender.uid, "alias": "S", "date": T0, "message": {"secret": 1}}]
    assert neighbour.new() == stranger.new() == sender.new() == mate.new() == []
    sender.send("next door", to=mate.uid)  # a local target: delivered at once, nothing for Redis
    assert [f["message"] for f in mate.new()] == ["next door"] and c["a"].hub.calls == []


def test_a_direct_message_to_an_unknown_uid_is_an_error_naming_it() -> None:
    c = FakeCluster()
    sender = Client(c["a"], ROOM)
    gone = Client(c["b"], ROOM)
    settled(sender, gone)
    uid = gone.uid
    gone.leave()
    settled(sender)
    for missing in ("nobody", uid):
        sender.send("hello?", to=missing)
        assert sender.new() == [{"type": "error", "message": f"User {missing} not found.", "date": T0}]
    assert c["a"].hub.calls == []


# -- the race between the join script's reply and the pub/sub stream ---------------------------


@pytest.mark.parametrize("early", range(5))
def test_a_joiner_hears_exactly_the_events_after_its_join_however_pubsub_lags(early: int) -> None:
    """Node b's pub/sub and its script replies race; ``early`` records of the channel reach
    it before the join script's reply (with the snapshot), the rest after."""
    c = FakeCluster()
    a, b = c["a"], c["b"]
    first = Client(a, ROOM, announce=True, alias="first")
    c.run_until_idle()
    b.hold_inbox = b.hold_replies = True
    joiner = Client(b, ROOM, announce=True, list=True)
    b.subscribe()  # the driver subscribes before it sends the join script...
    second = Client(a, ROOM, announce=True)  # ...so this J reaches b, and is in the snapshot too
    a.send()
    a.answer()
    a.feed()
    b.send()  # the join script: the snapshot, then the joiner's J record
    first.leave()
    third = Client(a, ROOM)
    c.run_until_idle()
    assert len(b.inbox) == 4 and b.replies, "J(second), J(joiner), L(first), J(third) wait"
    b.feed(early)
    b.answer()
    b.feed()
    c.run_until_idle()
    assert joiner.frames() == [
        {
            "type": "join",
            "self": True,
            "uid": joiner.uid,
            "total": 3,
            "date": T0,
            "users": [
                {"uid": first.uid, "alias": "first"},
                {"uid": second.uid},
                {"uid": joiner.uid, "self": True},
            ],
        },
        {"type": "leave", "uid": first.uid, "alias": "first", "total": 2, "date": T0},
        {"type": "join", "total": 3, "date": T0},
    ]
    assert presence(second.frames()) == [("join", joiner.uid, 3), ("leave", first.uid, 2), ("join", None, 3)]
    assert third.new()[0]["total"] == 3
    assert_replicas_match(c)


def test_a_message_sent_after_seeing_the_join_reaches_the_joiner_even_if_pubsub_is_ahead() -> None:
    c = FakeCluster()
    speaker = Client(c["a"], ROOM)
    c.run_until_idle()
    c["b"].hold_replies = True  # b's pub/sub is ahead of its script replies
    joiner = Client(c["b"], ROOM)
    c.run_until_idle()
    assert presence(speaker.new()) == [("join", None, 2)]
    speaker.send("welcome")  # published: node a knows a member of b now
    c.run_until_idle()
    c["b"].answer()
    c.run_until_idle()
    assert [f.get("message") for f in joiner.frames()] == [None, "welcome"]


def test_a_joiner_whose_record_outruns_the_join_reply_may_send() -> None:
    c = FakeCluster()
    first = Client(c["a"], ROOM)
    settled(first)
    c["a"].hold_replies = True
    second = Client(c["a"], ROOM)
    c.run_until_idle()
    c["a"].answer()
    second.send("hi")
    assert [f.get("message") for f in first.new()] == [None, "hi"], "its join, then its message"


# -- ephemeral keys --------------------------------------------------------------------------


def test_the_first_joiners_keys_hold_on_every_node_until_the_channel_empties() -> None:
    c = FakeCluster()
    owner = Client(c["a"], ROOM, join_key="door", send_key="talk")
    c.run_until_idle()
    assert keys_of(c) == {b"j": digest("door"), b"s": digest("talk")}
    for options in ({}, {"join_key": "wrong"}):
        stranger = Client(c["b"], ROOM, **options)
        c.run_until_idle()
        assert stranger.member is None and stranger.refused is not None
        assert (stranger.refused.status, stranger.refused.message) == (403, JOIN_KEY_REQUIRED)
        assert ROOM not in c["b"].hub.replicas and c["b"].hub.subscriptions == {b"rc:d:b.1"}
    listener = Client(c["b"], ROOM, join_key="door", send_key="wrong")
    talker = Client(c["b"], ROOM, join_key="door", send_key="talk")
    settled(owner, listener, talker)
    listener.send("may I?")
    assert listener.new() == [{"type": "error", "message": SEND_KEY_REQUIRED, "date": T0}]
    assert c["b"].hub.calls == []
    talker.send("I may")
    c.run_until_idle()
    assert [f["message"] for f in owner.new()] == ["I may"]
    for client in (owner, listener, talker):
        client.leave()
    c.run_until_idle()
    assert keys_of(c) == {} and c.model.members(ROOM) == {}
    assert c.model.ttl[b"rc:s:{room}"] > 0, "the counter outlives the channel a while, then goes"
    anyone = Client(c["b"], ROOM)
    c.run_until_idle()
    assert anyone.member is not None and keys_of(c) == {}


def test_a_reserved_namespace_is_decided_by_the_node_itself() -> None:
    config = Config(namespaces={"vip": NamespaceConfig(join_key="door")})
    c = FakeCluster(config=config)
    with_key = Client(c["a"], "vip", join_key="door")
    without = Client(c["b"], "vip")
    assert without.refused is not None and without.refused.status == 403
    assert c["b"].hub.calls == [] and "vip" not in c["b"].hub.replicas
    c.run_until_idle()
    assert with_key.member is not None and keys_of(c, "vip") == {}


# -- uids ----------------------------------------------------------------------------------


def test_a_uid_taken_on_another_node_is_replaced_by_a_fresh_one() -> None:
    c = FakeCluster(uids={"a": seeded_uids(5), "b": seeded_uids(5)})  # both draw the same uids
    same = seeded_uids(5)
    first, second = same(), same()
    alice = Client(c["a"], ROOM)
    c.run_until_idle()
    bob = Client(c["b"], ROOM)
    c.run_until_idle()
    assert (alice.uid, bob.uid) == (first, second)
    assert [call.args[0] for call in c["b"].sent if call.script == "join"] == [first, second]
    assert bob.frames() == [{"type": "join", "self": True, "uid": second, "total": 2, "date": T0}]
    assert presence(alice.frames()) == [("join", None, 2)]
    assert c.model.members(ROOM) == {first: b"a.1", second: b"b.1"}


@pytest.mark.parametrize("refusal", ["taken", "key"])
def test_a_join_sent_behind_a_refused_first_join_is_still_admitted(refusal: str) -> None:
    if refusal == "taken":
        c = FakeCluster(uids={"a": seeded_uids(5), "b": seeded_uids(5)})
        Client(c["a"], ROOM)
        c.run_until_idle()
        first, second = Client(c["b"], ROOM), Client(c["b"], ROOM)  # the first draws a taken uid
    else:
        c = FakeCluster()
        Client(c["a"], ROOM, join_key="door")
        c.run_until_idle()
        first, second = Client(c["b"], ROOM, join_key="wrong"), Client(c["b"], ROOM, join_key="door")
    c.run_until_idle()
    assert (first.member is not None) == (refusal == "taken")
    assert second.member is not None, f"stuck: Redis has it as {c.model.members(ROOM)}"


# -- Redis away and back --------------------------------------------------------------------


def test_offline_a_node_decides_and_announces_locally_and_queues_nothing() -> None:
    c = FakeCluster()
    far = Client(c["a"], ROOM)
    near = Client(c["b"], ROOM)
    settled(far, near)
    c["b"].disconnect()
    newcomer = Client(c["b"], ROOM, announce=True)
    assert newcomer.member is not None, "decided at once, without Redis"
    assert newcomer.new()[0]["total"] == 3, "the replica still counts the other node"
    assert presence(near.new()) == [("join", newcomer.uid, 3)]
    newcomer.send("local only")
    assert [f["message"] for f in near.new()] == ["local only"]
    assert c["b"].hub.calls == [] and c["b"].hub.stats["dropped_messages"] == 0
    newcomer.leave()
    assert presence(near.new()) == [("leave", newcomer.uid, 2)]
    c.run_until_idle()
    assert far.new() == [], "node a hears nothing of it"


def test_back_online_a_node_registers_its_members_again_and_the_others_hear_the_new_ones() -> None:
    c = FakeCluster()
    far = Client(c["a"], ROOM)
    near = Client(c["b"], ROOM)
    settled(far, near)
    c["b"].disconnect()
    newcomer = Client(c["b"], ROOM, announce=True, alias="N")
    assert presence(near.new()) == [("join", newcomer.uid, 3)]
    assert newcomer.new()[0]["total"] == 3
    c["b"].connect()
    assert [call.script for call in c["b"].hub.calls] == ["sync"]
    c.run_until_idle()
    assert c.model.members(ROOM) == {far.uid: b"a.1", near.uid: b"b.1", newcomer.uid: b"b.1"}
    assert presence(far.new()) == [("join", newcomer.uid, 3)]
    assert near.new() == [] and newcomer.new() == []
    assert_replicas_match(c)
    newcomer.send("hello again")
    c.run_until_idle()
    assert [f["message"] for f in far.new()] == ["hello again"]


def test_after_a_redis_restart_repair_drops_the_members_of_nodes_that_never_came_back() -> None:
    c = FakeCluster("ab")
    mine = Client(c["a"], ROOM)
    lost = [Client(c["b"], ROOM, announce=True) for _ in range(2)]
    settled(mine, *lost)
    c.model.flushall()  # Redis restarted without its data...
    c["a"].disconnect()
    c["b"].disconnect(tell=False)  # ...and node b died meanwhile
    c["a"].connect()
    c.run_until_idle()
    assert c.model.members(ROOM) == {mine.uid: b"a.1"}
    assert mine.new() == [], "b might still come back: nobody is dropped yet"
    c["a"].hub.repair()
    c.run_until_idle()
    assert presence(mine.new()) == [("leave", lost[0].uid, 2), ("leave", lost[1].uid, 1)]
    assert_replicas_match(c)


def test_the_members_of_a_silent_node_are_reaped_and_every_other_node_hears_their_leaves() -> None:
    c = FakeCluster("abc")
    on_a = Client(c["a"], ROOM)
    gone = [Client(c["b"], ROOM, announce=True) for _ in range(2)]
    on_c = Client(c["c"], ROOM)
    settled(on_a, on_c, *gone)
    assert c.reap() == 0, "every heartbeat is alive"
    c["b"].disconnect(tell=False)  # killed: its heartbeat lapses
    c.model.expire(b"rc:n:b.1")
    assert c.reap() == 2
    c.run_until_idle()
    expected = [("leave", gone[0].uid, 3), ("leave", gone[1].uid, 2)]
    assert presence(on_a.new()) == presence(on_c.new()) == expected
    assert c.model.members(ROOM) == {on_a.uid: b"a.1", on_c.uid: b"c.1"}
    assert b"b.1" not in c.model.smembers(b"rc:nodes") and not c.model.exists(b"rc:o:b.1")
    assert_replicas_match(c)


def test_a_node_reaped_while_alive_still_hears_the_leaves_that_came_meanwhile() -> None:
    c = FakeCluster()
    mine = Client(c["a"], ROOM)
    stay = Client(c["b"], ROOM, announce=True)
    goes = Client(c["b"], ROOM, announce=True)
    settled(mine, stay, goes)
    c.model.expire(b"rc:n:a.1")  # node a's heartbeat came late once
    assert c.reap() == 1
    c["a"].beat()
    goes.leave()  # before node a has registered its member again
    c.run_until_idle()
    assert presence(stay.new()) == [("leave", None, 2), ("leave", goes.uid, 1), ("join", None, 2)]
    assert presence(mine.new()) == [("leave", goes.uid, 2)]
    assert_replicas_match(c)


def test_a_member_closed_for_a_uid_conflict_is_announced_as_gone() -> None:
    def uids(*values: str) -> Any:
        return iter(values).__next__

    c = FakeCluster(uids={"a": uids("aaaaa1", "SAME00"), "b": uids("bbbbb1", "SAME00")})
    far = Client(c["a"], ROOM)
    near = Client(c["b"], ROOM, announce=True)
    settled(far, near)
    c["b"].disconnect()
    twin = Client(c["b"], ROOM, announce=True)  # decided offline: SAME00
    other = Client(c["a"], ROOM, announce=True)  # meanwhile node a admits its own SAME00
    c.run_until_idle()
    assert twin.uid == other.uid == "SAME00"
    c["b"].connect()
    c.run_until_idle()
    assert twin.kicked == (1011, "uid conflict")
    totals = [total for _, _, total in presence(near.frames())]
    assert totals == [3, 2, 3], "a join (the twin), its leave, the join of node a's SAME00"


def test_a_leave_queued_when_redis_went_away_is_announced_locally() -> None:
    c = FakeCluster()
    stays = Client(c["a"], ROOM)
    goes = Client(c["a"], ROOM)
    far = Client(c["b"], ROOM)
    settled(stays, goes, far)
    goes.leave()  # its leave script is queued...
    c["a"].disconnect()  # ...and dropped with the connection
    newcomer = Client(c["a"], ROOM)
    assert newcomer.new()[0]["total"] == 3, "stays, newcomer, far"
    assert presence(stays.new()) == [("leave", None, 2), ("join", None, 3)]


@pytest.mark.parametrize("when", ["offline", "queued"])
def test_the_last_member_of_a_node_that_left_without_redis_is_removed_once_it_is_back(when: str) -> None:
    c = FakeCluster()
    far = Client(c["a"], ROOM)
    goes = Client(c["b"], ROOM)
    settled(far, goes)
    if when == "offline":
        c["b"].disconnect()
        goes.leave()
    else:
        goes.leave()  # the leave script is queued, then lost with the connection
        c["b"].disconnect()
    c["b"].connect()
    c.run_until_idle()
    c["b"].hub.repair()
    c.run_until_idle()
    assert c.model.members(ROOM) == {far.uid: b"a.1"}
    assert presence(far.new()) == [("leave", None, 1)]


@pytest.mark.parametrize("stage", ["queued", "in flight"])
def test_joins_waiting_for_redis_when_it_goes_away_are_admitted_alone_then_registered(stage: str) -> None:
    c = FakeCluster()
    far = Client(c["a"], ROOM)
    settled(far)
    waiting = Client(c["b"], ROOM, announce=True)
    if stage == "in flight":
        c["b"].send()  # the script ran; its reply and J record are lost with the connection
        c["a"].feed()
    c["b"].disconnect()
    assert waiting.member is not None
    assert waiting.new() == [{"type": "join", "self": True, "uid": waiting.uid, "total": 1, "date": T0}]
    c["b"].connect()
    c.run_until_idle()
    assert c.model.members(ROOM) == {far.uid: b"a.1", waiting.uid: b"b.1"}
    assert presence(far.new()) == [("join", waiting.uid, 2)]
    assert presence(waiting.new()) == [("join", None, 2)], "told of the member it did not know"
    assert_replicas_match(c)


def test_offline_the_keys_are_those_the_node_last_knew_or_set_itself() -> None:
    c = FakeCluster()
    owner = Client(c["a"], ROOM, join_key="door")
    near = Client(c["b"], ROOM, join_key="door")
    settled(owner, near)
    c["b"].disconnect()
    intruder = Client(c["b"], ROOM)
    assert intruder.refused is not None and (intruder.refused.status, intruder.refused.message) == (
        403,
        JOIN_KEY_REQUIRED,
    )
    assert Client(c["b"], ROOM, join_key="door").member is not None
    first = Client(c["b"], "new", join_key="mine", send_key="talk")  # a channel b has not served
    assert first.member is not None
    assert Client(c["b"], "new").refused is not None
    listener = Client(c["b"], "new", join_key="mine")
    listener.send("x")
    assert listener.new()[-1]["message"] == SEND_KEY_REQUIRED
    c["b"].connect()
    c.run_until_idle()
    assert keys_of(c, "new") == {b"j": digest("mine"), b"s": digest("talk")}, "registered with the keys"


def test_a_replica_buffering_too_many_records_for_its_snapshot_syncs_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("relaycore._cluster_replication.MAX_BUFFERED", 3)
    c = FakeCluster()
    far = Client(c["a"], ROOM)
    near = Client(c["b"], ROOM)
    settled(far, near)
    c["b"].disconnect()
    c["b"].connect()
    c["b"].hold_replies = True  # the sync's reply (b's snapshot) is late...
    c.run_until_idle()
    churn = [Client(c["a"], ROOM, announce=True) for _ in range(3)]
    c.run_until_idle()
    churn[0].leave()  # ...and the fourth record waiting for it is one too many
    c.run_until_idle()
    assert c["b"].hub.stats["resyncs"] == 1
    c["b"].hold_replies = False
    c.run_until_idle()
    assert_replicas_match(c)
    # It heard what the fresh snapshot showed: the joins of those still there.
    assert presence(near.new()) == [("join", churn[1].uid, 3), ("join", churn[2].uid, 4)]


@pytest.mark.parametrize("sync", ["repair", "resync"])
def test_a_join_in_flight_during_a_sync_is_still_admitted(sync: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("relaycore._cluster_replication.MAX_BUFFERED", 3)
    c = FakeCluster()
    far = Client(c["a"], ROOM)
    if sync == "repair":
        near = Client(c["b"], ROOM)
        settled(far, near)
        c["b"].hold_inbox = True
        joiner = Client(c["b"], ROOM)
        c["b"].send()
        c["b"].answer()  # the join script ran and replied; its J record lags behind
        c["b"].hub.repair()
        c.run_until_idle()
        c["b"].hold_inbox = False
    else:
        settled(far)
        c["b"].hold_replies = True  # b's first join waits for its snapshot...
        joiner = Client(c["b"], ROOM)
        c.run_until_idle()
        for _ in range(4):  # ...while the records pile up past the bound
            Client(c["a"], ROOM)
        c.run_until_idle()
        c["b"].hold_replies = False
    c.run_until_idle()
    assert joiner.member is not None
    assert joiner.uid in c.model.members(ROOM)


def test_a_push_waiting_for_redis_fails_with_503_when_redis_goes_away() -> None:
    c = FakeCluster(config=PUSH_CONFIG)
    member = Client(c["a"], "pub:news")
    settled(member)
    waiter = Waiter()
    assert c["b"].hub.push("pub:news", raw("hi"), "push-key", waiter=waiter) is None
    c["b"].disconnect()
    assert waiter.counts == [] and len(waiter.failures) == 1
    error = waiter.failures[0]
    assert (error.status, error.message) == (503, "The cluster is unavailable; try again.")
    assert (b"retry-after", b"1") in error.headers
    c.run_until_idle()
    assert member.new() == []


def test_an_offline_push_counts_only_the_members_it_reached() -> None:
    c = FakeCluster(config=PUSH_CONFIG)
    near, far = Client(c["a"], "pub:news"), Client(c["b"], "pub:news")
    settled(near, far)
    c["a"].disconnect()
    assert c["a"].hub.push("pub:news", raw("hi"), "push-key", waiter=Waiter()) == 1


# -- HTTP push ------------------------------------------------------------------------------


def test_a_push_to_a_served_channel_is_answered_at_once_with_the_cluster_count() -> None:
    c = FakeCluster(config=PUSH_CONFIG)
    near, far = Client(c["a"], "pub:news"), Client(c["b"], "pub:news")
    settled(near, far)
    waiter = Waiter()
    assert c["a"].hub.push("pub:news", raw({"n": 1}), "push-key", waiter=waiter) == 2
    expected = b'{"date":%d,"message":{"n":1}}' % T0
    assert near.raw()[-1] == expected and far.new() == []
    c.run_until_idle()
    assert far.raw()[-1] == expected and not waiter.counts and not waiter.failures


def test_a_push_to_a_channel_the_node_does_not_serve_is_counted_by_redis() -> None:
    c = FakeCluster("abc", config=PUSH_CONFIG)
    members = [Client(c["a"], "pub:news"), Client(c["b"], "pub:news")]
    settled(*members)
    waiter = Waiter()
    assert c["c"].hub.push("pub:news", raw("via redis"), "push-key", waiter=waiter) is None
    assert [call.script for call in c["c"].hub.calls] == ["push"]
    c["c"].send()
    assert waiter.counts == [], "answered with the script's reply"
    c.run_until_idle()
    assert waiter.counts == [2]
    assert [f["message"] for m in members for f in m.new()] == ["via redis", "via redis"]
    mark = len(c.model.published)
    empty = Waiter()
    assert c["c"].hub.push("pub:nobody", raw(1), "push-key", waiter=empty) is None
    c.run_until_idle()
    assert empty.counts == [0] and len(c.model.published) == mark, "nobody there: nothing published"
    assert c["c"].hub.replicas == {}


# -- bounds ---------------------------------------------------------------------------------


def publish_records(cluster: FakeCluster, node: str) -> list[bytes]:
    return [bytes(call.args[0]) for call in cluster[node].hub.calls if call.script == "publish"]


def test_the_publish_buffer_drops_messages_over_its_bound_and_counts_them() -> None:
    config = Config(limits=FAST)
    config.cluster.publish_buffer_bytes = 400
    c = FakeCluster(config=config)
    talker, near, far = Client(c["a"], ROOM), Client(c["a"], ROOM), Client(c["b"], ROOM)
    settled(talker, near, far)
    for n in range(10):
        talker.send({"n": n, "pad": "x" * 80})
    assert [f["message"]["n"] for f in near.new()] == list(range(10)), "local delivery never drops"
    (record,) = publish_records(c, "a")
    assert record.startswith(b"M" + c["a"].hub.node_raw + run_head(ROOM))
    (payloads,) = runs(record).values()
    assert sum(len(p) + 1 for p in payloads) <= 400 < sum(len(p) + 1 for p in payloads) + len(payloads[0])
    kept = len(payloads)
    stats = c["a"].hub.stats
    assert (stats["published"], stats["dropped_messages"]) == (0, 10 - kept), "published: once handed over"
    c.run_until_idle()
    assert (stats["published"], stats["dropped_messages"]) == (kept, 10 - kept)
    assert [f["message"]["n"] for f in far.new()] == list(range(kept))
    talker.send({"n": 10})  # the bound is on what waits for Redis: there is room again
    c.run_until_idle()
    assert [f["message"]["n"] for f in far.new()] == [10]


def test_direct_messages_to_other_nodes_count_against_the_publish_bound() -> None:
    config = Config(limits=FAST)
    config.cluster.publish_buffer_bytes = 400
    c = FakeCluster(config=config)
    talker, far = Client(c["a"], ROOM), Client(c["b"], ROOM)
    settled(talker, far)
    for n in range(10):
        talker.send({"n": n, "pad": "x" * 80}, to=far.uid)
    assert sum(len(record) for record in publish_records(c, "a")) <= 400 + 100


def test_a_direct_message_between_two_broadcasts_keeps_its_place() -> None:
    c = FakeCluster()
    talker, far = Client(c["a"], ROOM), Client(c["b"], ROOM)
    settled(talker, far)
    talker.send(1)
    talker.send(2, to=far.uid)
    talker.send(3)
    c.run_until_idle()
    assert [f["message"] for f in far.new()] == [1, 2, 3]


def test_going_offline_counts_every_queued_message_as_dropped() -> None:
    c = FakeCluster()
    talker, far = Client(c["a"], ROOM), Client(c["b"], ROOM)
    settled(talker, far)
    for n in range(3):
        talker.send(n)
    c["a"].disconnect()
    assert c["a"].hub.stats["dropped_messages"] == 3


# -- crowds ---------------------------------------------------------------------------------

CROWD = 500
PAD = 900


def crowd_on_a(c: FakeCluster, count: int, limit: int) -> tuple[list[Client], list[Client]]:
    """Three live members and ``count`` stalled ones on node a. The crowd joins with room to
    spare (the join storm is not the point), then each stalled outbox is emptied and given
    ``limit``; the stalled never read again."""
    live = [Client(c["a"], ROOM) for _ in range(3)]
    stalled = [Client(c["a"], ROOM) for _ in range(count)]
    settled(*live)
    for client in stalled:
        client.outbox.take()
        client.outbox.limit = limit
    return live, stalled


def test_a_crowd_stalled_on_one_node_is_closed_as_slow_consumers_without_recursion() -> None:
    c = FakeCluster(config=Config(limits=FAST))
    sender = Client(c["b"], ROOM)
    live, stalled = crowd_on_a(c, CROWD, 8192)
    sender.new()
    for i, client in enumerate(stalled):
        leave_room(client.outbox, 1000 + 12 * i)  # they overflow on different messages
    seen: dict[Client, list[Any]] = {client: [] for client in [*live, sender]}
    with shallow_stack():
        for seq in range(12):
            sender.send({"seq": seq, "pad": "p" * PAD})
            c.run_until_idle()
            for client in seen:
                seen[client] += client.new()
    assert all(client.kicked == (1008, "slow consumer") for client in stalled)
    for client in live:
        check_live_view(seen[client], 12, CROWD + 3, 4)
    assert [f["total"] for f in seen[sender]] == list(range(CROWD + 3, 3, -1))
    assert set(c.model.members(ROOM)) == {sender.uid, *(client.uid for client in live)}
    assert_replicas_match(c)


def test_offline_a_cascade_of_slow_consumers_is_one_loop_with_totals_counting_down() -> None:
    c = FakeCluster(config=Config(limits=FAST))
    live, stalled = crowd_on_a(c, 200, 65536)
    c["a"].disconnect()
    talker = live[0]
    message = b'{"uid":"%s","date":%d,"message":"hi"}' % (talker.uid.encode(), T0)
    leave = len(text_frame(b'{"type":"leave","total":100,"date":%d}' % T0))
    for i, client in enumerate(stalled):
        # The first cannot take the message; the i-th overflows on the i-th leave.
        leave_room(client.outbox, len(text_frame(message)) + i * leave - 1)
    with shallow_stack():
        talker.send("hi")
    assert all(client.kicked == (1008, "slow consumer") for client in stalled[:100])
    totals = [f["total"] for f in live[1].new() if f.get("type") == "leave"]
    assert totals == list(range(202, 202 - len(totals), -1))


# -- random interleavings -------------------------------------------------------------------


@settings(
    max_examples=80,
    stateful_step_count=50,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
class ClusterMachine(RuleBasedStateMachine):
    """Joins, leaves and messages on three nodes, the transport's steps in any order.

    At quiescence: every replica is Redis's hash, every member's last total is the count,
    and any two members heard the same joins and leaves (same totals) once both were in.
    """

    def __init__(self) -> None:
        super().__init__()
        self.cluster = FakeCluster("abc", config=Config(limits=FAST))
        self.clients: list[Client] = []
        self.sent: dict[str, int] = {}

    @rule(node=st.sampled_from("abc"), alias=st.sampled_from([None, "x"]))
    def join(self, node: str, alias: str | None) -> None:
        self.clients.append(Client(self.cluster[node], ROOM, announce=True, alias=alias))

    @precondition(lambda self: self.clients)
    @rule(pick=st.integers(0, 10**6))
    def leave(self, pick: int) -> None:
        self.clients[pick % len(self.clients)].leave()

    @precondition(lambda self: self.clients)
    @rule(pick=st.integers(0, 10**6))
    def send(self, pick: int) -> None:
        client = self.clients[pick % len(self.clients)]
        if client.member is not None and client.member.joined:
            n = self.sent[client.uid] = self.sent.get(client.uid, 0) + 1
            client.send({"from": client.uid, "n": n})

    @rule(picks=st.lists(st.integers(0, 10**6), min_size=1, max_size=6))
    def transport(self, picks: list[int]) -> None:
        for pick in picks:
            actions = self.cluster.actions()
            if actions:
                actions[pick % len(actions)]()

    @rule()
    def settle(self) -> None:
        self.cluster.run_until_idle()
        self.check()

    def teardown(self) -> None:
        self.cluster.run_until_idle()
        self.check()

    def check(self) -> None:
        self.check_counts(self.clients)
        admitted = [client for client in self.clients if client.member is not None]
        views = {client: (client.frames()[0], presence(client.frames())) for client in admitted}
        for p in admitted:
            hello, mine = views[p]
            for q in admitted:
                if q is p:
                    continue
                found = [i for i, event in enumerate(mine) if event[:2] == ("join", q.uid)]
                if not found:
                    continue
                assert len(found) == 1 and mine[found[0]][2] == views[q][0]["total"]
                after, theirs = mine[found[0] + 1 :], views[q][1]
                n = min(len(after), len(theirs))
                assert after[:n] == theirs[:n], (p, q)
            assert hello["uid"] not in {uid for _, uid, _ in mine}, "nobody hears about itself"

    def check_counts(self, clients: list[Client]) -> None:
        """Replicas are Redis's hash, the members' last totals its size, and every sender's
        messages arrive once each and in order (across nodes some may be lost)."""
        cluster = self.cluster
        truth = cluster.model.members(ROOM)
        assert_replicas_match(cluster)
        live = [client for client in clients if client.member is not None and client.member.joined]
        assert {client.uid for client in live} == set(truth)
        for client in clients:
            frames = client.frames()
            if client in live:
                assert (presence(frames) or [("", None, frames[0]["total"])])[-1][2] == len(truth), client
            numbers: dict[str, list[int]] = {}
            assert not [frame for frame in frames if frame.get("type") == "error"], client
            for frame in frames:
                if "message" in frame and "type" not in frame:  # a relay
                    numbers.setdefault(frame["message"]["from"], []).append(frame["message"]["n"])
            assert all(ns == sorted(set(ns)) for ns in numbers.values()), numbers


TestClusterMachine = ClusterMachine.TestCase


class OutageMachine(ClusterMachine):
    """The same, with nodes losing Redis and getting it back at any point. Members hear
    different things while a node is alone, so only the end is checked: once every node is
    back and has repaired, the replicas are Redis's and every member's last total is right."""

    def __init__(self) -> None:
        super().__init__()

    @rule(node=st.sampled_from("abc"))
    def outage(self, node: str) -> None:
        if self.cluster[node].connected:
            self.cluster[node].disconnect()
        else:
            self.cluster[node].connect()

    @rule()
    def settle(self) -> None:
        self.cluster.run_until_idle()

    def teardown(self) -> None:
        cluster = self.cluster
        for node in cluster.nodes.values():
            if not node.connected:
                node.connect()
        cluster.run_until_idle()
        for node in cluster.nodes.values():
            node.hub.repair()
        cluster.run_until_idle()
        self.check_counts(self.clients)


TestOutageMachine = OutageMachine.TestCase
