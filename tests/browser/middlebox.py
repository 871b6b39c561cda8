"""A proxy that breaks what some networks break, in front of a relay, for the browser tests.

Corporate proxies, antivirus and middleboxes refuse WebSocket upgrades, or let them hang,
and some buffer streamed answers until they end. :func:`middlebox` listens on a free
loopback port and forwards each connection's first request to the relay, but:

- ``upgrades="refuse"``: a request with ``Upgrade: websocket`` gets ``403`` and the
  connection is closed; ``upgrades="hold"``: it is never answered (the connection stays
  open until the browser gives up);
- ``streams="buffer"``: the answer to a request that accepts ``text/event-stream`` is held
  back until the relay ends it, as a buffering proxy does.

Plain requests go through with ``Connection: close`` (one request per connection, so each
one is seen here). Every request is recorded (:attr:`Middlebox.requests`), so a test can
tell which way a client went. Each connection is a task of the proxy's task group, all
cancelled when the block ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

HEAD_LIMIT = 65536
REFUSAL = (
    b"HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 23\r\n"
    b"connection: close\r\n\r\nWebSockets are blocked."
)
_CONNECTION = ("connection", "keep-alive", "proxy-connection")


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]

    @property
    def upgrade(self) -> bool:
        return self.headers.get("upgrade", "").lower() == "websocket"

    @property
    def stream(self) -> bool:
        return "text/event-stream" in self.headers.get("accept", "")


@dataclass
class Middlebox:
    relay_port: int
    upgrades: str | None = None
    streams: str | None = None
    port: int = 0
    requests: list[Request] = field(default_factory=list)

    def seen(self, *, upgrade: bool | None = None, stream: bool | None = None, path: str = "") -> list[Request]:
        """The requests so far with this path prefix (and kind, when given)."""
        return [
            r
            for r in self.requests
            if r.target.startswith(path)
            and (upgrade is None or r.upgrade == upgrade)
            and (stream is None or r.stream == stream)
        ]

    async def handle(self, client: anyio.abc.SocketStream) -> None:
        async with client:
            # A browser that gives up, or a relay that ends a stream, is no failure of the proxy.
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError, ValueError):
                await self._forward(client)

    async def _forward(self, client: anyio.abc.SocketStream) -> None:
        head, rest = await _read_head(client)
        request = _parse(head)
        self.requests.append(request)
        if request.upgrade and self.upgrades == "refuse":
            await client.send(REFUSAL)
            return
        if request.upgrade and self.upgrades == "hold":
            await _drain(client)  # until the browser gives up
            return
        if not request.upgrade:
            head = _one_request(head)
        hold = request.stream and self.streams == "buffer"
        async with await anyio.connect_tcp("127.0.0.1", self.relay_port) as upstream:
            await upstream.send(head + b"\r\n\r\n" + rest)
            async with anyio.create_task_group() as tg:
                tg.start_soon(_pipe, client, upstream, False, tg.cancel_scope)
                tg.start_soon(_pipe, upstream, client, hold, tg.cancel_scope)


async def _read_head(stream: anyio.abc.ByteStream) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > HEAD_LIMIT:
            raise ValueError("request head too large")
        data += await stream.receive(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _parse(head: bytes) -> Request:
    line, *fields = head.decode("latin-1").split("\r\n")
    method, target, _ = line.split(" ", 2)
    headers: dict[str, str] = {}
    for item in fields:
        name, _, value = item.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Request(method, target, headers)


def _one_request(head: bytes) -> bytes:
    """``head`` with ``Connection: close`` instead of any connection header."""
    line, *fields = head.split(b"\r\n")
    kept = [item for item in fields if item.partition(b":")[0].strip().lower().decode("latin-1") not in _CONNECTION]
    return b"\r\n".join([line, *kept, b"Connection: close"])


async def _drain(stream: anyio.abc.ByteStream) -> None:
    with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
        while await stream.receive(65536):
            pass


async def _pipe(source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream, hold: bool, scope: anyio.CancelScope) -> None:
    """Copy ``source`` to ``sink`` (all at once at the end, when ``hold``); when either side
    ends, the whole connection does."""
    held: list[bytes] = []
    with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        while True:
            data = await source.receive(65536)
            if hold:
                held.append(data)
            else:
                await sink.send(data)
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        if held:
            await sink.send(b"".join(held))
    scope.cancel()


@asynccontextmanager
async def middlebox(
    relay_port: int, *, upgrades: str | None = None, streams: str | None = None
) -> AsyncIterator[Middlebox]:
    """A :class:`Middlebox` in front of the relay on ``relay_port``, for the block."""
    box = Middlebox(relay_port, upgrades, streams)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    box.port = listener.extra(SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, box.handle)
        try:
            yield box
        finally:
            tg.cancel_scope.cancel()
