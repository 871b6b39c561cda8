"""Cluster benchmark: two relaycore nodes on one Redis against one node, same run.

    python bench/cluster.py [--n 200] [--duration 5] [--rounds 5] [--quick] [--json PATH]
    python bench/cluster.py --scenario rooms [--pairs 1000] ...

Starts one redis-server, then measures three setups in turn, each with fresh relay processes:

- ``one``: a single relaycore node with ``--redis``, the sender and all N receivers on it;
- ``two``: nodes A and B on the same Redis, the sender and N/2 receivers on A, N/2 on B;
- ``plain``: a single relaycore process without ``--redis`` (the in-memory baseline).

In each, ``load.py --scenario cluster`` runs bursty fan-out of 100-byte messages: the sender
keeps ``--window`` messages unacknowledged, a message being acknowledged when it reaches a
receiver on the far node (B; the last receiver on a single node). With ``--scenario rooms``,
``load.py --scenario cluster-rooms`` runs many small rooms instead: ``--pairs`` two-member
channels, one member of each on A and its partner on B (both on the single node), chatting.
Over the measured window it reads the deliveries (counted by the receivers), the relays' and
Redis's CPU seconds (/proc/<pid>/stat) and each node's ``cluster`` counters (``GET /health``).

The figure to read is deliveries per relay CPU-second, and the ratio two nodes / one node
(the medians over ``--rounds``). On a 2-core machine the relays share the first core (one
node alone, or A and B together) while the load generator and Redis share the second, so
wall-clock rates say little about a cluster: the CPU-second normalisation is what makes the
comparison fair. See bench/README.md, "Cluster".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from run import BENCH_DIR, HOST, PeerStartError, Relay, free_port, idle_check, pick_cores, pinned
from wsclient import raise_nofile_limit

REDIS = "/usr/bin/redis-server"
START_TIMEOUT = 10.0
TARGET = 0.8  # the acceptance bound on the ratio
LOAD_BOUND = 0.9  # load generator share of its core above which the figure may be load-bound
NOISY = 0.15  # CPU share of a core taken by other processes above which the figure is noisy


@dataclass
class Setup:
    """One measured arrangement: ``nodes`` names the relays (None: a plain process)."""

    key: str
    label: str
    nodes: list[str | None]


SETUPS = [
    Setup("one", "one node (Redis)", ["A"]),
    Setup("two", "two nodes", ["A", "B"]),
    Setup("plain", "one node, no Redis", [None]),
]


class Redis:
    """One redis-server child on a free loopback port, nothing persisted, stopped by pid."""

    def __init__(self, core: int, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"redis://{HOST}:{self.port}/0"
        log = open(log_path, "ab")  # noqa: SIM115 (the child owns it)
        # fmt: off
        command = [
            REDIS, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
            "--dir", str(log_path.parent),
        ]
        # fmt: on
        self.proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=pinned(core)
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while self.command(b"PING") != b"+PONG":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise PeerStartError(f"redis-server did not start (see {log_path})")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def command(self, word: bytes) -> bytes:
        """One inline command, its reply's first line ('' when Redis is not there)."""
        try:
            with socket.create_connection((HOST, self.port), timeout=2) as sock:
                sock.sendall(word + b"\r\n")
                return sock.recv(4096).split(b"\r\n", 1)[0]
        except OSError:
            return b""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def health(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=2) as reply:
            result: dict[str, Any] = json.loads(reply.read())
            return result
    except (OSError, ValueError):
        return {}


def wait_online(port: int) -> None:
    """Until the node says it joined the cluster."""
    deadline = time.monotonic() + START_TIMEOUT
    while not health(port).get("cluster", {}).get("online"):
        if time.monotonic() > deadline:
            raise PeerStartError(f"node on port {port} not online in the cluster after {START_TIMEOUT:.0f}s")
        time.sleep(0.05)


def node_command(port: int, node: str | None, redis: Redis, backend: str) -> list[str]:
    config = str(BENCH_DIR / "relaycore-bench.toml")
    command = [sys.executable, "-m", "transports", "serve", "--host", HOST, "--port", str(port)]
    command += ["--backend", backend, "--config", config]
    if node is not None:
        command += ["--redis", redis.url, "--node-id", node]
    return command


def run_setup(
    setup: Setup, args: argparse.Namespace, redis: Redis, cores: tuple[int, int], logs: Path
) -> dict[str, Any]:
    """Fresh nodes, one load.py run, the nodes stopped; load.py's result plus the setup."""
    relay_core, load_core = cores
    redis.command(b"FLUSHALL")  # nothing left from the setup before (members, heartbeats)
    relays: list[Relay] = []
    ports: list[int] = []
    try:
        for node in setup.nodes:
            port = free_port()
            relay = Relay(node_command(port, node, redis, args.backend), {}, relay_core, logs / f"{setup.key}.log")
            relays.append(relay)
            relay.start(port)
            ports.append(port)
            if node is not None:
                wait_online(port)
        pids = [str(relay.proc.pid) for relay in relays if relay.proc is not None]
        setup_timeout = 60 + args.n * args.n / 20_000
        # fmt: off
        cmd = [
            sys.executable, str(BENCH_DIR / "load.py"), "--host", HOST,
            "--port", str(ports[0]), "--far-port", str(ports[-1]),
            "--duration", str(args.duration), "--warmup", str(args.warmup),
            "--relay-pids", ",".join(pids), "--redis-pid", str(redis.pid), "--cpu", str(load_core),
            "--server-cpu", str(relay_core), "--setup-timeout", str(setup_timeout),
        ]
        if args.scenario == "rooms":
            cmd += ["--scenario", "cluster-rooms", "--pairs", str(args.pairs)]
        else:
            cmd += [
                "--scenario", "cluster", "--n", str(args.n), "--window", str(args.window),
                "--coalesce-cap", str(args.coalesce_cap),
            ]
        # fmt: on
        timeout = 2 * setup_timeout + args.warmup + args.duration + 60
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=pinned(load_core), cwd=BENCH_DIR
            )
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"load generator timed out after {timeout:.0f}s"}
        for line in done.stderr.splitlines():
            print(f"    {line}", flush=True)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        if done.returncode != 0 or not lines:
            return {"ok": False, "error": f"load.py exit {done.returncode}: {done.stderr.strip()[-500:]}"}
        result: dict[str, Any] = json.loads(lines[-1])
        result["health"] = [health(port) for port in ports]
        for relay in relays:
            if relay.proc is not None and relay.proc.poll() is not None:
                result["ok"] = False
                result["error"] = f"a relay exited during the run (status {relay.proc.returncode})"
        return result
    except PeerStartError as exc:
        return {"ok": False, "error": f"failed to start: {exc}"}
    finally:
        for relay in relays:
            relay.stop()


def figures(result: dict[str, Any]) -> dict[str, Any]:
    """The table's figures for one setup's load.py result."""
    window = result["window"]
    seconds = window["seconds"]
    relay_cpu = sum(result["relay_cpu_s"])
    notes = []
    if window["load_cpu"] > LOAD_BOUND:
        notes.append(f"load generator at {window['load_cpu']:.0%} of its core: may be load-bound")
    other = result["other_cpu_s"] / seconds
    if other > NOISY:
        notes.append(f"other processes took {other:.0%} of a core: noisy")
    if not result.get("complete", True) or result.get("failed"):
        notes.append(
            f"incomplete: {result.get('failed', 0)} connection(s) failed, drain complete={result.get('complete')}"
        )
    return {
        "deliveries": result["deliveries"],
        "messages": result["messages"],
        "seconds": seconds,
        "relay_cpu_s": round(relay_cpu, 3),
        "relay_share": round(relay_cpu / seconds, 3),  # of the one core the relays share
        "relay_cpu_split_s": result["relay_cpu_s"],
        "per_relay_cpu_s": result["deliveries"] / relay_cpu if relay_cpu else 0.0,
        "per_wall_s": window["rate"],
        "redis_cpu_s": result["redis_cpu_s"],
        "load_cpu": window["load_cpu"],
        "other_cpu": round(other, 3),
        "near_deliveries": result["near_deliveries"],
        "far_deliveries": result["far_deliveries"],
        "cluster_stats": result["cluster_stats"],
        "relay_detail": result["relay_detail"],
        "notes": notes,
    }


def render(rows: dict[str, dict[str, Any]]) -> str:
    head = (
        f"{'setup':<20} {'deliveries':>10} {'relay CPU-s':>17} {'relays':>6} {'per CPU-s':>10} {'per s':>9}"
        f" {'Redis CPU-s':>11} {'load':>5}"
    )
    lines = [head, "-" * len(head)]
    for setup in SETUPS:
        row = rows.get(setup.key)
        if row is None:
            continue
        if "error" in row:
            lines.append(f"{setup.label:<20} FAILED: {row['error']}")
            continue
        split = "+".join(f"{c:.2f}" for c in row["relay_cpu_split_s"])
        cpu = f"{row['relay_cpu_s']:.2f}" + (f" ({split})" if len(row["relay_cpu_split_s"]) > 1 else "")
        lines.append(
            f"{setup.label:<20} {row['deliveries']:>10} {cpu:>17} {row['relay_share']:>6.0%}"
            f" {row['per_relay_cpu_s']:>10.0f} {row['per_wall_s']:>9.0f}"
            f" {row['redis_cpu_s']:>11.2f} {row['load_cpu']:>5.0%}"
        )
    for setup in SETUPS:
        row = rows.get(setup.key)
        for note in row.get("notes", []) if row else []:
            lines.append(f"  note ({setup.label}): {note}")
    lines.append("where the relays' CPU went (per node; user is mostly Python, system mostly socket calls):")
    for setup in SETUPS:
        row = rows.get(setup.key)
        if row is not None and "error" not in row:
            lines += node_lines(setup, row)
    return "\n".join(lines)


def node_lines(setup: Setup, row: dict[str, Any]) -> list[str]:
    lines = []
    deliveries = [row["near_deliveries"], row["far_deliveries"]]
    stats = row["cluster_stats"] or [{}] * len(setup.nodes)
    for k, (node, detail, cluster) in enumerate(zip(setup.nodes, row["relay_detail"], stats, strict=False)):
        cpu = detail["user_s"] + detail["system_s"]
        line = (
            f"  {setup.label}, {node or 'plain'}: {deliveries[k]} deliveries, {cpu:.2f} CPU-s"
            f" (user {detail['user_s']:.2f}, system {detail['system_s']:.2f}),"
            f" {deliveries[k] / cpu if cpu else 0:.0f} per CPU-s; {detail['waits']} waits,"
            f" {detail['preempted']} preempted"
        )
        if cluster and len(setup.nodes) > 1:
            line += (
                f"; published {cluster.get('published', 0)} messages,"
                f" received {cluster.get('records_in', 0)} records ({cluster.get('bytes_in', 0)} B)"
            )
        lines.append(line)
    return lines


def ratios(rows: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    def per(key: str) -> float:
        return float(rows.get(key, {}).get("per_relay_cpu_s") or 0.0)

    return {
        "two_over_one": per("two") / per("one") if per("one") and per("two") else None,
        "one_over_plain": per("one") / per("plain") if per("plain") and per("one") else None,
    }


def measure_round(
    number: int, setups: list[Setup], args: argparse.Namespace, redis: Redis, cores: tuple[int, int], logs: Path
) -> dict[str, Any]:
    """Every setup once; a setup disturbed by other processes is measured again (``--retries``)."""
    rows: dict[str, dict[str, Any]] = {}
    raw: dict[str, Any] = {}
    for setup in setups:
        for attempt in range(1, args.retries + 2):
            print(f"  [round {number}] {setup.label} ...", flush=True)
            result = run_setup(setup, args, redis, cores, logs)
            result["attempt"] = attempt
            raw[setup.key] = result
            if not result.get("ok"):
                rows[setup.key] = {"error": result.get("error")}
                break
            rows[setup.key] = figures(result)
            if rows[setup.key]["other_cpu"] <= NOISY:
                break
            print(f"  [round {number}] other processes took {rows[setup.key]['other_cpu']:.0%} of a core", flush=True)
    return {"rows": rows, "ratios": ratios(rows), "raw": raw}


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per setup, the median over rounds of deliveries per relay CPU-second; their ratios."""
    per: dict[str, float] = {}
    for setup in SETUPS:
        values = [
            r["rows"][setup.key]["per_relay_cpu_s"] for r in rounds if "per_relay_cpu_s" in r["rows"].get(setup.key, {})
        ]
        if values:
            per[setup.key] = statistics.median(values)
    rows = {key: {"per_relay_cpu_s": value} for key, value in per.items()}
    return {"per_relay_cpu_s": per, "ratios": ratios(rows), "round_ratios": [r["ratios"] for r in rounds]}


def print_ratios(found: dict[str, float | None]) -> None:
    two_over_one, one_over_plain = found["two_over_one"], found["one_over_plain"]
    if two_over_one is not None:
        verdict = "ok" if two_over_one >= TARGET else f"BELOW {TARGET}"
        print(f"two nodes / one node, deliveries per relay CPU-second: {two_over_one:.2f} ({verdict}, target {TARGET})")
    if one_over_plain is not None:
        print(f"one node with Redis / without, deliveries per relay CPU-second: {one_over_plain:.2f}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="fanout", choices=["fanout", "rooms"], help="one channel, or many pairs")
    p.add_argument("--n", type=int, default=200, help="receivers (split N/2 and N/2 over two nodes)")
    p.add_argument("--pairs", type=int, default=1000, help="rooms: two-member channels (one member on each node)")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per setup")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before")
    p.add_argument("--window", type=int, default=1024, help="messages in flight (acknowledged on the far node)")
    p.add_argument("--coalesce-cap", type=float, default=0.0, help="most seconds of read coalescing (see README)")
    p.add_argument("--rounds", type=int, default=5, help="measure the setups this many times, in turn (quick: 1)")
    p.add_argument("--retries", type=int, default=1, help="re-runs of a setup disturbed by other processes (quick: 0)")
    p.add_argument("--only", default="", help="comma list of setups: " + ",".join(s.key for s in SETUPS))
    p.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    p.add_argument("--quick", action="store_true", help="N=20, 1 s per setup (smoke run)")
    p.add_argument("--json", default="", metavar="PATH", help="write the results here")
    p.add_argument("--logs", default=str(BENCH_DIR / "results" / "cluster-logs"), help="relay and Redis logs")
    args = p.parse_args()
    if args.quick:
        args.n, args.pairs, args.duration, args.warmup, args.rounds, args.retries = 20, 20, 1.0, 0.2, 1, 0
    return args


def main() -> int:
    args = parse_args()
    only = {key.strip() for key in args.only.split(",") if key.strip()}
    setups = [setup for setup in SETUPS if not only or setup.key in only]
    logs = Path(args.logs).resolve()
    logs.mkdir(parents=True, exist_ok=True)
    for setup in SETUPS:
        (logs / f"{setup.key}.log").write_bytes(b"")
    raise_nofile_limit()  # inherited by the relays
    cores = pick_cores()
    os.sched_setaffinity(0, {cores[1]})  # keep the runner off the relays' core
    busy = idle_check(cores)
    print(
        f"relays on core {cores[0]} (both nodes share it), load generator and Redis on core {cores[1]};"
        f" idle check: {busy}",
        flush=True,
    )
    if any(v > NOISY for v in busy.values()):
        print("warning: the machine is busy; figures will be noisy", flush=True)
    started = time.time()
    redis = Redis(cores[1], logs / "redis.log")
    try:
        rounds = [measure_round(number, setups, args, redis, cores, logs) for number in range(1, args.rounds + 1)]
    finally:
        redis.stop()
    if args.scenario == "rooms":
        what = f"{args.pairs} two-member rooms, each split over the two nodes, chatting (100-byte messages)"
    else:
        what = f"fan-out of 100-byte messages to N={args.n} receivers, window {args.window}"
    print(
        f"\n{what}, {args.duration:g} s measured per setup."
        "\nThe relays share one core (a single node alone, or nodes A and B together);"
        " the load generator and Redis\nshare the other. Read deliveries per relay CPU-second: with three"
        " processes or more on two cores,\nthe CPU-second normalisation is what makes the setups comparable"
        " (wall-clock per s is beside it)."
    )
    for number, entry in enumerate(rounds, 1):
        print(f"\nround {number}\n" + render(entry["rows"]))
        print_ratios(entry["ratios"])
    if args.quick:
        print("\nquick run: it checks that everything runs and says nothing about the ratio (N=20, 20 pairs, 1 s)")
    summary = summarise(rounds)
    if len(rounds) > 1:
        per = summary["per_relay_cpu_s"]
        print(f"\nmedian of {len(rounds)} rounds, deliveries per relay CPU-second: ")
        print("  " + ", ".join(f"{setup.label} {per[setup.key]:.0f}" for setup in setups if per.get(setup.key)))
        print_ratios(summary["ratios"])
    if args.json:
        keys = ("quick", "scenario", "n", "pairs", "duration", "warmup", "window", "rounds", "backend")
        meta = {key: getattr(args, key) for key in keys}
        meta.update(
            coalesce_cap=args.coalesce_cap,
            started=started,
            wall_seconds=round(time.time() - started, 1),
            python=platform.python_version(),
            platform=platform.platform(),
            cpu_count=os.cpu_count(),
            cores={"relays": cores[0], "load_and_redis": cores[1]},
            idle_check_busy=busy,
        )
        Path(args.json).write_text(json.dumps({"meta": meta, "summary": summary, "rounds": rounds}, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
