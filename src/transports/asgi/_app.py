"""The ASGI app itself: what it is made of, the dispatch of each scope, and its lifespan.

What every door shares (the hub or cluster node, the Redis driver, routes, metrics, the
config-vs-hub rule, the configuration from the environment) comes from
:mod:`transports._door`; a WebSocket is served by :mod:`._link`, a plain request by
:mod:`._http`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio

from relaycore import Config, Hooks, Hub, Outbox

from .._door import config_from_environment, door_hub, door_parts
from .._host import HostCalls, fit_hooks
from ._http import serve_http
from ._link import Link, serve_websocket
from ._scope import Receive, Scope, Send

__all__ = ["RelayApp", "app", "create_app"]


class RelayApp(HostCalls):
    """An ASGI 3 application serving one relay (see :mod:`transports.asgi`)."""

    def __init__(self, hub: Hub, hooks: Hooks | None = None) -> None:
        self.hub = hub
        fit_hooks(hub, hooks)
        hub.spawn = self._spawn
        self._loose = set()
        self._links: set[Link] = set()
        #: :meth:`flush`, bound once: every connection holds it (a bound method each would
        #: cost each idle connection its own object).
        self._flush = self.flush
        self._next_tick = 0.0
        parts = door_parts(hub, self._flush)
        #: The cluster driver, when the hub is a cluster node; it runs during the lifespan
        #: (or inside :meth:`running`, for an app mounted in another).
        self.backplane = parts.backplane
        self._cluster_running = False
        #: The paths served beside the relay's own: ``/metrics``, static files (None: neither).
        self.routes = parts.routes
        #: The ``/metrics`` endpoint and its registry, when ``[metrics] enabled``.
        self.metrics = parts.metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        self._tick()  # the housekeeping, for an app run without its lifespan
        if kind == "websocket":
            await serve_websocket(self.hub, self._flush, self._links, scope, receive, send, self)
        elif kind == "http":
            await serve_http(self.hub, self.routes, self._flush, scope, receive, send, self)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    def flush(self) -> None:
        """Wake the writer of every outbox the core just filled (the hub never awaits).

        Call it after anything else calls into the hub (a backplane resolving a join)."""
        self.wake(self.hub.wake(self))

    def wake(self, outboxes: list[Outbox]) -> None:
        """Wake the writers of these outboxes of ours (the :class:`relaycore.Door` side:
        another door's flush hands them over)."""
        for outbox in outboxes:
            link = outbox.peer
            if link is not None and link.idle is not None:
                link.wake()

    # -- lifespan --------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        async with contextlib.AsyncExitStack() as stack:
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await stack.enter_async_context(self.running())
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.shutdown()
                    await stack.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[RelayApp]:
        """Run the app's background work for the block: the hub's housekeeping every
        second (long-poll members gone quiet, rate state) and the cluster driver.

        The app's own lifespan does this; an app mounted in another (FastAPI, Starlette),
        whose lifespan the outer app does not pass on, enters it from the outer lifespan
        (without it, the housekeeping runs as requests come). On leaving, the members'
        leaves still queued for the cluster are sent first.
        """
        if self._cluster_running:
            yield self
            return
        self._cluster_running = True
        try:
            async with anyio.create_task_group() as tg:
                self._tasks = tg
                tg.start_soon(self._housekeeping)
                if self.backplane is not None:
                    await tg.start(self.backplane.run)
                try:
                    yield self
                finally:
                    if self.backplane is not None:
                        with anyio.CancelScope(shield=True):
                            await self.backplane.drain(self.hub.config.server.shutdown_grace)
                    tg.cancel_scope.cancel()
        finally:
            self._tasks = None
            self._cluster_running = False

    async def _housekeeping(self) -> None:
        while True:
            await anyio.sleep(1.0)
            self._next_tick = 0.0
            self._tick()

    def _tick(self) -> None:
        now = self.hub.clock.monotonic()
        if now >= self._next_tick:
            self._next_tick = now + 1.0
            self.hub.tick(now)
            self.flush()

    async def shutdown(self) -> None:
        """Close every member with 1001 and wait (up to ``shutdown_grace``) for the closes to go out."""
        self.hub.shutdown()
        links = list(self._links)
        for link in links:
            if link.session is not None:
                link.session.shutdown()
        self.flush()
        with anyio.move_on_after(self.hub.config.server.shutdown_grace):
            for link in links:
                await link.done.wait()


def create_app(config: Config | None = None, *, hub: Hub | None = None, hooks: Hooks | None = None) -> RelayApp:
    """An ASGI app for a relay with ``config`` (or serving ``hub``, with the hub's config).

    A config that differs from the hub's raises :class:`relaycore.RelayUsageError`.

    >>> from relaycore import Config
    >>> create_app(Config()).hub.config.limits.max_message_bytes
    102400
    """
    return RelayApp(door_hub(config, hub), hooks)


class _LazyApp:
    """Builds the configured app on first use, so that importing this module reads nothing:
    the TOML file named by ``RELAYCORE_CONFIG`` plus the ``RELAYCORE_*`` overrides."""

    _app: RelayApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            self._app = RelayApp(door_hub(config_from_environment()))
        await self._app(scope, receive, send)


#: The app ``uvicorn transports.asgi:app`` and ``hypercorn transports.asgi:app`` serve.
app = _LazyApp()
