"""The native server: the relay core on raw non-blocking sockets, on asyncio or trio.

Theory of operation. Every socket (listeners and connections) is registered with one OS
readiness selector (epoll on Linux, kqueue on the BSDs and macOS), whose own file
descriptor is watched by the event loop: on trio by ONE task in ``anyio.wait_readable``,
on asyncio by a reader callback registered once (see :meth:`RelayServer._poll_asyncio`).
On readiness the server asks the selector which sockets are ready and handles them all
in one pass: accept new connections, read what the kernel has and feed it to the core's
:class:`relaycore.Connection`, or write a backlog. Then it *flushes*: every outbox the
core filled is written straight to its socket with a non-blocking ``send()``, so a
broadcast costs no task switch per recipient, and all frames due to one member from one
pass go out in one ``send()``. A socket that does not take everything keeps the rest in
its (bounded) outbox and is watched for writability until it drains. A member whose
outbox goes over ``outbound_buffer_bytes`` is closed by the core as a slow consumer; the
others never wait for it. While the core says a connection is owed too much
(``Connection.reading`` is False: over the bound, or a pipelined HTTP answer unwritten),
its socket is not read at all, so a peer that never reads cannot make the relay owe it
more; once the outbox drains, ``Connection.resume`` lets the core go on.

Failures stay with their connection: an exception while reading, ticking or writing one
socket closes that socket (1011 where a close frame can still go out) and is logged;
``serve()`` ends only when the server's own machinery fails. Transient ``accept()``
errors are skipped; running out of descriptors pauses accepting, is logged once per
episode, and accepting resumes as connections close.

So an idle connection costs no task, no coroutine frames and no cancel scope: only its
socket, its core objects and a selector entry. A second task runs the timers
(keepalive, handshake and close timeouts) by calling the core's ``tick``.

Sockets are plain ``socket.socket`` objects rather than anyio streams: on asyncio, a
stream's socket belongs to an asyncio transport and cannot also be watched here.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import selectors
import socket
import ssl
from collections.abc import Sequence
from enum import Enum
from typing import Any

import anyio
import anyio.abc

from relaycore import Clock, Config, ConfigError, Connection, Hub, RelayUsageError, State, UidSource

from ._backend import running_asyncio_loop
from ._clock import SystemClock, secure_uids
from ._cluster import cluster_driver, cluster_hub
from ._routes import door_routes

__all__ = ["RelayServer"]

log = logging.getLogger("relaycore.server")

# One recv() at most. Larger reads allocate a buffer that glibc takes from mmap() on every
# call (~14 us, against ~2 us for a 64 KiB read of a small message).
READ_SIZE = 64 * 1024
ACCEPT_BURST = 64
_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
_NO_FD_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
#: How long accepting pauses when descriptors run out, unless a connection closes first.
ACCEPT_RETRY = 0.1


class Phase(Enum):
    """Where a socket stands, seen from the transport."""

    OPEN = "open"  # the core is talking over it
    DRAINING = "draining"  # the core is done; write what is left, then close
    LINGER = "linger"  # half-closed after a plain HTTP answer; wait for the client's EOF


class Peer:
    """The transport side of one connection: its socket and write state."""

    __slots__ = (
        "cipher",
        "conn",
        "dead",
        "deadline",
        "events",
        "phase",
        "reading",
        "sock",
        "tls",
        "tls_in",
        "tls_out",
        "writing",
    )

    def __init__(self, sock: socket.socket, conn: Connection) -> None:
        self.sock = sock
        self.conn = conn
        self.phase = Phase.OPEN
        #: The selector watches for input (False while the core says the peer is owed too much).
        self.reading = True
        #: The selector watches for writability (the kernel did not take everything).
        self.writing = False
        #: The events the selector has for this socket now (0: not registered).
        self.events = 0
        #: The socket failed; nothing more is written.
        self.dead = False
        #: When a DRAINING or LINGER socket is closed regardless (monotonic seconds).
        self.deadline = 0.0
        #: TLS only: the session, its two memory buffers, and encrypted bytes the kernel
        #: has not taken yet (at most one encrypted batch: the rest waits, in plaintext, in
        #: the bounded outbox).
        self.tls: ssl.SSLObject | None = None
        self.tls_in: ssl.MemoryBIO | None = None
        self.tls_out: ssl.MemoryBIO | None = None
        self.cipher = b""


class _Listener:
    """Selector data for a listening socket."""

    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock


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
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if hub is not None:
            # The hub's configuration is the relay's: one source for limits, TLS and ports.
            if config is not None and config != hub.config:
                raise RelayUsageError("RelayServer(config, hub=...): the config differs from hub.config; pass one")
            if clock is not None or uids is not None:
                raise RelayUsageError("RelayServer(hub=...): the clock and uids are the hub's own; pass neither")
            config = hub.config
        self.config = config or Config()
        if hub is None:
            hub = cluster_hub(self.config, clock or SystemClock(), uids or secure_uids)
        self.hub = hub
        #: The cluster driver, when ``[cluster] redis_url`` is set (None: one process).
        self.backplane = cluster_driver(hub, self._flush)
        #: The paths served beside the relay's own: ``/metrics``, static files (None: neither).
        self.routes = door_routes(hub, self.backplane)
        #: The ``/metrics`` endpoint and its registry, when ``[metrics] enabled``.
        self.metrics = None if self.routes is None else self.routes.metrics
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
        server = self.config.server
        if server.tls_keyfile and not server.tls_certfile:
            raise ConfigError("`server.tls_keyfile` needs a certificate: set `server.tls_certfile` too")
        if ssl_context is None and server.tls_certfile:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(server.tls_certfile, server.tls_keyfile or None)
        #: The TLS context every accepted connection is wrapped in (None: plain TCP).
        self.ssl_context = ssl_context

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
        self._selector = selectors.DefaultSelector()
        try:
            for sock in self._listeners:
                self._selector.register(sock, _READ, _Listener(sock))
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._poll)
                tg.start_soon(self._tick)
                if self.backplane is not None:
                    await tg.start(self.backplane.run)
                task_status.started(self.addresses)
                await self._stop.wait()
                await self._drain()
                if self.backplane is not None:
                    await self.backplane.drain(self.config.server.shutdown_grace)
                tg.cancel_scope.cancel()
        finally:
            for peer in list(self._peers):
                self._close(peer)
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
        host = self.config.server.host if host is None else host
        port = self.config.server.port if port is None else port
        self._listeners = _bind(host, port, reuse_port=reuse_port)
        self.addresses = [_address(sock) for sock in self._listeners]
        return self.addresses

    def shutdown(self) -> None:
        """Stop accepting, close every member with 1001, and return from :meth:`serve`."""
        if self._stop is not None:
            self._stop.set()

    def _close_listeners(self) -> None:
        for sock in self._listeners:
            if self._selector is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(sock)
            sock.close()
        self._listeners = []

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

    # -- the two tasks -------------------------------------------------------------------

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
            if type(target) is _Listener:
                self._accept(target.sock)
                continue
            try:
                if mask & _READ:
                    self._readable(target)
                if mask & _WRITE and target.writing:
                    self._send(target)
            except Exception:  # a bug must cost one connection, never the server
                self._failed(target)
        self._flush()

    async def _tick(self) -> None:
        """The timer task: keepalive pings, dead peers, handshake and close timeouts.

        The core decides (``Connection.tick``); this loop calls it when a connection's
        deadline has passed, and closes sockets the core is done with.
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
                            conn.tick(now)
                            if conn.state is State.CLOSED:
                                self._end(peer)
                            else:
                                self._follow(peer)
                        except Exception:  # a bug must cost one connection, never the server
                            self._failed(peer)
                elif peer.deadline <= now:
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

    # -- reading -------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(ACCEPT_BURST):
            try:
                sock, addr = listener.accept()
            except BlockingIOError:
                self._fed()  # nobody is waiting any more
                return
            except OSError as exc:
                if exc.errno in _NO_FD_ERRNOS:
                    self._starved(exc)
                    return
                # The client went away before we took it (ECONNABORTED, EPROTO), or a
                # firewall said no (EPERM): that client's problem, not the server's.
                log.debug("accept failed: %s; skipped", exc, extra={"event": "accept.failed"})
                continue
            client = str(addr[0]) if isinstance(addr, tuple) else ""
            try:
                self._adopt(sock, client)
            except OSError as exc:  # the socket died between accept() and now
                log.debug("accepted connection lost at once: %s", exc, extra={"event": "accept.lost", "client": client})
                sock.close()

    def _adopt(self, sock: socket.socket, client: str) -> None:
        """Make an accepted socket a peer: non-blocking, watched by the selector."""
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = Peer(sock, Connection(self.hub, client=client, routes=self.routes))
        peer.conn.outbox.peer = peer
        if self.ssl_context is not None:
            peer.tls_in, peer.tls_out = ssl.MemoryBIO(), ssl.MemoryBIO()
            peer.tls = self.ssl_context.wrap_bio(peer.tls_in, peer.tls_out, server_side=True)
        self._watch(peer)
        self._peers.add(peer)

    def _starved(self, exc: OSError) -> None:
        """No descriptor for a new connection: pause accepting until some free up."""
        if self._starved_since is None:
            self._starved_since = self.hub.clock.monotonic()
            self._deferred = 0
            log.warning(
                "accept: out of file descriptors (%s, %d connections open); deferring new connections until some close",
                exc.strerror or exc,
                len(self._peers),
                extra={"event": "accept.starved"},
            )
        self._deferred += 1
        self._pause_accepting()

    def _fed(self) -> None:
        """Every waiting connection was accepted: a descriptor shortage is over."""
        since = self._starved_since
        if since is not None:
            self._starved_since = None
            log.info(
                "accepting again after %.1f s without descriptors; %d accepts deferred",
                self.hub.clock.monotonic() - since,
                self._deferred,
                extra={"event": "accept.resumed"},
            )

    def _pause_accepting(self) -> None:
        assert self._selector is not None
        for sock in self._listeners:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
        self._accept_paused_until = self.hub.clock.monotonic() + ACCEPT_RETRY

    def _resume_accepting(self) -> None:
        self._accept_paused_until = 0.0
        if self._selector is not None:
            for sock in self._listeners:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.register(sock, _READ, _Listener(sock))

    def _readable(self, peer: Peer) -> None:
        conn = peer.conn
        try:
            data = peer.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = None
        if peer.phase is not Phase.OPEN:
            # Draining or lingering: the core is done; only notice the client's EOF.
            if not data:
                self._close(peer)
            return
        if data is None:  # reset: _end tells the core the connection is lost
            self._end(peer)
            return
        if peer.tls is not None and data:
            plain = self._decrypt(peer, data)
            if plain is None:
                self._end(peer)
                return
            if peer.tls_out is not None and peer.tls_out.pending:
                self._send(peer)  # handshake records, session tickets
            if not plain:
                return
            data = plain
        conn.receive_data(data)
        if not data or conn.state is State.CLOSED:
            self._end(peer)
        elif not conn.reading:
            self._follow(peer)

    def _decrypt(self, peer: Peer, data: bytes) -> bytes | None:
        """TLS: the plaintext in ``data`` (``b""`` if none yet); None when the session ended.

        The handshake happens inside the first reads (OpenSSL runs it implicitly); the
        records it produces are sent by the caller. A client's close_notify counts
        as its end of the stream.
        """
        tls, incoming = peer.tls, peer.tls_in
        assert tls is not None and incoming is not None
        incoming.write(data)
        chunks: list[bytes] = []
        while True:
            try:
                chunk = tls.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                chunk = b""
            except ssl.SSLError as exc:
                peer.conn.problem = f"TLS: {exc.reason or exc}"
                return None  # the caller ends the connection
            if not chunk:  # the client ended the TLS session
                if chunks:
                    peer.conn.receive_data(b"".join(chunks))
                peer.conn.receive_data(b"")
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def _failed(self, peer: Peer) -> None:
        """A bug while reading or ticking one connection: close it with 1011."""
        log.exception("connection from %s failed", peer.conn.client, extra=_fields(peer.conn, "connection.failed"))
        with contextlib.suppress(Exception):
            peer.conn.fail()
        try:
            self._end(peer)
        except Exception:
            self._broken(peer)

    def _broken(self, peer: Peer) -> None:
        """A bug while writing one connection: nothing more can go out; drop the socket."""
        log.exception(
            "connection from %s failed while writing", peer.conn.client, extra=_fields(peer.conn, "connection.failed")
        )
        peer.dead = True
        peer.cipher = b""
        with contextlib.suppress(Exception):
            peer.conn.outbox.consume(peer.conn.outbox.size)
        with contextlib.suppress(Exception):
            peer.conn.connection_lost()
        self._close(peer)

    # -- writing -------------------------------------------------------------------------

    def _flush(self) -> None:
        """Write every outbox the core filled, directly while the kernel takes the bytes."""
        hub, send = self.hub, self._send
        while hub.ready:
            for outbox in hub.take_ready():
                peer: Peer | None = outbox.peer
                if peer is not None and not peer.writing and not peer.dead:
                    try:
                        send(peer)
                    except Exception:  # a bug must cost one connection, never the server
                        self._broken(peer)

    def _send(self, peer: Peer) -> None:
        if peer.tls is not None:
            self._send_tls(peer)
            return
        outbox = peer.conn.outbox
        try:
            sent = peer.sock.send(outbox.view())
        except BlockingIOError:
            sent = 0
        except OSError:
            self._lost(peer)
            return
        if sent == outbox.size:
            outbox.consume(sent)  # the common case: the kernel took everything
            if peer.writing or peer.phase is not Phase.OPEN:
                self._drained(peer)
            if not peer.reading:
                self._follow(peer)
            return
        outbox.consume(sent)
        self._blocked(peer)
        if not peer.reading:
            self._follow(peer)

    def _send_tls(self, peer: Peer) -> None:
        """Encrypt the outbox one batch at a time, and write while the kernel takes it."""
        tls, outgoing, outbox = peer.tls, peer.tls_out, peer.conn.outbox
        assert tls is not None and outgoing is not None
        while True:
            if not peer.cipher:
                if outbox.size:
                    data = outbox.view()
                    try:
                        tls.write(data)
                    except ssl.SSLWantReadError:
                        pass  # the handshake is not done; the bytes wait in the outbox
                    except ssl.SSLError:
                        self._lost(peer)
                        return
                    else:
                        outbox.consume(len(data))
                peer.cipher = outgoing.read()
                if not peer.cipher:
                    break
            try:
                sent = peer.sock.send(peer.cipher)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._lost(peer)
                return
            peer.cipher = peer.cipher[sent:]
            if peer.cipher:
                self._blocked(peer)
                return
            if not outbox.size:
                break
        if peer.writing or peer.phase is not Phase.OPEN:
            self._drained(peer)
        if not peer.reading:
            self._follow(peer)

    def _blocked(self, peer: Peer) -> None:
        """The kernel did not take everything: watch for writability until it drains."""
        if not peer.writing:
            peer.writing = True
            self._watch(peer)

    def _drained(self, peer: Peer) -> None:
        """The outbox is empty: stop watching writability; finish a draining socket."""
        if peer.writing:
            peer.writing = False
            self._watch(peer)
        if peer.phase is Phase.DRAINING:
            self._finish(peer)

    def _follow(self, peer: Peer) -> None:
        """Read from the socket exactly while the core takes input (``Connection.reading``).

        Once a held-back outbox is written out, ``resume`` lets the core go on (the next
        pipelined request); what that writes is flushed by the caller's flush loop.
        """
        if peer.dead:
            return  # closed: the selector no longer has it
        if peer.phase is not Phase.OPEN:
            reading = True  # draining or lingering: only the client's EOF is awaited
        else:
            conn = peer.conn
            if not conn.outbox and not peer.cipher:
                conn.resume()
                if conn.state is State.CLOSED:
                    self._end(peer)
                    return
            reading = conn.reading
        if reading != peer.reading:
            peer.reading = reading
            self._watch(peer)

    def _watch(self, peer: Peer) -> None:
        """Give the selector the events this socket waits for: input, writability, both or none."""
        events = (_READ if peer.reading else 0) | (_WRITE if peer.writing else 0)
        if events == peer.events:
            return
        selector = self._selector
        assert selector is not None
        if not peer.events:
            selector.register(peer.sock, events, peer)
        elif not events:
            selector.unregister(peer.sock)
        else:
            selector.modify(peer.sock, events, peer)
        peer.events = events

    def _lost(self, peer: Peer) -> None:
        """A write failed: the socket is gone."""
        peer.dead = True
        peer.cipher = b""
        peer.conn.outbox.consume(peer.conn.outbox.size)
        self._close(peer)  # tells the core, if it still had the connection open

    # -- ending --------------------------------------------------------------------------

    def _end(self, peer: Peer) -> None:
        """The core is done with this connection: write what is left, then close."""
        if peer.phase is not Phase.OPEN:
            return
        conn = peer.conn
        if conn.state is not State.CLOSED:
            conn.connection_lost()
        session = conn.session
        if session.refused is not None:
            fields = _fields(conn, "upgrade.refused")
            fields["status"] = session.refused
            log.info("upgrade from %s refused: %d %s", conn.client, session.refused, session.problem, extra=fields)
        elif conn.problem:
            log.info("connection from %s ended: %s", conn.client, conn.problem, extra=_fields(conn, "connection.ended"))
        peer.phase = Phase.DRAINING
        peer.deadline = self.hub.clock.monotonic() + self.config.limits.close_timeout
        if not conn.outbox and not peer.writing:
            self._finish(peer)
        # Otherwise the flush (or writability) sends the rest and calls _finish.

    def _finish(self, peer: Peer) -> None:
        if peer.tls is not None and not peer.dead:
            # Say goodbye at the TLS level too (close_notify), as far as the kernel takes it.
            with contextlib.suppress(ssl.SSLError):
                peer.tls.unwrap()
            assert peer.tls_out is not None
            with contextlib.suppress(OSError):
                peer.sock.send(peer.tls_out.read())
        linger = peer.conn.linger
        if not linger or peer.dead:
            self._close(peer)
            return
        # A refused HTTP request may have unread input (a body we did not want); closing
        # now could reset the connection before the client read our answer. Half-close
        # and give the client a moment to finish.
        try:
            peer.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(peer)
            return
        peer.phase = Phase.LINGER
        peer.deadline = self.hub.clock.monotonic() + linger

    def _close(self, peer: Peer) -> None:
        """Forget the socket and close it (idempotent)."""
        if peer not in self._peers:
            return
        self._peers.discard(peer)
        if peer.phase is Phase.OPEN and peer.conn.state is not State.CLOSED:
            peer.conn.connection_lost()
        peer.phase = Phase.LINGER
        peer.dead = True
        if self._selector is not None and peer.events:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(peer.sock)
        peer.events = 0
        peer.sock.close()
        if self._accept_paused_until and self._starved_since is not None:
            self._resume_accepting()  # a descriptor just came free


def _fields(conn: Connection, event: str) -> dict[str, Any]:
    """The structured fields of a log line about ``conn`` (see transports.logs): never a
    key, a channel name or message content."""
    session = conn.session
    fields: dict[str, Any] = {"event": event, "client": conn.client}
    if session.namespace is not None:
        fields["namespace"] = session.namespace
    if conn.close_code is not None:
        fields["code"] = conn.close_code
    reason = conn.problem or session.problem
    if reason:
        fields["reason"] = reason
    return fields


def _bind(host: str | Sequence[str], port: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """Listening sockets for every address of ``host`` (IPv4 and IPv6), non-blocking.

    ``reuse_port``: set ``SO_REUSEPORT``, to share the port with other processes that do.
    """
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
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
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
