"""Presence that scales: the join and leave events of a big channel, coalesced (no I/O).

What must hold (docs/protocol.md, section 5.4, and relaycore/_crowd.py):

- off unless set (``[presence] coalesce_above``, or a namespace's
  ``presence_coalesce_above``, which wins); every event whose total is at most the bound goes
  out as it happens;
- above it, an event about a member who did not announce is not sent; the members get one
  event carrying only the current total at the hub's tick, at most once per ``interval`` per
  channel: a ``join`` when the total is at least the one they were last told, else a
  ``leave``;
- an announced member's join and leave stay exact (named, with the running total) while
  the channel has at most ``coalesce_above`` announced members, and any event sent clears
  the need for a coalesced one;
- self-join (with ``users``) and direct messages are unchanged; a slow consumer of a
  coalesced event departs without recursion;
- in a cluster each node sends its own members the coalesced events, with the cluster's
  total;
- filling a channel of 2,000 members costs a few thousand presence frames, not millions.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relaycore import Config, ConfigError, Hub, NamespaceConfig, PresenceConfig
from relaycore.testing import FakeClock, Harness, VirtualClient, config_for_tests, seeded_uids

from ._redis_model import Client, FakeCluster
from .test_crowd import leave_room, shallow_stack

T0 = 1_700_000_000_000
ABOVE = 3


def make_hub(above: int = ABOVE, interval: float = 1.0, **fields: Any) -> Hub:
    config = config_for_tests(presence=PresenceConfig(coalesce_above=above, interval=interval), **fields)
    return Hub(config, FakeClock(), seeded_uids(3))


def tick(hub: Hub, seconds: float) -> None:
    hub.clock.advance(seconds)  # type: ignore[attr-defined]
    hub.tick(hub.clock.monotonic())


def presence(client: VirtualClient | Client) -> list[tuple[str, str | None, int]]:
    """The joins and leaves about others a client received since the last call:
    (type, uid if named, total)."""
    frames = client.received() if isinstance(client, VirtualClient) else client.new()
    seen = [
        (f["type"], f.get("uid"), f["total"]) for f in frames if f.get("type") in ("join", "leave") and "self" not in f
    ]
    if isinstance(client, VirtualClient):
        frames.clear()
    return seen


def crowd(hub: Hub, count: int, channel: str = "room", **options: Any) -> list[VirtualClient]:
    clients = [VirtualClient(hub, channel, **options) for _ in range(count)]
    for client in clients:
        client.received().clear()
    return clients


# -- the rule ---------------------------------------------------------------------------------


def test_off_by_default_every_event_goes_out() -> None:
    hub = Hub(config_for_tests(), FakeClock(), seeded_uids(3))
    first, *others = crowd(hub, 1) + [VirtualClient(hub, "room") for _ in range(5)]
    assert hub.channels["room"].crowd is None
    assert presence(first) == [("join", None, n) for n in range(2, 7)]
    others[0].leave()
    assert presence(first) == [("leave", None, 5)]


def test_at_most_the_bound_every_event_goes_out_above_it_they_wait_for_the_tick() -> None:
    hub = make_hub()
    first = VirtualClient(hub, "room")
    for _ in range(4):
        VirtualClient(hub, "room")
    assert presence(first) == [("join", None, 2), ("join", None, 3)], "4 and 5 are over the bound"
    tick(hub, 0.25)
    assert presence(first) == [("join", None, 5)], "one event, only the total"
    for _ in range(3):
        VirtualClient(hub, "room")
    tick(hub, 0.25)
    tick(hub, 0.25)
    assert presence(first) == [], "at most one per interval"
    tick(hub, 0.5)
    assert presence(first) == [("join", None, 8)]
    tick(hub, 5)
    assert presence(first) == [], "nothing changed, nothing sent"


def test_the_coalesced_event_is_a_leave_when_the_total_fell_and_carries_no_uid() -> None:
    hub = make_hub()
    first, *others = crowd(hub, 8)
    tick(hub, 1)
    assert presence(first) == [("join", None, 8)]
    for client in others[:3]:
        client.leave()
    tick(hub, 1)
    assert first.received() == [{"type": "leave", "total": 5, "date": T0 + 2000}]


def test_churn_that_keeps_the_total_still_tells_the_newcomer_the_current_total() -> None:
    hub = make_hub()
    members = crowd(hub, 6)
    tick(hub, 1)
    assert presence(members[0]) == [("join", None, 6)]
    newcomer = VirtualClient(hub, "room")
    assert newcomer.received()[0]["total"] == 7
    newcomer.received().clear()
    members[1].leave()
    tick(hub, 1)
    assert presence(newcomer) == [("join", None, 6)], "as many as the others were last told: a join"
    assert presence(members[0]) == [("join", None, 6)]


def test_a_leave_back_to_the_bound_goes_out_at_once_and_nothing_is_left_to_coalesce() -> None:
    hub = make_hub()
    first, *others = crowd(hub, 5)
    others[0].leave()
    assert presence(first) == [], "5 -> 4, still over"
    others[1].leave()
    assert presence(first) == [("leave", None, 3)]
    tick(hub, 1)
    assert presence(first) == [], "the last event told everyone the total"


def test_announced_members_stay_exact_while_they_are_few() -> None:
    hub = make_hub()
    audience = crowd(hub, 10)
    hosts = [VirtualClient(hub, "room", announce=True, alias=f"host{i}") for i in range(4)]
    named = [(kind, uid) for kind, uid, _ in presence(audience[0])]
    assert named == [("join", hosts[0].uid), ("join", hosts[1].uid), ("join", hosts[2].uid)], "the 4th is over"
    tick(hub, 1)
    assert presence(audience[0]) == [("join", None, 14)]
    hosts[3].leave()
    hosts[0].leave()
    assert presence(audience[0]) == [("leave", hosts[0].uid, 12)], "back to 3 announced: named again"
    tick(hub, 1)
    assert presence(audience[0]) == [], "the named leave carried the current total"


def test_self_join_list_and_direct_messages_are_unchanged_in_a_crowd() -> None:
    hub = make_hub()
    host = VirtualClient(hub, "room", announce=True, alias="Host")
    crowd(hub, 6)
    lister = VirtualClient(hub, "room", list=True)
    hello = lister.received()[0]
    assert (hello["self"], hello["total"]) == (True, 8)
    assert hello["users"] == [{"uid": host.uid, "alias": "Host"}]
    host.send({"hi": 1}, to=lister.uid)
    assert lister.received()[-1]["message"] == {"hi": 1}


def test_a_namespace_turns_it_on_or_off_for_its_channels() -> None:
    namespaces = {
        "big": NamespaceConfig(presence_coalesce_above=2),
        "small": NamespaceConfig(presence_coalesce_above=0),
    }
    hub = make_hub(above=0, namespaces=namespaces)
    for channel in ("big:stage", "other"):
        VirtualClient(hub, channel)
    assert hub.channels["big:stage"].crowd is not None and hub.channels["other"].crowd is None
    hub = make_hub(above=2, namespaces=namespaces)
    VirtualClient(hub, "small/room")
    VirtualClient(hub, "open")
    assert hub.channels["small/room"].crowd is None and hub.channels["open"].crowd is not None


def test_a_slow_consumer_of_a_coalesced_event_departs_and_the_others_hear_it_next_time() -> None:
    hub = make_hub()
    members = crowd(hub, 300)
    stalled = members[100:]
    for client in stalled:
        leave_room(client.outbox, 10)
    VirtualClient(hub, "room")
    with shallow_stack():
        tick(hub, 1)
    assert all(client.kicked == (1008, "slow consumer") for client in stalled)
    assert presence(members[0]) == [("join", None, 301)]
    tick(hub, 1)
    assert presence(members[0]) == [("leave", None, 101)]


def test_no_coalesced_event_once_the_relay_shuts_down() -> None:
    hub = make_hub()
    first, *others = crowd(hub, 6)
    others[0].leave()
    hub.shutdown()
    tick(hub, 1)
    assert first.received() == []


def test_the_harness_delivers_coalesced_events_as_time_passes() -> None:
    h = Harness(config_for_tests(presence=PresenceConfig(coalesce_above=2, interval=0.5)))
    ann = h.join("room")
    h.join("room")
    ann.expect("join", total=2)
    h.join("room")
    ann.expect_nothing()
    h.advance(0.5)
    ann.expect("join", total=3, uid=None)
    ann.expect_nothing()


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["join", "join", "join", "host", "leave", "wait", "wait"]), st.integers(0, 99)),
        max_size=80,
    )
)
def test_whatever_comes_and_goes_every_member_learns_the_total_and_at_most_once_an_interval(
    steps: list[tuple[str, int]],
) -> None:
    hub = make_hub(above=ABOVE, interval=1.0)
    members: list[VirtualClient] = []
    heard: dict[VirtualClient, list[dict[str, Any]]] = {}
    for action, n in steps:
        if action in ("join", "host"):
            members.append(VirtualClient(hub, "room", announce=action == "host"))
            heard[members[-1]] = []
        elif action == "leave" and members:
            members.pop(n % len(members)).leave()
        elif action == "wait":
            tick(hub, (0.1, 0.25, 0.5, 1.0)[n % 4])
        for member in members:
            heard[member] += member.received()
            member.received().clear()
    tick(hub, 1.0)
    for member in members:
        frames = heard[member] + member.received()
        known = [f for f in frames if f.get("type") in ("join", "leave")]
        assert known[-1]["total"] == len(members), f"{member.uid} last heard {known[-1]} of {len(members)}"
        coalesced = [f["date"] for f in known if "uid" not in f and f["total"] > ABOVE and "self" not in f]
        gaps = [later - earlier for earlier, later in itertools.pairwise(coalesced)]
        assert all(gap >= 1000 for gap in gaps), f"coalesced events closer than the interval: {coalesced}"


# -- the cost -----------------------------------------------------------------------------------


def test_filling_a_channel_costs_frames_per_interval_not_per_pair() -> None:
    hub = make_hub(above=100, interval=1.0)
    watcher = VirtualClient(hub, "room")
    members = [watcher]
    for _ in range(10):
        members += [VirtualClient(hub, "room") for _ in range(200)]
        tick(hub, 1)
    counts = [len([f for f in client.received() if "self" not in f]) for client in members]
    exact = 100 * 99 // 2  # the joins up to the bound, each to the members before it
    coalesced = sum(1 + 200 * second for second in range(1, 11))  # one event each, once a second
    assert sum(counts) == exact + coalesced == 15_960, "instead of 2001 * 2000 / 2 = 2,001,000"
    assert counts[0] == 99 + 10
    assert presence(watcher)[-1] == ("join", None, 2001)


# -- settings -----------------------------------------------------------------------------------


def test_the_settings_from_the_file_and_the_environment() -> None:
    toml = b'[presence]\ncoalesce_above = 500\n[namespaces."live"]\npresence_coalesce_above = 50\n'
    config = Config.from_toml(toml, env={"RELAYCORE_PRESENCE_INTERVAL": "2.5"})
    assert (config.presence.coalesce_above, config.presence.interval) == (500, 2.5)
    assert config.namespaces["live"].presence_coalesce_above == 50
    assert Config().presence == PresenceConfig(coalesce_above=0, interval=1.0)
    assert Config.from_toml(b"", env={"RELAYCORE_PRESENCE_COALESCE_ABOVE": "9"}).presence.coalesce_above == 9


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (b"[presence]\ncoalesce_above = -1\n", "presence.coalesce_above"),
        (b"[presence]\ninterval = 0\n", "presence.interval"),
        (b'[namespaces."x"]\npresence_coalesce_above = -5\n', "presence_coalesce_above"),
        (b"[presence]\ncoalesce = 5\n", "coalesce"),
    ],
)
def test_bad_settings_stop_the_start_naming_the_key(toml: bytes, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config.from_toml(toml, env={})


# -- a cluster ----------------------------------------------------------------------------------


def test_in_a_cluster_each_node_coalesces_for_its_members_with_the_cluster_total() -> None:
    config = Config(presence=PresenceConfig(coalesce_above=ABOVE))
    c = FakeCluster("ab", config=config)
    on_a = Client(c["a"], "room")
    on_b = Client(c["b"], "room")
    c.run_until_idle()
    for node in "abab":
        Client(c[node], "room")
        c.run_until_idle()
    assert presence(on_a) == [("join", None, 2), ("join", None, 3)]
    assert presence(on_b) == [("join", None, 3)]
    host = Client(c["b"], "room", announce=True, alias="Host")
    c.run_until_idle()
    assert presence(on_a) == presence(on_b) == [("join", host.uid, 7)], "few announced: exact everywhere"
    Client(c["a"], "room")
    c.run_until_idle()
    assert presence(on_a) == presence(on_b) == []
    for node in "ab":
        tick(c[node].hub, 1)
    assert presence(on_a) == presence(on_b) == [("join", None, 8)]
    host.leave()
    on_b.leave()
    c.run_until_idle()
    assert presence(on_a) == [("leave", host.uid, 7)]
    tick(c["a"].hub, 1)
    assert presence(on_a) == [("leave", None, 6)]


def test_offline_a_node_coalesces_its_own_leaves() -> None:
    c = FakeCluster("ab", config=Config(presence=PresenceConfig(coalesce_above=ABOVE)))
    clients = [Client(c["a"], "room") for _ in range(6)]
    c.run_until_idle()
    first = clients[0]
    tick(c["a"].hub, 1)
    assert presence(first) == [("join", None, 2), ("join", None, 3), ("join", None, 6)]
    c["a"].disconnect()
    clients[1].leave()
    clients[2].leave()
    assert presence(first) == []
    tick(c["a"].hub, 1)
    assert presence(first) == [("leave", None, 4)]
