"""Plain HTTP behind ASGI: push, health, version, ``/metrics`` and static files; 404 otherwise.

The request goes to a :class:`relaycore.ClientSession` of its own, with the door's routes,
exactly as behind the native server. A push to a channel the cluster must decide on is
answered once the cluster did (or ``handshake_timeout`` passed).
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from relaycore import Answer, ClientSession, Door, HTTPError, Hub, MessageOutbox
from relaycore.texts import CLUSTER_UNAVAILABLE

from .._door import DoorRoutes
from ._scope import Receive, Scope, Send, client_address, target
from ._stream import HTTPLink, serve_stream

__all__ = ["serve_http"]


async def serve_http(
    hub: Hub,
    routes: DoorRoutes | None,
    flush: Callable[[], None],
    scope: Scope,
    receive: Receive,
    send: Send,
    door: Door | None = None,
) -> None:
    """Answer one ``http`` scope: read the body (bounded), ask the session, send its answer
    (or, for an HTTP door member's stream, the stream)."""
    path = target(scope)
    method = scope["method"].encode()
    link = HTTPLink()
    outbox = MessageOutbox(0, [], door=door)
    outbox.peer = link
    session = link.session = ClientSession(hub, outbox, link, client=client_address(scope), routes=routes)
    body = bytearray()
    answer = None
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if len(body) > session.message_limit:
            answer = session.body_too_large(path, scope["headers"])
            break
        if not message.get("more_body", False):
            break
    if answer is None:
        answer = session.request(method, path, scope["headers"], bytes(body))
        flush()
        if answer is None:
            answer = await _decision(hub, session, link)
        if answer is None:
            await serve_stream(hub, link, flush, receive, send)
            return
    headers = answer.headers
    if answer.status != 204:  # No Content has no length (RFC 9110, 8.6)
        headers = [*headers, (b"content-length", str(len(answer.body)).encode())]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == b"HEAD" else answer.body})


async def _decision(hub: Hub, session: ClientSession, link: HTTPLink) -> Answer | None:
    """The answer decided later (a push or a join the cluster decides, a long poll), or
    None once a stream opened."""
    if not session.pending:
        return None  # a stream opened at once
    polling = session.awaiting is not None
    bound = hub.config.http.poll_wait if polling else hub.config.limits.handshake_timeout
    answer = None
    with anyio.move_on_after(bound):
        answer = await link.decided()
    if answer is None and session.pending:
        if polling:
            return session.poll_timed_out()
        if session.stream is not None:  # a stream's join the cluster did not decide in time
            session.leave()
            return session.refusal(HTTPError(503, CLUSTER_UNAVAILABLE, [(b"retry-after", b"1")]))
        return session.push_timed_out()
    return answer
