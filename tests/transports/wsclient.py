"""Real WebSocket clients for the transport tests, one per anyio backend.

On asyncio the tests speak through python-websockets, on trio through trio-websocket:
two independent client implementations, behind one small interface.
"""

from __future__ import annotations

import json
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import sniffio

TIMEOUT = 5.0


class Closed(Exception):
    """The server closed the WebSocket; ``code`` is its close code (None if none came)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"closed with {code} {reason!r}")
        self.code = code
        self.reason = reason


class Rejected(Exception):
    """The handshake was refused with an HTTP status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"handshake refused with HTTP {status}")
        self.status = status


class Client(Protocol):
    async def send(self, data: str | bytes) -> None: ...
    async def recv(self, timeout: float = TIMEOUT) -> str | bytes: ...
    async def close(self, code: int = 1000) -> None: ...


async def recv_json(client: Client, timeout: float = TIMEOUT) -> Any:
    """The next frame, decoded from JSON (it must be a text frame)."""
    data = await client.recv(timeout)
    assert isinstance(data, str), f"expected a text frame, got {data!r}"
    return json.loads(data)


async def join(connect: Any, path: str) -> tuple[Client, dict[str, Any]]:
    """Join ``path`` through ``connect``: the member, and its self-join frame."""
    client: Client = await connect(path)
    hello = await recv_json(client)
    assert hello["type"] == "join" and hello["self"] is True, f"not a self-join: {hello}"
    return client, hello


async def joined(connect: Any, path: str) -> Client:
    """The member of :func:`join` alone."""
    return (await join(connect, path))[0]


async def join_all(connect: Any, *paths: str) -> list[Client]:
    """Connect one member per path, in order, reading every join frame that meanwhile
    arrives: each member's self-join, and the notices of later joins to earlier members."""
    return await join_across(*((connect, path) for path in paths))


async def join_across(*joiners: tuple[Any, str]) -> list[Client]:
    """:func:`join_all` with a ``connect`` of its own for each path (a node of a cluster each)."""
    joined: list[Client] = []
    for connect, path in joiners:
        member = await connect(path)
        await recv_json(member)
        for earlier in joined:
            await recv_json(earlier)
        joined.append(member)
    return joined


async def expect_close(client: Client, timeout: float = TIMEOUT) -> int | None:
    """Read until the server closes; return its close code."""
    with anyio.fail_after(timeout):
        while True:
            try:
                await client.recv(timeout)
            except Closed as exc:
                return exc.code


#: The answers a member's probe may get: a uid nobody has, or no right to send at all.
PROBE_ANSWERS = ("User NOUSER not found.", "Sending requires a valid sendKey.")


async def expect_silence(client: Client, *, after: tuple[Client, str] | None = None) -> None:
    """Assert that nothing reached ``client`` so far, with a marker instead of a quiet window
    (a window passes when a frame is merely late; a marker's answer must be the next frame).

    By default ``client`` probes itself: a direct message to a uid nobody has, whose error
    comes back to it alone, behind whatever the relay queued for it before. ``after=(sender,
    uid)``, with ``uid`` the client's: the ``sender`` sends the client a direct message, which
    must be the next frame; across cluster nodes, that is what orders the marker behind the
    sender's earlier messages.
    """
    if after is None:
        await client.send('\x1fNOUSER\x1f"probe"')
        frame = await recv_json(client)
        assert frame.get("type") == "error" and frame.get("message") in PROBE_ANSWERS, f"unexpected frame {frame}"
        return
    sender, uid = after
    token = uuid.uuid4().hex
    await sender.send(f'\x1f{uid}\x1f{{"marker":"{token}"}}')
    frame = await recv_json(client)
    assert frame.get("message") == {"marker": token}, f"unexpected frame {frame}"


@dataclass
class _LibraryClient:
    """A library's WebSocket connection as a :class:`Client`: its three methods, the
    exception it raises once the connection is closed, and how that says the close code."""

    send: Callable[[str | bytes], Awaitable[None]]
    receive: Callable[[], Awaitable[str | bytes]]
    close_with: Callable[[int], Awaitable[None]]
    ended: type[Exception]
    closed: Callable[[Any], Closed]

    async def recv(self, timeout: float = TIMEOUT) -> str | bytes:
        with anyio.fail_after(timeout):
            try:
                return await self.receive()
            except self.ended as exc:
                raise self.closed(exc) from None

    async def close(self, code: int = 1000) -> None:
        await self.close_with(code)


def _websockets_closed(exc: Any) -> Closed:
    rcvd = exc.rcvd
    return Closed(rcvd.code if rcvd else None, rcvd.reason if rcvd else "")


def _trio_websocket_closed(exc: Any) -> Closed:
    return Closed(exc.reason.code, exc.reason.reason or "")


@asynccontextmanager
async def clients(port: int, host: str = "127.0.0.1", *, tls: ssl.SSLContext | None = None) -> AsyncIterator[Any]:
    """Yield ``connect(path) -> Client``; every client is closed when the block ends.

    With ``tls`` the clients connect with ``wss://`` and that client-side context.
    """
    async with AsyncExitStack() as stack:
        shown = f"[{host}]" if ":" in host else host

        async def connect(path: str) -> Client:
            url = f"{'wss' if tls else 'ws'}://{shown}:{port}{path}"
            if sniffio.current_async_library() == "trio":
                import trio_websocket

                try:
                    conn = await stack.enter_async_context(
                        trio_websocket.open_websocket_url(url, ssl_context=tls, max_message_size=64 * 1024 * 1024)
                    )
                except trio_websocket.ConnectionRejected as exc:
                    raise Rejected(exc.status_code) from None
                ended = trio_websocket.ConnectionClosed
                return _LibraryClient(conn.send_message, conn.get_message, conn.aclose, ended, _trio_websocket_closed)
            import websockets

            try:
                conn = await websockets.connect(
                    url, ssl=tls, compression=None, max_size=None, max_queue=None, ping_interval=None
                )
            except websockets.InvalidStatus as exc:
                raise Rejected(exc.response.status_code) from None
            stack.push_async_callback(conn.close)
            return _LibraryClient(conn.send, conn.recv, conn.close, websockets.ConnectionClosed, _websockets_closed)

        yield connect
