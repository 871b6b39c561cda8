"""What the app reads from an ASGI scope, for every kind of request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote

__all__ = ["Message", "Receive", "Scope", "Send", "client_address", "target"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def target(scope: Scope) -> bytes:
    """The request target (path and query) below the mount point, still percent-encoded."""
    raw = scope.get("raw_path")
    root = scope.get("root_path", "")
    if raw:
        path = bytes(raw)
        prefix = quote(root).encode()
        if root and path.startswith(prefix):
            path = path[len(prefix) :]
    else:
        text = scope["path"]
        if root and text.startswith(root):
            text = text[len(root) :]
        path = quote(text).encode()
    query = scope.get("query_string", b"")
    return path + b"?" + query if query else path


def client_address(scope: Scope) -> str:
    """The client's address as the server saw it (``""`` when it does not say)."""
    client = scope.get("client")
    return str(client[0]) if client else ""
