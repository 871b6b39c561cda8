"""The HTTP door's benchmark: fan-out to Server-Sent Events members beside WebSocket ones.

    python bench/sse.py [--n 1000] [--duration 5] [--rounds 3] [--quick] [--json PATH]

Starts ONE relaycore server (``--backend``, ``bench/relaycore-bench.toml``, pinned to the
first core) and runs ``load.py --scenario fanout --modes bursty`` against it in three
setups, in turn, ``--rounds`` times: N receivers all on WebSocket, all on SSE
(``GET /c/<channel>`` with ``Accept: text/event-stream``), and half and half. The sender is
a WebSocket member with echo on, keeping ``--window`` 100-byte messages in flight (1,024: the
relay is saturated, so deliveries per second measure the relay, not the load generator's
pacing). The SSE receivers count events the way the WebSocket ones count frames: a read of
k same-sized events is checked at two strides, never parsed. Printed:
deliveries per second and the relay's CPU per delivery (microseconds, from /proc), the
medians, and the ratios against all-WebSocket: SSE deliveries per second (target at least
0.8) and the mixed channel's CPU per delivery (target at most 1.10).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from run import BENCH_DIR, HOST, Relay, free_port, peer_command, pick_cores, pinned

#: The setups: a name, and the share of the receivers on SSE.
SETUPS = (("websocket", 0.0), ("sse", 1.0), ("mixed", 0.5))


def load(args: argparse.Namespace, port: int, pid: int, cores: tuple[int, int], share: float) -> dict[str, Any]:
    """One fan-out run: its ``bursty`` readings."""
    # fmt: off
    cmd = [
        sys.executable, str(BENCH_DIR / "load.py"), "--host", HOST, "--port", str(port),
        "--scenario", "fanout", "--modes", "bursty", "--n", str(args.n), "--sse", str(share),
        "--window", str(args.window), "--duration", str(args.duration), "--warmup", str(args.warmup),
        "--server-pid", str(pid), "--server-cpu", str(cores[0]), "--cpu", str(cores[1]),
    ]
    # fmt: on
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, preexec_fn=pinned(cores[1]))
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {"ok": False, "error": done.stderr[-500:]}
    if not result.get("ok") or result.get("failed"):
        raise RuntimeError(f"load.py failed ({share:.0%} SSE): {result.get('error') or result}")
    bursty: dict[str, Any] = result["bursty"]
    bursty["us_per_delivery"] = bursty["server_cpu"] / bursty["rate"] * 1e6
    return bursty


def measure(args: argparse.Namespace) -> dict[str, Any]:
    cores = pick_cores()
    port = free_port()
    cmd, env = peer_command(f"relaycore-{args.backend}", port, "transports")
    relay = Relay(cmd, env, cores[0], Path(args.log))
    pid = relay.start(port)
    rounds: list[dict[str, Any]] = []
    try:
        for number in range(1, args.rounds + 1):
            entry = {name: load(args, port, pid, cores, share) for name, share in SETUPS}
            rounds.append(entry)
            print(f"round {number}: " + "; ".join(render(name, entry[name]) for name, _ in SETUPS), flush=True)
    finally:
        relay.stop()
    medians = {
        name: {key: statistics.median(r[name][key] for r in rounds) for key in ("rate", "us_per_delivery")}
        for name, _ in SETUPS
    }
    ws = medians["websocket"]
    ratios = {
        "sse_over_websocket_rate": medians["sse"]["rate"] / ws["rate"],
        "sse_over_websocket_cpu": medians["sse"]["us_per_delivery"] / ws["us_per_delivery"],
        "mixed_over_websocket_cpu": medians["mixed"]["us_per_delivery"] / ws["us_per_delivery"],
    }
    return {"rounds": rounds, "medians": medians, "ratios": ratios}


def render(name: str, reading: dict[str, Any]) -> str:
    return f"{name} {reading['rate'] / 1e3:.0f}k/s {reading['us_per_delivery']:.3f} us"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="receivers in the channel")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per setup")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before")
    p.add_argument("--window", type=int, default=1024, help="messages in flight")
    p.add_argument("--rounds", type=int, default=3, help="each setup measured this many times, in turn")
    p.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    p.add_argument("--quick", action="store_true", help="N=20, 1 s, one round: checks that it runs")
    p.add_argument("--json", default="", help="write the readings here")
    p.add_argument("--log", default=str(BENCH_DIR / "results" / "sse-relay.log"), help="the relay's log")
    args = p.parse_args()
    if args.quick:
        args.n, args.duration, args.warmup, args.rounds = 20, 1.0, 0.2, 1
    return args


def main() -> int:
    args = parse_args()
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    found = measure(args)
    medians, ratios = found["medians"], found["ratios"]
    print(f"\nfan-out of 100-byte messages to N={args.n}, window {args.window}, {args.duration:g} s per setup;")
    print(f"medians of {args.rounds} round(s):")
    for name, _ in SETUPS:
        print(f"  {render(name, medians[name])}")
    print(f"SSE / WebSocket deliveries per second: {ratios['sse_over_websocket_rate']:.2f} (target at least 0.8)")
    print(f"SSE / WebSocket relay CPU per delivery: {ratios['sse_over_websocket_cpu']:.2f}")
    mixed = ratios["mixed_over_websocket_cpu"]
    print(f"half SSE / WebSocket relay CPU per delivery: {mixed:.2f} (target at most 1.10)")
    if args.quick:
        print("quick run: it checks that everything runs and says nothing about the ratios")
    if args.json:
        meta = {key: getattr(args, key) for key in ("n", "duration", "warmup", "window", "rounds", "backend", "quick")}
        Path(args.json).write_text(json.dumps({"meta": {**meta, "started": started}, **found}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
