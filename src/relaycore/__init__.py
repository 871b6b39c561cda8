"""relaycore: a sans-I/O relay core speaking the itty-sockets protocol.

Bytes and calls in, bytes and effects out: no sockets, no event loop, no clock or
randomness of its own. Transports (see the ``transports`` package) move the bytes.

>>> from relaycore import Config, Hub, Connection
>>> from relaycore.testing import FakeClock, seeded_uids
>>> hub = Hub(Config(), FakeClock(), seeded_uids(1))
>>> conn = Connection(hub, client="127.0.0.1")
"""

from __future__ import annotations

from ._channel import Channel, JoiningSession, Member, Session
from ._cluster import SCRIPTS, Call, ClusterHub, channel_keys
from ._config import (
    ClusterConfig,
    Config,
    HTTPConfig,
    LimitsConfig,
    MetricsConfig,
    NamespaceConfig,
    PresenceConfig,
    ServerConfig,
)
from ._connection import Connection, State
from ._counters import DROP_REASONS, Counters, Tally
from ._errors import ConfigError, HTTPError, RelayError, RelayUsageError, RelayValueError
from ._forms import MESSAGES, NDJSON, SSE, WEBSOCKET, WireForm
from ._hooks import Admit, Hooks, JoinAttempt, Refuse
from ._host import Roster
from ._hub import Hub
from ._limits import UNIX_PEER
from ._names import JoinOptions, NamespaceTable, parse_channel, parse_options
from ._outbox import Door, FormOutbox, MessageOutbox, Outbox
from ._protocols import Backplane, Clock, JoinRequest, LocalBackplane, PushWaiter, UidSource
from ._session import Answer, ClientSession, Headers, Routes, SessionTransport, __version__
from ._stream import Stream
from ._wire import parse_json, text_frame

__all__ = [
    "DROP_REASONS",
    "Admit",
    "Hooks",
    "JoinAttempt",
    "Refuse",
    "Roster",
    "MESSAGES",
    "NDJSON",
    "SSE",
    "WEBSOCKET",
    "SCRIPTS",
    "Answer",
    "Backplane",
    "Call",
    "Channel",
    "ClientSession",
    "Clock",
    "ClusterConfig",
    "ClusterHub",
    "Config",
    "ConfigError",
    "Connection",
    "Counters",
    "Door",
    "FormOutbox",
    "HTTPConfig",
    "HTTPError",
    "Headers",
    "Hub",
    "JoinOptions",
    "JoinRequest",
    "JoiningSession",
    "LimitsConfig",
    "LocalBackplane",
    "Member",
    "MessageOutbox",
    "MetricsConfig",
    "NamespaceConfig",
    "NamespaceTable",
    "Outbox",
    "PresenceConfig",
    "PushWaiter",
    "RelayError",
    "RelayUsageError",
    "RelayValueError",
    "Routes",
    "ServerConfig",
    "Session",
    "SessionTransport",
    "State",
    "Stream",
    "Tally",
    "UNIX_PEER",
    "UidSource",
    "WireForm",
    "__version__",
    "channel_keys",
    "parse_channel",
    "parse_json",
    "parse_options",
    "text_frame",
]
