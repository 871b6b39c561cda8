"""Fresh virtual environments with the project's wheel, and processes run in them.

The install check (``test_install.py``) builds ONE wheel of the project, then one
environment per front door or tool: ``python -m venv`` without the outer site-packages and
without pip itself, into which the outer pip installs (``pip --python``, with its cache)
the wheel, with an extra where named, plus one server or tool. So an environment holds
exactly what a user's ``pip install relaycore uvicorn`` (say) gives them, and a module that
the project imports without declaring it is missing there, as it would be for them.

Every process runs with the environment's own interpreter, outside the checkout (its
working directory is a temporary one, ``PYTHONPATH`` is dropped), and every wait is
bounded. Servers listen on a free port of 127.0.0.1 and are stopped by pid: SIGTERM, then
SIGKILL after :data:`STOP_TIMEOUT`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

#: pip, building the wheel or filling an environment (a cold cache downloads everything).
PIP_TIMEOUT = 600.0
#: From a server's start to its first ``GET /health`` answered 200.
START_TIMEOUT = 30.0
#: From SIGTERM to SIGKILL, and from SIGKILL to giving up on the process.
STOP_TIMEOUT = 10.0
#: A client, a command that should exit at once, or a user's test run.
RUN_TIMEOUT = 120.0
#: How much of a log an assertion message shows (its end).
LOG_TAIL = 6000

#: What a wheel build needs of the checkout (an sdist-like copy: no build/ leftovers).
WHEEL_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "LICENSE.txt", "MANIFEST.in", "src")
#: Variables that would let a child see more than its environment, or reconfigure it; and
#: PYTHONDONTWRITEBYTECODE: pip installs with --no-compile (half the time of an install), so
#: the children write the bytecode of what they import into the environment, once.
DROPPED_VARIABLES = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONDONTWRITEBYTECODE",
    "VIRTUAL_ENV",
    "PYTEST_ADDOPTS",
    "PYTEST_PLUGINS",
)


def tail(text: str, limit: int = LOG_TAIL) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


def child_environment(venv: Path | None = None) -> dict[str, str]:
    """This process's environment for a child: no ``RELAYCORE_*`` settings (the relay
    refuses unknown ones), nothing that adds to ``sys.path``, the venv's ``bin`` first."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("RELAYCORE_") and name not in DROPPED_VARIABLES
    }
    if venv is not None:
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", os.defpath)])
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(
    command: Sequence[object],
    *,
    cwd: Path,
    env: dict[str, str],
    timeout: float = RUN_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` to its end, at most ``timeout`` seconds (then it is killed, and the
    result has returncode -9 and says so in its stderr)."""
    try:
        return subprocess.run(
            [str(part) for part in command],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return subprocess.CompletedProcess(exc.cmd, -9, out, err + f"\n[killed: still running after {timeout} s]")


def describe(result: subprocess.CompletedProcess[str]) -> str:
    command = " ".join(str(part) for part in result.args)
    return (
        f"$ {command}\nexit status {result.returncode}\n"
        f"--- stdout ---\n{tail(result.stdout)}\n--- stderr ---\n{tail(result.stderr)}"
    )


def build_wheel(work: Path) -> Path:
    """``pip wheel --no-deps . -w <dir>`` on a copy of the checkout's sources, in ``work``.

    A copy, so that the build's ``build/`` directory (whose stale files setuptools would
    put in the next wheel) and ``*.egg-info`` never land in the checkout, which others are
    editing meanwhile.
    """
    source = work / "source"
    source.mkdir()
    for name in WHEEL_SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
        elif path.exists():
            shutil.copy2(path, source / name)
    wheels = work / "wheel"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q"]
    result = run([*command, str(source), "-w", str(wheels)], cwd=work, env=child_environment(), timeout=PIP_TIMEOUT)
    built = sorted(wheels.glob("relaycore-*.whl"))
    if result.returncode != 0 or len(built) != 1:
        raise RuntimeError(f"building the wheel failed:\n{describe(result)}")
    shutil.rmtree(source, ignore_errors=True)
    return built[0]


@dataclass
class Venv:
    """One environment: its directory and what was installed into it."""

    name: str
    path: Path
    requirements: list[str] = field(default_factory=list)

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def bin(self, name: str) -> Path:
        return self.path / "bin" / name

    @property
    def env(self) -> dict[str, str]:
        return child_environment(self.path)

    def run(
        self, *args: str | os.PathLike[str], cwd: Path, timeout: float = RUN_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """``python *args`` with this environment's interpreter."""
        return run([self.python, *args], cwd=cwd, env=self.env, timeout=timeout)

    def run_script(
        self, name: str, *args: str | os.PathLike[str], cwd: Path, timeout: float = RUN_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """One of the environment's console scripts (``bin/<name>``), as a user runs it."""
        return run([self.bin(name), *args], cwd=cwd, env=self.env, timeout=timeout)


def create_venv(root: Path, name: str, requirements: Sequence[str]) -> Venv:
    """``python -m venv`` (no system site-packages, no pip), then the outer pip installs
    ``requirements`` into it (``pip --python``), from its cache where it can."""
    path = root / name
    base = getattr(sys, "_base_executable", sys.executable)
    made = run([base, "-m", "venv", "--without-pip", str(path)], cwd=root, env=child_environment(), timeout=RUN_TIMEOUT)
    if made.returncode != 0:
        raise RuntimeError(f"creating the environment {name!r} failed:\n{describe(made)}")
    venv = Venv(name, path, list(requirements))
    pip = [sys.executable, "-m", "pip", "--python", str(venv.python), "install", "--disable-pip-version-check"]
    pip += ["-q", "--no-compile"]
    installed = run([*pip, *requirements], cwd=root, env=child_environment(), timeout=PIP_TIMEOUT)
    if installed.returncode != 0:
        raise RuntimeError(f"installing into the environment {name!r} failed:\n{describe(installed)}")
    return venv


def http_get(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """Status and body of ``GET url`` (an HTTP error status is an answer, not an exception)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return int(answer.status), answer.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")


class ServerProcess:
    """A server started from an environment; its output goes to a log file."""

    def __init__(self, name: str, command: Sequence[object], venv: Venv, work: Path, port: int) -> None:
        self.name = name
        self.command = [str(part) for part in command]
        self.venv = venv
        self.port = port
        self.log_path = work / f"{name}.log"
        self.work = work
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def report(self) -> str:
        status = "not started" if self.process is None else f"exit status {self.process.poll()}"
        return f"=== {self.name} ({' '.join(self.command)}; {status}) output ===\n{tail(self.log())}"

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.work,
                env=self.venv.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited before it served /health\n{self.report()}")
            try:
                status, body = http_get(f"{self.url}/health", timeout=2.0)
            except OSError as exc:
                last = repr(exc)
            else:
                if status == 200:
                    return
                last = f"HTTP {status}: {body[:200]}"
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not serve /health within {START_TIMEOUT} s ({last})\n{self.report()}")

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(STOP_TIMEOUT)


@contextlib.contextmanager
def serving(name: str, command: Sequence[object], venv: Venv, work: Path, port: int) -> Iterator[ServerProcess]:
    """A server for the duration of the block, ready (``/health`` 200) when it starts."""
    server = ServerProcess(name, command, venv, work, port)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def redis_binary() -> str | None:
    packaged = "/usr/bin/redis-server"
    return shutil.which("redis-server") or (packaged if os.path.exists(packaged) else None)


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server(binary: str, work: Path) -> Iterator[str]:
    """A real ``redis-server`` on a free port of 127.0.0.1, nothing persisted; yields its URL.

    As tests/transports/redisproc.py runs it, without anyio (this runs in the test's thread).
    """
    port = free_port()
    log_path = work / f"redis-{port}.log"
    # fmt: off
    command = [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(work),
        "--protected-mode", "no",
    ]
    # fmt: on
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _redis_ping(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"redis-server did not answer PING\n{tail(log_path.read_text(errors='replace'))}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(STOP_TIMEOUT)
