"""The texts and close codes a client meets (docs/protocol.md), as the relay writes them: for
tools that check or speak to a relay, such as ``relaycore check`` and ``transports.client``.

Every name of :mod:`relaycore._texts`, where each is defined once.

>>> user_not_found("abc123")
'User abc123 not found.'
>>> CLOSE_TOO_BIG, TOO_BIG
(1009, 'message too big')
"""

from __future__ import annotations

from ._texts import *  # noqa: F403  (the public face of the one module of texts)
from ._texts import __all__ as __all__
