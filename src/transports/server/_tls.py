"""TLS on the native server: the context from the configuration, and each peer's session.

Theory of operation. A TLS connection is an :class:`ssl.SSLObject` between two memory
buffers rather than a wrapped socket, so that the server keeps its one non-blocking socket
per peer and its one selector. What the socket gives goes into the session's incoming
buffer and comes out as plaintext for the core (:func:`decrypt`); the handshake happens
inside those first reads (OpenSSL runs it implicitly). The outbox is encrypted one batch at
a time (:func:`send`): at most one encrypted batch waits for the kernel, in
``Peer.cipher``; the rest waits, in plaintext, in the bounded outbox. At the end the server
says goodbye at the TLS level too (:func:`goodbye`, a close_notify).
"""

from __future__ import annotations

import contextlib
import ssl
from enum import Enum

from relaycore import ConfigError, ServerConfig

from ._peers import READ_SIZE, Peer

__all__ = ["Sent", "decrypt", "goodbye", "send", "server_context", "start"]


def server_context(server: ServerConfig, given: ssl.SSLContext | None) -> ssl.SSLContext | None:
    """The context every accepted connection is wrapped in: ``given``, or one made from
    ``tls_certfile`` and ``tls_keyfile`` (None: plain TCP)."""
    if server.tls_keyfile and not server.tls_certfile:
        raise ConfigError("`server.tls_keyfile` needs a certificate: set `server.tls_certfile` too")
    if given is None and server.tls_certfile:
        given = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        given.load_cert_chain(server.tls_certfile, server.tls_keyfile or None)
    return given


def start(peer: Peer, context: ssl.SSLContext) -> None:
    """Give an accepted peer its server-side session."""
    peer.tls_in, peer.tls_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    peer.tls = context.wrap_bio(peer.tls_in, peer.tls_out, server_side=True)


def decrypt(peer: Peer, data: bytes) -> bytes | None:
    """The plaintext in ``data`` (``b""`` if none yet); None when the session ended.

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


class Sent(Enum):
    """How far :func:`send` got."""

    DONE = "done"  # the outbox is written out
    BLOCKED = "blocked"  # the kernel did not take everything
    LOST = "lost"  # the session or the socket failed


def send(peer: Peer) -> Sent:
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
                    return Sent.LOST
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
            return Sent.LOST
        peer.cipher = peer.cipher[sent:]
        if peer.cipher:
            return Sent.BLOCKED
        if not outbox.size:
            break
    return Sent.DONE


def goodbye(peer: Peer) -> None:
    """Say goodbye at the TLS level too (close_notify), as far as the kernel takes it."""
    assert peer.tls is not None
    with contextlib.suppress(ssl.SSLError):
        peer.tls.unwrap()
    assert peer.tls_out is not None
    with contextlib.suppress(OSError):
        peer.sock.send(peer.tls_out.read())
