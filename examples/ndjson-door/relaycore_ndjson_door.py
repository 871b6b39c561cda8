"""A relaycore door: channel members over a raw TCP port, one JSON frame per line.

Everything the relay decides (options, keys, presence, limits, slow consumers, keepalives,
closes) is the core's: each client is a :class:`relaycore.Stream` in the
:data:`relaycore.NDJSON` wire form. This module only moves lines. See README.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from relaycore import NDJSON, HTTPError, Hub, Outbox, Stream
from relaycore.texts import CLOSE_GOING_AWAY, SHUTTING_DOWN

__all__ = ["NDJSONDoor"]

SETTINGS = {"host", "port"}


class NDJSONDoor:
    """The door (``[doors.ndjson] host, port``): a TCP listener and its clients."""

    def __init__(self, hub: Hub, settings: Mapping[str, Any]) -> None:
        unknown = set(settings) - SETTINGS
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)} (known: {sorted(SETTINGS)})")
        self.hub = hub
        self.host = str(settings.get("host", "127.0.0.1"))
        self.port = int(settings.get("port", 8788))
        #: The address listened on, once listening.
        self.address: tuple[str, int] | None = None
        self._clients: set[_Client] = set()

    # -- the Door contract: other doors hand us our outboxes; we hand them theirs -----------

    def wake(self, outboxes: list[Outbox]) -> None:
        for outbox in outboxes:
            outbox.peer.wake()

    def flush(self) -> None:
        """After every call into the core: write ours, wake the other doors' members."""
        self.wake(self.hub.wake(self))

    # -- serving ------------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[Any] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
        self.address = listener.extra(anyio.abc.SocketAttribute.local_address)  # type: ignore[assignment]
        task_status.started(self.address)
        async with listener:
            await listener.serve(self._serve)

    async def shutdown(self) -> None:
        for client in list(self._clients):
            client.stream.close(CLOSE_GOING_AWAY, SHUTTING_DOWN)
        self.flush()
        with anyio.move_on_after(self.hub.config.server.shutdown_grace):
            while self._clients:
                await anyio.sleep(0.02)

    async def _serve(self, sock: anyio.abc.SocketStream) -> None:
        address = sock.extra(anyio.abc.SocketAttribute.remote_address)
        client = _Client(self, sock, str(address[0]) if isinstance(address, tuple) else "unix")
        self._clients.add(client)
        try:
            await client.serve()
        finally:
            self._clients.discard(client)
            client.stream.lost()
            self.flush()
            await sock.aclose()


class _Client:
    """One TCP client: its :class:`relaycore.Stream`, its reader and its one writer."""

    def __init__(self, door: NDJSONDoor, sock: anyio.abc.SocketStream, address: str) -> None:
        self.door = door
        self.sock = sock
        self.stream = Stream(door.hub, NDJSON, door, client=address, peer=self)
        self._event = anyio.Event()

    def wake(self) -> None:
        self._event.set()

    async def serve(self) -> None:
        hub, stream = self.door.hub, self.stream
        lines = BufferedByteReceiveStream(self.sock)
        limits = hub.config.limits
        try:
            with anyio.fail_after(limits.handshake_timeout):
                first = await lines.receive_until(b"\n", 4096)
        except (TimeoutError, anyio.IncompleteRead, anyio.DelimiterNotFound, anyio.EndOfStream):
            return
        channel, _, query = first.decode(errors="replace").strip().partition("?")
        try:
            stream.join(channel.removeprefix("/c/"), query)
        except HTTPError as exc:
            await self._refuse(exc.status, exc.message)
            return
        self.door.flush()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._write, tg.cancel_scope)
            tg.start_soon(self._keepalive, tg.cancel_scope)
            await self._read(lines, limits.max_message_bytes)
            tg.cancel_scope.cancel()

    async def _refuse(self, status: int, message: str) -> None:
        await self.sock.send(refusal_line(status, message))

    async def _read(self, lines: BufferedByteReceiveStream, limit: int) -> None:
        stream = self.stream
        while stream.closed is None:
            try:
                line = await lines.receive_until(b"\n", limit + 2)
            except anyio.DelimiterNotFound:
                stream.session.too_big()  # a line over max_message_bytes: 1009, as a WebSocket
                self.door.flush()
                await self._finished()
                return
            except (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return
            if line.strip():
                try:
                    stream.message(line.decode())
                except UnicodeDecodeError:
                    stream.message(bytes(line))  # not text: the protocol's binary refusal
                self.door.flush()
        await self._finished()

    async def _finished(self) -> None:
        """The relay closed the member: give the writer ``close_timeout`` to get it out."""
        with anyio.move_on_after(self.door.hub.config.limits.close_timeout):
            while not self.stream.finished:
                await anyio.sleep(0.05)

    async def _write(self, scope: anyio.CancelScope) -> None:
        outbox = self.stream.outbox
        while True:
            if not outbox:
                if self.stream.closed is not None:
                    scope.cancel()
                    return
                self._event = anyio.Event()
                await self._event.wait()
                continue
            data = outbox.view()
            try:
                await self.sock.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                scope.cancel()
                return
            outbox.consume(len(data))

    async def _keepalive(self, scope: anyio.CancelScope) -> None:
        """Keepalives while open; once closed, ``close_timeout`` for the rest to go out."""
        stream, hub = self.stream, self.door.hub
        while stream.closed is None:
            await anyio.sleep(min(1.0, max(0.0, stream.deadline - hub.clock.monotonic())))
            stream.tick(hub.clock.monotonic())
            self.door.flush()
        await anyio.sleep(hub.config.limits.close_timeout)
        scope.cancel()  # a client that does not read never gets it: drop the connection


def refusal_line(status: int, message: str) -> bytes:
    """The one line a refused join gets."""
    return json.dumps({"type": "error", "status": status, "message": message}).encode() + b"\n"
