"""The HTTP/1.1 side of a :class:`~relaycore.Connection`: h11 parses, the session decides.

Theory of operation. While a connection's State is ``HTTP``, h11 parses what the peer sends
and each complete request goes to the connection's :class:`~relaycore.ClientSession`. Its
answer is written through h11, with keep-alive. Pipelined requests are answered one at a
time: with an answer unwritten the connection is ``HTTP_ANSWERING`` and the next request
waits until the transport has written it (``Connection.resume``). A refused upgrade, a
malformed request or a body over the limit is answered and ends the connection (``CLOSED``).
An upgrade the session admits gets its 101 written here by hand (:func:`greeting`) and the
connection switches to its WebSocket side; a join or a push the backplane decides later
leaves it ``HTTP_WAITING``. What belongs to HTTP/1.1 framing is checked here: the size of a
request's head and of the body it declares.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING

import h11

from ._connection_state import ConnectionBase, Phase
from ._connection_stream import stream_head
from ._deflate import negotiate
from ._errors import HTTPError
from ._session_seams import Answer, Headers

__all__ = ["MAX_HEADER_BYTES", "HTTPSide", "greeting"]

#: h11's state of a client that asked for an upgrade (documented, though not in h11's ``__all__``).
MIGHT_SWITCH_PROTOCOL = h11.MIGHT_SWITCH_PROTOCOL  # type: ignore[attr-defined]

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEADER_BYTES = 16 * 1024
#: An HTTP answer body longer than this (a static file) is queued in pieces this size, so
#: that a socket taking it bit by bit never makes the outbox copy what is left of it.
ANSWER_PIECE = 64 * 1024


class HTTPSide(ConnectionBase):
    """A connection's requests and answers while its State is ``HTTP`` (see the module docstring)."""

    __slots__ = ()

    if TYPE_CHECKING:

        def _switch(self) -> None:
            """The connection's move to its WebSocket side (:class:`~relaycore.Connection`)."""

    def _drive_http(self) -> None:
        # HTTP_WAITING asks h11 too: only the client's end of the stream can come of it (h11
        # holds everything else back until the answer is sent).
        while self._phase is Phase.HTTP or self._phase is Phase.HTTP_WAITING:
            if self.outbox:
                # An answer is still unwritten: the next request waits for resume().
                self._move(Phase.HTTP_ANSWERING)
                return
            try:
                event = self._http.next_event()
            except h11.RemoteProtocolError as exc:
                # Not the parser's message: it quotes the raw line, which may carry keys.
                status = exc.error_status_hint
                self.problem = f"malformed HTTP request ({status})"
                text = "Bad request." if status == 400 else f"{HTTPStatus(status).phrase}."
                self._refuse(self.session.refusal(HTTPError(status, text)))
                return
            if event is h11.NEED_DATA:
                return
            if event is h11.PAUSED:
                if self._http.our_state is h11.DONE and self._http.their_state is h11.DONE:
                    self._http.start_next_cycle()
                    continue
                if self._request is None:
                    return
                self._handle(self._request)
                continue
            if isinstance(event, h11.Request):
                self._request = event
                self._method = event.method  # known before any refusal (HEAD has no body)
                self._body.clear()
                if _head_size(event) > MAX_HEADER_BYTES:
                    # h11 bounds a head that arrives in pieces; one that arrives whole here.
                    self._refuse(self.session.refusal(HTTPError(431, "Request header fields too large.")))
                    return
                if _declared_body(event) > self.session.message_limit:
                    self._refuse(self.session.body_too_large(event.target, event.headers))
                    return
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > self.session.message_limit and self._request is not None:
                    self._refuse(self.session.body_too_large(self._request.target, self._request.headers))
                    return
            elif isinstance(event, h11.EndOfMessage):
                if self._request is not None and self._http.their_state is not MIGHT_SWITCH_PROTOCOL:
                    self._handle(self._request)
            elif isinstance(event, h11.ConnectionClosed):
                self._move(Phase.CLOSED)

    def _handle(self, request: h11.Request) -> None:
        self._request = None
        self._method = request.method
        # A refused WebSocket upgrade ends the connection: the client may already have
        # sent frames after its request, which must not be read as a next request.
        upgrade = self._http.their_state is MIGHT_SWITCH_PROTOCOL
        answer = self.session.request(
            request.method,
            request.target,
            request.headers,
            bytes(self._body),
            upgrade=upgrade,
            handshake=self._handshake(request.headers),
            respond=stream_head,
        )
        if answer is None:
            if self.session.pending:
                self._move(Phase.HTTP_WAITING)  # nothing more is read until the backplane decides
                if self.session.awaiting is not None:  # a long poll: answered [] after poll_wait
                    self.deadline = self.hub.clock.monotonic() + self.hub.config.http.poll_wait
            else:
                self._switch()
            return
        if upgrade:
            self._refuse(answer)
            return
        self._respond(answer)
        self._next_cycle()

    def _handshake(self, headers: Headers) -> Callable[[bytes], bytes]:
        """The 101 for an upgrade with ``headers``: with permessage-deflate when the client
        offers it (:mod:`relaycore._deflate`), the outbox then carrying the deflate form."""
        accepted = negotiate(headers, self.hub.config.compression)
        if accepted is None:
            return greeting

        def deflating(key: bytes) -> bytes:
            self.outbox = self.session.outbox = accepted.outbox(self.hub, self.outbox)
            return greeting(key, accepted.answer)

        return deflating

    def _respond(self, answer: Answer, *, close: bool = False) -> None:
        headers, extra = answer.headers[:1], answer.headers[1:]
        if answer.status != 204:  # No Content has no length (RFC 9110, 8.6)
            headers.append((b"content-length", str(len(answer.body)).encode()))
        if close:
            headers += [h for h in extra if h[0] != b"connection"]
            headers.append((b"connection", b"close"))
        else:
            headers += extra
        status = answer.status
        head = h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase.encode())
        send = self._http.send
        out = send(head) or b""
        body = b""
        if self._method != b"HEAD":
            body = send(h11.Data(data=answer.body)) or b""
        end = send(h11.EndOfMessage()) or b""
        if len(body) <= ANSWER_PIECE:
            self.outbox.write(out + body + end)
            return
        self.outbox.write(out)
        for start in range(0, len(body), ANSWER_PIECE):
            self.outbox.write(body[start : start + ANSWER_PIECE])
        self.outbox.write(end)

    def _refuse(self, answer: Answer) -> None:
        """Answer a request that ends the connection (an upgrade refused, a malformed
        request, a body too large) and close."""
        if self._http.our_state is h11.SEND_RESPONSE:
            self._respond(answer, close=True)
        else:
            # h11 cannot answer a request line it could not parse: write a minimal response.
            status, body = answer.status, answer.body
            head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            head += (
                f"content-type: text/plain; charset=utf-8\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
            )
            self.outbox.write(head.encode() + body)
        self._move(Phase.CLOSED)

    def _next_cycle(self) -> None:
        http = self._http
        if http.our_state is h11.MUST_CLOSE or http.their_state is h11.MUST_CLOSE:
            self._move(Phase.CLOSED)
        elif http.our_state is h11.DONE and http.their_state is h11.DONE:
            http.start_next_cycle()
            self.deadline = self.hub.clock.monotonic() + self._handshake_timeout


def _declared_body(request: h11.Request) -> int:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)
    return 0


def _head_size(request: h11.Request) -> int:
    return len(request.target) + sum(len(name) + len(value) + 4 for name, value in request.headers)


def greeting(key: bytes, extensions: bytes = b"") -> bytes:
    """The 101 response to an upgrade whose (validated) Sec-WebSocket-Key is ``key``, with
    the ``extensions`` it accepted (a Sec-WebSocket-Extensions value; b"": none).

    Written by hand rather than through h11: the session may still refuse the join (403,
    429), and h11 must then still be able to send that answer instead.
    """
    accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
    if extensions:
        accept += b"\r\nSec-WebSocket-Extensions: " + extensions
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
