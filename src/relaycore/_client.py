"""The client's side of the wire, sans-I/O: one WebSocket connection to a relay, as a
client sees it, and one plain HTTP exchange.

Theory of operation. A :class:`ClientConnection` is fed the bytes a transport read and hands
back what they mean, the way :class:`relaycore.Connection` does for the server:

- :meth:`ClientConnection.request` gives the upgrade request to write first;
- :meth:`ClientConnection.receive_data` takes what was read (``b""`` at the end of the
  stream) and returns the events it completed: :class:`Accepted` or :class:`Refused` (status,
  headers, body) for the upgrade, then :class:`Text` and :class:`Binary` messages, and
  :class:`Closed` once (code 1006 when no close frame came);
- :meth:`ClientConnection.data_to_send` gives what the connection owes the relay on its own
  (pongs, the answer to the relay's close frame, a close of ours over a limit), to be
  written after each ``receive_data``;
- :meth:`ClientConnection.send_text`, :meth:`~ClientConnection.send_binary` and
  :meth:`~ClientConnection.close` give the bytes of a frame to write.

The policy a caller wants is set once: ``max_message_bytes`` (over it, close 1009),
``binary`` (deliver binary messages, or close 1003 as the protocol's clients do),
``answer_pings``/``answer_close`` (a test may play a peer that does not answer), and
``after_close`` (deliver what arrives between our close frame and the relay's answer: a
checker's transcript wants every frame, an application does not).
:class:`HTTPExchange` is the same for one plain HTTP request (a push, ``/health``): request
bytes out, bytes in, one bounded :class:`Response`.

The transport's client (``transports.client``), the conformance checker
(``transports.check``) and the harness's virtual members (:mod:`relaycore.testing`) all run
on these. :func:`parse_url` is the one reading of a relay URL, and :func:`client_frame` the
one hand-built frame (masked, as a client's must be) for the malformed frames a test or a
checker sends on purpose.

>>> conn = ClientConnection("relay.example", "/c/room")
>>> conn.request().startswith(b"GET /c/room HTTP/1.1")
True
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from enum import Enum
from typing import Any

import msgspec
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from ._client_http import MAX_BODY
from ._errors import RelayUsageError
from ._texts import CLOSE_ABNORMAL, CLOSE_TOO_BIG, CLOSE_UNSUPPORTED, TOO_BIG

__all__ = [
    "Accepted",
    "Binary",
    "ClientConnection",
    "ClientEvent",
    "ClientState",
    "Closed",
    "Refused",
    "Text",
    "client_frame",
]

Headers = list[tuple[str, str]]


def client_frame(opcode: int, payload: bytes, mask: bytes | None, *, fin: bool = True, rsv: int = 0) -> bytes:
    """One frame as a client sends it, built by hand, malformed ones included (wsproto
    refuses to write those). ``mask`` is 4 bytes, which a client draws at random; None sends
    the frame unmasked, which a server must refuse.

    >>> client_frame(0x1, b"hi", b"\\x00\\x00\\x00\\x00")
    b'\\x81\\x82\\x00\\x00\\x00\\x00hi'
    >>> client_frame(0x8, b"", None, rsv=4)
    b'\\xc8\\x00'
    """
    length = len(payload)
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    masked_bit = 0 if mask is None else 0x80
    if length < 126:
        head = bytes([first, masked_bit | length])
    elif length < 65536:
        head = bytes([first, masked_bit | 126]) + length.to_bytes(2, "big")
    else:
        head = bytes([first, masked_bit | 127]) + length.to_bytes(8, "big")
    if mask is None:
        return head + payload
    repeated = (mask * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(length, "big")
    return head + mask + masked


# -- events -----------------------------------------------------------------------------------


class Accepted(msgspec.Struct, frozen=True):
    """The upgrade was accepted (101): frames follow."""

    headers: Headers


class Refused(msgspec.Struct, frozen=True):
    """The upgrade was answered with another status; ``body`` is at most :data:`MAX_BODY` bytes."""

    status: int
    headers: Headers
    body: bytes


class Text(msgspec.Struct, frozen=True):
    """A whole text message."""

    data: str


class Binary(msgspec.Struct, frozen=True):
    """A whole binary message (only with ``binary=True``)."""

    data: bytes


class Closed(msgspec.Struct, frozen=True):
    """The connection is over: the relay's close (code, reason), ours, or 1006 without one."""

    code: int
    reason: str


ClientEvent = Accepted | Refused | Text | Binary | Closed


class ClientState(Enum):
    """Where a :class:`ClientConnection` is: each state moves only to the next ones."""

    CONNECTING = "connecting"  # the upgrade request is out, its answer not yet in
    OPEN = "open"
    CLOSING = "closing"  # our close frame is out, the relay's answer not yet in
    CLOSED = "closed"


class ClientConnection:
    """One WebSocket connection to a relay, from the client's side (see the module docstring)."""

    __slots__ = (
        "_owed",
        "_parts",
        "_refusal",
        "_size",
        "_ws",
        "after_close",
        "answer_close",
        "answer_pings",
        "binary",
        "host",
        "max_message_bytes",
        "pings",
        "state",
        "target",
    )

    def __init__(
        self,
        host: str,
        target: str,
        *,
        max_message_bytes: int | None = None,
        binary: bool = True,
        answer_pings: bool = True,
        answer_close: bool = True,
        after_close: bool = False,
    ) -> None:
        self.host = host
        self.target = target
        self.max_message_bytes = max_message_bytes
        self.binary = binary
        self.answer_pings = answer_pings
        self.answer_close = answer_close
        self.after_close = after_close
        self.state = ClientState.CONNECTING
        #: How many pings the relay sent.
        self.pings = 0
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._owed = bytearray()
        self._parts: list[str | bytes] = []
        self._size = 0
        self._refusal: tuple[int, Headers, bytearray] | None = None

    def __repr__(self) -> str:
        return f"<ClientConnection {self.host}{self.target} {self.state.value}>"

    def request(self, headers: Sequence[tuple[str, str]] = ()) -> bytes:
        """The upgrade request, with ``headers`` besides the WebSocket ones."""
        extra = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        return self._ws.send(Request(host=self.host, target=self.target, extra_headers=extra))

    def data_to_send(self) -> bytes:
        """What the connection owes the relay on its own since the last call (pongs, closes)."""
        owed, self._owed = bytes(self._owed), bytearray()
        return owed

    # -- sending ------------------------------------------------------------------------------

    def send_text(self, text: str) -> bytes:
        """A text message's frame. Raises :class:`relaycore.RelayUsageError` once the
        connection is not open (closing, closed, or the upgrade not yet answered)."""
        self._check_open()
        return self._ws.send(TextMessage(data=text))

    def send_binary(self, data: bytes) -> bytes:
        """A binary message's frame (raises as :meth:`send_text` does)."""
        self._check_open()
        return self._ws.send(BytesMessage(data=data))

    def _check_open(self) -> None:
        if self._ws.state is not ConnectionState.OPEN:
            raise RelayUsageError(f"{self!r} cannot send: the connection is not open")

    def close(self, code: int = 1000, reason: str = "") -> bytes:
        """Our close frame (b"" once the connection is not open any more)."""
        if self._ws.state is not ConnectionState.OPEN:
            return b""
        self.state = ClientState.CLOSING
        return self._ws.send(CloseConnection(code=code, reason=reason))

    # -- receiving ----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[ClientEvent]:
        """What ``data`` (``b""``: the end of the stream) completed, in order."""
        if self.state is ClientState.CLOSED:
            return []
        try:
            self._ws.receive_data(data or None)
            return self._events()
        except RemoteProtocolError as exc:
            if self.state is ClientState.CONNECTING:
                if not data and self._refusal is None:
                    return [
                        self._closed(CLOSE_ABNORMAL, "the relay closed the connection without answering the upgrade")
                    ]
                return self._refused_or_ended(f"an invalid answer to the upgrade: {exc}")
            return [self._closed(CLOSE_ABNORMAL, f"an invalid frame: {exc}")]

    def _events(self) -> list[ClientEvent]:
        found: list[ClientEvent] = []
        for event in self._ws.events():
            if isinstance(event, AcceptConnection):
                self.state = ClientState.OPEN
                found.append(Accepted([(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.extra_headers]))
            elif isinstance(event, RejectConnection):
                headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in event.headers]
                self._refusal = (event.status_code, headers, bytearray())
                if not event.has_body:
                    found.append(self._refused())
            elif isinstance(event, RejectData) and self._refusal is not None:
                body = self._refusal[2]
                body += event.data[: MAX_BODY - len(body)]
                if event.body_finished:
                    found.append(self._refused())
            elif isinstance(event, Message):
                message = self._message(event)
                if message is not None:
                    found.append(message)
            elif isinstance(event, Ping):
                self.pings += 1
                if self.answer_pings and self._ws.state is ConnectionState.OPEN:
                    self._owe(event.response())
            elif isinstance(event, CloseConnection):
                found.append(self._on_close(event))
                break
        return found

    def _message(self, event: Message[Any]) -> Text | Binary | None:
        if self.state is not ClientState.OPEN and not (self.after_close and self.state is ClientState.CLOSING):
            return None  # closing: what was still in flight is not wanted
        if isinstance(event, BytesMessage) and not self.binary:
            self._owe_close(CLOSE_UNSUPPORTED, "binary frames are not part of the protocol")
            return None
        self._size += len(event.data)
        if self.max_message_bytes is not None and self._size > self.max_message_bytes:
            self._owe_close(CLOSE_TOO_BIG, TOO_BIG)
            return None
        self._parts.append(event.data)
        if not event.message_finished:
            return None
        parts, self._parts, self._size = self._parts, [], 0
        if isinstance(event, TextMessage):
            return Text("".join(part for part in parts if isinstance(part, str)))
        return Binary(b"".join(part for part in parts if isinstance(part, bytes)))

    def _on_close(self, event: CloseConnection) -> Closed:
        if self._ws.state is ConnectionState.REMOTE_CLOSING:
            if self.answer_close:
                self._owe(event.response())
        elif self._ws.state is ConnectionState.OPEN:  # a framing error wsproto found: say so
            self._owe_close(event.code, event.reason or "")
        return self._closed(int(event.code), event.reason or "")

    def _owe(self, event: Pong | CloseConnection) -> None:
        with contextlib.suppress(LocalProtocolError):  # the connection ended meanwhile: nothing is owed
            self._owed += self._ws.send(event)

    def _owe_close(self, code: int, reason: str) -> None:
        self._owed += self.close(code, reason)

    def _refused(self) -> Refused:
        assert self._refusal is not None
        status, headers, body = self._refusal
        self._closed(CLOSE_ABNORMAL, "")
        return Refused(status, headers, bytes(body))

    def _refused_or_ended(self, why: str) -> list[ClientEvent]:
        if self._refusal is not None:  # the answer's body was cut short: what came of it
            return [self._refused()]
        return [self._closed(CLOSE_ABNORMAL, why)]

    def _closed(self, code: int, reason: str) -> Closed:
        self.state = ClientState.CLOSED
        return Closed(code, reason)
