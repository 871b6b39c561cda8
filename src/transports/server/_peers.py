"""A peer: the transport side of one connection (its socket, where it stands, its write state)."""

from __future__ import annotations

import fcntl
import selectors
import socket
import ssl
import struct
import sys
from enum import Enum

from relaycore import Connection

__all__ = ["ABORT", "READ", "READ_SIZE", "WRITE", "Peer", "Phase", "unsent"]

# One recv() at most. Larger reads allocate a buffer that glibc takes from mmap() on every
# call (~14 us, against ~2 us for a 64 KiB read of a small message).
READ_SIZE = 64 * 1024
READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE
#: ``SO_LINGER`` on, 0 seconds: ``close()`` resets the connection and frees what the kernel
#: held for it at once, instead of leaving the kernel to send it to a peer that does not read.
ABORT = struct.pack("ii", 1, 0)
# Linux's SIOCOUTQNSD: the bytes of a TCP socket's send queue not sent yet (the peer's
# window is closed); elsewhere unknown, taken as none.
_NOT_SENT = 0x894B if sys.platform.startswith("linux") else None


class Phase(Enum):
    """Where a socket stands, seen from the transport."""

    OPEN = "open"  # the core is talking over it
    DRAINING = "draining"  # the core is done; write what is left, then close
    SENDING = "sending"  # all written; the kernel has not sent all of it yet: close once it has
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
        #: When a DRAINING, SENDING or LINGER socket is closed regardless (monotonic seconds).
        self.deadline = 0.0
        #: TLS only: the session, its two memory buffers, and encrypted bytes the kernel
        #: has not taken yet (at most one encrypted batch: the rest waits, in plaintext, in
        #: the bounded outbox).
        self.tls: ssl.SSLObject | None = None
        self.tls_in: ssl.MemoryBIO | None = None
        self.tls_out: ssl.MemoryBIO | None = None
        self.cipher = b""


def unsent(sock: socket.socket) -> int:
    """Bytes written to ``sock`` that the kernel has not sent yet (0 where it cannot say)."""
    if _NOT_SENT is None or sock.family == socket.AF_UNIX:
        return 0
    try:
        answer = fcntl.ioctl(sock.fileno(), _NOT_SENT, b"\0\0\0\0")
    except OSError:
        return 0
    count: int = struct.unpack("i", answer)[0]
    return count
