"""Shared fixtures: the anyio backends, the front doors, and a relay to test against.

Every async transport test runs on both anyio backends. A module marked
``pytest.mark.doors`` runs its tests that use a relay (the ``relay`` or ``door`` fixture)
once per front door instead: the native server on asyncio and on trio, uvicorn, and
hypercorn on asyncio and on trio (``tests/transports/doors.py`` says how each is run).
"""

from __future__ import annotations

import os
import re
import ssl
import sys
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import sniffio

from relaycore import Config
from transports.server import RelayServer


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The backend of the test's clients (and of the native server): see pytest_generate_tests."""
    return str(getattr(request, "param", "asyncio"))


@pytest.fixture
def door(request: pytest.FixtureRequest, anyio_backend: str) -> str:
    """The front door the test's relay runs behind: one per door in a ``doors`` module,
    otherwise the native server on the test's backend."""
    return str(getattr(request, "param", f"native-{anyio_backend}"))


def _backend_is_ours(metafunc: pytest.Metafunc) -> bool:
    """Whether the test gets its ``anyio_backend`` from this file (a module may pin its own)."""
    table = getattr(metafunc, "_arg2fixturedefs", None)
    if table is None:  # pytest keeps it elsewhere now: better twice the runs than no trio
        return True
    definitions = table.get("anyio_backend")
    if not definitions:
        return False
    func = definitions[-1].func
    return bool(func.__module__ == __name__ and func.__name__ == "anyio_backend")


def _parametrized_by_the_test(metafunc: pytest.Metafunc, name: str) -> bool:
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
        if name in ([part.strip() for part in names.split(",")] if isinstance(names, str) else names):
            return True
    return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Both backends for every async test; for a test of a ``doors`` module that uses a
    relay, one run per door instead, each with the clients' backend for that door."""
    ours = (
        "anyio_backend" in metafunc.fixturenames
        and _backend_is_ours(metafunc)
        and not _parametrized_by_the_test(metafunc, "anyio_backend")
    )
    if "door" in metafunc.fixturenames and metafunc.definition.get_closest_marker("doors") is not None:
        from doors import door_params

        names = ["door", "anyio_backend"] if ours else ["door"]
        metafunc.parametrize(names, door_params(metafunc.definition, with_backend=ours), indirect=True)
    elif ours:
        metafunc.parametrize("anyio_backend", ["asyncio", "trio"], indirect=True)


def make_config(toml: str = "") -> Config:
    """A Config for tests from TOML text. Unless the text sets them, the connection and push
    rates per address are raised: every test client comes from 127.0.0.1, a server process
    serves many tests in a row, and those limits have tests of their own."""
    config = Config.from_toml(toml, env={})
    if "connections_per_second_per_ip" not in toml:
        config.limits.connections_per_second_per_ip = 100_000.0
    if "pushes_per_second_per_ip" not in toml:
        config.limits.pushes_per_second_per_ip = 100_000.0
    return config


@pytest.fixture
def config() -> Config:
    """The relay configuration for a test; override this fixture to change it."""
    return make_config()


@asynccontextmanager
async def running(
    config: Config | None = None,
    host: str = "127.0.0.1",
    *,
    ssl_context: ssl.SSLContext | None = None,
    door: str | None = None,
    hooks: Any = None,
) -> AsyncIterator[Any]:
    """The relay behind ``door``, on ``host`` with a free port, for the duration of the block.

    The native doors (and ``door=None``) run a :class:`RelayServer` on the test's own event
    loop and yield it. Any other door is a shared server process (``doors.POOL``), yielded
    as a :class:`doors.DoorProcess` with ``.port`` and ``.pid`` but no ``.hub``.
    """
    config = config or make_config()
    if door is None or door.startswith("native-"):
        if door is not None:
            current = sniffio.current_async_library()
            assert door == f"native-{current}", f"door {door} asked for from a test running on {current}"
        server = RelayServer(config, ssl_context=ssl_context, hooks=hooks)
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve, host, 0)
            try:
                yield server
            finally:
                tg.cancel_scope.cancel()
        return
    if ssl_context is not None or config.server.tls_certfile:
        raise ValueError(f"running(door={door!r}): TLS is tested on the native server only")
    from doors import POOL, config_toml

    text = config_toml(config)
    process = await anyio.to_thread.run_sync(lambda: POOL.get(door, text, host=host))
    try:
        yield process
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(POOL.release, process)


@pytest.fixture
async def relay(config: Config, door: str) -> AsyncIterator[Any]:
    """The relay behind the test's door (see :func:`running`), on 127.0.0.1 with a free port."""
    async with running(config, door=door) as server:
        yield server


def ws_url(server: Any, path: str, host: str = "127.0.0.1") -> str:
    """The ws:// URL of ``path`` on a running relay."""
    shown = f"[{host}]" if ":" in host else host
    return f"ws://{shown}:{server.port}{path}"


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "slow: long-running network tests")
    config.addinivalue_line("markers", "soak: a long soak or benchmark run, only with RELAYCORE_SOAK=1")
    config.addinivalue_line("markers", "doors(*names): run the module's (or test's) relay tests on these front doors")
    config.addinivalue_line(
        "markers",
        "door_xfail(*names, raises, match, versions, reason): a strict xfail on these doors, for this "
        "exception type and message (re.search), where the door's distribution is within versions "
        "(tests/transports/doors.py, check_door_xfail)",
    )
    config.addinivalue_line("markers", "door_skip(*names, reason): skip on these doors")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every xfail says what it expects (see :func:`_check_xfails`). Soaks
    (``@pytest.mark.soak``) run only with ``RELAYCORE_SOAK=1``; otherwise they are
    deselected (counted as such in the summary), which keeps the default suite short."""
    _check_xfails(items)
    if os.environ.get("RELAYCORE_SOAK") == "1":
        return
    soaks = [item for item in items if item.get_closest_marker("soak") is not None]
    if soaks:
        config.hook.pytest_deselected(items=soaks)
        items[:] = [item for item in items if item.get_closest_marker("soak") is None]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    doors = sys.modules.get("doors")
    if doors is not None:
        doors.POOL.close()


# -- every xfail says what it expects ------------------------------------------------------------

#: What an xfail must carry: ``door_xfail`` (tests/transports/doors.py) gives them all.
XFAIL_NEEDS = ("raises", "match", "versions")


def _check_xfails(items: list[pytest.Item]) -> None:
    """No plain ``pytest.mark.xfail``: one accepts any failure, on any release. An expected
    failure is a ``door_xfail`` with ``raises``, ``match`` and ``versions``."""
    for item in items:
        for mark in item.iter_markers("xfail"):
            lacking = [keyword for keyword in XFAIL_NEEDS if keyword not in mark.kwargs]
            if lacking:
                raise pytest.UsageError(
                    f"{item.nodeid}: an xfail without {', '.join(f'{keyword}=' for keyword in lacking)}: "
                    "say what is expected with door_xfail(*doors, raises=..., match=..., versions=..., reason=...)"
                )


def failure_message(exc: BaseException) -> str:
    """The message an xfail's ``match`` is searched in: ``str()`` of the exception (for a
    failed ``assert``, the test's own message, if any, then pytest's explanation)."""
    return str(exc)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """An xfail (whose exception type pytest has checked, ``raises``) holds only if its
    ``match`` is found in the failure's message; otherwise the test failed, for real."""
    report = yield
    if not (report.skipped and hasattr(report, "wasxfail") and call.excinfo is not None):
        return report
    if isinstance(call.excinfo.value, pytest.xfail.Exception):  # pytest.xfail() called by the test
        return report
    mark = item.get_closest_marker("xfail")  # the one pytest applied: ours have no condition
    pattern = mark.kwargs.get("match") if mark is not None else None
    if pattern is None:
        return report
    message = failure_message(call.excinfo.value)
    if re.search(pattern, message) is None:
        report.outcome = "failed"
        del report.wasxfail
        explanation = (
            f"expected to fail ({mark.kwargs.get('reason', '')}) with a message matching {pattern!r}; "
            f"failed otherwise, with {type(call.excinfo.value).__name__}: {message}"
        )
        if hasattr(report.longrepr, "addsection"):
            report.longrepr.addsection("not the expected failure (door_xfail match)", explanation)
        else:
            report.sections.append(("not the expected failure (door_xfail match)", explanation))
    return report
