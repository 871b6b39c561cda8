"""The checker's wire: the relay's address, the raw peers of a check, its plain HTTP requests,
and the probe that gives each check its names and its transcript.

A :class:`Peer` is an anyio byte stream driving the core's
:class:`relaycore.client.ClientConnection`, which makes the upgrade, reads every message
(binary ones too) and the close, and answers pings and the relay's close. What a check must
send as it is (a malformed frame from :func:`raw_frame`, many frames at once, a close frame
glued to data) goes on the same stream with :meth:`Peer.send_raw`. Plain HTTP requests are
the core's :class:`relaycore.client.HTTPExchange`.
"""

from __future__ import annotations

import os
import secrets
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any, Literal
from urllib.parse import quote

import anyio
import anyio.abc
import msgspec

from relaycore import RelayValueError
from relaycore.client import (
    Address,
    Binary,
    ClientConnection,
    ClientEvent,
    Closed,
    HTTPExchange,
    Response,
    Text,
    client_frame,
    parse_url,
)
from relaycore.client import Refused as RefusedUpgrade
from relaycore.texts import CLOSE_ABNORMAL
from transports.client import ArgumentError, Refused

from ._registry import Failed, Settings

__all__ = ["GONE", "RETRY_PAUSE", "Base", "Frame", "Peer", "Probe", "cut", "frame_of", "raw_frame"]

READ_SIZE = 64 * 1024
#: The pause before an upgrade answered 429 is tried again.
RETRY_PAUSE = 0.25
#: How much of a frame the transcript keeps.
SHOWN_CHARS = 240
#: What a query keeps as it is: its own syntax and percent escapes (the rest is percent-encoded).
QUERY_SAFE = "=&+%:/,;@!$'()*~"
#: What a write raises once the peer went away.
GONE = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)


class Base(msgspec.Struct, frozen=True):
    """The relay's address, from the URL given on the command line."""

    address: Address
    prefix: str  # a path the relay is mounted under, without the trailing /

    @classmethod
    def parse(cls, url: str) -> Base:
        try:
            address = parse_url(url)
        except RelayValueError:
            raise ArgumentError(f"need a ws://, wss://, http:// or https:// URL, not {url!r}") from None
        return cls(address, address.path.rstrip("/"))

    async def stream(self) -> anyio.abc.ByteStream:
        host, port = self.address.host, self.address.port
        if not self.address.tls:
            return await anyio.connect_tcp(host, port)
        context = ssl.create_default_context()
        return await anyio.connect_tcp(host, port, ssl_context=context, tls_standard_compatible=False)


class Frame(msgspec.Struct, frozen=True):
    """What a peer received: a text or binary message, or the end (``close``, code 1006: none)."""

    kind: Literal["text", "binary", "close"]
    text: str = ""
    size: int = 0
    code: int | None = None
    reason: str = ""
    obj: dict[str, Any] | None = None  # a text frame holding a JSON object, decoded

    def show(self) -> str:
        if self.kind == "text":
            return cut(self.text)
        if self.kind == "binary":
            return f"[binary, {self.size} bytes]"
        return f"[close {self.code} {self.reason!r}]"


def cut(text: str) -> str:
    text = text.replace("\x1f", "\\x1f").replace("\n", "\\n")
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + f"... ({len(text)} chars)"


def frame_of(text: str) -> Frame:
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError:
        value = None
    return Frame("text", text=text, size=len(text), obj=value if isinstance(value, dict) else None)


def raw_frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame, built by hand (the malformed ones a check sends on purpose)."""
    return client_frame(opcode, payload, os.urandom(4))


async def _receive(stream: anyio.abc.ByteStream) -> bytes:
    """What the stream gives next; b"" at its end, however it ended."""
    try:
        return await stream.receive(READ_SIZE)
    except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        return b""


class Peer:
    """One raw WebSocket connection of a check, every frame logged in the probe's transcript."""

    __slots__ = ("_end", "_events", "_lock", "conn", "hello", "label", "probe", "stream", "uid")

    def __init__(self, probe: Probe, label: str, stream: anyio.abc.ByteStream, target: str) -> None:
        self.probe = probe
        self.label = label
        self.stream = stream
        # Every message, binary ones too, and what is still in flight after our close frame.
        self.conn = ClientConnection(probe.base.address.host_header, target, after_close=True)
        self._lock = anyio.Lock()
        self._events: deque[ClientEvent] = deque()
        self._end: Frame | None = None
        self.hello: dict[str, Any] = {}
        self.uid = ""

    async def _write(self, data: bytes) -> None:
        if data:
            async with self._lock:
                await self.stream.send(data)

    async def _fill(self) -> None:
        """Read until the connection has something to report (writing what it owes meanwhile)."""
        while not self._events:
            self._events.extend(self.conn.receive_data(await _receive(self.stream)))
            with suppress(*GONE):
                await self._write(self.conn.data_to_send())

    async def handshake(self) -> None:
        """Send the upgrade request; return on 101, raise :class:`Refused` on any other answer."""
        await self._write(self.conn.request())
        await self._fill()
        answer = self._events.popleft()
        if isinstance(answer, RefusedUpgrade):
            raise Refused(answer.status, answer.body.decode(errors="replace").strip())
        if isinstance(answer, Closed):
            raise Failed(f"{self.label}: {answer.reason}")

    async def send_text(self, text: str) -> None:
        self.probe.log(f"{self.label} > {cut(text)}")
        await self._write(self.conn.send_text(text))

    async def send_json(self, value: Any) -> None:
        await self.send_text(msgspec.json.encode(value).decode())

    async def send_raw(self, data: bytes, what: str, *, may_fail: bool = False) -> None:
        """Write bytes as they are (frames built elsewhere); ``may_fail``: the relay may hang up."""
        self.probe.log(f"{self.label} > {what}")
        try:
            await self._write(data)
        except GONE:
            if not may_fail:
                raise

    async def next(self) -> Frame:
        """The next whole message, or the end of the connection (and then the end again)."""
        while self._end is None:
            await self._fill()
            event = self._events.popleft()
            if isinstance(event, Text):
                return self._seen(frame_of(event.data))
            if isinstance(event, Binary):
                return self._seen(Frame("binary", size=len(event.data)))
            if isinstance(event, Closed):
                reason = event.reason or (
                    "the connection ended without a close frame" if event.code == CLOSE_ABNORMAL else ""
                )
                self._end = self._seen(Frame("close", code=event.code, reason=reason))
                with anyio.CancelScope(shield=True), suppress(*GONE):
                    await self.stream.aclose()  # the handshake is over: leave, as a client does
        return self._end

    def _seen(self, frame: Frame) -> Frame:
        self.probe.log(f"{self.label} < {frame.show()}")
        return frame

    async def read_until(self, stop: Callable[[Frame], bool], what: str, *, after: float = 0.0) -> list[Frame]:
        """Frames up to the first that satisfies ``stop`` (included), then those of ``after`` seconds.

        The end of the connection before that is a failure (unless ``stop`` accepts it)."""
        self.probe.waiting = f"{self.label}: {what}"
        frames: list[Frame] = []
        while True:
            frame = await self.next()
            frames.append(frame)
            if stop(frame):
                break
            if frame.kind == "close":
                raise Failed(f"{self.label} was closed ({frame.code} {frame.reason!r}) while waiting for {what}")
        self.probe.waiting = f"{self.label}: {after:g} s of quiet after {what}"
        with anyio.move_on_after(after):
            while after and frames[-1].kind != "close":
                frames.append(await self.next())
        return frames

    async def close(self, code: int = 1000) -> Frame:
        """Send a close frame and read until the relay's answer (or the end)."""
        self.probe.log(f"{self.label} > [close {code}]")
        await self._write(self.conn.close(code))
        return (await self.read_until(lambda frame: frame.kind == "close", "the answer to our close frame"))[-1]

    async def aclose(self) -> None:
        """Leave at once (a close frame if still open, then the TCP close); never raises."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(0.5):
            with suppress(*GONE):
                await self._write(self.conn.close(1000))  # nothing unless still open
            with suppress(*GONE):
                await self.stream.aclose()


class Probe:
    """One check's world: its fresh names, its peers, its transcript."""

    def __init__(self, settings: Settings, base: Base, name: str) -> None:
        self.settings = settings
        self.base = base
        self.name = name
        self.transcript: list[str] = []
        self.peers: list[Peer] = []
        self.markers: set[str] = set()  # the tokens of marked()
        self.waiting = "the check to start"

    def log(self, line: str) -> None:
        for key in (self.settings.join_key, self.settings.send_key):  # the relay's own keys stay private
            if key:
                line = line.replace(f"Key={quote(key, safe='')}", "Key=***")
        self.transcript.append(line)

    def token(self) -> str:
        return secrets.token_hex(4)

    def fresh(self, suffix: str = "") -> str:
        """A channel name nobody else uses: ``<prefix><check name>-<random><suffix>``."""
        return f"{self.settings.prefix}{self.name}-{self.token()}{suffix}"

    def reserved(self, suffix: str = "") -> str:
        """A fresh channel under the reserved namespace (``NS:<fresh>``)."""
        assert self.settings.namespace is not None
        return f"{self.settings.namespace}:{self.fresh(suffix)}"

    def keys(self, *, join: bool = True, send: bool = False) -> str:
        """The query for the namespace's keys given on the command line."""
        pairs = [
            ("joinKey", self.settings.join_key if join else None),
            ("sendKey", self.settings.send_key if send else None),
        ]
        return "&".join(f"{key}={quote(value, safe='')}" for key, value in pairs if value is not None)

    def target(self, channel: str, query: str = "", *, path: str = "c", raw: bool = False) -> str:
        """``<prefix>/c/<channel>?<query>``; ``raw``: the channel goes into the path unquoted."""
        where = channel if raw else quote(channel, safe="/:")
        return f"{self.base.prefix}/{path}/{where}" + (f"?{quote(query, safe=QUERY_SAFE)}" if query else "")

    def url(self, channel: str) -> str:
        """The channel's URL, for :func:`transports.client.connect`."""
        address = self.base.address
        return f"{'wss' if address.tls else 'ws'}://{address.host_header}{self.target(channel)}"

    async def open(self, target: str, label: str) -> Peer:
        """A peer upgraded on ``target`` (tried again on 429); raises :class:`Refused`."""
        while True:
            self.waiting = f"{label}: the answer to the upgrade of {target}"
            peer = Peer(self, label, await self.base.stream(), target)
            self.peers.append(peer)
            self.log(f"{label} > GET {cut(target)} (upgrade)")
            try:
                await peer.handshake()
            except Refused as refusal:
                self.log(f"{label} < HTTP {refusal.status} {cut(refusal.reason)}")
                await peer.aclose()
                if refusal.status == 429:
                    await anyio.sleep(RETRY_PAUSE)
                    continue
                raise
            self.log(f"{label} < HTTP 101")
            return peer

    async def join(self, channel: str, label: str, query: str = "", *, path: str = "c", raw: bool = False) -> Peer:
        """A member of ``channel`` whose self-join has been read (``peer.hello``, ``peer.uid``)."""
        peer = await self.open(self.target(channel, query, path=path, raw=raw), label)
        self.waiting = f"{label}: the self-join"
        first = await peer.next()
        hello = first.obj
        if hello is None or hello.get("type") != "join" or hello.get("self") is not True:
            raise Failed(f"{label}: the first frame is not a self-join: {first.show()}")
        if not isinstance(hello.get("uid"), str):
            raise Failed(f"{label}: the self-join has no uid: {first.show()}")
        peer.hello, peer.uid = hello, hello["uid"]
        return peer

    async def upgrade_status(self, target: str, label: str = "X") -> int:
        """The status of an upgrade of ``target``: 101 (then closed at once) or the refusal's."""
        try:
            peer = await self.open(target, label)
        except Refused as refusal:
            return refusal.status
        await peer.aclose()
        return 101

    async def http(
        self, method: str, target: str, body: bytes = b"", headers: Sequence[tuple[str, str]] = ()
    ) -> tuple[int, dict[str, str], bytes]:
        """A plain HTTP request on a fresh connection: status, headers (lower-case), body."""
        shown = f"{method} {cut(target)}" + (f" ({len(body)} bytes)" if body else "")
        self.log(f"HTTP > {shown}")
        self.waiting = f"the answer to {shown}"
        exchange = HTTPExchange(self.base.address.host_header, method, target, body, headers)
        stream = await self.base.stream()
        try:
            async with anyio.create_task_group() as tg:
                # Written beside the read: a relay may answer (413) without reading the body.
                tg.start_soon(_send_quietly, stream, exchange.request())
                answer = await _answer(stream, exchange, shown)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True), suppress(*GONE):
                await stream.aclose()
        self.log(f"HTTP < {answer.status} {cut(answer.body.decode(errors='replace'))}")
        return answer.status, answer.headers, answer.body

    async def aclose(self) -> None:
        for peer in self.peers:
            await peer.aclose()


async def _send_quietly(stream: anyio.abc.ByteStream, data: bytes) -> None:
    with suppress(*GONE):
        await stream.send(data)


async def _answer(stream: anyio.abc.ByteStream, exchange: HTTPExchange, shown: str) -> Response:
    while True:
        try:
            answer = exchange.receive_data(await _receive(stream))
        except RelayValueError as exc:
            raise Failed(f"{shown}: {exc}") from None
        if answer is not None:
            return answer
