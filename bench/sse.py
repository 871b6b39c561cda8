"""The HTTP door's benchmark: fan-out to Server-Sent Events members beside WebSocket ones.

    python bench/sse.py [--n 1000] [--duration 5] [--rounds 3] [--quick] [--json PATH]

Starts ONE relaycore server (``--backend``, ``bench/relaycore-bench.toml``, pinned to the
first core) and runs ``load.py --scenario fanout --modes bursty`` against it (pinned to the
second core) in three setups, in turn, ``--rounds`` times: N receivers all on WebSocket, all
on SSE (``GET /c/<channel>`` with ``Accept: text/event-stream``), and half and half. The
sender is a WebSocket member with echo on, keeping ``--window`` 100-byte messages in flight
(1,024: the relay is saturated, so deliveries per second measure the relay, not the load
generator's pacing). The SSE receivers count events the way the WebSocket ones count frames:
a read of k same-sized events is checked at two strides, never parsed. A setup during which
other processes took more than 15 % of a core is measured again (``--retries``). Printed, per
round and as medians: deliveries per second, the relay's CPU per delivery (microseconds, user
+ system from /proc over the measured window), the relay's and the load generator's share of
their cores and what other processes took; then the ratios against all-WebSocket: SSE
deliveries per second (target at least 0.8) and the mixed channel's CPU per delivery (target
at most 1.10).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from report import BUSY_LOAD, NOISY, RELAY_SATURATED
from run import BENCH_DIR, HOST, Relay, free_port, peer_command, pick_cores, pinned
from wsclient import raise_nofile_limit

#: The setups: a name, and the share of the receivers on SSE.
SETUPS = (("websocket", 0.0), ("sse", 1.0), ("mixed", 0.5))
LABELS = {"websocket": "all WebSocket", "sse": "all SSE", "mixed": "half SSE"}


def load(args: argparse.Namespace, port: int, pid: int, cores: tuple[int, int], share: float) -> dict[str, Any]:
    """One fan-out run: its ``bursty`` readings."""
    setup = 60 + args.n * args.n / 20_000  # the join storm grows with N^2, as in run.py
    # fmt: off
    cmd = [
        sys.executable, str(BENCH_DIR / "load.py"), "--host", HOST, "--port", str(port),
        "--scenario", "fanout", "--modes", "bursty", "--n", str(args.n), "--sse", str(share),
        "--window", str(args.window), "--duration", str(args.duration), "--warmup", str(args.warmup),
        "--setup-timeout", str(setup),
        "--server-pid", str(pid), "--server-cpu", str(cores[0]), "--cpu", str(cores[1]),
    ]
    # fmt: on
    timeout = setup * 2 + 4 * (args.duration + args.warmup) + 60
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=pinned(cores[1]))
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {"ok": False, "error": done.stderr[-500:]}
    if not result.get("ok") or result.get("failed"):
        raise RuntimeError(f"load.py failed ({share:.0%} SSE): {result.get('error') or result}")
    bursty: dict[str, Any] = result["bursty"]
    bursty["us_per_delivery"] = bursty["server_cpu"] / bursty["rate"] * 1e6
    return bursty


def measured(args: argparse.Namespace, port: int, pid: int, cores: tuple[int, int], share: float) -> dict[str, Any]:
    """:func:`load`, run again (``--retries`` times at most) while other processes took
    more than NOISY of a core during it."""
    for attempt in range(1, args.retries + 2):
        reading = load(args, port, pid, cores, share)
        reading["attempt"] = attempt
        if reading.get("interference", 0.0) <= NOISY:
            break
        print(f"  ({share:.0%} SSE: other processes took {reading['interference']:.0%} of a core)", flush=True)
    return reading


def measure(args: argparse.Namespace) -> dict[str, Any]:
    cores = pick_cores()
    port = free_port()
    cmd, env = peer_command(f"relaycore-{args.backend}", port, "transports")
    relay = Relay(cmd, env, cores[0], Path(args.log))
    pid = relay.start(port)
    rounds: list[dict[str, Any]] = []
    try:
        for number in range(1, args.rounds + 1):
            entry = {name: measured(args, port, pid, cores, share) for name, share in SETUPS}
            rounds.append(entry)
            print(f"\nround {number}:")
            print(table(entry), flush=True)
    finally:
        relay.stop()
    medians = {
        name: {
            key: statistics.median(r[name][key] for r in rounds)
            for key in ("rate", "us_per_delivery", "server_cpu", "load_cpu", "interference")
        }
        for name, _ in SETUPS
    }
    per_round = [ratios_of(entry) for entry in rounds]
    return {"rounds": rounds, "medians": medians, "ratios": ratios_of(medians), "per_round": per_round}


def ratios_of(entry: dict[str, Any]) -> dict[str, float]:
    ws = entry["websocket"]
    return {
        "sse_over_websocket_rate": entry["sse"]["rate"] / ws["rate"],
        "sse_over_websocket_cpu": entry["sse"]["us_per_delivery"] / ws["us_per_delivery"],
        "mixed_over_websocket_cpu": entry["mixed"]["us_per_delivery"] / ws["us_per_delivery"],
    }


def table(entry: dict[str, Any]) -> str:
    """The setups' readings, one row each, and a note per reading to be wary of."""
    header = ("setup", "deliveries/s", "relay us/delivery", "relay core", "load core", "others")
    rows = [header]
    notes = []
    for name, _ in SETUPS:
        r = entry[name]
        rows.append(
            (
                LABELS[name],
                f"{r['rate']:,.0f}",
                f"{r['us_per_delivery']:.3f}",
                f"{r['server_cpu']:.0%}",
                f"{r['load_cpu']:.0%}",
                f"{r['interference']:.0%}",
            )
        )
        if r["load_cpu"] > BUSY_LOAD and r["server_cpu"] < RELAY_SATURATED:
            notes.append(f"{LABELS[name]}: load generator at {r['load_cpu']:.0%} of its core (may be load-bound)")
        if r["interference"] > NOISY:
            notes.append(f"{LABELS[name]}: other processes took {r['interference']:.0%} of a core (noisy)")
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  " + "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in rows
    ]
    return "\n".join(lines + [f"  note: {note}" for note in notes])


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="receivers in the channel")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per setup")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before")
    p.add_argument("--window", type=int, default=1024, help="messages in flight")
    p.add_argument("--rounds", type=int, default=3, help="each setup measured this many times, in turn")
    p.add_argument("--retries", type=int, default=None, help="re-runs of a disturbed setup (default 1, quick 0)")
    p.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    p.add_argument("--quick", action="store_true", help="N=20, 1 s, one round: checks that it runs")
    p.add_argument("--json", default="", help="write the readings here")
    p.add_argument("--log", default=str(BENCH_DIR / "results" / "sse-relay.log"), help="the relay's log")
    args = p.parse_args()
    if args.quick:
        args.n, args.duration, args.warmup, args.rounds = 20, 1.0, 0.2, 1
    if args.retries is None:
        args.retries = 0 if args.quick else 1
    return args


def main() -> int:
    args = parse_args()
    raise_nofile_limit()  # the relay inherits it: N WebSocket or SSE members, one socket each
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    found = measure(args)
    medians, ratios = found["medians"], found["ratios"]
    print(f"\nfan-out of 100-byte messages to N={args.n}, window {args.window}, {args.duration:g} s per setup;")
    print(f"medians of {args.rounds} round(s):")
    print(table(medians))

    def spread(key: str) -> str:
        values = [r[key] for r in found["per_round"]]
        return f" (per round {min(values):.2f}-{max(values):.2f})" if len(values) > 1 else ""

    rate, cpu, mixed = "sse_over_websocket_rate", "sse_over_websocket_cpu", "mixed_over_websocket_cpu"
    print(f"SSE / WebSocket deliveries per second: {ratios[rate]:.2f}{spread(rate)} (target at least 0.8)")
    print(f"SSE / WebSocket relay CPU per delivery: {ratios[cpu]:.2f}{spread(cpu)}")
    print(f"half SSE / WebSocket relay CPU per delivery: {ratios[mixed]:.2f}{spread(mixed)} (target at most 1.10)")
    if args.quick:
        print("quick run: it checks that everything runs and says nothing about the ratios")
    if args.json:
        keys = ("n", "duration", "warmup", "window", "rounds", "retries", "backend", "quick")
        meta = {key: getattr(args, key) for key in keys}
        meta |= {"started": started, "python": platform.python_version(), "machine": platform.machine()}
        Path(args.json).write_text(json.dumps({"meta": meta, **found}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
