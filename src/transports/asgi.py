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

>>> app = create_app()
>>> callable(app)
True
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote

import anyio

from relaycore import Answer, ClientSession, Clock, Config, Hub, MessageOutbox, UidSource

from ._backend import event_class
from ._clock import SystemClock, secure_uids
from ._cluster import cluster_driver, cluster_hub
from ._routes import door_routes

__all__ = ["RelayApp", "app", "create_app"]

log = logging.getLogger("relaycore.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The last payload decoded for sending, and its text: a broadcast wakes every recipient's
#: writer in a row with the same bytes object, so the decode is done once, not N times.
_decoded: tuple[bytes, str] = (b"", "")


def _text(payload: bytes) -> str:
    global _decoded
    last, text = _decoded
    if payload is not last:
        text = payload.decode()
        _decoded = (payload, text)
    return text


class _Link:
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


class RelayApp:
    """An ASGI 3 application serving one relay (see the module docstring)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._links: set[_Link] = set()
        #: The cluster driver, when the hub is a cluster node; it runs during the lifespan
        #: (or inside :meth:`running`, for an app mounted in another).
        self.backplane = cluster_driver(hub, self.flush)
        self._cluster_running = False
        #: The paths served beside the relay's own: ``/metrics``, static files (None: neither).
        self.routes = door_routes(hub, self.backplane)
        #: The ``/metrics`` endpoint and its registry, when ``[metrics] enabled``.
        self.metrics = None if self.routes is None else self.routes.metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    # -- plumbing ------------------------------------------------------------------------

    def flush(self) -> None:
        """Wake the writer of every outbox the core just filled (the hub never awaits).

        Call it after anything else calls into the hub (a backplane resolving a join)."""
        for outbox in self.hub.take_ready():
            link = outbox.peer
            if link is not None and link.idle is not None:
                link.wake()

    @staticmethod
    def _target(scope: Scope) -> bytes:
        """The request target (path and query) below the mount point, still percent-encoded."""
        raw = scope.get("raw_path")
        root = scope.get("root_path", "")
        if raw:
            path = bytes(raw)
            prefix = quote(root).encode()
            if root and path.startswith(prefix):
                path = path[len(prefix) :]
        else:
            text = scope["path"]
            if root and text.startswith(root):
                text = text[len(root) :]
            path = quote(text).encode()
        query = scope.get("query_string", b"")
        return path + b"?" + query if query else path

    @staticmethod
    def _client(scope: Scope) -> str:
        client = scope.get("client")
        return str(client[0]) if client else ""

    # -- http ------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = self._target(scope)
        method = scope["method"].encode()
        waiting = _PlainHTTP()
        session = ClientSession(self.hub, MessageOutbox(0, []), waiting, client=self._client(scope), routes=self.routes)
        body = bytearray()
        answer = None
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > session.message_limit:
                answer = session.body_too_large(target, scope["headers"])
                break
            if not message.get("more_body", False):
                break
        if answer is None:
            answer = session.request(method, target, scope["headers"], bytes(body))
            self.flush()
            if answer is None:  # a push the cluster answers later
                with anyio.move_on_after(self.hub.config.limits.handshake_timeout):
                    answer = await waiting.answer()
                if answer is None:
                    answer = session.push_timed_out()
        headers = answer.headers
        if answer.status != 204:  # No Content has no length (RFC 9110, 8.6)
            headers = [*headers, (b"content-length", str(len(answer.body)).encode())]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == b"HEAD" else answer.body})

    # -- websocket -------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        outbox = MessageOutbox(self.hub.config.limits.outbound_buffer_bytes, self.hub.ready)
        link = _Link(outbox)
        outbox.peer = link
        client = self._client(scope)
        # /echo exercises the native server's framing; behind ASGI the server frames.
        session = link.session = ClientSession(self.hub, outbox, link, client=client, echo_endpoint=False)
        # Over HTTP/2 (and 3) the WebSocket came as an extended CONNECT (RFC 8441), which the
        # server checked: there are no HTTP/1.1 upgrade headers to check.
        connect = scope.get("http_version", "1.1") not in ("1.0", "1.1")
        answer = session.request(b"GET", self._target(scope), scope["headers"], upgrade=True, extended_connect=connect)
        self.flush()
        if answer is None and session.pending:
            with anyio.move_on_after(self.hub.config.limits.handshake_timeout):
                await link.decided.wait()
            if session.pending:  # no decision in time: withdraw, refuse without an answer
                session.leave()
                log.info(
                    "upgrade from %s dropped: no cluster decision in time",
                    session.client,
                    extra=_fields(session, "upgrade.timeout"),
                )
                await send({"type": "websocket.close", "code": 1011})
                return
            answer = link.refusal
        if answer is not None:
            if session.refused is not None:
                fields = _fields(session, "upgrade.refused")
                fields["status"] = session.refused
                log.info(
                    "upgrade from %s refused: %d %s", session.client, session.refused, session.problem, extra=fields
                )
            await self._deny(scope, send, answer.status, answer.headers, answer.body)
            return
        self._links.add(link)
        try:
            if self.hub.closing:
                session.shutdown()
            await send({"type": "websocket.accept"})  # a server that fails here: leave too
            if _dropped_by_server(send):
                log.info(
                    "connection from %s dropped by the server before it opened",
                    session.client,
                    extra=_fields(session, "connection.dropped"),
                )
                return  # the member leaves: nobody will ever hear of this connection again
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._write, link, send)
                tg.start_soon(self._watch, link, tg.cancel_scope)
                await self._read(link, receive)
                tg.cancel_scope.cancel()
        finally:
            self._links.discard(link)
            session.leave(link.peer_code)
            self.flush()
            link.done.set()
            if session.problem is not None:
                fields = _fields(session, "connection.ended")
                if link.close is not None:
                    fields["code"] = link.close[0]
                log.info("connection from %s ended: %s", session.client, session.problem, extra=fields)

    async def _deny(
        self, scope: Scope, send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        """Refuse an upgrade with a real HTTP response where the server can send one."""
        if "websocket.http.response" in scope.get("extensions", {}):
            headers = [*headers, (b"content-length", str(len(body)).encode())]
            await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})

    async def _read(self, link: _Link, receive: Receive) -> None:
        session = link.session
        assert session is not None
        while link.close is None:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                text = message.get("text")
                session.message(text if text is not None else message.get("bytes") or b"")
                self.flush()
            elif kind == "websocket.disconnect":
                link.peer_code = message.get("code")
                return
        # Closing: the writer sends the close; keep reading until the server says it went.
        while (await receive())["type"] != "websocket.disconnect":
            pass

    async def _write(self, link: _Link, send: Send) -> None:
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
                    await send({"type": "websocket.send", "text": _text(payload)})
                if link.close is not None and not outbox:
                    code, reason = link.close
                    await send({"type": "websocket.close", "code": code, "reason": reason})
                    return
        except OSError:
            return  # the client went while we wrote (uvicorn's ClientDisconnected); the reader hears it

    async def _watch(self, link: _Link, scope: anyio.CancelScope) -> None:
        """Once the relay decided to close, give the writer ``close_timeout`` to get the
        close out (a client that stopped reading may never let it), then drop the connection."""
        await link.closing.wait()
        await anyio.sleep(self.hub.config.limits.close_timeout)
        scope.cancel()

    # -- lifespan --------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        async with contextlib.AsyncExitStack() as stack:
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await stack.enter_async_context(self.running())
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.shutdown()
                    await stack.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[RelayApp]:
        """Run the app's background work (the cluster driver) for the block.

        The app's own lifespan does this; an app mounted in another (FastAPI, Starlette),
        whose lifespan the outer app does not pass on, enters it from the outer lifespan.
        On leaving, the members' leaves still queued for the cluster are sent first.
        """
        if self.backplane is None or self._cluster_running:
            yield self
            return
        self._cluster_running = True
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self.backplane.run)
                try:
                    yield self
                finally:
                    with anyio.CancelScope(shield=True):
                        await self.backplane.drain(self.hub.config.server.shutdown_grace)
                    tg.cancel_scope.cancel()
        finally:
            self._cluster_running = False

    async def shutdown(self) -> None:
        """Close every member with 1001 and wait (up to ``shutdown_grace``) for the closes to go out."""
        self.hub.shutdown()
        links = list(self._links)
        for link in links:
            if link.session is not None:
                link.session.shutdown()
        self.flush()
        with anyio.move_on_after(self.hub.config.server.shutdown_grace):
            for link in links:
                await link.done.wait()


def _dropped_by_server(send: Send) -> bool:
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


def _fields(session: ClientSession, event: str) -> dict[str, Any]:
    """The structured fields of a log line about ``session`` (see transports.logs): never a
    key, a channel name or message content."""
    fields: dict[str, Any] = {"event": event, "client": session.client}
    if session.namespace is not None:
        fields["namespace"] = session.namespace
    if session.problem:
        fields["reason"] = session.problem
    return fields


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


def create_app(config: Config | None = None, *, hub: Hub | None = None) -> RelayApp:
    """An ASGI app for a relay with ``config`` (or serving ``hub``, with the hub's config).

    >>> from relaycore import Config
    >>> create_app(Config()).hub.config.limits.max_message_bytes
    102400
    """
    if hub is None:
        hub = cluster_hub(config or Config(), SystemClock(), secure_uids)
    elif config is not None and config != hub.config:
        from relaycore import RelayUsageError

        raise RelayUsageError("create_app(config, hub=...): the config differs from hub.config; pass one")
    return RelayApp(hub)


def _from_environment(clock: Clock | None = None, uids: UidSource | None = None) -> RelayApp:
    """``transports.asgi:app``: the TOML file named by RELAYCORE_CONFIG plus RELAYCORE_* overrides."""
    from .cli import load_config

    environ = {name: value for name, value in os.environ.items() if name != "RELAYCORE_CONFIG"}
    config = load_config(os.environ.get("RELAYCORE_CONFIG") or None, environ)
    return RelayApp(cluster_hub(config, clock or SystemClock(), uids or secure_uids))


class _LazyApp:
    """Builds the configured app on first use, so that importing this module reads nothing."""

    _app: RelayApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            self._app = _from_environment()
        await self._app(scope, receive, send)


#: The app ``uvicorn transports.asgi:app`` and ``hypercorn transports.asgi:app`` serve.
app = _LazyApp()
