"""One WebSocket connection behind ASGI: its admission, its link to the hub, its reader and
its ONE writer.

Theory of operation. The server frames for us, so each client is a
:class:`relaycore.ClientSession` over a :class:`relaycore.MessageOutbox` of whole messages,
and the :class:`Link` is the session's transport: what the hub queued, the writer's
wake-up, the close the session decided. A connection runs two tasks: the reader feeds the
session what ``receive()`` gives, and the writer (:func:`write`) drains everything queued
in the outbox at each wake and ``send()``s it, then the close. A broadcast wakes every
recipient's writer in a row with the same payload, which is decoded to text once
(:func:`text`), not once per recipient. Once the relay decided to close, the writer has
``close_timeout`` to get the close out; then the connection is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio

from relaycore import Answer, ClientSession, Door, Hub, MessageOutbox
from relaycore.texts import CLOSE_INTERNAL_ERROR, CLOSE_POLICY

from .._door import connection_fields, event_class, log_ended, log_refused
from ._scope import Receive, Scope, Send, client_address, target

__all__ = ["Link", "dropped_by_server", "serve_websocket", "text", "write"]

log = logging.getLogger("relaycore.asgi")

#: The last payload decoded for sending, and its text: a broadcast wakes every recipient's
#: writer in a row with the same bytes object, so the decode is done once, not N times.
_decoded: tuple[bytes, str] = (b"", "")


def text(payload: bytes) -> str:
    """``payload`` decoded (once for a run of the same bytes object)."""
    global _decoded
    last, decoded = _decoded
    if payload is not last:
        decoded = payload.decode()
        _decoded = (payload, decoded)
    return decoded


class Link:
    """One WebSocket connection's side of the app: its outbox, its writer's wake-up, its close."""

    __slots__ = ("close", "closing", "decided", "done", "idle", "outbox", "peer_code", "refusal", "session")

    def __init__(self, outbox: MessageOutbox) -> None:
        self.outbox = outbox
        #: The event the writer waits on while it has nothing to send (None while it sends).
        self.idle: Any = None
        #: The close the session decided, once it did.
        self.close: tuple[int, str] | None = None
        self.closing = anyio.Event()
        self.done = anyio.Event()
        #: Set once a join the backplane decides later is decided (refusal: its answer).
        self.decided = anyio.Event()
        self.refusal: Answer | None = None
        self.session: ClientSession | None = None
        #: The close code the client sent (None: the connection was lost).
        self.peer_code: int | None = None

    def session_opened(self) -> None:
        self.decided.set()

    def session_refused(self, answer: Answer) -> None:
        self.refusal = answer
        self.decided.set()

    def session_answered(self, answer: Answer) -> None:
        self.session_refused(answer)

    def wake(self) -> None:
        """Something was queued (or a close decided): let an idle writer go."""
        waiter = self.idle
        if waiter is not None:
            self.idle = None
            waiter.set()

    def session_closed(self, code: int, reason: str) -> None:
        self.close = (code, reason)
        self.wake()
        self.closing.set()


async def serve_websocket(
    hub: Hub,
    flush: Callable[[], None],
    links: set[Link],
    scope: Scope,
    receive: Receive,
    send: Send,
    door: Door | None = None,
) -> None:
    """Serve one ``websocket`` scope: admit it (or refuse it), then relay until it closes.

    ``links`` holds the open connections (the app's shutdown closes them); ``flush`` is the
    app's wake, called after every call into the hub.
    """
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    link = await _admit(hub, flush, scope, send, door)
    if link is None:
        return
    session = link.session
    assert session is not None
    links.add(link)
    try:
        if hub.closing:
            session.shutdown()
        await send({"type": "websocket.accept"})  # a server that fails here: leave too
        if dropped_by_server(send):
            log.info(
                "connection from %s dropped by the server before it opened",
                session.client,
                extra=connection_fields("connection.dropped", session),
            )
            return  # the member leaves: nobody will ever hear of this connection again
        async with anyio.create_task_group() as tg:
            tg.start_soon(write, link, send)
            tg.start_soon(_watch, link, hub, tg.cancel_scope)
            await _read(link, receive, flush)
            tg.cancel_scope.cancel()
    finally:
        links.discard(link)
        session.leave(link.peer_code)
        flush()
        link.done.set()
        if session.problem is not None:
            log_ended(log, session, session.problem, code=None if link.close is None else link.close[0])


async def _admit(
    hub: Hub, flush: Callable[[], None], scope: Scope, send: Send, door: Door | None = None
) -> Link | None:
    """The link of an admitted connection, or None once it was refused (and told so)."""
    outbox = MessageOutbox(hub.config.limits.outbound_buffer_bytes, hub.ready, door=door)
    link = Link(outbox)
    outbox.peer = link
    # /echo exercises the native server's framing; behind ASGI the server frames.
    session = link.session = ClientSession(hub, outbox, link, client=client_address(scope), echo_endpoint=False)
    # Over HTTP/2 (and 3) the WebSocket came as an extended CONNECT (RFC 8441), which the
    # server checked: there are no HTTP/1.1 upgrade headers to check.
    connect = scope.get("http_version", "1.1") not in ("1.0", "1.1")
    answer = session.request(b"GET", target(scope), scope["headers"], upgrade=True, extended_connect=connect)
    flush()
    if answer is None and session.pending:
        with anyio.move_on_after(hub.config.limits.handshake_timeout):
            await link.decided.wait()
        if session.pending:  # no decision in time: withdraw, refuse without an answer
            session.leave()
            log.info(
                "upgrade from %s dropped: no cluster decision in time",
                session.client,
                extra=connection_fields("upgrade.timeout", session),
            )
            await send({"type": "websocket.close", "code": CLOSE_INTERNAL_ERROR})
            return None
        answer = link.refusal
    if answer is not None:
        if session.refused is not None:
            log_refused(log, session)
        await _deny(scope, send, answer.status, answer.headers, answer.body)
        return None
    return link


async def _deny(scope: Scope, send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """Refuse an upgrade with a real HTTP response where the server can send one."""
    if "websocket.http.response" in scope.get("extensions", {}):
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": CLOSE_POLICY})


async def _read(link: Link, receive: Receive, flush: Callable[[], None]) -> None:
    session = link.session
    assert session is not None
    while link.close is None:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.receive":
            data = message.get("text")
            session.message(data if data is not None else message.get("bytes") or b"")
            flush()
        elif kind == "websocket.disconnect":
            link.peer_code = message.get("code")
            return
    # Closing: the writer sends the close; keep reading until the server says it went.
    while (await receive())["type"] != "websocket.disconnect":
        pass


async def write(link: Link, send: Send) -> None:
    """The one writer of a connection: everything queued at each wake, then the close."""
    outbox = link.outbox
    new_event = event_class()
    try:
        while True:
            if not outbox and link.close is None:
                link.idle = waiter = new_event()
                await waiter.wait()
            for payload in outbox.take():
                if outbox.overflowed:
                    break  # closed as a slow consumer: the rest would only delay the close
                await send({"type": "websocket.send", "text": text(payload)})
            if link.close is not None and not outbox:
                code, reason = link.close
                await send({"type": "websocket.close", "code": code, "reason": reason})
                return
    except OSError:
        return  # the client went while we wrote (uvicorn's ClientDisconnected); the reader hears it


async def _watch(link: Link, hub: Hub, scope: anyio.CancelScope) -> None:
    """Once the relay decided to close, give the writer ``close_timeout`` to get the
    close out (a client that stopped reading may never let it), then drop the connection."""
    await link.closing.wait()
    await anyio.sleep(hub.config.limits.close_timeout)
    scope.cancel()


def dropped_by_server(send: Send) -> bool:
    """Whether the server already ended this WebSocket without telling the app.

    hypercorn (0.17 and 0.18 at least) answers an upgrade request that has WebSocket frames
    right behind it with its own 400, before the app could accept, and marks its stream
    closed: from then on it drops the app's sends, and never sends ``websocket.disconnect``
    (the client is long gone). The member the relay admitted would stay in its channel for
    good, counted by everyone. The one trace is the flag on the stream whose method ``send``
    is; a server without it (uvicorn, a framework's wrapper) gives False. See
    docs/embedding.md, "What each server does on its own".
    """
    return getattr(getattr(send, "__self__", None), "closed", False) is True
