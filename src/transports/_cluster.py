"""How a front door becomes a cluster node: one place for both doors (server and ASGI)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from relaycore import Clock, ClusterHub, Config, ConfigError, Hub, UidSource

if TYPE_CHECKING:
    from .redis_backplane import RedisBackplane

__all__ = ["cluster_driver", "cluster_hub"]


def cluster_hub(config: Config, clock: Clock, uids: UidSource) -> Hub:
    """A hub for ``config``: a cluster node when ``[cluster] redis_url`` is set."""
    if not config.cluster.redis_url:
        return Hub(config, clock, uids)
    from .redis_backplane import node_name

    return ClusterHub(config, clock, uids, node=node_name(config.cluster.node_id))


def cluster_driver(hub: Hub, flush: Callable[[], None]) -> RedisBackplane | None:
    """The Redis driver of a cluster hub (None for a hub of one process)."""
    if not isinstance(hub, ClusterHub):
        return None
    url = hub.config.cluster.redis_url
    if not url:
        raise ConfigError("a ClusterHub needs `cluster.redis_url` in its config")
    from .redis_backplane import RedisBackplane

    return RedisBackplane(hub, url, flush)
