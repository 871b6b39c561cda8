"""A stalled crowd cannot exhaust the kernel, even beside another program using TCP.

Members of one channel stop reading right after their self-join: a small receive window,
and loopback's own segment size, so that nothing but the relay's own bounds limits what the
kernel holds for them. Two live members read everything while a third member broadcasts
sixty 100 KB messages, and another process keeps TCP memory busy all along
(:mod:`tcphog`: loopback connections written fast and read slowly). What the relay (the
native server, in a process of its own, on asyncio and trio) is held to (docs/limits.md):

* the live members get every message, once and in order, and every stalled member's leave;
* the kernel's TCP memory (``TCP: mem`` in /proc/net/sockstat, for the whole machine) stays
  well under its pressure threshold (/proc/sys/net/ipv4/tcp_mem): the kernel send buffer of
  each member is ``[limits] socket_send_buffer_bytes``, not megabytes;
* every stalled member is gone within seconds of its kick: the relay aborts a socket that
  has not been sent its close frame when ``close_timeout`` ends, so the stalled client sees
  a reset, and the relay holds none of their descriptors any more.

Each run prints its figures (pytest ``-s``).
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import msgspec
import pytest
from rawws import CLOSE, TEXT, close_frame, text, upgrade_request
from relayproc import RelayProcess, raise_open_file_limit, relay_process
from test_survival import Member, close_all, open_socket, send_all

from conftest import make_config, running
from core._frames import take_frames
from relaycore import LimitsConfig
from transports.server import RelayServer
from transports.server._peers import Peer, Phase, unsent

pytestmark = pytest.mark.anyio

LIVE = 2
MESSAGES = 60
PAD = "x" * 100_000  # a ~100 KB message: the default max_message_bytes is 102,400
CROWD = "/c/crowd"
CLOSE_TIMEOUT = 2.0
#: How long after its kick a stalled member may still be connected: close_timeout, the
#: timer task's period, and this test's own polling.
GONE_WITHIN = CLOSE_TIMEOUT + 1.5
CONFIG = (
    "[limits]\nmessages_per_second = 100000\nmessages_burst = 100000\nconnections_per_second_per_ip = 100000\n"
    f"close_timeout = {CLOSE_TIMEOUT}\nping_interval = 120\nping_timeout = 120\n"
)
HOG_CONNECTIONS = 32  # about 3.8 MiB of kernel memory each: 120 MiB, 30,000 pages
PAGE = 4096
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def tcp_memory() -> int:
    """The pages of memory TCP sockets use on this machine (``TCP: mem``)."""
    with open("/proc/net/sockstat") as sockstat:
        for line in sockstat:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("mem") + 1])
    raise AssertionError("no TCP line in /proc/net/sockstat")


def tcp_thresholds() -> tuple[int, int, int]:
    """``tcp_mem``: the pages under which TCP is unconstrained, where it enters memory
    pressure, and its hard limit."""
    low, pressure, high = Path("/proc/sys/net/ipv4/tcp_mem").read_text().split()
    return int(low), int(pressure), int(high)


@contextlib.asynccontextmanager
async def tcp_hog(connections: int) -> AsyncIterator[None]:
    """:mod:`tcphog` in a process of its own, its buffers full, for the block."""
    hog = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("tcphog.py")), str(connections)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    try:
        assert hog.stdout is not None
        with anyio.fail_after(20):
            line = await anyio.to_thread.run_sync(hog.stdout.readline)
        assert line == b"ready\n", f"the TCP hog said {line!r} (exit status {hog.poll()})"
        yield
    finally:
        hog.terminate()
        hog.wait(10)


def send_queues(port: int) -> int:
    """The bytes in the kernel send queues of the relay's connections on ``port`` (IPv4),
    sent or not, that their peers have not acknowledged (/proc/net/tcp's ``tx_queue``)."""
    total = 0
    suffix = f":{port:04X}"
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split(None, 5)
            if fields[1].endswith(suffix):
                total += int(fields[4].partition(":")[0], 16)
    return total


class Peak:
    """The most TCP memory on the machine, and in the relay's send queues, while it samples."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.pages = 0
        self.queued = 0

    async def sample(self) -> None:
        while True:
            self.pages = max(self.pages, tcp_memory())
            self.queued = max(self.queued, send_queues(self.port))
            await anyio.sleep(0.05)


class Stalled:
    """A member that reads its handshake and its self-join, then never reads again."""

    def __init__(self, sock: socket.socket, uid: str, pending: bytearray) -> None:
        self.sock = sock
        self.uid = uid
        self.pending = pending  #: what was read after the self-join
        self.gone_at = 0.0  #: when the socket saw the relay's end (monotonic; 0: not yet)
        self.error = 0  #: its SO_ERROR then (ECONNRESET: the relay aborted it)

    @classmethod
    async def join(cls, port: int, path: str = f"{CROWD}?announce") -> Stalled:
        sock = await open_socket(port, rcvbuf=4096)
        try:
            await send_all(sock, upgrade_request(path))
            buffer = bytearray()
            with anyio.fail_after(10):
                while True:
                    await anyio.wait_readable(sock)
                    with contextlib.suppress(BlockingIOError):
                        chunk = sock.recv(4096)
                        assert chunk, f"closed during the handshake: {buffer!r}"
                        buffer += chunk
                    head, sep, rest = bytes(buffer).partition(b"\r\n\r\n")
                    pending = bytearray(rest)
                    frames = take_frames(pending) if sep else []
                    if frames:
                        break
            assert head.startswith(b"HTTP/1.1 101 "), f"handshake refused: {head!r}"
            opcode, payload = frames[0]
            hello = _decode(payload)
            assert opcode == TEXT and hello.get("self") is True, f"not a self-join: {payload[:80]!r}"
        except BaseException:
            sock.close()
            raise
        return cls(sock, hello["uid"], pending)


async def watch_ends(stalled: list[Stalled]) -> None:
    """Note when each stalled socket sees the relay's end (a reset, or a FIN if it ever came).

    Their receive buffers always hold data, so readability says nothing: epoll for
    EPOLLRDHUP (and the EPOLLERR and EPOLLHUP it always reports) only.
    """
    poller = select.epoll()
    by_fd = {member.sock.fileno(): member for member in stalled}
    try:
        for fd in by_fd:
            poller.register(fd, select.EPOLLRDHUP)
        while by_fd:
            for fd, _ in poller.poll(0):
                member = by_fd.pop(fd)
                member.gone_at = time.monotonic()
                member.error = member.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                poller.unregister(fd)
            await anyio.sleep(0.02)
    finally:
        poller.close()


async def note_kicks(member: Member, kicked: dict[str, float]) -> None:
    """When ``member`` (live) hears each announced leave, by uid (to within 20 ms)."""
    seen = 0
    while True:
        for event in member.frames[seen:]:
            if event.get("type") == "leave" and "uid" in event:
                kicked.setdefault(event["uid"], time.monotonic())
        seen = len(member.frames)
        await anyio.sleep(0.02)


async def join_crowd(relay: RelayProcess, count: int) -> list[Stalled]:
    stalled: list[Stalled] = []

    async def join(n: int) -> None:
        for _ in range(n):
            stalled.append(await Stalled.join(relay.port))

    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for _ in range(20):
                    tg.start_soon(join, count // 20)
    except BaseException:
        close_all_stalled(stalled)
        raise
    return stalled


def close_all_stalled(stalled: list[Stalled]) -> None:
    for member in stalled:
        anyio.notify_closing(member.sock)
        member.sock.close()


async def broadcast(sender: Member, live: list[Member]) -> None:
    """Sixty 100 KB messages, paced on the live readers: at most three in flight to them,
    so that only the stalled members fall behind."""
    for seq in range(MESSAGES):
        for member in live:
            await member.until(lambda m, seq=seq: m.relays >= seq - 2, 20, f"message {seq - 3}")
        await sender.send(text(_encode({"seq": seq, "pad": PAD})))


async def stalled_crowd(backend: str, directory: Path, count: int, send_buffer: int | None = None) -> dict[str, float]:
    """The scenario, with ``count`` stalled members; its figures. ``send_buffer``: the
    relay's ``socket_send_buffer_bytes`` (None: its default)."""
    raise_open_file_limit()
    config = CONFIG if send_buffer is None else f"{CONFIG}socket_send_buffer_bytes = {send_buffer}\n"
    figures: dict[str, float] = {"before": tcp_memory()}
    kicked: dict[str, float] = {}
    live: list[Member] = []
    stalled: list[Stalled] = []
    async with tcp_hog(HOG_CONNECTIONS), relay_process(backend, directory, config) as relay:
        figures["hog"] = tcp_memory()
        peak = Peak(relay.port)
        async with anyio.create_task_group() as tasks:
            try:
                for n in range(LIVE + 1):
                    member = await Member.join("the sender" if n == LIVE else f"live member {n}", relay.port, CROWD)
                    live.append(member)
                    tasks.start_soon(member.pump)
                    if n == 0:
                        stalled = await join_crowd(relay, count)
                sender = live.pop()
                everyone = LIVE + 1 + count
                for member in live:
                    await member.until(
                        lambda m: bool(m.frames) and m.frames[-1].get("total") == everyone, 30, f"total {everyone}"
                    )
                figures["joined"] = tcp_memory()
                tasks.start_soon(peak.sample)
                tasks.start_soon(note_kicks, live[0], kicked)
                tasks.start_soon(watch_ends, stalled)
                started = time.monotonic()
                await broadcast(sender, live)
                for member in [*live, sender]:
                    want = MESSAGES if member is not sender else 0
                    await member.until(
                        lambda m, want=want: m.relays >= want and len(leaves(m)) >= count,
                        30,
                        f"all {want} messages and {count} leaves",
                    )
                figures["broadcast"] = time.monotonic() - started
                with anyio.fail_after(GONE_WITHIN + 5):
                    while not all(member.gone_at for member in stalled):
                        await anyio.sleep(0.05)
                figures["peak"] = peak.pages
                figures["queued"] = peak.queued
                figures["descriptors"] = relay.open_descriptors()
                check(live, sender, stalled, kicked, count)
                tasks.cancel_scope.cancel()
            finally:
                close_all(live)
                close_all_stalled(stalled)
    lags = [member.gone_at - kicked[member.uid] for member in stalled]
    figures["gone_max"] = max(lags)
    figures["resets"] = sum(member.error == errno.ECONNRESET for member in stalled)
    return figures


def leaves(member: Member) -> list[dict[str, object]]:
    return [e for e in member.frames if e.get("type") == "leave"]


def check(live: list[Member], sender: Member, stalled: list[Stalled], kicked: dict[str, float], count: int) -> None:
    """Every message to the live members once and in order; every stalled member left and
    its socket ended within GONE_WITHIN seconds of its leave."""
    for member in live:
        seqs = [e["message"]["seq"] for e in member.frames if "message" in e]
        assert seqs == list(range(MESSAGES)), f"{member.name}: message seqs {seqs} (lost, doubled or out of order)"
    for member in [*live, sender]:
        assert len(leaves(member)) == count, f"{member.name}: {len(leaves(member))} leaves, expected {count}"
    for member in stalled:
        assert member.uid in kicked, f"stalled member {member.uid}: no leave heard"
        lag = member.gone_at - kicked[member.uid]
        assert lag <= GONE_WITHIN, f"stalled member {member.uid}: still connected {lag:.2f} s after its leave"


def report(count: int, figures: dict[str, float]) -> str:
    low, pressure, _ = tcp_thresholds()
    mib = PAGE / (1 << 20)
    return (
        f"\n{count} stalled, {LIVE} live, {MESSAGES} x 100 kB: TCP memory {figures['before']:.0f} pages before, "
        f"{figures['hog']:.0f} with the hog, {figures['joined']:.0f} after the joins, "
        f"peak {figures['peak']:.0f} ({figures['peak'] * mib:.0f} MiB; tcp_mem {low} / {pressure}); the relay's "
        f"send queues peaked at {figures['queued'] / (1 << 20):.0f} MiB ({figures['queued'] / count / 1024:.0f} KiB "
        f"a stalled member); broadcast {figures['broadcast']:.2f} s; stalled gone at most "
        f"{figures['gone_max']:.2f} s after their leave, {figures['resets']:.0f} of {count} by a reset; "
        f"the relay's descriptors after: {figures['descriptors']:.0f}"
    )


async def test_a_thousand_stalled_members_cannot_exhaust_the_kernel(anyio_backend: str, tmp_path: Path) -> None:
    count = 1000
    figures = await stalled_crowd(anyio_backend, tmp_path, count)
    print(report(count, figures))
    low, _, _ = tcp_thresholds()
    assert figures["peak"] < low, f"TCP memory peaked at {figures['peak']:.0f} pages, over tcp_mem's {low}"
    # Each connection's queue is bounded by SO_SNDBUF (doubled by Linux for its bookkeeping).
    bound = (count + LIVE + 1) * 2 * LimitsConfig().socket_send_buffer_bytes
    assert figures["queued"] <= bound, f"the relay's send queues held {figures['queued']:.0f} bytes, over {bound}"
    assert figures["descriptors"] < LIVE + 20, f"the relay still holds {figures['descriptors']:.0f} descriptors"


# -- the parts: the kernel's buffer, and a closed socket's last bytes ------------------------


def relay_side(server: RelayServer, client: socket.socket) -> Peer:
    """The relay's peer for ``client``, a socket connected to it."""
    (peer,) = [peer for peer in server._peers if peer.sock.getpeername() == client.getsockname()]
    return peer


@pytest.mark.parametrize("send_buffer", [65536, 0])
async def test_accepted_sockets_get_the_configured_kernel_send_buffer(send_buffer: int) -> None:
    async with running(make_config(f"[limits]\nsocket_send_buffer_bytes = {send_buffer}\n")) as server:
        client = await open_socket(server.port)
        try:
            with anyio.fail_after(5):
                while not server._peers:
                    await anyio.sleep(0.01)
            size = relay_side(server, client).sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        finally:
            client.close()
    # Linux doubles the value asked for (its own bookkeeping); 0 leaves the system's own
    # (on loopback, megabytes from the first segment, with its 64 KB segments).
    assert size == (2 * send_buffer if send_buffer else system_send_buffer())


def system_send_buffer() -> int:
    """SO_SNDBUF of a loopback connection accepted by a plain listener."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        size = accepted.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        accepted.close()
        client.close()
    return size


async def closed_with_bytes_unsent(server: RelayServer) -> tuple[Stalled, Peer]:
    """A member that stopped reading with a 100 KB message unsent in the relay's kernel
    buffer, and then sent a close frame: the relay answered it and is done with it."""
    member = await Stalled.join(server.port, "/c/late")
    peer = relay_side(server, member.sock)
    sender = await Member.join("the sender", server.port, "/c/late")
    try:
        await sender.send(text(_encode({"pad": PAD})))
        with anyio.fail_after(5):
            while peer.conn.outbox or not unsent(peer.sock):  # all with the kernel, not sent
                await anyio.sleep(0.01)
        await send_all(member.sock, close_frame(1000))
        with anyio.fail_after(5):
            while peer.phase is Phase.OPEN:
                await anyio.sleep(0.01)
    finally:
        sender.close()
    return member, peer


LATE = make_config(f"[limits]\nclose_timeout = {CLOSE_TIMEOUT}\n")


async def test_a_closed_socket_the_peer_never_reads_is_reset_at_close_timeout() -> None:
    async with running(LATE) as server:
        member, peer = await closed_with_bytes_unsent(server)
        closed_at = time.monotonic()
        try:
            # The kernel could not send the answer: the relay keeps the socket (closing it
            # now would leave its buffer to the kernel for minutes), then resets it.
            assert peer.phase is Phase.SENDING and peer in server._peers
            with anyio.fail_after(CLOSE_TIMEOUT + 2):
                await watch_ends([member])
            assert member.error == errno.ECONNRESET
            assert member.gone_at - closed_at > CLOSE_TIMEOUT - 0.5, "reset before close_timeout"
            assert peer not in server._peers
        finally:
            close_all_stalled([member])


async def test_a_closed_socket_read_within_close_timeout_ends_cleanly() -> None:
    async with running(LATE) as server:
        member, peer = await closed_with_bytes_unsent(server)
        try:
            await anyio.sleep(CLOSE_TIMEOUT / 4)
            data = member.pending
            with anyio.fail_after(5):
                while chunk := await receive(member.sock):
                    data += chunk
            frames = take_frames(data)
            opcodes = [opcode for opcode, _ in frames]
            assert opcodes[-2:] == [TEXT, CLOSE] and b'"pad"' in frames[-2][1], "the message, then the close"
            assert peer not in server._peers
        finally:
            close_all_stalled([member])


async def receive(sock: socket.socket) -> bytes:
    """The next bytes (b"" at the end of the stream; a reset fails)."""
    while True:
        await anyio.wait_readable(sock)
        with contextlib.suppress(BlockingIOError):
            return sock.recv(65536)
