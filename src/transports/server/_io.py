"""Reading, writing and ending peers: the part of the native server every socket goes through.

Theory of operation. On readiness the server reads what the kernel has and feeds it to the
core's :class:`relaycore.Connection`. Then it *flushes* (:meth:`PeerIO._flush`): every
outbox the core filled is written straight to its socket with a non-blocking ``send()``, so
a broadcast costs no task switch per recipient, and all frames due to one member from one
pass go out in one ``send()``. A socket that does not take everything keeps the rest in its
(bounded) outbox and is watched for writability until it drains. While the core says a
connection is owed too much (``Connection.reading`` is False: over the bound, or a
pipelined HTTP answer unwritten), its socket is not read at all; once the outbox drains,
``Connection.resume`` lets the core go on (:meth:`PeerIO._follow`).

Ending: once the core is done, what is left is written, then the socket closes
(``DRAINING``); after a refused plain HTTP request it is half-closed first, so that the
client reads the answer (``LINGER``). A socket is closed once the kernel has *sent*
everything, not merely taken it (``SENDING``, on Linux): a socket closed with bytes that
the peer's closed window holds back would stay in the kernel, with its buffer, for as long
as the kernel keeps trying. Every ending has a deadline, ``close_timeout`` after it began;
a close frame of ours left unanswered for ``close_timeout`` is one too. A socket still
owed bytes at its deadline is aborted (a reset), which frees at once what the kernel held
for it. An exception while reading or writing one socket closes that socket and is
logged: it never reaches the server's loop.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
from typing import TYPE_CHECKING, Any

from relaycore import Config, Connection, Hub, Outbox, State

from .._door import connection_fields, log_ended, log_refused
from . import _tls
from ._peers import ABORT, READ, READ_SIZE, WRITE, Peer, Phase, unsent

__all__ = ["PeerIO"]

log = logging.getLogger("relaycore.server")


class PeerIO:
    """Reading, writing and ending peers (a part of :class:`transports.server.RelayServer`)."""

    # Set by RelayServer (see _server.py).
    config: Config
    hub: Hub
    _peers: set[Peer]
    _selector: selectors.BaseSelector | None
    _accept_paused_until: float
    _starved_since: float | None

    if TYPE_CHECKING:

        def _resume_accepting(self) -> None: ...  # the listeners' part: a descriptor came free

    # -- reading -------------------------------------------------------------------------

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
            plain = _tls.decrypt(peer, data)
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
        hub = self.hub
        while hub.ready:
            self.wake(hub.wake(self))

    def wake(self, outboxes: list[Outbox]) -> None:
        """Write these outboxes of ours (the :class:`relaycore.Door` side: another door's
        flush hands them over)."""
        send, closed = self._send, State.CLOSED
        for outbox in outboxes:
            peer: Peer | None = outbox.peer
            if peer is not None and not peer.writing and not peer.dead:
                try:
                    send(peer)
                    if peer.conn.state is closed and peer.phase is Phase.OPEN:
                        self._end(peer)  # ended from outside: an HTTP door stream the relay closed
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
        """Encrypt and write what the kernel takes (see _tls.send)."""
        sent = _tls.send(peer)
        if sent is _tls.Sent.LOST:
            self._lost(peer)
            return
        if sent is _tls.Sent.BLOCKED:
            self._blocked(peer)
            return
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
        events = (READ if peer.reading else 0) | (WRITE if peer.writing else 0)
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

    def _end(self, peer: Peer, *, unanswered: bool = False) -> None:
        """The core is done with this connection: write what is left, then close.

        ``unanswered``: the core gave up waiting for the answer to its close frame
        (``close_timeout``). A peer that has not even been sent everything up to that
        frame will not answer: its socket is aborted.
        """
        if peer.phase is not Phase.OPEN:
            return
        conn = peer.conn
        if conn.state is not State.CLOSED:
            conn.connection_lost()
        if conn.session.refused is not None:
            log_refused(log, conn.session, code=conn.close_code, reason=conn.problem)
        elif conn.problem:
            log_ended(log, conn.session, conn.problem, code=conn.close_code)
        peer.phase = Phase.DRAINING
        peer.deadline = self.hub.clock.monotonic() + self.config.limits.close_timeout
        if unanswered and self._owed(peer):
            self._close(peer, abort=True)
        elif not conn.outbox and not peer.writing:
            self._finish(peer)
        # Otherwise the flush (or writability) sends the rest and calls _finish.

    def _finish(self, peer: Peer) -> None:
        if peer.tls is not None and not peer.dead:
            _tls.goodbye(peer)
        linger = peer.conn.linger
        if peer.dead:
            self._close(peer)
            return
        if not linger:
            if unsent(peer.sock):
                peer.phase = Phase.SENDING  # the timer task closes it once sent (or aborts it)
            else:
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

    def _owed(self, peer: Peer) -> bool:
        """Whether the peer has not been sent everything written for it, by us or the kernel."""
        return bool(peer.conn.outbox or peer.cipher) or unsent(peer.sock) > 0

    def _expire(self, peer: Peer) -> None:
        """An ending's deadline passed: close, aborting a socket still owed bytes."""
        self._close(peer, abort=not peer.dead and self._owed(peer))

    def _close(self, peer: Peer, *, abort: bool = False) -> None:
        """Forget the socket and close it (idempotent); ``abort``: with a reset, dropping
        whatever the kernel still held for the peer."""
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
        if abort:
            with contextlib.suppress(OSError):
                peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, ABORT)
        peer.sock.close()
        if self._accept_paused_until and self._starved_since is not None:
            self._resume_accepting()  # a descriptor just came free


def _fields(conn: Connection, event: str) -> dict[str, Any]:
    """The fields of a line about ``conn`` (its close code and its own problem first)."""
    return connection_fields(event, conn.session, code=conn.close_code, reason=conn.problem)
