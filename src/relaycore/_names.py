"""Channel names, connection options and namespaces.

A channel is everything in the path after ``/c/`` (or the legacy ``/r/``), percent-decoded,
1..256 bytes of UTF-8, compared exactly. A namespace ``N`` covers channel ``C`` when
``C == N`` or ``C`` starts with ``N`` followed by ``:`` or ``/``; the longest covering
namespace wins.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote_to_bytes

import msgspec

from ._errors import HTTPError

__all__ = [
    "MAX_ALIAS",
    "MAX_CHANNEL_BYTES",
    "JoinOptions",
    "check_channel",
    "NamespaceTable",
    "parse_channel",
    "parse_options",
]

MAX_CHANNEL_BYTES = 256
MAX_ALIAS = 64


class JoinOptions(msgspec.Struct, kw_only=True, frozen=True):
    """What a client asked for in its query string."""

    alias: str | None = None
    announce: bool = False
    echo: bool = False
    list: bool = False
    join_key: str | None = None
    send_key: str | None = None


def parse_channel(raw_path: bytes) -> str:
    """Decode a channel name from the part of the path after the endpoint prefix.

    >>> parse_channel(b"room%3A1/a")
    'room:1/a'
    """
    try:
        name = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPError(400, "Channel name is not valid UTF-8.") from None
    return check_channel(name)


def check_channel(name: str) -> str:
    """``name`` if it is a channel's name (1 to 256 bytes of UTF-8), else HTTPError(400).

    >>> check_channel("room:1/a")
    'room:1/a'
    """
    if not 1 <= len(name.encode()) <= MAX_CHANNEL_BYTES:
        raise HTTPError(400, f"Channel name must be 1 to {MAX_CHANNEL_BYTES} bytes.")
    return name


_ON = frozenset(("", "true", "1"))


def parse_options(query: bytes) -> JoinOptions:
    """Parse the connection options from a raw query string (HTML form encoding).

    >>> parse_options(b"as=Bob&echo&announce=false")
    JoinOptions(alias='Bob', announce=False, echo=True, list=False, join_key=None, send_key=None)
    """
    try:
        pairs = parse_qsl(query.decode("utf-8"), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise HTTPError(400, "Query string is not valid UTF-8.") from None
    values: dict[str, str] = {}
    for key, value in pairs:
        values.setdefault(key, value)  # the first occurrence of a key wins
    # An empty alias is no alias: frames then omit the key rather than carry "".
    alias = values.get("alias") or values.get("as") or None
    if alias is not None and len(alias) > MAX_ALIAS:
        raise HTTPError(400, f"Alias must be at most {MAX_ALIAS} characters.")
    return JoinOptions(
        alias=alias,
        announce=values.get("announce") in _ON,
        echo=values.get("echo") in _ON,
        list=values.get("list") in _ON,
        # An empty key is no key: `?joinKey=` must not lock a channel with "".
        join_key=values.get("joinKey") or None,
        send_key=values.get("sendKey") or None,
    )


class NamespaceTable:
    """Longest-prefix lookup of reserved namespaces on ``:`` / ``/`` boundaries.

    >>> table = NamespaceTable(["myapp", "myapp/private"])
    >>> table.lookup("myapp/private:x"), table.lookup("myapp/privateer"), table.lookup("myapps:x")
    ('myapp/private', 'myapp', None)
    """

    def __init__(self, prefixes: Iterable[str]) -> None:
        self._prefixes = frozenset(prefixes)

    def lookup(self, channel: str) -> str | None:
        """Return the longest namespace covering ``channel``, or None."""
        if not self._prefixes:
            return None
        if channel in self._prefixes:
            return channel
        # Walk the boundaries from the right: the first hit is the longest match.
        end = len(channel)
        while True:
            cut = max(channel.rfind(":", 0, end), channel.rfind("/", 0, end))
            if cut <= 0:
                return None
            if channel[:cut] in self._prefixes:
                return channel[:cut]
            end = cut
