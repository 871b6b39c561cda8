"""Messages between cluster nodes: one record per node and burst, one batch per member.

What must hold (``relaycore/_cluster_calls.py``, ``relaycore/_cluster_replication.py``):

- a node publishes a message to each other node with members in its channel, on that
  node's own pub/sub channel, and never hears its own messages back;
- the messages of a burst for one node share one ``M`` record whatever their channels (a
  run per channel, the channel's name counted so that it may hold any byte), and a record
  is closed at its size bound, before a script and before a direct message to its node;
- on the receiving node the messages of one record reach each member in one batch, and
  wait with the channel's other records while its replica waits for a snapshot;
- every member gets every message of its channel once, in each sender's order, however
  the bursts, channels and transport steps interleave.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relaycore import Config, Outbox
from relaycore import _cluster_calls as calls
from relaycore._cluster_calls import run_head, runs

from ._redis_model import Client, FakeCluster
from .test_cluster import FAST, ROOM, publish_records, settled


def test_a_node_publishes_to_each_other_node_with_members_and_never_to_itself() -> None:
    c = FakeCluster("abcd")
    talker, near = Client(c["a"], ROOM), Client(c["a"], ROOM)
    far = [Client(c["b"], ROOM), Client(c["b"], ROOM), Client(c["c"], ROOM)]
    elsewhere = Client(c["d"], "other")
    settled(talker, near, *far, elsewhere)
    talker.send("hi")
    assert sorted(call.keys[0] for call in c["a"].hub.calls) == [b"rc:d:b.1", b"rc:d:c.1"]
    c["a"].send()
    assert not c["a"].inbox and not c["d"].inbox
    c.run_until_idle()
    assert [[f["message"] for f in client.new()] for client in [near, *far]] == [["hi"]] * 4
    far[2].leave()
    settled(talker, near, *far[:2])
    talker.send("without c")
    assert [call.keys[0] for call in c["a"].hub.calls] == [b"rc:d:b.1"], "c has no member left"


def test_a_burst_in_many_small_rooms_is_one_record_per_node_and_one_batch_per_member() -> None:
    c = FakeCluster(config=Config(limits=FAST))
    rooms = [f"pair {i}" for i in range(3)] + ["odd\x1fname\x1e"]
    pairs = [(Client(c["a"], room), Client(c["b"], room)) for room in rooms]
    settled(*(client for pair in pairs for client in pair))
    for n in range(3):
        for here, _ in pairs:
            here.send(n)
    (record,) = publish_records(c, "a")
    assert record.startswith(b"M" + c["a"].hub.node_raw + run_head(rooms[0]))
    assert list(runs(record)) == rooms and [len(p) for p in runs(record).values()] == [3] * 4
    c["a"].send()
    puts: list[int] = []
    put_batch = Outbox.put_batch

    def counted(outbox: Outbox, payloads: list[bytes], frames: bytes) -> bool:
        puts.append(len(payloads))
        return put_batch(outbox, payloads, frames)

    records_in = c["b"].hub.stats["records_in"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Outbox, "put_batch", counted)
        c["b"].feed()
    assert puts == [3] * 4, "one batch per member"
    assert [[f["message"] for f in there.new()] for _, there in pairs] == [[0, 1, 2]] * 4
    assert c["a"].hub.stats["published"] == 12 and c["b"].hub.stats["records_in"] == records_in + 1


def test_a_record_closes_at_its_size_bound_and_before_a_script(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calls, "MAX_RECORD", 400)
    c = FakeCluster(config=Config(limits=FAST))
    talker, far = Client(c["a"], ROOM), Client(c["b"], ROOM)
    settled(talker, far)
    for n in range(6):
        talker.send({"n": n, "pad": "x" * 60})
    records = publish_records(c, "a")
    assert len(records) > 1 and all(len(record) <= 400 for record in records)
    late = Client(c["a"], ROOM)  # a join script: the messages after it go in a record after it
    talker.send({"n": 6})
    assert [call.script for call in c["a"].hub.calls][-2:] == ["join", "publish"]
    c.run_until_idle()
    assert [f["message"]["n"] for f in far.new() if "message" in f] == list(range(7))
    assert late.member is not None


def test_messages_from_another_node_wait_with_the_records_before_a_snapshot() -> None:
    c = FakeCluster()
    talker, far = Client(c["a"], ROOM), Client(c["b"], ROOM)
    settled(talker, far)
    c["b"].hub.repair()  # b reloads its replica: what comes meanwhile waits for the snapshot
    assert [call.script for call in c["b"].hub.calls] == ["sync"]
    newcomer = Client(c["a"], ROOM, announce=True)
    c["a"].send()
    talker.send("after the join")
    c["a"].send()
    c["b"].feed()
    assert far.new() == [], "waiting for b's snapshot, in their order"
    c.run_until_idle()
    assert [(f.get("type"), f.get("message")) for f in far.new()] == [("join", None), (None, "after the join")]
    assert newcomer.member is not None


def test_a_member_that_cannot_take_a_whole_batch_is_a_slow_consumer() -> None:
    c = FakeCluster(config=Config(limits=FAST))
    talker, far, stalled = Client(c["a"], ROOM), Client(c["b"], ROOM), Client(c["b"], ROOM)
    settled(talker, far, stalled)
    stalled.outbox.take()
    stalled.outbox.limit = 250
    for n in range(3):
        talker.send({"n": n, "pad": "x" * 60})
    c.run_until_idle()
    assert stalled.kicked == (1008, "slow consumer") and stalled.outbox.take() == []
    assert [f["message"]["n"] for f in far.new() if "message" in f] == [0, 1, 2]
    assert c["b"].hub.channels[ROOM].tally.dropped["slow_consumer"] == 1


# Each member: (node, room). Rooms 0 and 1 span three nodes, room 2 two, room 3 is one node's.
LAYOUT = [("a", 0), ("b", 0), ("c", 0), ("a", 1), ("b", 1), ("c", 1), ("a", 2), ("c", 2), ("b", 3), ("b", 3)]
STEP = st.one_of(st.integers(0, len(LAYOUT) - 1), st.sampled_from(["a", "b", "c"]), st.just("feed"))


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(steps=st.lists(STEP, max_size=80))
def test_every_member_gets_every_message_of_its_room_once_and_in_order(steps: list[int | str]) -> None:
    """Sends (a member's index), a node's pipeline (its name) and feeds in any order."""
    c = FakeCluster("abc", config=Config(limits=FAST))
    members = [Client(c[node], f"room {room}") for node, room in LAYOUT]
    settled(*members)
    sent = [0] * len(LAYOUT)
    for step in steps:
        if isinstance(step, int):
            sent[step] += 1
            members[step].send([step, sent[step]])
        elif step == "feed":
            for node in c.nodes.values():
                node.feed()
        else:
            c[step].send()
            c[step].answer()
    c.run_until_idle()
    for me, (_, room) in enumerate(LAYOUT):
        got = [tuple(f["message"]) for f in members[me].new()]
        senders = [k for k, (_, other) in enumerate(LAYOUT) if other == room and k != me]
        assert {sender for sender, _ in got} <= set(senders), me
        for k in senders:
            assert [n for sender, n in got if sender == k] == list(range(1, sent[k] + 1)), (me, k)
