"""The harness's virtual member: a WebSocket client of the relay, with no socket.

A :class:`VirtualMember` runs on the core's client wire (:class:`~relaycore.client.ClientConnection`)
against a :class:`~relaycore.Connection`, the native server's framing adapter: the bytes it
writes are the relay's input, and the :class:`~relaycore.testing.Harness` hands it what the
relay wrote (``_receive``) as it flushes. It keeps the frames it received, decoded, for a test
to read, and the refusal of its upgrade (``_refusal``) for the harness to raise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from ._channel import Member
from ._client import Accepted, Binary, ClientConnection, ClientState, Closed, Refused, Text
from ._connection import Connection
from ._errors import RelayUsageError
from ._texts import CLOSE_ABNORMAL

__all__ = ["VirtualMember"]


def _kind(frame: Any) -> str:
    """A frame's type; a relayed message has none of its own (it is a ``message``)."""
    return str(frame.get("type", "message")) if isinstance(frame, dict) else "message"


def _matches(frame: Any, kind: str | None, fields: dict[str, Any]) -> bool:
    if kind is not None and _kind(frame) != kind:
        return False
    return isinstance(frame, dict) and all(frame.get(key) == value for key, value in fields.items())


class VirtualMember:
    """A WebSocket client of a :class:`~relaycore.testing.Harness`, with the JavaScript client's habits.

    It answers pings and the relay's close frame (unless :attr:`responsive` is False), and
    decodes every text frame it receives. The self-join is :attr:`hello`; every frame
    after it is kept, in order, in :meth:`frames`, and read with :meth:`next`,
    :meth:`expect` or :meth:`take`.
    """

    __slots__ = (
        "_flush",
        "_frames",
        "_read",
        "_refusal",
        "_wire",
        "closed",
        "connection",
        "hello",
    )

    def __init__(self, connection: Connection, wire: ClientConnection, flush: Callable[[], None]) -> None:
        #: The harness's flush: delivers everything a call caused.
        self._flush = flush
        #: The relay's side of this member (its state, deadline, problem), to look at.
        self.connection = connection
        self._wire = wire
        #: The self-join frame (``{"type": "join", "self": true, "uid": ...}``).
        self.hello: dict[str, Any] | None = None
        #: How the connection ended, once it did: the relay's close frame (code, reason),
        #: or ``(1006, "")`` when the relay dropped it without one (a dead peer).
        self.closed: tuple[int, str] | None = None
        self._frames: list[Any] = []
        self._read = 0
        self._refusal: Refused | None = None

    def __repr__(self) -> str:
        return f"<VirtualMember {self.uid} of {self.channel!r}>"

    @property
    def responsive(self) -> bool:
        """Whether the member answers pings and close frames. False plays a client whose
        network went away: the relay pings it, and drops it ``ping_timeout`` later."""
        return self._wire.answer_pings

    @responsive.setter
    def responsive(self, value: bool) -> None:
        self._wire.answer_pings = self._wire.answer_close = value

    @property
    def pings(self) -> int:
        """How many pings the relay sent."""
        return self._wire.pings

    @property
    def uid(self) -> str:
        """The uid the relay gave this connection (from the self-join)."""
        return str(self.hello["uid"]) if self.hello else ""

    @property
    def alias(self) -> str | None:
        """The alias the relay knows this member by, if any (from the self-join)."""
        alias = self.hello.get("alias") if self.hello else None
        return None if alias is None else str(alias)

    @property
    def channel(self) -> str:
        """The channel's name, as the relay decoded it."""
        member: Member | None = self.connection.member
        return member.channel.name if member is not None else ""

    # -- sending --------------------------------------------------------------------------

    def send(self, value: Any, to: str | None = None) -> None:
        """Send a JSON-able value to the channel, or to member ``to`` only (``\\x1f<uid>\\x1f<json>``)."""
        text = msgspec.json.encode(value).decode()
        self.send_raw(text if to is None else f"\x1f{to}\x1f{text}")

    def send_raw(self, data: str | bytes) -> None:
        """Send one message as it stands: ``str`` as a text frame, ``bytes`` as a binary one."""
        if self.closed is not None:
            raise RelayUsageError(f"{self!r} is closed {self.closed}")
        wire = self._wire
        self.connection.receive_data(wire.send_text(data) if isinstance(data, str) else wire.send_binary(data))
        self._flush()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (the relay answers; the others see the leave)."""
        if self.closed is None and self._wire.state is ClientState.OPEN:
            self.connection.receive_data(self._wire.close(code, reason))
            self._flush()

    def drop(self) -> None:
        """Lose the connection without a close frame (a network failure): the member leaves."""
        if self.closed is None:
            self.closed = (CLOSE_ABNORMAL, "")
            self.connection.connection_lost()
            self._flush()

    # -- reading --------------------------------------------------------------------------

    def frames(self) -> list[Any]:
        """Every frame received after the self-join, decoded, oldest first (read or not)."""
        return self._frames[:]

    def next(self) -> Any:
        """The next frame not read yet; AssertionError when there is none."""
        if self._read >= len(self._frames):
            raise AssertionError(f"{self!r} has no unread frame; it received {self._frames}")
        frame = self._frames[self._read]
        self._read += 1
        return frame

    def expect(self, type: str | None = None, /, **fields: Any) -> Any:
        """Read the next frame, which must be of ``type`` and carry ``fields``; return it.

        ``type`` is the frame's ``type`` (``join``, ``leave``, ``error``), or ``message`` for
        a relayed message. A field given as None must be absent (the relay leaves out keys
        with no value). Anything else raises AssertionError, showing what arrived.
        """
        wanted = f"a {type or 'any'!r} frame" + (" with " if fields else "")
        wanted += ", ".join(f"{key}={value!r}" for key, value in fields.items())
        if self._read >= len(self._frames):
            raise AssertionError(f"{self!r} expected {wanted}, but it has no unread frame; it received {self._frames}")
        frame = self._frames[self._read]
        if not _matches(frame, type, fields):
            raise AssertionError(f"{self!r} expected {wanted}; the next one is {frame}; unread: {self.unread()}")
        self._read += 1
        return frame

    def expect_nothing(self) -> None:
        """AssertionError unless every frame received has been read."""
        if self._read < len(self._frames):
            raise AssertionError(f"{self!r} expected nothing more, but has unread frames: {self.unread()}")

    def unread(self) -> list[Any]:
        """The frames not read yet, oldest first (they stay unread)."""
        return self._frames[self._read :]

    def take(self) -> list[Any]:
        """The frames not read yet, oldest first; they count as read from now on."""
        frames = self.unread()
        self._read = len(self._frames)
        return frames

    # -- the wire ---------------------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        """Bytes the relay wrote to this member: handshake answer, then frames (the harness
        hands them over as it flushes)."""
        wire = self._wire
        for event in wire.receive_data(data):
            if isinstance(event, Text):
                frame = msgspec.json.decode(event.data)
                if self.hello is None:
                    self.hello = frame
                else:
                    self._frames.append(frame)
            elif isinstance(event, Closed):
                self.closed = (event.code, event.reason)
            elif isinstance(event, Refused):
                self._refusal = event
            elif not isinstance(event, Accepted | Binary):
                raise RelayUsageError(f"{self!r} got an unexpected {event!r}")
        owed = wire.data_to_send()
        if owed:
            self.connection.receive_data(owed)
