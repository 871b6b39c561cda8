"""The relay in a child process, for tests that need it apart from their clients.

A relay that shares the test's process shares its event loop, its memory and its file
descriptors: a test of what ONE relay process does with thousands of sockets, with a
descriptor limit, or with its own memory, runs it as ``python -m transports serve``::

    async with relay_process("trio", tmp_path, "[limits]\n...", nofile=64) as relay:
        ...  # relay.port, relay.pid, relay.rss(), relay.lines(), relay.health()

The relay always stops at the end of the block: SIGTERM, then SIGKILL after a bound.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
_LISTENING = re.compile(r"listening on ws://127\.0\.0\.1:(\d+)")


def raise_open_file_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _child_environment() -> dict[str, str]:
    """This process's environment without ``RELAYCORE_*`` variables.

    The relay reads every ``RELAYCORE_<SECTION>_<KEY>`` variable as a setting and refuses
    unknown ones, so switches meant for the test suite must not reach it.
    """
    return {name: value for name, value in os.environ.items() if not name.startswith("RELAYCORE_")}


def _limit_descriptors(n: int) -> Callable[[], None]:
    def apply() -> None:  # runs in the child, between fork and exec
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return apply


class RelayProcess:
    """A running relay process: its port, pid, memory and log."""

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.process = process
        self.log_path = log_path
        self.port = 0

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def children(self) -> list[int]:
        """The pids of the relay's live child processes (the workers of ``--workers N``)."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    state, ppid = stat.read().rpartition(")")[2].split()[:2]
            except OSError:  # it exited meanwhile
                continue
            if int(ppid) == self.pid and state != "Z":
                pids.append(int(entry))
        return sorted(pids)

    def rss(self) -> int:
        """The resident set size of the relay, in bytes (VmRSS in /proc/<pid>/status)."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError(f"no VmRSS for relay pid {self.pid} (did it exit? {self.process.poll()})")

    def cpu_seconds(self) -> float:
        """User plus system CPU time the relay has used so far (/proc/<pid>/stat)."""
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def open_descriptors(self) -> int:
        """How many file descriptors the relay has open (/proc/<pid>/fd)."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    async def wait_for_descriptors(self, at_most: int, timeout: float, what: str = "") -> float:
        """Poll until the relay holds at most ``at_most`` descriptors; return the seconds waited."""
        started = time.monotonic()
        while (count := self.open_descriptors()) > at_most:
            if time.monotonic() - started > timeout:
                raise AssertionError(f"the relay still holds {count} descriptors after {timeout} s {what}")
            await anyio.sleep(0.05)
        return time.monotonic() - started

    def lines(self) -> list[str]:
        """Every line the relay has logged so far (its stderr)."""
        return self.log_path.read_text(errors="replace").splitlines()

    def matching(self, level: str, text: str) -> list[str]:
        """The log lines at ``level`` (e.g. ``"WARNING"``) whose text contains ``text``."""
        return [line for line in self.lines() if f" {level} " in line and text in line]

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.lines()[-n:])

    async def wait_for_line(self, predicate: Callable[[str], bool], timeout: float, what: str) -> str:
        """Poll the log until a line satisfies ``predicate``; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines():
                if predicate(line):
                    return line
            if not self.alive():
                raise AssertionError(f"the relay exited ({self.process.poll()}) before {what}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line {what} within {timeout} s:\n{self.log_tail()}")
            await anyio.sleep(0.02)

    async def health(self, timeout: float = 5.0) -> dict[str, Any]:
        """``GET /health`` on a fresh connection, decoded."""
        with anyio.fail_after(timeout):
            stream = await anyio.connect_tcp("127.0.0.1", self.port)
            try:
                await stream.send(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    try:
                        data += await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        break
                    head, sep, body = data.partition(b"\r\n\r\n")
                    if sep:
                        match = re.search(rb"(?i)content-length:\s*(\d+)", head)
                        if match and len(body) >= int(match.group(1)):
                            break
            finally:
                await stream.aclose()
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), f"/health answered {head!r}"
        result: dict[str, Any] = json.loads(body)
        return result

    async def wait_for_connections(self, count: int, timeout: float, what: str = "") -> float:
        """Poll /health until it reports ``count`` connections (channel members); return
        the seconds waited."""
        started = time.monotonic()
        last: dict[str, Any] = {}
        with anyio.move_on_after(timeout):
            while True:
                last = await self.health()
                if last.get("connections") == count:
                    return time.monotonic() - started
                await anyio.sleep(0.05)
        raise AssertionError(f"/health never said {count} connections within {timeout} s {what}: last {last}")

    def _terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def _kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signum)


@asynccontextmanager
async def relay_process(
    backend: str,
    directory: Path,
    config: str = "",
    *,
    nofile: int | None = None,
    start_timeout: float = START_TIMEOUT,
    stop_timeout: float = STOP_TIMEOUT,
    args: Sequence[str] = (),
    options: Sequence[str] = (),
    name: str = "",
    listening: re.Pattern[str] = _LISTENING,
) -> AsyncIterator[RelayProcess]:
    """Run ``relaycore serve`` on 127.0.0.1 with a free port, on ``backend``, for the block.

    ``args`` are more ``serve`` arguments (``--redis URL``), ``options`` more of the
    command's own, given before ``serve`` (``--log-format json``); ``name`` tells apart the
    files of several relays on one backend. ``config`` is the TOML text of its configuration
    file (written into ``directory``, with its log). ``nofile`` sets the child's
    RLIMIT_NOFILE (soft and hard). ``listening`` is the log line waited for, its group 1
    the port (with ``--workers N``, the supervisor's line, after every worker's own). At
    exit the relay gets SIGTERM, and SIGKILL if it has not exited ``stop_timeout`` seconds later.
    """
    stem = f"relay-{name or backend}"
    config_path = directory / f"{stem}.toml"
    config_path.write_text(config)
    log_path = directory / f"{stem}.log"
    command = [
        sys.executable,
        "-m",
        "transports",
        "--log-level",
        "info",
        *options,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--backend",
        backend,
        "--config",
        str(config_path),
    ]
    command += list(args)
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=_child_environment(),
            preexec_fn=_limit_descriptors(nofile) if nofile is not None else None,
        )
    relay = RelayProcess(process, log_path)
    try:
        line = await relay.wait_for_line(lambda text: listening.search(text) is not None, start_timeout, "listening")
        match = listening.search(line)
        assert match is not None
        relay.port = int(match.group(1))
        yield relay
    finally:
        with anyio.CancelScope(shield=True):
            relay._terminate()
            deadline = time.monotonic() + stop_timeout
            while process.poll() is None and time.monotonic() < deadline:
                await anyio.sleep(0.05)
            relay._kill()
            process.wait(timeout=stop_timeout)  # SIGKILL cannot be refused: this is quick
