"""The relay's ASGI app, wrapped to record the HTTP version of every WebSocket it serves.

For ``test_h2.py``: ``hypercorn scope_app:app`` (with this directory on ``PYTHONPATH``)
serves ``transports.asgi.create_app(config)``, the configuration read from the TOML file
named by ``RELAYCORE_CONFIG``. Before the relay sees a WebSocket scope, one JSON line
``{"path": ..., "http_version": ..., "origin": ...}`` is appended to the file named by
``RELAY_TEST_SCOPE_LOG``, so a test can tell whether a browser's WebSocket came over
HTTP/1.1 (an Upgrade) or HTTP/2 (an extended CONNECT, RFC 8441).

Nothing happens at import (pytest imports every module here for its doctests): the relay
is built on the first call.
"""

from __future__ import annotations

import json
import os
from typing import Any

#: The environment variable naming the file of WebSocket scopes (not ``RELAYCORE_*``: the
#: relay refuses settings it does not know).
SCOPE_LOG = "RELAY_TEST_SCOPE_LOG"


class ScopeRecorder:
    """An ASGI app: log each WebSocket scope's ``http_version``, then hand it to the relay."""

    def __init__(self) -> None:
        self._relay: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self._relay is None:
            from transports._door import load_config
            from transports.asgi import create_app

            self._relay = create_app(load_config(os.environ["RELAYCORE_CONFIG"], {}))
        if scope["type"] == "websocket":
            origin = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"origin"), None)
            line = {"path": scope["path"], "http_version": scope.get("http_version"), "origin": origin}
            with open(os.environ[SCOPE_LOG], "a", encoding="utf-8") as log:
                log.write(json.dumps(line) + "\n")
        await self._relay(scope, receive, send)


app = ScopeRecorder()
