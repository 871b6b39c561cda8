"""Clients of the HTTP door for the transport tests: an SSE or NDJSON stream read with h11
(a close-delimited body from the native server, chunked from the ASGI servers), a long
poll, and the ``/s/<token>`` requests."""

from __future__ import annotations

import json
from typing import Any

import anyio
import anyio.abc
import h11

TIMEOUT = 5.0
SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
POLL = "application/json"


class HTTPClient:
    """One HTTP/1.1 connection driven by h11: a request, then its answer as it comes."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)
        self.status = 0
        self.headers: dict[str, str] = {}
        self._buffer = b""
        self.ended = False

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1", *, rcvbuf: int | None = None) -> HTTPClient:
        stream = await anyio.connect_tcp(host, port)
        if rcvbuf is not None:
            import socket

            sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        return cls(stream)

    async def request(self, method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        fields = [("host", "127.0.0.1"), *(headers or {}).items()]
        if body or method in ("POST", "PUT"):
            fields.append(("content-length", str(len(body))))
        data = self.conn.send(h11.Request(method=method, target=target, headers=fields)) or b""
        if body:
            data += self.conn.send(h11.Data(data=body)) or b""
        data += self.conn.send(h11.EndOfMessage()) or b""
        await self.stream.send(data)
        while True:
            event = await self._next()
            if isinstance(event, h11.Response):
                self.status = event.status_code
                self.headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                return

    async def _next(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await self.stream.receive(65536)
                except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
                    data = b""
                self.conn.receive_data(data)
                continue
            return event

    async def chunk(self) -> bytes:
        """The next piece of the body (b"" once it ended)."""
        if self.ended:
            return b""
        while True:
            event = await self._next()
            if isinstance(event, h11.Data):
                return bytes(event.data)
            if isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                self.ended = True
                return b""

    async def body(self, timeout: float = TIMEOUT) -> bytes:
        with anyio.fail_after(timeout):
            parts = []
            while chunk := await self.chunk():
                parts.append(chunk)
            if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
                self.conn.start_next_cycle()
                self.ended = False
            return b"".join(parts)

    async def aclose(self) -> None:
        await self.stream.aclose()


class StreamMember:
    """A member over an SSE or NDJSON stream: its frames as JSON values, in order."""

    def __init__(self, client: HTTPClient, accept: str) -> None:
        self.client = client
        self.accept = accept
        self.token = client.headers.get("relay-session", "")
        self.events: list[tuple[str, str]] = []  # (event name, data) of SSE events beside messages
        self.comments = 0
        self._text = b""

    @classmethod
    async def open(
        cls,
        port: int,
        path: str,
        accept: str = SSE,
        headers: dict[str, str] | None = None,
        *,
        rcvbuf: int | None = None,
    ) -> StreamMember:
        client = await HTTPClient.connect(port, rcvbuf=rcvbuf)
        await client.request("GET", path, {"accept": accept, **(headers or {})})
        return cls(client, accept)

    async def frame(self, timeout: float = TIMEOUT) -> Any:
        """The next frame the member got (JSON), skipping keepalives and named events."""
        with anyio.fail_after(timeout):
            while True:
                item = self._take()
                if item is not None:
                    return json.loads(item)
                chunk = await self.client.chunk()
                if not chunk:
                    raise EOFError("the stream ended")
                self._text += chunk

    async def ended(self, timeout: float = TIMEOUT) -> list[Any]:
        """Read to the end of the stream: the frames still to come."""
        frames = []
        with anyio.fail_after(timeout):
            while True:
                try:
                    frames.append(await self.frame(timeout))
                except EOFError:
                    return frames

    def _take(self) -> bytes | None:
        if self.accept == NDJSON:
            while b"\n" in self._text:
                line, self._text = self._text.split(b"\n", 1)
                if line.strip():
                    return line
                self.comments += 1
            return None
        while b"\n\n" in self._text:
            block, self._text = self._text.split(b"\n\n", 1)
            name, data = "message", []
            for line in block.decode().split("\n"):
                if line.startswith(":"):
                    self.comments += 1
                elif line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
            if not data:
                continue
            if name == "message":
                return "\n".join(data).encode()
            self.events.append((name, "\n".join(data)))
        return None

    async def aclose(self) -> None:
        await self.client.aclose()


async def session_request(
    port: int, method: str, token: str, body: bytes = b"", query: str = "", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """``METHOD /s/<token>[?query]`` on a fresh connection: (status, headers, body)."""
    client = await HTTPClient.connect(port)
    try:
        target = f"/s/{token}" + (f"?{query}" if query else "")
        await client.request(method, target, {"content-type": "application/json", **(headers or {})}, body)
        return client.status, client.headers, await client.body(30.0)
    finally:
        await client.aclose()


async def send_as(port: int, token: str, message: Any, query: str = "") -> int:
    """POST ``message`` (JSON) as the member of ``token``; the status."""
    return (await session_request(port, "POST", token, json.dumps(message).encode(), query))[0]


async def poll_open(port: int, path: str) -> tuple[str, list[Any]]:
    """Join over long-poll: the token and the first frames."""
    client = await HTTPClient.connect(port)
    try:
        await client.request("GET", path, {"accept": POLL})
        assert client.status == 200, (client.status, await client.body())
        return client.headers["relay-session"], json.loads(await client.body())
    finally:
        await client.aclose()


async def poll(port: int, token: str) -> tuple[int, Any]:
    """``GET /s/<token>``: (status, the frames or the error text)."""
    status, _, body = await session_request(port, "GET", token)
    return status, json.loads(body) if status == 200 else body.decode()
