"""The relay's own plain HTTP endpoints, decided: push, health, version, CORS preflight.

Theory of operation. A :class:`~relaycore.ClientSession` hands a plain request here once its
path is known not to open a WebSocket. Each function decides one endpoint from the request
alone (and the hub's state) and returns an :class:`~relaycore.Answer`, or raises
:class:`~relaycore.HTTPError` for the session to turn into its refusal; the session keeps
what outlives the request (the CORS headers of its answers, a push waiting for the cluster).
A path that is none of the relay's own goes to the transport's :data:`~relaycore.Routes`,
but never one of :data:`RELAY_PATHS` or :data:`RELAY_PREFIXES`, in any percent-encoding.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

import msgspec

from ._errors import HTTPError
from ._hub import Hub
from ._names import parse_channel
from ._session_seams import APPLICATION_JSON, Answer, Headers, Routes, answer, method_not_allowed, origin
from ._texts import BODY_TOO_LARGE, INVALID_JSON_BODY, NOT_FOUND, ORIGIN_NOT_ALLOWED
from ._wire import parse_json

__all__ = [
    "CORS_METHODS",
    "PUSH_METHODS",
    "RELAY_PATHS",
    "RELAY_PREFIXES",
    "plain",
    "preflight",
    "push_request",
    "pushed",
    "relay_path",
]

#: The methods each of the relay's plain HTTP endpoints takes (a page's CORS preflight is told).
CORS_METHODS = {b"/health": b"GET, HEAD", b"/version": b"GET, HEAD"}
PUSH_METHODS = b"POST"

#: Paths that are the relay's own whether or not it serves them (``/echo`` when disabled):
#: never handed to :data:`Routes`, in any percent-encoding.
RELAY_PATHS = (b"/health", b"/version", b"/echo")
RELAY_PREFIXES = (b"/c/", b"/r/", b"/push/")


def preflight(hub: Hub, headers: Headers, methods: bytes) -> tuple[Answer, list[tuple[bytes, bytes]]]:
    """A page's CORS preflight (``OPTIONS``) of a plain endpoint: 204, with the CORS
    headers when the page's origin is allowed (none otherwise: the browser then stops).
    Returns the answer and those headers."""
    cors = hub.origins.preflight(origin(headers), methods + b", OPTIONS")
    return Answer(204, b"", [(b"allow", methods + b", OPTIONS"), *cors]), cors


def push_request(
    hub: Hub, method: bytes, raw_channel: bytes, headers: Headers, body: bytes, limit: int
) -> tuple[str, Any, str | None]:
    """Check ``POST /push/<raw_channel>``: the channel, the message and the ``x-send-key``
    (None: none sent), or an HTTPError (405, 403 for a page not allowed, 400, 413)."""
    if method != b"POST":
        raise method_not_allowed(b"POST")
    if not hub.origins.allows(origin(headers)):
        raise HTTPError(403, ORIGIN_NOT_ALLOWED)  # a page may not push, even where it need not read
    channel = parse_channel(raw_channel)
    key = next((value for name, value in headers if name == b"x-send-key"), None)
    if len(body) > limit:
        raise HTTPError(413, BODY_TOO_LARGE)
    message = parse_json(body)
    if message is None:
        raise HTTPError(400, INVALID_JSON_BODY)
    return channel, message, None if key is None else bytes(key).decode("latin-1")


def pushed(recipients: int, cors: Headers) -> Answer:
    """The answer to a push delivered to ``recipients`` members."""
    body = msgspec.json.encode({"ok": True, "recipients": recipients})
    return answer(200, body, APPLICATION_JSON, cors=cors)


def plain(
    hub: Hub,
    routes: Routes | None,
    method: bytes,
    path: bytes,
    headers: Headers,
    *,
    upgrade: bool,
    version: str,
    cors: Headers,
) -> Answer:
    """``/version``, ``/health``, else the transport's ``routes``; 404 when nothing takes it."""
    if path == b"/version" and method in (b"GET", b"HEAD"):
        return answer(200, f"relaycore {version}\n".encode(), cors=cors)
    if path == b"/health" and method in (b"GET", b"HEAD"):
        health = {"status": "ok", "version": version, **hub.health()}
        return answer(200, msgspec.json.encode(health), APPLICATION_JSON, cors=cors)
    if routes is not None and not upgrade and not relay_path(path):
        routed = routes(method, path, headers)
        if routed is not None:
            return routed
    raise HTTPError(404, NOT_FOUND)


def relay_path(path: bytes) -> bool:
    """Whether ``path`` (as sent, or percent-decoded) is one of the relay's own."""
    if path in RELAY_PATHS or path.startswith(RELAY_PREFIXES):
        return True
    if b"%" not in path:
        return False
    decoded = unquote_to_bytes(path)
    return decoded in RELAY_PATHS or decoded.startswith(RELAY_PREFIXES)
