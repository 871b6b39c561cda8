"""The Python client: join a channel of any relay that speaks the itty-sockets protocol.

Theory of operation. :func:`connect` opens a TCP (or TLS) stream with anyio and lets the
core's client wire (:class:`relaycore.client.ClientConnection`) do the rest, sans-I/O: the
HTTP/1.1 upgrade, then the frames, the pongs and the answer to the relay's close. It reads
the self-join before it returns, so ``channel.uid`` and ``channel.total`` are known from the
start. Then ONE reader task per channel owns the receiving side: it turns each text frame
into a typed event (:class:`Message`, :class:`Join`, :class:`Leave`, :class:`Error`), keeps
``total`` and ``users`` current, and puts the event into a bounded queue of ``max_queue``
events. When the queue is full the reader waits, so the socket is no longer read: the client
holds at most ``max_queue`` events (each at most ``max_message_bytes``), and what the relay
cannot deliver piles up in the relay, whose own slow-consumer bound (close 1008) then
applies. Sends go out from the caller's task, under one lock per connection shared with the
reader's pongs and close frames.

The queue has ONE consumer, chosen by the first use: ``async for`` (or :meth:`Channel.receive`)
in the application's task, or, from the first :meth:`Channel.on`, a dispatcher task that
calls the handlers in order. Mixing the two raises :class:`UsageError` instead of splitting
the events between them. Handlers never run in the reader task, so a handler may send,
close the channel, or take its time (reading then pauses, as above) without a deadlock.

With ``reconnect=True``, a connection that drops (no close frame, or a close 1001, 1011,
1012, 1013, 1014) is dialled again with the same URL and options after a full-jitter
exponential backoff (``uniform(0, min(cap, 0.1 * 2**n))``); handshake refusals with 429 or
5xx are retried too, any other refusal ends the channel. The new self-join updates
``uid``, ``total`` and ``users``, and a :class:`Reconnect` event marks the seam. Sends
made meanwhile wait for the new connection.

:func:`connect` dials before it opens the channel's task group, and carries an exception of
its block (or of a handler) out of that group, so the caller sees ``Refused``, ``OSError``
or its own exception as itself, never wrapped in an exception group.

The channel's life is an explicit state machine (:class:`ChannelState`): OPEN, RECONNECTING,
CLOSING, CLOSED, with every transition in ``_NEXT``. The wire format is docs/protocol.md's.

The package, one module a concern (the names of ``__all__`` are its public face):

- ``_errors`` and ``_events``: the errors, the events, and how a relay's frame becomes one;
- ``_link``: one WebSocket connection, a byte stream driving the core's client wire;
- ``_channel``: :class:`Channel`, its state table, its reader and handlers' tasks, reconnection;
- ``_connect``: :func:`connect`, :func:`push` and :func:`http_push`;
- ``_commands``: the ``relaycore listen``, ``send`` and ``push`` command-line tools.
"""

from __future__ import annotations

from ._channel import Channel, ChannelState
from ._connect import connect, http_push, push
from ._errors import ArgumentError, ChannelClosed, ClientError, ProtocolError, Refused, UsageError
from ._events import Close, Error, Event, Join, Leave, Message, Reconnect, User

__all__ = [
    "ArgumentError",
    "Channel",
    "ChannelClosed",
    "ChannelState",
    "ClientError",
    "Close",
    "Error",
    "Event",
    "Join",
    "Leave",
    "Message",
    "ProtocolError",
    "Reconnect",
    "Refused",
    "UsageError",
    "User",
    "connect",
    "http_push",
    "push",
]
