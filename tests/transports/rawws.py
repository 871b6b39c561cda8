"""A raw socket WebSocket peer for the transport tests: exact bytes, malformed input.

Unlike a library client it can send anything (several frames and a close in one write,
bad opcodes, oversized lengths) and it shows exactly what the server wrote.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
from typing import Any

import anyio
import anyio.abc
from anyio.streams.tls import TLSStream

from core._frames import OP_BINARY as BINARY
from core._frames import OP_CLOSE as CLOSE
from core._frames import OP_CONTINUATION as CONTINUATION
from core._frames import OP_PING as PING
from core._frames import OP_PONG as PONG
from core._frames import OP_TEXT as TEXT
from core._frames import Frame, client_frame, close_payload, head_size, parse_head, read_head

TIMEOUT = 5.0

__all__ = [
    "BINARY",
    "CLOSE",
    "CONTINUATION",
    "PING",
    "PONG",
    "TEXT",
    "TIMEOUT",
    "RawPeer",
    "close_frame",
    "frame",
    "http",
    "post",
    "text",
    "upgrade_request",
    "upgrade_status",
]


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True) -> bytes:
    """One client frame (:func:`core._frames.client_frame`), masked with a random key as RFC
    6455 asks of clients (``mask=False``: unmasked, which a server must refuse)."""
    return client_frame(opcode, payload, fin=fin, rsv=rsv, mask=os.urandom(4) if mask else None)


def text(data: str | bytes) -> bytes:
    return frame(TEXT, data.encode() if isinstance(data, str) else data)


def close_frame(code: int = 1000, reason: str = "") -> bytes:
    return frame(CLOSE, close_payload(code, reason))


def upgrade_request(path: str, headers: str = "") -> bytes:
    """A valid WebSocket upgrade request for ``path`` with a fresh key, as bytes to write on a
    raw socket (``headers``: more header lines, each ending in CRLF)."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
    ).encode()


class _SmallWindowSocket(anyio.abc.ByteStream):
    """A plain non-blocking socket with a tiny receive buffer, as a stream.

    The buffer size must be set before connecting to take full effect, which anyio's
    ``connect_tcp`` does not allow; this is enough of a stream for :class:`RawPeer` and
    for anyio's TLS wrapper.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    async def connect(cls, host: str, port: int, rcvbuf: int) -> _SmallWindowSocket:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            sock.connect((host, port))
        except BlockingIOError:
            await anyio.wait_writable(sock)
        return cls(sock)

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            await anyio.wait_writable(self.sock)
            view = view[self.sock.send(view) :]

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while True:
            await anyio.wait_readable(self.sock)
            try:
                data = self.sock.recv(max_bytes)
            except BlockingIOError:
                continue
            if not data:
                raise anyio.EndOfStream
            return data

    async def send_eof(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    async def aclose(self) -> None:
        anyio.notify_closing(self.sock)
        self.sock.close()


class RawPeer:
    """A TCP connection to the relay, read and written byte by byte."""

    def __init__(self, stream: anyio.abc.ByteStream | _SmallWindowSocket) -> None:
        self.stream = stream
        self.buffer = b""

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1", *, rcvbuf: int | None = None) -> RawPeer:
        """Connect; ``rcvbuf`` shrinks the receive buffer (a reader that falls behind fast)."""
        if rcvbuf is not None:
            return cls(await _SmallWindowSocket.connect(host, port, rcvbuf))
        return cls(await anyio.connect_tcp(host, port))

    @classmethod
    async def connect_tls(
        cls, port: int, context: ssl.SSLContext, host: str = "127.0.0.1", *, rcvbuf: int | None = None
    ) -> RawPeer:
        """Connect over TLS (the handshake done); ``rcvbuf`` as in :meth:`connect`."""
        if rcvbuf is None:
            return cls(
                await anyio.connect_tcp(host, port, tls=True, ssl_context=context, tls_standard_compatible=False)
            )
        transport = await _SmallWindowSocket.connect(host, port, rcvbuf)
        return cls(await TLSStream.wrap(transport, hostname=host, ssl_context=context, standard_compatible=False))

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def _fill(self) -> bool:
        try:
            chunk = await self.stream.receive(65536)
        except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
            return False
        self.buffer += chunk
        return True

    async def read_until(self, marker: bytes, timeout: float = TIMEOUT) -> bytes:
        with anyio.fail_after(timeout):
            while marker not in self.buffer:
                if not await self._fill():
                    raise EOFError(f"closed before {marker!r}; got {self.buffer!r}")
        head, _, self.buffer = self.buffer.partition(marker)
        return head + marker

    async def read_exactly(self, n: int, timeout: float = TIMEOUT) -> bytes:
        with anyio.fail_after(timeout):
            while len(self.buffer) < n:
                if not await self._fill():
                    raise EOFError(f"closed before {n} bytes; got {self.buffer!r}")
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    async def read_to_eof(self, timeout: float = TIMEOUT) -> bytes:
        with anyio.fail_after(timeout):
            while await self._fill():
                pass
        data, self.buffer = self.buffer, b""
        return data

    async def response(self, timeout: float = TIMEOUT) -> tuple[int, dict[str, str], bytes]:
        """Read one HTTP response (Content-Length bodies only)."""
        status, headers = parse_head(await self.read_until(b"\r\n\r\n", timeout))
        body = await self.read_exactly(int(headers.get("content-length", "0")), timeout)
        return status, headers, body

    async def upgrade(self, path: str, extra: bytes = b"", headers: str = "") -> tuple[int, dict[str, str]]:
        """Send an upgrade request (plus ``extra`` bytes in the same write); read the response head."""
        await self.send(upgrade_request(path, headers) + extra)
        status, fields = parse_head(await self.read_until(b"\r\n\r\n"))
        if status != 101:
            await self.read_exactly(int(fields.get("content-length", "0")))
        return status, fields

    async def read_frame(self, timeout: float = TIMEOUT) -> tuple[int, bytes]:
        """Read one server frame: (opcode, payload). Server frames must not be masked."""
        head = await self.read_exactly(2, timeout)
        head += await self.read_exactly(head_size(head[1]) - 2, timeout)
        _, opcode, n, _ = read_head(head)
        return opcode, await self.read_exactly(n, timeout)

    async def read_json(self, timeout: float = TIMEOUT) -> Any:
        opcode, payload = await self.read_frame(timeout)
        assert opcode == TEXT, f"expected a text frame, got opcode {opcode}: {payload!r}"
        return json.loads(payload)

    async def read_close(self, timeout: float = TIMEOUT) -> int | None:
        """Skip data frames until a close frame; return its code (None if none)."""
        while True:
            opcode, payload = await self.read_frame(timeout)
            if opcode == CLOSE:
                return Frame(True, opcode, payload).close_code


async def upgrade_status(port: int, path: str, headers: str = "") -> int:
    """The HTTP status of an upgrade to ``path``, from a raw socket closed right after."""
    peer = await RawPeer.connect(port)
    try:
        status, _ = await peer.upgrade(path, headers=headers)
        return status
    finally:
        await peer.aclose()


async def http(port: int, request: bytes, host: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    """Send one raw HTTP request on a fresh connection; return (status, headers, body)."""
    peer = await RawPeer.connect(port, host)
    try:
        await peer.send(request)
        return await peer.response()
    finally:
        await peer.aclose()


def post(path: str, body: bytes, headers: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{headers}\r\n"
    ).encode() + body
