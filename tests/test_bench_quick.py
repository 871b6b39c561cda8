"""The benchmark's quick mode runs end to end (it asserts nothing about speed: CI machines
are shared and noisy; it only keeps the benchmark working)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from prerequisites import require_module

ROOT = Path(__file__).resolve().parent.parent
PEERS = [
    "relaycore-asyncio",
    "relaycore-trio",
    "relaycore-uvicorn",
    "websockets",
    "picows",
    "starlette-uvicorn",
]
RELAYCORE = [peer for peer in PEERS if peer.startswith("relaycore-")]
STEPS = {"fanout-20", "stalled", "latency", "channels", "connrate", "memory"}


@pytest.mark.soak  # about a minute: RELAYCORE_SOAK=1
def test_quick_benchmark_runs_every_peer_and_scenario(tmp_path: Path) -> None:
    require_module("picows", "the picows reference relay needs it: pip install -e '.[test]'")
    require_module("uvicorn", "the ASGI peers run under it: pip install -e '.[test]'")
    require_module("starlette", "the Starlette reference relay needs it: pip install -e '.[bench]'")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    for peer in PEERS:
        entry = results["peers"][peer]
        assert entry["status"] == "ok", (peer, entry.get("error"))
        assert set(entry["steps"]) == STEPS, (peer, sorted(entry["steps"]))
        for name, step in entry["steps"].items():
            assert step.get("ok"), (peer, name, step)
    for peer in PEERS:
        stalled = results["peers"][peer]["steps"]["stalled"]
        for key in ("rate", "sent", "acked", "min_received", "max_received", "complete", "stalled"):
            assert key in stalled, (peer, key, stalled)
        assert stalled["max_received"] <= stalled["sent"], (peer, stalled)
    for peer in RELAYCORE:
        # A member that never reads must not hold up the others: relaycore drops it (1008).
        stalled = results["peers"][peer]["steps"]["stalled"]
        assert stalled["complete"] and not stalled["stalled"], (peer, stalled)
        assert stalled["stalled_receiver"]["dropped"], (peer, stalled["stalled_receiver"])
    assert "fan-out" in result.stdout and "stalled member" in result.stdout
    for peer in PEERS:
        assert peer in result.stdout
    assert "uvicorn/starlette-uvicorn" in result.stdout


def test_the_sse_benchmark_counts_every_delivery_to_sse_and_websocket_receivers(tmp_path: Path) -> None:
    """bench/sse.py --quick: one relay, all-WebSocket, all-SSE and mixed channels of 20; every
    setup drains (load.py waits until each receiver got every message) and reads CPU."""
    out = tmp_path / "sse.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "sse.py"), "--quick", "--json", str(out), "--log", str(tmp_path / "log")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    found = json.loads(out.read_text())
    for name in ("websocket", "sse", "mixed"):
        reading = found["rounds"][0][name]
        assert reading["count"] > 0 and reading["us_per_delivery"] > 0, (name, reading)
    assert "SSE / WebSocket deliveries per second" in result.stdout
