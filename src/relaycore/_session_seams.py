"""Where a :class:`~relaycore.ClientSession` meets its transport: what it reads of a request,
what it answers, and what it needs of whatever carries its client.

A session reads a request's :data:`Headers`, asks the transport's own :data:`Routes` for
paths that are not the relay's, and answers every plain request and every refused upgrade
with an :class:`Answer` (status, headers, body): the transport frames it (h11 on the native
server, the ASGI server's own framing) and adds content-length and its connection handling.
What it decides later (a join or a push the backplane decides, a close) reaches the
transport through the :class:`SessionTransport` methods.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import msgspec

from ._errors import HTTPError
from ._texts import METHOD_NOT_ALLOWED

__all__ = [
    "APPLICATION_JSON",
    "TEXT_PLAIN",
    "Answer",
    "Headers",
    "PlainRequest",
    "Routes",
    "SessionTransport",
    "answer",
    "method_not_allowed",
    "origin",
    "refusal",
]

TEXT_PLAIN = b"text/plain; charset=utf-8"
APPLICATION_JSON = b"application/json"

Headers = Sequence[tuple[bytes, bytes]]
"""Request headers as (name, value) pairs; names in lower case, as h11 and ASGI give them."""


class Answer:
    """An HTTP answer the session decided: a response, or the refusal of an upgrade."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        #: Header pairs: content-type first, then any the decision adds (allow, retry-after).
        #: The transport adds content-length and its own connection handling.
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"<Answer {self.status} {self.body[:60]!r}>"

    def with_headers(self, extra: Headers) -> Answer:
        """This answer with the headers of ``extra`` it does not have yet (CORS)."""
        have = {name for name, _ in self.headers}
        more = [(name, value) for name, value in extra if name not in have]
        return Answer(self.status, self.body, [*self.headers, *more]) if more else self


Routes = Callable[[bytes, bytes, Headers], "Answer | None"]
"""A transport's own HTTP paths: ``routes(method, path, headers)`` answers a plain request
(``path`` as sent, still percent-encoded, without the query) or returns None (404)."""


class SessionTransport(Protocol):
    """What a session needs of whatever carries its client (a framing adapter, an ASGI link)."""

    def session_closed(self, code: int, reason: str) -> None:
        """The relay closes the client: send what is queued, then the close (code, reason)."""

    def session_opened(self) -> None:
        """A join the backplane decided later was admitted: open the WebSocket now."""

    def session_refused(self, answer: Answer) -> None:
        """A join the backplane decided later was refused: answer the upgrade with ``answer``."""

    def session_answered(self, answer: Answer) -> None:
        """A plain request the backplane decided later (an HTTP push): answer it with ``answer``."""


class PlainRequest:
    """The transport of a request answered at once, with nothing to do later (the test
    harness's plain requests, a request done for another cluster node)."""

    def session_closed(self, code: int, reason: str) -> None:
        pass

    def session_opened(self) -> None:
        pass

    def session_refused(self, answer: Answer) -> None:
        pass

    def session_answered(self, answer: Answer) -> None:
        pass


def answer(status: int, body: bytes, content_type: bytes = TEXT_PLAIN, *, cors: Headers = ()) -> Answer:
    """An answer with ``content_type`` first, then the ``cors`` headers."""
    return Answer(status, body, [(b"content-type", content_type), *cors])


def refusal(exc: HTTPError, cors: Headers, *, json: bool = False) -> Answer:
    """The answer to a refused request: its text, or (``json``, for HTTP push, as
    PROTOCOL.md section 5 says) ``{"ok": false, "error": text}``; its headers, then ``cors``."""
    if json:
        refused = answer(exc.status, msgspec.json.encode({"ok": False, "error": exc.message}), APPLICATION_JSON)
    else:
        refused = answer(exc.status, exc.message.encode())
    refused.headers += exc.headers
    refused.headers += cors
    return refused


def method_not_allowed(allowed: bytes) -> HTTPError:
    """The refusal of a method an endpoint does not take (405, with ``allow``)."""
    return HTTPError(405, METHOD_NOT_ALLOWED, [(b"allow", allowed)])


def origin(headers: Headers) -> bytes | None:
    """The request's ``Origin`` header (None: no page sent it)."""
    for name, value in headers:
        if name == b"origin":
            return bytes(value)
    return None
