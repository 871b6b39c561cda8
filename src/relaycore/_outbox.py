"""Outbound buffers: bytes waiting for a connection's socket, with bounded accounting.

Theory of operation. The hub never writes to a socket; it *puts* frames into the
outboxes of the recipients. The first put into an empty outbox registers the outbox on
the hub's ready list. After each call into the core, the transport takes the ready list
and flushes every outbox on it, so all the frames due to one member from one burst of
input reach the kernel in one ``send()``. A transport that cannot write everything keeps
the rest in the outbox (``consume`` what the kernel took) and waits for writability.

One bound covers every byte the connection is owed. A relayed message (:meth:`Outbox.put`)
that would take the queued bytes over ``limit`` is refused and marks the outbox
``overflowed``; the hub then closes that member as a slow consumer. Bytes the relay owes
the peer itself (:meth:`Outbox.write`: handshake and HTTP responses, pongs, close frames)
cannot be refused, but they count the same way: going over ``limit`` marks the outbox
``overflowed`` too, and the connection closes the peer as a slow consumer. Only the
self-join (:meth:`Outbox.put_always`) never marks it: a member is not cut off before it
knows its uid, though nothing more is queued for it until it drains.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any, Protocol

from ._forms import MESSAGES, WEBSOCKET, WireForm

__all__ = ["BATCH", "Door", "FormOutbox", "MessageOutbox", "Outbox"]


class Door(Protocol):
    """What the hub needs of a door beside the one that called it: a wake.

    A door (the native server, the ASGI app, a third-party transport) makes its members'
    outboxes with itself as their ``door``. Whichever door calls into the hub afterwards
    (one member's message reaches members behind every door) hands the outboxes that got
    bytes to their own door through :meth:`~relaycore.Hub.wake`.
    """

    def wake(self, outboxes: list[Outbox]) -> None:
        """``outboxes`` (this door's) have bytes to write: write them soon.

        Called synchronously from inside another door's flush: do not call into the hub's
        routing from here; set an event, or write without blocking."""


#: How many queued bytes :meth:`Outbox.view` joins for one ``send()``.
BATCH = 256 * 1024


class Outbox:
    """Queued outbound bytes of one connection (WebSocket frames, HTTP responses)."""

    __slots__ = (
        "_chunks",
        "_partial",
        "_pins",
        "_ready",
        "door",
        "form",
        "limit",
        "overflowed",
        "peer",
        "queued",
        "size",
    )

    def __init__(self, limit: int, ready: list[Outbox], *, door: Door | None = None) -> None:
        #: How the queued bytes carry each payload: WebSocket frames here (see :mod:`relaycore._forms`).
        self.form: WireForm = WEBSOCKET
        #: The door whose ``wake`` writes this outbox (None: whichever door flushes the hub).
        self.door = door
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
        #: True when the first chunk is the rest of a partly sent chunk.
        self._partial = False
        #: Queued chunks that :meth:`drop_backlog` must keep (handshake responses, the
        #: self-join, control frames), in queue order. Relayed frames are never pinned.
        self._pins: list[bytes] = []

    def __bool__(self) -> bool:
        return self.size > 0

    def put(self, payload: bytes, frame: bytes) -> bool:
        """Queue a relayed message: its payload, and the same payload as a WebSocket frame
        (made once per delivery; an outbox of another form renders the payload itself).

        Returns False, and queues nothing, when the outbox is over its limit.
        """
        # The broadcast hot path: one call per recipient, so write() is inlined here.
        size = self.size + len(frame)
        if size > self.limit or self.overflowed:
            self.overflowed = True
            return False
        self._chunks.append(frame)
        self.size = size
        if not self.queued:
            self.queued = True
            self._ready.append(self)
        return True

    def put_batch(self, payloads: list[bytes], frames: bytes) -> bool:
        """Queue several relayed messages at once: ``frames`` is their WebSocket frames joined.

        All or nothing: returns False, and queues nothing, when they do not all fit.
        """
        return self.put(b"", frames)

    #: ``put_rendered(outbox, payload, data)``: queue a relayed message whose bytes in this
    #: outbox's wire form (``data``) were made already, as :meth:`put` does with a frame;
    #: a channel's broadcast uses it for the members of each form in turn
    #: (:meth:`~relaycore._fanout.Fanout.broadcast`). Every subclass gets its own copy.
    put_rendered: Callable[[Outbox, bytes, bytes], bool]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.put_rendered = _own_copy(Outbox.put)

    def put_always(self, payload: bytes, frame: bytes) -> None:
        """Queue a message that must arrive whatever the limit (the self-join)."""
        self._queue(frame, pin=True)

    def write(self, data: bytes, *, pin: bool = True) -> None:
        """Queue bytes the relay owes the peer itself (responses, control frames).

        Never refused, but counted: going over ``limit`` marks the outbox ``overflowed``,
        and the owner then closes the peer as a slow consumer. ``pin`` keeps the bytes
        through :meth:`drop_backlog` (the handshake response, a close frame); a pong need
        not survive a slow consumer's close.
        """
        if data:
            self._queue(data, pin=pin)
            if self.size > self.limit:
                self.overflowed = True

    def touch(self) -> None:
        """Put the outbox on the ready list even without bytes: its transport has something
        to notice (the end of a stream decided from outside its connection)."""
        if not self.queued:
            self.queued = True
            self._ready.append(self)

    def room(self) -> int:
        """How many more bytes fit under ``limit``; -1 once a put was refused."""
        return -1 if self.overflowed else self.limit - self.size

    def _queue(self, data: bytes, *, pin: bool) -> None:
        if pin:
            self._pins.append(data)
        self._chunks.append(data)
        self.size += len(data)
        if not self.queued:
            self.queued = True
            self._ready.append(self)

    def view(self) -> bytes:
        """The next bytes to send: the queued chunks joined, up to about ``BATCH`` bytes.

        The join is kept (so a retry does not join again); chunk boundaries after the
        batch are kept too, so that :meth:`drop_backlog` can cut on a frame boundary.
        """
        chunks = self._chunks
        if len(chunks) == 1:
            return chunks[0]
        if not chunks:
            return b""
        count = total = 0
        for chunk in chunks:
            count += 1
            total += len(chunk)
            if total >= BATCH:
                break
        if count == 1:
            return chunks[0]
        joined = b"".join(chunks[:count])
        pins = self._pins
        if pins:
            batch = {id(chunk) for chunk in chunks[:count]}
            k = 0
            while k < len(pins) and id(pins[k]) in batch:
                k += 1
            if k:
                pins[:k] = (joined,)
        chunks[:count] = (joined,)
        return joined

    def consume(self, n: int) -> None:
        """Drop the first ``n`` bytes (what the kernel accepted)."""
        if n >= self.size:
            self._chunks.clear()
            self._pins.clear()
            self.size = 0
            self._partial = False
            return
        self.size -= n
        chunks, pins = self._chunks, self._pins
        while n:
            head = chunks[0]
            if n < len(head):
                chunks[0] = head[n:]
                if pins and pins[0] is head:
                    pins[0] = chunks[0]
                self._partial = True
                return
            n -= len(head)
            del chunks[0]
            if pins and pins[0] is head:
                del pins[0]
            self._partial = False

    def drop_backlog(self) -> None:
        """Forget every queued frame not yet begun (a slow consumer being closed).

        A frame already partly sent is kept, so that what follows (a close frame) still
        starts on a frame boundary.
        """
        chunks = self._chunks
        pinned = {id(pin) for pin in self._pins}
        kept = [c for i, c in enumerate(chunks) if id(c) in pinned or (i == 0 and self._partial)]
        chunks[:] = kept
        self.size = sum(len(chunk) for chunk in kept)

    def take(self) -> list[bytes]:
        """Remove and return every queued chunk, in order (message-based transports)."""
        chunks, self._chunks = self._chunks, []
        self._pins.clear()
        self.size = 0
        self._partial = False
        return chunks


def _own_copy(function: Callable[..., bool]) -> Callable[..., bool]:
    """``function`` under a code object of its own. CPython specialises each instruction of
    a code object for the classes it meets, so :meth:`Outbox.put`'s code, run for outboxes
    of two classes in turn (a channel of WebSocket and SSE members), would run
    unspecialised: 15-20 % more per delivery."""
    return types.FunctionType(function.__code__.replace(), function.__globals__, function.__name__)


Outbox.put_rendered = Outbox.put


class MessageOutbox(Outbox):
    """An outbox of whole text messages, for transports whose server frames for us (ASGI).

    It queues the unframed JSON payloads; ``take()`` returns one per message.
    """

    __slots__ = ()

    def __init__(self, limit: int, ready: list[Outbox], *, door: Door | None = None) -> None:
        super().__init__(limit, ready, door=door)
        # Sizes count the JSON payloads, not frames.
        self.form = MESSAGES

    def put(self, payload: bytes, frame: bytes) -> bool:
        # The same bounded queueing as Outbox.put, applied to the unframed payload.
        return Outbox.put(self, payload, payload)

    def put_batch(self, payloads: list[bytes], frames: bytes) -> bool:
        size = self.size + sum(map(len, payloads))
        if size > self.limit or self.overflowed:
            self.overflowed = True
            return False
        for payload in payloads:
            self._queue(payload, pin=False)
        return True

    def put_always(self, payload: bytes, frame: bytes) -> None:
        self._queue(payload, pin=True)


class FormOutbox(Outbox):
    """An outbox of bytes in any other wire form (Server-Sent Events, lines of JSON...):
    each payload is rendered by the form, once per delivery (see :mod:`relaycore._forms`)."""

    __slots__ = ()

    def __init__(self, limit: int, ready: list[Outbox], form: WireForm, *, door: Door | None = None) -> None:
        super().__init__(limit, ready, door=door)
        self.form = form

    def put(self, payload: bytes, frame: bytes) -> bool:
        return Outbox.put(self, payload, self.form.message(payload))

    def put_batch(self, payloads: list[bytes], frames: bytes) -> bool:
        return Outbox.put(self, b"", self.form.batch(payloads))

    def put_always(self, payload: bytes, frame: bytes) -> None:
        self._queue(self.form.message(payload), pin=True)


def outbox_for(form: WireForm, limit: int, ready: list[Outbox], door: Door | None = None) -> Outbox:
    """A new outbox carrying ``form``."""
    if form is WEBSOCKET:
        return Outbox(limit, ready, door=door)
    if form is MESSAGES:
        return MessageOutbox(limit, ready, door=door)
    return FormOutbox(limit, ready, form, door=door)
