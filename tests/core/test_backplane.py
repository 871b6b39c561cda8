"""Joins a backplane decides later (a cluster's, after a round trip): the hub never waits,
the connection holds its upgrade until the decision, and nothing is lost or reordered."""

from __future__ import annotations

import json

import pytest

from relaycore import Config, Connection, Hub, RelayUsageError, State
from relaycore.testing import DeferredBackplane, FakeClock, VirtualClient, seeded_uids

from ._frames import OP_TEXT, Peer, parse_frames, parse_response, text, upgrade_request


def make(toml: str = "") -> tuple[Hub, DeferredBackplane]:
    backplane = DeferredBackplane()
    config = Config.from_toml(toml, env={})
    config.limits.connections_per_second_per_ip = 1e9
    return Hub(config, FakeClock(), seeded_uids(3), backplane=backplane), backplane


def test_the_upgrade_waits_for_the_decision_and_early_frames_follow_the_self_join() -> None:
    hub, backplane = make()
    peer = Peer(hub)
    # The client does not wait for the 101: it sends two messages right behind its request.
    peer.feed(upgrade_request("/c/room?alias=Ann") + text('"one"') + text('"two"'))
    assert peer.drain() == b"" and not peer.conn.reading and peer.state() is State.HTTP
    assert len(backplane.requests) == 1 and "room" not in hub.channels
    assert backplane.decide() == 1
    response, rest = parse_response(peer.drain())
    assert response.status == 101
    frames = parse_frames(rest)
    assert frames[0].opcode == OP_TEXT and frames[0].json()["self"] is True
    assert peer.conn.reading and peer.state() is State.WEBSOCKET
    assert list(hub.channels["room"].members) == [frames[0].json()["uid"]]


def test_messages_sent_before_the_decision_reach_the_others_after_it() -> None:
    hub, backplane = make()
    listener = Peer(hub)
    listener.feed(upgrade_request("/c/room"))
    backplane.decide()
    listener.drain()
    talker = Peer(hub)
    talker.feed(upgrade_request("/c/room") + text('"early"'))
    assert listener.drain() == b""
    backplane.decide()
    kinds = [f.json() for f in parse_frames(listener.drain())]
    assert [k.get("type") for k in kinds] == ["join", None] and kinds[1]["message"] == "early"


def test_a_refusal_decided_later_is_a_403_and_the_connection_ends() -> None:
    hub, backplane = make('[namespaces."vault"]\njoin_key = "k"')
    peer = Peer(hub)
    peer.feed(upgrade_request("/c/vault?joinKey=wrong"))
    assert peer.drain() == b""
    backplane.decide()
    response, _ = parse_response(peer.drain())
    assert response.status == 403 and response.body == b"Joining requires a valid joinKey."
    assert peer.state() is State.CLOSED and not hub.channels


@pytest.mark.parametrize("how", ["lost", "timeout"])
def test_a_client_gone_before_the_decision_never_stays_a_member(how: str) -> None:
    hub, backplane = make("[limits]\nhandshake_timeout = 2.0")
    peer = Peer(hub)
    peer.feed(upgrade_request("/c/room"))
    if how == "lost":
        peer.conn.connection_lost()
    else:
        clock = hub.clock
        assert isinstance(clock, FakeClock)
        clock.advance(3.0)
        peer.conn.tick(clock.monotonic())
    assert peer.state() is State.CLOSED
    backplane.decide()
    assert not hub.channels, "the member joined after its client had gone"


def test_a_session_without_the_callbacks_cannot_wait() -> None:
    hub, _ = make()
    with pytest.raises(RelayUsageError):
        VirtualClient(hub, "room")


def test_the_in_memory_backplane_decides_at_once() -> None:
    hub = Hub(Config(), FakeClock(), seeded_uids(3))
    conn = Connection(hub)
    conn.receive_data(upgrade_request("/c/room"))
    assert conn.state is State.WEBSOCKET and conn.member is not None
    data = conn.data_to_send()
    assert data.startswith(b"HTTP/1.1 101 ") and json.loads(parse_frames(parse_response(data)[1])[0].payload)
