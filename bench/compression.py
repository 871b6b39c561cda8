"""permessage-deflate, measured in one run: bytes, CPU and memory, with and without it.

    python bench/compression.py                 # N = 1,000, about two minutes
    python bench/compression.py --quick         # N = 50: checks that it runs
    python bench/compression.py --n 1000 --rate 50 --duration 5 --idle 2000 --out bench/results

Steps, each against a fresh relay process pinned to one core (this process, the clients,
runs on another):

- ``fanout``: N receivers and one sender in one channel; the sender sends a 2-3 KB JSON state
  message (``state()``: a game's or a dashboard's, a little different every time) ``--rate``
  times a second for ``--duration`` seconds. Once with receivers that offer permessage-deflate
  as browsers do, once with receivers that do not, against relaycore (the native server,
  asyncio) and against python-websockets (bench/ref_websockets.py with its default
  compression, which compresses for each connection). Figures: WebSocket bytes received per
  delivery (frame headers included, TCP/IP aside) and the relay's CPU (user + system) per
  delivery.
- ``memory``: ``--idle`` idle connections (each in a channel of its own) after 20 warm-up
  ones; (RSS after - RSS before) / count, with and without the offer, for both relays.
- ``bomb``: 20 connections each send one deflate bomb (about 200 KB that would inflate to
  200 MB) to relaycore; each must be closed 1009, and the relay's RSS is read before and after.

It prints a table, writes ``<out>/compression.json`` and ``<out>/compression.png``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import select
import socket
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from measure import core_times, proc_cpu, proc_rss_kb
from run import BENCH_DIR, HOST, Relay, free_port, peer_command, pick_cores
from wsclient import raise_nofile_limit

from relaycore.client import client_frame

OFFER = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
PEERS = {"relaycore": "relaycore-asyncio", "websockets": "websockets"}
TAIL = b"\x00\x00\xff\xff"


def state(seed: int) -> bytes:
    """A state message of about 2.5 KB: what a game or a dashboard broadcasts many times a second."""
    rng = random.Random(seed)
    names = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
    players = [
        {
            "id": f"p{i:03d}",
            "name": names[i % len(names)],
            "team": "red" if i % 2 else "blue",
            "x": round(rng.uniform(0, 1000), 1),
            "y": round(rng.uniform(0, 1000), 1),
            "hp": rng.randint(0, 100),
            "weapon": rng.choice(["blaster", "laser", "rail"]),
            "status": rng.choice(["idle", "moving", "moving", "firing"]),
        }
        for i in range(22)
    ]
    message = {"type": "state", "room": "arena-7", "tick": 100_000 + seed, "players": players}
    return json.dumps(message, separators=(",", ":")).encode()


class Client:
    """One raw WebSocket client: the handshake, then frame headers counted, payloads skipped."""

    __slots__ = ("buffer", "frames", "inflate", "inflated", "open", "received", "sock")

    def __init__(self, port: int, path: str, offer: bool, *, watch: bool = False) -> None:
        self.sock = socket.create_connection((HOST, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(
            b"GET " + path.encode() + b" HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n" + (OFFER if offer else b"") + b"\r\n"
        )
        self.sock.setblocking(False)
        self.buffer = b""
        self.open = False
        self.frames = 0  # data frames since the counters were last reset
        self.received = 0  # their bytes on the wire
        # One receiver inflates what it gets, as a check; one decompressor for the whole
        # connection does both for a relay that keeps its context (python-websockets) and one
        # that does not (relaycore).
        self.inflate = zlib.decompressobj(-15) if watch else None
        self.inflated: bytes | None = None  # the last compressed payload, inflated

    def read(self) -> bool:
        try:
            data = self.sock.recv(262_144)
        except BlockingIOError:
            return True
        if not data:
            return False
        data = self.buffer + data
        if not self.open:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = data
                return True
            assert data.startswith(b"HTTP/1.1 101"), data[:200]
            self.open, data = True, data[end + 4 :]
        self.buffer = self.frames_in(data)
        return True

    def frames_in(self, data: bytes) -> bytes:
        pos, end = 0, len(data)
        while end - pos >= 2:
            first, length = data[pos], data[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if end - pos < 4:
                    break
                length, head = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
            if end - pos < head + length:
                break
            if first & 0x0F == 0x1:
                self.frames += 1
                self.received += head + length
                if first & 0x40 and self.inflate is not None:
                    self.inflated = self.inflate.decompress(data[pos + head : pos + head + length] + TAIL)
            pos += head + length
        return data[pos:]


class Clients:
    """Every client of a step, on one epoll set."""

    def __init__(self) -> None:
        self.poll = select.epoll()
        self.by_fd: dict[int, Client] = {}

    def add(self, client: Client) -> Client:
        self.by_fd[client.sock.fileno()] = client
        self.poll.register(client.sock.fileno(), select.EPOLLIN)
        return client

    def run(self, seconds: float, until: Callable[[], bool] = lambda: False) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not until():
            for fd, _ in self.poll.poll(0.02):
                if not self.by_fd[fd].read():
                    raise RuntimeError("the relay closed a connection")
            time.sleep(0.002)  # let frames pile up: fewer reads, the relay's work unchanged

    def settle(self, quiet: float = 0.5, limit: float = 120.0) -> None:
        """Read until nothing has arrived for ``quiet`` seconds (the join notices are done)."""
        deadline = time.monotonic() + limit
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            self.run(0.1)
            total = sum(c.received + c.frames for c in self.by_fd.values())
            if total != last:
                last, since = total, time.monotonic()
            elif time.monotonic() - since >= quiet and all(c.open for c in self.by_fd.values()):
                return
        raise RuntimeError("the channel never went quiet")

    def close(self) -> None:
        for client in self.by_fd.values():
            client.sock.close()
        self.poll.close()


def fanout(port: int, pid: int, n: int, offer: bool, rate: float, duration: float, core: int) -> dict[str, Any]:
    clients = Clients()
    receivers = [clients.add(Client(port, "/c/bench", offer, watch=i == 0)) for i in range(n)]
    sender = clients.add(Client(port, "/c/bench", False))
    clients.settle()
    for client in receivers:
        client.frames = client.received = 0
    messages = [state(seed) for seed in range(64)]
    cpu, started, sent, cores = proc_cpu(pid), time.monotonic(), 0, core_times()
    while sent < rate * duration:
        sender.sock.sendall(client_frame(0x1, messages[sent % len(messages)], b"\0\0\0\0"))
        sent += 1
        clients.run(max(0.0, started + sent / rate - time.monotonic()))
    want = sent * n
    clients.run(60.0, lambda: sum(c.frames for c in receivers) >= want)
    cpu, elapsed = proc_cpu(pid) - cpu, time.monotonic() - started
    _, task0, total0 = cores[core]
    _, task1, total1 = core_times()[core]
    delivered = sum(c.frames for c in receivers)
    received = sum(c.received for c in receivers)
    check = receivers[0].inflated
    clients.close()
    assert delivered == want, f"{delivered} of {want} deliveries"
    assert not offer or (check is not None and json.loads(check)["message"]["type"] == "state")
    return {
        "message_bytes": sum(map(len, messages)) // len(messages),
        "deliveries": delivered,
        "bytes_per_delivery": round(received / delivered, 1),
        "cpu_us_per_delivery": round(cpu / delivered * 1e6, 3),
        "relay_cpu_share": round(cpu / elapsed, 3),
        # CPU that other processes took on the relay's core meanwhile.
        "interference": round(max(0.0, (task1 - task0) / (total1 - total0) - cpu / elapsed), 3),
        "compressed": check is not None,
    }


def memory(port: int, pid: int, count: int, offer: bool) -> dict[str, Any]:
    clients = Clients()
    for i in range(20):
        clients.add(Client(port, f"/c/warm-{i}", offer))
    clients.settle(quiet=0.3)
    before = proc_rss_kb(pid)
    for i in range(count):
        clients.add(Client(port, f"/c/idle-{i}", offer))
        if i % 200 == 199:
            clients.run(0.01)
    clients.settle(quiet=1.0)
    after = proc_rss_kb(pid)
    clients.close()
    return {"connections": count, "bytes_per_connection": round((after - before) * 1024 / count)}


def bomb(port: int, pid: int) -> dict[str, Any]:
    megabyte = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = (megabyte.compress(b"0" * 1_000_000) + megabyte.flush(zlib.Z_SYNC_FLUSH))[:-4]
    frame = client_frame(0x1, chunk * 200, b"\0\0\0\0", rsv=4)  # inflates to 200 MB
    before, codes = proc_rss_kb(pid), []
    for _ in range(20):
        client = Client(port, "/c/bombs", True)
        client.sock.setblocking(True)
        client.sock.sendall(frame)
        data = b""
        client.sock.settimeout(10)
        while b"\x88" not in data[data.find(b"\r\n\r\n") :]:
            more = client.sock.recv(65536)
            if not more:
                break
            data += more
        close = data[data.rfind(b"\x88") :]
        codes.append(int.from_bytes(close[2:4], "big"))
        client.sock.close()
    return {
        "frame_bytes": len(frame),
        "inflates_to": 200_000_000,
        "close_codes": sorted(set(codes)),
        "rss_growth_bytes": (proc_rss_kb(pid) - before) * 1024,
    }


def step(name: str, peer: str, cores: tuple[int, int], out: Path, run: Callable[[int, int], dict[str, Any]]) -> Any:
    port = free_port()
    command, env = peer_command(PEERS[peer], port, "transports")
    if peer == "websockets":
        command += ["--compression", "deflate"]
    relay = Relay(command, env, cores[0], out / f"compression-{peer}.log")
    pid = relay.start(port)
    try:
        result = run(port, pid)
    finally:
        relay.stop()
    print(f"  {name:<34} {json.dumps(result)}", flush=True)
    return result


def compress_costs() -> list[dict[str, Any]]:
    """What compressing one message costs and saves, by size (the threshold's grounds)."""
    rows = []
    message = state(1)
    for size in (64, 128, 256, 512, 1024, 2048, len(message)):
        payload = message[:size]
        for level in (1, 6, 9):
            best = float("inf")
            for _ in range(5):
                started = time.perf_counter()
                for _ in range(200):
                    compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
                    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
                best = min(best, (time.perf_counter() - started) / 200)
            rows.append({"bytes": size, "level": level, "compressed": len(data) - 4, "us": round(best * 1e6, 1)})
    return rows


def plot(results: dict[str, Any], path: Path) -> str | None:
    """Three bars charts: bytes and CPU per delivery, memory per idle connection."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"matplotlib unavailable ({exc}); no plot written"
    labels = ["relaycore\nplain", "relaycore\ndeflate", "websockets\nplain", "websockets\ndeflate"]
    keys = [("relaycore", "plain"), ("relaycore", "deflate"), ("websockets", "plain"), ("websockets", "deflate")]
    panels = [
        ("fanout", "bytes_per_delivery", "bytes on the wire per delivery"),
        ("fanout", "cpu_us_per_delivery", "relay CPU per delivery (µs)"),
        ("memory", "bytes_per_connection", "memory per idle connection (bytes)"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    colors = ["#7f7f7f", "#1f77b4", "#bfbfbf", "#ff7f0e"]
    for ax, (kind, field, title) in zip(axes, panels, strict=True):
        values = [results[kind].get(f"{peer}-{mode}", {}).get(field, 0) for peer, mode in keys]
        bars = ax.bar(labels, values, color=colors)
        ax.bar_label(bars, labels=[f"{v:,.0f}" if v >= 10 else f"{v:.2f}" for v in values], fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    n = results["meta"]["n"]
    size = results["fanout"]["relaycore-deflate"]["message_bytes"]
    fig.suptitle(f"permessage-deflate: one channel of N = {n:,}, a {size:,}-byte JSON message", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="receivers in the fan-out channel")
    parser.add_argument("--rate", type=float, default=50.0, help="messages per second the sender sends")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of sending")
    parser.add_argument("--idle", type=int, default=2000, help="idle connections in the memory step")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--quick", action="store_true", help="N = 50, 1 s, 200 idle connections")
    args = parser.parse_args()
    if args.quick:
        args.n, args.duration, args.idle = 50, 1.0, 200
    raise_nofile_limit()
    cores = pick_cores()
    os.sched_setaffinity(0, {cores[1]})
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "meta": {"n": args.n, "rate": args.rate, "duration": args.duration, "idle": args.idle, "cores": list(cores)},
        "fanout": {},
        "memory": {},
    }
    print(f"compression benchmark: N = {args.n}, {args.rate:g} messages/s for {args.duration:g} s", flush=True)
    for peer in PEERS:
        for offer, mode in ((True, "deflate"), (False, "plain")):
            results["fanout"][f"{peer}-{mode}"] = step(
                f"fanout {peer} {mode}",
                peer,
                cores,
                args.out,
                lambda port, pid, offer=offer: fanout(port, pid, args.n, offer, args.rate, args.duration, cores[0]),
            )
    for peer in PEERS:
        for offer, mode in ((True, "deflate"), (False, "plain")):
            results["memory"][f"{peer}-{mode}"] = step(
                f"memory {peer} {mode}",
                peer,
                cores,
                args.out,
                lambda port, pid, offer=offer: memory(port, pid, args.idle, offer),
            )
    results["bomb"] = step("bomb relaycore", "relaycore", cores, args.out, bomb)
    results["costs"] = compress_costs()
    (args.out / "compression.json").write_text(json.dumps(results, indent=2) + "\n")
    report(results)
    problem = plot(results, args.out / "compression.png")
    print(problem or f"plot: {args.out / 'compression.png'}")


def report(results: dict[str, Any]) -> None:
    fan, mem = results["fanout"], results["memory"]
    print(f"\n{'':<22}{'bytes/delivery':>16}{'CPU µs/delivery':>17}{'idle conn. bytes':>18}")
    for key in ("relaycore-plain", "relaycore-deflate", "websockets-plain", "websockets-deflate"):
        print(
            f"{key:<22}{fan[key]['bytes_per_delivery']:>16,.1f}{fan[key]['cpu_us_per_delivery']:>17.3f}"
            f"{mem[key]['bytes_per_connection']:>18,}"
        )
    plain, deflate = fan["relaycore-plain"], fan["relaycore-deflate"]
    print(f"\nrelaycore: {plain['bytes_per_delivery'] / deflate['bytes_per_delivery']:.2f}x fewer bytes per delivery,")
    print(f"  CPU per delivery x{deflate['cpu_us_per_delivery'] / plain['cpu_us_per_delivery']:.2f},")
    gap = mem["relaycore-deflate"]["bytes_per_connection"] - mem["relaycore-plain"]["bytes_per_connection"]
    print(f"  an idle deflate member {gap:+,} bytes against a plain one")
    bombs = results["bomb"]
    print(
        f"bombs: 20 x {bombs['frame_bytes']:,} bytes (each would inflate to 200 MB): closes {bombs['close_codes']},"
        f" RSS {bombs['rss_growth_bytes'] / 1e6:+.1f} MB"
    )
    print("\ncompressing one message (zlib, 15-bit window, best of 5):")
    for row in results["costs"]:
        print(f"  {row['bytes']:>5} bytes, level {row['level']}: {row['compressed']:>5} bytes in {row['us']:>5.1f} µs")


if __name__ == "__main__":
    sys.exit(main())
