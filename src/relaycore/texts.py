"""The texts and close codes a client meets (docs/protocol.md), as the relay writes them: for
tools that check or speak to a relay, such as ``relaycore check`` and ``transports.client``.

>>> user_not_found("abc123")
'User abc123 not found.'
>>> CLOSE_TOO_BIG, TOO_BIG
(1009, 'message too big')
"""

from __future__ import annotations

from ._texts import (
    BINARY_UNSUPPORTED,
    BODY_TOO_LARGE,
    CLOSE_ABNORMAL,
    CLOSE_BAD_GATEWAY,
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_INVALID_DATA,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_SERVICE_RESTART,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN_LATER,
    CLOSE_UNSUPPORTED,
    CLUSTER_UNAVAILABLE,
    INTERNAL_ERROR,
    INVALID_JSON,
    INVALID_JSON_BODY,
    JOIN_KEY_REQUIRED,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    ORIGIN_NOT_ALLOWED,
    SEND_KEY_REQUIRED,
    SHUTTING_DOWN,
    SLOW_CONSUMER,
    TOO_BIG,
    UID_CONFLICT,
    UPGRADE_REQUIRED,
    rate_limited,
    user_not_found,
)

__all__ = [
    "BINARY_UNSUPPORTED",
    "BODY_TOO_LARGE",
    "CLOSE_ABNORMAL",
    "CLOSE_GOING_AWAY",
    "CLOSE_TRY_AGAIN_LATER",
    "CLOSE_SERVICE_RESTART",
    "CLOSE_BAD_GATEWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_INVALID_DATA",
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_TOO_BIG",
    "CLOSE_UNSUPPORTED",
    "CLUSTER_UNAVAILABLE",
    "INTERNAL_ERROR",
    "INVALID_JSON",
    "INVALID_JSON_BODY",
    "JOIN_KEY_REQUIRED",
    "METHOD_NOT_ALLOWED",
    "NOT_FOUND",
    "ORIGIN_NOT_ALLOWED",
    "SEND_KEY_REQUIRED",
    "SHUTTING_DOWN",
    "SLOW_CONSUMER",
    "TOO_BIG",
    "UID_CONFLICT",
    "UPGRADE_REQUIRED",
    "rate_limited",
    "user_not_found",
]
