"""Stopping the relay behind each front door: what its members see, and how long it takes.

docs/protocol.md section 12: when the relay stops, every member is closed at once with
``1001 server shutting down``, and no leave events are sent. The native server does exactly
that. Behind ASGI the relay learns of the stop only from the lifespan ``shutdown`` event,
and both servers deal with the open WebSockets themselves before they send it.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import anyio
import pytest
from doors import ASGI_DOORS, HYPERCORN_DOORS, config_toml, server_gap, start_door
from wsclient import Client, Closed, clients, join_all

from conftest import make_config, running

pytestmark = [pytest.mark.anyio, pytest.mark.doors]

CONFIG = make_config("[server]\nshutdown_grace = 1.0")
CONFIG_TOML = config_toml(CONFIG)
GRACE = 1  # hypercorn's --graceful-timeout, in seconds (3 by default)


def server_flags(door: str) -> list[str]:
    return ["--graceful-timeout", str(GRACE)] if door in HYPERCORN_DOORS else []


async def closes_of(members: list[Client]) -> list[int | None]:
    """The close code each member sees next; any frame before it fails the test."""
    codes = []
    for member in members:
        with pytest.raises(Closed) as closed:
            frame = await member.recv(timeout=GRACE + 4)
            raise AssertionError(f"a frame before the close: {frame!r}")
        codes.append(closed.value.code)
    return codes


@server_gap(
    "uvicorn",
    raises=AssertionError,
    match=r"(?m)^assert \[1012, 1012, 1012\] == \[1001, 1001, 1001\]$",
    reason="uvicorn closes every WebSocket with 1012 as it stops, before the lifespan shutdown in which the relay "
    "would close them with 1001",
)
@server_gap(
    "hypercorn-asyncio",
    raises=AssertionError,
    match=r"(?m)^assert \[1011, 1011, 1011\] == \[1001, 1001, 1001\]$",
    reason="hypercorn keeps the WebSockets open for --graceful-timeout (3 s by default), then cancels them with "
    "1011; the lifespan shutdown, in which the relay would close them with 1001, comes after",
)
@server_gap(
    "hypercorn-trio",
    raises=AssertionError,
    match=r"(?m)^assert \[None, None, None\] == \[1001, 1001, 1001\]$",
    reason="hypercorn's trio worker serving in its own process (-w 0) does not handle SIGTERM: the process dies "
    "at once and the members see the connection drop without a close frame (no code: 1006); with a worker "
    "process (-w 1, the default) the members are dropped without a close frame after --graceful-timeout",
)
async def test_stopping_closes_every_member_with_1001_and_no_leaves(door: str, tmp_path: Path) -> None:
    if door.startswith("native-"):
        async with running(CONFIG, door=door) as server, clients(server.port) as connect:
            members = await join_all(connect, "/c/room", "/c/room", "/c/room")
            server.shutdown()
            assert await closes_of(members) == [1001] * 3
        return
    process = await anyio.to_thread.run_sync(lambda: start_door(door, CONFIG_TOML, tmp_path, extra=server_flags(door)))
    try:
        async with clients(process.port) as connect:
            members = await join_all(connect, "/c/room", "/c/room", "/c/room")
            process.signal(signal.SIGTERM)
            assert await closes_of(members) == [1001] * 3
    finally:
        await anyio.to_thread.run_sync(process.stop)


@pytest.mark.doors(*ASGI_DOORS)
async def test_the_server_process_stops_promptly_on_sigterm(door: str, tmp_path: Path) -> None:
    process = await anyio.to_thread.run_sync(lambda: start_door(door, CONFIG_TOML, tmp_path, extra=server_flags(door)))
    try:
        async with clients(process.port) as connect:
            members = await join_all(connect, "/c/room", "/c/room")
            started = time.monotonic()
            process.signal(signal.SIGTERM)
            with anyio.fail_after(GRACE + 4):
                while process.alive():
                    await anyio.sleep(0.02)
            assert time.monotonic() - started < GRACE + 2
            for member in members:
                with pytest.raises(Closed):
                    await member.recv(timeout=1)
        # uvicorn ends by raising the signal again (status -15); hypercorn exits 0, or dies of it.
        assert process.process.returncode in (0, -signal.SIGTERM), process.log_tail()
    finally:
        await anyio.to_thread.run_sync(process.stop)
