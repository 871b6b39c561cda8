"""CPU, memory and percentile readings used by the load generator.

Process CPU comes from /proc/<pid>/stat, per-core busy time from /proc/stat
and resident memory from /proc/<pid>/status (VmRSS).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid``; 0 if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def core_times() -> dict[int, tuple[int, int, int]]:
    """Per-core jiffies from /proc/stat: (busy incl. irq/steal, task time, total)."""
    out: dict[int, tuple[int, int, int]] = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                ticks = [int(v) for v in vals[:8]]
                total = sum(ticks)
                out[int(name[3:])] = (total - ticks[3] - ticks[4], ticks[0] + ticks[1] + ticks[2], total)
    return out


def proc_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    idx = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[idx]


class Window:
    """Measures a counter over a timed window, plus load and server CPU use."""

    def __init__(self, args: argparse.Namespace, counter: Callable[[], int]) -> None:
        server_pid = args.server_pid
        self.server_pid = server_pid
        self.server_core = args.server_cpu
        self.load_core = args.cpu
        self.counter = counter
        self.t0 = time.perf_counter()
        self.c0 = counter()
        self.load0 = time.process_time()
        self.srv0 = proc_cpu(server_pid) if server_pid else 0.0
        self.cores0 = core_times()

    def result(self) -> dict[str, float]:
        dt = time.perf_counter() - self.t0
        out = {
            "seconds": round(dt, 3),
            "count": self.counter() - self.c0,
            "rate": (self.counter() - self.c0) / dt,
            "load_cpu": round((time.process_time() - self.load0) / dt, 3),
        }
        task: dict[int, float] = {}
        for core, (busy, task_ticks, total) in core_times().items():
            busy0, task0, total0 = self.cores0.get(core, (0, 0, 0))
            if total > total0:
                out[f"core{core}_busy"] = round((busy - busy0) / (total - total0), 3)
                task[core] = (task_ticks - task0) / (total - total0)
        if self.server_pid:
            out["server_cpu"] = round((proc_cpu(self.server_pid) - self.srv0) / dt, 3)
            # CPU that other processes took on the two benchmark cores.
            other = max(0.0, task.get(self.server_core, 0.0) - out["server_cpu"])
            if self.load_core != self.server_core:
                other += max(0.0, task.get(self.load_core, 0.0) - out["load_cpu"])
            out["interference"] = round(other, 3)
        return out
