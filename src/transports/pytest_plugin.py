"""The relay as pytest fixtures, for the tests of applications that use it.

Installed with relaycore, the plugin is registered through the ``pytest11`` entry point, so
any project that has relaycore (and pytest) installed has these fixtures, each named with a
``relay_`` prefix so that they sit beside a project's own:

- ``relay_config``: the :class:`relaycore.Config` of the test's relay;
  :func:`relaycore.testing.config_for_tests` unless a conftest (or the test module) overrides
  the fixture.
- ``relay_server``: a real native server (:class:`transports.server.RelayServer`) on
  127.0.0.1 and a free port, for one test, on the test's anyio backend: use it from
  ``@pytest.mark.anyio`` tests, on asyncio or trio. It is a :class:`RunningRelay`.
- ``relay_harness``: a fresh :class:`relaycore.testing.Harness` with the same config: the
  relay in memory, no sockets, no event loop, time moved by hand.

docs/testing.md shows them at work. Nothing of the relay is imported until a fixture is
used, so the plugin costs a pytest run that does not use it nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio
import pytest

if TYPE_CHECKING:
    from relaycore import Config, Hub
    from relaycore.testing import Harness
    from transports.server import RelayServer

__all__ = ["RunningRelay", "relay_config", "relay_harness", "relay_server"]

HOST = "127.0.0.1"


class RunningRelay:
    """The relay of one test, listening on 127.0.0.1 (what ``relay_server`` gives).

    ``connect(relay_server.ws_url("room"))`` joins channel ``room`` on it.
    """

    def __init__(self, server: RelayServer) -> None:
        #: The native server itself (``server.shutdown()`` closes every member with 1001).
        self.server = server
        self.config: Config = server.config
        #: The relay's hub: its channels and members, to look at.
        self.hub: Hub = server.hub
        self.port: int = server.port
        #: The relay's base URL, ``http://127.0.0.1:<port>``: add ``/c/<channel>`` for
        #: :func:`transports.client.connect`, or pass it to ``http_push`` as it is.
        self.url = f"http://{HOST}:{self.port}"

    def __repr__(self) -> str:
        return f"<RunningRelay {self.url}>"

    def ws_url(self, channel: str) -> str:
        """The WebSocket URL of ``channel`` (percent-encoded): ``ws://127.0.0.1:<port>/c/<channel>``."""
        return f"ws://{HOST}:{self.port}/c/{quote(channel, safe=':/')}"


@pytest.fixture
def relay_config() -> Config:
    """The configuration of the test's relay (``relay_server`` and ``relay_harness``).

    :func:`relaycore.testing.config_for_tests()`: the defaults, with the per-address
    connection and push rates raised. Override this fixture to change it, for example to
    reserve a namespace::

        @pytest.fixture
        def relay_config():
            return config_for_tests(namespaces={"alerts": NamespaceConfig(send_key="k")})
    """
    from relaycore.testing import config_for_tests

    return config_for_tests()


@pytest.fixture
async def relay_server(relay_config: Config, anyio_backend: Any) -> AsyncIterator[RunningRelay]:
    """A native relay for one test on 127.0.0.1 and a free port, on the test's anyio backend.

    It stops at once when the test ends (members see the connection drop, not a close).
    """
    from transports.server import RelayServer

    server = RelayServer(relay_config)
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve, HOST, 0)
        try:
            yield RunningRelay(server)
        finally:
            tg.cancel_scope.cancel()


@pytest.fixture
def relay_harness(relay_config: Config) -> Harness:
    """A fresh :class:`relaycore.testing.Harness` on ``relay_config``: the relay in memory."""
    from relaycore.testing import Harness

    return Harness(relay_config)
