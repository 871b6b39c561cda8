"""Shared fixtures: the anyio backends, and a relay server started in-process."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from relaycore import Config
from transports.server import RelayServer


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every transport test runs on both anyio backends."""
    return str(request.param)


def make_config(toml: str = "") -> Config:
    """A Config for tests from TOML text. Unless the text sets it, the connection rate per
    address is raised: many test clients share 127.0.0.1, and the connection rate limit
    has tests of its own."""
    config = Config.from_toml(toml, env={})
    if "connections_per_second_per_ip" not in toml:
        config.limits.connections_per_second_per_ip = 100_000.0
    return config


@pytest.fixture
def config() -> Config:
    """The relay configuration for a test; override this fixture to change it."""
    return make_config()


@asynccontextmanager
async def running(
    config: Config | None = None, host: str = "127.0.0.1", *, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[RelayServer]:
    """Run a RelayServer on ``host`` with a free port for the duration of the block."""
    server = RelayServer(config or make_config(), ssl_context=ssl_context)
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve, host, 0)
        try:
            yield server
        finally:
            tg.cancel_scope.cancel()


@pytest.fixture
async def relay(config: Config) -> AsyncIterator[RelayServer]:
    """A RelayServer on 127.0.0.1 with a free port, stopped after the test."""
    async with running(config) as server:
        yield server


def ws_url(server: RelayServer, path: str, host: str = "127.0.0.1") -> str:
    """The ws:// URL of ``path`` on a running server."""
    shown = f"[{host}]" if ":" in host else host
    return f"ws://{shown}:{server.port}{path}"


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "slow: long-running network tests")
