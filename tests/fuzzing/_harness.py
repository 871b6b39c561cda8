"""Drive :class:`relaycore.Connection` objects with bytes and check invariants after every call.

A :class:`Harness` owns one hub (fake clock, seeded uids) and any number of connections.
Each call into a connection (``receive_data``, ``connection_lost``, ``close``) is followed
by :meth:`Harness.check`, which drains every outbox as a transport would and checks:

- no exception escapes the call (the harness does not catch anything);
- every state only moves forward (HTTP -> WEBSOCKET -> CLOSING -> CLOSED, or straight to
  CLOSED), and a connection in WEBSOCKET or CLOSING did upgrade;
- a connection that was CLOSED before a call gets no bytes during it (from anyone);
- the 101 response comes whole, and is followed only by whole, unmasked, final frames
  without reserved bits;
- on a channel connection every data frame is a TEXT frame holding one JSON object
  (strictly parsed), the first frame is the self-join (or a close), control frames are
  pongs and at most one close, nothing follows the close, and the close code is one of
  the codes PROTOCOL.md uses (1000-1011, minus 1004-1006 which RFC 6455 forbids on the wire);
- on the ``/echo`` endpoint data frames are TEXT (valid UTF-8) or BINARY;
- the hub holds exactly one member for an open channel WebSocket and none for any other
  connection; no channel is empty; uids match ``[A-Za-z0-9]{6}`` and index their members;
- every member's last join/leave event told it the channel's real member count;
- once a member has left, no relayed message from it reaches anyone.
"""

from __future__ import annotations

import json
import re
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from relaycore import Config, Connection, Hub, State
from relaycore.testing import FakeClock, seeded_uids

from ._grammar import OP_BINARY, OP_CLOSE, OP_PONG, OP_TEXT

SEED = 20_240_601
RANK = {State.HTTP: 0, State.WEBSOCKET: 1, State.CLOSING: 2, State.CLOSED: 3}
#: Close codes the relay may put on the wire (PROTOCOL.md section 9 range; RFC 6455 7.4.1).
ALLOWED_CLOSE_CODES = frozenset(range(1000, 1012)) - {1004, 1005, 1006}
# When the CLIENT starts the close, the relay answers with the client's own code, as RFC
# 6455 section 5.5.1 describes; valid client codes beyond the relay's own set are the
# registered 1012-1014 and the application/private range 3000-4999. The relay never
# starts a close with one of them (see the close-code checks in tests/transports).
ECHOED_CLOSE_CODES = frozenset(range(1012, 1015)) | frozenset(range(3000, 5000))
UID_RE = re.compile(r"[A-Za-z0-9]{6}\Z")
SWITCH = b"HTTP/1.1 101 "


def known_uids(seed: int = SEED, count: int = 6) -> list[str]:
    """The uids a hub built with ``seeded_uids(seed)`` hands out, in order."""
    source = seeded_uids(seed)
    return [source() for _ in range(count)]


class FuzzFailure(AssertionError):
    """An invariant does not hold."""


def fail(message: str) -> None:
    raise FuzzFailure(message)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"not JSON: {name}")


def strict_json(payload: bytes) -> Any:
    """Decode ``payload`` as strict JSON (UTF-8, no NaN/Infinity); raise on anything else."""
    text = payload.decode("utf-8")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        return json.loads(text, parse_constant=_reject_constant)
    finally:
        sys.setrecursionlimit(limit)


@dataclass(frozen=True)
class ServerFrame:
    fin: bool
    opcode: int
    payload: bytes


def parse_server_frames(data: bytes) -> tuple[list[ServerFrame], bytes]:
    """Whole server frames from the front of ``data``, and the bytes left over."""
    frames: list[ServerFrame] = []
    pos = 0
    while len(data) - pos >= 2:
        b0, b1 = data[pos], data[pos + 1]
        if b0 & 0x70:
            fail(f"server frame with reserved bits: {data[pos : pos + 16]!r}")
        if b1 & 0x80:
            fail(f"masked server frame: {data[pos : pos + 16]!r}")
        n = b1 & 0x7F
        head = 2
        if n == 126:
            if len(data) - pos < 4:
                break
            (n,) = struct.unpack_from("!H", data, pos + 2)
            head = 4
        elif n == 127:
            if len(data) - pos < 10:
                break
            (n,) = struct.unpack_from("!Q", data, pos + 2)
            head = 10
        if len(data) - pos < head + n:
            break
        frames.append(ServerFrame(bool(b0 & 0x80), b0 & 0x0F, data[pos + head : pos + head + n]))
        pos += head + n
    return frames, data[pos:]


@dataclass(eq=False)
class Tracked:
    """One connection under test and what its client has read so far."""

    conn: Connection
    label: str
    rank: int = 0
    http: bytearray = field(default_factory=bytearray)
    switched: bool = False
    frames: list[ServerFrame] = field(default_factory=list)
    closed_by_server: bool = False
    #: ``total`` of the last join or leave event received (the member count it was told).
    last_total: int | None = None

    @property
    def echo(self) -> bool:
        return self.conn.upgraded and self.conn.member is None


class Harness:
    """One hub, many connections, invariants checked after every call."""

    def __init__(self, config: Config, seed: int = SEED) -> None:
        self.clock = FakeClock()
        self.hub = Hub(config, self.clock, seeded_uids(seed))
        self.tracked: list[Tracked] = []
        #: (channel name, uid) of members that have left.
        self.departed: set[tuple[str, str]] = set()

    # -- calls ------------------------------------------------------------------------

    def open(self, label: str) -> Tracked:
        tracked = Tracked(Connection(self.hub, client=f"10.0.0.{len(self.tracked) + 1}"), label)
        self.tracked.append(tracked)
        return tracked

    def feed(self, t: Tracked, data: bytes) -> None:
        assert data, "an empty read is EOF; use eof()"
        self._call(lambda: t.conn.receive_data(data))

    def eof(self, t: Tracked) -> None:
        self._call(lambda: t.conn.receive_data(b""))
        if t.conn.state is not State.CLOSED:
            fail(f"{t.label}: still {t.conn.state} after the peer's EOF")

    def lost(self, t: Tracked) -> None:
        self._call(t.conn.connection_lost)
        if t.conn.state is not State.CLOSED:
            fail(f"{t.label}: still {t.conn.state} after connection_lost()")

    def close(self, t: Tracked, code: int) -> None:
        self._call(lambda: t.conn.close(code))
        if t.conn.state not in (State.CLOSING, State.CLOSED):
            fail(f"{t.label}: still {t.conn.state} after close({code})")

    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def _call(self, call: Callable[[], None]) -> None:
        before = {id(t): t.conn.state for t in self.tracked}
        departed = set(self.departed)
        call()
        self.check(before, departed)

    # -- invariants ---------------------------------------------------------------------

    def flush(self) -> dict[int, bytes]:
        """Write out every outbox as a transport does: all of it, then ``resume()`` (the
        next pipelined HTTP request, whose answer may reach other connections too), until
        nothing more comes. Returns what each connection wrote."""
        written: dict[int, list[bytes]] = {}
        busy = True
        while busy:
            busy = False
            for t in self.tracked:
                outbox = t.conn.outbox
                while outbox:
                    chunk = outbox.view()
                    outbox.consume(len(chunk))
                    written.setdefault(id(t), []).append(chunk)
                t.conn.resume()
                busy = busy or bool(outbox)
        return {key: b"".join(chunks) for key, chunks in written.items()}

    def check(self, before: dict[int, State], departed: set[tuple[str, str]]) -> None:
        written = self.flush()
        for t in self.tracked:
            self._check_connection(t, before.get(id(t), State.HTTP), departed, written)
        self._check_hub()
        for t in self.tracked:
            member = t.conn.member
            if member is not None and not member.joined:
                self.departed.add((member.channel.name, member.uid))

    def _check_connection(
        self, t: Tracked, was: State, departed: set[tuple[str, str]], written: dict[int, bytes]
    ) -> None:
        conn = t.conn
        state = conn.state
        rank = RANK[state]
        if rank < t.rank:
            fail(f"{t.label}: state went back to {state}")
        if state in (State.WEBSOCKET, State.CLOSING) and not conn.upgraded:
            fail(f"{t.label}: {state} without a WebSocket upgrade")
        t.rank = rank
        data = written.get(id(t), b"")
        if was is State.CLOSED and data:
            fail(f"{t.label}: got {len(data)} bytes while CLOSED: {data[:80]!r}")
        ws_bytes = b""
        if not t.switched:
            t.http += data
            at = t.http.find(SWITCH)
            if at >= 0:
                end = t.http.find(b"\r\n\r\n", at)
                if end < 0:
                    fail(f"{t.label}: partial 101 response: {bytes(t.http[at:])!r}")
                ws_bytes = bytes(t.http[end + 4 :])
                del t.http[end + 4 :]
                t.switched = True
            if t.http and not t.http.startswith(b"HTTP/1.1 "):
                fail(f"{t.label}: output does not start with an HTTP/1.1 status line: {bytes(t.http[:80])!r}")
        else:
            ws_bytes = data
        if t.switched != conn.upgraded:
            fail(f"{t.label}: upgraded={conn.upgraded} but a 101 response was written={t.switched}")
        new, rest = parse_server_frames(ws_bytes)
        if rest:
            fail(f"{t.label}: partial server frame left after a call: {rest[:40]!r}")
        for frame in new:
            self._check_frame(t, frame, departed)
            t.frames.append(frame)

    def _check_frame(self, t: Tracked, frame: ServerFrame, departed: set[tuple[str, str]]) -> None:
        label = t.label
        if t.closed_by_server:
            fail(f"{label}: frame after the server's close frame: {frame}")
        if not frame.fin:
            fail(f"{label}: fragmented server frame: {frame}")
        if frame.opcode == OP_CLOSE:
            t.closed_by_server = True
            self._check_close(label, frame.payload)
            if t.conn.state not in (State.CLOSING, State.CLOSED):
                fail(f"{label}: wrote a close frame but is {t.conn.state}")
            return
        if frame.opcode == OP_PONG:
            if len(frame.payload) > 125:
                fail(f"{label}: pong longer than 125 bytes")
            return
        if t.echo:
            if frame.opcode == OP_TEXT:
                try:
                    frame.payload.decode("utf-8")
                except UnicodeDecodeError:
                    fail(f"{label}: /echo text frame with invalid UTF-8: {frame.payload[:60]!r}")
            elif frame.opcode != OP_BINARY:
                fail(f"{label}: unexpected server frame on /echo: {frame}")
            return
        if frame.opcode != OP_TEXT:
            fail(f"{label}: server data frame is not TEXT: opcode {frame.opcode}, {frame.payload[:60]!r}")
        try:
            value = strict_json(frame.payload)
        except (ValueError, UnicodeDecodeError) as exc:
            fail(f"{label}: server text frame is not valid JSON ({exc}): {frame.payload[:120]!r}")
        if not isinstance(value, dict):
            fail(f"{label}: server frame is not a JSON object: {frame.payload[:120]!r}")
        first = not any(f.opcode == OP_TEXT for f in t.frames)
        if first and not (value.get("type") == "join" and value.get("self") is True):
            fail(f"{label}: first frame is not the self-join: {value!r}")
        if first and not UID_RE.match(str(value.get("uid"))):
            fail(f"{label}: self-join uid {value.get('uid')!r} is not [A-Za-z0-9]{{6}}")
        kind = value.get("type", None)
        if kind in ("join", "leave"):
            t.last_total = value.get("total")
        if "type" in value:
            if kind not in ("join", "leave", "error") or ("message" in value and kind != "error"):
                fail(f"{label}: unexpected frame shape: {value!r}")
        else:
            if not isinstance(value.get("date"), int) or "message" not in value:
                fail(f"{label}: relayed envelope without date or message: {value!r}")
            member = t.conn.member
            sender = value.get("uid")
            if member is not None and sender is not None and (member.channel.name, sender) in departed:
                fail(f"{label}: got a message from {sender!r}, which had already left {member.channel.name!r}")

    @staticmethod
    def _check_close(label: str, payload: bytes) -> None:
        if not payload:
            return
        if len(payload) < 2 or len(payload) > 125:
            fail(f"{label}: close frame payload of {len(payload)} bytes")
        (code,) = struct.unpack("!H", payload[:2])
        if code not in ALLOWED_CLOSE_CODES and code not in ECHOED_CLOSE_CODES:
            fail(f"{label}: server close frame with code {code} (allowed: 1000-1011 but 1004-1006, or an echo)")
        try:
            payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            fail(f"{label}: close reason is not UTF-8: {payload!r}")

    def _check_hub(self) -> None:
        hub = self.hub
        sessions: dict[int, list[Any]] = {}
        count = 0
        for name, channel in hub.channels.items():
            if not channel.members:
                fail(f"empty channel {name!r} left in hub.channels")
            if channel.name != name:
                fail(f"channel {channel.name!r} filed under {name!r}")
            for uid, entry in channel.members.items():
                if entry.uid != uid or not UID_RE.match(uid):
                    fail(f"bad uid {uid!r} for {entry!r}")
                if entry.channel is not channel:
                    fail(f"{entry!r} filed in another channel")
                sessions.setdefault(id(entry.session), []).append(entry)
                count += 1
        if hub.connections != count:
            fail(f"hub.connections is {hub.connections}, channels hold {count}")
        for t in self.tracked:
            member = t.conn.member
            if member is not None and member.joined and t.last_total != len(member.channel.members):
                fail(
                    f"{t.label}: was last told total={t.last_total}, "
                    f"but {member.channel.name!r} has {len(member.channel.members)} members"
                )
        for t in self.tracked:
            mine = sessions.get(id(t.conn.session), [])
            conn = t.conn
            if conn.state is State.WEBSOCKET and not t.echo:
                if conn.member is None or mine != [conn.member]:
                    fail(f"{t.label}: open channel WebSocket but its hub memberships are {mine!r}")
            elif mine:
                fail(f"{t.label}: {conn.state} but still a member: {mine!r}")
