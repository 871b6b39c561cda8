"""The core under a crowd: thousands of stalled members, mass overflows, floods from peers
that never read. No I/O: outboxes that are never drained stand for members that stopped
reading; the fake clock stands still unless told.

What must hold (docs/limits.md, "what the relay survives"):

- closing any number of slow consumers at once is one loop: no call depth grows with the
  crowd (these tests run under a recursion limit barely above the test's own depth);
- every live member still gets every message, in order, and one leave per departed member
  with totals that count down by one;
- every byte a connection is owed (pongs, HTTP answers) counts against the same bound.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from relaycore import WEBSOCKET, Config, Hub, Outbox, State, text_frame
from relaycore.testing import FakeClock, VirtualClient, seeded_uids

from ._frames import OP_CLOSE, OP_PONG, OP_TEXT, Peer, open_ws, parse_frames, parse_responses, ping, request, text

CHANNEL = "/c/crowd"
MESSAGE_CHARS = 102_000  # a JSON string just under the default 100 KiB message limit


def make_hub(toml: str = "") -> Hub:
    config = Config.from_toml(toml, env={})
    config.limits.connections_per_second_per_ip = 1e9  # every core peer is one address
    return Hub(config, FakeClock(), seeded_uids(7))


def leave_room(outbox: Outbox, room: int) -> None:
    """Queue one real message (a JSON string) so that exactly ``room`` bytes stay free."""
    payload, frame = _filler(outbox.form is WEBSOCKET, outbox.room() - room)
    outbox.put_always(payload, frame)
    assert outbox.room() == room


@functools.cache
def _filler(framed: bool, size: int) -> tuple[bytes, bytes]:
    """A JSON string payload whose frame (or payload, unframed) is ``size`` bytes (shared)."""
    for head in (0,) if not framed else (2, 4, 10):
        payload = b'"' + b"f" * (size - head - 2) + b'"'
        frame = text_frame(payload)
        if len(frame if framed else payload) == size:
            return payload, frame
    raise AssertionError(f"no filler of {size} bytes")


@contextmanager
def shallow_stack(headroom: int = 120) -> Iterator[None]:
    """Run the block with the recursion limit just above the current depth."""
    depth = 0
    frame = sys._getframe()
    while frame is not None:
        depth += 1
        frame = frame.f_back  # type: ignore[assignment]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + headroom)
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


def big(seq: int) -> str:
    return json.dumps({"seq": seq, "pad": "x" * MESSAGE_CHARS})


def check_live_view(frames: list[dict[str, Any]], messages: int, first_total: int, last_total: int) -> None:
    """Every broadcast once and in order; leaves counting down by one from ``first_total``."""
    seqs = [f["message"]["seq"] for f in frames if "type" not in f]
    assert seqs == list(range(messages)), f"broadcasts lost, doubled or reordered: {seqs[:20]}..."
    totals = [f["total"] for f in frames if f.get("type") == "leave"]
    assert totals == list(range(first_total, last_total - 1, -1)), (
        f"leave totals do not count down by one: {totals[:5]}...{totals[-5:]} ({len(totals)} leaves)"
    )
    assert all(f.get("type") in (None, "leave") for f in frames), "only relays and leaves are expected"


def test_fifteen_hundred_stalled_members_are_closed_without_recursion() -> None:
    """The crowd that crashed the relay: 1,500 members that never read (half framed
    connections, half whole-message outboxes), ten 100 KB broadcasts at default limits."""
    hub = make_hub()
    sender = VirtualClient(hub, "crowd")
    live = [VirtualClient(hub, "crowd") for _ in range(3)]
    stalled_vcs = [VirtualClient(hub, "crowd") for _ in range(750)]
    stalled_peers = [open_ws(hub, CHANNEL)[0] for _ in range(750)]
    before = len(hub.channels["crowd"].members)
    assert before == 1504
    for client in live:
        client.received().clear()  # the join storm is not what this test is about
    seen: dict[VirtualClient, list[dict[str, Any]]] = {client: [] for client in live}
    with shallow_stack():
        for seq in range(10):
            sender.send_text(big(seq))
            for client in live:
                seen[client] += client.received()
                client.received().clear()
            hub.take_ready()
    members = hub.channels["crowd"].members
    assert set(members) == {sender.uid, *(c.uid for c in live)}, f"{len(members)} members left"
    assert all(vc.kicked == (1008, "slow consumer") for vc in stalled_vcs)
    assert all(p.conn.state is State.CLOSING and p.conn.close_code == 1008 for p in stalled_peers)
    for client in live:
        check_live_view(seen[client], 10, before - 1, len(members))
    # A slow consumer's backlog is dropped: what is left is its close frame (and any frame
    # already begun), not a megabyte of relays.
    for peer in stalled_peers[:50]:
        frames = parse_frames(peer.drain())
        assert frames[-1].opcode == OP_CLOSE and frames[-1].close_code == 1008
        assert sum(len(f.payload) for f in frames) < 512 * 1024


def test_a_cascade_through_the_leaves_is_one_departure_with_correct_totals() -> None:
    """Members with little room overflow on the LEAVES of the first slow consumers: they go
    in the same pass, and the others get one leave per departed member, in one batch."""
    hub = make_hub("[limits]\noutbound_buffer_bytes = 8000")
    live = [VirtualClient(hub, "room") for _ in range(5)]
    stalled = [VirtualClient(hub, "room", announce=True, alias=f"s{i}") for i in range(40)]
    for client in [*live, *stalled]:
        client.outbox.take()
    # Fill the stalled members to different depths: each still has room for a few leaves.
    for i, client in enumerate(stalled):
        leave_room(client.outbox, 1000 - 20 * i)
    chatter = json.dumps("y" * 900)
    with shallow_stack():
        live[0].send_text(chatter)  # fits nobody with under ~940 bytes of room
    members = hub.channels["room"].members
    assert list(members) == [c.uid for c in live], "every stalled member goes, through the cascade"
    assert all(c.kicked == (1008, "slow consumer") for c in stalled)
    for client in live[1:]:
        frames = client.received()
        assert frames[0]["message"] == "y" * 900
        leaves = frames[1:]
        assert [f["total"] for f in leaves] == list(range(44, 4, -1))
        assert {f["uid"] for f in leaves} == {c.uid for c in stalled}
    # The first to go are those the message itself did not fit, in channel order; then the
    # rest, those with the least room first.
    order = [f["alias"] for f in live[1].received()[1:]]
    size = len(json.dumps(live[1].received()[0], separators=(",", ":")))  # the relay's payload
    direct = [f"s{i}" for i in range(len(stalled)) if 1000 - 20 * i < size]
    assert 0 < len(direct) < len(stalled)
    assert order[: len(direct)] == direct
    assert order[len(direct) :] == [f"s{i}" for i in reversed(range(len(stalled))) if f"s{i}" not in direct]


def test_departures_cost_one_pass_not_one_per_pair() -> None:
    """3,000 members stalled at once: the close is a loop over the crowd, so it finishes
    quickly and under a shallow stack (a recursion or an O(N^2) sweep would not)."""
    hub = make_hub()
    keep = VirtualClient(hub, "big")
    stalled = [VirtualClient(hub, "big") for _ in range(3000)]
    for client in [keep, *stalled]:
        client.outbox.take()
    for i, client in enumerate(stalled):
        # Half cannot take the message; the other half can, but not the 1,500 leaves after it.
        leave_room(client.outbox, 500 if i % 2 else 700)
    with shallow_stack():
        keep.send_text(json.dumps("z" * 600))
    assert list(hub.channels["big"].members) == [keep.uid]
    frames = keep.received()
    assert all(f.get("type") == "leave" for f in frames), "the sender hears the leaves only"
    totals = [f["total"] for f in frames if f.get("type") == "leave"]
    assert totals == list(range(3000, 0, -1))


def test_a_keepalive_ping_that_overflows_closes_that_member_and_the_others_carry_on() -> None:
    """The tick path: a ping queued for a member whose outbox is full makes it a slow
    consumer; its leave reaches the others (the old relay let this escape serve())."""
    hub = make_hub("[limits]\noutbound_buffer_bytes = 4096\nping_interval = 5.0")
    full, _ = open_ws(hub, CHANNEL)
    others = [open_ws(hub, CHANNEL)[0] for _ in range(3)]
    VirtualClient(hub, "crowd")
    for peer in [full, *others]:
        peer.drain()
    leave_room(full.conn.outbox, 1)  # `full` stopped reading: no room left for a ping
    assert full.conn.state is State.WEBSOCKET
    clock = hub.clock
    assert isinstance(clock, FakeClock)
    clock.advance(6.0)
    with shallow_stack():
        for peer in [full, *others]:
            peer.conn.tick(clock.monotonic())
    assert full.conn.state is State.CLOSING and full.conn.close_code == 1008
    for peer in others:
        kinds = [f.json().get("type") for f in parse_frames(peer.drain()) if f.opcode == OP_TEXT]
        assert kinds == ["leave"]


def test_pongs_count_against_the_outbound_bound() -> None:
    """A peer that pings and never reads is closed as a slow consumer once its pongs pass
    the bound; after that nothing more is queued for it, however long it goes on."""
    hub = make_hub("[limits]\noutbound_buffer_bytes = 65536")
    flooder, _ = open_ws(hub, CHANNEL)
    watcher, _ = open_ws(hub, CHANNEL)
    watcher.drain()
    batch = ping(b"p" * 125) * 100
    for _ in range(100):  # 10,000 pings, 1.3 MB of pongs owed
        flooder.feed(batch)
        assert flooder.conn.outbox.size <= 65536 + 127 * 100
    conn = flooder.conn
    assert conn.state is State.CLOSING and conn.close_code == 1008
    assert not hub.channels["crowd"].members.get(conn.member.uid if conn.member else "")
    assert [f.json()["type"] for f in parse_frames(watcher.drain())] == ["leave"]
    frames = parse_frames(flooder.drain())
    assert frames[-1].opcode == OP_CLOSE and frames[-1].close_code == 1008
    assert all(f.opcode in (OP_PONG, OP_TEXT, OP_CLOSE) for f in frames)


def test_while_over_the_bound_the_transport_is_told_not_to_read() -> None:
    hub = make_hub("[limits]\noutbound_buffer_bytes = 2048")
    peer, _ = open_ws(hub, "/c/room?echo")
    assert peer.conn.reading
    peer.feed(text(json.dumps("q" * 1500)))
    assert peer.conn.reading  # 1.5 kB of echo waiting: under the bound
    peer.feed(ping(b"r" * 125) * 5)
    # Over the bound: a slow consumer, and no more input wanted until the outbox drains.
    assert peer.conn.close_code == 1008
    peer.drain()
    assert peer.conn.reading


def test_pipelined_requests_are_answered_one_at_a_time() -> None:
    """1,000 pipelined requests in one read: one answer is queued, and the next only
    after the transport has written it (so a client that never reads is owed one answer)."""
    hub = make_hub()
    peer = Peer(hub)
    peer.feed(request("GET", "/health") * 1000)
    conn = peer.conn
    first = conn.outbox.size
    assert 0 < first < 300 and not conn.reading
    conn.resume()  # not written yet: nothing happens
    assert conn.outbox.size == first and not conn.reading
    data = conn.outbox.view()
    conn.outbox.consume(len(data))
    conn.resume()
    assert 0 < conn.outbox.size <= first
    responses = parse_responses(data + peer.drain())
    assert len(responses) == 1000 and all(r.status == 200 for r in responses)
    assert conn.reading and conn.state is State.HTTP


@pytest.mark.parametrize("count", [1, 2, 50])
def test_answers_keep_request_order(count: int) -> None:
    hub = make_hub()
    peer = Peer(hub)
    peer.feed((request("GET", "/version") + request("GET", "/nope")) * count)
    statuses = [r.status for r in parse_responses(peer.drain())]
    assert statuses == [200, 404] * count
