"""The native server: the relay core on raw non-blocking sockets, on asyncio or trio.

Theory of operation. One task per connection reads: it waits until the socket is
readable (``anyio.wait_readable``), reads what the kernel has, feeds it to the core's
:class:`relaycore.Connection`, then *flushes*: every outbox the core filled is written
straight to its socket with a non-blocking ``send()``. So a broadcast costs no task
switch per recipient, and all frames due to one member from one read go out in one
``send()``. Only when a socket does not take everything does the rest stay in its
(bounded) outbox, and a writer task waits for writability to drain it. A member whose
outbox goes over ``outbound_buffer_bytes`` is closed by the core as a slow consumer; the
others never wait for it.

Sockets are plain non-blocking ``socket.socket`` objects rather than anyio streams: on
asyncio, a stream's socket belongs to an asyncio transport and cannot also be waited on.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.abc

from relaycore import Config, Connection, Hub, Outbox, State
from relaycore._hub import Clock, UidSource

from ._clock import SystemClock, secure_uids

__all__ = ["RelayServer"]

log = logging.getLogger("relaycore.server")

READ_SIZE = 256 * 1024
_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class Peer:
    """The transport side of one connection: its socket, reader scope and write state."""

    __slots__ = ("blocked", "conn", "dead", "scope", "sock")

    def __init__(self, sock: socket.socket, conn: Connection) -> None:
        self.sock = sock
        self.conn = conn
        self.scope: anyio.CancelScope | None = None
        #: A writer task owns the socket's writes until the outbox drains.
        self.blocked = False
        #: The socket failed; nothing more is written.
        self.dead = False


class RelayServer:
    """A relay listening on TCP (IPv4 and/or IPv6), driven by anyio.

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
    ) -> None:
        self.config = config or Config()
        self.hub = hub or Hub(self.config, clock or SystemClock(), uids or secure_uids)
        #: The addresses bound, as (host, port), once listening.
        self.addresses: list[tuple[str, int]] = []
        self._peers: set[Peer] = set()
        self._tg: anyio.abc.TaskGroup | None = None
        self._listeners: list[socket.socket] = []
        self._stop: anyio.Event | None = None  # made inside the event loop, in serve()

    @property
    def port(self) -> int:
        """The port listened on (useful with port 0)."""
        return self.addresses[0][1]

    # -- lifecycle ---------------------------------------------------------------------

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
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                for sock in self._listeners:
                    tg.start_soon(self._accept, sock)
                tg.start_soon(self._tick)
                task_status.started(self.addresses)
                await self._stop.wait()
                await self._drain()
                tg.cancel_scope.cancel()
        finally:
            for sock in self._listeners:
                anyio.notify_closing(sock)
                sock.close()
            self._listeners = []

    def bind(self, host: str | Sequence[str] | None = None, port: int | None = None) -> list[tuple[str, int]]:
        """Open the listening sockets now (``serve`` does it if you do not).

        Binding before the event loop starts lets a caller report a taken port as a plain
        ``OSError``.
        """
        host = self.config.server.host if host is None else host
        port = self.config.server.port if port is None else port
        self._listeners = _bind(host, port)
        self.addresses = [_address(sock) for sock in self._listeners]
        return self.addresses

    def shutdown(self) -> None:
        """Stop accepting, close every member with 1001, and return from :meth:`serve`."""
        if self._stop is not None:
            self._stop.set()

    async def _drain(self) -> None:
        """Graceful shutdown: close 1001 for everyone, wait for the handshakes (bounded)."""
        for sock in self._listeners:
            anyio.notify_closing(sock)
            sock.close()
        self._listeners = []
        self.hub.shutdown()
        for peer in list(self._peers):
            peer.conn.close(1001, "server shutting down")
        self._flush()
        with anyio.move_on_after(self.config.server.shutdown_grace):
            while self._peers:
                await anyio.sleep(0.02)

    async def _tick(self) -> None:
        """The one timer task: keepalive pings, dead peers, handshake and close timeouts.

        The core decides (``Connection.tick``); this loop only calls it when a
        connection's deadline has passed, and ends the reader of a connection the core
        declared closed.
        """
        limits = self.config.limits
        period = max(0.02, min(1.0, limits.ping_interval, limits.ping_timeout, limits.close_timeout) / 4)
        clock = self.hub.clock
        while True:
            await anyio.sleep(period)
            now = clock.monotonic()
            for peer in list(self._peers):
                conn = peer.conn
                if conn.deadline <= now:
                    conn.tick(now)
                    if conn.state is State.CLOSED and peer.scope is not None:
                        peer.scope.cancel()
            self.hub.tick(now)
            self._flush()

    # -- accepting ---------------------------------------------------------------------

    async def _accept(self, listener: socket.socket) -> None:
        assert self._tg is not None
        start = self._tg.start_soon
        while True:
            try:
                await anyio.wait_readable(listener)
            except anyio.ClosedResourceError:
                return  # shutdown closed the listener
            for _ in range(64):  # take a burst of pending connections per wake-up
                try:
                    sock, addr = listener.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        log.warning("accept failed: %s; pausing", exc)
                        await anyio.sleep(0.1)
                        break
                    raise
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                start(self._serve_connection, sock, str(addr[0]))

    # -- one connection ----------------------------------------------------------------

    async def _serve_connection(self, sock: socket.socket, client: str) -> None:
        conn = Connection(self.hub, client=client)
        peer = Peer(sock, conn)
        conn.outbox.peer = peer
        self._peers.add(peer)
        try:
            with anyio.CancelScope() as scope:
                peer.scope = scope
                await self._read_loop(peer)
        except Exception:  # a bug must cost one connection, never the server
            log.exception("connection from %s failed", client)
            with contextlib.suppress(Exception):
                conn.close(1011, "internal error")
        finally:
            if conn.state is not State.CLOSED:
                conn.connection_lost()
            if conn.problem:
                log.info("connection from %s ended: %s", conn.client, conn.problem)
            self._flush()
            self._peers.discard(peer)
            with anyio.CancelScope(shield=True):
                await self._finish(peer)

    async def _read_loop(self, peer: Peer) -> None:
        sock, conn = peer.sock, peer.conn
        recv, feed, flush = sock.recv, conn.receive_data, self._flush
        while True:
            await anyio.wait_readable(sock)
            try:
                data = recv(READ_SIZE)
            except BlockingIOError:
                continue
            except OSError:
                conn.connection_lost()
                return
            feed(data)
            flush()
            if conn.state is State.CLOSED or not data or peer.dead:
                return

    async def _finish(self, peer: Peer) -> None:
        """Write what is left (a close frame, a response), then close the socket."""
        sock, outbox = peer.sock, peer.conn.outbox
        with anyio.move_on_after(self.config.limits.close_timeout):
            while outbox and not peer.dead:
                if not peer.blocked:
                    self._write(peer, outbox)
                if outbox and not peer.dead:
                    await anyio.sleep(0.01) if peer.blocked else await anyio.wait_writable(sock)
        if not peer.conn.upgraded and not peer.dead:
            # A refused HTTP request may have unread input (a body we did not want);
            # closing now could reset the connection before the client read our
            # answer. Half-close and wait briefly for the client to finish.
            with anyio.move_on_after(1.0):
                try:
                    sock.shutdown(socket.SHUT_WR)
                    for _ in range(16):
                        await anyio.wait_readable(sock)
                        if not sock.recv(65536):
                            break
                except OSError:
                    pass
        anyio.notify_closing(sock)
        sock.close()

    # -- writing -----------------------------------------------------------------------

    def _flush(self) -> None:
        """Write every outbox the core filled, directly while the kernel takes the bytes."""
        write = self._write
        for outbox in self.hub.take_ready():
            peer: Peer | None = outbox.peer
            if peer is not None and not peer.blocked and not peer.dead:
                write(peer, outbox)

    def _write(self, peer: Peer, outbox: Outbox) -> None:
        try:
            sent = peer.sock.send(outbox.view())
        except BlockingIOError:
            sent = 0
        except OSError:
            self._lost(peer, outbox)
            return
        if sent == outbox.size:
            outbox.consume(sent)
            return  # the common case: the kernel took everything
        outbox.consume(sent)
        if outbox:
            peer.blocked = True
            assert self._tg is not None
            self._tg.start_soon(self._drain_peer, peer, outbox)

    async def _drain_peer(self, peer: Peer, outbox: Outbox) -> None:
        """The writer: wait for writability and send until the outbox is empty."""
        sock = peer.sock
        try:
            while outbox and not peer.dead:
                await anyio.wait_writable(sock)
                try:
                    sent = sock.send(outbox.view())
                except BlockingIOError:
                    continue
                except OSError:
                    self._lost(peer, outbox)
                    return
                outbox.consume(sent)
        except (anyio.ClosedResourceError, OSError):
            peer.dead = True
        finally:
            peer.blocked = False

    def _lost(self, peer: Peer, outbox: Outbox) -> None:
        """A write failed: the socket is gone; stop writing and end its reader."""
        peer.dead = True
        outbox.consume(outbox.size)
        if peer.scope is not None:
            peer.scope.cancel()


def _bind(host: str | Sequence[str], port: int) -> list[socket.socket]:
    """Listening sockets for every address of ``host`` (IPv4 and IPv6), non-blocking."""
    hosts = [host] if isinstance(host, str) else list(host)
    sockets: list[socket.socket] = []
    try:
        for name in hosts:
            infos = socket.getaddrinfo(name or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            seen = set()
            for family, kind, proto, _, sockaddr in infos:
                if (family, sockaddr[0]) in seen:
                    continue
                seen.add((family, sockaddr[0]))
                sock = socket.socket(family, kind, proto)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if port == 0 and sockets:
                    # One port for every address, as a user of port 0 would expect.
                    sockaddr = (sockaddr[0], sockets[0].getsockname()[1], *sockaddr[2:])
                sock.bind(sockaddr)
                sock.listen(4096)
                sock.setblocking(False)
                sockets.append(sock)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _address(sock: socket.socket) -> tuple[str, int]:
    name: Any = sock.getsockname()
    return str(name[0]), int(name[1])
