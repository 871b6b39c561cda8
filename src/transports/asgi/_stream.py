"""The HTTP door behind ASGI: a member's SSE or NDJSON stream as one streaming response.

Theory of operation. The session admitted a plain ``GET /c/<channel>`` that accepts a
streaming type (:mod:`relaycore._http_door`); its outbox is of the stream's wire form, so
what the hub queues is already the bytes of the response body. The stream runs three tasks:
the writer sends everything queued at each wake as one body chunk, the reader waits for
``http.disconnect`` (the member's leave), and the ticker queues the form's keepalive every
``[http] keepalive_interval`` seconds. A close the relay decides (a slow consumer, a
``DELETE``, shutdown) is the form's close, then the end of the body; a client that stopped
reading gets ``close_timeout`` to take it, then the response is dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

from relaycore import Answer, ClientSession, Hub, Outbox

from .._door import event_class
from ._scope import Receive, Send

__all__ = ["HTTPLink", "serve_stream"]


class HTTPLink:
    """The transport side of one ``http`` scope: an answer to wait for, or a stream."""

    __slots__ = ("_answer", "_event", "close", "closing", "idle", "outbox", "session")

    def __init__(self) -> None:
        self._answer: Answer | None = None
        self._event: Any = None
        #: The stream's outbox and session, once it opened.
        self.outbox: Outbox | None = None
        self.session: ClientSession | None = None
        #: The event the stream's writer waits on while it has nothing to send.
        self.idle: Any = None
        #: The close the session decided, once it did.
        self.close: tuple[int, str] | None = None
        self.closing = anyio.Event()

    # -- the session's transport side ------------------------------------------------------

    def session_closed(self, code: int, reason: str) -> None:
        self.close = (code, reason)
        self.wake()
        self.closing.set()

    def session_opened(self) -> None:
        self._decided()

    def session_refused(self, answer: Answer) -> None:
        self.session_answered(answer)

    def session_answered(self, answer: Answer) -> None:
        self._answer = answer
        self._decided()

    def _decided(self) -> None:
        if self._event is not None:
            self._event.set()

    async def decided(self) -> Answer | None:
        """Wait for the decision: the answer, or None when a stream opened."""
        if self._answer is None and self.session is not None and self.session.pending:
            self._event = event_class()()
            await self._event.wait()
        return self._answer

    def wake(self) -> None:
        """Something was queued (or a close decided): let an idle writer go."""
        waiter = self.idle
        if waiter is not None:
            self.idle = None
            waiter.set()


async def serve_stream(hub: Hub, link: HTTPLink, flush: Callable[[], None], receive: Receive, send: Send) -> None:
    """Send the admitted stream of ``link.session`` until it ends (see the module docstring)."""
    session = link.session
    assert session is not None
    link.outbox = session.outbox
    session.outbox.peer = link
    await send({"type": "http.response.start", "status": 200, "headers": session.stream_headers})
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_keepalive, hub, link)
            tg.start_soon(_read, link, receive, tg.cancel_scope)
            tg.start_soon(_drop_after_close, hub, link, tg.cancel_scope)
            await _write(link, send, hub.config.limits.close_timeout)
            tg.cancel_scope.cancel()
    finally:
        session.leave()
        flush()


async def _write(link: HTTPLink, send: Send, close_timeout: float) -> None:
    outbox = link.outbox
    session = link.session
    assert outbox is not None and session is not None and session.stream is not None
    new_event = event_class()
    try:
        while True:
            if not outbox and link.close is None:
                link.idle = waiter = new_event()
                await waiter.wait()
            chunks = outbox.take()
            if chunks and not outbox.overflowed:
                await send({"type": "http.response.body", "body": b"".join(chunks), "more_body": True})
            if link.close is not None and not outbox:
                end = session.stream.close(*link.close)
                # Shielded (for close_timeout at most): a server may end the connection
                # within this call and tell the reader so, which would cancel the call
                # half-way (hypercorn's trio worker then never closed the socket).
                with anyio.CancelScope(shield=True, deadline=anyio.current_time() + close_timeout):
                    await send({"type": "http.response.body", "body": end, "more_body": False})
                return
    except OSError:
        return  # the client went while we wrote; the reader hears it


async def _read(link: HTTPLink, receive: Receive, scope: anyio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def _keepalive(hub: Hub, link: HTTPLink) -> None:
    session, outbox = link.session, link.outbox
    assert session is not None and outbox is not None and session.stream is not None
    keepalive = session.stream.keepalive()
    if not keepalive:
        return
    while True:
        await anyio.sleep(hub.config.http.keepalive_interval)
        outbox.write(keepalive, pin=False)
        link.wake()


async def _drop_after_close(hub: Hub, link: HTTPLink, scope: anyio.CancelScope) -> None:
    await link.closing.wait()
    await anyio.sleep(hub.config.limits.close_timeout)
    scope.cancel()
