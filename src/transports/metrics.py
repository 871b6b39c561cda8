"""Prometheus metrics: ``GET /metrics`` on both front doors, from the core's counters.

Theory of operation. The core counts what it decides with plain integers
(:class:`relaycore.Counters`, one :class:`relaycore.Tally` per namespace), and nothing on
the path of a message calls prometheus-client. A :class:`RelayCollector` reads those
integers, the channels open now and the cluster's counters when it is scraped, and turns
them into metric families; each relay has its own ``CollectorRegistry`` (several relays
in one process do not mix). :class:`Metrics` is the endpoint: the bearer token, checked in
constant time, then the text exposition format. It is opt-in (``[metrics] enabled``) and
needs the ``metrics`` extra (``pip install 'relaycore[metrics]'``).

Labels are the namespace (the reserved prefix covering a channel, or ``""`` for open
channels), a drop's reason, a close code or an HTTP status: all bounded by the
configuration or the protocol, never by what clients make up (no channel names).
docs/operations.md lists every metric.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from relaycore import Answer, ClusterHub, ConfigError, Headers, Hub, __version__
from relaycore.texts import METHOD_NOT_ALLOWED

if TYPE_CHECKING:
    from prometheus_client.core import Metric
    from prometheus_client.registry import CollectorRegistry

    from .redis_backplane import RedisBackplane

__all__ = ["CONTENT_TYPE", "Metrics", "RelayCollector"]

#: The Prometheus text exposition format that ``generate_latest`` writes.
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
_TEXT = b"text/plain; charset=utf-8"


def _require_prometheus_client() -> None:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ConfigError("`metrics.enabled` needs prometheus-client: pip install 'relaycore[metrics]'") from None


class RelayCollector:
    """Reads one relay's counters at scrape time (a prometheus-client custom collector)."""

    def __init__(self, hub: Hub, backplane: RedisBackplane | None = None) -> None:
        self.hub = hub
        self.backplane = backplane

    def collect(self) -> Iterator[Metric]:
        """Every metric family, from the counters as they are now."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        hub = self.hub
        counters = hub.counters
        tallies = sorted(counters.tallies.values(), key=lambda tally: tally.namespace)

        info = GaugeMetricFamily("relaycore_build_info", "The relay's version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info

        yield GaugeMetricFamily(
            "relaycore_connections", "Open WebSocket connections in channels (members) on this node.", hub.connections
        )
        channels = dict.fromkeys((tally.namespace for tally in tallies), 0)
        members = dict(channels)
        for channel in hub.channels.values():
            label = channel.tally.namespace
            channels[label] = channels.get(label, 0) + 1
            members[label] = members.get(label, 0) + len(channel.members)
        yield _by_namespace(GaugeMetricFamily, "relaycore_channels", "Channels open, by namespace.", channels)
        yield _by_namespace(GaugeMetricFamily, "relaycore_members", "Channel members, by namespace.", members)

        for name, text, field in (
            ("relaycore_messages_received", "Messages received from clients (within the size limit).", "received"),
            ("relaycore_messages_delivered", "Relayed messages delivered to members (one per recipient).", "delivered"),
            (
                "relaycore_bytes_out",
                "Bytes of the relayed messages delivered (their JSON, per recipient).",
                "bytes_out",
            ),
        ):
            values = {tally.namespace: getattr(tally, field) for tally in tallies}
            yield _by_namespace(CounterMetricFamily, name, text, values)

        dropped = CounterMetricFamily(
            "relaycore_messages_dropped",
            "Messages not relayed, by namespace and reason.",
            labels=["namespace", "reason"],
        )
        closes = CounterMetricFamily(
            "relaycore_closes", "Members' WebSockets ended, by namespace and close code.", labels=["namespace", "code"]
        )
        for tally in tallies:
            for reason, count in tally.dropped.items():
                dropped.add_metric([tally.namespace, reason], count)
            for code, count in sorted(tally.closes.items()):
                closes.add_metric([tally.namespace, str(code) if code else "other"], count)
        yield dropped
        yield closes
        yield _by_status("relaycore_handshakes_refused", "Refused WebSocket upgrades, by status.", counters.refused)
        yield _by_status("relaycore_pushes", "HTTP pushes answered, by status.", counters.pushes)
        if isinstance(hub, ClusterHub):
            yield from self._cluster(hub)

    def _cluster(self, hub: ClusterHub) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield GaugeMetricFamily("relaycore_cluster_online", "1 while Redis is reachable.", 1 if hub.is_online else 0)
        stats = hub.stats
        for name, text, value in (
            ("relaycore_cluster_published", "Messages sent to the other nodes.", stats["published"]),
            ("relaycore_cluster_publish_dropped", "Messages for the other nodes dropped.", stats["dropped_messages"]),
            ("relaycore_cluster_records_received", "Pub/sub records received from Redis.", stats["records_in"]),
            ("relaycore_cluster_received_bytes", "Bytes of the pub/sub records received.", stats["bytes_in"]),
            ("relaycore_cluster_resyncs", "Channels reloaded from Redis after a backlog.", stats["resyncs"]),
            ("relaycore_cluster_uid_conflicts", "Members closed for a uid taken elsewhere.", stats["uid_conflicts"]),
        ):
            yield CounterMetricFamily(name, text, value)
        backplane = self.backplane
        if backplane is None:
            return
        plane = backplane.stats
        connects = plane["connects"]
        for name, text, value in (
            ("relaycore_cluster_connects", "Sessions with Redis begun.", connects),
            ("relaycore_cluster_reconnects", "Sessions with Redis begun after the first.", max(0, connects - 1)),
            ("relaycore_cluster_outages", "Times Redis became unreachable.", plane["outages"]),
            ("relaycore_cluster_publish_batches", "Publishes sent to Redis.", plane["published_batches"]),
            ("relaycore_cluster_reaped", "Members of silent nodes this node removed.", plane["reaped"]),
        ):
            yield CounterMetricFamily(name, text, value)
        if backplane.ping_seconds is not None:
            yield GaugeMetricFamily(
                "relaycore_cluster_ping_seconds",
                "Round trip of the last heartbeat ping through Redis pub/sub, back to this node.",
                backplane.ping_seconds,
            )


def _by_namespace(family: Any, name: str, text: str, values: dict[str, int]) -> Metric:
    metric = family(name, text, labels=["namespace"])
    for namespace, value in sorted(values.items()):
        metric.add_metric([namespace], value)
    return metric  # type: ignore[no-any-return]


def _by_status(name: str, text: str, values: dict[int, int]) -> Metric:
    from prometheus_client.core import CounterMetricFamily

    metric = CounterMetricFamily(name, text, labels=["status"])
    for status, value in sorted(values.items()):
        metric.add_metric([str(status)], value)
    return metric


class Metrics:
    """The ``/metrics`` endpoint of one relay, with its own registry.

    ``registry`` is a ``prometheus_client.CollectorRegistry``: register your own
    collectors there to serve them from the relay's endpoint too.
    """

    def __init__(self, hub: Hub, *, token: str = "", backplane: RedisBackplane | None = None) -> None:
        _require_prometheus_client()
        from prometheus_client.registry import CollectorRegistry

        self.registry: CollectorRegistry = CollectorRegistry(auto_describe=False)
        self.collector = RelayCollector(hub, backplane)
        self.registry.register(self.collector)
        self._expected = f"Bearer {token}".encode() if token else None

    def answer(self, method: bytes, headers: Headers) -> Answer:
        """The answer to a request for ``/metrics``."""
        if method not in (b"GET", b"HEAD"):
            return Answer(405, METHOD_NOT_ALLOWED.encode(), [(b"content-type", _TEXT), (b"allow", b"GET, HEAD")])
        if not self.authorized(headers):
            return Answer(401, b"Unauthorized.", [(b"content-type", _TEXT), (b"www-authenticate", b"Bearer")])
        from prometheus_client import generate_latest

        return Answer(200, generate_latest(self.registry), [(b"content-type", CONTENT_TYPE)])

    def authorized(self, headers: Headers) -> bool:
        """Whether the request carries the token (always, when there is none)."""
        expected = self._expected
        if expected is None:
            return True
        offered = b""
        for name, value in headers:
            if bytes(name).lower() == b"authorization":
                offered = bytes(value).strip()
                break
        # Constant time: a timing difference must not tell how much of a guess was right.
        return hmac.compare_digest(offered, expected)
