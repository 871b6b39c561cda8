"""The client's entry points: :func:`connect` (a channel for a block), :func:`push` (send and
close) and :func:`http_push` (one HTTP request, over the core's :class:`~relaycore.client.HTTPExchange`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ssl import SSLContext
from typing import Any
from urllib.parse import quote

import anyio
import anyio.abc
import msgspec

from relaycore import RelayValueError
from relaycore.client import HTTPExchange, Response

from ._channel import Channel, membership
from ._errors import ArgumentError, ProtocolError, Refused
from ._link import Settings, channel_address, open_stream, read, relay_address, tls_context

__all__ = ["connect", "http_push", "push"]


def _flag(value: bool | None) -> str | None:
    return None if value is None else ("true" if value else "false")


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
    address, name = channel_address(url, options)
    settings = Settings(
        reconnect=reconnect,
        reconnect_max_delay=reconnect_max_delay,
        max_queue=max_queue,
        max_message_bytes=max_message_bytes,
        ssl_context=tls_context(address, ssl),
        open_timeout=open_timeout,
        close_timeout=close_timeout,
    )
    async with membership(address, name, settings) as channel:
        yield channel


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
    address = relay_address(base_url, "http_push()")
    target = address.path.rstrip("/") + "/push/" + quote(channel_name, safe="/:")
    exchange = HTTPExchange(address.host_header, "POST", target, msgspec.json.encode(value), [("x-send-key", send_key)])
    with anyio.move_on_after(timeout) as scope:
        stream = await open_stream(address, tls_context(address, ssl))
        try:
            await stream.send(exchange.request())
            answer = await _response(stream, exchange)
        finally:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
    if scope.cancelled_caught:
        raise TimeoutError(f"no answer from {address.host}:{address.port} within {timeout} s")
    try:
        document = msgspec.json.decode(answer.body)
    except msgspec.DecodeError:
        document = None
    if answer.status != 200:
        error = document.get("error") if isinstance(document, dict) else None
        raise Refused(answer.status, error if isinstance(error, str) else answer.body.decode(errors="replace").strip())
    recipients = document.get("recipients") if isinstance(document, dict) else None
    if not isinstance(recipients, int):
        raise ProtocolError(f"a push answer without recipients: {answer.body[:200]!r}")
    return recipients


async def _response(stream: anyio.abc.ByteStream, exchange: HTTPExchange) -> Response:
    """The answer on ``stream``; a relay that does not answer HTTP is a :class:`ProtocolError`."""
    while True:
        try:
            answer = exchange.receive_data(await read(stream))
        except RelayValueError as exc:
            raise ProtocolError(str(exc)) from None
        if answer is not None:
            return answer
