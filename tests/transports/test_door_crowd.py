"""A crowd of stalled members behind every front door: the promise holds inside other
people's servers too.

300 members of one channel stop reading (tiny receive windows) while another member
broadcasts 100 KB messages; three live members read everything. On every door the live
members get every message once and in order, with one leave per stalled member and totals
counting down, and the stalled members are gone from the channel. (The native server's
version at full scale, 1,000 stalled, is in test_survival.py.)
"""

from __future__ import annotations

import json
import socket
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest
from doors import Relay, health, raw_peer
from rawws import PING, PONG, TEXT, RawPeer, _SmallWindowSocket, frame, text

pytestmark = [pytest.mark.anyio, pytest.mark.doors]

STALLED = 300
LIVE = 3
MESSAGES = 60  # at most; the broadcast goes on until every stalled member is gone
PAD = "x" * 100_000


async def _stalled_member(stack: AsyncExitStack, port: int) -> None:
    """A member with a tiny receive window and real networks' segment size (loopback's
    64 KB segments would let the kernel buffer megabytes for it), which never reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1460)
    sock.setblocking(False)
    try:
        sock.connect(("127.0.0.1", port))
    except BlockingIOError:
        await anyio.wait_writable(sock)
    peer = RawPeer(_SmallWindowSocket(sock))
    stack.push_async_callback(peer.aclose)
    status, _ = await peer.upgrade("/c/crowd")
    assert status == 101


async def _next_json(peer: RawPeer, timeout: float = 30) -> dict[str, Any]:
    """The next data frame, answering the server's pings on the way (ASGI servers ping)."""
    while True:
        opcode, payload = await peer.read_frame(timeout)
        if opcode == PING:
            await peer.send(frame(PONG, payload))
        elif opcode == TEXT:
            value: dict[str, Any] = json.loads(payload)
            return value
        elif opcode != PONG:
            raise AssertionError(f"a live member got opcode {opcode}: {payload[:60]!r}")


async def _read_all(peer: RawPeer, seqs: list[int], totals: list[int], progress: list[anyio.Event], i: int) -> None:
    while True:  # until the test is done with it
        value = await _next_json(peer)
        if value.get("type") == "leave":
            totals.append(value["total"])
        elif "message" in value:
            seqs.append(value["message"]["seq"])
        progress[i].set()


async def test_stalled_members_are_dropped_and_the_live_ones_get_everything(relay: Relay) -> None:
    async with AsyncExitStack() as stack:
        for _ in range(STALLED):
            await _stalled_member(stack, relay.port)
        live = []
        for _ in range(LIVE):
            peer = await stack.enter_async_context(raw_peer(relay.port))
            assert (await peer.upgrade("/c/crowd"))[0] == 101
            live.append(peer)
        sender = await stack.enter_async_context(raw_peer(relay.port))
        assert (await sender.upgrade("/c/crowd"))[0] == 101
        total = STALLED + LIVE + 1
        with anyio.fail_after(30):
            while (await health(relay.port))["connections"] < total:
                await anyio.sleep(0.05)
        for peer in live:  # the join storm up to here is not what this test is about
            while (await _next_json(peer, timeout=10))["total"] < total:
                pass
        seen: list[tuple[list[int], list[int]]] = [([], []) for _ in live]
        progress = [anyio.Event() for _ in live]
        sent = 0
        with anyio.move_on_after(60) as scope:
            async with anyio.create_task_group() as tg:
                for i, (peer, (seqs, totals)) in enumerate(zip(live, seen, strict=True)):
                    tg.start_soon(_read_all, peer, seqs, totals, progress, i)
                # Paced, one message at a time until every stalled member is gone: the live
                # members keep up, the stalled ones fall behind and overflow.
                while sent < MESSAGES and not all(len(totals) == STALLED for _, totals in seen):
                    await sender.send(text(json.dumps({"seq": sent, "pad": PAD})))
                    sent += 1
                    for i, (seqs, _) in enumerate(seen):
                        while len(seqs) < sent:
                            progress[i] = anyio.Event()
                            await progress[i].wait()
                    await anyio.sleep(0.05)  # the leaves that message caused
                tg.cancel_scope.cancel()
        assert not scope.cancelled_caught, f"not done in 60 s: {[(len(a), len(b)) for a, b in seen]}"
        for seqs, totals in seen:
            assert seqs == list(range(sent)), f"lost, doubled or reordered: {seqs}"
            assert totals == list(range(total - 1, LIVE, -1)), f"leave totals {totals[:3]}...{totals[-3:]}"
        assert (await health(relay.port))["connections"] == LIVE + 1
