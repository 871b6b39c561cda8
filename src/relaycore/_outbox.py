"""Outbound buffers: bytes waiting for a connection's socket, with bounded accounting.

Theory of operation. The hub never writes to a socket; it *puts* frames into the
outboxes of the recipients. The first put into an empty outbox registers the outbox on
the hub's ready list. After each call into the core, the transport takes the ready list
and flushes every outbox on it, so all the frames due to one member from one burst of
input reach the kernel in one ``send()``. A transport that cannot write everything keeps
the rest in the outbox (``consume`` what the kernel took) and waits for writability.

The size is bounded: a put that takes the queued bytes over ``limit`` marks the outbox
``overflowed`` and is refused; the hub then closes that member as a slow consumer.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MessageOutbox", "Outbox"]


class Outbox:
    """Queued outbound bytes of one connection (WebSocket frames, HTTP responses)."""

    __slots__ = ("_chunks", "_ready", "limit", "overflowed", "peer", "queued", "size")

    def __init__(self, limit: int, ready: list[Outbox]) -> None:
        self._chunks: list[bytes] = []
        self._ready = ready
        #: Most bytes that may be queued before the consumer counts as slow.
        self.limit = limit
        #: Bytes queued and not yet taken by the transport.
        self.size = 0
        #: True while this outbox sits on the ready list.
        self.queued = False
        #: Set once a put was refused for going over ``limit``.
        self.overflowed = False
        #: A slot the transport may use for its own connection object.
        self.peer: Any = None

    def __bool__(self) -> bool:
        return self.size > 0

    def put(self, payload: bytes, frame: bytes) -> bool:
        """Queue a relayed message (its payload, and the same payload framed once).

        Returns False, and queues nothing, when the outbox is over its limit.
        """
        if self.overflowed:
            return False
        if self.size + len(frame) > self.limit:
            self.overflowed = True
            return False
        self.write(frame)
        return True

    def write(self, data: bytes) -> None:
        """Queue bytes unconditionally (handshake responses, control frames)."""
        if not data:
            return
        self._chunks.append(data)
        self.size += len(data)
        if not self.queued:
            self.queued = True
            self._ready.append(self)

    def view(self) -> bytes:
        """Everything queued, as one bytes object (joined once, then cached)."""
        chunks = self._chunks
        if len(chunks) != 1:
            if not chunks:
                return b""
            joined = b"".join(chunks)
            chunks[:] = (joined,)
            return joined
        return chunks[0]

    def consume(self, n: int) -> None:
        """Drop the first ``n`` bytes (what the kernel accepted)."""
        if n >= self.size:
            self._chunks.clear()
            self.size = 0
            return
        rest = self.view()[n:]
        self._chunks[:] = (rest,)
        self.size = len(rest)

    def take(self) -> list[bytes]:
        """Remove and return every queued chunk, in order (message-based transports)."""
        chunks, self._chunks = self._chunks, []
        self.size = 0
        return chunks


class MessageOutbox(Outbox):
    """An outbox of whole text messages, for transports whose server frames for us (ASGI).

    It queues the unframed JSON payloads; ``take()`` returns one per message.
    """

    __slots__ = ()

    def put(self, payload: bytes, frame: bytes) -> bool:
        if self.overflowed:
            return False
        if self.size + len(payload) > self.limit:
            self.overflowed = True
            return False
        self.write(payload)
        return True
