"""The native server itself: what it is made of, and its lifecycle (bind, serve, shutdown).

The work is done by its parts, one module each: :mod:`._poll` (the two tasks),
:mod:`._listeners` (accepting), :mod:`._io` (reading, writing and ending peers) and
:mod:`._tls`; what every door shares (the hub, the cluster driver, routes, metrics, the
config-vs-hub rule) comes from :mod:`transports._door`.
"""

from __future__ import annotations

import selectors
import socket
import ssl
from collections.abc import Sequence

import anyio
import anyio.abc

from relaycore import Clock, Config, Hooks, Hub, State, UidSource

from .._door import door_hub, door_parts
from .._host import HostCalls, fit_hooks
from ..plugins import load_doors
from . import _tls
from ._listeners import Listener, address, bind, bind_unix
from ._peers import READ, Peer, Phase
from ._poll import Polling

__all__ = ["RelayServer"]


class RelayServer(Polling, HostCalls):
    """A relay listening on TCP (IPv4 and/or IPv6), driven by anyio.

    Pass a ``config``, or a ``hub`` (which brings its own config, clock and uids: passing
    a different config, or a clock or uids beside it, raises
    :class:`relaycore.RelayUsageError`). ``ssl_context``: serve TLS with it, rather than
    with the one ``[server] tls_certfile`` and ``tls_keyfile`` make.

    >>> server = RelayServer(Config())
    >>> # anyio.run(server.serve)  # runs until cancelled or shutdown()
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        hub: Hub | None = None,
        clock: Clock | None = None,
        uids: UidSource | None = None,
        ssl_context: ssl.SSLContext | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        hub = door_hub(config, hub, clock=clock, uids=uids)
        fit_hooks(hub, hooks)
        hub.spawn = self._spawn
        self._loose = set()
        #: The relay's configuration: the hub's (one source for limits, TLS and ports).
        self.config = hub.config
        self.hub = hub
        parts = door_parts(hub, self._flush)
        #: The cluster driver, when ``[cluster] redis_url`` is set (None: one process).
        self.backplane = parts.backplane
        #: The paths served beside the relay's own: ``/metrics``, static files (None: neither).
        self.routes = parts.routes
        #: The ``/metrics`` endpoint and its registry, when ``[metrics] enabled``.
        self.metrics = parts.metrics
        #: The installed doors ``[doors.<name>]`` names, run beside this server on its hub.
        self.doors = load_doors(hub, self.config.doors)
        #: The addresses bound, as (host, port), once listening.
        self.addresses: list[tuple[str, int]] = []
        self._peers: set[Peer] = set()
        self._listeners: list[socket.socket] = []
        self._selector: selectors.BaseSelector | None = None
        self._accept_paused_until = 0.0
        #: While descriptors have run out: when that began, and the accepts deferred since.
        self._starved_since: float | None = None
        self._deferred = 0
        self._stop: anyio.Event | None = None  # made inside the event loop, in serve()
        #: The TLS context every accepted connection is wrapped in (None: plain TCP).
        self.ssl_context = _tls.server_context(self.config.server, ssl_context)

    def flush(self) -> None:
        """Write what the core queued (call it after calling into the hub yourself)."""
        self._flush()

    @property
    def port(self) -> int:
        """The port listened on (useful with port 0)."""
        return self.addresses[0][1]

    async def serve(
        self,
        host: str | Sequence[str] | None = None,
        port: int | None = None,
        *,
        task_status: anyio.abc.TaskStatus[list[tuple[str, int]]] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen and serve until cancelled or :meth:`shutdown` is called."""
        if not self._listeners:
            self.bind(host, port)
        self._stop = anyio.Event()
        self._selector = selectors.DefaultSelector()
        try:
            for sock in self._listeners:
                self._selector.register(sock, READ, Listener(sock))
            async with anyio.create_task_group() as tg:
                self._tasks = tg
                tg.start_soon(self._poll)
                tg.start_soon(self._tick)
                if self.backplane is not None:
                    await tg.start(self.backplane.run)
                for door in self.doors:
                    await tg.start(door.run)
                task_status.started(self.addresses)
                await self._stop.wait()
                for door in self.doors:
                    with anyio.move_on_after(self.config.server.shutdown_grace):
                        await door.shutdown()
                await self._drain()
                if self.backplane is not None:
                    await self.backplane.drain(self.config.server.shutdown_grace)
                tg.cancel_scope.cancel()
        finally:
            self._tasks = None
            for peer in list(self._peers):
                self._expire(peer)
            self._close_listeners()
            self._selector.close()
            self._selector = None

    def bind(
        self, host: str | Sequence[str] | None = None, port: int | None = None, *, reuse_port: bool = False
    ) -> list[tuple[str, int]]:
        """Open the listening sockets now (``serve`` does it if you do not).

        Binding before the event loop starts lets a caller report a taken port as a plain
        ``OSError``. With ``reuse_port`` the sockets set ``SO_REUSEPORT``, so that several
        processes (``relaycore serve --workers N``) listen on one port and the kernel
        spreads the connections among them.
        """
        if self.config.server.uds and host is None and port is None:
            self._listeners = [bind_unix(self.config.server.uds)]
            self.addresses = [address(sock) for sock in self._listeners]
            return self.addresses
        host = self.config.server.host if host is None else host
        port = self.config.server.port if port is None else port
        self._listeners = bind(host, port, reuse_port=reuse_port)
        self.addresses = [address(sock) for sock in self._listeners]
        return self.addresses

    def shutdown(self) -> None:
        """Stop accepting, close every member with 1001, and return from :meth:`serve`."""
        if self._stop is not None:
            self._stop.set()

    async def _drain(self) -> None:
        """Graceful shutdown: close 1001 for everyone, wait for the handshakes (bounded)."""
        self._close_listeners()
        self.hub.shutdown()
        for peer in list(self._peers):
            if peer.phase is Phase.OPEN:
                try:
                    peer.conn.shutdown()
                    if peer.conn.state is State.CLOSED:
                        self._end(peer)
                except Exception:
                    self._broken(peer)
        self._flush()
        with anyio.move_on_after(self.config.server.shutdown_grace):
            while self._peers:
                await anyio.sleep(0.02)
