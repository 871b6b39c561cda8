"""Two cluster nodes (native servers on a real redis-server), asyncio and trio: the host's
calls on node A reach members on node B (publish, to one member, presence, disconnect), and
the HTTP door's /s/<token> works on the node that does not hold the member (a forwarded POST,
a forwarded long poll): no sticky sessions."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from httpdoor import SSE, StreamMember, poll, poll_open, send_as, session_request
from redisproc import redis_server
from wsclient import clients, join, recv_json

from conftest import make_config
from transports.server import RelayServer

pytestmark = pytest.mark.anyio

#: [http] poll_wait of both nodes: a forwarded request nobody answers waits this long.
POLL_WAIT = 2.0


@asynccontextmanager
async def two_nodes(directory: Path) -> AsyncIterator[tuple[RelayServer, RelayServer]]:
    async with redis_server(directory) as redis, anyio.create_task_group() as tg:
        nodes = []
        for name in ("a", "b"):
            config = make_config(
                f'[cluster]\nredis_url = "{redis.url}"\nnode_id = "{name}"\n[http]\npoll_wait = {POLL_WAIT}\n'
            )
            config.limits.messages_per_second = 10_000.0
            server = RelayServer(config)
            await tg.start(server.serve, "127.0.0.1", 0)
            nodes.append(server)
        with anyio.fail_after(10):
            while not all(node.hub.is_online for node in nodes):  # type: ignore[attr-defined]
                await anyio.sleep(0.05)
        try:
            yield nodes[0], nodes[1]
        finally:
            tg.cancel_scope.cancel()


async def until(client: object, predicate: object, timeout: float = 10.0) -> dict:
    with anyio.fail_after(timeout):
        while True:
            frame = await recv_json(client, timeout)  # type: ignore[arg-type]
            if predicate(frame):  # type: ignore[operator]
                return frame


async def test_the_hosts_calls_and_the_http_door_reach_every_node(tmp_path: Path) -> None:
    async with two_nodes(tmp_path) as (a, b), clients(a.port) as connect:
        ws, hello = await join(connect, "/c/room?alias=WsOnA&announce=true")
        sse = await StreamMember.open(b.port, "/c/room?alias=SseOnB&announce=true", SSE)
        try:
            sse_hello = await sse.frame(10)
            await until(ws, lambda f: f.get("type") == "join" and f.get("alias") == "SseOnB")
            # presence on A counts both nodes' members.
            with anyio.fail_after(10):
                while (roster := await a.presence("room")).total != 2:
                    await anyio.sleep(0.05)
            assert sorted(m.alias or "" for m in roster.members) == ["SseOnB", "WsOnA"]
            # publish on A reaches A and B, and says so.
            assert await a.publish("room", {"news": 1}) == 2
            assert (await until(ws, lambda f: "message" in f))["message"] == {"news": 1}
            assert (await sse.frame(10))["message"] == {"news": 1}
            # ... or one member, on the other node.
            assert await a.publish("room", "just b", to=sse_hello["uid"]) == 1
            assert (await sse.frame(10))["message"] == "just b"
            # The SSE member on B sends through node A: forwarded to B.
            assert await send_as(a.port, sse.token, {"via": "a"}) == 204
            got = await until(ws, lambda f: "message" in f)
            assert got["message"] == {"via": "a"} and got["uid"] == sse_hello["uid"]
            # A long-poll member on B, polled through A.
            token, first = await poll_open(b.port, "/c/room?alias=PollOnB")
            assert first[0]["self"] is True

            async def speak() -> None:
                await anyio.sleep(0.3)
                await ws.send('"for the poller"')

            async with anyio.create_task_group() as tg:
                tg.start_soon(speak)
                found = []
                with anyio.fail_after(15):
                    while not any(f.get("message") == "for the poller" for f in found):
                        status, frames = await poll(a.port, token)
                        assert status == 200
                        found += frames
            # A's answers are B's: a body that is not JSON, a DELETE, then a token that ended.
            status, headers, body = await session_request(a.port, "POST", token, b"{nope")
            assert (status, body) == (400, b"Invalid JSON message.") and headers["content-type"].startswith(
                "text/plain"
            )
            assert (await session_request(a.port, "DELETE", token))[0] == 204
            await until(ws, lambda f: f.get("type") == "leave" and f["total"] == 2)  # (unannounced: no uid)
            status, _, body = await session_request(a.port, "POST", token, b'"late"')
            assert (status, body) == (404, b"Session not found.")
            # A token of no node anywhere: nobody answers, 404 after poll_wait; not a token: 404.
            ghost = "x" * 24 + "." + base64.urlsafe_b64encode(b"nowhere.1").decode().rstrip("=")
            with anyio.fail_after(POLL_WAIT + 5):
                assert (await session_request(a.port, "POST", ghost, b"1"))[0] == 404
            assert (await session_request(a.port, "DELETE", "plain"))[0] == 404
            # disconnect, from A, of the member on B: its stream ends with the host's code.
            assert await a.disconnect("room", sse_hello["uid"], code=4000, reason="bye") is True
            await sse.ended(10)
            assert ("close", json.dumps({"code": 4000, "reason": "bye"}, separators=(",", ":"))) in sse.events
            leave = await until(ws, lambda f: f.get("type") == "leave" and f.get("uid") == sse_hello["uid"])
            assert leave["uid"] == sse_hello["uid"]
            assert await a.disconnect("room", "nobody") is False
            assert hello["self"] is True
        finally:
            await sse.aclose()
