"""The client's plain HTTP and the reading of a relay URL, sans-I/O (see :mod:`relaycore.client`)."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

import h11
import msgspec

from ._errors import RelayValueError

__all__ = ["MAX_BODY", "Address", "HTTPExchange", "Response", "parse_url"]

#: How much of a refusal's or an HTTP answer's body is kept (the relay's are one line).
MAX_BODY = 64 * 1024
_SCHEMES = {"ws": False, "http": False, "wss": True, "https": True}


class Address(msgspec.Struct, frozen=True):
    """Where a relay URL points: TLS or not, host, port, the ``Host`` header, path and query."""

    tls: bool
    host: str
    port: int
    host_header: str
    path: str
    query: str

    @property
    def target(self) -> str:
        """The request target: the path and, if any, ``?`` and the query."""
        return f"{self.path}?{self.query}" if self.query else self.path


def parse_url(url: str) -> Address:
    """Read a ``ws://``, ``wss://``, ``http://`` or ``https://`` URL.

    >>> parse_url("wss://relay.example/c/room?alias=Ann")
    Address(tls=True, host='relay.example', port=443, host_header='relay.example', path='/c/room', query='alias=Ann')
    >>> parse_url("http://[::1]:8787").host_header
    '[::1]:8787'
    """
    parts = urlsplit(url)
    tls = _SCHEMES.get(parts.scheme.lower())
    if tls is None or not parts.hostname:
        raise RelayValueError(f"a ws://, wss://, http:// or https:// URL is needed, not {url!r}")
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError:
        raise RelayValueError(f"not a port in {url!r}") from None
    shown = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    header = shown if parts.port in (None, 443 if tls else 80) else f"{shown}:{port}"
    return Address(tls, parts.hostname, port, header, parts.path, parts.query)


class Response(msgspec.Struct, frozen=True):
    """A plain HTTP answer: status, headers (lower-case names), body (at most :data:`MAX_BODY`)."""

    status: int
    headers: dict[str, str]
    body: bytes


class HTTPExchange:
    """One plain HTTP request and its answer, sans-I/O (``Connection: close``).

    >>> exchange = HTTPExchange("relay.example", "POST", "/push/app:x", b"1", [("x-send-key", "k")])
    >>> exchange.request().split(b"\\r\\n")[0]
    b'POST /push/app:x HTTP/1.1'
    """

    __slots__ = ("_body", "_conn", "_fields", "_headers", "_status", "body", "method", "target")

    def __init__(
        self, host: str, method: str, target: str, body: bytes = b"", headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        self.method = method
        self.target = target
        self.body = body
        fields = [("Host", host), ("Connection", "close"), *headers]
        if body or method == "POST":
            if not any(name.lower() == "content-type" for name, _ in headers):
                fields.append(("Content-Type", "application/json"))
            fields.append(("Content-Length", str(len(body))))
        self._headers = fields
        self._conn = h11.Connection(h11.CLIENT)
        self._status = 0
        self._fields: dict[str, str] = {}
        self._body = bytearray()

    def request(self) -> bytes:
        """The whole request: head and body."""
        send = self._conn.send
        head = send(h11.Request(method=self.method, target=self.target, headers=self._headers)) or b""
        data = (send(h11.Data(data=self.body)) or b"") if self.body else b""
        return head + data + (send(h11.EndOfMessage()) or b"")

    def receive_data(self, data: bytes) -> Response | None:
        """The answer, once ``data`` (``b""``: the end of the stream) completed it.

        Raises :class:`relaycore.RelayValueError` for an answer that is not HTTP, or that
        the relay cut short."""
        self._conn.receive_data(data)
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                if not self._status:
                    raise RelayValueError("the relay closed the connection without an HTTP answer") from None
                raise RelayValueError(f"an invalid HTTP answer: {exc}") from None
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, h11.Response):
                self._status = event.status_code
                self._fields = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
            elif isinstance(event, h11.Data):
                self._body += event.data[: MAX_BODY - len(self._body)]
            elif isinstance(event, h11.EndOfMessage):
                return Response(self._status, self._fields, bytes(self._body))
            elif isinstance(event, h11.ConnectionClosed):
                raise RelayValueError("the connection closed before the HTTP answer was complete")
