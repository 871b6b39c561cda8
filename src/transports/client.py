"""The Python client: join a channel of any relay that speaks the itty-sockets protocol.

Theory of operation. :func:`connect` opens a TCP (or TLS) stream with anyio and lets
wsproto do the rest, sans-I/O: the HTTP/1.1 upgrade, then the frames. It reads the
self-join before it returns, so ``channel.uid`` and ``channel.total`` are known from the
start. Then ONE reader task per channel owns the receiving side: it answers pings and the
relay's close, turns each text frame into a typed event (:class:`Message`, :class:`Join`,
:class:`Leave`, :class:`Error`), keeps ``total`` and ``users`` current, and puts the event
into a bounded queue of ``max_queue`` events. When the queue is full the reader waits, so
the socket is no longer read: the client holds at most ``max_queue`` events (each at most
``max_message_bytes``), and what the relay cannot deliver piles up in the relay, whose own
slow-consumer bound (close 1008) then applies. Sends go out from the caller's task, under
one lock per connection shared with the reader's pongs and close frames.

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
"""

from __future__ import annotations

import inspect
import random
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from enum import Enum
from ssl import SSLContext, create_default_context
from typing import Any, Literal, NoReturn, TypeAlias
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import anyio
import anyio.abc
import h11
import msgspec
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

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

READ_SIZE = 64 * 1024
#: How much of a refusal's body is kept (the relay's are one line).
MAX_BODY = 64 * 1024
BACKOFF_BASE = 0.1
#: Close codes after which a dropped connection is dialled again (1006: no close frame).
RETRY_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 1014})
#: The event names of :meth:`Channel.on`; a payload ``type`` among them is reached by "message".
FRAME_KINDS = frozenset({"join", "leave", "message", "error", "reconnect", "close"})
_CHANNEL_PATH = re.compile(r"/[cr]/(.+)$")
_SCHEMES = {"ws": False, "wss": True, "http": False, "https": True}
#: What a write raises once the connection is gone (or past its close frame).
_GONE = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError, LocalProtocolError)


# -- errors ---------------------------------------------------------------------------------


class ClientError(Exception):
    """The base of this module's errors."""


class Refused(ClientError):
    """The relay answered with an HTTP error: a refused upgrade, or an HTTP push not delivered.

    ``reason`` is the relay's text (the body of a refused upgrade, the ``error`` of a push).
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}" if reason else f"HTTP {status}")
        self.status = status
        self.reason = reason

    def __repr__(self) -> str:
        return f"Refused(status={self.status}, reason={self.reason!r})"


class ChannelClosed(ClientError):
    """The channel is closed (or its connection dropped under a send): nothing more goes out."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"the channel is closed ({code} {reason!r})" if code else "the channel is closed")
        self.code = code
        self.reason = reason


class ProtocolError(ClientError):
    """The peer sent something that is not the relay protocol (docs/protocol.md)."""


class UsageError(ClientError, RuntimeError):
    """The API was used in a way it does not allow (e.g. both ``on()`` and ``async for``)."""


class ArgumentError(UsageError, ValueError):
    """An argument the client cannot take: a URL that is no relay's, ``ssl=`` on ``ws://``."""


# -- events ---------------------------------------------------------------------------------


class User(msgspec.Struct, frozen=True):
    """An announced member, as listed in ``channel.users``."""

    uid: str
    alias: str | None = None


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """A relayed message. ``uid``/``alias`` are None for an HTTP push (or an alias-less sender);
    ``kind`` is the payload's own string ``type``, when the payload is an object that has one."""

    type: Literal["message"] = "message"
    uid: str | None = None
    alias: str | None = None
    date: int
    message: Any
    kind: str | None = None


class Join(msgspec.Struct, frozen=True, kw_only=True):
    """Someone else joined; ``uid``/``alias`` only if they announced. ``total`` counts everyone."""

    type: Literal["join"] = "join"
    uid: str | None = None
    alias: str | None = None
    total: int
    date: int


class Leave(msgspec.Struct, frozen=True, kw_only=True):
    """Someone else left; ``uid``/``alias`` only if they announced."""

    type: Literal["leave"] = "leave"
    uid: str | None = None
    alias: str | None = None
    total: int
    date: int


class Error(msgspec.Struct, frozen=True, kw_only=True):
    """The relay's error frame, e.g. ``Sending requires a valid sendKey.`` (not an exception:
    the connection stays open)."""

    type: Literal["error"] = "error"
    message: str
    date: int


class Reconnect(msgspec.Struct, frozen=True, kw_only=True):
    """The connection dropped and is back: the new self-join, after ``attempt`` dials."""

    type: Literal["reconnect"] = "reconnect"
    uid: str
    alias: str | None = None
    total: int
    date: int
    attempt: int


class Close(msgspec.Struct, frozen=True, kw_only=True):
    """Given to ``on("close")`` handlers once, when the channel has closed."""

    type: Literal["close"] = "close"
    code: int | None
    reason: str


Event: TypeAlias = Message | Join | Leave | Error | Reconnect
Handler: TypeAlias = Callable[[Any], object]


class _Frame(msgspec.Struct):
    """Any frame from the relay (docs/protocol.md section 5), every key optional."""

    type: str | None = None
    self_: bool = msgspec.field(default=False, name="self")
    uid: str | None = None
    alias: str | None = None
    total: int = 0
    date: int = 0
    users: list[User] | None = None
    message: Any | msgspec.UnsetType = msgspec.UNSET


_decode_frame = msgspec.json.Decoder(_Frame).decode


def _event_of(frame: _Frame) -> Event | None:
    """The event a frame stands for; None for what the client does not know (skipped)."""
    if frame.type is None:
        if frame.message is msgspec.UNSET:
            return None
        payload = frame.message
        kind = payload.get("type") if isinstance(payload, dict) else None
        return Message(
            uid=frame.uid,
            alias=frame.alias,
            date=frame.date,
            message=payload,
            kind=kind if isinstance(kind, str) else None,
        )
    if frame.type == "join" and not frame.self_:
        return Join(uid=frame.uid, alias=frame.alias, total=frame.total, date=frame.date)
    if frame.type == "leave":
        return Leave(uid=frame.uid, alias=frame.alias, total=frame.total, date=frame.date)
    if frame.type == "error":
        text = frame.message if isinstance(frame.message, str) else ""
        return Error(message=text, date=frame.date)
    return None


# -- addresses ------------------------------------------------------------------------------


class _Address(msgspec.Struct, frozen=True):
    tls: bool
    host: str
    port: int
    host_header: str
    target: str  # path and query, as sent in the request line


def _address(url: str, what: str) -> tuple[_Address, str, str]:
    """(address without target, path, query) of a ws/wss/http/https URL."""
    parts = urlsplit(url)
    tls = _SCHEMES.get(parts.scheme.lower())
    if tls is None or not parts.hostname:
        raise ArgumentError(f"{what} needs a ws://, wss://, http:// or https:// URL, not {url!r}")
    port = parts.port or (443 if tls else 80)
    shown = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    header = shown if parts.port in (None, 443 if tls else 80) else f"{shown}:{port}"
    return _Address(tls, parts.hostname, port, header, ""), parts.path, parts.query


def _flag(value: bool | None) -> str | None:
    return None if value is None else ("true" if value else "false")


def _channel_address(url: str, options: dict[str, str | None]) -> tuple[_Address, str]:
    """The address of a channel URL with ``options`` merged into its query, and the channel name."""
    address, path, query = _address(url, "connect()")
    match = _CHANNEL_PATH.search(path)
    if match is None:
        raise ArgumentError(f"connect() needs a channel URL such as ws://host:port/c/<channel>, not {url!r}")
    given = {key: value for key, value in options.items() if value is not None}
    pairs = [(key, value) for key, value in parse_qsl(query, keep_blank_values=True) if key not in given]
    pairs += given.items()
    target = quote(path, safe="/%:@!$&'()*+,;=~")
    if pairs:
        target += "?" + urlencode(pairs, quote_via=quote)
    return msgspec.structs.replace(address, target=target), unquote(match.group(1))


def _tls_context(address: _Address, ssl: SSLContext | bool | None) -> SSLContext | None:
    if not address.tls:
        if isinstance(ssl, SSLContext) or ssl is True:
            raise ArgumentError("ssl= is for wss:// and https:// URLs")
        return None
    if ssl is False:
        raise ArgumentError("a wss:// or https:// URL needs TLS: ssl=False is not allowed")
    return ssl if isinstance(ssl, SSLContext) else create_default_context()


async def _open_stream(address: _Address, context: SSLContext | None) -> anyio.abc.ByteStream:
    if context is None:
        return await anyio.connect_tcp(address.host, address.port)
    # No TLS close_notify is owed: the WebSocket (or HTTP) framing says where the data ends.
    return await anyio.connect_tcp(address.host, address.port, ssl_context=context, tls_standard_compatible=False)


async def _read(stream: anyio.abc.ByteStream) -> bytes:
    """Up to READ_SIZE bytes; b"" at the end of the stream. Transport failures are OSErrors."""
    try:
        return await stream.receive(READ_SIZE)
    except anyio.EndOfStream:
        return b""
    except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
        raise ConnectionResetError(f"connection lost: {exc!r}") from exc


# -- one WebSocket connection -----------------------------------------------------------------


class _Ended(Exception):
    """The connection is over, with this close code (1006: no close frame)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class _Link:
    """One WebSocket connection: a byte stream and its wsproto state."""

    __slots__ = (
        "_deadline",
        "_parts",
        "_size",
        "close_timeout",
        "ended",
        "lock",
        "max_message_bytes",
        "stream",
        "ws",
    )

    def __init__(self, stream: anyio.abc.ByteStream, max_message_bytes: int, close_timeout: float) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.lock = anyio.Lock()  # one writer at a time: sends, pongs, close frames
        self.ended = anyio.Event()  # the reader is done with this connection
        self.max_message_bytes = max_message_bytes
        self.close_timeout = close_timeout
        self._parts: list[str] = []
        self._size = 0
        self._deadline = float("inf")  # once our close frame is out, the answer is awaited until then

    async def write(self, event: Any) -> None:
        async with self.lock:
            data = self.ws.send(event)
            await self.stream.send(data)

    async def close_frame(self, code: int, reason: str = "") -> None:
        """Send our close frame (if the connection is still open) and bound the wait for the answer."""
        if self.ws.state is ConnectionState.OPEN:
            self._deadline = anyio.current_time() + self.close_timeout
            with suppress(*_GONE):
                await self.write(CloseConnection(code=code, reason=reason))

    async def handshake(self, address: _Address) -> None:
        """Send the upgrade request; return on 101, raise :class:`Refused` on any other answer."""
        await self.stream.send(self.ws.send(Request(host=address.host_header, target=address.target)))
        status, body, eof = 0, bytearray(), False
        while True:
            for event in self.ws.events():
                if isinstance(event, AcceptConnection):
                    return
                if isinstance(event, RejectConnection):
                    status = event.status_code
                    if not event.has_body:
                        raise Refused(status, "")
                elif isinstance(event, RejectData):
                    body += event.data[: MAX_BODY - len(body)]
                    if event.body_finished:
                        raise Refused(status, body.decode(errors="replace").strip())
            if eof:
                raise ProtocolError("the relay closed the connection before answering the upgrade")
            data = await _read(self.stream)
            eof = not data
            try:
                self.ws.receive_data(data or None)
            except RemoteProtocolError as exc:
                raise ProtocolError(f"invalid answer to the upgrade: {exc}") from None

    async def receive(self) -> str:
        """The next whole text message; raises :class:`_Ended` when the connection is over."""
        while True:
            for event in self.ws.events():
                if isinstance(event, TextMessage | BytesMessage):
                    if self.ws.state is not ConnectionState.OPEN:
                        continue  # closing: what was still in flight is not wanted
                    if isinstance(event, BytesMessage):
                        await self.close_frame(1003, "binary frames are not part of the protocol")
                        continue
                    self._size += len(event.data)
                    if self._size > self.max_message_bytes:
                        await self.close_frame(1009, "message too big")
                        continue
                    self._parts.append(event.data)
                    if event.message_finished:
                        text = "".join(self._parts)
                        self._parts, self._size = [], 0
                        return text
                elif isinstance(event, Ping):
                    await self._answer(event.response())
                elif isinstance(event, CloseConnection):
                    if self.ws.state is ConnectionState.REMOTE_CLOSING:
                        await self._answer(event.response())
                    elif self.ws.state is ConnectionState.OPEN:  # a framing error found by wsproto
                        await self.close_frame(event.code, event.reason or "")
                    raise _Ended(event.code, event.reason or "")
            data = await self._read_bounded()
            self.ws.receive_data(data or None)

    async def _answer(self, event: Any) -> None:
        with suppress(*_GONE):  # the read that follows sees the end
            await self.write(event)

    async def _read_bounded(self) -> bytes:
        try:
            with anyio.move_on_after(self._deadline - anyio.current_time()):
                return await _read(self.stream)
            return b""  # our close frame got no answer in time: as good as gone
        except OSError as exc:
            raise _Ended(1006, str(exc)) from None

    async def aclose(self) -> None:
        self.ended.set()
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.close_timeout):
            await self.stream.aclose()


async def _dial(address: _Address, settings: _Settings) -> tuple[_Link, _Frame]:
    """Connect, upgrade, and read the self-join: the new link and its self-join frame."""
    with anyio.move_on_after(settings.open_timeout) as scope:
        stream = await _open_stream(address, settings.ssl_context)
        link = _Link(stream, settings.max_message_bytes, settings.close_timeout)
        try:
            await link.handshake(address)
            try:
                hello = _decode_frame(await link.receive())
            except _Ended as ended:
                raise ChannelClosed(ended.code, ended.reason) from None
            except msgspec.DecodeError as exc:
                raise ProtocolError(f"the first frame is not a self-join: {exc}") from None
            if hello.type != "join" or not hello.self_ or not hello.uid:
                raise ProtocolError(f"the first frame is not a self-join: {hello!r}")
            return link, hello
        except BaseException:
            await link.aclose()
            raise
    assert scope.cancelled_caught
    raise TimeoutError(f"no self-join from {address.host}:{address.port} within {settings.open_timeout} s")


# -- channels -------------------------------------------------------------------------------


class ChannelState(Enum):
    """Where a channel stands."""

    OPEN = "open"  # connected: sends go out, events come in
    RECONNECTING = "reconnecting"  # the connection dropped; dialling again (reconnect=True)
    CLOSING = "closing"  # close() was called: our close frame is out, its answer awaited
    CLOSED = "closed"  # over; close_code and close_reason say why


_NEXT: dict[ChannelState, frozenset[ChannelState]] = {
    ChannelState.OPEN: frozenset({ChannelState.RECONNECTING, ChannelState.CLOSING, ChannelState.CLOSED}),
    ChannelState.RECONNECTING: frozenset({ChannelState.OPEN, ChannelState.CLOSING, ChannelState.CLOSED}),
    ChannelState.CLOSING: frozenset({ChannelState.CLOSED}),
    ChannelState.CLOSED: frozenset(),
}


class _Settings(msgspec.Struct, frozen=True):
    ssl_context: SSLContext | None
    reconnect: bool
    reconnect_max_delay: float
    max_queue: int
    max_message_bytes: int
    open_timeout: float
    close_timeout: float


class Channel:
    """A member of one channel, as given by :func:`connect`.

    ``uid``, ``alias``, ``total`` and (with ``list=True``) ``users`` describe the membership
    and stay current; iterate for events, or register handlers with :meth:`on`.
    """

    def __init__(
        self, address: _Address, name: str, settings: _Settings, link: _Link, hello: _Frame, tg: anyio.abc.TaskGroup
    ) -> None:
        self.name = name
        self._address = address
        self._settings = settings
        self._tg = tg
        self._link: _Link | None = link
        self._state = ChannelState.OPEN
        self._open = anyio.Event()  # set while OPEN, and for good once CLOSING/CLOSED
        self._open.set()
        self._done = anyio.Event()  # the reader has finished
        self._dispatched = anyio.Event()  # the dispatcher (if any) has finished
        self._reader_scope = anyio.CancelScope()
        self._events_in, self._events_out = anyio.create_memory_object_stream[Event](settings.max_queue)
        self._mode: str | None = None  # "iterate" or "handlers", fixed by the first use
        self._handlers: dict[str, list[Handler]] = {}
        self._failure: Exception | None = None  # a handler's exception, raised by connect()
        self._exited = False  # the connect() block is over: no more tasks can start
        self.close_code: int | None = None
        self.close_reason = ""
        self.uid = ""
        self.alias: str | None = None
        self.total = 0
        self._users: list[User] | None = None
        self._hello(hello)

    def __repr__(self) -> str:
        return f"<Channel {self.name!r} uid={self.uid} {self._state.value}>"

    # -- what the application sees ----------------------------------------------------------

    @property
    def state(self) -> ChannelState:
        """OPEN, RECONNECTING, CLOSING or CLOSED."""
        return self._state

    @property
    def users(self) -> list[User] | None:
        """The announced members, oldest first (a copy); None unless joined with ``list=True``."""
        return None if self._users is None else list(self._users)

    @property
    def queued(self) -> int:
        """Events read from the relay and not yet consumed (never more than ``max_queue``)."""
        return self._events_in.statistics().current_buffer_used

    async def send(self, value: Any, to: str | None = None) -> None:
        """Broadcast ``value`` (anything msgspec encodes to JSON), or send it to the member ``to``.

        While reconnecting, waits for the connection to be back. Raises :class:`ChannelClosed`
        once the channel is closing or closed, or if the connection drops during this send.
        """
        text = msgspec.json.encode(value).decode()
        if to is not None:
            if not to or "\x1f" in to:
                raise ArgumentError(f"not a uid: {to!r}")
            text = f"\x1f{to}\x1f{text}"
        while True:
            while self._state is ChannelState.RECONNECTING:
                await self._open.wait()
            link = self._link
            if self._state is not ChannelState.OPEN or link is None:
                raise ChannelClosed(self.close_code, self.close_reason)
            try:
                await link.write(TextMessage(data=text))
                return
            except LocalProtocolError as exc:  # nothing written: the connection is ending
                if not self._settings.reconnect:
                    raise ChannelClosed(self.close_code or 1006, self.close_reason or "connection lost") from exc
                await link.ended.wait()  # then the channel is RECONNECTING, or CLOSED
            except _GONE as exc:  # the connection broke during the write: delivered or not
                raise ChannelClosed(self.close_code or 1006, self.close_reason or "connection lost") from exc

    async def receive(self) -> Event:
        """The next event; raises :class:`ChannelClosed` once the channel is closed and drained."""
        self._claim("iterate")
        try:
            return await self._events_out.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise ChannelClosed(self.close_code, self.close_reason) from None

    def __aiter__(self) -> Channel:
        self._claim("iterate")
        return self

    async def __anext__(self) -> Event:
        try:
            return await self._events_out.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    def on(self, kind: str, handler: Handler) -> Channel:
        """Call ``handler(event)`` (sync or async) for each event of ``kind``; returns the channel.

        ``kind`` is an event type (``join``, ``leave``, ``message``, ``error``, ``reconnect``,
        ``close``) or a payload's own ``type`` (``"chat"``: messages whose payload is
        ``{"type": "chat", ...}``). Handlers run one at a time, in order, in a task of their
        own. An exception in a handler closes the channel (1011) and leaves ``connect()`` with it.
        """
        if not kind:
            raise ArgumentError("on() needs an event type or a payload type")
        self._claim("handlers")
        if self._exited:
            raise UsageError("on() after the connect() block: the channel is closed")
        first = not self._handlers
        self._handlers.setdefault(kind, []).append(handler)
        if first:
            self._tg.start_soon(self._dispatch)
        return self

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the channel (the close handshake, at most ``close_timeout``); events not yet
        consumed are dropped. Closing a closed channel does nothing."""
        if self._state in (ChannelState.OPEN, ChannelState.RECONNECTING):
            reconnecting = self._state is ChannelState.RECONNECTING
            self._move(ChannelState.CLOSING)
            self.close_code, self.close_reason = code, reason  # until the relay's answer says otherwise
            self._events_out.close()  # the reader never waits for room again
            if reconnecting or self._link is None:
                self._reader_scope.cancel()
            else:
                await self._link.close_frame(code, reason)
        with anyio.move_on_after(self._settings.close_timeout + 1.0):
            await self._done.wait()
        if not self._done.is_set():
            self._reader_scope.cancel()
            await self._done.wait()

    async def wait_closed(self) -> None:
        """Return once the channel has closed (and the ``close`` handlers, if any, have run).
        Not from inside a handler: the handlers' task would wait for itself."""
        await self._done.wait()
        if self._handlers:
            await self._dispatched.wait()

    # -- the reader task ----------------------------------------------------------------------

    def _move(self, state: ChannelState) -> None:
        if state not in _NEXT[self._state]:
            raise AssertionError(f"channel state {self._state.value} -> {state.value}")  # a bug here
        self._state = state
        if state is ChannelState.RECONNECTING:
            self._open = anyio.Event()
        else:
            self._open.set()

    def _hello(self, hello: _Frame) -> None:
        assert hello.uid is not None
        self.uid, self.alias, self.total = hello.uid, hello.alias, hello.total
        if hello.users is not None:
            self._users = list(hello.users)

    async def _run(self) -> None:
        """Read events until the channel closes; reconnect in between if asked to."""
        try:
            with self._reader_scope:
                while (link := self._link) is not None:
                    code, reason = await self._read(link)
                    self._link = None
                    again = self._state is ChannelState.OPEN and self._settings.reconnect and code in RETRY_CODES
                    if again:
                        self._move(ChannelState.RECONNECTING)
                    else:
                        self._finish(code, reason)
                    await link.aclose()  # the state first: senders waiting on link.ended look at it
                    if again:
                        await self._redial(code, reason)
        finally:
            if self._link is not None:
                await self._link.aclose()
                self._link = None
            if self._state is not ChannelState.CLOSED:
                self._finish(self.close_code or 1006, self.close_reason or "closed")
            self._events_in.close()
            self._done.set()

    def _finish(self, code: int | None, reason: str) -> None:
        self.close_code, self.close_reason = code, reason
        self._move(ChannelState.CLOSED)

    async def _read(self, link: _Link) -> tuple[int, str]:
        while True:
            try:
                text = await link.receive()
            except _Ended as ended:
                return ended.code, ended.reason
            try:
                event = _event_of(_decode_frame(text))
            except msgspec.DecodeError:
                await link.close_frame(1002, "invalid frame from the relay")
                continue
            if event is not None:
                self._follow(event)
                await self._deliver(event)

    def _follow(self, event: Event) -> None:
        """Keep ``total`` and ``users`` current."""
        if isinstance(event, Join | Leave):
            self.total = event.total
            if self._users is not None and event.uid is not None:
                self._users = [user for user in self._users if user.uid != event.uid]
                if isinstance(event, Join):
                    self._users.append(User(event.uid, event.alias))

    async def _deliver(self, event: Event) -> None:
        if self._state is ChannelState.OPEN:
            # Waits while the queue is full; a close() meanwhile means no more events are wanted.
            with suppress(anyio.BrokenResourceError):
                await self._events_in.send(event)

    async def _redial(self, code: int, reason: str) -> None:
        """Dial until a connection is back (-> OPEN) or is refused for good (-> CLOSED)."""
        attempt = 0
        while True:
            attempt += 1
            ceiling = min(self._settings.reconnect_max_delay, BACKOFF_BASE * 2 ** min(attempt - 1, 32))
            await anyio.sleep(random.uniform(0, ceiling))
            try:
                link, hello = await _dial(self._address, self._settings)
            except Refused as refused:
                if refused.status == 429 or refused.status >= 500:
                    continue
                self._finish(code, f"reconnect refused: {refused}")
                return
            except ChannelClosed as closed:
                if closed.code in RETRY_CODES:
                    continue
                self._finish(closed.code, closed.reason)
                return
            except (OSError, ProtocolError):
                continue
            self._link = link
            self._hello(hello)
            self._move(ChannelState.OPEN)
            reconnected = Reconnect(uid=self.uid, alias=self.alias, total=self.total, date=hello.date, attempt=attempt)
            await self._deliver(reconnected)
            return

    # -- the handlers' task -------------------------------------------------------------------

    def _claim(self, mode: str) -> None:
        if self._mode is None:
            self._mode = mode
        elif self._mode != mode:
            raise UsageError(
                "a channel is read either with on() handlers or by iterating (receive(), async for), not both"
            )

    async def _dispatch(self) -> None:
        try:
            while True:
                try:
                    event = await self._events_out.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    break
                await self._call(event.type, event)
                if isinstance(event, Message) and event.kind is not None and event.kind not in FRAME_KINDS:
                    await self._call(event.kind, event)
            await self._done.wait()
            await self._call("close", Close(code=self.close_code, reason=self.close_reason))
        except Exception as exc:
            self._failure = exc
            await self.close(1011, "handler failed")
            self._tg.cancel_scope.cancel()
        finally:
            self._dispatched.set()

    async def _call(self, kind: str, event: Any) -> None:
        for handler in self._handlers.get(kind, ()):
            result = handler(event)
            if inspect.isawaitable(result):
                await result


@asynccontextmanager
async def connect(
    url: str,
    *,
    alias: str | None = None,
    announce: bool | None = None,
    echo: bool | None = None,
    list: bool | None = None,  # shadows the builtin: it is the protocol's own name
    join_key: str | None = None,
    send_key: str | None = None,
    ssl: SSLContext | bool | None = None,
    reconnect: bool = False,
    reconnect_max_delay: float = 10.0,
    max_queue: int = 1024,
    max_message_bytes: int = 1024 * 1024,
    open_timeout: float = 10.0,
    close_timeout: float = 5.0,
) -> AsyncIterator[Channel]:
    """Join the channel of ``url`` (``ws://host:port/c/<channel>``, ``wss://``, or ``/r/``).

    The options go into the query string under the protocol's names (``alias``, ``announce``,
    ``echo``, ``list``, ``joinKey``, ``sendKey``); an option left at None keeps what the URL
    says. ``ssl``: the TLS context for wss:// (None or True: the system's default).

    Raises :class:`Refused` (status, reason) if the relay refuses the upgrade, an ``OSError``
    if the connection fails (``TimeoutError`` after ``open_timeout``). Leaving the block
    closes the channel::

        async with connect("ws://127.0.0.1:8787/c/room", alias="Ann") as channel:
            await channel.send({"type": "chat", "text": "hi"})
            async for event in channel:
                print(event)
    """
    if max_queue < 1 or max_message_bytes < 1 or reconnect_max_delay <= 0:
        raise ArgumentError("max_queue and max_message_bytes must be at least 1, reconnect_max_delay above 0")
    options = {
        "alias": alias,
        "announce": _flag(announce),
        "echo": _flag(echo),
        "list": _flag(list),
        "joinKey": join_key,
        "sendKey": send_key,
    }
    address, name = _channel_address(url, options)
    settings = _Settings(
        ssl_context=_tls_context(address, ssl),
        reconnect=reconnect,
        reconnect_max_delay=reconnect_max_delay,
        max_queue=max_queue,
        max_message_bytes=max_message_bytes,
        open_timeout=open_timeout,
        close_timeout=close_timeout,
    )
    # Dialled before the task group exists, so that a refusal reaches the caller as itself.
    link, hello = await _dial(address, settings)
    failure: Exception | None = None
    try:
        async with anyio.create_task_group() as tg:
            channel = Channel(address, name, settings, link, hello, tg)
            tg.start_soon(channel._run)
            try:
                yield channel
            except Exception as exc:  # raised below, outside the task group, as itself
                failure = exc
            finally:
                with anyio.CancelScope(shield=True):
                    await channel.close()
                    with anyio.move_on_after(close_timeout):
                        await channel.wait_closed()
                tg.cancel_scope.cancel()
                channel._exited = True
    finally:
        await link.aclose()  # the reader closes it, unless it never started
    if failure is not None:
        raise failure
    if channel._failure is not None:
        raise channel._failure


async def push(
    url: str,
    value: Any,
    to: str | None = None,
    *,
    alias: str | None = None,
    announce: bool | None = None,
    join_key: str | None = None,
    send_key: str | None = None,
    ssl: SSLContext | bool | None = None,
    open_timeout: float = 10.0,
    close_timeout: float = 5.0,
) -> None:
    """Send and close: join ``url``, send ``value`` (to ``to`` only, if given), close, and
    return once the close handshake is over. The relay delivers the message before the leave."""
    async with connect(
        url,
        alias=alias,
        announce=announce,
        join_key=join_key,
        send_key=send_key,
        ssl=ssl,
        open_timeout=open_timeout,
        close_timeout=close_timeout,
    ) as channel:
        await channel.send(value, to=to)


async def http_push(
    base_url: str,
    channel_name: str,
    value: Any,
    *,
    send_key: str,
    ssl: SSLContext | bool | None = None,
    timeout: float = 10.0,
) -> int:
    """``POST {base_url}/push/{channel_name}`` with ``x-send-key``: how many members got ``value``.

    ``base_url`` is the relay's ``http://host:port`` (or ``https://``, or a ws/wss URL; a path
    is kept as a prefix). A non-200 answer raises :class:`Refused` with the relay's error text.
    """
    address, prefix, _ = _address(base_url, "http_push()")
    target = prefix.rstrip("/") + "/push/" + quote(channel_name, safe="/:")
    body = msgspec.json.encode(value)
    headers = [
        ("Host", address.host_header),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("x-send-key", send_key),
        ("Connection", "close"),
    ]
    conn = h11.Connection(h11.CLIENT)
    with anyio.move_on_after(timeout) as scope:
        stream = await _open_stream(address, _tls_context(address, ssl))
        try:
            request = conn.send(h11.Request(method="POST", target=target, headers=headers)) or b""
            await stream.send(
                request + (conn.send(h11.Data(data=body)) or b"") + (conn.send(h11.EndOfMessage()) or b"")
            )
            status, answer = await _response(stream, conn)
        finally:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
    if scope.cancelled_caught:
        raise TimeoutError(f"no answer from {address.host}:{address.port} within {timeout} s")
    try:
        document = msgspec.json.decode(answer)
    except msgspec.DecodeError:
        document = None
    if status != 200:
        error = document.get("error") if isinstance(document, dict) else None
        raise Refused(status, error if isinstance(error, str) else answer.decode(errors="replace").strip())
    recipients = document.get("recipients") if isinstance(document, dict) else None
    if not isinstance(recipients, int):
        raise ProtocolError(f"a push answer without recipients: {answer[:200]!r}")
    return recipients


async def _response(stream: anyio.abc.ByteStream, conn: h11.Connection) -> tuple[int, bytes]:
    """The status and body (at most MAX_BODY bytes) of the HTTP response on ``stream``."""
    status, body = 0, bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            _bad_answer(exc)
        if event is h11.NEED_DATA:
            conn.receive_data(await _read(stream))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data[: MAX_BODY - len(body)]
        elif isinstance(event, h11.EndOfMessage):
            return status, bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            _bad_answer("the connection closed before the answer was complete")


def _bad_answer(why: object) -> NoReturn:
    raise ProtocolError(f"invalid HTTP answer: {why}")
