"""A peer: the transport side of one connection (its socket, where it stands, its write state)."""

from __future__ import annotations

import selectors
import socket
import ssl
from enum import Enum

from relaycore import Connection

__all__ = ["READ", "READ_SIZE", "WRITE", "Peer", "Phase"]

# One recv() at most. Larger reads allocate a buffer that glibc takes from mmap() on every
# call (~14 us, against ~2 us for a 64 KiB read of a small message).
READ_SIZE = 64 * 1024
READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE


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
