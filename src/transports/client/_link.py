"""One WebSocket connection of a channel: an anyio byte stream driving the core's client wire.

The upgrade, the frames, the pongs, the answer to the relay's close and the client's limits
(close 1003 on a binary frame, 1009 over ``max_message_bytes``) are
:class:`relaycore.client.ClientConnection`'s; this module moves its bytes, bounds the wait
for the answer to our close frame, and turns what it reports into the client's exceptions.
"""

from __future__ import annotations

import re
from collections import deque
from contextlib import suppress
from ssl import SSLContext, create_default_context
from urllib.parse import parse_qsl, quote, unquote, urlencode

import anyio
import anyio.abc
import msgspec

from relaycore import RelayValueError
from relaycore.client import Address, ClientConnection, ClientEvent, ClientState, Closed, Text, parse_url
from relaycore.client import Refused as RefusedUpgrade
from relaycore.texts import CLOSE_ABNORMAL

from ._errors import ArgumentError, ChannelClosed, ProtocolError, Refused
from ._events import Frame, decode_frame

__all__ = [
    "GONE",
    "Ended",
    "Link",
    "Settings",
    "channel_address",
    "dial",
    "open_stream",
    "read",
    "relay_address",
    "tls_context",
]

READ_SIZE = 64 * 1024
#: What a write raises once the connection is gone.
GONE = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)
_CHANNEL_PATH = re.compile(r"/[cr]/(.+)$")


class Settings(msgspec.Struct, frozen=True):
    """What :func:`transports.client.connect` was asked for, kept for every dial."""

    ssl_context: SSLContext | None
    reconnect: bool
    reconnect_max_delay: float
    max_queue: int
    max_message_bytes: int
    open_timeout: float
    close_timeout: float


# -- addresses ------------------------------------------------------------------------------


def relay_address(url: str, what: str) -> Address:
    """The core's reading of a ws/wss/http/https URL; ``what`` names the caller in the error."""
    try:
        return parse_url(url)
    except RelayValueError:
        raise ArgumentError(f"{what} needs a ws://, wss://, http:// or https:// URL, not {url!r}") from None


def channel_address(url: str, options: dict[str, str | None]) -> tuple[Address, str]:
    """The address of a channel URL with ``options`` merged into its query, and the channel name."""
    address = relay_address(url, "connect()")
    match = _CHANNEL_PATH.search(address.path)
    if match is None:
        raise ArgumentError(f"connect() needs a channel URL such as ws://host:port/c/<channel>, not {url!r}")
    given = {key: value for key, value in options.items() if value is not None}
    pairs = [(key, value) for key, value in parse_qsl(address.query, keep_blank_values=True) if key not in given]
    pairs += given.items()
    path = quote(address.path, safe="/%:@!$&'()*+,;=~")
    query = urlencode(pairs, quote_via=quote) if pairs else ""
    return msgspec.structs.replace(address, path=path, query=query), unquote(match.group(1))


def tls_context(address: Address, ssl: SSLContext | bool | None) -> SSLContext | None:
    if not address.tls:
        if isinstance(ssl, SSLContext) or ssl is True:
            raise ArgumentError("ssl= is for wss:// and https:// URLs")
        return None
    if ssl is False:
        raise ArgumentError("a wss:// or https:// URL needs TLS: ssl=False is not allowed")
    return ssl if isinstance(ssl, SSLContext) else create_default_context()


async def open_stream(address: Address, context: SSLContext | None) -> anyio.abc.ByteStream:
    if context is None:
        return await anyio.connect_tcp(address.host, address.port)
    # No TLS close_notify is owed: the WebSocket (or HTTP) framing says where the data ends.
    return await anyio.connect_tcp(address.host, address.port, ssl_context=context, tls_standard_compatible=False)


async def read(stream: anyio.abc.ByteStream) -> bytes:
    """Up to READ_SIZE bytes; b"" at the end of the stream. Transport failures are OSErrors."""
    try:
        return await stream.receive(READ_SIZE)
    except anyio.EndOfStream:
        return b""
    except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
        raise ConnectionResetError(f"connection lost: {exc!r}") from exc


# -- one WebSocket connection -----------------------------------------------------------------


class Ended(Exception):
    """The connection is over, with this close code (1006: no close frame)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class Link:
    """One WebSocket connection: a byte stream and its :class:`~relaycore.client.ClientConnection`.

    Bytes are made and written under one lock (sends, pongs, close frames), so that no frame
    of ours follows our close frame on the wire."""

    __slots__ = ("_deadline", "_events", "close_timeout", "conn", "ended", "lock", "stream")

    def __init__(self, stream: anyio.abc.ByteStream, address: Address, settings: Settings) -> None:
        self.stream = stream
        self.conn = ClientConnection(
            address.host_header, address.target, max_message_bytes=settings.max_message_bytes, binary=False
        )
        self.lock = anyio.Lock()
        self.ended = anyio.Event()  # the reader is done with this connection
        self.close_timeout = settings.close_timeout
        self._events: deque[ClientEvent] = deque()
        self._deadline = float("inf")  # once our close frame is out, the answer is awaited until then

    async def send_text(self, text: str) -> None:
        """Raises :class:`relaycore.RelayUsageError`, nothing written, once the connection is ending."""
        async with self.lock:
            await self.stream.send(self.conn.send_text(text))

    async def close_frame(self, code: int, reason: str = "") -> None:
        """Send our close frame (if the connection is still open) and bound the wait for the answer."""
        await self._write_quietly(self.conn.close(code, reason))

    async def handshake(self) -> None:
        """Send the upgrade request; return on 101, raise :class:`Refused` on any other answer."""
        await self.stream.send(self.conn.request())
        while not self._events:
            self._events.extend(self.conn.receive_data(await read(self.stream)))
        answer = self._events.popleft()
        if isinstance(answer, RefusedUpgrade):
            raise Refused(answer.status, answer.body.decode(errors="replace").strip())
        if isinstance(answer, Closed):
            raise ProtocolError(answer.reason)

    async def receive(self) -> str:
        """The next whole text message; raises :class:`Ended` when the connection is over."""
        while True:
            while not self._events:
                self._events.extend(self.conn.receive_data(await self._read_bounded()))
                await self._write_quietly(self.conn.data_to_send())  # pongs, close frames
            event = self._events.popleft()
            if isinstance(event, Text):
                return event.data
            if isinstance(event, Closed):
                raise Ended(event.code, event.reason)

    async def _write_quietly(self, data: bytes) -> None:
        if self.conn.state is ClientState.CLOSING and self._deadline == float("inf"):
            self._deadline = anyio.current_time() + self.close_timeout
        if data:
            with suppress(*GONE):  # the read that follows sees the end
                async with self.lock:
                    await self.stream.send(data)

    async def _read_bounded(self) -> bytes:
        try:
            with anyio.move_on_after(self._deadline - anyio.current_time()):
                return await read(self.stream)
            return b""  # our close frame got no answer in time: as good as gone
        except OSError as exc:
            raise Ended(CLOSE_ABNORMAL, str(exc)) from None

    async def aclose(self) -> None:
        self.ended.set()
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.close_timeout):
            await self.stream.aclose()


async def dial(address: Address, settings: Settings) -> tuple[Link, Frame]:
    """Connect, upgrade, and read the self-join: the new link and its self-join frame."""
    with anyio.move_on_after(settings.open_timeout) as scope:
        stream = await open_stream(address, settings.ssl_context)
        link = Link(stream, address, settings)
        try:
            await link.handshake()
            try:
                hello = decode_frame(await link.receive())
            except Ended as ended:
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
