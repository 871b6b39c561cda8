"""A crowded channel over real sockets, on asyncio and trio: nothing lost, nothing doubled.

200 members join one channel, then each broadcasts 20 messages at once. Every member must
receive every broadcast of every OTHER member exactly once, in each sender's order
(PROTOCOL.md section 7): 200 * 199 * 20 = 796,000 deliveries per run.

The members are small raw WebSocket clients (one TCP stream each, frames parsed from a
buffer in bulk), so the test measures the relay rather than a client library.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import msgspec
import pytest
from rawws import PONG, frame, text

from conftest import running
from relaycore import Config

pytestmark = pytest.mark.anyio

MEMBERS = 200
MESSAGES = 20
DEADLINE = 60.0
CHANNEL = "/c/crowd"
EXPECTED = (MEMBERS - 1) * MESSAGES

# All members connect from 127.0.0.1 at once: lift the per-address connection rate only.
CONFIG = b"[limits]\nconnections_per_second_per_ip = 100000.0"

_decode: Callable[[bytes | memoryview], Any] = msgspec.json.Decoder().decode


class LoadMember:
    """One raw WebSocket member: a TCP stream and a buffer of unparsed server bytes."""

    def __init__(self, index: int, stream: anyio.abc.SocketStream) -> None:
        self.index = index
        self.stream = stream
        self.buffer = bytearray()
        self.uid = ""
        #: What the member is doing, for the timeout report.
        self.stage = "connecting"
        self.relays = 0
        self.next_seq = [0] * MEMBERS
        #: Pings from the server, answered with pongs on the next read.
        self.pings: list[bytes] = []

    @classmethod
    async def join(cls, index: int, port: int) -> LoadMember:
        stream = await anyio.connect_tcp("127.0.0.1", port)
        member = cls(index, stream)
        key = base64.b64encode(os.urandom(16)).decode()
        await stream.send(
            (
                f"GET {CHANNEL} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        member.stage = "handshake"
        while b"\r\n\r\n" not in member.buffer:
            await member._receive()
        head, _, rest = bytes(member.buffer).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), f"member {index}: handshake refused: {head!r}"
        member.buffer = bytearray(rest)
        return member

    async def _receive(self) -> None:
        try:
            chunk = await self.stream.receive(262144)
        except (anyio.EndOfStream, anyio.BrokenResourceError) as exc:
            raise AssertionError(f"member {self.index}: the server closed the connection ({self.stage})") from exc
        self.buffer += chunk

    async def frames(self) -> list[Any]:
        """Every complete data frame in the buffer, JSON-decoded; waits for one if there is none."""
        while True:
            frames = self._parse()
            if self.pings:
                pongs = b"".join(frame(PONG, payload) for payload in self.pings)
                self.pings.clear()
                await self.stream.send(pongs)
            if frames:
                return frames
            await self._receive()

    def _parse(self) -> list[Any]:
        buf = self.buffer
        end = len(buf)
        pos = 0
        out = []
        with memoryview(buf) as view:
            while end - pos >= 2:
                first, size = buf[pos], buf[pos + 1]
                start = pos + 2
                if size == 126:
                    size, start = int.from_bytes(buf[pos + 2 : pos + 4]), pos + 4
                elif size == 127:
                    size, start = int.from_bytes(buf[pos + 2 : pos + 10]), pos + 10
                if start > end or start + size > end:
                    break
                if first == 0x81:  # FIN + text: every data frame of the relay
                    out.append(_decode(view[start : start + size]))
                elif first == 0x89:  # ping (keepalive): answered, not counted
                    self.pings.append(bytes(view[start : start + size]))
                else:
                    payload = bytes(view[start : start + size])
                    raise AssertionError(f"member {self.index}: frame 0x{first:02x} {payload!r} ({self.stage})")
                pos = start + size
        del buf[:pos]
        return out

    async def wait_for_everyone(self) -> None:
        """Read the self-join, then join events until the channel holds every member."""
        self.stage = "waiting for its self-join"
        frames = await self.frames()
        hello = frames[0]
        assert hello.get("type") == "join" and hello.get("self") is True, f"member {self.index}: first {hello}"
        self.uid = hello["uid"]
        total = hello["total"]
        self.stage = "waiting for the last join"
        pending = frames[1:]
        while True:
            for event in pending:
                assert event.get("type") == "join" and "self" not in event, f"member {self.index}: {event}"
                assert event["total"] > total, f"member {self.index}: totals go back: {event} after {total}"
                total = event["total"]
            if total == MEMBERS:
                return
            pending = await self.frames()

    async def broadcast(self) -> None:
        self.stage = "sending"
        burst = b"".join(text(json.dumps({"from": self.index, "seq": seq})) for seq in range(MESSAGES))
        await self.stream.send(burst)

    async def receive_every_relay(self, uids: list[str]) -> None:
        """Read until every other member's every message came, checking each as it comes."""
        self.stage = "receiving"
        me, next_seq = self.index, self.next_seq
        while self.relays < EXPECTED:
            for envelope in await self.frames():
                message = envelope.get("message")
                if "type" in envelope or not isinstance(message, dict):
                    raise AssertionError(f"member {me}: expected a relay, got {envelope}")
                sender, seq = message["from"], message["seq"]
                assert sender != me, f"member {me} received its own broadcast {message} without echo"
                assert envelope["uid"] == uids[sender] and len(envelope) == 3, f"member {me}: envelope {envelope}"
                assert seq == next_seq[sender], (
                    f"member {me}: from member {sender} got seq {seq}, expected {next_seq[sender]} "
                    "(lost, doubled or out of order)"
                )
                next_seq[sender] = seq + 1
                self.relays += 1
        self.stage = "done"

    async def expect_nothing_more(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            extra = await self.frames()
            raise AssertionError(f"member {self.index}: {len(extra)} frame(s) after the last relay: {extra[:3]}")


def progress_report(members: list[LoadMember | None]) -> str:
    stages: dict[str, int] = {}
    for member in members:
        stage = "connecting" if member is None else member.stage
        stages[stage] = stages.get(stage, 0) + 1
    counts = [member.relays for member in members if member is not None]
    fewest = min(counts) if counts else 0
    return f"stages {stages}; fewest relays received {fewest} of {EXPECTED}"


async def test_every_member_gets_every_other_members_broadcasts_once_and_in_order() -> None:
    members: list[LoadMember | None] = [None] * MEMBERS
    phases: dict[str, float] = {}
    started = time.perf_counter()
    async with running(Config.from_toml(CONFIG)) as server:
        try:
            with anyio.move_on_after(DEADLINE) as deadline:
                async with anyio.create_task_group() as tg:

                    async def join(index: int) -> None:
                        members[index] = await LoadMember.join(index, server.port)

                    for index in range(MEMBERS):
                        tg.start_soon(join, index)
                joined = [member for member in members if member is not None]
                assert len(joined) == MEMBERS

                async with anyio.create_task_group() as tg:
                    for member in joined:
                        tg.start_soon(member.wait_for_everyone)
                phases["join"] = time.perf_counter() - started
                uids = [member.uid for member in joined]
                assert len(set(uids)) == MEMBERS, "uids must be unique within the channel"

                async with anyio.create_task_group() as tg:
                    for member in joined:
                        tg.start_soon(member.broadcast)
                    for member in joined:
                        tg.start_soon(member.receive_every_relay, uids)
                phases["relay"] = time.perf_counter() - started - phases["join"]

                async with anyio.create_task_group() as tg:
                    for member in joined:
                        tg.start_soon(member.expect_nothing_more, 0.2)
        finally:
            for opened in members:
                if opened is not None:
                    await opened.stream.aclose()
    if deadline.cancelled_caught:
        pytest.fail(f"not done within {DEADLINE:.0f} s: {progress_report(members)}")
    total = time.perf_counter() - started
    join_time, relay_time = phases["join"], phases["relay"]
    print(f"\n{MEMBERS} x {MESSAGES}: join {join_time:.2f} s, relay {relay_time:.2f} s, total {total:.2f} s")
