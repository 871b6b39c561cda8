"""Errors: one family under :class:`RelayError`, in the two kinds h11 and wsproto keep apart.

- The caller (an embedder, a transport) misused the API: :class:`RelayUsageError`, and
  :class:`RelayValueError` for a value the API cannot take (also a ``ValueError``, which
  callers may already catch).
- The peer's request is refused: :class:`HTTPError`, carrying the HTTP status it maps to.
- The configuration is invalid: :class:`ConfigError` (also a ``ValueError``), naming the key.

>>> issubclass(HTTPError, RelayError) and issubclass(ConfigError, ValueError)
True
"""

from __future__ import annotations

__all__ = ["ConfigError", "HTTPError", "RelayError", "RelayUsageError", "RelayValueError"]


class RelayError(Exception):
    """The root of every error relaycore raises on purpose."""


class RelayUsageError(RelayError, RuntimeError):
    """The API was called in a way or a state that does not allow it."""


class RelayValueError(RelayUsageError, ValueError):
    """A value handed to the API cannot be taken (a time that goes back, a malformed setting)."""


class ConfigError(RelayError, ValueError):
    """The configuration is invalid; the message names the bad key."""


class HTTPError(RelayError):
    """A request is refused with ``status``; ``message`` is the human readable reason."""

    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []
