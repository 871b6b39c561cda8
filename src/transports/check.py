"""``relaycore check URL``: a conformance checker for any relay that claims the itty-sockets protocol.

Theory of operation. A *check* is a small coroutine registered under a name that starts with
the section of the protocol contract it tests (``2.echo``, ``3.1.envelope-no-type``,
``8.message-size-1009``: the numbering of the shared contract, PROTOCOL.md; docs/check.md maps it
to the sections of docs/protocol.md). The runner gives every
check a fresh :class:`Probe` (random channel names of its own, a transcript of every frame sent
and seen, a deadline of ``--timeout`` seconds) and runs the checks one after another. A check
passes by returning a one-line detail, fails by raising :class:`Failed`, and skips by raising
:class:`Skipped`; a timeout, a refused upgrade or a broken connection is a failure that says what
the check was waiting for. The rule each check holds the relay to is written in its docstring.

Most checks need the wire as it is: byte-identical envelopes, keys that must be absent, close
codes, refused upgrades, binary and malformed frames. They talk through :class:`Peer`, a raw
WebSocket client on anyio and wsproto that hides nothing (h11 for the plain HTTP requests).
The checks about what an application sees (uids, ordering, keys that vanish) use
:mod:`transports.client`, as an application would.

Expectations that something does NOT arrive are made fast with a marker: after the action,
a member sends a message carrying a fresh token, and what a peer sees before that token (and
within a short grace after it) is what the relay sent it because of the action. A relay that
does not conform then fails in a fraction of a second instead of running into the timeout.

Upgrades answered with 429 (the relay's connection rate per address) are tried again after a
pause, within the check's deadline, so that a relay with its default limits can be checked.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import secrets
import ssl
import string
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, suppress
from typing import Any, Literal
from urllib.parse import quote, urlsplit

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
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from relaycore.client import client_frame
from relaycore.texts import BINARY_UNSUPPORTED, INVALID_JSON, INVALID_JSON_BODY, SEND_KEY_REQUIRED, user_not_found
from transports.client import ArgumentError, Channel, ClientError, Refused, connect
from transports.client import Error as ErrorEvent
from transports.client import Message as MessageEvent
from transports.logs import fail

__all__ = [
    "CHECKS",
    "Check",
    "Failed",
    "Result",
    "Settings",
    "Skipped",
    "add_arguments",
    "format_json",
    "format_table",
    "main",
    "run",
    "run_checks",
]

READ_SIZE = 64 * 1024
MAX_BODY = 64 * 1024
#: How long a peer keeps listening after a marker, for a frame that should not come.
GRACE = 0.15
#: The pause before an upgrade answered 429 is tried again.
RETRY_PAUSE = 0.25
#: How much of a frame the transcript keeps, and how many lines of it a failure shows.
SHOWN_CHARS = 240
SHOWN_LINES = 40
UID = re.compile(r"[A-Za-z0-9]{6}")
RATE_WARNING = re.compile(r"Rate limit exceeded \(warning (\d+) of (\d+)\)\.")
NOT_SENDING = SEND_KEY_REQUIRED
#: What a query keeps as it is: its own syntax and percent escapes (the rest is percent-encoded).
QUERY_SAFE = "=&+%:/,;@!$'()*~"
#: The closes this module treats as errors of a write (the peer went away).
_GONE = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError, LocalProtocolError)


# -- results and settings --------------------------------------------------------------------


class Failed(Exception):
    """The relay did not do what the protocol says; the message is the one-line detail."""


class Skipped(Exception):
    """The check cannot run here (a missing option, an optional endpoint, --skip-config)."""


class Refusal(Exception):
    """An upgrade was answered with something other than 101."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status} {body}".strip())
        self.status = status
        self.body = body


class Settings(msgspec.Struct, kw_only=True):
    """What to check and how: the command line's options."""

    url: str
    namespace: str | None = None
    join_key: str | None = None
    send_key: str | None = None
    skip_config: bool = False
    only: Sequence[str] = ()
    timeout: float = 5.0
    prefix: str = "check-"


class Result(msgspec.Struct, kw_only=True):
    """One row of the report. ``frames`` is the transcript, kept for failures only."""

    name: str
    status: Literal["PASS", "FAIL", "SKIP"]
    detail: str
    seconds: float
    tags: list[str]
    frames: list[str] = msgspec.field(default_factory=list)


class Check(msgspec.Struct, frozen=True):
    """A registered check: its name, its coroutine, what it needs to run."""

    name: str
    run: Callable[[Probe], Awaitable[str]]
    tags: tuple[str, ...]  # "decision" (PROTOCOL decides), "config" (default limits), "optional"
    needs: tuple[str, ...]  # among "namespace", "join_key", "send_key"
    summary: str


CHECKS: list[Check] = []


def _section(item: Check) -> tuple[int, ...]:
    """``3.1.envelope-fields`` -> (3, 1): the section numbers a check's name starts with."""
    return tuple(int(part) for part in item.name.split(".") if part.isdigit())


def check(
    name: str, *, tags: Iterable[str] = (), needs: Iterable[str] = ()
) -> Callable[[Callable[[Probe], Awaitable[str]]], Callable[[Probe], Awaitable[str]]]:
    """Register the decorated coroutine as the check ``name``."""

    def register(run: Callable[[Probe], Awaitable[str]]) -> Callable[[Probe], Awaitable[str]]:
        summary = (run.__doc__ or "").strip().split("\n\n")[0].replace("``", "").replace("**", "")
        CHECKS.append(Check(name, run, tuple(tags), tuple(needs), " ".join(summary.split())))
        CHECKS.sort(key=_section)  # stable: in a section, the order of the code
        return run

    return register


# -- the wire --------------------------------------------------------------------------------


class Base(msgspec.Struct, frozen=True):
    """The relay's address, from the URL given on the command line."""

    tls: bool
    host: str
    port: int
    host_header: str
    prefix: str  # a path the relay is mounted under, without the trailing /

    @classmethod
    def parse(cls, url: str) -> Base:
        parts = urlsplit(url)
        tls = {"ws": False, "http": False, "wss": True, "https": True}.get(parts.scheme.lower())
        if tls is None or not parts.hostname:
            raise ArgumentError(f"need a ws://, wss://, http:// or https:// URL, not {url!r}")
        port = parts.port or (443 if tls else 80)
        shown = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        header = shown if parts.port in (None, 443 if tls else 80) else f"{shown}:{port}"
        return cls(tls, parts.hostname, port, header, parts.path.rstrip("/"))

    async def stream(self) -> anyio.abc.ByteStream:
        if not self.tls:
            return await anyio.connect_tcp(self.host, self.port)
        context = ssl.create_default_context()
        return await anyio.connect_tcp(self.host, self.port, ssl_context=context, tls_standard_compatible=False)


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
            return _cut(self.text)
        if self.kind == "binary":
            return f"[binary, {self.size} bytes]"
        return f"[close {self.code} {self.reason!r}]"


def _cut(text: str) -> str:
    text = text.replace("\x1f", "\\x1f").replace("\n", "\\n")
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + f"... ({len(text)} chars)"


def _frame_of(text: str) -> Frame:
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError:
        value = None
    return Frame("text", text=text, size=len(text), obj=value if isinstance(value, dict) else None)


def raw_frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame, built by hand (wsproto refuses to send the malformed ones)."""
    return client_frame(opcode, payload, os.urandom(4))


class Peer:
    """One raw WebSocket connection of a check, every frame logged in the probe's transcript."""

    __slots__ = ("_end", "_lock", "_parts", "hello", "label", "probe", "stream", "uid", "ws")

    def __init__(self, probe: Probe, label: str, stream: anyio.abc.ByteStream) -> None:
        self.probe = probe
        self.label = label
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self._lock = anyio.Lock()
        self._parts: list[str | bytes] = []
        self._end: Frame | None = None
        self.hello: dict[str, Any] = {}
        self.uid = ""

    async def _write(self, data: bytes) -> None:
        async with self._lock:
            await self.stream.send(data)

    async def _read(self) -> bytes:
        try:
            return await self.stream.receive(READ_SIZE)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return b""

    async def handshake(self, target: str) -> None:
        """Send the upgrade request; return on 101, raise :class:`Refusal` on any other answer."""
        await self._write(self.ws.send(Request(host=self.probe.base.host_header, target=target)))
        status, body = 0, bytearray()
        while True:
            for event in self.ws.events():
                if isinstance(event, AcceptConnection):
                    return
                if isinstance(event, RejectConnection):
                    status = event.status_code
                    if not event.has_body:
                        raise Refusal(status, "")
                elif isinstance(event, RejectData):
                    body += event.data[: MAX_BODY - len(body)]
                    if event.body_finished:
                        raise Refusal(status, body.decode(errors="replace").strip())
            data = await self._read()
            if not data:
                if status:
                    raise Refusal(status, body.decode(errors="replace").strip())
                raise Failed(f"{self.label}: the relay closed the connection without answering the upgrade")
            try:
                self.ws.receive_data(data)
            except RemoteProtocolError as exc:
                raise Failed(f"{self.label}: an invalid answer to the upgrade: {exc}") from None

    async def send_text(self, text: str) -> None:
        self.probe.log(f"{self.label} > {_cut(text)}")
        await self._write(self.ws.send(TextMessage(data=text)))

    async def send_json(self, value: Any) -> None:
        await self.send_text(msgspec.json.encode(value).decode())

    async def send_raw(self, data: bytes, what: str, *, may_fail: bool = False) -> None:
        """Write bytes as they are (frames built elsewhere); ``may_fail``: the relay may hang up."""
        self.probe.log(f"{self.label} > {what}")
        try:
            await self._write(data)
        except _GONE:
            if not may_fail:
                raise

    async def next(self) -> Frame:
        """The next whole message, or the end of the connection (and then the end again)."""
        while self._end is None:
            for event in self.ws.events():
                if isinstance(event, Message):
                    self._parts.append(event.data)
                    if event.message_finished:
                        return self._message(isinstance(event, TextMessage))
                elif isinstance(event, Ping):
                    with suppress(*_GONE):
                        await self._write(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    if self.ws.state is ConnectionState.REMOTE_CLOSING:
                        with suppress(*_GONE):
                            await self._write(self.ws.send(event.response()))
                    self._ended(Frame("close", code=event.code, reason=event.reason or ""))
                    with anyio.CancelScope(shield=True), suppress(*_GONE):
                        await self.stream.aclose()  # the handshake is over: leave, as a client does
                    break
            if self._end is None:
                data = await self._read()
                if not data:
                    self._ended(Frame("close", code=1006, reason="the connection ended without a close frame"))
                else:
                    self.ws.receive_data(data)
        return self._end

    def _message(self, text: bool) -> Frame:
        parts, self._parts = self._parts, []
        if text:
            frame = _frame_of("".join(part for part in parts if isinstance(part, str)))
        else:
            frame = Frame("binary", size=sum(len(part) for part in parts))
        self.probe.log(f"{self.label} < {frame.show()}")
        return frame

    def _ended(self, frame: Frame) -> None:
        self._end = frame
        self.probe.log(f"{self.label} < {frame.show()}")

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
        await self._write(self.ws.send(CloseConnection(code=code)))
        return (await self.read_until(lambda frame: frame.kind == "close", "the answer to our close frame"))[-1]

    async def aclose(self) -> None:
        """Leave at once (a close frame if still open, then the TCP close); never raises."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(0.5):
            if self.ws.state is ConnectionState.OPEN:
                with suppress(*_GONE):
                    await self._write(self.ws.send(CloseConnection(code=1000)))
            with suppress(*_GONE):
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
        return f"{'wss' if self.base.tls else 'ws'}://{self.base.host_header}{self.target(channel)}"

    async def open(self, target: str, label: str) -> Peer:
        """A peer upgraded on ``target`` (tried again on 429); raises :class:`Refusal`."""
        while True:
            self.waiting = f"{label}: the answer to the upgrade of {target}"
            peer = Peer(self, label, await self.base.stream())
            self.peers.append(peer)
            self.log(f"{label} > GET {_cut(target)} (upgrade)")
            try:
                await peer.handshake(target)
            except Refusal as refusal:
                self.log(f"{label} < HTTP {refusal.status} {_cut(refusal.body)}")
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
        except Refusal as refusal:
            return refusal.status
        await peer.aclose()
        return 101

    async def http(
        self, method: str, target: str, body: bytes = b"", headers: Sequence[tuple[str, str]] = ()
    ) -> tuple[int, dict[str, str], bytes]:
        """A plain HTTP request on a fresh connection: status, headers (lower-case), body."""
        shown = f"{method} {_cut(target)}" + (f" ({len(body)} bytes)" if body else "")
        self.log(f"HTTP > {shown}")
        self.waiting = f"the answer to {shown}"
        fields = [("Host", self.base.host_header), ("Connection", "close"), *headers]
        if body or method == "POST":
            fields += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        conn = h11.Connection(h11.CLIENT)
        stream = await self.base.stream()
        try:
            head = conn.send(h11.Request(method=method, target=target, headers=fields)) or b""
            rest = (conn.send(h11.Data(data=body)) or b"" if body else b"") + (conn.send(h11.EndOfMessage()) or b"")
            async with anyio.create_task_group() as tg:
                # Written beside the read: a relay may answer (413) without reading the body.
                tg.start_soon(_send_quietly, stream, head + rest)
                try:
                    status, answer, found = await _response(stream, conn)
                except Failed as exc:
                    raise Failed(f"{shown}: {exc}") from None
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True), suppress(*_GONE):
                await stream.aclose()
        self.log(f"HTTP < {status} {_cut(answer.decode(errors='replace'))}")
        return status, found, answer

    async def aclose(self) -> None:
        for peer in self.peers:
            await peer.aclose()


async def _send_quietly(stream: anyio.abc.ByteStream, data: bytes) -> None:
    with suppress(*_GONE):
        await stream.send(data)


async def _response(stream: anyio.abc.ByteStream, conn: h11.Connection) -> tuple[int, bytes, dict[str, str]]:
    status, body, headers = 0, bytearray(), {}
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            if not status:
                raise Failed("the relay closed the connection without an HTTP answer") from None
            raise Failed(f"an invalid HTTP answer: {exc}") from None
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive(READ_SIZE)
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                data = b""
            conn.receive_data(data)
        elif isinstance(event, h11.Response):
            status = event.status_code
            headers = {name.decode().lower(): value.decode(errors="replace") for name, value in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data[: MAX_BODY - len(body)]
        elif isinstance(event, h11.EndOfMessage):
            return status, bytes(body), headers
        elif isinstance(event, h11.ConnectionClosed):
            raise Failed("the connection closed before the HTTP answer was complete")


# -- what frames say -------------------------------------------------------------------------


def typed(kind: str) -> Callable[[Frame], bool]:
    """A frame whose ``type`` is ``kind`` (join, leave, error)."""
    return lambda frame: frame.obj is not None and frame.obj.get("type") == kind


def carrying(value: Any) -> Callable[[Frame], bool]:
    """A relayed envelope whose ``message`` is ``value``."""
    return lambda frame: frame.obj is not None and "message" in frame.obj and same(frame.obj["message"], value)


def errors(frames: Iterable[Frame]) -> list[str]:
    return [
        str(frame.obj.get("message")) for frame in frames if frame.obj is not None and frame.obj.get("type") == "error"
    ]


def relayed(frames: Iterable[Frame]) -> list[dict[str, Any]]:
    """The relayed envelopes among ``frames`` (objects without a ``type``, with a ``message``)."""
    return [
        frame.obj for frame in frames if frame.obj is not None and "type" not in frame.obj and "message" in frame.obj
    ]


def same(left: Any, right: Any) -> bool:
    """JSON equality (``true`` is not ``1``, key order does not matter)."""
    return bool(msgspec.json.encode(left, order="sorted") == msgspec.json.encode(right, order="sorted"))


def is_date(value: Any) -> bool:
    """A JSON number of milliseconds since the epoch (after 2017, before 2096)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 1.5e12 < value < 4e12


def expect(condition: bool, detail: str) -> None:
    if not condition:
        raise Failed(detail)


def show(value: Any) -> str:
    return _cut(msgspec.json.encode(value).decode())


def need(settings: Settings, *needs: str) -> str | None:
    """Why a check with these needs cannot run, or None."""
    for what in needs:
        if getattr(settings, what) is None:
            return f"needs --{what.replace('_', '-')}"
    return None


async def marked(peer: Peer, sender: Peer, what: str, *, after: float = GRACE) -> list[Frame]:
    """What ``peer`` receives before a marker that ``sender`` broadcasts now (``peer`` may be
    ``sender`` itself, joined with echo), plus :data:`GRACE` seconds: the frames an earlier
    action caused. The marker's own frame is not in the list."""
    token = peer.probe.token()
    peer.probe.markers.add(token)
    await sender.send_json({"marker": token})
    frames = await peer.read_until(carrying({"marker": token}), f"the marker after {what}", after=after)
    return [frame for frame in frames if not is_marker(frame, peer.probe.markers)]


def is_marker(frame: Frame, tokens: set[str]) -> bool:
    message = frame.obj.get("message") if frame.obj is not None else None
    return isinstance(message, dict) and message.keys() == {"marker"} and message["marker"] in tokens


async def refused(probe: Probe, channel: str, query: str, status: int, what: str) -> None:
    got = await probe.upgrade_status(probe.target(channel, query))
    expect(got == status, f"{what}: HTTP {got}, not {status}")


async def member(stack: AsyncExitStack, probe: Probe, channel: str, label: str, **options: Any) -> Channel:
    """A :func:`transports.client.connect` member of ``channel`` (tried again on 429)."""
    while True:
        probe.waiting = f"{label}: transports.client.connect({channel!r})"
        try:
            joined = await stack.enter_async_context(connect(probe.url(channel), close_timeout=1.0, **options))
        except Refused as refusal:
            probe.log(f"{label} < {refusal!r}")
            if refusal.status != 429:
                raise
            await anyio.sleep(RETRY_PAUSE)
            continue
        probe.log(f"{label} < joined {channel} as {joined.uid} (total {joined.total})")
        return joined


# -- 1. endpoints ----------------------------------------------------------------------------


@check("1.join-c")
async def _join_c(p: Probe) -> str:
    """``GET /c/<channel>`` with an upgrade opens a WebSocket whose first frame is the self-join."""
    a = await p.join(p.fresh(), "A")
    return f"101, self-join uid {a.uid} total {a.hello.get('total')}"


@check("1.join-r")
async def _join_r(p: Probe) -> str:
    """``/r/<channel>`` is the legacy path of 2025 clients: the same channel as ``/c/<channel>``."""
    channel = p.fresh()
    await p.join(channel, "A", path="r")
    b = await p.join(channel, "B")
    expect(
        b.hello.get("total") == 2,
        f"an /r/ and a /c/ member of one channel did not meet: B's total is {b.hello.get('total')}",
    )
    return "/r/ joins the channel /c/ names"


@check("1.channel-slash")
async def _channel_slash(p: Probe) -> str:
    """The channel is everything after ``/c/``, slashes included, case-sensitive and exact."""
    channel = p.fresh("/sub/Room")
    await p.join(channel, "A")
    b = await p.join(channel, "B")
    expect(b.hello.get("total") == 2, f"two members of {channel!r} did not meet: total {b.hello.get('total')}")
    c = await p.join(channel.rsplit("/", 1)[0], "C")
    expect(
        c.hello.get("total") == 1,
        f"{channel.rsplit('/', 1)[0]!r} is not a channel of its own: total {c.hello.get('total')}",
    )
    d = await p.join(channel[:-4] + "room", "D")
    expect(d.hello.get("total") == 1, f"channel names are not case-sensitive: total {d.hello.get('total')}")
    return "'/' is part of the name, which is case-sensitive"


@check("1.channel-decoding")
async def _channel_decoding(p: Probe) -> str:
    """The channel is percent-decoded: members on ``a%3Ab`` and on ``a:b`` meet."""
    channel = p.fresh()
    a = await p.join(f"{channel}%3Ab", "A", raw=True)
    b = await p.join(f"{channel}:b", "B", raw=True)
    expect(b.hello.get("total") == 2, f"'%3A' and ':' are two channels: B's total is {b.hello.get('total')}")
    await a.read_until(typed("join"), "B's join")
    return "'%3A' and ':' name one channel"


@check("1.channel-empty-400")
async def _channel_empty(p: Probe) -> str:
    """An empty channel name is refused with HTTP 400 on the upgrade."""
    status = await p.upgrade_status(p.target(""))
    expect(status == 400, f"an upgrade of {p.target('')} got HTTP {status}, not 400")
    return "/c/ -> 400"


@check("1.channel-too-long-400", tags=["decision"])
async def _channel_too_long(p: Probe) -> str:
    """A channel is 1..256 bytes of UTF-8 after decoding (**decision**): 257 bytes -> 400."""
    name = p.fresh()
    longest = name + "x" * (256 - len(name.encode()))
    await p.join(longest, "A")
    status = await p.upgrade_status(p.target(longest + "x"))
    expect(status == 400, f"a 257-byte channel got HTTP {status}, not 400")
    return "256 bytes joins, 257 -> 400"


@check("1.plain-get-426")
async def _plain_get(p: Probe) -> str:
    """A GET on ``/c/...`` without a WebSocket upgrade gets 426 (Upgrade Required) or 400."""
    status, _, _ = await p.http("GET", p.target(p.fresh()))
    expect(status in (426, 400), f"a plain GET of /c/<channel> got HTTP {status}, not 426 or 400")
    return f"HTTP {status}"


@check("1.unknown-path-404")
async def _unknown_path(p: Probe) -> str:
    """Any path that is not an endpoint of the protocol gets a plain HTTP 404."""
    target = f"{p.base.prefix}/{p.fresh()}"
    status, _, _ = await p.http("GET", target)
    expect(status == 404, f"GET {target} got HTTP {status}, not 404")
    return f"GET {target} -> 404"


@check("1.version")
async def _version(p: Probe) -> str:
    """``GET /version`` answers 200 with the server's version as plain text."""
    status, headers, body = await p.http("GET", f"{p.base.prefix}/version")
    expect(status == 200, f"GET /version got HTTP {status}, not 200")
    text = body.decode(errors="replace").strip()
    expect(bool(text), "GET /version answered an empty body")
    kind = headers.get("content-type", "")
    expect(not kind or kind.startswith("text/"), f"GET /version is not plain text: content-type {kind!r}")
    return f"200 {_cut(text)!r}"


@check("1.health", tags=["optional"])
async def _health(p: Probe) -> str:
    """``GET /health`` answers JSON ``{"status":"ok", ...}``: optional, a decision of relaycore's."""
    status, _, body = await p.http("GET", f"{p.base.prefix}/health")
    if status == 404:
        raise Skipped("optional (relaycore's own endpoint): GET /health -> 404")
    expect(status == 200, f"GET /health got HTTP {status}, not 200")
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise Failed(f"GET /health is not JSON: {_cut(body.decode(errors='replace'))}") from None
    expect(isinstance(document, dict) and document.get("status") == "ok", f"GET /health says {show(document)}")
    return '200 {"status":"ok",...}'


# -- 2. connection options -------------------------------------------------------------------


async def _alias_of(p: Probe, query: str) -> Any:
    return (await p.join(p.fresh(), "A", query)).hello.get("alias", "(none)")


@check("2.alias")
async def _alias(p: Probe) -> str:
    """``alias`` is the display name: in the self-join, and in every envelope of the member's."""
    channel = p.fresh()
    a = await p.join(channel, "A", "alias=Ann")
    expect(a.hello.get("alias") == "Ann", f"?alias=Ann: the self-join's alias is {a.hello.get('alias', '(none)')!r}")
    b = await p.join(channel, "B")
    payload = {"hello": p.token()}
    await a.send_json(payload)
    frame = (await b.read_until(carrying(payload), "A's message"))[-1]
    expect(frame.obj is not None and frame.obj.get("alias") == "Ann", f"A's envelope lacks alias Ann: {frame.show()}")
    return "self-join and envelope carry the alias"


@check("2.alias-as")
async def _alias_as(p: Probe) -> str:
    """``as`` is another name of ``alias``."""
    alias = await _alias_of(p, "as=Bo")
    expect(alias == "Bo", f"?as=Bo: the self-join's alias is {alias!r}")
    return "?as=Bo -> alias Bo"


@check("2.alias-wins", tags=["decision"])
async def _alias_wins(p: Probe) -> str:
    """When both are given, ``alias`` wins over ``as`` (**decision**), whatever their order."""
    for query in ("alias=Ann&as=Bo", "as=Bo&alias=Ann"):
        alias = await _alias_of(p, query)
        expect(alias == "Ann", f"?{query}: the self-join's alias is {alias!r}, not 'Ann'")
    return "alias=Ann beats as=Bo, either order"


@check("2.alias-too-long-400", tags=["decision"])
async def _alias_too_long(p: Probe) -> str:
    """An alias is at most 64 characters (**decision**), else the upgrade is refused with 400."""
    alias = await _alias_of(p, "alias=" + "é" * 64)
    expect(alias == "é" * 64, f"a 64-character alias came back as {alias!r}")
    status = await p.upgrade_status(p.target(p.fresh(), "alias=" + "x" * 65))
    expect(status == 400, f"a 65-character alias got HTTP {status}, not 400")
    return "64 characters join, 65 -> 400"


@check("2.query-decoding")
async def _query_decoding(p: Probe) -> str:
    """Options are an HTML form query: ``+`` is a space, ``%XX`` is decoded, unknown keys ignored."""
    alias = await _alias_of(p, "alias=J%C3%B6+Doe%21&colour=blue")
    expect(alias == "Jö Doe!", f"?alias=J%C3%B6+Doe%21: the alias is {alias!r}, not 'Jö Doe!'")
    return "'J%C3%B6+Doe%21' -> 'Jö Doe!'"


@check("2.announce")
async def _announce(p: Probe) -> str:
    """With ``announce``, others' join and leave events about me carry my uid and alias."""
    channel = p.fresh()
    a = await p.join(channel, "A")
    b = await p.join(channel, "B", "announce&alias=Bo")
    join = (await a.read_until(typed("join"), "B's join"))[-1].obj or {}
    expect(
        join.get("uid") == b.uid and join.get("alias") == "Bo", f"B's join lacks uid {b.uid} / alias Bo: {show(join)}"
    )
    await b.close()
    leave = (await a.read_until(typed("leave"), "B's leave"))[-1].obj or {}
    expect(leave.get("uid") == b.uid and leave.get("alias") == "Bo", f"B's leave lacks uid / alias: {show(leave)}")
    return "join and leave carry uid and alias"


@check("2.echo")
async def _echo(p: Probe) -> str:
    """With ``echo``, I receive my own broadcasts back, in the envelope everyone gets."""
    a = await p.join(p.fresh(), "A", "echo=true")
    payload = {"echo": p.token()}
    await a.send_json(payload)
    frame = (await a.read_until(carrying(payload), "the echo of A's message"))[-1]
    expect(frame.obj is not None and frame.obj.get("uid") == a.uid, f"the echo does not carry A's uid: {frame.show()}")
    return "own broadcast came back with own uid"


@check("2.list")
async def _list(p: Probe) -> str:
    """With ``list``, the self-join's ``users`` are the announced members in join order, each
    ``{uid, alias?}``; my own entry (with ``"self":true``) only if I announced."""
    channel = p.fresh()
    a = await p.join(channel, "A", "announce&alias=Ann")
    expect("users" not in a.hello, f"a self-join without ?list has users: {show(a.hello)}")
    await p.join(channel, "B")
    c = await p.join(channel, "C", "announce")
    d = await p.join(channel, "D", "list&announce&alias=Dee")
    wanted = [{"uid": a.uid, "alias": "Ann"}, {"uid": c.uid}, {"uid": d.uid, "alias": "Dee", "self": True}]
    users = d.hello.get("users")
    expect(same(users, wanted), f"D (announced) got users {show(users)}, not {show(wanted)}")
    e = await p.join(channel, "E", "list")
    users = e.hello.get("users")
    expect(same(users, [*wanted[:2], {"uid": d.uid, "alias": "Dee"}]), f"E (not announced) got users {show(users)}")
    return "announced members in join order, self entry only if announced"


async def _echoes(p: Probe, channel: str, query: str, partner: Peer, *, on: bool) -> bool:
    """Whether a member joined with ``query`` gets its own broadcast back. (An echo comes before
    the partner's marker, which is sent once the partner has the message: the grace is for OFF.)"""
    x = await p.join(channel, "X", query)
    payload = {"echo": p.token()}
    await x.send_json(payload)
    await partner.read_until(carrying(payload), f"X's message (X joined with ?{query})")
    seen = await marked(x, partner, f"X's message (?{query})", after=0.0 if on else GRACE)
    await x.close()
    return any(carrying(payload)(frame) for frame in seen)


@check("2.flag-spellings")
async def _flags(p: Probe) -> str:
    """A flag is ON when its value is ``true``, ``1`` or empty (``?echo``, ``?echo=``), OFF when
    it is ``false``, ``0`` or absent (tried on ``echo``)."""
    channel = p.fresh()
    partner = await p.join(channel, "P")
    for query in ("echo=true", "echo=1", "echo", "echo="):
        expect(await _echoes(p, channel, query, partner, on=True), f"?{query} did not turn echo on")
    for query in ("echo=false", "echo=0", ""):
        expect(not await _echoes(p, channel, query, partner, on=False), f"?{query or '(no echo)'} turned echo on")
    return "true/1/empty are ON, false/0/absent are OFF"


# -- 3. frames -------------------------------------------------------------------------------

SELF_JOIN_KEYS = {"type", "self", "uid", "alias", "total", "date", "users"}


@check("3.2.self-join")
async def _self_join(p: Probe) -> str:
    """The first frame is the self-join: ``type`` join, ``self`` true, a ``uid`` of 6 characters
    ``[A-Za-z0-9]``, ``total`` (me included), ``date``; ``alias`` only if set, ``users`` only with list."""
    hello = (await p.join(p.fresh(), "A")).hello
    expect(UID.fullmatch(str(hello.get("uid"))) is not None, f"the uid is not 6 characters [A-Za-z0-9]: {show(hello)}")
    expect(hello.get("total") == 1, f"the first member's total is {hello.get('total')}, not 1")
    expect(is_date(hello.get("date")), f"the self-join has no date in ms: {show(hello)}")
    expect("alias" not in hello and "users" not in hello, f"alias or users without ?alias / ?list: {show(hello)}")
    extra = set(hello) - SELF_JOIN_KEYS
    expect(not extra, f"the self-join has keys the protocol does not name: {sorted(extra)}")
    return f"{show(hello)}"


@check("3.2.self-join-total")
async def _self_join_total(p: Probe) -> str:
    """The self-join's ``total`` counts the connections in the channel, the joiner included."""
    channel = p.fresh()
    totals = [(await p.join(channel, label)).hello.get("total") for label in "ABC"]
    expect(totals == [1, 2, 3], f"three joiners got totals {totals}, not [1, 2, 3]")
    return "totals 1, 2, 3"


@check("3.3.join-leave")
async def _join_leave(p: Probe) -> str:
    """Others get ``{"type":"join"|"leave","total":n,"date":...}``: no ``self``, no ``users``, no uid
    unless the member announced; ``total`` counts ALL connections after the change."""
    channel = p.fresh()
    a = await p.join(channel, "A")
    b = await p.join(channel, "B")
    join = (await a.read_until(typed("join"), "B's join"))[-1].obj or {}
    expect(set(join) == {"type", "total", "date"}, f"B did not announce, yet its join is {show(join)}")
    expect(join["total"] == 2 and is_date(join["date"]), f"B's join: {show(join)}, not total 2 with a date")
    await p.join(channel, "C", "announce")
    join = (await a.read_until(typed("join"), "C's join"))[-1].obj or {}
    expect(join.get("total") == 3 and "self" not in join, f"C's join: {show(join)}, not total 3 without self")
    await b.close()
    leave = (await a.read_until(typed("leave"), "B's leave"))[-1].obj or {}
    expect(set(leave) == {"type", "total", "date"} and leave["total"] == 2, f"B's leave: {show(leave)}, not total 2")
    return "join total 2, 3; leave total 2; no uid unless announced"


async def _relay_once(p: Probe, payload: Any, *, alias: str = "") -> tuple[Peer, Frame]:
    """A (with ``alias``) broadcasts ``payload``; B's frame of it."""
    channel = p.fresh()
    a = await p.join(channel, "A", f"alias={alias}" if alias else "")
    b = await p.join(channel, "B")
    await a.send_json(payload)
    return a, (await b.read_until(carrying(payload), "A's message"))[-1]


@check("3.1.envelope-fields")
async def _envelope_fields(p: Probe) -> str:
    """A relayed message is ``{"uid":..., "date":..., "message":...}``: the sender's uid, the server's
    time in ms as a number, the value unchanged; no ``alias`` key for a sender without one."""
    payload = {"n": 1, "text": p.token()}
    a, frame = await _relay_once(p, payload)
    envelope = frame.obj or {}
    expect(
        set(envelope) == {"uid", "date", "message"},
        f"the envelope's keys are {sorted(envelope)}, not uid, date, message",
    )
    expect(envelope["uid"] == a.uid, f"the envelope's uid is {envelope['uid']!r}, not the sender's {a.uid}")
    expect(is_date(envelope["date"]), f"the envelope's date is {envelope['date']!r}")
    return frame.show()


@check("3.1.envelope-no-type")
async def _envelope_no_type(p: Probe) -> str:
    """MUST: the envelope has NO ``type`` key (clients route on the payload's own ``type``)."""
    payload = {"type": "chat", "text": p.token()}
    _, frame = await _relay_once(p, payload)
    expect(frame.obj is not None and "type" not in frame.obj, f"the envelope has a type key: {frame.show()}")
    expect(frame.obj is not None and same(frame.obj.get("message"), payload), f"the payload changed: {frame.show()}")
    return "the payload's type stays inside message"


@check("3.1.envelope-alias")
async def _envelope_alias(p: Probe) -> str:
    """MUST: ``uid``, ``alias`` and ``date`` are top-level, never inside ``message``; ``alias`` is
    there only if the sender set one (never ``null``)."""
    payload = {"text": p.token()}
    _, frame = await _relay_once(p, payload, alias="Ann")
    envelope = frame.obj or {}
    expect(envelope.get("alias") == "Ann", f"the sender's alias is missing: {frame.show()}")
    expect(same(envelope.get("message"), payload), f"the payload changed: {frame.show()}")
    return frame.show()


@check("3.1.envelope-identical")
async def _envelope_identical(p: Probe) -> str:
    """The envelope is identical for every recipient of one message, the echo included: the
    server stamps ``date`` once and encodes once (compared byte for byte)."""
    channel = p.fresh()
    a = await p.join(channel, "A", "echo&alias=Ann")
    b, c = await p.join(channel, "B"), await p.join(channel, "C")
    payload = {"text": p.token(), "list": [1, 2.5, None, True, "é"]}
    await a.send_json(payload)
    texts = {(await peer.read_until(carrying(payload), "A's message"))[-1].text for peer in (a, b, c)}
    expect(len(texts) == 1, f"recipients got {len(texts)} different texts: {' | '.join(map(_cut, texts))}")
    return "B, C and A's echo got the same bytes"


VALUES: list[Any] = ["text", 42, -3.5, 1e300, True, False, None, [], {}, [1, "two", {"three": 3}], {"é": "ü 😀\u2028"}]


@check("3.1.message-unchanged")
async def _message_unchanged(p: Probe) -> str:
    """The sender's JSON value is relayed unchanged, whatever its type (string, number, boolean,
    null, array, object, non-ASCII text)."""
    channel = p.fresh()
    a, b = await p.join(channel, "A"), await p.join(channel, "B")
    for value in VALUES:
        await a.send_json(value)
    got = relayed(await b.read_until(carrying(VALUES[-1]), "A's last message"))
    values = [envelope["message"] for envelope in got]
    expect(same(values, VALUES), f"B got {show(values)}, not {show(VALUES)}")
    return f"{len(VALUES)} values of every JSON type"


@check("3.1.push-envelope", needs=["namespace", "send_key"])
async def _push_envelope(p: Probe) -> str:
    """An HTTP-pushed message has no sender: ``{"date":...,"message":...}``, no uid, no alias."""
    channel = p.reserved()
    m = await p.join(channel, "M", p.keys())
    payload = {"pushed": p.token()}
    status, _, body = await _push(p, channel, payload)
    expect(status == 200, f"the push got HTTP {status}: {_cut(body.decode(errors='replace'))}")
    frame = (await m.read_until(carrying(payload), "the pushed message"))[-1]
    expect(frame.obj is not None and set(frame.obj) == {"date", "message"}, f"the pushed envelope is {frame.show()}")
    return frame.show()


async def _errs(p: Probe, sent: str, send: Callable[[Peer], Awaitable[None]], text: str) -> str:
    """A (with echo) does ``send``; A must get the error frame ``text``, stay open, and B nothing."""
    channel = p.fresh()
    a, b = await p.join(channel, "A", "echo"), await p.join(channel, "B")
    await send(a)
    seen = await marked(a, a, sent)
    got = errors(seen)
    expect(got == [text], f"after {sent}, A got errors {got}, not [{text!r}]")
    frame = next(frame for frame in seen if frame.obj is not None and frame.obj.get("type") == "error")
    assert frame.obj is not None
    expect(set(frame.obj) == {"type", "message", "date"}, f"the error frame is {frame.show()}")
    leaked = [frame.show() for frame in await marked(b, a, sent)]
    expect(not leaked, f"B received {leaked} after A's {sent}")
    return f"{text!r}, connection kept"


@check("3.4.error-unknown-uid")
async def _error_unknown_uid(p: Probe) -> str:
    """A direct message to an unknown uid gets the error naming the uid (MUST contain
    the uid); the connection stays open."""
    ghost = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(6))
    return await _errs(
        p, f"a direct message to {ghost}", lambda a: a.send_text(f"\x1f{ghost}\x1f{{}}"), user_not_found(ghost)
    )


@check("3.4.error-invalid-json")
async def _error_invalid_json(p: Probe) -> str:
    """A frame that is not JSON (``undefined``, what ``.send()`` sends) is never relayed: the error
    the protocol's invalid-JSON error, connection kept."""
    return await _errs(p, "the text 'undefined'", lambda a: a.send_text("undefined"), INVALID_JSON)


@check("3.4.error-binary")
async def _error_binary(p: Probe) -> str:
    """A binary frame (even of valid JSON) gets the error ``Binary messages are not supported.``"""

    async def send(a: Peer) -> None:
        await a.send_raw(a.ws.send(BytesMessage(data=b'{"binary":true}')), "[binary, 15 bytes]")

    return await _errs(p, "a binary frame", send, BINARY_UNSUPPORTED)


# -- 4. client frames ------------------------------------------------------------------------


@check("4.broadcast")
async def _broadcast(p: Probe) -> str:
    """A JSON frame goes to every OTHER member, and not back to the sender without ``echo``."""
    channel = p.fresh()
    a, b, c = await p.join(channel, "A"), await p.join(channel, "B"), await p.join(channel, "C")
    payload = {"broadcast": p.token()}
    await a.send_json(payload)
    for peer in (b, c):
        frame = (await peer.read_until(carrying(payload), "A's broadcast"))[-1]
        expect(frame.obj is not None and frame.obj.get("uid") == a.uid, f"{peer.label} got {frame.show()}")
    back = [frame.show() for frame in await marked(a, b, "A's broadcast") if carrying(payload)(frame)]
    expect(not back, "A got its own broadcast back without ?echo")
    return "B and C got it, A did not"


async def _direct(p: Probe, frame_of: Callable[[str, str], str], form: str) -> str:
    channel = p.fresh()
    a, b, c = await p.join(channel, "A"), await p.join(channel, "B"), await p.join(channel, "C")
    payload = {"direct": p.token()}
    await a.send_text(frame_of(b.uid, msgspec.json.encode(payload).decode()))
    # A's marker comes after the direct message from the same sender: B has it by then.
    got = [frame for frame in await marked(b, a, f"A's {form} message", after=0.0) if carrying(payload)(frame)]
    expect(bool(got), f"B did not get A's {form} message (before A's next broadcast)")
    envelope = got[0].obj or {}
    expect(envelope.get("uid") == a.uid and "type" not in envelope, f"B got {got[0].show()}, not A's envelope")
    leaked = [frame.show() for frame in await marked(c, a, f"A's {form} message to B") if carrying(payload)(frame)]
    expect(not leaked, f"C got A's {form} message to B")
    return f"{form} reached B only"


@check("4.direct")
async def _direct_new(p: Probe) -> str:
    """``\\x1f<uid>\\x1f<JSON>`` is a direct message to member ``<uid>`` of the channel only."""
    return await _direct(p, lambda uid, text: f"\x1f{uid}\x1f{text}", "\\x1f direct")


@check("4.direct-legacy")
async def _direct_legacy(p: Probe) -> str:
    """``@@<uid>@@<JSON>`` is the legacy direct-message form of 2025 clients: accepted too."""
    return await _direct(p, lambda uid, text: f"@@{uid}@@{text}", "@@ direct")


@check("4.direct-not-echoed", tags=["decision"])
async def _direct_not_echoed(p: Probe) -> str:
    """Direct messages are never echoed, even to a sender with ``echo`` (**decision**)."""
    channel = p.fresh()
    a, b = await p.join(channel, "A", "echo"), await p.join(channel, "B")
    payload = {"direct": p.token()}
    await a.send_text(f"\x1f{b.uid}\x1f{msgspec.json.encode(payload).decode()}")
    await b.read_until(carrying(payload), "A's direct message")
    back = [frame.show() for frame in await marked(a, a, "A's direct message") if carrying(payload)(frame)]
    expect(not back, "A (with ?echo) got its own direct message back")
    return "the sender with ?echo did not get it"


@check("4.send-then-close")
async def _send_then_close(p: Probe) -> str:
    """Send and close: the relay relays every data frame received before the close frame, and
    only then broadcasts the leave (all written in one TCP segment here)."""
    channel = p.fresh()
    b = await p.join(channel, "B")
    a = await p.join(channel, "A", "announce")
    await b.read_until(typed("join"), "A's join")
    count = 20
    data = b"".join(a.ws.send(TextMessage(data=f'{{"n":{n}}}')) for n in range(count))
    await a.send_raw(
        data + a.ws.send(CloseConnection(code=1000)), f'{count} messages {{"n":0..{count - 1}}} + [close 1000]'
    )
    await a.read_until(lambda frame: frame.kind == "close", "the answer to A's close frame")
    frames = await b.read_until(typed("leave"), "A's leave")
    got = [envelope["message"] for envelope in relayed(frames)]
    expect(same(got, [{"n": n} for n in range(count)]), f"before A's leave, B got {len(got)} of {count}: {show(got)}")
    return f"{count} messages, then the leave"


# -- 5. HTTP push ----------------------------------------------------------------------------


async def _push(
    p: Probe, channel: str, value: Any = None, *, body: bytes | None = None, key: str | None = ""
) -> tuple[int, dict[str, str], bytes]:
    """``POST /push/<channel>`` with ``value`` (or ``body``) and the send key (``key=""``: the
    one given on the command line; None: no header)."""
    key = p.settings.send_key if key == "" else key
    headers = [] if key is None else [("x-send-key", key)]
    data = msgspec.json.encode(value) if body is None else body
    return await p.http("POST", f"{p.base.prefix}/push/{quote(channel, safe='/:')}", data, headers)


def _answer(body: bytes) -> dict[str, Any]:
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise Failed(f"the push answer is not JSON: {_cut(body.decode(errors='replace'))}") from None
    if not isinstance(document, dict):
        raise Failed(f"the push answer is not a JSON object: {show(document)}")
    return document


@check("5.push-200", needs=["namespace", "send_key"])
async def _push_200(p: Probe) -> str:
    """``POST /push/<channel>`` with ``x-send-key`` delivers the body to the channel and answers
    200 ``{"ok":true,"recipients":n}`` (0 recipients is still 200)."""
    channel = p.reserved()
    status, _, body = await _push(p, channel, {"nobody": "home"})
    expect(status == 200, f"a push to an empty channel got HTTP {status}, not 200")
    expect(same(_answer(body), {"ok": True, "recipients": 0}), f"a push to nobody answered {_cut(body.decode())}")
    members = [await p.join(channel, label, p.keys()) for label in "MN"]
    payload = {"pushed": p.token()}
    status, _, body = await _push(p, channel, payload)
    expect(status == 200 and same(_answer(body), {"ok": True, "recipients": 2}), f"HTTP {status} {_cut(body.decode())}")
    for peer in members:
        await peer.read_until(carrying(payload), "the pushed message")
    return 'recipients 0, then 2: {"ok":true,"recipients":2}'


@check("5.push-400", needs=["namespace", "send_key"])
async def _push_400(p: Probe) -> str:
    """A body that is not JSON gets 400 with the protocol's JSON error."""
    status, _, body = await _push(p, p.reserved(), body=b"{not json")
    expect(status == 400, f"an invalid JSON body got HTTP {status}, not 400")
    document = _answer(body)
    expect(same(document, {"ok": False, "error": INVALID_JSON_BODY}), f"the 400 answer is {show(document)}")
    return f"400 {msgspec.json.encode({'ok': False, 'error': INVALID_JSON_BODY}).decode()}"


@check("5.push-403")
async def _push_403(p: Probe) -> str:
    """A missing or wrong key, or a channel with no reserved namespace with a send key, gets 403
    ``{"ok":false,"error":"..."}``."""
    cases: list[tuple[str, str | None, str]] = [(p.fresh(), "some-key", "an open channel")]
    if p.settings.namespace is not None:
        cases += [(p.reserved(), f"wrong-{p.token()}", "a wrong key"), (p.reserved(), None, "no key")]
    for channel, key, what in cases:
        status, _, body = await _push(p, channel, {"x": 1}, key=key)
        expect(status == 403, f"a push with {what} got HTTP {status}, not 403")
        document = _answer(body)
        expect(
            document.get("ok") is False and isinstance(document.get("error"), str),
            f"the 403 answer is {show(document)}",
        )
    return f"403 for {', '.join(what for _, _, what in cases)}"


@check("5.push-405")
async def _push_405(p: Probe) -> str:
    """A method other than POST on ``/push/<channel>`` gets 405."""
    status, _, _ = await p.http("GET", f"{p.base.prefix}/push/{p.fresh()}")
    expect(status == 405, f"GET /push/<channel> got HTTP {status}, not 405")
    return "GET -> 405"


@check("5.push-413", tags=["config"], needs=["namespace", "send_key"])
async def _push_413(p: Probe) -> str:
    """A body over the message-size limit (100 KiB by default; 200 KiB sent) gets 413."""
    status, _, _ = await _push(p, p.reserved(), "x" * (200 * 1024))
    expect(status == 413, f"a 200 KiB body got HTTP {status}, not 413")
    return "200 KiB -> 413"


# -- 6. access control -----------------------------------------------------------------------


@check("6.first-joiner-join-key")
async def _first_join_key(p: Probe) -> str:
    """On an open channel the first joiner's ``joinKey`` becomes the channel's: a later joiner
    without it, or with another, gets 403 on the upgrade; with it, joins."""
    channel, key = p.fresh(), f"jk-{p.token()}"
    await p.join(channel, "A", f"joinKey={key}")
    await refused(p, channel, "", 403, "a later joiner without the joinKey")
    await refused(p, channel, "joinKey=wrong", 403, "a later joiner with a wrong joinKey")
    c = await p.join(channel, "C", f"joinKey={key}")
    expect(c.hello.get("total") == 2, f"the joiner with the key got total {c.hello.get('total')}")
    return "no key / wrong key -> 403, the key joins"


@check("6.first-joiner-send-key")
async def _first_send_key(p: Probe) -> str:
    """The first joiner's ``sendKey`` becomes the channel's: a later joiner with a wrong one (or
    none) joins listen-only, its sends get ``Sending requires a valid sendKey.`` and go nowhere."""
    channel, key = p.fresh(), f"sk-{p.token()}"
    a = await p.join(channel, "A", f"sendKey={key}")
    b = await p.join(channel, "B", "sendKey=wrong")
    c = await p.join(channel, "C")
    refused_payload = {"refused": p.token()}
    for peer in (b, c):
        await peer.send_json(refused_payload)
    d = await p.join(channel, "D", f"sendKey={key}")
    for peer in (b, c):  # the listen-only members still listen, and got the error
        got = errors(await marked(peer, d, "a send without the sendKey"))
        expect(got == [NOT_SENDING], f"{peer.label} got errors {got}, not [{NOT_SENDING!r}]")
    got_a = relayed(await marked(a, d, "the sends without the sendKey"))
    expect(not got_a, f"A got a message sent without the sendKey: {show(got_a)}")
    return "wrong / no sendKey: listen-only with the error; the key sends"


@check("6.later-keys-ignored")
async def _later_keys(p: Probe) -> str:
    """Keys offered by later joiners on an open channel that has none are ignored."""
    channel = p.fresh()
    a = await p.join(channel, "A")
    await p.join(channel, "B", "joinKey=late&sendKey=late")
    c = await p.join(channel, "C")
    expect(c.hello.get("total") == 3, f"a keyless joiner after B got total {c.hello.get('total')}, not 3")
    payload = {"free": p.token()}
    await c.send_json(payload)
    await a.read_until(carrying(payload), "C's message (the channel has no sendKey)")
    return "B's keys did not lock C out"


@check("6.keys-vanish")
async def _keys_vanish(p: Probe) -> str:
    """A channel exists while it has members: its keys vanish with its last member, and the next
    joiner (with transports.client) finds an open channel."""
    channel, key = p.fresh(), f"jk-{p.token()}"
    async with AsyncExitStack() as stack:
        first = await member(stack, p, channel, "A", join_key=key)
        await first.close()
    for _ in range(20):  # the relay may take a moment to see A's close
        try:
            async with AsyncExitStack() as stack:
                joined = await member(stack, p, channel, "B")
                expect(joined.total == 1, f"B found {joined.total} members")
                return "after the last member left, a keyless joiner got in"
        except Refused as refusal:
            if refusal.status != 403:
                raise
            await anyio.sleep(0.05)
    raise Failed("the channel kept its joinKey after its last member left (403 for a second)")


@check("6.reserved-join-key", needs=["namespace", "join_key"])
async def _reserved_join_key(p: Probe) -> str:
    """Under a reserved namespace, a wrong or missing joinKey gets HTTP 403 (no WebSocket opens)."""
    channel = p.reserved()
    await refused(p, channel, "", 403, "no joinKey")
    await refused(p, channel, "joinKey=wrong", 403, "a wrong joinKey")
    await p.join(channel, "A", p.keys())
    return "no key / wrong key -> 403, the namespace's key joins"


@check("6.reserved-foreign-key-403", needs=["namespace"])
async def _reserved_foreign(p: Probe) -> str:
    """Under a reservation, offering a ``joinKey``/``sendKey`` that is not the namespace's own
    (including when it has none) gets 403; a reservation without keys still blocks ephemeral keys."""
    channel, wrong = p.reserved(), f"foreign-{p.token()}"
    joined = p.keys()
    await refused(p, channel, "&".join(filter(None, [joined, f"sendKey={wrong}"])), 403, "a foreign sendKey")
    if p.settings.join_key is None:
        await refused(p, channel, f"joinKey={wrong}", 403, "a joinKey where the namespace has none")
    return "foreign keys -> 403"


@check("6.reserved-send-key", needs=["namespace", "send_key"])
async def _reserved_send_key(p: Probe) -> str:
    """Under a reservation with a sendKey, a member without it listens only (error frame on a
    send); with it, its messages are delivered."""
    channel = p.reserved()
    a = await p.join(channel, "A", p.keys())
    b = await p.join(channel, "B", p.keys())
    await b.send_json({"refused": True})
    c = await p.join(channel, "C", p.keys(send=True))
    got = errors(await marked(b, c, "B's send without the sendKey"))
    expect(got == [NOT_SENDING], f"B got errors {got}, not [{NOT_SENDING!r}]")
    got_a = relayed(await marked(a, c, "B's send without the sendKey"))
    expect(not got_a, f"A got B's refused message: {show(got_a)}")
    return "without the key: the error; with it: delivered"


@check("6.namespace-match", needs=["namespace", "join_key"])
async def _namespace_match(p: Probe) -> str:
    """Namespace N covers channel C iff C == N or C starts with N followed by ``:`` or ``/``."""
    ns = p.settings.namespace
    assert ns is not None
    for channel in (ns, f"{ns}:{p.fresh()}", f"{ns}/{p.fresh()}"):
        await refused(p, channel, "", 403, f"{channel!r} without the joinKey")
    outside = f"{ns}{p.token()}:room"
    await p.join(outside, "A")
    return f"N, N:x, N/x need the key; {outside!r} does not"


# -- 7. identity, ordering -------------------------------------------------------------------


@check("7.uid")
async def _uids(p: Probe) -> str:
    """A uid is 6 characters ``[A-Za-z0-9]``, unique within the channel, new on every connection
    (seen through transports.client)."""
    channel = p.fresh()
    async with AsyncExitStack() as stack:
        members = [await member(stack, p, channel, f"M{n}") for n in range(5)]
        uids = [joined.uid for joined in members]
        expect(len(set(uids)) == len(uids), f"uids repeat within the channel: {uids}")
        expect(all(UID.fullmatch(uid) for uid in uids), f"uids that are not 6 characters [A-Za-z0-9]: {uids}")
        await members[0].close()
        again = await member(stack, p, channel, "M0 again")
        expect(again.uid not in uids, f"a new connection got the uid {again.uid} again")
    return f"5 distinct uids, and a new one on reconnection ({', '.join(uids)})"


@check("7.order")
async def _order(p: Probe) -> str:
    """Per connection, relays arrive in the order they were received from each sender: two
    senders of 200 messages each, interleaved, one receiver (transports.client)."""
    channel, count = p.fresh(), 200
    async with AsyncExitStack() as stack:
        receiver = await member(stack, p, channel, "R")
        senders = [await member(stack, p, channel, label) for label in ("S1", "S2")]

        async def send_all(sender: Channel) -> None:
            for n in range(count):
                await sender.send({"n": n})

        p.waiting = f"R: {2 * count} messages"
        seen: dict[str | None, list[int]] = {sender.uid: [] for sender in senders}
        async with anyio.create_task_group() as tg:
            for sender in senders:
                tg.start_soon(send_all, sender)
            while sum(map(len, seen.values())) < 2 * count:
                event = await receiver.receive()
                if isinstance(event, MessageEvent) and event.uid in seen:
                    seen[event.uid].append(event.message["n"])
                elif isinstance(event, ErrorEvent):
                    raise Failed(f"R got an error: {event.message!r}")
    for uid, numbers in seen.items():
        p.log(f"R < from {uid}: {_cut(str(numbers))}")
        expect(numbers == list(range(count)), f"the messages of {uid} came out of order")
    return f"{count} + {count} messages, each sender's in order"


# -- 8. limits -------------------------------------------------------------------------------


@check("8.message-size-ok", tags=["config"])
async def _size_ok(p: Probe) -> str:
    """A message under the 100 KiB default limit (100,000 bytes) is relayed whole."""
    channel = p.fresh()
    a, b = await p.join(channel, "A"), await p.join(channel, "B")
    payload = "y" * 99_998
    await a.send_json(payload)
    await b.read_until(carrying(payload), "A's 100,000-byte message")
    return "100,000 bytes relayed"


@check("8.message-size-1009", tags=["config"])
async def _size_1009(p: Probe) -> str:
    """A WebSocket message over the limit (100 KiB by default; 200 KiB sent) closes the
    connection with 1009; it is not relayed."""
    channel = p.fresh()
    b = await p.join(channel, "B")
    a = await p.join(channel, "A", "echo")
    await b.read_until(typed("join"), "A's join")
    size = 200 * 1024
    data = a.ws.send(TextMessage(data='"' + "z" * size + '"'))
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: a.send_raw(data, "a 200 KiB message", may_fail=True))
        frames = await a.read_until(lambda frame: frame.kind == "close" or frame.size > size, "the relay's close")
        tg.cancel_scope.cancel()
    end = frames[-1]
    expect(end.kind == "close", "the 200 KiB message was relayed (A's echo came back)")
    expect(end.code == 1009, f"a 200 KiB message got close {end.code} {end.reason!r}, not 1009")
    frames = await b.read_until(typed("leave"), "A's leave")
    expect(not relayed(frames), "B got the oversized message")
    return "close 1009, not relayed, then the leave"


@check("8.rate-limit", tags=["config", "decision"])
async def _rate_limit(p: Probe) -> str:
    """Over the rate (100 per second, burst 200, by default) a message is dropped with the error
    ``Rate limit exceeded (warning <n> of <max>).``; the 3rd warning in a minute closes with 1008."""
    channel = p.fresh()
    b = await p.join(channel, "B")
    a = await p.join(channel, "A", "echo")
    count = 400
    data = b"".join(a.ws.send(TextMessage(data=f'{{"n":{n}}}')) for n in range(count))
    await a.send_raw(data, f'{count} messages {{"n":0..{count - 1}}} at once', may_fail=True)
    last = carrying({"n": count - 1})
    frames = await a.read_until(lambda f: f.kind == "close" or last(f), "the rate-limit warnings and the close")
    warnings = errors(frames)
    relayed_all = "all relayed, the last echoed" if last(frames[-1]) else f"then {frames[-1].show()}"
    expect(bool(warnings), f"{count} messages at once got no warning ({relayed_all})")
    bad = [text for text in warnings if RATE_WARNING.fullmatch(text) is None]
    expect(not bad, f"unexpected error texts: {bad}")
    numbers = [int(RATE_WARNING.fullmatch(text).group(1)) for text in warnings]  # type: ignore[union-attr]
    expect(numbers == [1, 2, 3], f"warnings {numbers}, not 1, 2, 3 before the close")
    expect(frames[-1].code == 1008, f"after 3 warnings the close is {frames[-1].code}, not 1008")
    got = relayed(await b.read_until(typed("leave"), "A's leave"))
    expect(len(got) < count, f"B got all {count} messages")
    return f"warnings 1-3, close 1008; B got {len(got)} of {count}"


# -- 9. close codes --------------------------------------------------------------------------


@check("9.close-1000")
async def _close_1000(p: Probe) -> str:
    """A normal close (1000) is answered with a close frame of 1000; the others see the leave."""
    channel = p.fresh()
    b = await p.join(channel, "B")
    a = await p.join(channel, "A")
    await b.read_until(typed("join"), "A's join")
    end = await a.close(1000)
    expect(end.code == 1000, f"our close 1000 was answered with {end.code} {end.reason!r}")
    await b.read_until(typed("leave"), "A's leave")
    return "1000 echoed, leave broadcast"


async def _bad_frame(p: Probe, data: bytes, what: str, code: int) -> str:
    a = await p.join(p.fresh(), "A")
    await a.send_raw(data, what, may_fail=True)
    end = (await a.read_until(lambda frame: frame.kind == "close", "the relay's close"))[-1]
    expect(end.code == code, f"{what} got close {end.code} {end.reason!r}, not {code}")
    return f"close {code}"


@check("9.invalid-utf8-1007")
async def _invalid_utf8(p: Probe) -> str:
    """Invalid UTF-8 in a text frame closes the connection with 1007."""
    return await _bad_frame(p, raw_frame(0x1, b'"\xff\xfe"'), "a text frame of invalid UTF-8", 1007)


@check("9.protocol-error-1002")
async def _protocol_error(p: Probe) -> str:
    """A bad frame (a reserved opcode, 0x3) is a protocol error: close 1002."""
    return await _bad_frame(p, raw_frame(0x3, b"{}"), "a frame with the reserved opcode 0x3", 1002)


# -- running ---------------------------------------------------------------------------------


def selected(only: Sequence[str]) -> list[Check]:
    """The checks whose names match one of the glob patterns (all without patterns)."""
    return [c for c in CHECKS if not only or any(fnmatch.fnmatchcase(c.name, pattern) for pattern in only)]


def _skip_reason(item: Check, settings: Settings) -> str | None:
    reason = need(settings, *item.needs)
    if reason is None and settings.skip_config and "config" in item.tags:
        reason = "needs the default limits (--skip-config)"
    return reason


def _innermost(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def run_one(item: Check, settings: Settings, base: Base) -> Result:
    """Run one check within its deadline; never raises (but for cancellation)."""
    tags = list(item.tags)
    reason = _skip_reason(item, settings)
    if reason is not None:
        return Result(name=item.name, status="SKIP", detail=reason, seconds=0.0, tags=tags)
    probe = Probe(settings, base, item.name)
    started = time.perf_counter()
    status: Literal["PASS", "FAIL", "SKIP"] = "FAIL"
    with anyio.move_on_after(settings.timeout) as scope:
        try:
            detail = await item.run(probe)
            status = "PASS"
        except BaseException as raised:
            exc = _innermost(raised)
            if isinstance(exc, Skipped):
                status, detail = "SKIP", str(exc)
            elif isinstance(exc, Failed):
                detail = str(exc)
            elif isinstance(exc, Refusal | Refused):
                detail = f"{probe.waiting}: refused, {exc}"
            elif isinstance(exc, OSError | ClientError | anyio.BrokenResourceError | anyio.EndOfStream):
                detail = f"{probe.waiting}: {type(exc).__name__}: {exc}"
            elif isinstance(exc, Exception):
                detail = f"{probe.waiting}: unexpected {type(exc).__name__}: {exc}"
            else:
                raise
        finally:
            await probe.aclose()
    if scope.cancelled_caught:
        status, detail = "FAIL", f"timed out after {settings.timeout:g} s waiting for {probe.waiting}"
    if status == "FAIL" and "decision" in item.tags:
        detail = f"(decision) {detail}"
    frames = probe.transcript[-SHOWN_LINES:] if status == "FAIL" else []
    if status == "FAIL" and len(probe.transcript) > SHOWN_LINES:
        frames.insert(0, f"... ({len(probe.transcript) - SHOWN_LINES} earlier lines)")
    seconds = round(time.perf_counter() - started, 3)
    return Result(
        name=item.name, status=status, detail=" ".join(detail.split()), seconds=seconds, tags=tags, frames=frames
    )


async def run_checks(settings: Settings, progress: Callable[[Result], None] | None = None) -> list[Result]:
    """Run the selected checks against ``settings.url``, one after another.

    ``progress`` is called with each result as it comes. Raises ValueError for a bad URL::

        results = await run_checks(Settings(url="ws://127.0.0.1:8787"))
        print(format_table(results))
    """
    base = Base.parse(settings.url)
    results = []
    for item in selected(settings.only):
        result = await run_one(item, settings, base)
        results.append(result)
        if progress is not None:
            progress(result)
    return results


# -- reporting -------------------------------------------------------------------------------


def _counts(results: Sequence[Result]) -> dict[str, int]:
    return {status: sum(r.status == status for r in results) for status in ("PASS", "FAIL", "SKIP")}


def format_table(results: Sequence[Result], *, width: int = 100) -> str:
    """The report: one row per check, a summary line, then each failure's frames."""
    name_width = max([len("CHECK"), *(len(r.name) for r in results)])
    lines = [f"{'CHECK':<{name_width}}  RESULT  DETAIL"]
    for r in results:
        detail = r.detail if len(r.detail) <= width else r.detail[: width - 3] + "..."
        lines.append(f"{r.name:<{name_width}}  {r.status:<6}  {detail}")
    counts = _counts(results)
    seconds = sum(r.seconds for r in results)
    lines.append(
        f"\n{len(results)} checks: {counts['PASS']} passed, {counts['FAIL']} failed, "
        f"{counts['SKIP']} skipped in {seconds:.1f} s"
    )
    for r in results:
        if r.status == "FAIL":
            lines += ["", f"FAIL {r.name}: {r.detail}", "  frames seen (A > sent, A < received):"]
            lines += [f"    {line}" for line in r.frames] or ["    (none)"]
    return "\n".join(lines)


def format_json(results: Sequence[Result], settings: Settings) -> str:
    """The report as one JSON document: ``ok``, the counts, and every result."""
    counts = _counts(results)
    document = {
        "url": settings.url,
        "ok": counts["FAIL"] == 0,
        "passed": counts["PASS"],
        "failed": counts["FAIL"],
        "skipped": counts["SKIP"],
        "seconds": round(sum(r.seconds for r in results), 3),
        "results": results,
    }
    return msgspec.json.encode(document).decode()


# -- the command line ------------------------------------------------------------------------


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 600, not {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``relaycore check`` (see docs/check.md)."""
    parser.add_argument(
        "url", nargs="?", help="the relay's base URL: ws://host:port or http://host:port (a path is a mount prefix)"
    )
    parser.add_argument(
        "--namespace", metavar="NS", help="a reserved namespace of the relay (reserved and push checks)"
    )
    parser.add_argument("--join-key", metavar="K", help="the namespace's joinKey, if it has one")
    parser.add_argument("--send-key", metavar="K", help="the namespace's sendKey (enables the HTTP push checks)")
    parser.add_argument(
        "--skip-config", action="store_true", help="skip the checks that assume the default limits (size, rate)"
    )
    parser.add_argument(
        "--only", action="append", default=[], metavar="PATTERN", help="run the checks matching this glob (repeatable)"
    )
    parser.add_argument("--timeout", type=_seconds, default=5.0, metavar="S", help="seconds per check (default 5)")
    parser.add_argument("--prefix", default="check-", help="start of the random channel names (default check-)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--list", action="store_true", help="list the checks and exit")


def run(args: argparse.Namespace) -> int:
    """``relaycore check``: 0 when no check failed, 1 when one did, 2 for bad usage or no relay."""
    if args.list:
        for item in selected(args.only):
            tags = f" [{', '.join(item.tags)}]" if item.tags else ""
            print(f"{item.name:<28} {item.summary}{tags}")
        return 0
    if args.url is None:
        fail("the relay's URL is missing (ws://host:port)", command="relaycore check")
        return 2
    if (args.join_key or args.send_key) and not args.namespace:
        fail("--join-key and --send-key are the keys of a --namespace", command="relaycore check")
        return 2
    settings = Settings(
        url=args.url,
        namespace=args.namespace,
        join_key=args.join_key,
        send_key=args.send_key,
        skip_config=args.skip_config,
        only=tuple(args.only),
        timeout=args.timeout,
        prefix=args.prefix,
    )
    try:
        base = Base.parse(settings.url)
    except ValueError as exc:
        fail(str(exc), command="relaycore check")
        return 2
    if not selected(settings.only):
        fail(f"no check matches {' '.join(settings.only)} (see --list)", command="relaycore check")
        return 2
    try:
        anyio.run(_reachable, base)
    except OSError as exc:
        fail(f"cannot reach {base.host}:{base.port}: {exc}", command="relaycore check")
        return 2
    results = anyio.run(run_checks, settings)
    print(format_json(results, settings) if args.json else format_table(results))
    return 1 if any(r.status == "FAIL" for r in results) else 0


async def _reachable(base: Base) -> None:
    with anyio.fail_after(10):
        stream = await base.stream()
    await stream.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m transports.check URL [options]``."""
    parser = argparse.ArgumentParser(
        prog="relaycore check", description="Check a relay against the itty-sockets protocol."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
