"""Every text and close code a client meets, defined once (docs/protocol.md says each).

The rest of the core, the doors and the tools import them from here (the public subset
through :mod:`relaycore.texts`); ``tests/core/test_layering.py`` checks that none is written
a second time anywhere in ``src/``.
"""

from __future__ import annotations

__all__ = [
    "BINARY_UNSUPPORTED",
    "BODY_TOO_LARGE",
    "CLOSE_ABNORMAL",
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_BAD_GATEWAY",
    "CLOSE_INVALID_DATA",
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_SERVICE_RESTART",
    "CLOSE_TOO_BIG",
    "CLOSE_TRY_AGAIN_LATER",
    "CLOSE_UNSUPPORTED",
    "CLUSTER_UNAVAILABLE",
    "INTERNAL_ERROR",
    "INTERNAL_ERROR_TEXT",
    "INVALID_JSON",
    "INVALID_JSON_BODY",
    "JOIN_KEY_REQUIRED",
    "METHOD_NOT_ALLOWED",
    "NOT_FOUND",
    "FOREIGN_SEND_KEY",
    "ORIGIN_NOT_ALLOWED",
    "POLL_EXPIRED",
    "RATE_LIMITED",
    "SEND_KEY_REQUIRED",
    "SESSION_NOT_FOUND",
    "SHUTTING_DOWN",
    "SLOW_CONSUMER",
    "TOO_BIG",
    "TOO_MANY_CONNECTIONS",
    "TOO_MANY_PUSHES",
    "UID_CONFLICT",
    "UPGRADE_REQUIRED",
    "rate_limited",
    "user_not_found",
]

# -- close codes (RFC 6455, 7.4.1; docs/protocol.md, section 12) -------------------------------

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
#: A message of a kind the receiver does not take (the protocol's clients: a binary frame).
CLOSE_UNSUPPORTED = 1003
#: No close frame: the connection was lost (never sent, only reported).
CLOSE_ABNORMAL = 1006
CLOSE_INVALID_DATA = 1007
#: A policy: a rate-limit ban, a slow consumer.
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
#: What servers and proxies in front of a relay may close with: worth dialling again.
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_BAD_GATEWAY = 1014

# -- close reasons ------------------------------------------------------------------------------

SLOW_CONSUMER = "slow consumer"
#: The close after the third rate-limit warning in a minute.
RATE_LIMITED = "rate limit exceeded"
TOO_BIG = "message too big"
SHUTTING_DOWN = "server shutting down"
INTERNAL_ERROR = "internal error"
#: A cluster node found its member's uid taken by another node's (docs/cluster.md).
UID_CONFLICT = "uid conflict"
#: A long-poll member that did not poll again within ``[http] poll_timeout`` (docs/transports.md).
POLL_EXPIRED = "no poll in time"

# -- error frames (docs/protocol.md, section 5.5) ---------------------------------------------

SEND_KEY_REQUIRED = "Sending requires a valid sendKey."
INVALID_JSON = "Invalid JSON message."
BINARY_UNSUPPORTED = "Binary messages are not supported."


def user_not_found(uid: str) -> str:
    """The error text of a direct message to a uid nobody in the channel has.

    >>> user_not_found("abc123")
    'User abc123 not found.'
    """
    return f"User {uid} not found."


def rate_limited(warning: int, most: int) -> str:
    """The error text of a message dropped over the rate limit.

    >>> rate_limited(1, 3)
    'Rate limit exceeded (warning 1 of 3).'
    """
    return f"Rate limit exceeded (warning {warning} of {most})."


# -- HTTP answers (docs/protocol.md, sections 4, 7 and 8) ------------------------------------

JOIN_KEY_REQUIRED = "Joining requires a valid joinKey."
FOREIGN_SEND_KEY = "Invalid sendKey for this namespace."
TOO_MANY_CONNECTIONS = "Too many connections; slow down."
TOO_MANY_PUSHES = "Too many pushes; slow down."
ORIGIN_NOT_ALLOWED = "Origin not allowed."
UPGRADE_REQUIRED = "WebSocket upgrade required."
METHOD_NOT_ALLOWED = "Method not allowed."
NOT_FOUND = "Not found."
INVALID_JSON_BODY = "Invalid JSON body."
BODY_TOO_LARGE = "Body too large."
CLUSTER_UNAVAILABLE = "The cluster is unavailable; try again."
#: A join the host's ``authorize`` hook failed to decide (it raised).
INTERNAL_ERROR_TEXT = "Internal server error."
#: ``/s/<token>`` of no member (never given, or its member has left).
SESSION_NOT_FOUND = "Session not found."
