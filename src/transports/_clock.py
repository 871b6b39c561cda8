"""The real clock and uid source, injected into the core by every transport."""

from __future__ import annotations

import os
import time

__all__ = ["SystemClock", "secure_uids"]

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


class SystemClock:
    """Wall time for ``date`` stamps and a monotonic time for deadlines."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


def secure_uids() -> str:
    """A uid from the OS's random source: 6 characters of ``[A-Za-z0-9]``.

    uids address direct messages, so they are drawn from ``os.urandom`` rather than a
    predictable generator.
    """
    value = int.from_bytes(os.urandom(8), "big")
    chars = []
    for _ in range(6):
        value, digit = divmod(value, 62)
        chars.append(_ALPHABET[digit])
    return "".join(chars)
