"""Rate limits on the injected clock, and the client address they are keyed on.

- :class:`TokenBucket`: ``rate`` tokens per second up to ``burst``; a message or a
  connection costs one token.
- :class:`ClientLimiter`: one bucket per client address, forgotten once full again,
  so the table stays as small as the set of recently active clients.
- :func:`client_address`: the peer's IP, or, when the peer is a trusted proxy, the nearest
  untrusted hop of the one header those proxies set (``X-Forwarded-For`` or ``Forwarded``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence

from ._errors import RelayValueError

__all__ = ["FORWARDED_HEADERS", "UNIX_PEER", "ClientLimiter", "TokenBucket", "TrustedProxies", "client_address"]

#: The headers a proxy may name its client in; ``[server] forwarded_header`` picks one.
FORWARDED_HEADERS = ("x-forwarded-for", "forwarded")
#: The address of a peer on a Unix socket (it has no IP); ``"unix"`` in ``trusted_proxies``
#: trusts a proxy that connects through the relay's Unix socket.
UNIX_PEER = "unix"
#: RFC 7239's word for a node it cannot name (section 6.2); also the hop of an element
#: that has no ``for=`` pair.
UNKNOWN = "unknown"
#: What may follow the address of a hop after a colon: a port, or an obfuscated one.
_PORT = re.compile(r"[0-9]{1,5}|_[A-Za-z0-9._-]+")


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
    """A set of proxy addresses and networks (``10.0.0.0/8``, ``::1``), and the one header
    in which those proxies name their client: ``x-forwarded-for`` (the default) or
    ``forwarded``.

    >>> proxies = TrustedProxies(["10.0.0.0/8"], header="Forwarded")
    >>> proxies.header, "10.1.2.3" in proxies, "::ffff:10.1.2.3" in proxies, "unknown" in proxies
    (b'forwarded', True, True, False)
    >>> UNIX_PEER in TrustedProxies(["unix"]), UNIX_PEER in proxies, "unix" in TrustedProxies(["::1"])
    (True, False, False)
    """

    def __init__(self, entries: Iterable[str], header: str = "x-forwarded-for") -> None:
        name = header.lower()
        if name not in FORWARDED_HEADERS:
            raise RelayValueError(f"the header must be {' or '.join(map(repr, FORWARDED_HEADERS))}, not {header!r}")
        #: The header's name as h11 spells it (lower case).
        self.header = name.encode("ascii")
        entries = list(entries)
        #: Whether a peer on a Unix socket (:data:`UNIX_PEER`) is a trusted proxy.
        self.unix = UNIX_PEER in entries
        self._networks = [ipaddress.ip_network(entry, strict=False) for entry in entries if entry != UNIX_PEER]

    def __bool__(self) -> bool:
        return bool(self._networks) or self.unix

    def __contains__(self, address: str) -> bool:
        if address == UNIX_PEER:
            return self.unix
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        # A proxy that reaches a dual-stack listener over IPv4 shows up as ::ffff:a.b.c.d.
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return any(ip in network or (mapped is not None and mapped in network) for network in self._networks)


def client_address(peer: str, headers: Sequence[tuple[bytes, bytes]], trusted: TrustedProxies) -> str:
    """The address a request counts against (PROTOCOL.md section 8).

    Only a trusted peer is believed, and only in ``trusted.header``: the other header is
    whatever the client chose to send, since a proxy passes on what it does not set.

    >>> proxies = TrustedProxies(["10.0.0.1"])
    >>> client_address("10.0.0.1", [(b"x-forwarded-for", b"1.2.3.4, 5.6.7.8")], proxies)
    '5.6.7.8'
    >>> client_address("9.9.9.9", [(b"x-forwarded-for", b"1.2.3.4")], proxies)
    '9.9.9.9'
    >>> client_address("10.0.0.1", [(b"forwarded", b"for=1.2.3.4")], proxies)
    '10.0.0.1'
    """
    if not trusted or peer not in trusted:
        return peer
    hops = _hops(headers, trusted.header)
    # Walk from the nearest hop outwards. Each trusted proxy vouches for the hop before it,
    # so the first hop that is not a trusted proxy is the client; anything further out is
    # only that client's word.
    for hop in reversed(hops):
        if hop not in trusted:
            return hop
    return hops[0] if hops else peer


def _hops(headers: Sequence[tuple[bytes, bytes]], header: bytes) -> list[str]:
    """The hops of every ``header`` line, in order, as one list.

    A proxy may add a line of its own (HAProxy does) rather than extend the client's, so
    the lines are read as one list, the last line nearest.
    """
    parse = _forwarded_for_hops if header == b"forwarded" else _x_forwarded_for_hops
    hops: list[str] = []
    for name, value in headers:
        if name.lower() == header:
            hops += parse(value.decode("latin-1"))
    return hops


def _x_forwarded_for_hops(value: str) -> list[str]:
    """The hops of one ``X-Forwarded-For`` line; empty ones are skipped.

    >>> _x_forwarded_for_hops(" 192.0.2.1:8080, [2001:DB8::1]:4711,, 2001:db8::2 ,unknown")
    ['192.0.2.1', '2001:db8::1', '2001:db8::2', 'unknown']
    """
    return [_address(hop) for hop in value.split(",") if hop.strip()]


def _forwarded_for_hops(value: str) -> list[str]:
    """The hops of one RFC 7239 ``Forwarded`` line: the ``for=`` of each element.

    >>> _forwarded_for_hops('for=192.0.2.60;proto=http, by=203.0.113.43, For="[2001:db8:cafe::17]:4711"')
    ['192.0.2.60', 'unknown', '2001:db8:cafe::17']
    """
    return [_element_for(element) for element in _split_outside_quotes(value, ",") if element.strip()]


def _element_for(element: str) -> str:
    """The node named by the ``for=`` pair of one element, or "unknown" when it names none.

    >>> _element_for('proto=https;for="_hidden;x"'), _element_for("by=10.0.0.1")
    ('_hidden;x', 'unknown')
    """
    for pair in _split_outside_quotes(element, ";"):
        key, equals, value = pair.partition("=")
        if equals and key.strip().lower() == "for":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return _address(value) or UNKNOWN
    return UNKNOWN


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator`` except inside double quotes, which are kept.

    Quotes pair up from the END of the line, and an odd one out at the start quotes
    nothing: the end is what the nearest proxy wrote, so a stray quote a client sent can
    never swallow the element appended after it. Backslash escapes are not interpreted;
    no address needs them.

    >>> _split_outside_quotes('for="a,b", for=c', ",")
    ['for="a,b"', ' for=c']
    >>> _split_outside_quotes('for="a, for="b"', ",")
    ['for="a', ' for="b"']
    """
    pieces = text.split('"')
    if len(pieces) % 2 == 0:  # an odd number of quotes: the first one opens nothing
        pieces[0:2] = [pieces[0] + '"' + pieces[1]]
    parts = [""]
    for index, piece in enumerate(pieces):
        if index % 2:  # between a pair of quotes: kept whole
            parts[-1] += f'"{piece}"'
        else:
            first, *rest = piece.split(separator)
            parts[-1] += first
            parts += rest
    return parts


def _address(text: str) -> str:
    """One hop as the limits count it: a normalised IP address (brackets, port and zone
    dropped, IPv4-mapped IPv6 as IPv4) when it is one, else the token as sent
    (``unknown``, ``_hidden``, garbage).

    >>> _address(" [2001:DB8:0::1]:4711 "), _address("[::ffff:192.0.2.1]:80"), _address("_hidden:_port")
    ('2001:db8::1', '192.0.2.1', '_hidden:_port')
    """
    text = text.strip()
    try:
        ip = ipaddress.ip_address(_without_port(text))
    except ValueError:
        return text
    if isinstance(ip, ipaddress.IPv6Address):
        # A dual-stack proxy may write an IPv4 client as ::ffff:a.b.c.d; a zone is local to
        # the proxy. Neither is part of who the client is.
        ip = ip.ipv4_mapped or ipaddress.IPv6Address(int(ip))
    return str(ip)


def _without_port(text: str) -> str:
    """The address part of ``[v6]``, ``[v6]:port`` or ``v4:port``; anything else unchanged."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if bracket and (not rest or (rest[0] == ":" and _PORT.fullmatch(rest[1:]))):
            return host
        return text
    if text.count(":") == 1:  # a bare IPv6 address has at least two
        host, _, port = text.partition(":")
        return host if _PORT.fullmatch(port) else text
    return text
