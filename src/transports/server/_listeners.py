"""Listening sockets: every address of a host bound on one port, accepting, and what
happens when file descriptors run out.

Theory of operation. :func:`bind` opens a non-blocking listening socket for each address of
the host (IPv4 and IPv6, :func:`listen_addresses`), on ONE port even for port 0. The
listeners sit in the server's selector beside the connections; on readiness the server
accepts up to :data:`ACCEPT_BURST` connections and makes each a :class:`Peer` watched by
the selector. Transient ``accept()`` errors (a client that went away first, a firewall)
are skipped. Running out of descriptors pauses accepting (the listeners leave the
selector), is logged once per episode, and accepting resumes as connections close, or
after :data:`ACCEPT_RETRY`; the episode ends, with a line saying so, once a listener's
backlog is empty.

:func:`reserve_port` is the same rule for the supervisor of ``--workers N``: the port its
workers listen on, held for its whole life.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import ssl
import stat
from collections.abc import Sequence
from typing import Any

from relaycore import UNIX_PEER, Connection

from .._door import DoorRoutes
from . import _tls
from ._io import PeerIO
from ._peers import READ, Peer

__all__ = ["ACCEPT_BURST", "ACCEPT_RETRY", "Accepting", "Listener", "address", "bind", "bind_unix", "reserve_port"]

log = logging.getLogger("relaycore.server")

ACCEPT_BURST = 64
#: How long accepting pauses when descriptors run out, unless a connection closes first.
ACCEPT_RETRY = 0.1
_NO_FD_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def listen_addresses(host: str, port: int) -> list[tuple[int, int, int, Any]]:
    """(family, type, protocol, sockaddr) for every address of ``host``, once each."""
    found: dict[tuple[int, Any], tuple[int, int, int, Any]] = {}
    for family, kind, proto, _, sockaddr in socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    ):
        found.setdefault((family, sockaddr[0]), (family, kind, proto, sockaddr))
    return list(found.values())


def bind(host: str | Sequence[str], port: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """Listening sockets for every address of ``host`` (IPv4 and IPv6), non-blocking.

    ``reuse_port``: set ``SO_REUSEPORT``, to share the port with other processes that do.
    """
    hosts = [host] if isinstance(host, str) else list(host)
    sockets: list[socket.socket] = []
    try:
        for name in hosts:
            for family, kind, proto, sockaddr in listen_addresses(name, port):
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


def address(sock: socket.socket) -> tuple[str, int]:
    """A bound socket's (host, port); a Unix socket's is (its path, 0)."""
    name: Any = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return str(name), 0
    return str(name[0]), int(name[1])


def bind_unix(path: str) -> socket.socket:
    """A listening Unix socket at ``path``, non-blocking.

    A socket file left there by a relay that did not stop cleanly is replaced; any other
    file is not (OSError). The socket is open to every local user, as a loopback port is:
    restrict who reaches it with the permissions of its directory.
    """
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o666)
        sock.listen(4096)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def reserve_port(host: str, port: int) -> list[socket.socket]:
    """Bind (never listen) every address of ``host`` on ``port`` with ``SO_REUSEPORT``.

    The addresses are those the workers' listeners bind (:func:`bind`), on ONE port
    even when ``port`` is 0. Raises OSError when the port is taken, as a single relay
    process would: first every address is bound the way it binds (``SO_REUSEADDR`` and
    no ``SO_REUSEPORT``), which also picks the port for port 0 and refuses a port that
    other ``SO_REUSEPORT`` sockets hold, instead of sharing it with them. Then the
    reservation, without ``SO_REUSEADDR`` so that nobody else can bind the port; only
    when that fails, as it does while connections a plain relay closed on this port are
    in TIME_WAIT, does it fall back to ``SO_REUSEADDR`` (a program that sets it could
    then take the port while no worker listens).
    """
    addresses = [(family, sockaddr) for family, _, _, sockaddr in listen_addresses(host, port)]
    with contextlib.ExitStack() as probes:
        for family, sockaddr in addresses:
            probe = probes.enter_context(socket.socket(family, socket.SOCK_STREAM))
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind((sockaddr[0], port, *sockaddr[2:]))
            port = probe.getsockname()[1]  # port 0: the first address picks it for all
    sockets: list[socket.socket] = []
    try:
        for family, sockaddr in addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((sockaddr[0], port, *sockaddr[2:]))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((sockaddr[0], port, *sockaddr[2:]))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Listener:
    """Selector data for a listening socket."""

    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock


class Accepting(PeerIO):
    """Accepting connections, and pausing while descriptors run out (a part of
    :class:`transports.server.RelayServer`)."""

    # Set by RelayServer (see _server.py).
    routes: DoorRoutes | None
    ssl_context: ssl.SSLContext | None
    _listeners: list[socket.socket]
    _deferred: int

    def _close_listeners(self) -> None:
        for sock in self._listeners:
            if self._selector is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(sock)
            if sock.family == socket.AF_UNIX:
                with contextlib.suppress(OSError):
                    os.unlink(sock.getsockname())
            sock.close()
        self._listeners = []

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
            client = str(addr[0]) if isinstance(addr, tuple) else UNIX_PEER
            try:
                self._adopt(sock, client)
            except OSError as exc:  # the socket died between accept() and now
                log.debug("accepted connection lost at once: %s", exc, extra={"event": "accept.lost", "client": client})
                sock.close()

    def _adopt(self, sock: socket.socket, client: str) -> None:
        """Make an accepted socket a peer: non-blocking, watched by the selector."""
        sock.setblocking(False)
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            send_buffer = self.config.limits.socket_send_buffer_bytes
            if send_buffer:
                # Fixed, not grown by the kernel's autotuning (megabytes for a reader that
                # stopped): what a slow reader may be owed is this plus its outbox.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        peer = Peer(sock, Connection(self.hub, client=client, routes=self.routes))
        peer.conn.outbox.peer = peer
        peer.conn.outbox.door = self
        if self.ssl_context is not None:
            _tls.start(peer, self.ssl_context)
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
                    self._selector.register(sock, READ, Listener(sock))
