"""The native server's two tasks: the selector wait that handles every ready socket, and
the timer task that runs the core's deadlines.

Theory of operation. Every socket (listeners and connections) is registered with one OS
readiness selector (epoll on Linux, kqueue on the BSDs and macOS), whose own file
descriptor is watched by the event loop: on trio by ONE task in ``anyio.wait_readable``,
on asyncio by a reader callback registered once (:meth:`Polling._poll_asyncio`). On
readiness :meth:`Polling._ready` asks the selector which sockets are ready and handles
them all in one pass, then flushes. So an idle connection costs no task, no coroutine
frames and no cancel scope: only its socket, its core objects and a selector entry. The
second task (:meth:`Polling._tick`) calls the core's ``tick`` for the connections whose
deadline passed (keepalive, handshake and close timeouts) and the hub's own.
"""

from __future__ import annotations

import asyncio

import anyio

from relaycore import RelayUsageError, State

from .._door import running_asyncio_loop
from ._listeners import Accepting, Listener
from ._peers import READ, WRITE, Phase, unsent

__all__ = ["Polling"]


class Polling(Accepting):
    """The selector wait and the timer task (a part of :class:`transports.server.RelayServer`)."""

    async def _poll(self) -> None:
        """Wait on the selector; handle every ready socket; flush."""
        selector = self._selector
        assert selector is not None
        fileno = getattr(selector, "fileno", None)
        if fileno is None:  # select()/poll() selectors have no descriptor to wait on
            raise RelayUsageError("the native server needs epoll, kqueue or /dev/poll")
        fd = fileno()
        loop = running_asyncio_loop()
        if loop is not None:
            await self._poll_asyncio(loop, fd)
            return
        while True:
            await anyio.wait_readable(fd)
            self._ready()

    async def _poll_asyncio(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        """asyncio: watch the selector's descriptor once and handle readiness in the callback.

        ``anyio.wait_readable`` adds and removes the descriptor on every call; for an epoll
        descriptor the kernel then checks every socket nested in it for loops, a cost that
        grows with the number of connections and is paid on every wake.
        """
        failed = anyio.Event()
        errors: list[Exception] = []

        def on_ready() -> None:
            try:
                self._ready()
            except Exception as exc:  # a bug in the server itself: end serve() with it
                loop.remove_reader(fd)
                errors.append(exc)
                failed.set()

        loop.add_reader(fd, on_ready)
        try:
            await failed.wait()
        finally:
            loop.remove_reader(fd)
        raise errors[0]

    def _ready(self) -> None:
        """One pass over the ready sockets, then write what the core queued."""
        selector = self._selector
        assert selector is not None
        for key, mask in selector.select(0):
            target = key.data
            if type(target) is Listener:
                self._accept(target.sock)
                continue
            try:
                if mask & READ:
                    self._readable(target)
                if mask & WRITE and target.writing:
                    self._send(target)
            except Exception:  # a bug must cost one connection, never the server
                self._failed(target)
        self._flush()

    async def _tick(self) -> None:
        """The timer task: keepalive pings, dead peers, handshake and close timeouts.

        The core decides (``Connection.tick``); this loop calls it when a connection's
        deadline has passed, and closes sockets the core is done with: those whose ending
        took too long (aborted if still owed bytes), and those whose last bytes the kernel
        has sent.
        """
        limits = self.config.limits
        period = max(0.02, min(1.0, limits.ping_interval, limits.ping_timeout, limits.close_timeout) / 4)
        clock = self.hub.clock
        while True:
            await anyio.sleep(period)
            now = clock.monotonic()
            for peer in list(self._peers):
                if peer.phase is Phase.OPEN:
                    conn = peer.conn
                    if conn.deadline <= now:
                        try:
                            closing = conn.state is State.CLOSING
                            conn.tick(now)
                            if conn.state is State.CLOSED:
                                self._end(peer, unanswered=closing)
                            else:
                                self._follow(peer)
                        except Exception:  # a bug must cost one connection, never the server
                            self._failed(peer)
                elif peer.deadline <= now:
                    self._expire(peer)
                elif peer.phase is Phase.SENDING and not unsent(peer.sock):
                    self._close(peer)
            if self._accept_paused_until and now >= self._accept_paused_until:
                self._resume_accepting()
            elif self._starved_since is not None and not self._accept_paused_until:
                # Accepting again, and no new connection may come to find out whether anyone
                # still waits: ask (an empty backlog ends the shortage, see _fed).
                for listener in self._listeners:
                    self._accept(listener)
            self.hub.tick(now)
            self._flush()
