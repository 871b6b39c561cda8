"""Minimal epoll WebSocket client engine for the load generator.

Raw non-blocking sockets, a hand-written opening handshake and a frame parser
that only reads WebSocket headers. Data frames (broadcast envelopes carrying a
benchmark message) are recognised by a marker, and once one has been seen on
a connection its length and header bytes become a signature: a whole read
buffer of same-size data frames is then validated with a few strided byte
slices (C speed) instead of a Python loop per frame. Only the self-join frame
is JSON-parsed. Client frames use an all-zero masking key, which is valid
WebSocket and keeps the payload bytes unchanged.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import os
import resource
import select
import socket
import time
from collections.abc import Callable
from typing import Any

from relaycore.client import client_frame as frame_of_client

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MARK = b'"RCB'  # start of every benchmark message (a JSON string)
SEQ_DIGITS = 10
RECV_SIZE = 65536
CLOSE_FRAME = b"\x88\x82\x00\x00\x00\x00\x03\xe8"  # CLOSE 1000, zero mask
EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
CONNECTING, HANDSHAKING, OPEN, CLOSING, CLOSED = range(5)


def raise_nofile_limit() -> int:
    """Raise RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One masked, final client frame (masking key 0, so payload is as is)."""
    return frame_of_client(opcode, payload, b"\x00\x00\x00\x00")


def make_message(seq: int, size: int) -> bytes:
    """A JSON string of exactly ``size`` bytes: ``"RCB<seq>:xxx..."``."""
    body = MARK + str(seq).zfill(SEQ_DIGITS).encode() + b":"
    pad = size - len(body) - 1
    if pad < 0:
        raise ValueError(f"message size must be at least {len(body) + 1}")
    return body + b"x" * pad + b'"'


SockOpts = tuple[tuple[int, int, int], ...]  # (level, option, value) for setsockopt


def _no_recv(size: int) -> bytes:
    raise BlockingIOError


class Engine:
    """The event loop: an epoll set of connections plus global counters."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.ep = select.epoll()
        self.conns: dict[int, Conn] = {}
        self.delivered = 0  # data frames received by receiver connections
        self.others = 0  # non-data frames after the self-join (join/leave/...)
        self.errors = 0  # error frames
        self.leaves = 0  # leave notices
        self.opened = 0  # self-joins received
        self.failed = 0  # connections that failed or were dropped
        self.last_failure = ""
        self.record_latency = False
        self.latency_from_seq = 0  # ignore deliveries of earlier (warm-up) messages
        self.coalesce = 0.0  # seconds to sleep after each busy poll
        self.same: bytes | None = None  # the last read that was exactly one data frame
        self.send_times: list[float] = []  # perf_counter at send, by seq
        self.latencies: list[float] = []
        self.on_open: Callable[[Conn], None] | None = None
        self.on_closed: Callable[[Conn], None] | None = None

    def connect(self, path: str, receiver: bool = True, sockopts: SockOpts = (), sse: bool = False) -> Conn:
        conn = (SSEConn if sse else Conn)(self, path, receiver)
        conn.start(sockopts)
        return conn

    def poll_once(self, timeout: float) -> None:
        conns = self.conns
        ready = self.ep.poll(max(timeout, 0.0))
        for fd, events in ready:
            conn = conns.get(fd)
            if conn is None:
                continue
            if events == EPOLLIN and conn.state == OPEN:  # hot path, inlined
                try:
                    chunk = conn.recv(RECV_SIZE)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    conn.fail(f"recv: {exc}")
                    continue
                if chunk == self.same and not conn.rbuf and conn.reply is None:
                    # Byte for byte the frame another receiver just got: a broadcast
                    # reaches every member as the same bytes, so no parsing is needed.
                    conn.data += 1
                    self.delivered += conn.receiver
                    continue
                if chunk:
                    conn.feed(chunk)
                    continue
            conn.on_event(events)
        if ready and self.coalesce > 0:
            # Let frames pile up in the socket buffers so one recv() returns
            # many of them: the relay does the same work, the load side less.
            time.sleep(self.coalesce)

    def run(
        self,
        until: Callable[[], bool],
        timeout: float,
        hook: Callable[[], float | None] | None = None,
        tick: float = 0.05,
    ) -> bool:
        """Poll until ``until()`` or ``timeout`` s; ``hook`` may shorten waits."""
        deadline = time.monotonic() + timeout
        while True:
            wait = hook() if hook is not None else None
            if until():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.poll_once(min(tick, left) if wait is None else min(wait, tick, left))

    def close_all(self) -> None:
        for conn in list(self.conns.values()):
            conn.shutdown()
        self.ep.close()


class Conn:
    """One client WebSocket connection driven by the Engine."""

    # fmt: off
    __slots__ = (
        "checks", "close_code", "data", "engine", "fd", "flen", "hello", "key", "moff", "other",
        "path", "paused", "rbuf", "receiver", "recv", "reply", "sock", "state", "total", "uid",
        "wbuf",
    )
    # fmt: on

    def __init__(self, engine: Engine, path: str, receiver: bool) -> None:
        self.engine = engine
        self.path = path
        self.receiver = receiver
        self.sock: socket.socket | None = None
        self.recv: Callable[[int], bytes] = _no_recv
        self.fd = -1
        self.state = CONNECTING
        self.key = base64.b64encode(os.urandom(16))
        self.rbuf = b""
        self.wbuf = bytearray()
        self.uid = ""
        self.total = 0
        self.data = 0  # data frames received on this connection
        self.other = 0
        self.reply: bytes | None = None  # sent back once per data frame received
        self.flen = 0  # learned data frame length (0: not learned yet)
        self.checks: tuple[tuple[int, int], ...] = ()
        self.moff = 0  # offset of MARK inside a data frame
        self.hello: dict[str, Any] = {}
        self.close_code: int | None = None  # from the server's CLOSE frame, once one came
        self.paused = False

    # -- connection lifecycle ------------------------------------------------

    def start(self, sockopts: SockOpts = ()) -> None:
        sock = socket.socket(socket.AF_INET6 if ":" in self.engine.host else socket.AF_INET)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for level, option, value in sockopts:
            sock.setsockopt(level, option, value)
        self.sock = sock
        self.recv = sock.recv
        self.fd = sock.fileno()
        err = sock.connect_ex((self.engine.host, self.engine.port))
        if err not in (0, errno.EINPROGRESS):
            self.fail(f"connect: {os.strerror(err)}")
            return
        self.engine.conns[self.fd] = self
        self.engine.ep.register(self.fd, EPOLLOUT)

    def fail(self, reason: str) -> None:
        if self.state not in (CLOSING, CLOSED):
            self.engine.failed += 1
            self.engine.last_failure = reason
        self.shutdown()

    def shutdown(self) -> None:
        """Drop the socket without a closing handshake."""
        if self.state == CLOSED:
            return
        self.state = CLOSED
        if self.sock is not None:
            self.engine.conns.pop(self.fd, None)
            if not self.paused:
                with contextlib.suppress(OSError, ValueError):
                    self.engine.ep.unregister(self.fd)
            self.sock.close()
        if self.engine.on_closed is not None:
            self.engine.on_closed(self)

    def pause(self) -> None:
        """Stop reading (and writing): the socket leaves the epoll set but stays open."""
        if self.state != CLOSED and not self.paused:
            self.paused = True
            self.engine.ep.unregister(self.fd)

    def resume(self) -> None:
        if self.state != CLOSED and self.paused:
            self.paused = False
            self.engine.ep.register(self.fd, EPOLLIN | EPOLLOUT if self.wbuf else EPOLLIN)

    def close(self) -> None:
        """Start a closing handshake; the socket closes on CLOSE or EOF."""
        if self.state == OPEN:
            self.state = CLOSING
            self.send(CLOSE_FRAME)

    def send(self, data: bytes) -> None:
        if self.wbuf:
            self.wbuf += data
            return
        try:
            sent = self.sock.send(data)  # type: ignore[union-attr]
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.fail(f"send: {exc}")
            return
        if sent < len(data):
            self.wbuf += data[sent:]
            if not self.paused:
                self.engine.ep.modify(self.fd, EPOLLIN | EPOLLOUT)

    def on_event(self, events: int) -> None:
        if events & EPOLLOUT:
            if self.state == CONNECTING:
                self.on_connected()
                return
            self.flush()
        if events & (EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
            self.on_readable()

    def on_connected(self) -> None:
        sock = self.sock
        assert sock is not None
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.fail(f"connect: {os.strerror(err)}")
            return
        self.state = HANDSHAKING
        self.engine.ep.modify(self.fd, EPOLLIN)
        self.send(self.request())

    def request(self) -> bytes:
        """The opening request: a WebSocket upgrade."""
        host = self.engine.host
        netloc = f"[{host}]:{self.engine.port}" if ":" in host else f"{host}:{self.engine.port}"
        return (
            (
                f"GET {self.path} HTTP/1.1\r\nHost: {netloc}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: "
            ).encode()
            + self.key
            + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )

    def flush(self) -> None:
        try:
            sent = self.sock.send(self.wbuf)  # type: ignore[union-attr]
        except BlockingIOError:
            return
        except OSError as exc:
            self.fail(f"send: {exc}")
            return
        del self.wbuf[:sent]
        if not self.wbuf and self.state != CLOSED:
            self.engine.ep.modify(self.fd, EPOLLIN)

    def on_readable(self) -> None:
        try:
            chunk = self.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self.fail(f"recv: {exc}")
            return
        if not chunk:
            if self.state == CLOSING:
                self.shutdown()
            else:
                self.fail("connection closed by server")
            return
        if self.state == HANDSHAKING:
            self.on_handshake(chunk)
        else:
            self.feed(chunk)

    def on_handshake(self, chunk: bytes) -> None:
        buf = self.rbuf + chunk
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            self.rbuf = buf
            if len(buf) > 16384:
                self.fail("oversized handshake response")
            return
        head = buf[:end].decode("latin-1").split("\r\n")
        if not head[0].startswith("HTTP/1.1 101"):
            self.fail(f"handshake refused: {head[0]}")
            return
        expected = base64.b64encode(hashlib.sha1(self.key + GUID).digest()).decode()
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("sec-websocket-accept") != expected:
            self.fail("bad Sec-WebSocket-Accept")
            return
        self.state = OPEN
        self.rbuf = b""
        if len(buf) > end + 4:
            self.feed(buf[end + 4 :])

    # -- frames ----------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Consume server frames; keep a trailing partial frame in rbuf."""
        if self.rbuf:
            data = self.rbuf + data
            self.rbuf = b""
        flen = self.flen
        if flen and len(data) >= flen:
            k = len(data) // flen
            end = k * flen
            for off, value in self.checks:
                if data[off:end:flen].count(value) != k:
                    break
            else:
                self.on_data_run(data, k, self.moff, flen)
                if end == len(data):
                    if k == 1 and not self.engine.record_latency:
                        self.engine.same = data
                    return
                data = data[end:]
        self.parse(data)

    def on_data_run(self, data: bytes, k: int, moff: int, step: int) -> None:
        """``k`` back-to-back data frames, ``step`` bytes each, MARK at ``moff``."""
        self.data += k
        engine = self.engine
        if self.receiver:
            engine.delivered += k
        if engine.record_latency:
            now = time.perf_counter()
            times = engine.send_times
            lat = engine.latencies
            first = engine.latency_from_seq
            pos = moff + len(MARK)
            for _ in range(k):
                seq = int(data[pos : pos + SEQ_DIGITS])
                if seq >= first:
                    lat.append(now - times[seq])
                pos += step
        if self.reply is not None:
            self.send(self.reply * k)

    def parse(self, data: bytes) -> None:
        """Frame-by-frame slow path (headers only, payload searched for MARK)."""
        pos = 0
        n = len(data)
        while n - pos >= 2:
            b1 = data[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                head = 10
            if b1 & 0x80:
                head += 4  # servers must not mask; skip the key if one does
            end = pos + head + length
            if end > n:
                break
            self.on_frame(data, pos, head, end)
            if self.state == CLOSED:
                return
            pos = end
        if pos < n:
            self.rbuf = data[pos:]

    def on_frame(self, data: bytes, pos: int, head: int, end: int) -> None:
        opcode = data[pos] & 0x0F
        if opcode in (0x1, 0x2):
            mark = data.find(MARK, pos + head, end)
            if mark >= 0 and self.uid:
                if not self.flen:
                    self.learn(data, pos, head, end, mark)
                self.on_data_run(data[pos:end], 1, mark - pos, end - pos)
                return
            payload = data[pos + head : end]
            if not self.uid:
                self.on_hello(payload)
                return
            self.other += 1
            self.engine.others += 1
            if b'"error"' in payload:
                self.engine.errors += 1
            elif b'"leave"' in payload:
                self.engine.leaves += 1
        elif opcode == 0x9:
            self.send(client_frame(data[pos + head : end], 0xA))
        elif opcode == 0x8:
            if end - pos - head >= 2:
                self.close_code = int.from_bytes(data[pos + head : pos + head + 2], "big")
            if self.state == OPEN:
                self.send(CLOSE_FRAME)
            self.shutdown()

    def learn(self, data: bytes, pos: int, head: int, end: int, mark: int) -> None:
        """Remember the data frame signature for the strided fast path."""
        self.flen = end - pos
        self.moff = mark - pos
        checks = [(i, data[pos + i]) for i in range(head)]
        checks.append((self.moff + 1, MARK[1]))
        self.checks = tuple(checks)

    def on_hello(self, payload: bytes) -> None:
        try:
            hello = json.loads(payload)
        except ValueError:
            self.fail(f"first frame is not JSON: {payload[:80]!r}")
            return
        if not (isinstance(hello, dict) and hello.get("type") == "join" and hello.get("self")):
            self.fail(f"first frame is not a self-join: {payload[:80]!r}")
            return
        self.hello = hello
        self.uid = str(hello.get("uid", ""))
        self.total = int(hello.get("total", 0))
        self.engine.opened += 1
        if self.engine.on_open is not None:
            self.engine.on_open(self)


class SSEConn(Conn):
    """A member over the HTTP door's Server-Sent Events (``Accept: text/event-stream``):
    the same counters as a WebSocket receiver, each frame an event ``data: <frame>``."""

    __slots__ = ()

    def request(self) -> bytes:
        """The opening request: a GET asking for an event stream."""
        return f"GET {self.path} HTTP/1.1\r\nHost: {self.engine.host}\r\nAccept: text/event-stream\r\n\r\n".encode()

    def on_handshake(self, chunk: bytes) -> None:
        buf = self.rbuf + chunk
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            self.rbuf = buf
            return
        if not buf.startswith(b"HTTP/1.1 200"):
            status = buf.partition(b"\r")[0].decode("latin-1")
            self.fail(f"stream refused: {status}")
            return
        self.state = OPEN
        self.rbuf = b""
        if len(buf) > end + 4:
            self.feed(buf[end + 4 :])

    def close(self) -> None:
        self.shutdown()

    def feed(self, data: bytes) -> None:
        """Count whole events (a benchmark message's event holds MARK); keep a partial one.

        Benchmark messages all have one size, so their events do too: a read of k such
        events is recognised by a byte at two strides (as the WebSocket receivers do) instead
        of being searched."""
        if self.rbuf:
            data = self.rbuf + data
            self.rbuf = b""
        flen = self.flen
        k = len(data) // flen if flen else 0
        if k:
            end = k * flen
            if data[flen - 1 : end : flen].count(10) == k and data[self.moff + 1 : end : flen].count(MARK[1]) == k:
                self.on_data_run(data, k, 0, 0)
                if end == len(data):
                    return
                data = data[end:]
        cut = data.rfind(b"\n\n") + 2
        self.rbuf = data[cut:]
        if cut < 2:
            return
        if not self.uid or not flen:
            for event in data[:cut].split(b"\n\n")[:-1]:
                self.on_event_text(event)
            return
        marks = data.count(MARK, 0, cut)
        if marks:
            self.on_data_run(data, marks, 0, 0)
        events = data.count(b"\n\n", 0, cut)
        if events > marks:
            self.other += events - marks
            self.engine.others += events - marks

    def on_event_text(self, event: bytes) -> None:
        """One event before the self-join was read (the slow path)."""
        if event.startswith(b"event: ") or event.startswith(b":"):
            return  # the session event, or a keepalive
        payload = event.partition(b"data: ")[2]
        if not self.uid:
            self.on_hello(payload)
        elif MARK in payload:
            if not self.flen:  # learn the events' size and where MARK sits in them
                self.flen = len(event) + 2
                self.moff = event.find(MARK)
            self.on_data_run(payload, 1, 0, 0)
        else:
            self.other += 1
            self.engine.others += 1
