"""Rate limits on the injected clock, and the client address they are keyed on.

- :class:`TokenBucket`: ``rate`` tokens per second up to ``burst``; a message or a
  connection costs one token.
- :class:`ClientLimiter`: one bucket per client address, forgotten once full again,
  so the table stays as small as the set of recently active clients.
- :func:`client_address`: the peer's IP, or, when the peer is a trusted proxy, the last
  untrusted address of ``X-Forwarded-For`` / ``Forwarded``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

__all__ = ["ClientLimiter", "TokenBucket", "TrustedProxies", "client_address"]


class TokenBucket:
    """A token bucket: starts full, refills at ``rate`` per second, holds at most ``burst``.

    >>> bucket = TokenBucket(rate=1.0, burst=2, now=0.0)
    >>> bucket.take(0.0), bucket.take(0.0), bucket.take(0.0), bucket.take(1.0)
    (True, True, False, True)
    """

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; return whether there was."""
        tokens = self._tokens
        if tokens < self.burst:
            tokens = min(self.burst, tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        return False

    def full(self, now: float) -> bool:
        """True when the bucket has refilled completely (nothing to remember)."""
        return self._tokens + (now - self._stamp) * self.rate >= self.burst


class ClientLimiter:
    """Token buckets keyed by client address, pruned as they refill."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str, now: float) -> bool:
        """Spend one token of ``client``'s bucket; False when it is over its rate."""
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = TokenBucket(self.rate, self.burst, now)
        return bucket.take(now)

    def prune(self, now: float) -> None:
        """Forget clients whose buckets are full again."""
        idle = [client for client, bucket in self._buckets.items() if bucket.full(now)]
        for client in idle:
            del self._buckets[client]


class TrustedProxies:
    """A set of proxy addresses and networks (``10.0.0.0/8``, ``::1``)."""

    def __init__(self, entries: Iterable[str]) -> None:
        self._networks = [ipaddress.ip_network(entry, strict=False) for entry in entries]

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __contains__(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)


def client_address(peer: str, headers: Sequence[tuple[bytes, bytes]], trusted: TrustedProxies) -> str:
    """The address a request counts against (PROTOCOL.md section 8).

    >>> proxies = TrustedProxies(["10.0.0.1"])
    >>> client_address("10.0.0.1", [(b"x-forwarded-for", b"1.2.3.4, 5.6.7.8")], proxies)
    '5.6.7.8'
    >>> client_address("9.9.9.9", [(b"x-forwarded-for", b"1.2.3.4")], proxies)
    '9.9.9.9'
    """
    if not trusted or peer not in trusted:
        return peer
    hops: list[str] = []
    for name, value in headers:
        if name == b"x-forwarded-for":
            hops += [hop.strip() for hop in value.decode("latin-1").split(",")]
        elif name == b"forwarded":
            hops += _forwarded_for(value.decode("latin-1"))
    # Walk from the nearest hop outwards; the first address we do not trust is the client.
    for hop in reversed(hops):
        if hop and hop not in trusted:
            return hop
    return hops[0] if hops and hops[0] else peer


def _forwarded_for(value: str) -> list[str]:
    """The ``for=`` addresses of an RFC 7239 ``Forwarded`` header, in order."""
    found = []
    for element in value.split(","):
        for pair in element.split(";"):
            key, _, raw = pair.strip().partition("=")
            if key.lower() == "for":
                raw = raw.strip().strip('"')
                if raw.startswith("["):  # [v6]:port
                    raw = raw[1:].partition("]")[0]
                elif raw.count(":") == 1:  # v4:port
                    raw = raw.partition(":")[0]
                found.append(raw)
    return found
