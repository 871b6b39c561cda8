"""The texts of the protocol's error frames and push refusals (docs/protocol.md), as the
relay writes them: for tools that check a relay, such as ``relaycore check``.

>>> user_not_found("abc123")
'User abc123 not found.'
"""

from __future__ import annotations

from ._hub import BINARY_UNSUPPORTED, INVALID_JSON, JOIN_KEY_REQUIRED, SEND_KEY_REQUIRED, user_not_found
from ._session import INVALID_JSON_BODY

__all__ = [
    "BINARY_UNSUPPORTED",
    "INVALID_JSON",
    "INVALID_JSON_BODY",
    "JOIN_KEY_REQUIRED",
    "SEND_KEY_REQUIRED",
    "user_not_found",
]
