"""The ASGI app driven in-process, as a server would, on asyncio and trio.

Each fake connection has a receive stream the test feeds and a send that records (or,
for a client that stopped reading, never returns). This is where the app's own promises
are checked precisely: the hub never awaits a send, a stalled member is closed with 1008
while the others get every message, a close that cannot get out is dropped after
``close_timeout``, lifespan shutdown closes with 1001, the mount prefix is taken off the
path. Real uvicorn and hypercorn processes are the door tests' business.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from conftest import make_config
from core._frames import UPGRADE_HEADERS
from transports.asgi import RelayApp, create_app

pytestmark = pytest.mark.anyio

DENIAL = {"websocket.http.response": {}}


class FakeSocket:
    """One websocket scope's two channels; ``stalled`` sends never complete."""

    def __init__(self, app: RelayApp, path: str, *, stalled: bool = False, extensions: Any = None) -> None:
        self.app = app
        path, _, query = path.partition("?")
        self.scope: dict[str, Any] = {
            "type": "websocket",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": UPGRADE_HEADERS,
            "client": ("10.1.1.1", 5000),
            "extensions": DENIAL if extensions is None else extensions,
        }
        self.to_app, self._inbox = anyio.create_memory_object_stream[dict[str, Any]](100)
        self.sent: list[dict[str, Any]] = []
        self.stalled = stalled
        self.arrived = anyio.Event()
        self.finished = anyio.Event()

    async def _receive(self) -> dict[str, Any]:
        return await self._inbox.receive()

    async def _send(self, message: dict[str, Any]) -> None:
        if self.stalled and message["type"] == "websocket.send":
            await anyio.sleep_forever()
        self.sent.append(message)
        self.arrived.set()
        if message["type"] == "websocket.close":
            # As a server does once the close handshake is over.
            await self.to_app.send({"type": "websocket.disconnect", "code": message["code"]})

    async def run(self) -> None:
        try:
            await self.app(self.scope, self._receive, self._send)
        finally:
            self.finished.set()

    def frames(self) -> list[Any]:
        return [json.loads(m["text"]) for m in self.sent if m["type"] == "websocket.send"]

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Any]:
        with anyio.fail_after(timeout):
            while len(self.frames()) < count:
                self.arrived = anyio.Event()
                await self.arrived.wait()
        return self.frames()

    async def say(self, text: str) -> None:
        await self.to_app.send({"type": "websocket.receive", "text": text})


@asynccontextmanager
async def connected(app: RelayApp, *paths: str, stalled: tuple[int, ...] = ()) -> AsyncIterator[list[FakeSocket]]:
    sockets = [FakeSocket(app, path, stalled=i in stalled) for i, path in enumerate(paths)]
    async with anyio.create_task_group() as tg:
        for sock in sockets:
            tg.start_soon(sock.run)
            await sock.to_app.send({"type": "websocket.connect"})
            if not sock.stalled:
                await sock.wait_for(1)
            else:
                await anyio.sleep(0.01)
        yield sockets
        tg.cancel_scope.cancel()


async def test_members_join_talk_and_leave() -> None:
    app = create_app(make_config())
    async with connected(app, "/c/room?alias=Ann&announce", "/c/room") as (ann, bob):
        assert ann.sent[0] == {"type": "websocket.accept"}
        assert ann.frames()[0]["self"] is True and (await ann.wait_for(2))[1]["total"] == 2
        await bob.say('{"hi":1}')
        assert (await ann.wait_for(3))[2]["message"] == {"hi": 1}
        await bob.to_app.send({"type": "websocket.disconnect", "code": 1000})
        leave = (await ann.wait_for(4))[3]
        assert leave["type"] == "leave" and leave["total"] == 1


async def test_a_stalled_member_is_closed_1008_and_the_others_get_every_message() -> None:
    app = create_app(make_config("[limits]\noutbound_buffer_bytes = 20000\nclose_timeout = 0.5"))
    async with connected(app, "/c/room", "/c/room", "/c/room", stalled=(1,)) as (sender, stuck, live):
        for seq in range(40):  # 40 x ~1 kB: the stalled member's outbox overflows
            await sender.say(json.dumps({"seq": seq, "pad": "p" * 1000}))
        frames = await live.wait_for(1 + 40 + 1)
        seqs = [f["message"]["seq"] for f in frames if "message" in f and isinstance(f["message"], dict)]
        assert seqs == list(range(40))
        leaves = [f for f in frames if f.get("type") == "leave"]
        assert len(leaves) == 1 and leaves[0]["total"] == 2
        # The stalled member's handler gives up after close_timeout: its socket is released.
        with anyio.fail_after(5):
            await stuck.finished.wait()
        assert app.hub.connections == 2


async def test_refusals_are_http_answers_with_the_extension_and_a_close_without() -> None:
    config = make_config('[namespaces."locked"]\njoin_key = "k"')
    app = create_app(config)
    denied = FakeSocket(app, "/c/locked")
    closed = FakeSocket(app, "/c/locked", extensions={})
    for sock in (denied, closed):
        await sock.to_app.send({"type": "websocket.connect"})
        with anyio.fail_after(5):
            await sock.run()
    assert denied.sent[0]["type"] == "websocket.http.response.start" and denied.sent[0]["status"] == 403
    assert denied.sent[1]["body"] == b"Joining requires a valid joinKey."
    assert closed.sent == [{"type": "websocket.close", "code": 1008}]


async def test_a_message_over_the_limit_closes_1009_whatever_the_server_allows() -> None:
    app = create_app(make_config("[limits]\nmax_message_bytes = 100"))
    async with connected(app, "/c/room") as (member,):
        await member.say(json.dumps("\u00e9" * 60))  # 60 characters, 122 bytes in UTF-8
        with anyio.fail_after(5):
            while member.sent[-1]["type"] != "websocket.close":
                member.arrived = anyio.Event()
                await member.arrived.wait()
        assert member.sent[-1]["code"] == 1009 and member.sent[-1]["reason"] == "message too big"


async def test_lifespan_shutdown_closes_every_member_with_1001() -> None:
    app = create_app(make_config())
    to_app, inbox = anyio.create_memory_object_stream[dict[str, Any]](10)
    replies: list[dict[str, Any]] = []

    async def reply(message: dict[str, Any]) -> None:
        replies.append(message)

    async with connected(app, "/c/room", "/c/other") as members, anyio.create_task_group() as tg:
        tg.start_soon(app, {"type": "lifespan"}, inbox.receive, reply)
        await to_app.send({"type": "lifespan.startup"})
        await to_app.send({"type": "lifespan.shutdown"})
        with anyio.fail_after(5):
            while {"type": "lifespan.shutdown.complete"} not in replies:
                await anyio.sleep(0.01)
        for member in members:
            assert member.sent[-1] == {"type": "websocket.close", "code": 1001, "reason": "server shutting down"}
        assert replies[0] == {"type": "lifespan.startup.complete"}


async def test_http_push_health_and_a_mount_prefix() -> None:
    config = make_config('[namespaces."alerts"]\nsend_key = "s3"')
    app = create_app(config)

    async def call(method: str, path: str, body: bytes = b"", headers: Any = ()) -> tuple[int, bytes]:
        scope = {
            "type": "http",
            "method": method,
            "path": "/relay" + path,
            "raw_path": ("/relay" + path).encode(),
            "root_path": "/relay",
            "query_string": b"",
            "headers": list(headers),
            "client": ("10.2.2.2", 1),
        }
        chunks = [
            {"type": "http.request", "body": body[:5], "more_body": True},
            {"type": "http.request", "body": body[5:]},
        ]
        out: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return chunks.pop(0)

        async def send(message: dict[str, Any]) -> None:
            out.append(message)

        await app(scope, receive, send)
        return out[0]["status"], out[1]["body"]

    assert await call("GET", "/health") == (200, b'{"status":"ok","version":"0.1.0","channels":0,"connections":0}')
    assert (await call("HEAD", "/version"))[1] == b""
    assert await call("GET", "/nowhere") == (404, b"Not found.")
    status, body = await call("POST", "/push/alerts", b'{"up":true}', [(b"x-send-key", b"s3")])
    assert (status, json.loads(body)) == (200, {"ok": True, "recipients": 0})
    status, body = await call("POST", "/push/alerts", b"x" * 200_000, [(b"x-send-key", b"s3")])
    assert (status, json.loads(body)) == (413, {"ok": False, "error": "Body too large."})
    assert (await call("GET", "/c/room"))[0] == 426


async def test_a_hub_and_a_disagreeing_config_are_refused() -> None:
    from relaycore import RelayUsageError

    app = create_app(make_config())
    assert create_app(hub=app.hub).hub is app.hub
    with pytest.raises(RelayUsageError):
        create_app(make_config("[limits]\nmax_message_bytes = 7"), hub=app.hub)


async def test_a_malformed_key_is_refused_even_where_the_server_lets_it_through() -> None:
    app = create_app(make_config())
    sock = FakeSocket(app, "/c/room")
    sock.scope["headers"] = [*UPGRADE_HEADERS[:-1], (b"sec-websocket-key", b"not base64!")]
    await sock.to_app.send({"type": "websocket.connect"})
    with anyio.fail_after(5):
        await sock.run()
    assert sock.sent[0]["status"] == 400 and sock.sent[1]["body"] == b"Invalid Sec-WebSocket-Key."
    assert app.hub.connections == 0


async def test_a_server_that_fails_the_accept_leaves_no_member_behind() -> None:
    app = create_app(make_config())
    sock = FakeSocket(app, "/c/room")

    async def refuse_accept(message: dict[str, Any]) -> None:
        if message["type"] == "websocket.accept":
            raise OSError("the server gave up on this connection")

    await sock.to_app.send({"type": "websocket.connect"})
    with anyio.fail_after(5), pytest.raises(OSError):
        await app(sock.scope, sock._receive, refuse_accept)
    assert app.hub.connections == 0 and not app.hub.channels
