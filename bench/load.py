"""Load generator for the relay benchmark: one scenario per run.

Runs as its own process pinned to one core (``--cpu``, default 1) and drives
a relay on 127.0.0.1 with the epoll client engine in ``wsclient.py``. Prints
one JSON object with the figures on stdout; progress goes to stderr.

Scenarios: ``fanout`` (bursty then paced), ``stalled`` (bursty with one member
that never reads), ``latency``, ``channels``, ``connrate``, ``memory``,
``cluster`` (bursty fan-out with the receivers split over two relays) and
``cluster-rooms`` (many two-member channels, each split over two relays), both
run by ``cluster.py``. Example:
``python bench/load.py --port 8080 --scenario fanout --n 1000 --duration 5``
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from measure import CLK_TCK, Window, core_times, percentile, proc_cpu, proc_rss_kb
from wsclient import CLOSED, OPEN, Conn, Engine, client_frame, make_message, raise_nofile_limit

CONNECT_CONCURRENCY = 64
MAX_COALESCE = 0.02
PACED_STALL = 5.0  # seconds before paced mode gives up on a message


def log(msg: str) -> None:
    print(f"[load] {msg}", file=sys.stderr, flush=True)


class Bench:
    """Shared setup helpers around one Engine."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.engine = Engine(args.host, args.port)
        self.tag = f"{os.getpid()}-{int(time.time() * 1000) % 100000}"

    def connect_many(self, paths: list[str], timeout: float, sse: int = 0) -> list[Conn]:
        """Open connections (bounded concurrency) until each got its self-join; the first
        ``sse`` of them over Server-Sent Events, the others over WebSocket."""
        eng = self.engine
        conns: list[Conn] = []
        base_open, base_failed = eng.opened, eng.failed
        todo = iter(paths)
        remaining = [len(paths)]

        def hook() -> None:
            pending = len(conns) - (eng.opened - base_open) - (eng.failed - base_failed)
            while pending < CONNECT_CONCURRENCY and remaining[0] > 0:
                conns.append(eng.connect(next(todo), sse=len(conns) < sse))
                remaining[0] -= 1
                pending += 1

        def done() -> bool:
            return eng.opened - base_open + eng.failed - base_failed >= len(paths)

        if not eng.run(done, timeout, hook):
            raise RuntimeError(f"connect timed out: {eng.opened - base_open}/{len(paths)} open")
        if eng.failed > base_failed:
            raise RuntimeError(f"{eng.failed - base_failed} connection(s) failed: {eng.last_failure}")
        return conns

    def wait_others(self, expected: int, timeout: float, what: str) -> None:
        eng = self.engine
        if not eng.run(lambda: eng.others >= expected, timeout):
            raise RuntimeError(f"{what}: {eng.others}/{expected} notices after {timeout:.0f}s")

    def fanout_setup(self, n: int, sender_query: str) -> tuple[list[Conn], Conn]:
        """N receivers then one sender on one channel; waits for the join storm."""
        channel = f"/c/fan-{self.tag}"
        t0 = time.perf_counter()
        setup_timeout = self.args.setup_timeout
        sse = round(n * self.args.sse)
        receivers = self.connect_many([channel] * n, setup_timeout, sse)
        sender = self.connect_many([channel + sender_query], setup_timeout)[0]
        sender.receiver = False
        # Each member hears one join notice per later joiner, sender included.
        expected = sum(n + 1 - r.total for r in receivers)
        self.wait_others(expected, setup_timeout, "join notices")
        log(f"fanout setup n={n} ({sse} over SSE): {time.perf_counter() - t0:.1f}s ({expected} join notices)")
        return receivers, sender

    def drain(self, target: Callable[[], bool], what: str) -> bool:
        ok = self.engine.run(target, self.args.drain_timeout)
        if not ok:
            log(f"drain timed out: {what}")
        return ok


class Feeder:
    """Numbered benchmark messages sent on one connection."""

    def __init__(self, conn: Conn, size: int) -> None:
        self.conn = conn
        self.size = size
        self.seq = 0  # messages sent so far

    def send(self, count: int) -> None:
        frames = [client_frame(make_message(self.seq + i, self.size)) for i in range(count)]
        self.seq += count
        self.conn.send(b"".join(frames))


class Bursty:
    """The bursty sender, as an Engine hook: ``window`` messages in flight, a message
    being acknowledged when its echo comes back to the sender. A guard also stops
    sending while the ``n`` receivers counted in ``engine.delivered`` are owed more
    than ``2 * window`` messages each, and the read coalescing follows the ack rate.
    ``ack`` acknowledges on another connection's arrivals instead (the cluster
    scenario: a receiver on the far relay)."""

    def __init__(self, engine: Engine, feeder: Feeder, n: int, window: int, ack: Conn | None = None) -> None:
        self.engine = engine
        self.feeder = feeder
        self.ack = feeder.conn if ack is None else ack
        self.n = n
        self.window = window
        self.guard = 2 * window * n  # cap on frames still owed to the receivers
        self.sent0 = feeder.seq
        self.acked0 = self.ack.data
        self.deliv0 = engine.delivered
        self.last = (time.perf_counter(), self.ack.data)

    @property
    def sent(self) -> int:
        return self.feeder.seq - self.sent0

    @property
    def acked(self) -> int:
        return self.ack.data - self.acked0

    def __call__(self) -> None:
        eng = self.engine
        sent = self.sent
        room = self.window - (sent - self.acked)
        if room > 0 and sent * self.n - (eng.delivered - self.deliv0) < self.guard:
            self.feeder.send(room)
        now = time.perf_counter()
        then, acks = self.last
        if now - then >= 0.1:
            # Read each socket about every window/4 messages (see README).
            rate = (self.ack.data - acks) / (now - then)
            if rate > 0:  # no acks in this interval: keep the previous value
                eng.coalesce = min(MAX_COALESCE, self.window / 4 / rate)
            self.last = (now, self.ack.data)

    def done(self) -> bool:
        """Every message sent reached every receiver and was acknowledged."""
        return self.engine.delivered - self.deliv0 >= self.sent * self.n and self.acked >= self.sent


def fanout(b: Bench) -> dict[str, Any]:
    args = b.args
    n, size = args.n, args.size
    eng = b.engine
    _receivers, sender = b.fanout_setup(n, "?echo=true")
    result: dict[str, Any] = {"n": n, "size": size}
    feeder = Feeder(sender, size)

    if "bursty" in args.modes:
        bursty = Bursty(eng, feeder, n, args.window)
        eng.run(lambda: False, args.warmup, bursty)
        win = Window(args, lambda: eng.delivered)
        eng.run(lambda: False, args.duration, bursty)
        result["bursty"] = win.result()
        result["bursty"]["messages"] = bursty.sent
        result["bursty"]["coalesce_ms"] = round(eng.coalesce * 1000, 2)
        eng.coalesce = 0.0
        b.drain(bursty.done, "bursty")
        log(f"bursty n={n}: {result['bursty']['rate']:.0f} deliveries/s")

    if "paced" in args.modes:
        sent0 = feeder.seq
        failed0 = eng.failed
        started = [0.0]
        target = [eng.delivered]
        stalls = [0]
        fan_times: list[float] = []

        def paced_hook() -> None:
            now = time.perf_counter()
            done = eng.delivered >= target[0]
            if done or now - started[0] > PACED_STALL:
                if feeder.seq > sent0:
                    fan_times.append(now - started[0])
                    stalls[0] += not done
                started[0] = now
                # All receivers still connected must get the next message.
                target[0] = eng.delivered + n - (eng.failed - failed0)
                feeder.send(1)

        eng.run(lambda: False, args.warmup, paced_hook)
        first = len(fan_times)
        win = Window(args, lambda: eng.delivered)
        eng.run(lambda: False, args.duration, paced_hook)
        result["paced"] = win.result()
        times = sorted(fan_times[first:])
        result["paced"]["messages"] = len(times)
        result["paced"]["stalls"] = stalls[0]
        result["paced"]["fanout_ms_p50"] = percentile(times, 0.5) * 1000
        result["paced"]["fanout_ms_p99"] = percentile(times, 0.99) * 1000
        b.drain(lambda: eng.delivered >= target[0], "paced")
        log(f"paced n={n}: {result['paced']['rate']:.0f} deliveries/s")
    result["errors"] = eng.errors
    result["failed"] = eng.failed
    if eng.failed:
        result["last_failure"] = eng.last_failure
    return result


STALL_GAP = 1.0  # seconds without a delivery to the live receivers that count as a stall
#: The stalled receiver's socket: the smallest receive buffer (the kernel makes it about
#: 2 KB) and a 256-byte MSS advertised in its SYN. With the receive buffer alone, Linux
#: still lets the relay's send buffer for it grow to megabytes on loopback, and a stall
#: would take minutes of 100-byte messages to show; with both, the relay's kernel holds
#: about 30 KB for it and the rest is up to the relay.
STALL_SOCKOPTS = (
    (socket.SOL_SOCKET, socket.SO_RCVBUF, 1024),
    (socket.IPPROTO_TCP, socket.TCP_MAXSEG, 256),
)


def stalled(b: Bench) -> dict[str, Any]:
    """Bursty fan-out to N live receivers while one member of the channel never reads."""
    args = b.args
    n, size = args.n, args.size
    eng = b.engine
    channel = f"/c/stall-{b.tag}"
    t0 = time.perf_counter()
    # The stalled member joins first, reads its self-join and nothing after: the join
    # notices of everyone after it are the first things the relay holds for it.
    stuck = eng.connect(channel, receiver=False, sockopts=STALL_SOCKOPTS)
    if not eng.run(lambda: (stuck.state == OPEN and bool(stuck.uid)) or stuck.state == CLOSED, args.setup_timeout):
        raise RuntimeError("stalled receiver: no self-join")
    if stuck.state == CLOSED:
        raise RuntimeError(f"stalled receiver failed: {eng.last_failure}")
    stuck.pause()
    receivers = b.connect_many([channel] * n, args.setup_timeout)
    sender = b.connect_many([channel + "?echo=true"], args.setup_timeout)[0]
    sender.receiver = False
    members = n + 2
    b.wait_others(sum(members - r.total for r in receivers), args.setup_timeout, "join notices")
    log(f"stalled setup n={n}: {time.perf_counter() - t0:.1f}s")

    others0, leaves0, failed0 = eng.others, eng.leaves, eng.failed
    data0 = {r: r.data for r in receivers}
    bursty = Bursty(eng, Feeder(sender, size), n, args.window)
    clock = {"start": time.perf_counter(), "progress": time.perf_counter(), "gap": 0.0, "count": eng.delivered}
    dropped_at: list[float] = []

    def track() -> None:
        now = time.perf_counter()
        if eng.delivered != clock["count"]:
            clock["count"] = eng.delivered
            clock["progress"] = now
        elif bursty.sent and not bursty.done():
            # Messages are owed and nothing arrives: the relay is not delivering.
            clock["gap"] = max(clock["gap"], now - clock["progress"])
        else:
            clock["progress"] = now
        if not dropped_at and eng.leaves > leaves0:
            dropped_at.append(now - clock["start"])

    def hook() -> None:
        bursty()
        track()

    eng.run(lambda: False, args.warmup, hook)
    win = Window(args, lambda: eng.delivered)
    eng.run(lambda: False, args.duration, hook)
    out: dict[str, Any] = {"n": n, "size": size, "window": win.result()}
    out["rate"] = out["window"]["rate"]
    # Also from the first message on: a relay that stalled during the warm-up has 0 above.
    out["rate_from_start"] = (eng.delivered - bursty.deliv0) / (time.perf_counter() - clock["start"])
    eng.coalesce = 0.0
    # Bounded: a relay that stopped delivering never gets there.
    eng.run(bursty.done, args.stall_drain, track)
    counts = sorted(r.data - data0[r] for r in receivers)
    sent = bursty.sent
    out.update(
        {
            "sent": sent,
            "acked": bursty.acked,
            "min_received": counts[0] if counts else 0,
            "max_received": counts[-1] if counts else 0,
            "receivers_complete": sum(c >= sent for c in counts),
            "complete": bool(counts) and counts[0] >= sent and eng.failed == failed0,
            "longest_gap_s": round(clock["gap"], 3),
            "stalled": clock["gap"] > STALL_GAP,
            "live_failed": eng.failed - failed0,
            "other_frames": eng.others - others0,
        }
    )
    # What became of the stalled member: a leave notice to the others means the relay
    # dropped it; reading it now shows what the relay had kept for it and its close code.
    dropped = eng.leaves > leaves0
    data_before, other_before = stuck.data, stuck.other
    stuck.resume()
    resumed = time.perf_counter()
    eng.run(lambda: stuck.state == CLOSED, args.stall_resume)
    out["stalled_receiver"] = {
        "dropped": dropped,
        "dropped_after_s": round(dropped_at[0], 3) if dropped else None,
        "close_code": stuck.close_code,
        "closed": stuck.state == CLOSED,
        "closed_after_resume_s": round(time.perf_counter() - resumed, 3) if stuck.state == CLOSED else None,
        "read_after": {"data": stuck.data - data_before, "other": stuck.other - other_before},
    }
    log(
        f"stalled n={n}: {out['rate']:.0f} deliveries/s, sent {sent}, received {out['min_received']}.."
        f"{out['max_received']}, complete={out['complete']} stalled={out['stalled']} "
        f"(longest gap {out['longest_gap_s']:.2f}s), stalled member dropped={dropped}"
        f" close={stuck.close_code}"
    )
    return out


def latency(b: Bench) -> dict[str, Any]:
    args = b.args
    n, size, rate = args.n, args.size, args.rate
    eng = b.engine
    _receivers, sender = b.fanout_setup(n, "")
    interval = 1.0 / rate
    warm_msgs = int(args.warmup * rate)
    total_msgs = warm_msgs + int(args.duration * rate)
    times = eng.send_times
    deliv0 = eng.delivered
    next_at = [time.perf_counter()]
    eng.record_latency = True
    eng.latency_from_seq = warm_msgs

    def hook() -> float | None:
        now = time.perf_counter()
        if len(times) < total_msgs and now >= next_at[0]:
            seq = len(times)
            times.append(now)
            sender.send(client_frame(make_message(seq, size)))
            if seq == warm_msgs:
                win_box.append(Window(args, lambda: eng.delivered))
            next_at[0] += interval
        if len(times) >= total_msgs:
            return None  # all sent: just drain
        return max(0.0, next_at[0] - time.perf_counter())

    win_box: list[Window] = []
    limit = args.warmup + args.duration + args.drain_timeout
    eng.run(lambda: len(times) >= total_msgs and eng.delivered - deliv0 >= total_msgs * n, limit, hook, 0.01)
    eng.record_latency = False
    lat = sorted(eng.latencies)
    expected = (total_msgs - warm_msgs) * n
    out: dict[str, Any] = {"n": n, "rate": rate, "size": size, "samples": len(lat), "expected": expected}
    out["p50_ms"] = percentile(lat, 0.5) * 1000
    out["p99_ms"] = percentile(lat, 0.99) * 1000
    out["max_ms"] = (lat[-1] if lat else float("nan")) * 1000
    if win_box:
        out["window"] = win_box[0].result()
    out["errors"] = eng.errors
    out["failed"] = eng.failed
    log(f"latency n={n}: p50 {out['p50_ms']:.2f} ms p99 {out['p99_ms']:.2f} ms max {out['max_ms']:.2f} ms")
    return out


def channels(b: Bench) -> dict[str, Any]:
    args = b.args
    pairs, size = args.pairs, args.size
    eng = b.engine
    paths = [f"/c/mc-{b.tag}-{i}" for i in range(pairs) for _ in range(2)]
    t0 = time.perf_counter()
    conns = b.connect_many(paths, args.setup_timeout)
    b.wait_others(pairs, args.setup_timeout, "partner join notices")
    log(f"channels setup: {2 * pairs} connections in {time.perf_counter() - t0:.1f}s")
    frame = client_frame(make_message(0, size))
    for conn in conns:
        conn.reply = frame
    for conn in conns:
        conn.send(frame * args.inflight)
    eng.run(lambda: False, args.warmup)
    win = Window(args, lambda: eng.delivered)
    eng.run(lambda: False, args.duration)
    out: dict[str, Any] = {"pairs": pairs, "inflight_per_conn": args.inflight, "size": size}
    out.update(win.result())
    out["errors"] = eng.errors
    out["failed"] = eng.failed
    log(f"channels: {out['rate']:.0f} messages/s")
    return out


def connrate(b: Bench) -> dict[str, Any]:
    args = b.args
    eng = b.engine
    counter = [0]
    active = [0]

    def on_open(conn: Conn) -> None:
        conn.close()

    def on_closed(conn: Conn) -> None:
        active[0] -= 1

    eng.on_open = on_open
    eng.on_closed = on_closed

    def hook() -> None:
        for _ in range(args.concurrency):
            if active[0] >= args.concurrency:
                break
            eng.connect(f"/c/cr-{b.tag}-{counter[0]}")
            counter[0] += 1
            active[0] += 1

    eng.run(lambda: False, args.warmup, hook)
    win = Window(args, lambda: eng.opened)
    failed0 = eng.failed
    eng.run(lambda: eng.failed - failed0 > 1000, args.duration, hook)
    out: dict[str, Any] = {"concurrency": args.concurrency}
    out.update(win.result())
    out["failed"] = eng.failed - failed0
    if out["failed"]:
        out["last_failure"] = eng.last_failure
    eng.run(lambda: not eng.conns, args.drain_timeout)  # in-flight ones close on open
    log(f"connrate: {out['rate']:.0f} handshakes/s ({out['failed']} failed)")
    return out


def memory(b: Bench) -> dict[str, Any]:
    args = b.args
    if not args.server_pid:
        raise RuntimeError("memory scenario needs --server-pid")
    warm = b.connect_many([f"/c/mw-{b.tag}-{i}" for i in range(args.warm_conns)], args.setup_timeout)
    b.engine.run(lambda: False, args.settle)
    before = proc_rss_kb(args.server_pid)
    conns = b.connect_many([f"/c/mem-{b.tag}-{i}" for i in range(args.count)], args.setup_timeout)
    b.engine.run(lambda: False, args.settle)
    after = proc_rss_kb(args.server_pid)
    per_conn = (after - before) * 1024 / args.count
    log(f"memory: {before} kB -> {after} kB, {per_conn:.0f} B per connection")
    return {
        "connections": len(conns),
        "warm_connections": len(warm),
        "rss_before_kb": before,
        "rss_after_kb": after,
        "bytes_per_conn": per_conn,
    }


def connect_at(b: Bench, port: int, paths: list[str]) -> list[Conn]:
    """``connect_many`` to another relay on the same host (the engine dials its ``port``)."""
    eng = b.engine
    home, eng.port = eng.port, port
    try:
        return b.connect_many(paths, b.args.setup_timeout)
    finally:
        eng.port = home


def cpu_seconds(pids: list[int]) -> list[float]:
    return [proc_cpu(pid) for pid in pids]


def proc_detail(pid: int) -> tuple[float, float, int, int]:
    """User and system CPU seconds of ``pid``, its voluntary context switches (its waits for
    the event loop's next wake-up) and the involuntary ones (preempted)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/status") as f:
            switches = dict(line.split(":") for line in f if "ctxt_switches" in line)
    except OSError:
        return 0.0, 0.0, 0, 0
    voluntary, preempted = int(switches["voluntary_ctxt_switches"]), int(switches["nonvoluntary_ctxt_switches"])
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK, voluntary, preempted


def cluster_stats(host: str, ports: list[int]) -> list[dict[str, Any]]:
    """Each relay's ``cluster`` counters from its ``GET /health`` ({} when it has none)."""
    stats = []
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=5) as reply:
                stats.append(json.loads(reply.read()).get("cluster") or {})
        except (OSError, ValueError):
            stats.append({})
    return stats


class RelayReadings:
    """What the relays of a cluster run used over a measured window: the CPU of each relay
    (``--relay-pids``, user and system, its waits and preemptions) and of Redis
    (``--redis-pid``), the other processes' CPU, and each node's ``cluster`` counters from
    ``GET /health`` (taken just outside the CPU readings)."""

    def __init__(self, b: Bench, ports: list[int]) -> None:
        args = b.args
        self.args = args
        self.ports = ports
        self.relay_pids = [int(pid) for pid in args.relay_pids.split(",") if pid]
        self.pids = [*self.relay_pids, *([args.redis_pid] if args.redis_pid else [])]
        self.health0 = cluster_stats(args.host, ports)
        self.cpu0, self.cores0 = cpu_seconds(self.pids), core_times()
        self.detail0 = [proc_detail(pid) for pid in self.relay_pids]

    def result(self, out: dict[str, Any]) -> None:
        """Stop the readings and add them to ``out`` (which has ``window`` already)."""
        args = self.args
        cpu1, cores1 = cpu_seconds(self.pids), core_times()
        detail1 = [proc_detail(pid) for pid in self.relay_pids]
        out["cluster_stats"] = [
            {key: value - before.get(key, 0) for key, value in after.items() if type(value) in (int, float)}
            for before, after in zip(self.health0, cluster_stats(args.host, self.ports), strict=True)
        ]
        seconds = out["window"]["seconds"]
        used = [after - before for before, after in zip(self.cpu0, cpu1, strict=True)]
        out["relay_cpu_s"] = [round(u, 3) for u in used[: len(self.relay_pids)]]
        out["redis_cpu_s"] = round(used[-1], 3) if args.redis_pid else None
        # Where each relay's CPU went: user (Python) and system (mostly socket calls); wake-ups.
        out["relay_detail"] = [
            {
                "user_s": round(a[0] - b[0], 3),
                "system_s": round(a[1] - b[1], 3),
                "waits": a[2] - b[2],
                "preempted": a[3] - b[3],
            }
            for b, a in zip(self.detail0, detail1, strict=True)
        ]
        out["load_cpu_s"] = round(out["window"]["load_cpu"] * seconds, 3)
        # CPU that processes outside the benchmark took (task time on every core, minus ours).
        task = sum(cores1[c][1] - self.cores0[c][1] for c in cores1 if c in self.cores0) / CLK_TCK
        out["other_cpu_s"] = round(max(0.0, task - sum(used) - out["load_cpu_s"]), 3)


def cluster(b: Bench) -> dict[str, Any]:
    """Bursty fan-out with the receivers split over two relays of one cluster.

    The sender is on ``--port`` with ``n - far_n`` receivers, the other ``far_n`` are on
    ``--far-port`` (with equal ports, or ``far_n`` 0, everyone is on one relay). The sender
    has no echo: a message is acknowledged when it reaches the last receiver to join on
    the far relay, so the window bounds what is in flight across Redis. The CPU of the
    relays (``--relay-pids``) and of Redis (``--redis-pid``) is read over the window."""
    args = b.args
    n, size = args.n, args.size
    far_port = args.far_port or args.port
    far_n = min(n, args.far_n if args.far_n >= 0 else n // 2) if far_port != args.port else 0
    eng = b.engine
    channel = f"/c/cluster-{b.tag}"
    t0 = time.perf_counter()
    near = b.connect_many([channel] * (n - far_n), args.setup_timeout)
    far = connect_at(b, far_port, [channel] * far_n)
    sender = b.connect_many([channel], args.setup_timeout)[0]
    sender.receiver = False
    receivers = near + far
    b.wait_others(sum(n + 1 - r.total for r in receivers), args.setup_timeout, "join notices")
    log(f"cluster setup n={n} ({n - far_n} near, {far_n} far): {time.perf_counter() - t0:.1f}s")

    ack = (far or near)[-1]
    bursty = Bursty(eng, Feeder(sender, size), n, args.window, ack=ack)

    def hook() -> None:
        bursty()
        eng.coalesce = min(eng.coalesce, args.coalesce_cap)

    eng.run(lambda: False, args.warmup, hook)
    readings = RelayReadings(b, [args.port] if far_port == args.port else [args.port, far_port])
    win = Window(args, lambda: eng.delivered)
    near0, far0, sent0 = sum(r.data for r in near), sum(r.data for r in far), bursty.sent
    eng.run(lambda: False, args.duration, hook)
    out: dict[str, Any] = {"n": n, "near_n": n - far_n, "far_n": far_n, "size": size, "window_msgs": args.window}
    out["window"] = win.result()
    readings.result(out)
    out["deliveries"] = out["window"]["count"]
    out["near_deliveries"] = sum(r.data for r in near) - near0
    out["far_deliveries"] = sum(r.data for r in far) - far0
    out["messages"] = bursty.sent - sent0
    out["coalesce_ms"] = round(eng.coalesce * 1000, 2)
    eng.coalesce = 0.0
    out["complete"] = b.drain(bursty.done, "cluster")
    return cluster_result(eng, out, f"cluster n={n}")


def cluster_rooms(b: Bench) -> dict[str, Any]:
    """Many small rooms across two relays of one cluster: ``--pairs`` two-member channels,
    one member of each on ``--port`` and its partner on ``--far-port`` (with equal ports,
    both on one relay), all chatting as in ``channels``: each connection keeps
    ``--inflight`` messages in flight to its partner and answers every message it gets with
    one more. The readings are those of ``cluster``."""
    args = b.args
    pairs, size = args.pairs, args.size
    far_port = args.far_port or args.port
    eng = b.engine
    paths = [f"/c/rooms-{b.tag}-{i}" for i in range(pairs)]
    t0 = time.perf_counter()
    near = b.connect_many(paths, args.setup_timeout)
    far = connect_at(b, far_port, paths)
    b.wait_others(pairs, args.setup_timeout, "partner join notices")
    log(f"cluster rooms setup: {pairs} pairs in {time.perf_counter() - t0:.1f}s")
    frame = client_frame(make_message(0, size))
    conns = near + far
    for conn in conns:
        conn.reply = frame
    for conn in conns:
        conn.send(frame * args.inflight)
    eng.run(lambda: False, args.warmup)
    readings = RelayReadings(b, [args.port] if far_port == args.port else [args.port, far_port])
    win = Window(args, lambda: eng.delivered)
    near0, far0 = sum(r.data for r in near), sum(r.data for r in far)
    eng.run(lambda: False, args.duration)
    out: dict[str, Any] = {"pairs": pairs, "inflight_per_conn": args.inflight, "size": size}
    out["window"] = win.result()
    readings.result(out)
    out["deliveries"] = out["messages"] = out["window"]["count"]
    out["near_deliveries"] = sum(r.data for r in near) - near0
    out["far_deliveries"] = sum(r.data for r in far) - far0
    if far_port == args.port:  # one relay: every delivery is its own
        out["near_deliveries"] += out["far_deliveries"]
        out["far_deliveries"] = 0
    return cluster_result(eng, out, "cluster rooms")


def cluster_result(eng: Engine, out: dict[str, Any], label: str) -> dict[str, Any]:
    """A cluster scenario's readings ``out`` with the engine's errors, logged in one line."""
    out["errors"] = eng.errors
    out["failed"] = eng.failed
    if eng.failed:
        out["last_failure"] = eng.last_failure
    relay_cpu = sum(out["relay_cpu_s"])
    log(
        f"{label}: {out['window']['rate']:.0f} deliveries/s, relays {relay_cpu:.2f} CPU-s"
        f" ({out['deliveries'] / relay_cpu if relay_cpu else 0:.0f} deliveries per CPU-s), redis {out['redis_cpu_s']}"
    )
    return out


SCENARIOS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "fanout": fanout,
    "latency": latency,
    "channels": channels,
    "connrate": connrate,
    "memory": memory,
    "stalled": stalled,
    "cluster": cluster,
    "cluster-rooms": cluster_rooms,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--scenario", choices=sorted(SCENARIOS), required=True)
    p.add_argument("--server-pid", type=int, default=0, help="for RSS and server CPU readings")
    p.add_argument("--cpu", type=int, default=1, help="core to pin to (-1: no pinning)")
    p.add_argument("--server-cpu", type=int, default=0, help="core the relay is pinned to")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before")
    p.add_argument("--setup-timeout", type=float, default=300.0)
    p.add_argument("--drain-timeout", type=float, default=20.0)
    p.add_argument("--stall-drain", type=float, default=2.0, help="stalled: seconds to wait for the last deliveries")
    p.add_argument("--stall-resume", type=float, default=1.0, help="stalled: seconds reading the stalled member after")
    p.add_argument("--size", type=int, default=100, help="client message bytes")
    p.add_argument("--n", type=int, default=1000, help="fanout/latency receivers")
    p.add_argument("--modes", default="bursty,paced", help="fanout modes")
    p.add_argument("--sse", type=float, default=0.0, help="fanout: share of the receivers on SSE (0 to 1)")
    p.add_argument("--window", type=int, default=64, help="bursty messages in flight")
    p.add_argument("--rate", type=float, default=100.0, help="latency messages per second")
    p.add_argument("--pairs", type=int, default=1000, help="channels, cluster-rooms: two-member channels")
    p.add_argument("--inflight", type=int, default=2, help="channels: messages in flight per conn")
    p.add_argument("--concurrency", type=int, default=32, help="connrate: parallel handshakes")
    p.add_argument("--count", type=int, default=5000, help="memory: idle connections")
    p.add_argument("--warm-conns", type=int, default=20, help="memory: opened before the baseline")
    p.add_argument("--settle", type=float, default=1.0, help="memory: seconds before RSS reads")
    p.add_argument("--far-port", type=int, default=0, help="cluster(-rooms): the second relay's port (0: --port)")
    p.add_argument("--far-n", type=int, default=-1, help="cluster: receivers on the far relay (-1: n/2)")
    p.add_argument("--relay-pids", default="", help="cluster: comma list of relay pids for CPU readings")
    p.add_argument("--redis-pid", type=int, default=0, help="cluster: Redis's pid for its CPU reading")
    p.add_argument("--coalesce-cap", type=float, default=MAX_COALESCE, help="cluster: most seconds of read coalescing")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cpu >= 0 and args.cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {args.cpu})
    raise_nofile_limit()
    bench = Bench(args)
    started = time.perf_counter()
    try:
        result = SCENARIOS[args.scenario](bench)
        result["ok"] = True
    except (RuntimeError, OSError) as exc:
        log(f"scenario {args.scenario} failed: {exc}")
        result = {"ok": False, "error": str(exc)}
    finally:
        bench.engine.close_all()
    result["scenario"] = args.scenario
    result["wall_seconds"] = round(time.perf_counter() - started, 2)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
