"""Presence at scale: N members filling one channel, with coalesced presence on and off.

    python bench/presence.py [--n 10000] [--rates 100,1000,10000] [--above 100] [--interval 1.0] [--json PATH]
    python bench/presence.py --sockets [--n 10000] [--above 100]

The relay's hub runs in this process, with no sockets: N members join one channel at RATE
joins per second of simulated time (``relaycore.testing.FakeClock``). The transport's part
is played as the native server plays it: every 10 ms of that time the outboxes that got
bytes are drained (each one's queued frames joined, as for one ``send()``), and every
0.25 s the hub is ticked. Nobody announces.

- **deliveries**: the frames put into the members' outboxes, self-joins apart;
- **wall** and **CPU**: this process's seconds for the whole fill (the core's work and the
  joining of bytes; a real server adds a ``send()`` per member per pass on top).

Off (``[presence] coalesce_above = 0``, the default), the join events number N(N-1)/2
whatever the rate, so off runs once; on (``coalesce_above = --above``) runs at each rate.

``--sockets``: the same fill over real sockets, off then on. A relay process (``python -m
transports serve``, asyncio, ``bench/relaycore-bench.toml``) on one core; N clients of
``bench/wsclient.py`` in this process, on the other, connecting as fast as the relay
admits them (64 handshakes in flight). Deliveries are the join and leave frames the
clients received; **settled** is the wall time from the first connect to the last such
frame; **relay CPU** the relay process's CPU seconds meanwhile. Each process holds N
sockets: mind the descriptor limit (``ulimit -n``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from relaycore import Config, Hub, JoinOptions, Outbox, PresenceConfig  # noqa: E402
from relaycore.testing import FakeClock, seeded_uids  # noqa: E402

CHANNEL = "stage"
PASS = 0.01  # seconds of simulated time per poll pass (a drain)
TICK = 0.25  # the native server's tick period with the default limits


class CountingOutbox(Outbox):
    """A WebSocket outbox that counts the frames put into it."""

    __slots__ = ("frames", "hello")

    def __init__(self, limit: int, ready: list[Outbox]) -> None:
        super().__init__(limit, ready)
        self.frames = 0
        self.hello = 0

    def put(self, payload: bytes, frame: bytes) -> bool:
        self.frames += 1
        return Outbox.put(self, payload, frame)

    def put_batch(self, payloads: list[bytes], frames: bytes) -> bool:
        self.frames += len(payloads)
        return Outbox.put_batch(self, payloads, frames)

    def put_always(self, payload: bytes, frame: bytes) -> None:
        self.hello += 1
        Outbox.put_always(self, payload, frame)


class Quiet:
    """A member's session: never kicked in this run."""

    def kick(self, code: int, reason: str) -> None:
        raise AssertionError(f"a member was closed: {code} {reason}")


def drain(hub: Hub) -> None:
    for outbox in hub.take_ready():
        while outbox:
            outbox.consume(len(outbox.view()))


def fill(n: int, rate: float, above: int, interval: float) -> dict[str, Any]:
    """N members join one channel at ``rate`` joins/s; what it cost."""
    config = Config(presence=PresenceConfig(coalesce_above=above, interval=interval))
    clock = FakeClock()
    hub = Hub(config, clock, seeded_uids(1))
    limit = config.limits.outbound_buffer_bytes
    outboxes: list[CountingOutbox] = []
    session = Quiet()
    options = JoinOptions()
    step = 1.0 / rate
    next_pass = next_tick = clock.monotonic()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        outbox = CountingOutbox(limit, hub.ready)
        outboxes.append(outbox)
        hub.join(CHANNEL, options, outbox, session)
        clock.advance(step)
        now = clock.monotonic()
        if now >= next_pass:
            drain(hub)
            next_pass = now + PASS
        if now >= next_tick:
            hub.tick(now)
            drain(hub)
            next_tick = now + TICK
    clock.advance(interval)  # the last coalesced event: everyone hears the full total
    hub.tick(clock.monotonic())
    drain(hub)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert len(hub.channels[CHANNEL].members) == n
    return {
        "n": n,
        "rate": rate,
        "coalesce_above": above,
        "deliveries": sum(outbox.frames for outbox in outboxes),
        "self_joins": sum(outbox.hello for outbox in outboxes),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "fill_s": round(n / rate, 2),
    }


def fill_sockets(n: int, above: int, interval: float, logs: Path, relay_core: int) -> dict[str, Any]:
    """N real clients join one channel of a relay process; what it cost (see the module's docs)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from load import Bench
    from measure import proc_cpu
    from run import HOST, Relay, free_port

    config = logs / f"presence-{above}.toml"
    base = (Path(__file__).resolve().parent / "relaycore-bench.toml").read_text()
    config.write_text(base + f"\n[presence]\ncoalesce_above = {above}\ninterval = {interval}\n")
    port = free_port()
    command = [sys.executable, "-m", "transports", "serve", "--host", HOST, "--port", str(port)]
    relay = Relay([*command, "--backend", "asyncio", "--config", str(config)], {}, relay_core, logs / "relay.log")
    pid = relay.start(port)
    try:
        bench = Bench(argparse.Namespace(host=HOST, port=port, setup_timeout=1800.0))
        engine = bench.engine
        cpu, start = proc_cpu(pid), time.perf_counter()
        conns = bench.connect_many([f"/c/{CHANNEL}"] * n, 1800.0)
        joined = time.perf_counter() - start
        last = settle(engine, interval + 1.0, 1800.0)
        cpu = proc_cpu(pid) - cpu
        if above == 0:
            expected = sum(n - conn.total for conn in conns)
            assert engine.others == expected, f"{engine.others} join events, {expected} expected"
        engine.close_all()
    finally:
        relay.stop()
    return {
        "n": n,
        "coalesce_above": above,
        "deliveries": engine.others,
        "joined_s": round(joined, 2),
        "settled_s": round(last - start, 2),
        "relay_cpu_s": round(cpu, 2),
    }


def settle(engine: Any, quiet: float, timeout: float) -> float:
    """Run the clients until no join or leave frame came for ``quiet`` seconds: when the last came."""
    count, last = engine.others, time.perf_counter()
    while time.perf_counter() - last < quiet:
        engine.poll_once(0.05)
        if engine.others != count:
            count, last = engine.others, time.perf_counter()
        if time.perf_counter() - last > timeout:
            raise RuntimeError(f"still receiving after {timeout} s")
    return last


def main_sockets(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import pick_cores
    from wsclient import raise_nofile_limit

    relay_core, load_core = pick_cores()
    os.sched_setaffinity(0, {load_core})  # the clients; the relay gets the other core
    raise_nofile_limit()
    with tempfile.TemporaryDirectory() as scratch:
        runs = [fill_sockets(args.n, above, args.interval, Path(scratch), relay_core) for above in (0, args.above)]
    header = f"{'presence':<28} {'deliveries':>12} {'joined s':>9} {'settled s':>10} {'relay CPU s':>12}"
    print(header)
    print("-" * len(header))
    for run in runs:
        label = "off (every event)" if run["coalesce_above"] == 0 else f"on (coalesce_above={run['coalesce_above']})"
        print(
            f"{label:<28} {run['deliveries']:>12,} {run['joined_s']:>9.2f} {run['settled_s']:>10.2f} "
            f"{run['relay_cpu_s']:>12.2f}"
        )
    off, on = runs
    print(
        f"on: {off['deliveries'] / max(1, on['deliveries']):,.0f}x fewer deliveries, "
        f"settled {off['settled_s'] / on['settled_s']:,.1f}x sooner, "
        f"{off['relay_cpu_s'] / on['relay_cpu_s']:,.1f}x less relay CPU"
    )
    if args.json:
        args.json.write_text(json.dumps({"sockets": runs}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--rates", default="100,1000,10000", help="joins per second (simulated), comma separated")
    parser.add_argument("--above", type=int, default=100, help="coalesce_above when on")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--sockets", action="store_true", help="real sockets: a relay process and N clients")
    args = parser.parse_args()
    if args.sockets:
        version = platform.python_version()
        print(f"presence at scale over sockets: {args.n:,} members fill one channel (Python {version})")
        main_sockets(args)
        return
    rates = [float(rate) for rate in args.rates.split(",")]
    print(f"presence at scale: {args.n:,} members fill one channel (Python {platform.python_version()})")
    runs = [fill(args.n, rates[len(rates) // 2], 0, args.interval)]
    runs += [fill(args.n, rate, args.above, args.interval) for rate in rates]
    off = runs[0]
    header = f"{'presence':<28} {'joins/s':>8} {'deliveries':>12} {'self-joins':>10} {'wall s':>8} {'CPU s':>7}"
    print(header)
    print("-" * len(header))
    for run in runs:
        label = "off (every event)" if run["coalesce_above"] == 0 else f"on (coalesce_above={run['coalesce_above']})"
        rate = "any" if run is off else f"{run['rate']:,.0f}"
        print(
            f"{label:<28} {rate:>8} {run['deliveries']:>12,} {run['self_joins']:>10,} "
            f"{run['wall_s']:>8.2f} {run['cpu_s']:>7.2f}"
        )
    for run in runs[1:]:
        print(
            f"at {run['rate']:,.0f} joins/s: {off['deliveries'] / max(1, run['deliveries']):,.0f}x fewer deliveries, "
            f"{off['wall_s'] / run['wall_s']:,.0f}x less wall time than off"
        )
    if args.json:
        args.json.write_text(json.dumps({"runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
