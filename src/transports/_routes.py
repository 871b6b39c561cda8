"""The HTTP paths the front doors add to the relay's own: ``/metrics``, then static files.

Both doors (the native server through :class:`relaycore.Connection`, the ASGI app through
:class:`relaycore.ClientSession`) hand the session the same :class:`DoorRoutes`, made here
from the configuration, so a path means the same thing behind either door.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

from relaycore import Answer, Headers, Hub

from .static import StaticFiles

if TYPE_CHECKING:
    from .metrics import Metrics
    from .redis_backplane import RedisBackplane

__all__ = ["DoorRoutes", "door_routes"]

METRICS_PATH = b"/metrics"


class DoorRoutes:
    """``/metrics`` (when enabled), then the static files (when configured).

    ``/metrics`` is the relay's own path even when metrics are off: it never names a
    static file.
    """

    __slots__ = ("metrics", "static")

    def __init__(self, metrics: Metrics | None, static: StaticFiles | None) -> None:
        self.metrics = metrics
        self.static = static

    def __call__(self, method: bytes, path: bytes, headers: Headers) -> Answer | None:
        if path == METRICS_PATH or (b"%" in path and unquote_to_bytes(path) == METRICS_PATH):
            return None if self.metrics is None else self.metrics.answer(method, headers)
        if self.static is None:
            return None
        return self.static.answer(method, path)


def door_routes(hub: Hub, backplane: RedisBackplane | None = None) -> DoorRoutes | None:
    """The routes ``hub.config`` asks for (None: neither metrics nor static files).

    Raises :class:`relaycore.ConfigError` when ``static_dir`` is not a directory, or when
    metrics are enabled without prometheus-client installed.
    """
    config = hub.config
    metrics = None
    if config.metrics.enabled:
        from .metrics import Metrics

        metrics = Metrics(hub, token=config.metrics.token, backplane=backplane)
    static = StaticFiles(config.server.static_dir) if config.server.static_dir else None
    if metrics is None and static is None:
        return None
    return DoorRoutes(metrics, static)
