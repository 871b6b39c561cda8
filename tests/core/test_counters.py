"""The core's counters (relaycore.Counters): each event counted once, where it is decided.

The hub counts messages, deliveries, bytes and drops; the session counts closes, refused
upgrades and pushes. Driven through the Harness (the native door's adapter) and through
plain hub calls, on a fake clock.
"""

from __future__ import annotations

import pytest

from relaycore import DROP_REASONS, Config, HTTPError, Hub, LimitsConfig, NamespaceConfig, Tally
from relaycore.client import client_frame
from relaycore.testing import FakeClock, Harness, VirtualClient, config_for_tests, seeded_uids

GAME = {"game": NamespaceConfig(send_key="sk"), "game/vip": NamespaceConfig(join_key="jk")}


def harness(**limits: object) -> Harness:
    config = config_for_tests(namespaces=GAME)
    for name, value in limits.items():
        setattr(config.limits, name, value)
    return Harness(config)


def tally(h: Harness, namespace: str = "") -> Tally:
    return h.hub.counters.tallies[namespace]


def dropped(t: Tally) -> dict[str, int]:
    return {reason: n for reason, n in t.dropped.items() if n}


def test_every_namespace_has_a_tally_from_the_start() -> None:
    h = harness()
    assert sorted(h.hub.counters.tallies) == ["", "game", "game/vip"]
    assert all(t.dropped == dict.fromkeys(DROP_REASONS, 0) for t in h.hub.counters.tallies.values())


def test_a_channel_counts_against_the_longest_namespace_covering_it() -> None:
    h = harness()
    assert h.hub.namespace("game:1") == "game"
    assert h.hub.namespace("game/vip:1") == "game/vip"
    assert h.hub.namespace("gamers") == ""
    member = h.join("game/vip:1", join_key="jk")
    assert member.connection.member is not None
    assert member.connection.member.channel.tally is tally(h, "game/vip")


def test_messages_received_delivered_and_their_bytes() -> None:
    h = harness()
    ann = h.join("room", echo=True)
    bob = h.join("room")
    ann.take()
    ann.send({"hi": 1})  # to Bob and, echoed, to Ann
    ann.send("psst", to=bob.uid)  # to Bob only
    t = tally(h)
    assert (t.received, t.delivered) == (2, 3)
    envelopes = [f for f in ann.take() + bob.take() if "message" in f and "type" not in f]
    assert len(envelopes) == 3
    assert t.bytes_out == 2 * len(b'{"uid":"' + ann.uid.encode() + b'","date":1700000000000,"message":{"hi":1}}') + len(
        b'{"uid":"' + ann.uid.encode() + b'","date":1700000000000,"message":"psst"}'
    )
    assert dropped(t) == {}
    assert tally(h, "game").received == 0


def test_presence_and_error_frames_are_not_counted_as_deliveries() -> None:
    h = harness()
    ann = h.join("room")
    h.join("room").close()
    ann.send_raw("undefined")
    assert tally(h).delivered == 0 and tally(h).bytes_out == 0


def test_each_drop_reason_is_counted_where_it_is_decided() -> None:
    h = harness(messages_burst=3, messages_per_second=0.001, max_message_bytes=100)
    talker = h.join("game:1", send_key="sk")
    listener = h.join("game:1")
    listener.send("no key")  # send_key
    talker.send("hi", to="nobody")  # unknown_uid
    talker.send_raw("undefined")  # invalid_json
    talker.send_raw(b"\x00")  # binary
    talker.send("over the rate")  # rate: the burst of 3 is spent
    assert dropped(tally(h, "game")) == {"send_key": 1, "unknown_uid": 1, "invalid_json": 1, "binary": 1, "rate": 1}
    assert tally(h, "game").received == 5 and tally(h, "game").delivered == 0
    big = h.join("room")
    big.send("x" * 200)  # size: closed 1009, never handed to the hub
    assert big.closed == (1009, "message too big")
    assert dropped(tally(h)) == {"size": 1} and tally(h).received == 0


def test_a_fragmented_message_over_the_limit_is_one_size_drop() -> None:
    h = harness(max_message_bytes=100)
    member = h.join("room")
    for opcode in (0x1, 0x0, 0x0):  # text, then continuations: 180 bytes, never finished
        member.connection.receive_data(client_frame(opcode, b"y" * 60, b"abcd", fin=False))
    h._flush()
    assert member.closed == (1009, "message too big")
    assert dropped(tally(h)) == {"size": 1}


def test_slow_consumers_are_counted_once_each() -> None:
    hub = Hub(Config(limits=LimitsConfig(outbound_buffer_bytes=300)), FakeClock(), seeded_uids(3))
    sender = VirtualClient(hub, "room")
    stuck = [VirtualClient(hub, "room") for _ in range(2)]
    sender.received()
    for n in range(5):
        sender.send("m" * 60 + str(n))
    t = hub.channels["room"].tally
    assert all(client.kicked == (1008, "slow consumer") for client in stuck)
    assert t.dropped["slow_consumer"] == 2
    # Those that took a message before overflowing count as deliveries, the refused ones do not.
    assert t.delivered == sum(
        1 for client in stuck for frame in client.received() if "message" in frame and "type" not in frame
    )


def test_a_member_that_cannot_take_a_leave_is_a_slow_consumer_too() -> None:
    hub = Hub(Config(limits=LimitsConfig(outbound_buffer_bytes=400)), FakeClock(), seeded_uids(4))
    goes = VirtualClient(hub, "room")
    stuck = VirtualClient(hub, "room")
    hub.channels["room"].members[stuck.uid].outbox.size = 390  # almost full
    goes.leave()
    assert stuck.kicked == (1008, "slow consumer")
    assert hub.counters.tallies[""].dropped["slow_consumer"] == 1


def test_closes_are_counted_by_code_once_per_member() -> None:
    h = harness(ping_interval=10.0, ping_timeout=10.0)
    h.join("room").close(1000)
    h.join("room").close(4321)  # a code of the application's own: "other"
    h.join("room").drop()  # no close frame: 1006
    h.join("room", responsive=False)  # a dead peer: 1006 too
    h.advance(25)
    kicked = h.join("room")
    kicked.send("x" * 200_000)  # the relay closes it (1009); its answer is not counted again
    h.join("game:1").close(1001)
    assert tally(h).closes == {1000: 1, 0: 1, 1006: 2, 1009: 1}
    assert tally(h, "game").closes == {1001: 1}


def test_shutdown_counts_1001_for_everyone() -> None:
    h = harness()
    for _ in range(3):
        h.join("room")
    h.shutdown()
    assert tally(h).closes == {1001: 3}


def test_refused_upgrades_are_counted_by_status() -> None:
    h = harness()
    for target, status in (("/c/game/vip:1", 403), ("/c/game:1?sendKey=nope", 403), ("/c/", 400)):
        with pytest.raises(HTTPError) as refused:
            h.join(target)
        assert refused.value.status == status
    assert h.http("GET", "/c/room").status == 426  # a plain GET of a WebSocket path
    assert h.hub.counters.refused == {403: 2, 400: 1, 426: 1}
    assert all(not t.closes for t in h.hub.counters.tallies.values()), "a refused upgrade is no member's close"


def test_pushes_are_counted_by_status() -> None:
    h = harness(max_message_bytes=100)
    member = h.join("game:1")
    assert h.push("game:1", {"n": 1}, send_key="sk").status == 200
    assert h.push("game:1", {"n": 2}, send_key="bad").status == 403
    assert h.push("room", {"n": 3}).status == 403
    assert h.http("POST", "/push/game:1", body=b"{", headers={"x-send-key": "sk"}).status == 400
    assert h.http("GET", "/push/game:1").status == 405
    assert h.push("game:1", "x" * 200, send_key="sk").status == 413
    assert h.hub.counters.pushes == {200: 1, 403: 2, 400: 1, 405: 1, 413: 1}
    assert tally(h, "game").delivered == 1 and member.take()[-1]["message"] == {"n": 1}


def test_a_cluster_node_alone_counts_like_a_relay() -> None:
    from relaycore import ClusterHub

    hub = ClusterHub(Config(namespaces=GAME), FakeClock(), seeded_uids(5), node="a.1")  # offline: decides alone
    talker = VirtualClient(hub, "game:1", send_key="sk")
    listener = VirtualClient(hub, "game:1")
    talker.send("hi")
    listener.send("me too")
    listener.send("psst", to="nobody")
    t = hub.counters.tallies["game"]
    assert (t.received, t.delivered) == (3, 1)
    assert dropped(t) == {"send_key": 2}, "without the key, even a direct message is refused first"
