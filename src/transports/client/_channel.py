"""A member of one channel: :class:`Channel`, its state table, its reader task (events into a
bounded queue), its handlers' task, and the reconnection (see :mod:`transports.client`)."""

from __future__ import annotations

import inspect
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from enum import Enum
from typing import Any, TypeAlias

import anyio
import anyio.abc
import msgspec

from relaycore import RelayUsageError
from relaycore.client import Address
from relaycore.texts import (
    CLOSE_ABNORMAL,
    CLOSE_BAD_GATEWAY,
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_SERVICE_RESTART,
    CLOSE_TRY_AGAIN_LATER,
)

from ._errors import ArgumentError, ChannelClosed, ProtocolError, Refused, UsageError
from ._events import Close, Event, Frame, Join, Leave, Message, Reconnect, User, decode_frame, event_of
from ._link import GONE, Ended, Link, Settings, dial

__all__ = ["BACKOFF_BASE", "FRAME_KINDS", "RETRY_CODES", "Channel", "ChannelState", "Handler", "membership"]

BACKOFF_BASE = 0.1
#: Close codes after which a dropped connection is dialled again (1006: no close frame).
RETRY_CODES = frozenset(
    {
        CLOSE_GOING_AWAY,
        CLOSE_ABNORMAL,
        CLOSE_INTERNAL_ERROR,
        CLOSE_SERVICE_RESTART,
        CLOSE_TRY_AGAIN_LATER,
        CLOSE_BAD_GATEWAY,
    }
)
#: The event names of :meth:`Channel.on`; a payload ``type`` among them is reached by "message".
FRAME_KINDS = frozenset({"join", "leave", "message", "error", "reconnect", "close"})

Handler: TypeAlias = Callable[[Any], object]


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


class Channel:
    """A member of one channel, as given by :func:`connect`.

    ``uid``, ``alias``, ``total`` and (with ``list=True``) ``users`` describe the membership
    and stay current; iterate for events, or register handlers with :meth:`on`.
    """

    def __init__(
        self, address: Address, name: str, settings: Settings, link: Link, hello: Frame, tg: anyio.abc.TaskGroup
    ) -> None:
        self.name = name
        self._address = address
        self._settings = settings
        self._tg = tg
        self._link: Link | None = link
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
                await link.send_text(text)
                return
            except RelayUsageError as exc:  # nothing written: the connection is ending
                if not self._settings.reconnect:
                    raise ChannelClosed(
                        self.close_code or CLOSE_ABNORMAL, self.close_reason or "connection lost"
                    ) from exc
                await link.ended.wait()  # then the channel is RECONNECTING, or CLOSED
            except GONE as exc:  # the connection broke during the write: delivered or not
                raise ChannelClosed(self.close_code or CLOSE_ABNORMAL, self.close_reason or "connection lost") from exc

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

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
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

    def _hello(self, hello: Frame) -> None:
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
                self._finish(self.close_code or CLOSE_ABNORMAL, self.close_reason or "closed")
            self._events_in.close()
            self._done.set()

    def _finish(self, code: int | None, reason: str) -> None:
        self.close_code, self.close_reason = code, reason
        self._move(ChannelState.CLOSED)

    async def _read(self, link: Link) -> tuple[int, str]:
        while True:
            try:
                text = await link.receive()
            except Ended as ended:
                return ended.code, ended.reason
            try:
                event = event_of(decode_frame(text))
            except msgspec.DecodeError:
                await link.close_frame(CLOSE_PROTOCOL_ERROR, "invalid frame from the relay")
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
                link, hello = await dial(self._address, self._settings)
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
            await self.close(CLOSE_INTERNAL_ERROR, "handler failed")
            self._tg.cancel_scope.cancel()
        finally:
            self._dispatched.set()

    async def _call(self, kind: str, event: Any) -> None:
        for handler in self._handlers.get(kind, ()):
            result = handler(event)
            if inspect.isawaitable(result):
                await result


@asynccontextmanager
async def membership(address: Address, name: str, settings: Settings) -> AsyncIterator[Channel]:
    """The channel of :func:`transports.client.connect`'s block: dialled, its tasks running,
    closed on the way out. An exception of the block (or of a handler) leaves as itself."""
    # Dialled before the task group exists, so that a refusal reaches the caller as itself.
    link, hello = await dial(address, settings)
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
                    with anyio.move_on_after(settings.close_timeout):
                        await channel.wait_closed()
                tg.cancel_scope.cancel()
                channel._exited = True
    finally:
        await link.aclose()  # the reader closes it, unless it never started
    if failure is not None:
        raise failure
    if channel._failure is not None:
        raise channel._failure
