"""examples/fastapi_app.py under a real uvicorn process: the relay mounted at /relay.

Two WebSocket clients meet in ``ws://HOST:PORT/relay/c/room`` (join, relay, leave), the
application's own route and the relay's HTTP endpoints answer beside them, and the stock
itty-sockets client runs its whole scenario against ``ws://HOST:PORT/relay``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from doors import POOL, REPO, SCENARIO_CONFIG, DoorProcess, require_node, run_scenario
from rawws import http, post
from wsclient import clients, recv_json

pytestmark = [pytest.mark.anyio, pytest.mark.doors("uvicorn")]

EXAMPLES = REPO / "examples"
CONFIG = SCENARIO_CONFIG  # a `secure` namespace with a send key, for the push


def serve_example(door: str) -> DoorProcess:
    """uvicorn serving examples/fastapi_app.py (one process for this module's tests)."""
    return POOL.get(door, CONFIG, app="fastapi_app:app", pythonpath=[EXAMPLES], health_path="/relay/health")


@pytest.fixture
async def mounted(door: str) -> AsyncIterator[DoorProcess]:
    process = await anyio.to_thread.run_sync(serve_example, door)
    try:
        yield process
    finally:
        await anyio.to_thread.run_sync(POOL.release, process)


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


async def test_two_clients_meet_under_the_mount_point(mounted: DoorProcess) -> None:
    async with clients(mounted.port) as connect:
        alice = await connect("/relay/c/room?alias=Alice")
        hello = await recv_json(alice)
        assert (hello["type"], hello["self"], hello["total"]) == ("join", True, 1)
        bob = await connect("/relay/c/room")
        assert (await recv_json(bob))["total"] == 2
        assert (await recv_json(alice))["type"] == "join"

        await alice.send('{"type":"chat","text":"hi"}')
        relayed = await recv_json(bob)
        assert relayed == {
            "uid": hello["uid"],
            "alias": "Alice",
            "date": relayed["date"],
            "message": {"type": "chat", "text": "hi"},
        }
        await bob.close()
        left = await recv_json(alice)
        assert (left["type"], left["total"]) == ("leave", 1)


async def test_the_application_route_and_the_relay_endpoints_answer(mounted: DoorProcess) -> None:
    status, _, body = await http(mounted.port, get("/hello"))
    assert (status, json.loads(body)) == (200, {"hello": "world"})
    status, _, body = await http(mounted.port, get("/relay/health"))
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, _, body = await http(mounted.port, get("/relay/version"))
    assert status == 200 and body.startswith(b"relaycore ")
    status, _, body = await http(mounted.port, post("/relay/push/secure:news", b'"x"', "x-send-key: sk\r\n"))
    assert (status, json.loads(body)) == (200, {"ok": True, "recipients": 0})
    # Outside the mount point the relay's paths are FastAPI's, which knows none of them.
    assert (await http(mounted.port, get("/health")))[0] == 404
    assert (await http(mounted.port, get("/relay/nothing")))[0] == 404


def test_the_stock_itty_sockets_client_under_the_mount_point(door: str, tmp_path: Path) -> None:
    node = require_node()
    process = serve_example(door)
    try:
        run_scenario(node, f"ws://127.0.0.1:{process.port}/relay", "itty-fastapi", None, process.log)
    finally:
        POOL.release(process)
