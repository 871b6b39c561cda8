"""The client's errors: :class:`ClientError` and its family."""

from __future__ import annotations

__all__ = ["ArgumentError", "ChannelClosed", "ClientError", "ProtocolError", "Refused", "UsageError"]


class ClientError(Exception):
    """The base of the client's errors."""


class Refused(ClientError):
    """The relay answered with an HTTP error: a refused upgrade, or an HTTP push not delivered.

    ``reason`` is the relay's text (the body of a refused upgrade, the ``error`` of a push).
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}" if reason else f"HTTP {status}")
        self.status = status
        self.reason = reason

    def __repr__(self) -> str:
        return f"Refused(status={self.status}, reason={self.reason!r})"


class ChannelClosed(ClientError):
    """The channel is closed (or its connection dropped under a send): nothing more goes out."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"the channel is closed ({code} {reason!r})" if code else "the channel is closed")
        self.code = code
        self.reason = reason


class ProtocolError(ClientError):
    """The peer sent something that is not the relay protocol (docs/protocol.md)."""


class UsageError(ClientError, RuntimeError):
    """The API was used in a way it does not allow (e.g. both ``on()`` and ``async for``)."""


class ArgumentError(UsageError, ValueError):
    """An argument the client cannot take: a URL that is no relay's, ``ssl=`` on ``ws://``."""
