"""The relay's front doors, for the transport tests: one protocol suite, every door.

A *door* is a server in front of the relay core. The transport tests know five:

- ``native-asyncio``, ``native-trio``: :class:`transports.server.RelayServer`, run in the
  test's own process on the test's own event loop, so a test may also look at ``server.hub``;
- ``uvicorn``: a ``python -m uvicorn transports.asgi:app`` process (asyncio);
- ``hypercorn-asyncio``, ``hypercorn-trio``: ``python -m hypercorn -k asyncio|trio
  transports.asgi:app`` processes.

A test module opts in with the ``doors`` marker; a test that uses the ``relay`` fixture or
the ``door`` fixture then runs once per door (see ``tests/conftest.py``)::

    pytestmark = [pytest.mark.anyio, pytest.mark.doors]

    @pytest.mark.doors(*NATIVE_DOORS)                       # this test: native doors only
    @pytest.mark.door_xfail(                                # a known gap, strict: it fails
        *HYPERCORN_DOORS,
        raises=AssertionError,                              # with this exception,
        match=r"(?m)^assert 400 == 403$",                   # whose message has this (re.search),
        versions={"hypercorn": ">=0.18"},                   # on these releases (then it must pass)
        reason="... (checked on hypercorn 0.18.0)",
    )
    @pytest.mark.door_skip("uvicorn", reason="...")         # cannot even be tried

A gap of uvicorn or hypercorn themselves is written :func:`server_gap` (``door_xfail`` with the
releases of :data:`CHECKED` as ``versions``, named at the end of its reason).

The clients of a test run on the door's client backend: the native doors' own backend,
asyncio for the server processes (whose server side is already asyncio or trio).

Server processes. The test process binds the listening socket itself (port 0: the kernel
picks a free port, and nothing can take it before the server starts) and hands the
descriptor to the child (uvicorn ``--fd N``, hypercorn ``--bind fd://N``). The relay's
configuration is a TOML file named by ``RELAYCORE_CONFIG``. A process is ready once
``GET /health`` answers 200. One process per door and configuration is started on first
use and shared by the tests that follow; so that tests do not see each other, every test
starts on a door without members (``/health`` says 0 connections: every channel, with its
keys, is gone). At most :data:`POOL_SIZE` processes live at once, the least recently used
is stopped first, and every process is stopped by pid: SIGTERM, then SIGKILL after
:data:`STOP_TIMEOUT`.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import anyio
import msgspec
import pytest
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version
from rawws import RawPeer, upgrade_request
from wsclient import Client, Closed

from prerequisites import require
from relaycore import Config

REPO = Path(__file__).resolve().parents[2]

NATIVE_DOORS = ("native-asyncio", "native-trio")
ASGI_DOORS = ("uvicorn", "hypercorn-asyncio", "hypercorn-trio")
DOORS = NATIVE_DOORS + ASGI_DOORS
HYPERCORN_DOORS = ("hypercorn-asyncio", "hypercorn-trio")

#: The distribution whose release decides how a server process door behaves (the
#: ``versions`` of a ``door_xfail``); the native doors are the relay's own code.
DISTRIBUTIONS = {"uvicorn": "uvicorn", "hypercorn-asyncio": "hypercorn", "hypercorn-trio": "hypercorn"}

ASGI_APP = "transports.asgi:app"

START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
IDLE_TIMEOUT = 5.0  # for the members of the previous test to be gone, at the start of a test
RELEASE_TIMEOUT = 2.0  # for the test's own members to be gone, at its end
DISCARD_TIMEOUT = 0.5  # from SIGTERM to SIGKILL, for a process left unusable
POOL_SIZE = 6


class Relay(Protocol):
    """What ``relay`` and ``running()`` give a test, whatever the door: a port to talk to.
    (On the native doors it is the :class:`~transports.server.RelayServer` itself.)"""

    @property
    def port(self) -> int: ...


def client_backend(door: str) -> str:
    """The anyio backend the clients of a test on ``door`` run on."""
    return "trio" if door == "native-trio" else "asyncio"


# -- configuration -------------------------------------------------------------------------


def config_toml(config: Config) -> str:
    """``config`` as TOML text that :meth:`Config.from_toml` reads back to an equal Config."""
    tables = msgspec.to_builtins(config)
    lines: list[str] = []
    for section in [name for name in tables if name not in ("cluster", "namespaces")]:
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in tables[section].items()]
    for prefix, keys in tables["namespaces"].items():
        lines.append(f"[namespaces.{_toml_value(prefix)}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in keys.items() if value is not None]
    text = "\n".join(lines) + "\n"
    assert Config.from_toml(text, env={}) == config, f"the TOML of {config!r} does not read back:\n{text}"
    return text


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


# -- talking to a door from outside --------------------------------------------------------


def health_now(port: int, host: str = "127.0.0.1", timeout: float = 2.0, path: str = "/health") -> dict[str, Any]:
    """``GET /health``, from a blocking socket; raises OSError while nothing listens."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise AssertionError(f"{path} answered {response.status}: {body!r}")
    result: dict[str, Any] = json.loads(body)
    return result


@asynccontextmanager
async def raw_peer(port: int, host: str = "127.0.0.1", *, rcvbuf: int | None = None) -> AsyncIterator[RawPeer]:
    """A :class:`rawws.RawPeer` that is closed when the block ends, however it ends."""
    peer = await RawPeer.connect(port, host, rcvbuf=rcvbuf)
    try:
        yield peer
    finally:
        await peer.aclose()


@contextlib.contextmanager
def timeout_says(what: str) -> Iterator[None]:
    """Give a bare ``TimeoutError`` out of the block the message ``what`` (what did not come
    in time), so that a failure says which wait ran out: a ``door_xfail`` ``match`` tells one
    timeout of a test from another by it. A TimeoutError with a message of its own passes."""
    try:
        yield
    except TimeoutError as exc:
        if str(exc):
            raise
        raise TimeoutError(what) from exc


async def close_of(client: Client, timeout: float = 5.0) -> tuple[int | None, str]:
    """Read until the relay closes ``client``: its close code and reason."""
    with anyio.fail_after(timeout):
        while True:
            try:
                await client.recv(timeout)
            except Closed as closed:
                return closed.code, closed.reason


async def refusal(port: int, path: str, headers: str = "") -> tuple[int, dict[str, str], bytes, bytes]:
    """Ask to upgrade ``path``: the status, headers and body of the answer, and what else the
    server sent before it closed the connection (``b"..."`` if it kept it open for a second)."""
    async with raw_peer(port) as peer:
        await peer.send(upgrade_request(path, headers))
        status, fields, body = await peer.response()
        rest = b"..."
        with anyio.move_on_after(1.0):
            rest = await peer.read_to_eof()
    return status, fields, body, rest


async def health(port: int, host: str = "127.0.0.1") -> dict[str, Any]:
    """``GET /health`` on a fresh connection, decoded (any door)."""
    return await anyio.to_thread.run_sync(health_now, port, host)


async def wait_for_connections(port: int, count: int, timeout: float = 5.0, host: str = "127.0.0.1") -> None:
    """Poll ``/health`` until the relay has ``count`` channel members."""
    last: dict[str, Any] = {}
    with anyio.move_on_after(timeout):
        while True:
            last = await health(port, host)
            if last["connections"] == count:
                return
            await anyio.sleep(0.02)
    raise AssertionError(f"/health never said {count} connections within {timeout} s; last {last}")


# -- server processes ------------------------------------------------------------------------


def _child_environment(config_path: Path, pythonpath: Sequence[Path]) -> dict[str, str]:
    """This environment without ``RELAYCORE_*`` (the relay refuses unknown ones), plus the
    config file and any extra import path."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("RELAYCORE_")}
    env["RELAYCORE_CONFIG"] = str(config_path)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def server_command(door: str, fd: int, app: str = ASGI_APP, extra: Sequence[str] = ()) -> list[str]:
    """The command line that serves ``app`` through ``door`` on the listening socket ``fd``."""
    if door == "uvicorn":
        # --no-proxy-headers: uvicorn would otherwise take the client address from
        # X-Forwarded-For of any peer on 127.0.0.1 before the relay, whose own
        # trusted_proxies setting must decide (test_door_proxies.py shows why).
        flags = ["--fd", str(fd), "--no-proxy-headers", "--no-access-log", "--lifespan", "on", "--log-level", "info"]
        return [sys.executable, "-m", "uvicorn", *flags, *extra, app]
    if door in HYPERCORN_DOORS:
        # -w 0: serve in this very process, so that its pid is the server's (by default
        # hypercorn serves from one spawned worker process).
        worker = door.partition("-")[2]
        flags = ["-k", worker, "-w", "0", "--bind", f"fd://{fd}", "--log-level", "info"]
        return [sys.executable, "-m", "hypercorn", *flags, *extra, app]
    raise ValueError(f"{door!r} is not a server process door")


class DoorWarning(UserWarning):
    """A shared server process was left unusable (members left behind, or it died)."""


class DoorProcess:
    """A server process serving the relay on 127.0.0.1 (or ``host``): port, pid, log."""

    def __init__(
        self, door: str, process: subprocess.Popen[bytes], port: int, host: str, log_path: Path, health_path: str
    ) -> None:
        self.door = door
        self.process = process
        self.port = port
        self.host = host
        self.log_path = log_path
        #: Where the relay's /health answers (below the mount point of an app that mounts it).
        self.health_path = health_path

    def health(self) -> dict[str, Any]:
        return health_now(self.port, self.host, path=self.health_path)

    def __repr__(self) -> str:
        return f"<DoorProcess {self.door} pid {self.pid} port {self.port}>"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def hub(self) -> Any:
        raise AttributeError(
            f"{self.door} runs in another process and has no hub to look at: restrict the test to "
            "NATIVE_DOORS, or ask /health (doors.health, doors.wait_for_connections)"
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_until_ready(self, timeout: float = START_TIMEOUT) -> None:
        def answers() -> bool:
            try:
                health_now(self.port, self.host, timeout=1.0, path=self.health_path)
            except (OSError, http.client.HTTPException):
                return False
            return True

        self._poll(
            answers, timeout, 0.02, lambda: f"{self.door}: /health not answering after {timeout} s:\n{self.log_tail()}"
        )

    def wait_until_idle(self, timeout: float = IDLE_TIMEOUT) -> None:
        """Wait until no channel has members (the test's clients are all gone)."""
        last: dict[str, Any] = {}

        def idle() -> bool:
            nonlocal last
            try:
                last = self.health()
            except (OSError, http.client.HTTPException) as exc:
                raise AssertionError(f"{self.door} does not answer /health ({exc!r}):\n{self.log_tail()}") from None
            return bool(last["connections"] == 0 and last["channels"] == 0)

        self._poll(idle, timeout, 0.01, lambda: f"{self.door} still has members {timeout} s after the test: {last}")

    def _poll(self, done: Callable[[], bool], timeout: float, pause: float, late: Callable[[], str]) -> None:
        """Ask ``done()`` every ``pause`` seconds until it says yes; fail as soon as the process
        has exited, or with the message ``late()`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise AssertionError(f"{self.door} exited with {self.process.returncode}:\n{self.log_tail()}")
            if done():
                return
            if time.monotonic() > deadline:
                raise AssertionError(late())
            time.sleep(pause)

    def signal(self, signum: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL if still running after ``timeout``; the exit status."""
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            return self.process.wait(timeout=timeout)


def start_door(
    door: str,
    config_text: str,
    directory: Path,
    *,
    app: str = ASGI_APP,
    host: str = "127.0.0.1",
    extra: Sequence[str] = (),
    pythonpath: Sequence[Path] = (),
    health_path: str = "/health",
) -> DoorProcess:
    """Start a server process for ``door``, ready to serve. The caller stops it.

    ``app`` is what the server serves (importable with ``pythonpath`` added), ``extra`` more
    server flags, ``health_path`` where the relay's ``/health`` answers."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{door}-", suffix=".toml", dir=directory)
    os.close(fd)
    config_path = Path(name)
    config_path.write_text(config_text)
    log_path = config_path.with_suffix(".log")
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind((host, 0))
        listener.listen(1024)
        port = listener.getsockname()[1]
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                server_command(door, listener.fileno(), app, extra),
                pass_fds=[listener.fileno()],
                cwd=REPO,
                env=_child_environment(config_path, pythonpath),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
    finally:
        listener.close()  # the child has its own copy of the descriptor
    door_process = DoorProcess(door, process, port, host, log_path, health_path)
    try:
        door_process.wait_until_ready()
    except BaseException:
        door_process.stop()
        raise
    return door_process


class DoorPool:
    """Server processes shared between tests: one per (door, configuration, app, host, flags)."""

    def __init__(self, size: int = POOL_SIZE) -> None:
        self.size = size
        self._directory: Path | None = None
        self._processes: OrderedDict[tuple[Any, ...], DoorProcess] = OrderedDict()

    @property
    def directory(self) -> Path:
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="relaycore-doors-"))
        return self._directory

    def get(self, door: str, config_text: str, **options: Any) -> DoorProcess:
        """The shared process for ``door``, ``config_text`` and the ``options`` of
        :func:`start_door` (``app``, ``host``, ``extra`` ...), started if need be, with no members."""
        key = (door, config_text, repr(sorted(options.items())))
        process = self._processes.get(key)
        if process is not None:
            self._processes.move_to_end(key)
            try:
                process.wait_until_idle()
                return process
            except AssertionError as exc:
                # Not this test's doing: start afresh (release() warned about the culprit).
                warnings.warn(DoorWarning(f"{exc}; restarting it"), stacklevel=2)
                self._discard(process)
        while len(self._processes) >= self.size:
            _, oldest = self._processes.popitem(last=False)
            oldest.stop()
        process = start_door(door, config_text, self.directory, **options)
        self._processes[key] = process
        return process

    def release(self, process: DoorProcess) -> None:
        """The test is over: the door must be left without members. One that is not (or that
        died) is stopped, with a warning naming the test, so that the next tests get a fresh one."""
        try:
            process.wait_until_idle(RELEASE_TIMEOUT)
        except AssertionError as exc:
            warnings.warn(DoorWarning(f"{exc}; stopping it"), stacklevel=2)
            self._discard(process)

    def _discard(self, process: DoorProcess) -> None:
        for key, candidate in list(self._processes.items()):
            if candidate is process:
                del self._processes[key]
        process.stop(timeout=DISCARD_TIMEOUT)  # no graceful stop owed to a broken door

    def close(self) -> None:
        """Stop every process (and forget their logs)."""
        while self._processes:
            _, process = self._processes.popitem()
            process.stop()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None


#: The processes of this test session (stopped by ``pytest_sessionfinish`` in conftest, or
#: at the latest when the interpreter exits).
POOL = DoorPool()
atexit.register(POOL.close)


# -- the stock itty-sockets client in Node.js --------------------------------------------------

JS_DIR = REPO / "tests" / "js"
SCENARIO = JS_DIR / "scenario.mjs"
SCENARIO_TIMEOUT = 30.0

#: What tests/js/scenario.mjs needs of the relay. It opens more connections from 127.0.0.1
#: within a second than the default connection rate allows; that limit has tests of its own.
SCENARIO_CONFIG = """\
[limits]
connections_per_second_per_ip = 1000

[namespaces."secure"]
join_key = "jk"
send_key = "sk"
"""

SCENARIO_STEPS = [
    "self-join",
    "join-announced",
    "broadcast-chat",
    "no-echo",
    "non-object-messages",
    "direct-message",
    "direct-to-unknown-uid",
    "invalid-json",
    "push",
    "leave",
    "protected-channel",
    "http-push",
    "http-push-refused",
    "quiet",
]


def require_node() -> str:
    """The ``node`` executable, once Node.js and the npm packages are there; otherwise the
    test is skipped, or under CI fails (:func:`prerequisites.require`)."""
    node = require(
        shutil.which("node"), "node is not on PATH: the itty-sockets client test needs Node.js", "install Node.js"
    )
    for package in ("itty-sockets", "ws"):
        require(
            (JS_DIR / "node_modules" / package).is_dir(),
            f"tests/js/node_modules/{package} is missing",
            "run `npm ci --prefix tests/js`",
        )
    return node


def run_scenario(node: str, base: str, prefix: str, env: dict[str, str] | None, server_log: Callable[[], str]) -> None:
    """Run the Node scenario against ``base`` (``ws://host:port`` plus any mount path) and
    check its summary; ``server_log()`` goes into the failure message."""
    try:
        run = subprocess.run(
            [node, str(SCENARIO), base, prefix],
            cwd=JS_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=SCENARIO_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        output = [x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (exc.stdout, exc.stderr)]
        pytest.fail(f"scenario still running after {SCENARIO_TIMEOUT} s:\n" + "\n".join(output))
    assert run.returncode == 0, (
        f"scenario failed against {base} (exit {run.returncode}):\n{run.stderr}\n"
        f"stdout:\n{run.stdout}\nserver log:\n{server_log()}"
    )
    lines = run.stdout.strip().splitlines()
    assert lines, f"scenario printed no summary; stderr:\n{run.stderr}"
    summary = json.loads(lines[-1])
    assert summary["ok"] is True
    assert summary["steps"] == SCENARIO_STEPS
    assert summary["checks"] > 100


# -- parametrisation (used by pytest_generate_tests in tests/conftest.py) ----------------------

#: What every ``door_xfail`` must say, besides the doors.
XFAIL_KEYWORDS = ("raises", "match", "versions", "reason")


#: The releases of each server distribution its known gaps were checked on, and the
#: releases they are expected on from then on (a ``door_xfail``'s ``versions``).
CHECKED = {"uvicorn": ("uvicorn 0.52.1 to 0.55.0", ">=0.52.1"), "hypercorn": ("hypercorn 0.18.0", ">=0.18")}


def server_gap(*doors: str, raises: type[BaseException], match: str, reason: str) -> pytest.MarkDecorator:
    """A ``door_xfail`` on the server process ``doors`` for what their server does in the
    relay's stead: expected on the releases :data:`CHECKED` gives, which ``reason`` then names."""
    servers = list(dict.fromkeys(DISTRIBUTIONS[door] for door in doors))
    versions = {name: CHECKED[name][1] for name in servers}
    checked = " and ".join(CHECKED[name][0] for name in servers)
    return pytest.mark.door_xfail(
        *doors, raises=raises, match=match, versions=versions, reason=f"{reason} (checked on {checked})"
    )


def hypercorn_refuses_frames_behind_the_upgrade(status: int) -> Callable[[Any], Any]:
    """The ``door_xfail`` markers of a test that writes an upgrade request and WebSocket frames
    in one go, to which the relay answers ``status``: hypercorn answers 400 instead, and its
    trio worker then crashes (test_relay.py shows it, with no member left behind)."""
    said = f"hypercorn answers 400 (its own, not the relay's {status}) when WebSocket frames follow the upgrade request"
    match = rf"(?m)^assert 400 == {status}$"
    on_asyncio = server_gap("hypercorn-asyncio", raises=AssertionError, match=match, reason=said)
    on_trio = server_gap(
        "hypercorn-trio", raises=AssertionError, match=match, reason=f"{said}, then its worker crashes"
    )
    return lambda test: on_asyncio(on_trio(test))


def door_params(node: pytest.Item, *, with_backend: bool) -> list[Any]:
    """One ``pytest.param`` per door the test runs on, with its xfail and skip marks.

    The doors come from the closest ``doors`` marker (none named: every door); each
    ``door_skip`` marker names doors and gives the reason. Each ``door_xfail`` marker names
    doors and says what is expected of them (:func:`check_door_xfail`): a strict xfail on a
    door where the installed release of the door's distribution is within ``versions`` (and
    any other distribution named there too); elsewhere none, and the test must pass.
    """
    marker = node.get_closest_marker("doors")
    names = tuple(marker.args) if marker is not None and marker.args else DOORS
    unknown = [name for name in names if name not in DOORS]
    assert not unknown, f"{node.nodeid}: unknown doors {unknown}"
    expectations = list(node.iter_markers("door_xfail"))
    for xfail in expectations:
        check_door_xfail(node.nodeid, xfail)
    params = []
    for door in names:
        marks: list[Any] = []
        mine = [xfail for xfail in expectations if door in xfail.args]
        assert len(mine) <= 1, f"{node.nodeid}: {len(mine)} door_xfail markers name {door}; one says it all"
        for xfail in mine:
            held = _versions_hold(door, xfail.kwargs["versions"])
            if held is not None:
                marks.append(
                    pytest.mark.xfail(
                        strict=True,
                        raises=xfail.kwargs["raises"],
                        match=xfail.kwargs["match"],
                        versions=xfail.kwargs["versions"],
                        reason=f"{door}: {xfail.kwargs['reason']} [{held}]",
                    )
                )
        for skip in node.iter_markers("door_skip"):
            if door in skip.args:
                marks.append(pytest.mark.skip(reason=f"{door}: {skip.kwargs['reason']}"))
        values = (door, client_backend(door)) if with_backend else (door,)
        params.append(pytest.param(*values, id=door, marks=marks))
    return params


def check_door_xfail(nodeid: str, xfail: pytest.Mark) -> None:
    """A ``door_xfail`` says what it expects, or the test is not collected:

    - ``raises``: the exception type (or tuple of types) the test fails with;
    - ``match``: a regular expression that must be found (``re.search``) in the failure's
      message, ``str()`` of the exception (for an ``assert``, pytest's explanation after any
      message of the test's own); a failure of another type, or whose message does not match,
      is a failure (tests/conftest.py, ``pytest_runtest_makereport``);
    - ``versions``: distribution name to PEP 440 specifier, the releases the expectation
      holds for: every server process door named needs its own (:data:`DISTRIBUTIONS`);
      other distributions count for every door named;
    - ``reason``: why, and on which release it was last seen (``checked on hypercorn 0.18.0``).
    """
    where = f"{nodeid}: door_xfail{xfail.args}"
    lacking = [keyword for keyword in XFAIL_KEYWORDS if keyword not in xfail.kwargs]
    assert not lacking, f"{where} must also say {', '.join(f'{keyword}=' for keyword in lacking)} (check_door_xfail)"
    extra = set(xfail.kwargs) - set(XFAIL_KEYWORDS)
    assert not extra, f"{where}: unknown keywords {sorted(extra)}"
    assert xfail.args, f"{where} names no door"
    unknown = [name for name in xfail.args if name not in DOORS]
    assert not unknown, f"{where}: unknown doors {unknown}"
    raises, match, versions, reason = (xfail.kwargs[keyword] for keyword in XFAIL_KEYWORDS)
    types = raises if isinstance(raises, tuple) else (raises,)
    assert types and all(isinstance(kind, type) and issubclass(kind, BaseException) for kind in types), (
        f"{where}: raises={raises!r} is not an exception type (or a tuple of them)"
    )
    assert isinstance(match, str) and match, f"{where}: match= must be a non-empty regular expression"
    try:
        re.compile(match)
    except re.error as exc:
        raise AssertionError(f"{where}: match={match!r} is not a regular expression: {exc}") from None
    assert isinstance(reason, str) and reason, f"{where}: reason= must say why"
    assert isinstance(versions, dict) and versions, f"{where}: versions= must map distributions to specifiers"
    for distribution, specifier in versions.items():
        try:
            SpecifierSet(specifier)
        except (InvalidSpecifier, TypeError):
            raise AssertionError(f"{where}: versions[{distribution!r}] = {specifier!r} is not a specifier") from None
        try:
            importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            raise AssertionError(f"{where}: versions names {distribution!r}, which is not installed") from None
    for door in xfail.args:
        own = DISTRIBUTIONS.get(door)
        assert own is None or own in versions, f"{where}: versions= must give the releases of {own!r} for {door}"
        assert _relevant(door, versions), f"{where}: versions= names no distribution that decides {door}"


def _relevant(door: str, versions: dict[str, str]) -> list[str]:
    """The distributions of ``versions`` that decide ``door``: its own, and those of no door."""
    doors_own = set(DISTRIBUTIONS.values())
    return [name for name in versions if name == DISTRIBUTIONS.get(door) or name not in doors_own]


def _versions_hold(door: str, versions: dict[str, str]) -> str | None:
    """Whether the installed releases of the distributions deciding ``door`` are all within
    ``versions``: if so, what they are (for the xfail's reason), else None."""
    seen = []
    for name in _relevant(door, versions):
        installed = importlib.metadata.version(name)
        if not SpecifierSet(versions[name]).contains(Version(installed), prereleases=True):
            return None
        seen.append(f"{name} {installed}, expected to fail on {versions[name]}")
    return "; ".join(seen)
