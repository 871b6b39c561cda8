"""Errors, kept in two kinds as h11 and wsproto do.

- :class:`RelayUsageError`: the caller (an embedder, a transport) misused the API.
- :class:`HTTPError`: the peer's request is refused; carries the HTTP status it maps to.
"""

from __future__ import annotations

__all__ = ["HTTPError", "RelayUsageError"]


class RelayUsageError(RuntimeError):
    """The API was called in a way or a state that does not allow it."""


class HTTPError(Exception):
    """A request is refused with ``status``; ``message`` is the human readable reason."""

    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []
