"""What every front door shares: one place, so that a relay is the same behind each door.

A door (the native server, the ASGI app) moves bytes; the core decides. Around the core, a
door needs the same few things, and gets each of them here:

- **configuration**: :func:`load_config` (a TOML file plus ``RELAYCORE_*`` overrides) and
  :func:`config_from_environment` (the file named by ``RELAYCORE_CONFIG``: what
  ``transports.asgi:app`` serves);
- **the real clock and uid source** injected into the core (:class:`SystemClock`,
  :func:`secure_uids`);
- **which event loop runs** (:func:`running_asyncio_loop`, :func:`event_class`), told
  without sniffio, so each door can take its loop's own fast primitives;
- **the hub it serves**: :func:`door_hub`, which holds the one config-vs-hub rule, makes a
  cluster node when ``[cluster] redis_url`` is set; :func:`door_parts` fits the hub out
  with the Redis driver, the extra routes (:class:`DoorRoutes`: ``/client.js``,
  ``/metrics``, static files) and the metrics, the same way for every door;
- **the log lines** about one client (upgrade refused, connection ended) and their
  structured fields (:func:`connection_fields`): never a key, a channel name or content.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote_to_bytes

import anyio

from relaycore import (
    Answer,
    ClientSession,
    Clock,
    ClusterHub,
    Config,
    ConfigError,
    Headers,
    Hub,
    RelayUsageError,
    UidSource,
)

from ._browser import ClientScript
from .static import StaticFiles

if TYPE_CHECKING:
    from .metrics import Metrics
    from .redis_backplane import RedisBackplane

__all__ = [
    "DoorParts",
    "DoorRoutes",
    "SystemClock",
    "config_from_environment",
    "connection_fields",
    "door_hub",
    "door_parts",
    "event_class",
    "load_config",
    "log_ended",
    "log_refused",
    "running_asyncio_loop",
    "secure_token",
    "secure_uids",
]

# -- configuration -------------------------------------------------------------------------


def load_config(path: str | None, env: dict[str, str] | None = None) -> Config:
    """Read the TOML file (if any) and apply ``RELAYCORE_*`` environment overrides."""
    text = Path(path).read_bytes() if path else b""
    return Config.from_toml(text, dict(os.environ) if env is None else env)


def config_from_environment(environ: Mapping[str, str] | None = None) -> Config:
    """The TOML file named by ``RELAYCORE_CONFIG`` plus the ``RELAYCORE_*`` overrides.

    ``RELAYCORE_CONFIG`` itself is not an override (the relay refuses settings it does not know).
    """
    environ = os.environ if environ is None else environ
    overrides = {name: value for name, value in environ.items() if name != "RELAYCORE_CONFIG"}
    return load_config(environ.get("RELAYCORE_CONFIG") or None, overrides)


# -- the clock and uids --------------------------------------------------------------------

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


class SystemClock:
    """Wall time for ``date`` stamps and a monotonic time for deadlines."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


def secure_token() -> str:
    """An HTTP door session token: 144 bits from the OS's random source, URL-safe."""
    return secrets.token_urlsafe(18)


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


# -- the event loop ------------------------------------------------------------------------
# anyio runs on asyncio or trio. Under trio no asyncio loop is running, so asking asyncio is
# enough to tell them apart (anyio no longer needs sniffio, so a plain install may not have it).


def running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The asyncio loop running this task, or None on another backend (trio) or outside one."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def event_class() -> Callable[[], Any]:
    """The running loop's own event class (``asyncio.Event`` or ``trio.Event``).

    ``anyio.Event()`` looks the backend up on every creation, which a writer waiting once per
    idle spell pays once per message on a busy channel.
    """
    if running_asyncio_loop() is not None:
        return asyncio.Event
    try:
        import trio

        trio.lowlevel.current_task()
    except (ImportError, RuntimeError):
        return anyio.Event
    return trio.Event


# -- the hub and what a door fits it out with ----------------------------------------------


def door_hub(
    config: Config | None = None, hub: Hub | None = None, *, clock: Clock | None = None, uids: UidSource | None = None
) -> Hub:
    """The hub a door serves: ``hub`` itself, or a new one for ``config`` (the defaults if None).

    A new hub is a cluster node when ``[cluster] redis_url`` is set. A given hub brings its
    own configuration, clock and uids: one source for limits, TLS and ports. Passing a
    config that differs from it, or a clock or uids beside it, is a usage error.
    """
    if hub is None:
        return _node(config or Config(), clock or SystemClock(), uids or secure_uids)
    if config is not None and config != hub.config:
        raise RelayUsageError("the config differs from hub.config: pass one or the other")
    if clock is not None or uids is not None:
        raise RelayUsageError("a hub brings its own clock and uids: pass neither with it")
    return hub


def _node(config: Config, clock: Clock, uids: UidSource) -> Hub:
    """A hub for ``config``: a cluster node when ``[cluster] redis_url`` is set."""
    if not config.cluster.redis_url:
        return Hub(config, clock, uids)
    from .redis_backplane import node_name

    return ClusterHub(config, clock, uids, node=node_name(config.cluster.node_id))


class DoorParts(NamedTuple):
    """What a door runs beside its connections (see :func:`door_parts`)."""

    #: The cluster driver, when the hub is a cluster node (None: one process).
    backplane: RedisBackplane | None
    #: The paths served beside the relay's own: ``/client.js``, ``/metrics``, static files.
    routes: DoorRoutes | None
    #: The ``/metrics`` endpoint and its registry, when ``[metrics] enabled``.
    metrics: Metrics | None


def door_parts(hub: Hub, flush: Callable[[], None]) -> DoorParts:
    """The cluster driver, routes and metrics ``hub.config`` asks for.

    ``flush`` is the door's wake: the driver calls it after anything it did to the hub.
    Raises :class:`relaycore.ConfigError` when ``static_dir`` is not a directory, when
    metrics are enabled without prometheus-client installed, or when a cluster node has no
    ``redis_url``.
    """
    if hub.http.tokens is None:
        hub.http.tokens = secure_token  # the HTTP door's tokens (the core has no randomness)
    backplane = _driver(hub, flush)
    routes = _routes(hub, backplane)
    return DoorParts(backplane, routes, routes.metrics)


def _driver(hub: Hub, flush: Callable[[], None]) -> RedisBackplane | None:
    """The Redis driver of a cluster hub (None for a hub of one process)."""
    if not isinstance(hub, ClusterHub):
        return None
    url = hub.config.cluster.redis_url
    if not url:
        raise ConfigError("a ClusterHub needs `cluster.redis_url` in its config")
    from .redis_backplane import RedisBackplane

    return RedisBackplane(hub, url, flush)


METRICS_PATH = b"/metrics"


class DoorRoutes:
    """The HTTP paths the doors add to the relay's own: ``/client.js`` (the browser client),
    ``/metrics`` (when enabled), then the static files (when configured). The session asks
    them last (:data:`relaycore.Routes`).

    ``/client.js`` and ``/metrics`` are the relay's own paths (``/metrics`` even when
    metrics are off): they never name a static file.
    """

    __slots__ = ("client", "metrics", "static")

    def __init__(self, metrics: Metrics | None, static: StaticFiles | None, client: ClientScript | None = None) -> None:
        self.metrics = metrics
        self.static = static
        self.client = client

    def __call__(self, method: bytes, path: bytes, headers: Headers) -> Answer | None:
        if self.client is not None and self.client.owns(path):
            return self.client.answer(method, headers)
        if path == METRICS_PATH or (b"%" in path and unquote_to_bytes(path) == METRICS_PATH):
            return None if self.metrics is None else self.metrics.answer(method, headers)
        if self.static is None:
            return None
        return self.static.answer(method, path)


def _routes(hub: Hub, backplane: RedisBackplane | None) -> DoorRoutes:
    """The routes ``hub.config`` asks for, and the browser client."""
    config = hub.config
    metrics = None
    if config.metrics.enabled:
        from .metrics import Metrics

        metrics = Metrics(hub, token=config.metrics.token, backplane=backplane)
    static = StaticFiles(config.server.static_dir) if config.server.static_dir else None
    return DoorRoutes(metrics, static, ClientScript(hub))


# -- log lines -----------------------------------------------------------------------------


def connection_fields(
    event: str, session: ClientSession, *, code: int | None = None, reason: str | None = None
) -> dict[str, Any]:
    """The structured fields of a log line about one client (see :mod:`transports.logs`).

    ``reason`` defaults to the session's problem. Never a key, a channel name or message
    content: the namespace is a prefix from the configuration.
    """
    fields: dict[str, Any] = {"event": event, "client": session.client}
    if session.namespace is not None:
        fields["namespace"] = session.namespace
    if code is not None:
        fields["code"] = code
    reason = reason or session.problem
    if reason:
        fields["reason"] = reason
    return fields


def log_refused(
    log: logging.Logger, session: ClientSession, *, code: int | None = None, reason: str | None = None
) -> None:
    """``upgrade from <client> refused: <status> <why>``, when the session refused a join."""
    fields = connection_fields("upgrade.refused", session, code=code, reason=reason)
    fields["status"] = session.refused
    log.info("upgrade from %s refused: %d %s", session.client, session.refused, session.problem, extra=fields)


def log_ended(log: logging.Logger, session: ClientSession, problem: str, *, code: int | None = None) -> None:
    """``connection from <client> ended: <problem>``, for a connection that ended badly."""
    fields = connection_fields("connection.ended", session, code=code, reason=problem)
    log.info("connection from %s ended: %s", session.client, problem, extra=fields)
