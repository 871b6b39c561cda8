"""Counters: what the relay did, as plain integers, for metrics to read.

Theory of operation. The core counts each event where it decides it, with one integer
increment and nothing else: no clock, no lock, no metrics library. A :class:`Hub` owns one
:class:`Counters`; every channel points at the :class:`Tally` of its namespace (the reserved
prefix that covers it, or ``""`` for an open channel), so a message costs three integer
increments on an object the hub already holds (received; delivered and bytes out, once per
message whatever the number of recipients), and the number of tallies is bounded by the
configuration, never by the channels clients make up. A metrics exporter (for example
``transports.metrics``) reads these numbers when it is scraped; what is *open now*
(channels, members) it counts from ``hub.channels`` at that moment instead.

>>> counters = Counters(["game"])
>>> sorted(counters.tallies)
['', 'game']
>>> counters.tally("game").received += 1
>>> counters.tally("game").received
1
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["DROP_REASONS", "Counters", "Tally"]

#: Why a message from a client was not relayed (the ``reason`` of a drop):
#: ``rate`` over the message rate; ``size`` over ``max_message_bytes`` (the sender is
#: closed 1009); ``invalid_json`` not JSON; ``binary`` a binary frame; ``send_key`` the
#: sender lacks the channel's send key; ``unknown_uid`` a direct message to nobody;
#: ``slow_consumer`` a member that could not take what it was owed, closed 1008 (its
#: backlog goes with it; counted once per member).
DROP_REASONS = ("rate", "size", "invalid_json", "binary", "send_key", "unknown_uid", "slow_consumer", "hook")

#: The close code counted for a WebSocket that ended without a close frame (RFC 6455).
#: Close codes counted as themselves; any other code a client sends counts as 0 ("other"),
#: so that clients cannot make up label values.
_KNOWN_CLOSES = range(1000, 1016)


class Tally:
    """The counters of one namespace (``""``: the open channels)."""

    __slots__ = ("bytes_out", "closes", "delivered", "dropped", "namespace", "received")

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        #: Whole messages members sent (within the size limit), relayed or not.
        self.received = 0
        #: Relayed messages put into members' outboxes: one per recipient.
        self.delivered = 0
        #: Bytes of those messages (their JSON text, once per recipient).
        self.bytes_out = 0
        #: Messages not relayed, by reason (see :data:`DROP_REASONS`).
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        #: How members' WebSockets ended, by close code (0: a code outside 1000..1015).
        self.closes: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"<Tally {self.namespace!r} received={self.received} delivered={self.delivered}>"

    def closed(self, code: int) -> None:
        """Count one member's WebSocket ending with ``code``."""
        key = code if code in _KNOWN_CLOSES else 0
        self.closes[key] = self.closes.get(key, 0) + 1


class Counters:
    """Everything one hub counts: a :class:`Tally` per namespace, and the HTTP side."""

    __slots__ = ("pushes", "refused", "tallies")

    def __init__(self, namespaces: Iterable[str] = ()) -> None:
        #: Per namespace label: ``""`` and every reserved prefix, made up front.
        self.tallies: dict[str, Tally] = {name: Tally(name) for name in ("", *namespaces)}
        #: Refused WebSocket upgrades (``/c/``, ``/r/``, ``/echo``), by HTTP status.
        self.refused: dict[int, int] = {}
        #: HTTP pushes answered, by HTTP status (200 delivered).
        self.pushes: dict[int, int] = {}

    def tally(self, namespace: str) -> Tally:
        """The tally of ``namespace`` (made on first use)."""
        tally = self.tallies.get(namespace)
        if tally is None:
            tally = self.tallies[namespace] = Tally(namespace)
        return tally

    def refusal(self, status: int) -> None:
        """Count a refused WebSocket upgrade."""
        self.refused[status] = self.refused.get(status, 0) + 1

    def push(self, status: int) -> None:
        """Count an HTTP push answered with ``status``."""
        self.pushes[status] = self.pushes.get(status, 0) + 1
