"""The native server: the relay core on raw non-blocking sockets, on asyncio or trio.

Theory of operation. Every socket (listeners and connections) is registered with one OS
readiness selector (epoll on Linux, kqueue on the BSDs and macOS), whose own file
descriptor is watched by the event loop: on trio by ONE task in ``anyio.wait_readable``,
on asyncio by a reader callback registered once. On readiness the server asks the
selector which sockets are ready and handles them all in one pass: accept new
connections, read what the kernel has and feed it to the core's
:class:`relaycore.Connection`, or write a backlog. Then it *flushes*: every outbox the
core filled is written straight to its socket with a non-blocking ``send()``, so a
broadcast costs no task switch per recipient, and all frames due to one member from one
pass go out in one ``send()``. A socket that does not take everything keeps the rest in
its (bounded) outbox and is watched for writability until it drains. A member whose
outbox goes over ``outbound_buffer_bytes`` is closed by the core as a slow consumer; the
others never wait for it. While the core says a connection is owed too much
(``Connection.reading`` is False: over the bound, or a pipelined HTTP answer unwritten),
its socket is not read at all, so a peer that never reads cannot make the relay owe it
more; once the outbox drains, ``Connection.resume`` lets the core go on.

Failures stay with their connection: an exception while reading, ticking or writing one
socket closes that socket (1011 where a close frame can still go out) and is logged;
``serve()`` ends only when the server's own machinery fails. Transient ``accept()``
errors are skipped; running out of descriptors pauses accepting, is logged once per
episode, and accepting resumes as connections close.

So an idle connection costs no task, no coroutine frames and no cancel scope: only its
socket, its core objects and a selector entry. A second task runs the timers
(keepalive, handshake and close timeouts) by calling the core's ``tick``.

Sockets are plain ``socket.socket`` objects rather than anyio streams: on asyncio, a
stream's socket belongs to an asyncio transport and cannot also be watched here.

The package, one module per concern (all private; the public names are below):

- ``_server.py``: :class:`RelayServer`, what it is made of and its lifecycle (bind,
  serve, shutdown and the graceful drain);
- ``_poll.py``: the two tasks, the selector wait and the timer task;
- ``_listeners.py``: binding every address of a host, accepting, running out of
  descriptors, and the port a supervisor reserves for its workers;
- ``_io.py``: reading, writing (the flush) and ending peers; ``_peers.py``: a peer's
  state; ``_tls.py``: TLS sessions in memory buffers;
- ``_command.py``: ``relaycore serve`` (:func:`add_arguments`, :func:`run`);
  ``_supervisor.py``: the supervisor of ``--workers N``.

What every door shares (the hub or cluster node, the Redis driver, routes, metrics, the
config-vs-hub rule, the log lines) comes from ``transports/_door.py``.
"""

from __future__ import annotations

from ._command import add_arguments, run
from ._server import RelayServer

__all__ = ["RelayServer", "add_arguments", "run"]
