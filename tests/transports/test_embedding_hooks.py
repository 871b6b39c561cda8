"""The host's hooks and calls with real servers and real clients (docs/embedding.md, "Talking
to the relay from your app"): examples/fastapi_hooks.py under a real uvicorn, and the same
hooks on the native RelayServer on asyncio and trio; an async authorize that sleeps 1 s while
50 other clients join and chat."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
from doors import POOL, REPO, DoorProcess, config_toml, raw_peer, refusal
from rawws import RawPeer, http, post, text
from wsclient import clients, join, recv_json

from conftest import make_config, running
from relaycore import Admit, Hooks, JoinAttempt

EXAMPLES = REPO / "examples"
sys.path.insert(0, str(EXAMPLES))
import fastapi_hooks  # noqa: E402  (the example itself: its hooks, its session store)

pytestmark = pytest.mark.anyio


async def member(port: int, path: str, cookie: str) -> tuple[RawPeer, dict[str, Any]]:
    peer = await RawPeer.connect(port)
    status, _ = await peer.upgrade(path, headers=f"Cookie: theme=dark; session={cookie}\r\n")
    assert status == 101
    return peer, await peer.read_json()


async def scenario(
    port: int,
    prefix: str,
    login: Callable[[str], Awaitable[str]],
    publish: Callable[[], Awaitable[int]],
    presence: Callable[[str], Awaitable[dict[str, Any]]],
    kick: Callable[[str, str], Awaitable[None]],
) -> None:
    """The embedding scenario, whatever the door: the host's answers through its own calls."""
    # Without the session cookie: the host's refusal, status and text, as a WebSocket sees it.
    status, headers, body, _ = await refusal(port, f"{prefix}/c/orders", "Cookie: session=nope\r\n")
    assert (status, body) == (401, b"Sign in first.")
    assert headers["content-type"] == "text/plain; charset=utf-8"
    ann_cookie, bob_cookie = await login("ann"), await login("bob")
    status, _, body, _ = await refusal(port, f"{prefix}/c/team:ops", f"Cookie: session={bob_cookie}\r\n")
    assert (status, body) == (403, b"Staff only.")
    ann, hello = await member(port, f"{prefix}/c/orders?alias=mallory", ann_cookie)
    assert hello["alias"] == "ann"  # the host's alias, not the one asked for
    bob, bob_hello = await member(port, f"{prefix}/c/orders", bob_cookie)
    assert (await ann.read_json())["alias"] == "bob"  # announced, as the host said
    # The host publishes: the push envelope, no uid or alias, counted.
    assert await publish() == 2
    for peer in (ann, bob):
        got = await peer.read_json()
        assert got["message"] == {"order": 42, "state": "shipped"} and "uid" not in got
    roster = await presence("orders")
    assert roster["total"] == 2
    assert sorted(m["alias"] for m in roster["members"]) == ["ann", "bob"]
    # Moderation: spam dropped (the sender is not told), bad words starred.
    await bob.send(text('"spam"'))
    await bob.send(text('{"text": "oh darn it"}'))
    got = await ann.read_json()
    assert got["message"] == {"text": "oh **** it"} and got["alias"] == "bob"
    # The host closes bob with its own code; ann hears the leave.
    await kick("orders", bob_hello["uid"])
    assert await bob.read_close() == 4000
    leave = await ann.read_json()
    assert (leave["type"], leave["uid"], leave["total"]) == ("leave", bob_hello["uid"], 1)
    await ann.aclose()
    await bob.aclose()


@pytest.fixture
async def fastapi_app() -> AsyncIterator[DoorProcess]:
    process = await anyio.to_thread.run_sync(
        lambda: POOL.get(
            "uvicorn",
            config_toml(make_config()),
            app="fastapi_hooks:app",
            pythonpath=[EXAMPLES],
            health_path="/relay/health",
        )
    )
    try:
        yield process
    finally:
        await anyio.to_thread.run_sync(POOL.release, process)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_fastapi_example_under_uvicorn(fastapi_app: DoorProcess) -> None:
    port = fastapi_app.port

    async def login(user: str) -> str:
        status, headers, _ = await http(port, post(f"/login?user={user}", b""))
        assert status == 200
        return headers["set-cookie"].split(";")[0].split("=", 1)[1]

    async def publish() -> int:
        status, _, body = await http(port, post("/orders/42/shipped", b""))
        assert status == 200
        return int(json.loads(body)["recipients"])

    async def presence(channel: str) -> dict[str, Any]:
        status, _, body = await http(port, f"GET /presence/{channel} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert status == 200
        return dict(json.loads(body))

    async def kick(channel: str, uid: str) -> None:
        assert (await http(port, post(f"/kick/{channel}/{uid}", b"")))[0] == 200

    await scenario(port, "/relay", login, publish, presence, kick)


async def test_the_same_hooks_on_the_native_server() -> None:
    hooks = Hooks(authorize=fastapi_hooks.authorize, on_message=fastapi_hooks.moderate)
    async with running(make_config(), hooks=hooks) as server:

        async def login(user: str) -> str:
            token = f"native-{user}-{time.monotonic_ns()}"
            fastapi_hooks.SESSIONS[token] = user
            return token

        async def publish() -> int:
            return await server.publish("orders", {"order": 42, "state": "shipped"})

        async def presence(channel: str) -> dict[str, Any]:
            roster = await server.presence(channel)
            return {"total": roster.total, "members": [{"uid": m.uid, "alias": m.alias} for m in roster.members]}

        async def kick(channel: str, uid: str) -> None:
            assert await server.disconnect(channel, uid, code=4000, reason="kicked") is True

        await scenario(server.port, "", login, publish, presence, kick)


async def test_a_slow_async_authorize_holds_up_nobody_else() -> None:
    async def authorize(attempt: JoinAttempt) -> Admit:
        if attempt.alias == "slow":
            await anyio.sleep(1.0)
        return Admit()

    async with running(make_config(), hooks=Hooks(authorize=authorize)) as server:
        slow_joined = anyio.Event()
        started = time.monotonic()

        async def slow() -> None:
            async with raw_peer(server.port) as peer:
                assert (await peer.upgrade("/c/busy?alias=slow"))[0] == 101
                assert (await peer.read_json())["self"] is True
                slow_joined.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(slow)
            await anyio.sleep(0.05)
            async with clients(server.port) as connect:
                first, _ = await join(connect, "/c/busy")
                others = [(await join(connect, "/c/busy"))[0] for _ in range(49)]
                await others[-1].send('"all here"')
                assert (await recv_json(first, 5))["total"] >= 2  # join events arrive meanwhile
                meanwhile = time.monotonic() - started
                assert not slow_joined.is_set()
            assert meanwhile < 1.0, f"50 joins and a message took {meanwhile:.2f} s beside a 1 s authorize"
        assert slow_joined.is_set() and time.monotonic() - started >= 1.0
