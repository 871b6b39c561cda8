"""The benchmark's quick mode runs end to end (it asserts nothing about speed: CI machines
are shared and noisy; it only keeps the benchmark working)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PEERS = ["relaycore-asyncio", "relaycore-trio", "websockets", "picows"]


def test_quick_benchmark_runs_every_peer_and_scenario(tmp_path: Path) -> None:
    pytest.importorskip("picows", reason="the picows reference relay needs picows (pip install -e '.[test]')")
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
        for name, step in entry["steps"].items():
            assert step.get("ok"), (peer, name, step)
    assert "fan-out" in result.stdout and "relaycore-asyncio" in result.stdout
