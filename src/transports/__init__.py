"""transports: thin anyio shells (asyncio and trio) that run the relaycore core.

``relaycore`` decides, ``transports`` moves bytes. Every rule a client meets is the core's
(the session layer and the hub); a door turns some wire into members of channels, and asks
the core about everything else. The map:

- ``_door.py``: what every door shares, so that a relay is the same behind each one:
  configuration loading, the real clock and uid source, which event loop runs, the hub or
  cluster node with its Redis driver, routes and metrics (assembled once), the one
  config-vs-hub rule, and the log lines about a client.
- ``server/``: the native server (:class:`transports.server.RelayServer`): raw
  non-blocking sockets in one selector, h11 + wsproto framing through
  :class:`relaycore.Connection`, TLS, the ``relaycore serve`` command and the supervisor
  of ``--workers N``.
- ``asgi/``: the relay as an ASGI 3 app (``transports.asgi:app``,
  :func:`transports.asgi.create_app`) for uvicorn, hypercorn, Starlette and FastAPI: the
  server frames, each connection is a :class:`relaycore.ClientSession` with one writer.
- ``client/``: the Python client (``connect``, ``push``, ``http_push``) and the
  ``relaycore listen``, ``send`` and ``push`` commands, on the core's client wire.
- ``check/``: the conformance checker (``relaycore check``, ``python -m transports.check``).
- ``redis_backplane.py``: the Redis driver of a cluster node; ``metrics.py``: ``/metrics``;
  ``static.py``: static files at ``/``; ``logs.py``: JSON log lines; ``cli.py``: the
  ``relaycore`` command, which dispatches to each door's or tool's subcommand;
  ``pytest_plugin.py``: the ``relay_*`` fixtures.

Inside each package, modules are private (``_name.py``); the public names are the
package's ``__all__``.
"""

from __future__ import annotations

__all__: list[str] = []
