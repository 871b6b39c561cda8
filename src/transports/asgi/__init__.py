"""The relay as an ASGI 3 application, for uvicorn, hypercorn, Starlette and FastAPI.

Theory of operation. The server frames for us, so each client is a
:class:`relaycore.ClientSession` over a :class:`relaycore.MessageOutbox` of whole messages:
every rule is the session's, exactly as behind the native server. A WebSocket connection
runs two tasks: the reader feeds the session what ``receive()`` gives, and ONE writer per
connection drains everything queued in its outbox at each wake and ``send()``s it. The hub
never awaits: a broadcast puts the same encoded payload into every recipient's bounded
outbox and wakes their writers; a writer that cannot keep up (its client stopped reading
and the server's own buffers are full) falls behind until its outbox passes
``outbound_buffer_bytes``, and the session closes it with 1008 while everyone else goes on.

- ``websocket`` scope: ``/c/<channel>`` and ``/r/<channel>`` (and ``/echo`` when enabled).
  A refused join is a real HTTP response (403, 429, 400) through the server's
  ``websocket.http.response`` extension, or a close before accept where there is none.
- ``http`` scope: ``POST /push/<channel>``, ``GET /health``, ``GET /version``, and
  ``GET /metrics`` and static files when configured (``[metrics]``, ``[server] static_dir``:
  the same routes as the native server's); 404 otherwise.
- ``lifespan``: shutdown closes every member with 1001.
- Mounted under a prefix (Starlette's ``Mount("/relay", app=...)``), the scope's
  ``root_path`` is taken off the path.

The package, one module per concern (all private; the public names are below):

- ``_app.py``: :class:`RelayApp`, the dispatch of each scope, its lifespan, and
  :func:`create_app` and ``app`` (built on first use: importing reads nothing);
- ``_link.py``: one WebSocket connection: admission, its link to the hub, its reader and
  its one writer;
- ``_http.py``: plain HTTP requests; ``_scope.py``: what is read from a scope.

What every door shares (the hub or cluster node, the Redis driver, routes, metrics, the
config-vs-hub rule, the configuration from the environment, the log lines) comes from
``transports/_door.py``.

>>> app = create_app()
>>> callable(app)
True
"""

from __future__ import annotations

from ._app import RelayApp, app, create_app

__all__ = ["RelayApp", "app", "create_app"]
