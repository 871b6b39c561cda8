"""Configuration: one typed object, validated once at start-up.

Every key is optional. A TOML file gives the values; environment variables named
``RELAYCORE_<SECTION>_<KEY>`` (for example ``RELAYCORE_LIMITS_MAX_MESSAGE_BYTES``) override
them. The environment is passed in as a mapping: the core never reads ``os.environ``.

>>> cfg = Config.from_toml(b'[limits]\\nmax_message_bytes = 4096', env={})
>>> cfg.limits.max_message_bytes
4096
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from ._errors import ConfigError
from ._limits import FORWARDED_HEADERS, TrustedProxies
from ._origins import Origins

__all__ = [
    "CompressionConfig",
    "Config",
    "ConfigError",
    "HTTPConfig",
    "LimitsConfig",
    "MetricsConfig",
    "NamespaceConfig",
    "PresenceConfig",
    "ServerConfig",
]

ENV_PREFIX = "RELAYCORE_"


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[server]``: where to listen and which optional endpoints to serve."""

    host: str = "127.0.0.1"
    port: int = 8787
    echo_endpoint: bool = False
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    forwarded_header: str = "x-forwarded-for"
    shutdown_grace: float = 5.0
    tls_certfile: str = ""
    tls_keyfile: str = ""
    #: A directory whose files are served at ``/`` (empty: none); the relay's paths win.
    static_dir: str = ""
    #: A Unix socket path to listen on instead of ``host`` and ``port`` (empty: TCP), for a
    #: proxy on the same machine (nginx's ``proxy_pass http://unix:PATH``); the native server.
    uds: str = ""
    #: The web origins (``scheme://host[:port]``) whose pages may open WebSockets and use the
    #: HTTP endpoints (CORS); ``"*"``: any, as a public relay. A request without ``Origin``
    #: (a program, not a page) is always let in.
    allowed_origins: list[str] = msgspec.field(default_factory=lambda: ["*"])

    def __post_init__(self) -> None:
        # Header names are case-insensitive; compare them in the case h11 gives them.
        self.forwarded_header = self.forwarded_header.lower()


class LimitsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[limits]``: every bound the relay enforces (see docs/limits.md)."""

    max_message_bytes: int = 102_400
    messages_per_second: float = 100.0
    messages_burst: int = 200
    connections_per_second_per_ip: float = 10.0
    pushes_per_second_per_ip: float = 20.0
    outbound_buffer_bytes: int = 1_048_576
    ping_interval: float = 30.0
    ping_timeout: float = 30.0
    close_timeout: float = 10.0
    handshake_timeout: float = 10.0
    #: ``SO_SNDBUF`` of each accepted TCP socket (the native server): the kernel's share of
    #: what one slow reader may be owed, beside ``outbound_buffer_bytes``; 0: the system's own.
    socket_send_buffer_bytes: int = 131_072

    def __post_init__(self) -> None:
        if self.socket_send_buffer_bytes < 0:
            raise ValueError("`limits.socket_send_buffer_bytes` must be 0 (the system's own) or more")


class CompressionConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[compression]``: permessage-deflate on the native server's WebSockets (docs/protocol.md)."""

    #: Accept a client's permessage-deflate offer (every browser makes one).
    enabled: bool = True
    #: The smallest message compressed, in bytes (its JSON); smaller ones go as they are.
    threshold_bytes: int = 512
    #: The zlib level: 1 is the fastest, 9 the smallest output.
    level: int = 6

    def __post_init__(self) -> None:
        if self.threshold_bytes < 0:
            raise ValueError("`compression.threshold_bytes` must be 0 or more")
        if not 1 <= self.level <= 9:
            raise ValueError("`compression.level` must be between 1 and 9")


class ClusterConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[cluster]``: several relay processes on one Redis behave as one relay (docs/cluster.md)."""

    #: ``redis://host:port/db`` (or ``rediss://``, ``unix://``); empty: one process, in memory.
    redis_url: str = ""
    #: This node's name in the cluster; empty: a random one per start.
    node_id: str = ""
    #: How often the node says it is alive, and how long the cluster waits before it
    #: announces a silent node's members' leaves.
    heartbeat_interval: float = 1.0
    node_timeout: float = 5.0
    #: Bytes of messages waiting for Redis before more are dropped (at-most-once).
    publish_buffer_bytes: int = 8_388_608

    def __post_init__(self) -> None:
        if self.node_id and (len(self.node_id) > 64 or not all(c.isalnum() or c in "-_." for c in self.node_id)):
            raise ValueError("`cluster.node_id` must be 1..64 letters, digits, '-', '_' or '.'")
        if self.node_timeout <= 2 * self.heartbeat_interval:
            raise ValueError("`cluster.node_timeout` must be more than twice `cluster.heartbeat_interval`")


class PresenceConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[presence]``: join and leave events in big channels (docs/protocol.md, section 5.4)."""

    #: Above this many members, a channel's join and leave events are coalesced into one
    #: event carrying the total, at most once per ``interval``; 0: never (each one is sent).
    coalesce_above: int = 0
    #: Seconds between two coalesced events in one channel.
    interval: float = 1.0

    def __post_init__(self) -> None:
        if self.coalesce_above < 0:
            raise ValueError("`presence.coalesce_above` must be 0 (off) or more")


class MetricsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[metrics]``: the Prometheus endpoint ``GET /metrics`` (docs/operations.md)."""

    enabled: bool = False
    #: When set, a scrape must say ``Authorization: Bearer <token>``.
    token: str = ""


class HTTPConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[http]``: the HTTP door, members over plain HTTP (SSE, NDJSON, long-poll; docs/transports.md)."""

    #: Serve ``GET /c/<channel>`` with a streaming ``Accept`` and ``/s/<token>``.
    enabled: bool = True
    #: Seconds between keepalives on an idle stream (an SSE comment, a blank NDJSON line).
    keepalive_interval: float = 15.0
    #: Longest a long-poll ``GET /s/<token>`` waits for a frame before answering ``[]``.
    poll_wait: float = 25.0
    #: A long-poll member that has not polled for this many seconds has left.
    poll_timeout: float = 30.0


class NamespaceConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[namespaces."<prefix>"]``: a reservation, and its channels' own settings; every key optional."""

    join_key: str | None = None
    send_key: str | None = None
    #: ``[presence] coalesce_above`` for the namespace's channels (None: the relay's own).
    presence_coalesce_above: int | None = None

    def __post_init__(self) -> None:
        if self.presence_coalesce_above is not None and self.presence_coalesce_above < 0:
            raise ValueError("`presence_coalesce_above` must be 0 (off) or more")


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The whole configuration of a relay."""

    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    compression: CompressionConfig = msgspec.field(default_factory=CompressionConfig)
    cluster: ClusterConfig = msgspec.field(default_factory=ClusterConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    presence: PresenceConfig = msgspec.field(default_factory=PresenceConfig)
    http: HTTPConfig = msgspec.field(default_factory=HTTPConfig)
    #: ``[doors.<name>]``: the installed doors ``relaycore serve`` runs beside the native
    #: server (``relaycore.doors`` entry points), each with its own settings table.
    doors: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    namespaces: dict[str, NamespaceConfig] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        for section, name in _POSITIVE:
            if getattr(getattr(self, section), name) <= 0:
                raise ValueError(f"`{section}.{name}` must be greater than 0")
        if not 0 <= self.server.port <= 65535:
            raise ValueError("`server.port` must be between 0 and 65535")
        if self.server.forwarded_header not in FORWARDED_HEADERS:
            choices = " or ".join(f'"{name}"' for name in FORWARDED_HEADERS)
            raise ValueError(f"`server.forwarded_header` must be {choices}, not {self.server.forwarded_header!r}")
        try:
            TrustedProxies(self.server.trusted_proxies, header=self.server.forwarded_header)
        except ValueError as exc:
            raise ValueError(f"`server.trusted_proxies`: {exc}") from None
        try:
            Origins(self.server.allowed_origins)
        except ValueError as exc:
            raise ValueError(f"`server.allowed_origins`: {exc}") from None
        for prefix in self.namespaces:
            if not prefix or len(prefix.encode()) > 256:
                raise ValueError(f"namespace {prefix!r} must be 1..256 bytes")

    @classmethod
    def from_toml(cls, text: bytes | str = b"", env: Mapping[str, str] | None = None) -> Config:
        """Build a Config from TOML text and an environment mapping.

        Raises ConfigError with a message naming the offending key.
        """
        try:
            raw: dict[str, Any] = msgspec.toml.decode(text) if text else {}
        except msgspec.DecodeError as exc:
            raise ConfigError(f"invalid TOML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError("the configuration must be a TOML table")
        _apply_env(raw, env or {})
        try:
            return msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"invalid configuration: {exc}") from None


_POSITIVE = [
    ("limits", "max_message_bytes"),
    ("limits", "messages_per_second"),
    ("limits", "messages_burst"),
    ("limits", "connections_per_second_per_ip"),
    ("limits", "outbound_buffer_bytes"),
    ("limits", "ping_interval"),
    ("limits", "ping_timeout"),
    ("limits", "close_timeout"),
    ("limits", "handshake_timeout"),
    ("limits", "pushes_per_second_per_ip"),
    ("server", "shutdown_grace"),
    ("presence", "interval"),
    ("http", "keepalive_interval"),
    ("http", "poll_wait"),
    ("http", "poll_timeout"),
    ("cluster", "heartbeat_interval"),
    ("cluster", "node_timeout"),
    ("cluster", "publish_buffer_bytes"),
]


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    """Overlay ``RELAYCORE_SECTION_KEY`` variables onto the decoded TOML tables.

    Every variable with the prefix must name a real setting: a typo is an error, not a
    silently ignored override.
    """
    sections = {
        "SERVER": ServerConfig,
        "LIMITS": LimitsConfig,
        "COMPRESSION": CompressionConfig,
        "CLUSTER": ClusterConfig,
        "METRICS": MetricsConfig,
        "PRESENCE": PresenceConfig,
        "HTTP": HTTPConfig,
    }
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :]
        section, _, key = rest.partition("_")
        struct = sections.get(section)
        key = key.lower()
        if struct is None or key not in struct.__struct_fields__:
            raise ConfigError(f"unknown setting in environment variable {name}")
        table = raw.setdefault(section.lower(), {})
        if not isinstance(table, dict):
            raise ConfigError(f"`{section.lower()}` must be a table")
        table[key] = _env_value(value, key)


def _env_value(value: str, key: str) -> Any:
    """Environment values are strings; lists (trusted_proxies, allowed_origins) are comma separated."""
    if key in ("trusted_proxies", "allowed_origins"):
        return [part.strip() for part in value.split(",") if part.strip()]
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return value.strip()
