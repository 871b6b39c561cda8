"""Plain HTTP behind ASGI: push, health, version, ``/metrics`` and static files; 404 otherwise.

The request goes to a :class:`relaycore.ClientSession` of its own, with the door's routes,
exactly as behind the native server. A push to a channel the cluster must decide on is
answered once the cluster did (or ``handshake_timeout`` passed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

from relaycore import Answer, ClientSession, Hub, MessageOutbox

from .._door import DoorRoutes, event_class
from ._scope import Receive, Scope, Send, client_address, target

__all__ = ["serve_http"]


async def serve_http(
    hub: Hub, routes: DoorRoutes | None, flush: Callable[[], None], scope: Scope, receive: Receive, send: Send
) -> None:
    """Answer one ``http`` scope: read the body (bounded), ask the session, send its answer."""
    path = target(scope)
    method = scope["method"].encode()
    waiting = _PlainHTTP()
    session = ClientSession(hub, MessageOutbox(0, []), waiting, client=client_address(scope), routes=routes)
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
        if answer is None:  # a push the cluster answers later
            with anyio.move_on_after(hub.config.limits.handshake_timeout):
                answer = await waiting.answer()
            if answer is None:
                answer = session.push_timed_out()
    headers = answer.headers
    if answer.status != 204:  # No Content has no length (RFC 9110, 8.6)
        headers = [*headers, (b"content-length", str(len(answer.body)).encode())]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == b"HEAD" else answer.body})


class _PlainHTTP:
    """The transport side of a plain HTTP request: no WebSocket to open or close, and at
    most one answer to wait for (a push the cluster decides)."""

    __slots__ = ("_answer", "_event")

    def __init__(self) -> None:
        self._answer: Answer | None = None
        self._event: Any = None

    def session_closed(self, code: int, reason: str) -> None:
        pass

    def session_opened(self) -> None:
        pass

    def session_refused(self, answer: Answer) -> None:
        self.session_answered(answer)

    def session_answered(self, answer: Answer) -> None:
        self._answer = answer
        if self._event is not None:
            self._event.set()

    async def answer(self) -> Answer:
        if self._answer is None:
            self._event = event_class()()
            await self._event.wait()
        assert self._answer is not None
        return self._answer
