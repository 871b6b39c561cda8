"""The relay on Python's ``selectors`` module alone: no asyncio, trio or anyio.

Every decision is the core's (``relaycore.Connection`` over its ``ClientSession``); this
loop only moves bytes, following the transport contract of docs/embedding.md:

1. read from a socket only while ``conn.reading``; feed what it gives to ``receive_data``
   (``b""`` at end of file);
2. after every call into the core, flush: write every outbox on ``hub.take_ready()`` with
   ``data_to_send()`` / ``sent(n)``, and watch for writability while ``conn.writing``;
3. call ``conn.tick(now)`` once ``now >= conn.deadline``, and ``hub.tick(now)`` now and then;
4. once ``conn.finished``, half-close and wait ``conn.linger`` seconds for the peer's end
   of file (0 for a WebSocket), then close; a connection ``CLOSED`` with bytes its peer
   will not take is closed anyway after ``close_timeout``.

Run it and point any itty-sockets client at ``ws://127.0.0.1:8787/c/<channel>``::

    python examples/selectors_loop.py --port 8787
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import socket
import sys
import time

from relaycore import Config, Connection, Hub, State

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


class Clock:
    """The core takes its time from outside: wall time for dates, monotonic for deadlines."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


def uids() -> str:
    """Unguessable uids (direct messages are addressed by them)."""
    return "".join(ALPHABET[byte % 62] for byte in os.urandom(6))


class Peer:
    """One socket and its connection, as the loop sees them."""

    def __init__(self, sock: socket.socket, conn: Connection) -> None:
        self.sock = sock
        self.conn = conn
        self.events = 0  # what the selector watches now
        self.close_at: float | None = None  # set once half-closed and lingering
        self.give_up_at: float | None = None  # set once CLOSED with bytes still to write


class Loop:
    def __init__(self, hub: Hub, listener: socket.socket) -> None:
        self.hub = hub
        self.listener = listener
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, READ, None)
        self.peers: set[Peer] = set()

    def run(self) -> None:
        next_housekeeping = 0.0
        while True:
            for key, mask in self.selector.select(timeout=0.25):
                if key.data is None:
                    self.accept()
                    continue
                peer: Peer = key.data
                if mask & READ:
                    self.read(peer)
                if mask & WRITE and peer in self.peers:
                    self.write(peer)
            now = time.monotonic()
            for peer in list(self.peers):
                deadline = peer.close_at or peer.give_up_at
                if deadline is not None:
                    if now >= deadline:
                        self.drop(peer)
                elif now >= peer.conn.deadline:
                    peer.conn.tick(now)
            if now >= next_housekeeping:
                self.hub.tick(now)
                next_housekeeping = now + 1.0
            self.flush()

    def accept(self) -> None:
        try:
            sock, address = self.listener.accept()
        except OSError:  # a client gone before we took it, or no descriptor left: next time
            return
        sock.setblocking(False)
        peer = Peer(sock, Connection(self.hub, client=address[0]))
        peer.conn.outbox.peer = peer
        self.peers.add(peer)
        self.follow(peer)

    def read(self, peer: Peer) -> None:
        try:
            data = peer.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            peer.conn.connection_lost()
            self.drop(peer)
            return
        if peer.close_at is not None:  # lingering: only the end of file matters
            if not data:
                self.drop(peer)
            return
        peer.conn.receive_data(data)
        self.flush()

    def write(self, peer: Peer) -> None:
        conn = peer.conn
        try:
            sent = peer.sock.send(conn.data_to_send())
        except BlockingIOError:
            sent = 0
        except OSError:
            conn.connection_lost()
            self.drop(peer)
            return
        conn.sent(sent)

    def flush(self) -> None:
        """Write everything the core queued, for every connection it touched."""
        while self.hub.ready:
            for outbox in self.hub.take_ready():
                peer = outbox.peer
                if peer in self.peers and not peer.events & WRITE:
                    self.write(peer)
        for peer in list(self.peers):
            self.follow(peer)

    def follow(self, peer: Peer) -> None:
        """Watch what the connection needs; end it once it is finished."""
        conn = peer.conn
        if peer.give_up_at is None and conn.state is State.CLOSED:
            peer.give_up_at = time.monotonic() + self.hub.config.limits.close_timeout
        if peer.close_at is None and conn.finished:
            if not conn.linger:
                self.drop(peer)
                return
            try:
                peer.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self.drop(peer)
                return
            peer.close_at = time.monotonic() + conn.linger
        reading = peer.close_at is not None or conn.reading
        events = (READ if reading else 0) | (WRITE if conn.writing and peer.close_at is None else 0)
        if events != peer.events:
            if not peer.events:
                self.selector.register(peer.sock, events, peer)
            elif not events:
                self.selector.unregister(peer.sock)
            else:
                self.selector.modify(peer.sock, events, peer)
            peer.events = events

    def drop(self, peer: Peer) -> None:
        if peer not in self.peers:
            return
        self.peers.discard(peer)
        if peer.events:
            self.selector.unregister(peer.sock)
        peer.sock.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="relaycore on the selectors module alone")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    args = parser.parse_args(argv)
    listener = socket.create_server((args.host, args.port), backlog=1024)
    listener.setblocking(False)
    print(f"listening on ws://{args.host}:{listener.getsockname()[1]}", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        Loop(Hub(Config(), Clock(), uids), listener).run()


if __name__ == "__main__":
    main()
