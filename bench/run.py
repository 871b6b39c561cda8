"""Benchmark runner: every peer relay against every scenario, one command.

    python bench/run.py [--quick] [--peers relaycore-asyncio,relaycore-trio,relaycore-uvicorn,
                                           websockets,picows,starlette-uvicorn]
                        [--only fanout-1000,stalled] [--out bench/results]

For each peer and each scenario it starts a fresh relay subprocess on a free
127.0.0.1 port pinned to one core, waits until the port accepts, runs
bench/load.py pinned to another core, then stops the relay. It prints one
table per scenario with each peer's figure and the relaycore/peer ratios,
writes <out>/results.json and <out>/fanout.png. A peer that cannot start is
reported as failed and the others still run. The exit status is non-zero
only when the harness itself breaks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from measure import core_times
from report import NOISY, build_tables, plot_fanout, render
from wsclient import raise_nofile_limit

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
HOST = "127.0.0.1"
ALL_PEERS = [
    "relaycore-asyncio",
    "relaycore-trio",
    "relaycore-uvicorn",
    "websockets",
    "picows",
    "starlette-uvicorn",
]
#: relaycore's outbound_buffer_bytes in the stalled step: about 230 envelopes of a 100-byte
#: message. relaycore-bench.toml has 16 MiB, which 100-byte messages to one member take
#: many minutes to fill; live receivers never have more than a few kB queued.
STALL_OUTBOX = 32768
START_TIMEOUT = 20.0
STOP_GRACE = 3.0


class PeerStartError(Exception):
    """The relay did not come up; the message carries its output tail."""


@dataclass
class Step:
    """One load.py invocation against a fresh relay."""

    key: str
    args: list[str]
    timeout: float
    relay_env: dict[str, str] = field(default_factory=dict)  # extra environment for the relay


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    fanout_ns: list[int] = field(default_factory=list)
    latency_n: int = 0
    stalled_n: int = 0


def make_plan(quick: bool, only: set[str] | None, fanout_ns: list[int] | None, duration: float | None) -> Plan:
    if quick:
        dur, warm, ns, lat_n, pairs, count, settle, stall_n = 1.0, 0.2, [20], 20, 20, 200, 0.3, 20
    else:
        dur, warm, ns, lat_n, pairs, count, settle, stall_n = 5.0, 1.0, [100, 1000, 5000], 1000, 1000, 5000, 1.0, 1000
    dur = duration or dur
    ns = fanout_ns or ns
    timing = ["--duration", str(dur), "--warmup", str(warm)]
    plan = Plan(fanout_ns=ns, latency_n=lat_n, stalled_n=stall_n)
    for n in ns:
        # Setup cost grows with N^2 (every join is announced to the channel).
        setup = 60 + n * n / 20_000
        args = ["--scenario", "fanout", "--n", str(n), "--setup-timeout", str(setup), *timing]
        plan.steps.append(Step(f"fanout-{n}", args, setup * 2 + 4 * (dur + warm) + 60))
    # The stalled member's buffers fill during a longer warm-up; see README.
    stall_warm, stall_drain = (warm, 1.0) if quick else (max(warm, 2.0), 2.0)
    stall_setup = 60 + stall_n * stall_n / 20_000
    stall_args = ["--scenario", "stalled", "--n", str(stall_n), "--setup-timeout", str(stall_setup)]
    stall_args += ["--duration", str(dur), "--warmup", str(stall_warm), "--stall-drain", str(stall_drain)]
    plan.steps.append(
        Step(
            "stalled",
            stall_args,
            stall_setup * 2 + dur + stall_warm + stall_drain + 60,
            {"RELAYCORE_LIMITS_OUTBOUND_BUFFER_BYTES": str(STALL_OUTBOX)},
        )
    )
    lat_setup = 60 + lat_n * lat_n / 20_000
    plan.steps += [
        Step(
            "latency",
            ["--scenario", "latency", "--n", str(lat_n), "--setup-timeout", str(lat_setup), *timing],
            lat_setup * 2 + dur + warm + 60,
        ),
        Step("channels", ["--scenario", "channels", "--pairs", str(pairs), *timing], 120 + dur),
        Step("connrate", ["--scenario", "connrate", *timing], 60 + dur),
        Step("memory", ["--scenario", "memory", "--count", str(count), "--settle", str(settle)], 180),
    ]
    if only:
        plan.steps = [s for s in plan.steps if s.key in only or s.key.split("-")[0] in only]
        kept = {s.key for s in plan.steps}
        plan.fanout_ns = [n for n in ns if f"fanout-{n}" in kept]
    return plan


def pick_cores() -> tuple[int, int]:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        print("warning: one core available; relay and load generator share it", flush=True)
        return cores[0], cores[0]
    return cores[0], cores[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def uvicorn_command(app: str, port: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        *extra,
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]


def peer_command(
    peer: str, port: int, relaycore_module: str, config: str = str(BENCH_DIR / "relaycore-bench.toml")
) -> tuple[list[str], dict[str, str]]:
    """The relay's command line and the environment variables it needs on top of ours."""
    py = sys.executable
    common = ["--host", HOST, "--port", str(port)]
    if peer == "relaycore-uvicorn":
        return uvicorn_command("transports.asgi:app", port), {"RELAYCORE_CONFIG": config}
    if peer.startswith("relaycore-"):
        backend = peer.removeprefix("relaycore-")
        return [py, "-m", relaycore_module, "serve", *common, "--backend", backend, "--config", config], {}
    if peer == "websockets":
        return [py, str(BENCH_DIR / "ref_websockets.py"), *common], {}
    if peer == "picows":
        return [py, str(BENCH_DIR / "ref_picows.py"), *common], {}
    if peer == "starlette-uvicorn":
        return uvicorn_command("ref_starlette:app", port, "--app-dir", str(BENCH_DIR)), {}
    raise ValueError(f"unknown peer {peer!r}")


def pinned(core: int) -> Any:
    def setup() -> None:
        os.sched_setaffinity(0, {core})

    return setup


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Relay:
    """A relay subprocess for one step."""

    def __init__(self, cmd: list[str], env: dict[str, str], core: int, log_path: Path) -> None:
        self.cmd = cmd
        self.extra_env = env
        self.core = core
        self.log_path = log_path  # the peer's log; this run writes to a scratch file first
        self.scratch = log_path.with_suffix(".current")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, port: int) -> int:
        env = dict(os.environ)
        src = str(REPO_DIR / "src")
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.update(self.extra_env)
        with open(self.scratch, "wb") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=REPO_DIR,
                preexec_fn=pinned(self.core),
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.keep_log()
                raise PeerStartError(f"exited with status {self.proc.returncode}:\n{tail(self.log_path)}")
            try:
                with socket.create_connection((HOST, port), timeout=0.5):
                    return self.proc.pid
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise PeerStartError(f"port {port} not accepting after {START_TIMEOUT:.0f}s:\n{tail(self.log_path)}")

    def keep_log(self, head: int = 40, tail_lines: int = 40) -> None:
        """Append this run's output to the peer log, trimmed: teardown of
        thousands of connections can make relays log millions of lines."""
        try:
            lines = self.scratch.read_bytes().splitlines()
            self.scratch.unlink()
        except OSError:
            return
        if len(lines) > head + tail_lines:
            omitted = f"[... {len(lines) - head - tail_lines} lines omitted ...]".encode()
            lines = [*lines[:head], omitted, *lines[-tail_lines:]]
        with open(self.log_path, "ab") as log:
            log.write(b"\n".join([f"$ {' '.join(self.cmd)}".encode(), *lines, b""]))

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.keep_log()


def run_load(step: Step, port: int, server_pid: int, server_core: int, load_core: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(BENCH_DIR / "load.py"),
        "--host",
        HOST,
        "--port",
        str(port),
        "--server-pid",
        str(server_pid),
        "--cpu",
        str(load_core),
        "--server-cpu",
        str(server_core),
        *step.args,
    ]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=step.timeout, preexec_fn=pinned(load_core), cwd=BENCH_DIR
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"load generator timed out after {step.timeout:.0f}s"}
    for line in done.stderr.splitlines():
        print(f"    {line}", flush=True)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"ok": False, "error": f"load.py exit {done.returncode}: {done.stderr.strip()[-500:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def max_interference(result: Any) -> float:
    """Largest "interference" reading anywhere in a load.py result."""
    if not isinstance(result, dict):
        return 0.0
    own = result.get("interference")
    nested = [max_interference(v) for v in result.values() if isinstance(v, dict)]
    return max([own if isinstance(own, (int, float)) else 0.0, *nested])


def run_peer(
    peer: str,
    plan: Plan,
    cores: tuple[int, int],
    out: Path,
    module: str,
    retries: int,
    config: str = str(BENCH_DIR / "relaycore-bench.toml"),
) -> dict[str, Any]:
    steps: dict[str, Any] = {}
    log_path = out / "logs" / f"{peer}.log"
    log_path.write_bytes(b"")
    for step in plan.steps:
        for attempt in range(1, retries + 2):
            port = free_port()
            cmd, env = peer_command(peer, port, module, config)
            relay = Relay(cmd, {**env, **step.relay_env}, cores[0], log_path)
            print(f"  [{peer}] {step.key} ...", flush=True)
            try:
                pid = relay.start(port)
            except PeerStartError as exc:
                print(f"  [{peer}] failed to start: {exc}", flush=True)
                return {"status": "failed", "error": f"failed to start: {exc}", "steps": steps}
            try:
                result = run_load(step, port, pid, cores[0], cores[1])
            finally:
                crashed = relay.proc is not None and relay.proc.poll() is not None
                relay.stop()
            if crashed:
                result.setdefault("relay_exit", relay.proc.returncode if relay.proc else None)
            result["attempt"] = attempt
            steps[step.key] = result
            if not result.get("ok"):
                print(f"  [{peer}] {step.key} failed: {result.get('error')}", flush=True)
                break
            other = max_interference(result)
            if other <= NOISY:
                break
            print(f"  [{peer}] {step.key}: other processes took {other:.0%} of a core", flush=True)
    status = "ok" if all(s.get("ok") for s in steps.values()) else "partial"
    return {"status": status, "error": None, "steps": steps}


def idle_check(cores: tuple[int, int]) -> dict[int, float]:
    """Busy share of our two cores over half a second before starting."""
    a = core_times()
    time.sleep(0.5)
    b = core_times()
    busy = {}
    for core in set(cores):
        db, dt = b[core][0] - a[core][0], b[core][2] - a[core][2]
        busy[core] = round(db / dt, 3) if dt else 0.0
    return busy


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Run the relaycore benchmark suite.")
    p.add_argument("--quick", action="store_true", help="small N and 1 s per scenario (smoke run)")
    p.add_argument("--peers", default=",".join(ALL_PEERS), help="comma list from " + ",".join(ALL_PEERS))
    p.add_argument("--out", default=str(BENCH_DIR / "results"), help="results directory")
    p.add_argument("--only", default="", help="comma list of steps, e.g. fanout,latency or fanout-1000")
    p.add_argument("--fanout-n", default="", help="comma list of fan-out N (overrides the default)")
    p.add_argument("--duration", type=float, default=None, help="measured seconds per scenario")
    p.add_argument(
        "--retries", type=int, default=None, help="re-runs of a step disturbed by other processes (default 1, quick 0)"
    )
    p.add_argument("--relaycore-module", default="transports", help="module run as `python -m X serve`")
    p.add_argument(
        "--relaycore-config",
        default=str(BENCH_DIR / "relaycore-bench.toml"),
        help="the relaycore peers' TOML file (bench/relaycore-bench-metrics.toml: the same with metrics on)",
    )
    return p.parse_args()


def main() -> int:
    args = parse_args()
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in ALL_PEERS]
    if unknown:
        print(f"unknown peer(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    only = {s.strip() for s in args.only.split(",") if s.strip()} or None
    ns = [int(n) for n in args.fanout_n.split(",") if n.strip()] or None
    plan = make_plan(args.quick, only, ns, args.duration)
    out = Path(args.out).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    raise_nofile_limit()  # inherited by the relays
    cores = pick_cores()
    os.sched_setaffinity(0, {cores[1]})  # keep the runner off the relay's core
    busy = idle_check(cores)
    print(f"relay on core {cores[0]}, load generator on core {cores[1]}; idle check: {busy}", flush=True)
    if any(v > 0.15 for v in busy.values()):
        print("warning: the machine is busy; figures will be noisy", flush=True)
    started = time.time()
    results: dict[str, Any] = {}
    for peer in peers:
        print(f"peer {peer}", flush=True)
        retries = args.retries if args.retries is not None else (0 if args.quick else 1)
        results[peer] = run_peer(peer, plan, cores, out, args.relaycore_module, retries, args.relaycore_config)
    tables = build_tables(plan.fanout_ns, plan.latency_n, plan.stalled_n)
    steps_by_peer = {p: r["steps"] for p, r in results.items()}
    text, summary = render(tables, steps_by_peer, peers)
    print(text)
    for peer, res in results.items():
        if res["status"] == "failed":
            print(f"\n{peer}: FAILED: {res['error']}")
        for key, step in res["steps"].items():
            if not step.get("ok"):
                print(f"\n{peer} {key}: FAILED: {step.get('error')}")
    meta = {
        "quick": args.quick,
        "started": started,
        "wall_seconds": round(time.time() - started, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cores": {"relay": cores[0], "load": cores[1]},
        "idle_check_busy": busy,
        "steps": [{"key": s.key, "args": s.args} for s in plan.steps],
        "relaycore_config": args.relaycore_config,
    }
    (out / "results.json").write_text(json.dumps({"meta": meta, "peers": results, "summary": summary}, indent=2))
    plot_error = None
    if any(s.key.startswith("fanout-") for s in plan.steps):
        plot_error = plot_fanout(steps_by_peer, peers, plan.fanout_ns, out / "fanout.png")
    print(f"\nwrote {out / 'results.json'}" + ("" if plot_error else f" and {out / 'fanout.png'}"))
    if plot_error:
        print(f"plot: {plot_error}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:
        traceback.print_exc()
        sys.exit(2)
