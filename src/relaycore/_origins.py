"""Which web origins may use the relay: WebSocket origins and CORS for the HTTP endpoints.

Theory of operation. A browser says where a page came from in the ``Origin`` header, and
obeys the answer in two different ways:

- A WebSocket is never subject to CORS: the browser opens it from any page, so refusing a
  foreign page is the server's job (cross-site WebSocket hijacking). An upgrade whose
  ``Origin`` is not allowed is refused with 403. A request without ``Origin`` comes from a
  program, not a page, and is let in: the header protects browser users only.
- The HTTP endpoints (``POST /push/...``, ``/health``, ``/version``) are read by pages only
  when the answer allows their origin: a push with ``x-send-key`` and a JSON body needs a
  preflight ``OPTIONS`` first. An allowed origin gets ``Access-Control-Allow-Origin`` on the
  preflight and on every answer (errors too, so the page can read why); a disallowed one
  gets no CORS header at all, and the browser keeps the answer from the page.

``[server] allowed_origins`` is a list of origins (``scheme://host[:port]``, as browsers
send them) or ``"*"`` for any, the default of a public relay. Origins are compared
exactly, case-insensitively, with a scheme's default port taken off.

>>> origins = Origins(["https://app.example"])
>>> origins.allows(b"https://APP.example:443"), origins.allows(b"http://app.example"), origins.allows(None)
(True, False, True)
>>> Origins(["*"]).allows(b"https://anything.example")
True
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from ._errors import RelayValueError

__all__ = ["ANY_ORIGIN", "CORS_MAX_AGE", "Origins", "normalize_origin"]

ANY_ORIGIN = "*"
#: How long a browser may keep a preflight's answer, in seconds (Chromium keeps at most 7200).
CORS_MAX_AGE = b"7200"
#: The request headers a page may send to the HTTP endpoints.
CORS_ALLOW_HEADERS = b"content-type, x-send-key"
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def normalize_origin(text: str) -> str:
    """``scheme://host[:port]`` in lower case without a default port; ValueError if not an origin.

    >>> normalize_origin("HTTPS://Chat.Example:443")
    'https://chat.example'
    >>> normalize_origin("http://127.0.0.1:8000")
    'http://127.0.0.1:8000'
    """
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        raise RelayValueError(f"{text!r} is not an origin (scheme://host[:port])") from None
    if not parts.scheme or not parts.hostname or parts.path or parts.query or parts.fragment or parts.username:
        raise RelayValueError(f"{text!r} is not an origin (scheme://host[:port])")
    scheme = parts.scheme.lower()
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


class Origins:
    """The allowed origins of one relay (see the module docstring)."""

    __slots__ = ("any", "exact")

    def __init__(self, allowed: Iterable[str]) -> None:
        allowed = list(allowed)
        #: Every origin is allowed (``"*"`` in the list).
        self.any = ANY_ORIGIN in allowed
        #: The allowed origins, normalized.
        self.exact = frozenset(normalize_origin(text) for text in allowed if text != ANY_ORIGIN)

    def allows(self, origin: bytes | None) -> bool:
        """Whether a request with this ``Origin`` header (None: none) may go on."""
        if origin is None or self.any:
            return True
        try:
            return normalize_origin(origin.decode("latin-1")) in self.exact
        except ValueError:
            return False  # "null" (a sandboxed page, a file) or garbage: never in the list

    def cors(self, origin: bytes | None) -> list[tuple[bytes, bytes]]:
        """The CORS headers of an answer to a request with this ``Origin`` (none when disallowed)."""
        if self.any:
            return [(b"access-control-allow-origin", b"*")]
        vary = [(b"vary", b"origin")]
        if origin is None or not self.allows(origin):
            return vary
        return [(b"access-control-allow-origin", origin), *vary]

    def preflight(self, origin: bytes | None, methods: bytes) -> list[tuple[bytes, bytes]]:
        """The headers of the answer to a preflight ``OPTIONS`` of an endpoint taking ``methods``."""
        headers = self.cors(origin)
        if any(name == b"access-control-allow-origin" for name, _ in headers):
            headers += [
                (b"access-control-allow-methods", methods),
                (b"access-control-allow-headers", CORS_ALLOW_HEADERS),
                (b"access-control-max-age", CORS_MAX_AGE),
            ]
        return headers
