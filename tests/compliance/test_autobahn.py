"""WebSocket conformance: the Autobahn test cases against the relay's ``/echo``.

The relay is started as a real subprocess (``python -m transports serve``) on a free port
with ``autobahn.toml`` (the echo endpoint on, nothing else), once per backend. The
``kosoku`` runner (Autobahn's case files, driven from Python 3) then plays every case of
groups 1 to 10 against ``ws://127.0.0.1:PORT/echo``, and a sample of the permessage-deflate
cases (12.x and 13.x): all 216 of those with ``RELAYCORE_SOAK=1``. Reports go to the test's
``tmp_path``.

A case passes when its message verdict (``behavior``) is OK, NON-STRICT or INFORMATIONAL
and its closing-handshake verdict (``behaviorClose``) is OK or INFORMATIONAL; anything
else (FAILED, UNIMPLEMENTED, WRONG CODE, UNCLEAN, FAILED BY CLIENT...) fails the test, and
the message lists each case with what was expected and what the server did.

Every step is bounded: server start-up, the kosoku run, and the SIGTERM shutdown.
See README.md beside this file for running the suite by hand.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from prerequisites import require_module

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "autobahn.toml"
HOST = "127.0.0.1"

#: Every group of cases 1 to 10 that Autobahn has (there is no group 8): run whole.
CORE_GROUPS = ("1", "2", "3", "4", "5", "6", "7", "9", "10")
#: permessage-deflate: 12.x sends five kinds of data, 13.x makes seven kinds of offer, each in
#: 18 cases of 1,000 messages (16 bytes to 128 KiB, whole or in fragments); 216 cases, about
#: ten minutes. By default, in every subgroup: messages of 16 and 1,024 bytes, and of 8 KiB in
#: 256-byte fragments (36 cases, about 20 s). Case ids are listed in full: kosoku's ``12.*.1``
#: would take 12.1.10 to 12.1.18 too.
COMPRESSION_GROUPS = ("12", "13")
COMPRESSION_SAMPLE = tuple(
    f"{group}.{subgroup}.{case}"
    for group, subgroups in (("12", 5), ("13", 7))
    for subgroup in range(1, subgroups + 1)
    for case in (1, 4, 11)
)

PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
PASSING_CLOSE = {"OK", "INFORMATIONAL"}

START_TIMEOUT = 20.0  # seconds for the server to answer GET /health
RUN_TIMEOUT = 240.0  # seconds for the default kosoku run (25 to 50 s on a 2-core machine)
SOAK_RUN_TIMEOUT = 1800.0  # seconds for all the compression cases (about ten minutes)
STOP_TIMEOUT = 15.0  # seconds for the server to exit after SIGTERM (shutdown_grace is 2 s)
START_ATTEMPTS = 3  # a free port may be taken between our probe and the server's bind
DETAILED = 40  # failing cases described in full in the assertion message; the rest in one line


# -- the server under test -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _healthy(port: int) -> bool:
    """True when the server answers ``GET /health`` with 200."""
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _server_env() -> dict[str, str]:
    """The environment, without RELAYCORE_* overrides that would change the config."""
    return {name: value for name, value in os.environ.items() if not name.startswith("RELAYCORE_")}


def _start_server(backend: str, log_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start the relay on a free port; return the process once it serves requests."""
    for _attempt in range(START_ATTEMPTS):
        port = _free_port()
        command = [
            sys.executable,
            "-m",
            "transports",
            "serve",
            "--host",
            HOST,
            "--port",
            str(port),
            "--config",
            str(CONFIG),
            "--backend",
            backend,
        ]
        with log_path.open("ab") as log:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=_server_env())
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if _healthy(port):
                return proc, port
            time.sleep(0.05)
        if proc.poll() is None:  # alive but never answered: give up
            _stop_server(proc)
            break
        if b"cannot listen" not in log_path.read_bytes():
            break  # it died for another reason than a taken port
    pytest.fail(f"the relay did not start ({backend}); its log:\n{_tail(log_path)}")


def _stop_server(proc: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM, wait (bounded); SIGKILL if it hangs. Return the exit code, None if killed."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)
        return None


def _tail(path: Path, size: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return text[-size:] if len(text) > size else text


# -- the runner ------------------------------------------------------------------------


def _kosoku_command() -> list[str]:
    """The kosoku console script of this interpreter's environment."""
    beside = Path(sys.executable).with_name("kosoku")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("kosoku")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from kosoku._cli import main; sys.argv[0] = 'kosoku'; main()"]


def _load_index(outdir: Path) -> dict[str, dict[str, Any]]:
    """index.json as ``{case_id: entry}`` (one agent: our server), each with its report file."""
    index = json.loads((outdir / "index.json").read_text())
    cases: dict[str, dict[str, Any]] = {}
    for agent_cases in index.values():
        cases.update(agent_cases)
    return cases


def _passed(entry: dict[str, Any]) -> bool:
    return entry["behavior"] in PASSING and entry["behaviorClose"] in PASSING_CLOSE


def _case_key(case_id: str) -> list[int]:
    return [int(part) for part in case_id.split(".")]


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[:limit] + " ..."


def _describe(case_id: str, entry: dict[str, Any], outdir: Path) -> str:
    """One failing case: what it tests, what it expects, and what the server did."""
    try:
        report = json.loads((outdir / entry["reportfile"]).read_text())
    except (OSError, KeyError, ValueError):
        report = {}
    expected_close = report.get("expectedClose", {})
    lines = [
        f"{case_id}: behavior={entry['behavior']} behaviorClose={entry['behaviorClose']}"
        f" ({report.get('duration', entry.get('duration'))} ms)",
        f"    case:       {report.get('description', '?')}",
        f"    expects:    {_short(report.get('expectation', '?'))}",
        f"    result:     {report.get('result', '?')} / {report.get('resultClose', '?')}",
        f"    expected:   {_short(report.get('expected', '?'))}",
        f"    received:   {_short(report.get('received', '?'))}",
        f"    close:      server sent {report.get('remoteCloseCode', entry.get('remoteCloseCode'))}"
        f" {report.get('remoteCloseReason')!r}; kosoku sent {report.get('localCloseCode')}"
        f"; expected codes {expected_close.get('closeCode')}"
        f", closed by kosoku first={report.get('closedByMe')} (expected {expected_close.get('closedByMe')})",
        f"    connection: clean={report.get('wasClean')} ({report.get('wasNotCleanReason')})"
        f", server drop timeout={report.get('wasServerConnectionDropTimeout')}"
        f", close handshake timeout={report.get('wasCloseHandshakeTimeout')}",
    ]
    return "\n".join(lines)


def _one_line(case_id: str, entry: dict[str, Any], outdir: Path) -> str:
    """A failing case past the first DETAILED ones: id, verdicts, description, result."""
    try:
        report = json.loads((outdir / entry["reportfile"]).read_text())
    except (OSError, KeyError, ValueError):
        report = {}
    return (
        f"{case_id}: {entry['behavior']}/{entry['behaviorClose']} {report.get('description', '?')!r}:"
        f" {report.get('result', '?')} / {report.get('resultClose', '?')}"
        f" (server close {report.get('remoteCloseCode', entry.get('remoteCloseCode'))})"
    )


class _Summary:
    """Prints the run of each backend (verdict counts, wall time) at the end of the session.

    Registered as a plugin by the test itself: a conftest.py here would shadow the one in
    tests/ that other test modules import from.
    """

    name = "autobahn-summary"

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.runs:
            return
        terminalreporter.section("Autobahn conformance (/echo)")
        for run in self.runs:
            verdicts = ", ".join(f"{name} {count}" for name, count in run["behavior"].items())
            closes = ", ".join(f"{name} {count}" for name, count in run["behaviorClose"].items())
            ids = run["failing"]
            failing = " ".join(ids[:20]) + (f" ... ({len(ids) - 20} more)" if len(ids) > 20 else "") if ids else "none"
            terminalreporter.write_line(
                f"{run['backend']:>8} {run['selection']}: {run['cases']} cases in {run['kosoku_seconds']:.1f} s"
                f" (server start to stop {run['total_seconds']:.1f} s); behavior: {verdicts}; close: {closes};"
                f" failing: {failing}"
            )


def _summary(config: pytest.Config) -> _Summary:
    plugin = config.pluginmanager.get_plugin(_Summary.name)
    if plugin is None:
        plugin = _Summary()
        config.pluginmanager.register(plugin, _Summary.name)
    return plugin


# -- the test --------------------------------------------------------------------------


@pytest.mark.timeout(RUN_TIMEOUT + START_TIMEOUT + STOP_TIMEOUT)
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_autobahn_cases(backend: str, tmp_path: Path, record_property: Any, pytestconfig: pytest.Config) -> None:
    """Cases 1 to 10, and the sample of the compression cases."""
    selection = [f"{group}.*" for group in CORE_GROUPS] + list(COMPRESSION_SAMPLE)
    groups = {*CORE_GROUPS, *COMPRESSION_GROUPS}
    label = f"1-10 and {len(COMPRESSION_SAMPLE)} of 12-13"
    _play(backend, label, selection, groups, RUN_TIMEOUT, tmp_path, record_property, pytestconfig)


@pytest.mark.soak  # about ten minutes a backend: RELAYCORE_SOAK=1
@pytest.mark.timeout(SOAK_RUN_TIMEOUT + START_TIMEOUT + STOP_TIMEOUT)
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_autobahn_compression_cases(
    backend: str, tmp_path: Path, record_property: Any, pytestconfig: pytest.Config
) -> None:
    """Every permessage-deflate case (12.x and 13.x)."""
    selection = [f"{group}.*" for group in COMPRESSION_GROUPS]
    groups = set(COMPRESSION_GROUPS)
    _play(backend, "12-13", selection, groups, SOAK_RUN_TIMEOUT, tmp_path, record_property, pytestconfig)


def _play(
    backend: str,
    label: str,
    selection: list[str],
    expected_groups: set[str],
    run_timeout: float,
    tmp_path: Path,
    record_property: Any,
    pytestconfig: pytest.Config,
) -> None:
    """Run the ``selection`` of cases (``label`` in the summary) against a relay on ``backend``;
    fail on any case not passing, a group missing, an exception in the server's log or an
    unclean exit."""
    require_module("kosoku", "the Autobahn case runner: pip install -e '.[test]'")
    if backend == "trio":
        require_module("trio", "pip install -e '.[test]'")
    outdir = tmp_path / "reports"
    server_log = tmp_path / "server.log"
    started = time.monotonic()
    proc, port = _start_server(backend, server_log)
    try:
        command = [*_kosoku_command(), f"ws://{HOST}:{port}/echo"]
        for pattern in selection:
            command += ["-i", pattern]
        command += ["-o", str(outdir)]
        run_started = time.monotonic()
        try:
            run = subprocess.run(
                command, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=run_timeout
            )
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"kosoku did not finish within {run_timeout:.0f} s ({backend}); server log:\n" + _tail(server_log)
            )
        run_seconds = time.monotonic() - run_started
    finally:
        exit_code = _stop_server(proc)
    total_seconds = time.monotonic() - started

    kosoku_output = f"kosoku exited {run.returncode}\nstdout:\n{run.stdout[-3000:]}\nstderr:\n{run.stderr[-3000:]}"
    if not (outdir / "index.json").exists():
        pytest.fail(f"kosoku wrote no report ({backend}).\n{kosoku_output}\nserver log:\n{_tail(server_log)}")
    cases = _load_index(outdir)

    behaviors = Counter(entry["behavior"] for entry in cases.values())
    closes = Counter(entry["behaviorClose"] for entry in cases.values())
    failing = sorted((case_id for case_id, entry in cases.items() if not _passed(entry)), key=_case_key)
    log_text = server_log.read_text(errors="replace")
    tracebacks = log_text.count("Traceback (most recent call last)")
    summary = {
        "backend": backend,
        "selection": label,
        "cases": len(cases),
        "failing": failing,
        "behavior": dict(sorted(behaviors.items())),
        "behaviorClose": dict(sorted(closes.items())),
        "kosoku_seconds": round(run_seconds, 2),
        "total_seconds": round(total_seconds, 2),
        "server_exit": exit_code,
        "server_tracebacks": tracebacks,
        "reports": str(outdir),
    }
    record_property("autobahn", summary)
    _summary(pytestconfig).runs.append(summary)
    print(f"autobahn[{backend}]: {json.dumps(summary)}")

    groups = {case_id.split(".")[0] for case_id in cases}
    assert groups == expected_groups, (
        f"{backend}: the run covered groups {sorted(groups, key=int)}, expected {sorted(expected_groups, key=int)}"
    )
    if failing:
        details = "\n".join(
            _describe(case_id, cases[case_id], outdir) if n < DETAILED else _one_line(case_id, cases[case_id], outdir)
            for n, case_id in enumerate(failing)
        )
        pytest.fail(
            f"{backend}: {len(failing)} of {len(cases)} Autobahn cases failed"
            f" (behavior {dict(behaviors)}, close {dict(closes)}; reports in {outdir}):\n{details}",
            pytrace=False,
        )
    assert run.returncode == 0, f"{backend}: every case passed but kosoku did not exit 0\n{kosoku_output}"
    assert tracebacks == 0, f"{backend}: the server logged {tracebacks} exception(s):\n{_tail(server_log, 6000)}"
    assert exit_code == 0, (
        f"{backend}: the server did not exit cleanly within {STOP_TIMEOUT:.0f} s of SIGTERM"
        f" (exit code {exit_code}, None = killed); its log:\n{_tail(server_log)}"
    )
