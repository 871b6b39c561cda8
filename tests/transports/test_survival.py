"""Survival at public-relay scale, over real sockets on 127.0.0.1, on asyncio and trio.

What these tests hold the relay to (docs/limits.md):

* a crowd of stalled readers is cut off as slow consumers (close 1008 "slow consumer"),
  each with its leave announced, without the live members waiting for them and without
  the relay falling over when a thousand of them overflow at once;
* a client that writes and never reads (pings, or pipelined HTTP requests) cannot make
  the relay's memory grow: every byte owed to a connection counts against its outbound
  bound, and a peer over it is no longer read;
* running out of file descriptors pauses accepting, says so once, and recovers as
  descriptors free up;
* fifteen thousand connections opened, used and closed, round after round, leave the
  relay's memory where the first round (after a warm-up round) left it.

The relay runs in this process where only its behaviour matters, and as a child process
(``relayproc``) where its memory, its descriptor limit or its sheer number of sockets is
the point. Each test prints its figures (run pytest with ``-s`` to see them).
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import statistics
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from rawws import CLOSE, PING, PONG, TEXT, close_frame, frame, text, upgrade_request
from relayproc import RelayProcess, raise_open_file_limit, relay_process

from conftest import make_config, running
from core._frames import take_frames

pytestmark = pytest.mark.anyio

MB = 1024 * 1024
_decode: Callable[[bytes | memoryview], Any] = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


async def open_socket(port: int, *, rcvbuf: int | None = None, mss: int | None = None) -> socket.socket:
    """A connected non-blocking TCP socket; ``rcvbuf`` and ``mss`` are set before connecting."""
    sock = socket.socket()
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if mss is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
        sock.setblocking(False)
        err = sock.connect_ex(("127.0.0.1", port))
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, os.strerror(err))
        with anyio.fail_after(10):
            await anyio.wait_writable(sock)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
    except BaseException:
        sock.close()
        raise
    return sock


async def send_all(sock: socket.socket, data: bytes, timeout: float = 10.0) -> None:
    """Write all of ``data``; fail if the relay has not taken it within ``timeout`` seconds."""
    view = memoryview(data)
    with anyio.fail_after(timeout):
        while view:
            await anyio.wait_writable(sock)
            try:
                view = view[sock.send(view) :]
            except BlockingIOError:
                continue


class Member:
    """One raw WebSocket client: a socket, what the relay sent it, and how it ended.

    A *live* member runs :meth:`pump` in a task: it reads everything, keeps each text
    frame decoded in :attr:`frames` and answers pings. A *stalled* member never reads
    after its handshake until :meth:`drain_to_close`.
    """

    def __init__(self, name: str, sock: socket.socket) -> None:
        self.name = name
        self.sock = sock
        self.buffer = bytearray()
        self.frames: list[Any] = []
        self.relays = 0  #: relayed messages among the frames
        self.close_code: int | None = None
        self.after_close = 0  #: frames that came after the close frame (there must be none)
        self.ended = ""  #: why the reading stopped ("close frame", "EOF", "reset")
        self._changed = anyio.Event()

    @classmethod
    async def join(
        cls, name: str, port: int, path: str, *, rcvbuf: int | None = None, mss: int | None = None
    ) -> Member:
        sock = await open_socket(port, rcvbuf=rcvbuf, mss=mss)
        member = cls(name, sock)
        try:
            with anyio.fail_after(10):
                await send_all(sock, upgrade_request(path))
                while b"\r\n\r\n" not in member.buffer:
                    assert await member._receive(), f"{name}: closed during the handshake: {member.buffer!r}"
        except BaseException:
            member.close()
            raise
        head, _, rest = bytes(member.buffer).partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101 "):
            member.close()
            raise AssertionError(f"{name}: handshake refused: {head!r}")
        member.buffer = bytearray(rest)
        return member

    async def _receive(self) -> bool:
        await anyio.wait_readable(self.sock)
        try:
            data = self.sock.recv(262144)
        except BlockingIOError:
            return True
        except ConnectionResetError:
            self.ended = "reset"
            return False
        if not data:
            self.ended = "EOF"
            return False
        self.buffer += data
        return True

    def _take(self) -> list[tuple[int, bytes]]:
        frames = take_frames(self.buffer)
        for n, (opcode, payload) in enumerate(frames):
            if self.close_code is not None:
                self.after_close += len(frames) - n
                break
            if opcode == TEXT:
                event = _decode(payload)
                self.frames.append(event)
                if "message" in event:
                    self.relays += 1
            elif opcode == CLOSE:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.ended = "close frame"
        return frames

    async def pump(self) -> None:
        """Read until a close frame or the end of the stream; answer pings."""
        try:
            while True:
                pongs = [frame(PONG, payload) for opcode, payload in self._take() if opcode == PING]
                self._wake()
                if pongs:
                    await send_all(self.sock, b"".join(pongs))
                if self.close_code is not None or not await self._receive():
                    break
        except (anyio.ClosedResourceError, OSError):
            self.ended = self.ended or "socket closed"
        finally:
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def until(self, predicate: Callable[[Member], bool], timeout: float, what: str) -> None:
        """Wait (a pumping member) until ``predicate(self)``; fail with ``what`` after ``timeout``."""
        try:
            with anyio.fail_after(timeout):
                while not predicate(self):
                    if self.ended:
                        raise AssertionError(
                            f"{self.name}: reading ended ({self.ended}, {self.close_code}) before {what}"
                        )
                    await self._changed.wait()
        except TimeoutError:
            last = [_short(event) for event in self.frames[-3:]]
            raise AssertionError(f"{self.name}: {what} not within {timeout} s; last frames {last}") from None

    async def drain_to_close(self, timeout: float) -> None:
        """Read (a stalled member, at last) up to the close frame or the end of the stream."""
        with anyio.fail_after(timeout):
            self._take()
            while self.close_code is None and await self._receive():
                self._take()

    async def send(self, data: bytes) -> None:
        try:
            await send_all(self.sock, data)
        except OSError as exc:
            raise AssertionError(
                f"{self.name}: the relay dropped the connection while it sent ({exc}); "
                f"its reading ended with {self.ended or 'nothing'} (close code {self.close_code})"
            ) from exc

    def close(self) -> None:
        anyio.notify_closing(self.sock)
        self.sock.close()


def _short(event: Any) -> Any:
    """An event for an assertion message, a relayed 100 KB payload cut short."""
    if isinstance(event, dict) and isinstance(event.get("message"), dict):
        return {**event, "message": {k: v for k, v in event["message"].items() if k != "pad"}}
    return event


def close_all(members: list[Member]) -> None:
    for member in members:
        member.close()


# -- 1. a stalled crowd ------------------------------------------------------------------

STALLED = 1000
LIVE = 5
MESSAGES = 30
PAD = "x" * 100_000  # a ~100 KB message: the default max_message_bytes is 102,400
CROWD = "/c/crowd"
# The stalled readers announce an internet-sized MSS: over loopback's 64 KB segments the
# kernel would hold ~3 MB in front of every stalled reader (3 GB for the crowd), where
# across a real network it holds ~100 kB and the relay's own outbound bound is what counts.
STALLED_MSS = 1460
CROWD_DEADLINE = 55.0


async def test_a_crowd_of_stalled_readers_is_cut_off_and_the_live_ones_get_everything() -> None:
    raise_open_file_limit()
    config = make_config(
        "[limits]\nmessages_per_second = 100000\nmessages_burst = 100000\n"
        "close_timeout = 60\nping_interval = 120\nping_timeout = 120\n"
    )
    started = time.perf_counter()
    figures: dict[str, float] = {}
    live: list[Member] = []
    stalled: list[Member] = []
    with anyio.fail_after(CROWD_DEADLINE):  # the whole scenario, whatever each wait allows
        async with running(config) as server, anyio.create_task_group() as pumps:
            try:
                for n in range(LIVE):
                    member = await Member.join(f"live member {n}", server.port, CROWD)
                    live.append(member)
                    pumps.start_soon(member.pump)

                async def join_stalled(first: int, count: int) -> None:
                    for n in range(first, first + count):
                        stalled.append(
                            await Member.join(f"stalled member {n}", server.port, CROWD, rcvbuf=4096, mss=STALLED_MSS)
                        )

                with anyio.fail_after(30):
                    async with anyio.create_task_group() as tg:
                        for first in range(0, STALLED, STALLED // 20):
                            tg.start_soon(join_stalled, first, STALLED // 20)
                broadcaster = await Member.join("the broadcaster", server.port, CROWD)
                live.append(broadcaster)
                pumps.start_soon(broadcaster.pump)
                everyone = LIVE + STALLED + 1
                with anyio.fail_after(40):
                    for member in live:
                        await member.until(
                            lambda m: bool(m.frames) and m.frames[-1].get("total") == everyone,
                            30,
                            f"the join notices up to total {everyone}",
                        )
                figures["join"] = time.perf_counter() - started

                # The broadcast, paced on the live readers (they share this process with the
                # relay): at most three messages in flight to the slowest, so that only the
                # stalled members fall behind.
                sent_at = time.perf_counter()
                listeners = live[:LIVE]
                for seq in range(MESSAGES):
                    for member in listeners:
                        await member.until(lambda m, seq=seq: m.relays >= seq - 2, 20, f"message {seq - 3}")
                    await broadcaster.send(text(_encode({"seq": seq, "pad": PAD})))
                for member in live:
                    want = MESSAGES if member is not broadcaster else 0
                    await member.until(
                        lambda m, want=want: (
                            m.relays >= want and sum(e.get("type") == "leave" for e in m.frames) >= STALLED
                        ),
                        30,
                        f"all {want} messages and {STALLED} leaves",
                    )
                figures["broadcast"] = time.perf_counter() - sent_at

                # Where the leaves fell, for the report: after which message, how many.
                after_message: dict[int, int] = {}
                latest = -1
                for event in live[0].frames:
                    if "message" in event:
                        latest = event["message"]["seq"]
                    elif event.get("type") == "leave":
                        after_message[latest] = after_message.get(latest, 0) + 1
                for member in live:
                    check_live_member(member, broadcaster, everyone, MESSAGES if member is not broadcaster else 0)

                # The relay is still there: a newcomer joins, and hears the next broadcast.
                newcomer = await Member.join("the newcomer", server.port, CROWD)
                live.append(newcomer)
                pumps.start_soon(newcomer.pump)
                await newcomer.until(lambda m: bool(m.frames), 5, "its self-join")
                hello = newcomer.frames[0]
                assert hello.get("self") is True and hello["total"] == LIVE + 2, f"newcomer's self-join: {hello}"
                await broadcaster.send(text(_encode({"seq": "after"})))
                await newcomer.until(lambda m: m.relays == 1, 5, "the broadcast after the crowd left")
                assert newcomer.frames[-1]["message"] == {"seq": "after"}

                # Each stalled member, reading at last, finds 1008 before the end of the stream,
                # after whatever had already reached its socket (a run of messages from seq 0).
                drained_at = time.perf_counter()

                async def drain(first: int, count: int) -> None:
                    for member in stalled[first : first + count]:
                        await member.drain_to_close(20)

                with anyio.fail_after(60):
                    async with anyio.create_task_group() as tg:
                        for first in range(0, STALLED, STALLED // 20):
                            tg.start_soon(drain, first, STALLED // 20)
                figures["drain"] = time.perf_counter() - drained_at
                seen = []
                for member in stalled:
                    assert member.close_code == 1008, (
                        f"{member.name}: expected a close frame with 1008 before the end of the stream, "
                        f"got {member.ended} (code {member.close_code}) after {len(member.frames)} frames"
                    )
                    assert not member.after_close, f"{member.name}: {member.after_close} frame(s) after the close frame"
                    seqs = [e["message"]["seq"] for e in member.frames if "message" in e]
                    assert seqs == list(range(len(seqs))), f"{member.name}: messages out of order or with gaps {seqs}"
                    seen.append(len(seqs))
                pumps.cancel_scope.cancel()
            finally:
                close_all(live + stalled)
    total = time.perf_counter() - started
    print(
        f"\n{STALLED} stalled + {LIVE} live, {MESSAGES} x {len(PAD) // 1000} kB: join {figures['join']:.2f} s, "
        f"broadcast and {STALLED} leaves {figures['broadcast']:.2f} s, stalled drained {figures['drain']:.2f} s, "
        f"total {total:.2f} s; messages a stalled member had received before its close: "
        f"{min(seen)}..{max(seen)}; leaves after message (seq: count) {after_message}"
    )


def check_live_member(member: Member, broadcaster: Member, everyone: int, messages: int) -> None:
    """Every message once and in order, and every leave with a total one below the last."""
    sender = broadcaster.frames[0]["uid"]
    events = member.frames
    # Up to the last join notice: the crowd joining.
    last_join = max(i for i, e in enumerate(events) if e.get("type") == "join")
    after = events[last_join + 1 :]
    seqs = [e["message"]["seq"] for e in after if "message" in e]
    assert seqs == list(range(messages)), f"{member.name}: message seqs {seqs} (lost, doubled or out of order)"
    for e in after:
        if "message" in e:
            assert e["uid"] == sender and "type" not in e, f"{member.name}: envelope {_short(e)}"
    leaves = [e for e in after if e.get("type") == "leave"]
    assert len(leaves) == STALLED, f"{member.name}: {len(leaves)} leaves, expected {STALLED}"
    totals = [e["total"] for e in leaves]
    expected = list(range(everyone - 1, everyone - 1 - STALLED, -1))
    if totals != expected:
        bad = next(i for i, (got, want) in enumerate(zip(totals, expected, strict=True)) if got != want)
        raise AssertionError(f"{member.name}: leave {bad} has total {totals[bad]}, expected {expected[bad]}")
    others = [e for e in after if "message" not in e and e.get("type") != "leave"]
    assert not others, f"{member.name}: unexpected frames {others[:3]}"


# -- 2 and 3. a client that writes and never reads ------------------------------------

FLOOD_UNITS = 200_000
FLOOD_TIME_LIMIT = 20.0
#: The flood ends when the relay has taken nothing for this long: it stopped reading.
FLOOD_STALL = 3.0
RSS_GROWTH_LIMIT = 8 * MB
# A long close_timeout: the relay keeps a closed flooder's socket until the flooder reads.
FLOOD_CONFIG = "[limits]\nconnections_per_second_per_ip = 100000.0\nclose_timeout = 30\n"
PING_125 = frame(PING, b"p" * 125)  # masked, as every client frame
HEALTH_REQUEST = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


class Flood:
    """What a flood did: how much the relay took, for how long, and how it ended."""

    def __init__(self) -> None:
        self.units = 0
        self.seconds = 0.0
        self.ended = "not started"
        self.done = anyio.Event()


async def flood(sock: socket.socket, unit: bytes, units: int, result: Flood) -> None:
    """Write ``units`` copies of ``unit`` as fast as the relay takes them, never reading.

    Stops early when the relay drops the connection, when it has taken nothing for
    FLOOD_STALL seconds (it stopped reading), or after FLOOD_TIME_LIMIT seconds.
    """
    per_batch = 1000
    batch = unit * per_batch
    sent_bytes, wanted = 0, len(unit) * units
    started = time.monotonic()
    result.ended = "all written"
    try:
        view = memoryview(batch)
        while sent_bytes < wanted:
            now = time.monotonic()
            if now - started > FLOOD_TIME_LIMIT:
                result.ended = f"time limit ({FLOOD_TIME_LIMIT:.0f} s)"
                break
            with anyio.move_on_after(FLOOD_STALL) as stalled:
                await anyio.wait_writable(sock)
            if stalled.cancelled_caught:
                result.ended = f"the relay took nothing for {FLOOD_STALL:.0f} s (it stopped reading)"
                break
            offset = sent_bytes % len(batch)
            chunk = view[offset : offset + min(len(batch) - offset, wanted - sent_bytes)]
            try:
                sent_bytes += sock.send(chunk)
            except BlockingIOError:
                continue
            except OSError as exc:
                result.ended = f"the relay dropped the connection ({exc.strerror})"
                break
    finally:
        result.units = sent_bytes // len(unit)
        result.seconds = time.monotonic() - started
        result.done.set()


async def warm_up(port: int, prelude: bytes, unit: bytes, units: int, answer: bytes) -> None:
    """A well-behaved client sends ``units`` units and reads every answer (``answer``
    occurs once in each): the relay's code paths and allocator are warm before measuring."""
    sock = await open_socket(port)
    try:
        with anyio.fail_after(20):
            await send_all(sock, prelude)
            received = bytearray()

            async def read() -> None:
                while received.count(answer) < units:
                    await anyio.wait_readable(sock)
                    data = sock.recv(262144)
                    assert data, f"warm-up: the relay closed after {received.count(answer)} answers"
                    received.extend(data)

            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                await send_all(sock, unit * units)
    finally:
        anyio.notify_closing(sock)
        sock.close()


class Probe:
    """Two members of another channel exchanging messages, and /health on fresh
    connections, for as long as a flood lasts: the latency each round trip took."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.health: list[float] = []

    async def run(self, relay: RelayProcess, a: Member, b: Member, until: anyio.Event, rounds: int = 5000) -> None:
        for n in range(rounds):
            if until.is_set():
                return
            sender, receiver = (a, b) if n % 2 == 0 else (b, a)
            expected = receiver.relays + 1
            started = time.perf_counter()
            await sender.send(text(_encode({"probe": n})))
            await receiver.until(lambda m, expected=expected: m.relays >= expected, 5, f"probe {n}")
            self.latencies.append(time.perf_counter() - started)
            assert receiver.frames[-1]["message"] == {"probe": n}, f"{receiver.name}: {receiver.frames[-1]}"
            if n % 10 == 0:
                started = time.perf_counter()
                health = await relay.health()
                self.health.append(time.perf_counter() - started)
                assert health["status"] == "ok", health
            await anyio.sleep(0.02)  # the probe's pace: 50 round trips a second at most

    def summary(self) -> str:
        lat = sorted(self.latencies)
        return (
            f"{len(lat)} round trips, median {statistics.median(lat) * 1000:.1f} ms, "
            f"max {lat[-1] * 1000:.1f} ms; {len(self.health)} /health, max {max(self.health) * 1000:.1f} ms"
        )


async def rss_sampler(relay: RelayProcess, peak: list[int], until: anyio.Event) -> None:
    while not until.is_set():
        peak[0] = max(peak[0], relay.rss())
        with anyio.move_on_after(0.05):
            await until.wait()
    peak[0] = max(peak[0], relay.rss())


async def flood_scenario(
    backend: str, directory: Path, label: str, prelude: bytes, unit: bytes, answer: bytes, close_code: int | None
) -> None:
    """The relay serves a chat while one client floods it with ``unit`` without reading.

    ``close_code``: what the flooder must find, after what reached it, when it reads at last.
    """
    async with relay_process(backend, directory, FLOOD_CONFIG) as relay, anyio.create_task_group() as pumps:
        members: list[Member] = []
        flooder: socket.socket | None = None
        try:
            for name in ("chat member A", "chat member B"):
                members.append(await Member.join(name, relay.port, "/c/chat"))
                pumps.start_soon(members[-1].pump)
            a, b = members
            await a.until(lambda m: len(m.frames) >= 2, 5, "B's join")
            await Probe().run(relay, a, b, anyio.Event(), rounds=20)
            await warm_up(relay.port, prelude, unit, 5000, answer)
            before = relay.rss()

            flooder = await open_socket(relay.port, rcvbuf=4096, mss=STALLED_MSS)
            await send_all(flooder, prelude)
            if prelude.startswith(b"GET /c/"):  # read the handshake answer, and never again
                head = b""
                with anyio.fail_after(5):
                    while b"\r\n\r\n" not in head:
                        await anyio.wait_readable(flooder)
                        byte = flooder.recv(1)
                        assert byte, f"the flooder's handshake: closed after {head!r}"
                        head += byte
                assert head.startswith(b"HTTP/1.1 101 "), f"the flooder's handshake: {head!r}"
            result = Flood()
            probe = Probe()
            peak = [before]
            with anyio.fail_after(FLOOD_TIME_LIMIT + 30):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(rss_sampler, relay, peak, result.done)
                    tg.start_soon(probe.run, relay, a, b, result.done)
                    await flood(flooder, unit, FLOOD_UNITS, result)
            after = relay.rss()
            assert relay.alive(), f"the relay exited during the {label} flood:\n{relay.log_tail()}"
            # What the flooder finds when it reads at last.
            reader = Member("the flooder", flooder)
            flooder = None
            members.append(reader)
            if close_code is not None:
                with contextlib.suppress(TimeoutError):
                    await reader.drain_to_close(10)
            # Still serving, after the flood.
            await Probe().run(relay, a, b, anyio.Event(), rounds=4)
            growth = max(peak[0], after) - before
            print(
                f"\n{label} ({backend} relay): {result.units} of {FLOOD_UNITS} sent in {result.seconds:.1f} s, "
                f"ended: {result.ended}; relay RSS before {before / MB:.1f} MB, peak {peak[0] / MB:.1f} MB, "
                f"after {after / MB:.1f} MB (growth {growth / MB:+.1f} MB); "
                + (
                    f"the flooder then read up to: {reader.ended or 'nothing'} ({reader.close_code}); "
                    if close_code
                    else ""
                )
                + f"chat meanwhile: {probe.summary()}"
            )
            assert probe.latencies, "the chat made no round trip during the flood"
            assert max(probe.latencies) < 2.0, f"a chat round trip took {max(probe.latencies):.2f} s during the flood"
            assert growth < RSS_GROWTH_LIMIT, (
                f"{label}: the relay's RSS grew by {growth / MB:.1f} MB (before {before / MB:.1f} MB, "
                f"peak {peak[0] / MB:.1f} MB) from a client that never reads; limit {RSS_GROWTH_LIMIT / MB:.0f} MB "
                f"({result.units} units taken in {result.seconds:.1f} s, ended: {result.ended})"
            )
            if close_code is not None:
                assert reader.close_code == close_code, (
                    f"the flooder, reading at last, expected a close frame with {close_code} before the end of "
                    f"the stream; got {reader.ended or 'nothing within 10 s'} (code {reader.close_code})"
                )
            pumps.cancel_scope.cancel()
        finally:
            if flooder is not None:
                anyio.notify_closing(flooder)
                flooder.close()
            close_all(members)


async def test_a_ping_flood_from_a_client_that_never_reads_does_not_grow_the_relay(
    anyio_backend: str, tmp_path: Path
) -> None:
    # Owed more pongs than outbound_buffer_bytes, the flooder is a slow consumer: 1008.
    pong = bytes([0x80 | PONG, 125])
    await flood_scenario(anyio_backend, tmp_path, "ping flood", upgrade_request("/c/flood"), PING_125, pong, 1008)


async def test_pipelined_requests_from_a_client_that_never_reads_do_not_grow_the_relay(
    anyio_backend: str, tmp_path: Path
) -> None:
    # Answered one at a time, the flooder's requests simply wait: no close is required.
    label = "pipelined GET /health flood"
    await flood_scenario(anyio_backend, tmp_path, label, b"", HEALTH_REQUEST, b"HTTP/1.1 200 ", None)


# -- 4. out of file descriptors -----------------------------------------------------------

RELAY_NOFILE = 64
CROWDING = 150  # WebSocket upgrades, more than RELAY_NOFILE descriptors can hold
OUT_OF_FDS = "out of file descriptors"
ACCEPTING_AGAIN = "accepting again"


class Knocker:
    """A connection that sends its upgrade at once and waits, however long, to be served."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.member: Member | None = None
        self.served = anyio.Event()
        self.release = anyio.Event()
        self.failure = ""

    async def run(self, port: int) -> None:
        try:
            # Member.join's own bound is 10 s: waiting longer is this test's point.
            sock = await open_socket(port)
            member = self.member = Member(f"connection {self.index}", sock)
            await send_all(sock, upgrade_request(f"/c/fd-{self.index}"))
            while b"\r\n\r\n" not in member.buffer:
                if not await member._receive():
                    self.failure = f"closed before its handshake answer ({member.ended}): {member.buffer!r}"
                    return
            head, _, rest = bytes(member.buffer).partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 101 "):
                self.failure = f"handshake refused: {head!r}"
                return
            member.buffer = bytearray(rest)
            member._take()
            while not member.frames:
                if not await member._receive():
                    self.failure = f"closed before its self-join ({member.ended})"
                    return
                member._take()
            hello = member.frames[0]
            if hello.get("type") != "join" or hello.get("self") is not True or hello.get("total") != 1:
                self.failure = f"first frame is not its self-join: {hello}"
                return
            self.served.set()
            await self.release.wait()
        finally:
            self.served.set()  # served or failed: the waiter looks at .failure
            if self.member is not None:
                self.member.close()


async def test_running_out_of_descriptors_pauses_accepting_and_recovers(anyio_backend: str, tmp_path: Path) -> None:
    raise_open_file_limit()
    started = time.perf_counter()
    config = "[limits]\nconnections_per_second_per_ip = 100000.0\n"
    async with relay_process(anyio_backend, tmp_path, config, nofile=RELAY_NOFILE) as relay:
        knockers = [Knocker(n) for n in range(CROWDING)]
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for knocker in knockers:
                    tg.start_soon(knocker.run, relay.port)

                # Those the relay had descriptors for are served; then the count stays put.
                served, stable_since = -1, time.monotonic()
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    now_served = sum(k.served.is_set() for k in knockers)
                    if now_served != served:
                        served, stable_since = now_served, time.monotonic()
                    elif served and time.monotonic() - stable_since > 1.5:
                        break
                    await anyio.sleep(0.05)
                failures = [f"{k.index}: {k.failure}" for k in knockers if k.failure]
                assert not failures, f"connections failed while descriptors ran out: {failures[:5]}"
                first_served = [k for k in knockers if k.served.is_set()]
                waiting = [k for k in knockers if not k.served.is_set()]
                assert relay.alive(), f"the relay exited when descriptors ran out:\n{relay.log_tail()}"
                assert first_served, "no connection was served at all"
                assert waiting, f"all {CROWDING} connections were served under RLIMIT_NOFILE={RELAY_NOFILE}"
                warnings = relay.matching("WARNING", "")
                episode = relay.matching("WARNING", OUT_OF_FDS)
                assert len(episode) == 1 and len(warnings) == 1, (
                    f"expected exactly one WARNING containing {OUT_OF_FDS!r} while descriptors are out, "
                    f"got {len(episode)} such and {len(warnings)} WARNING lines in all, e.g. {warnings[:2]}"
                )
                short_at = time.perf_counter() - started

                # Free the descriptors: the waiting connections are served as they free up
                # (each lets its own go once served, so that all of them fit in turn).
                for knocker in first_served:
                    knocker.release.set()
                for knocker in waiting:
                    knocker.release.set()  # served, then closed at once
                with anyio.fail_after(30):
                    for knocker in waiting:
                        await knocker.served.wait()
                failures = [f"{k.index}: {k.failure}" for k in waiting if k.failure]
                assert not failures, f"waiting connections failed once descriptors freed up: {failures[:5]}"
                recovered_at = time.perf_counter() - started
        again = await relay.wait_for_line(
            lambda line: " INFO " in line and ACCEPTING_AGAIN in line, 5, f"INFO {ACCEPTING_AGAIN!r}"
        )
        await relay.wait_for_connections(0, 10, "after every connection closed")
        assert relay.alive()
        episodes = len(relay.matching("WARNING", OUT_OF_FDS))
        print(
            f"\nRLIMIT_NOFILE={RELAY_NOFILE} ({anyio_backend} relay): {len(first_served)} of {CROWDING} "
            f"served at first, the others waited; short of descriptors at {short_at:.2f} s, "
            f"all served by {recovered_at:.2f} s; "
            f"{episodes} shortage episode(s) logged in all; the first WARNING: {episode[0].split(' WARNING ')[1]!r}; "
            f"the first INFO: {again.split(' INFO ')[1]!r}"
        )


# -- 5. churn: fifteen thousand connections, again and again ---------------------------

SOAK_CONNECTIONS = 15_000
SOAK_CHANNEL_SIZE = 50  # every join is announced to the whole channel: keep channels small
SOAK_ROUNDS = 10 if os.environ.get("RELAYCORE_SOAK") == "1" else 3
SOAK_WINDOW = 1000  # handshakes in flight at once
SOAK_RSS_DRIFT = 8 * MB
SOAK_CONFIG = (
    "[limits]\nconnections_per_second_per_ip = 100000.0\nping_interval = 300\nping_timeout = 300\n"
    "[server]\nshutdown_grace = 2.0\n"
)
CLOSE_1000 = close_frame(1000)
_CONNECTING, _HANDSHAKE, _OPEN, _CLOSING, _DONE = range(5)


class SwarmConnection:
    __slots__ = ("buffer", "channel", "close_code", "got", "index", "position", "sock", "state", "total")

    def __init__(self, index: int, channel: int, sock: socket.socket) -> None:
        self.index = index
        self.channel = channel
        self.sock = sock
        self.buffer = bytearray()
        self.state = _CONNECTING
        self.position = 0  #: the total in its self-join: its place in the channel
        self.total = 0  #: the latest total it was told
        self.got = 0  #: broadcasts received this round
        self.close_code: int | None = None


class Swarm:
    """Thousands of raw WebSocket clients on one selector of their own, driven by one task.

    Per connection it costs a socket, a buffer and a few counters, so the relay's work,
    not the clients', sets the pace. Every frame is checked as it comes: the self-join
    first, then join notices with totals one up each time, then the round's broadcast.
    """

    def __init__(self, port: int, count: int, channel_size: int) -> None:
        self.port = port
        self.count = count
        self.channels = count // channel_size
        self.channel_size = channel_size
        self.selector = selectors.DefaultSelector()
        self.conns: list[SwarmConnection] = []
        self.requests = [upgrade_request(f"/c/soak-{c}") for c in range(self.channels)]
        self.round = 0
        self.failures: list[str] = []
        self._reset()

    def _reset(self) -> None:
        self.started = self.joined = self.complete = self.received = self.closing = 0

    def _fail(self, conn: SwarmConnection, what: str) -> None:
        if len(self.failures) < 10:
            self.failures.append(f"connection {conn.index} (channel {conn.channel}, round {self.round}): {what}")

    def report(self) -> str:
        states: dict[int, int] = {}
        for conn in self.conns:
            states[conn.state] = states.get(conn.state, 0) + 1
        names = ["connecting", "handshake", "open", "closing", "done"]
        return (
            f"started {self.started}, self-joins {self.joined}, all joins seen {self.complete}, broadcasts "
            f"received {self.received}; states { {names[s]: n for s, n in sorted(states.items())} }"
        )

    async def _run(self, done: Callable[[], bool], timeout: float, what: str, top_up: Callable[[], None]) -> float:
        started = time.monotonic()
        deadline = started + timeout
        fd = self.selector.fileno()
        select = self.selector.select
        while not done():
            top_up()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"round {self.round}: {what} not done within {timeout} s: {self.report()}")
            with anyio.move_on_after(min(remaining, 1.0)):
                await anyio.wait_readable(fd)
            for key, mask in select(0):
                self._event(key.data, mask)
            if self.failures:
                raise AssertionError(f"round {self.round}, {what}: {self.failures}")
        return time.monotonic() - started

    def _top_up(self) -> None:
        """Start connections while fewer than SOAK_WINDOW handshakes are in flight."""
        register = self.selector.register
        while self.started < self.count and self.started - self.joined < SOAK_WINDOW:
            index = self.started
            sock = socket.socket()
            sock.setblocking(False)
            err = sock.connect_ex(("127.0.0.1", self.port))
            if err not in (0, errno.EINPROGRESS):
                sock.close()
                raise AssertionError(f"round {self.round}: connection {index}: connect: {os.strerror(err)}")
            conn = SwarmConnection(index, index % self.channels, sock)
            self.conns.append(conn)
            register(sock, selectors.EVENT_WRITE, conn)
            self.started += 1

    def _nothing(self) -> None:
        pass

    def _event(self, conn: SwarmConnection, mask: int) -> None:
        sock = conn.sock
        if conn.state == _CONNECTING:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._fail(conn, f"connect: {os.strerror(err)}")
                return
            request = self.requests[conn.channel]
            if sock.send(request) != len(request):
                self._fail(conn, "the request did not fit in one send")
            conn.state = _HANDSHAKE
            self.selector.modify(sock, selectors.EVENT_READ, conn)
            return
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            data, reset = b"", exc
        else:
            reset = None
        if not data:
            if conn.state == _CLOSING and conn.close_code is not None:
                if conn.close_code != 1000:
                    self._fail(conn, f"the relay answered close 1000 with {conn.close_code}")
                self._finish(conn)
            else:
                self._fail(conn, f"the relay closed the connection ({reset or 'EOF'}) in state {conn.state}")
                self._finish(conn)
            return
        buffer = conn.buffer
        buffer += data
        if conn.state == _HANDSHAKE:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101 "):
                self._fail(conn, f"handshake refused: {bytes(buffer[:end])!r}")
                return
            del buffer[: end + 4]
            conn.state = _OPEN
        for opcode, payload in take_frames(buffer):
            if opcode == TEXT:
                self._text(conn, payload)
            elif opcode == PING:
                sock.send(frame(PONG, payload))
            elif opcode == CLOSE:
                conn.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                if conn.state != _CLOSING:
                    self._fail(conn, f"closed by the relay with {conn.close_code} {payload[2:]!r}")
            else:
                self._fail(conn, f"unexpected frame opcode {opcode}: {payload[:100]!r}")

    def _text(self, conn: SwarmConnection, payload: bytes) -> None:
        event = _decode(payload)
        kind = event.get("type")
        if not conn.position:
            if kind != "join" or event.get("self") is not True:
                self._fail(conn, f"first frame is not a self-join: {event}")
                return
            conn.position = conn.total = event["total"]
            self.joined += 1
            if conn.total == self.channel_size:
                self.complete += 1
        elif "message" in event:
            if event["message"] != {"c": conn.channel, "r": self.round} or conn.got or conn.position == 1:
                self._fail(conn, f"unexpected broadcast {event} (got {conn.got} before; place {conn.position})")
            conn.got += 1
            self.received += 1
        elif kind == "join" and conn.state == _OPEN:
            if event["total"] != conn.total + 1:
                self._fail(conn, f"join notice with total {event['total']} after total {conn.total}")
            conn.total = event["total"]
            if conn.total == self.channel_size:
                self.complete += 1
        elif kind != "leave" or conn.state != _CLOSING:
            self._fail(conn, f"unexpected frame {event}")

    def _finish(self, conn: SwarmConnection) -> None:
        if conn.state == _DONE:
            return
        if conn.state == _CLOSING:
            self.closing -= 1
        conn.state = _DONE
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn.sock)
        conn.sock.close()

    async def open_all(self, timeout: float) -> float:
        """Open every connection; done when every member has seen its channel full."""
        self._reset()
        self.conns = []
        self.round += 1
        return await self._run(lambda: self.complete == self.count, timeout, "opening", self._top_up)

    async def broadcast(self, timeout: float) -> float:
        """The first member of each channel broadcasts; every other member must get it."""
        senders = [conn for conn in self.conns if conn.position == 1]
        assert len(senders) == self.channels, f"round {self.round}: {len(senders)} first members"
        for conn in senders:
            await send_all(conn.sock, text(_encode({"c": conn.channel, "r": self.round})))
        wanted = self.count - self.channels
        return await self._run(lambda: self.received >= wanted, timeout, "the broadcast", self._nothing)

    async def close_all(self, timeout: float) -> float:
        """A third of the members close the WebSocket (close frame, the relay's answer, EOF),
        a third just close the socket, a third reset it (SO_LINGER 0)."""
        started = time.monotonic()
        for conn in self.conns:
            if conn.state == _DONE:
                continue
            way = conn.index % 3
            if way == 0:
                conn.sock.send(CLOSE_1000)
                conn.state = _CLOSING
                self.closing += 1
            else:
                if way == 2:
                    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self._finish(conn)
        await self._run(lambda: self.closing == 0, timeout, "closing", self._nothing)
        return time.monotonic() - started

    def shut(self) -> None:
        """Close every socket still open (the test's finally)."""
        for conn in self.conns:
            if conn.state != _DONE:
                conn.state = _DONE
                conn.sock.close()
        self.selector.close()


@pytest.mark.soak  # about 40 s a backend: RELAYCORE_SOAK=1
async def test_fifteen_thousand_connections_come_and_go_and_the_relay_stays_flat(
    anyio_backend: str, tmp_path: Path
) -> None:
    limit = raise_open_file_limit()
    assert limit > SOAK_CONNECTIONS + 200, f"RLIMIT_NOFILE {limit} is too low for {SOAK_CONNECTIONS} connections"
    started = time.perf_counter()
    rss: list[int] = []
    timings: list[str] = []
    async with relay_process(anyio_backend, tmp_path, SOAK_CONFIG) as relay:
        swarm = Swarm(relay.port, SOAK_CONNECTIONS, SOAK_CHANNEL_SIZE)
        idle_descriptors = relay.open_descriptors()
        try:
            for _ in range(1 + SOAK_ROUNDS):  # a warm-up round, then the rounds compared
                cpu, own_cpu = relay.cpu_seconds(), time.process_time()
                opened = await swarm.open_all(60)
                cpu, own_cpu = relay.cpu_seconds() - cpu, time.process_time() - own_cpu
                peak = relay.rss()
                health = await relay.health()
                assert health["connections"] == SOAK_CONNECTIONS, f"round {swarm.round}: /health says {health}"
                relayed = await swarm.broadcast(30)
                closed = await swarm.close_all(30)
                emptied = await relay.wait_for_connections(0, 30, f"after round {swarm.round}")
                # Every socket closed, not only every member gone: then the memory is measured.
                emptied += await relay.wait_for_descriptors(idle_descriptors, 30, f"after round {swarm.round}")
                rss.append(relay.rss())
                label = f"round {swarm.round}" + (" (warm-up)" if swarm.round == 1 else "")
                timings.append(
                    f"{label}: open {opened:.1f} s (CPU: relay {cpu:.1f} s, clients {own_cpu:.1f} s), "
                    f"broadcast {relayed:.2f} s, close {closed:.1f} s + {emptied:.1f} s until every socket was "
                    f"closed; RSS {peak / MB:.0f} MB open, {rss[-1] / MB:.1f} MB after"
                )
                assert relay.alive(), f"the relay exited in round {swarm.round}:\n{relay.log_tail()}"
        finally:
            swarm.shut()
        problems = relay.matching("ERROR", "") + relay.matching("CRITICAL", "")
    total = time.perf_counter() - started
    print(
        f"\n{SOAK_CONNECTIONS} connections x (1 warm-up + {SOAK_ROUNDS}) rounds ({anyio_backend} relay), {total:.1f} s:"
    )
    for line in timings:
        print("  " + line)
    # The warm-up round takes the relay's heap to its working size; from then on it must stay put.
    warm, measured = rss[0], rss[1:]
    drift = measured[-1] - measured[0]
    print(
        f"  RSS after the warm-up {warm / MB:.1f} MB, after each measured round "
        f"{[round(r / MB, 1) for r in measured]} MB; first to last {drift / MB:+.1f} MB"
    )
    assert not problems, f"the relay logged errors: {problems[:3]}"
    assert drift < SOAK_RSS_DRIFT, (
        f"the relay's RSS after round 2 (the first measured) was {measured[0] / MB:.1f} MB and after round "
        f"{SOAK_ROUNDS + 1} {measured[-1] / MB:.1f} MB (all: {[round(r / MB, 1) for r in measured]}, after the warm-up "
        f"{warm / MB:.1f}): it keeps memory of connections long gone"
    )
