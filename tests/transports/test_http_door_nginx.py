"""The HTTP door behind Debian's nginx with its default proxy settings.

A user who puts nginx in front writes ``location / { proxy_pass http://relay; }`` and nothing
more: nginx then buffers every response (``proxy_buffering on``) and speaks HTTP/1.0 to the
relay. A buffered event stream would reach the client in lumps of a buffer's size, seconds
or minutes late; the relay's ``X-Accel-Buffering: no`` on its streams turns buffering off
for them. So, through that nginx: an SSE member and an NDJSON member get a message a
WebSocket member sent (to the relay directly: relaying an upgrade needs more settings)
within a second, and send through ``POST /s/<token>``; a long-poll member joins, waits for
frames, sends and leaves. On the native server (both backends) and the ASGI app under
uvicorn and hypercorn.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from httpdoor import NDJSON, SSE, StreamMember, poll, poll_open, send_as, session_request
from nginxproc import NGINX_DEFAULTS, nginx
from wsclient import Client, clients, join, recv_json

from conftest import make_config, running

pytestmark = [pytest.mark.anyio, pytest.mark.doors]

#: How late a frame may reach a member through nginx.
PROMPT = 1.0


def behind_nginx(directory: Path, relay: Any) -> Any:
    """nginx, with its defaults, in front of ``relay``: the context of its port."""
    return nginx(directory, NGINX_DEFAULTS.format(upstream=f"http://127.0.0.1:{relay.port}"))


async def promptly(member: StreamMember) -> Any:
    """The member's next frame, which must come within :data:`PROMPT` seconds."""
    started = time.monotonic()
    frame = await member.frame(timeout=PROMPT + 4)
    late = time.monotonic() - started
    assert late < PROMPT, f"the frame came {late:.2f} s late through nginx: {frame}"
    return frame


async def relayed_within_a_second(ws: Client, members: list[StreamMember], message: Any) -> None:
    """``ws`` sends ``message``; every member gets it within a second."""
    await ws.send(json.dumps(message))
    for member in members:
        frame = await promptly(member)
        assert frame["message"] == message, frame


async def test_stream_members_behind_nginx_get_each_frame_within_a_second(door: str, tmp_path: Path) -> None:
    async with running(make_config(), door=door) as relay, clients(relay.port) as connect:
        ws, _ = await join(connect, "/c/proxied")
        with behind_nginx(tmp_path, relay) as port:
            sse = await StreamMember.open(port, "/c/proxied?alias=Sse", SSE)
            lines = await StreamMember.open(port, "/c/proxied?alias=Lines", NDJSON)
            try:
                assert (sse.client.status, lines.client.status) == (200, 200)
                assert sse.client.headers["content-type"].startswith("text/event-stream")
                assert lines.client.headers["content-type"] == "application/x-ndjson"
                assert sse.token and lines.token
                # The first frames are not held in nginx's buffer either.
                assert (await promptly(sse))["self"] is True
                assert (await promptly(lines))["self"] is True
                assert (await promptly(sse))["type"] == "join"  # the NDJSON member's
                assert sse.events[0][0] == "session"
                for _ in range(2):
                    assert (await recv_json(ws))["type"] == "join"
                for n in range(3):
                    await relayed_within_a_second(ws, [sse, lines], {"n": n})
                # Sending through nginx: POST /s/<token>.
                assert await send_as(port, sse.token, {"from": "sse"}) == 204
                assert (await recv_json(ws))["message"] == {"from": "sse"}
                assert (await promptly(lines))["message"] == {"from": "sse"}
            finally:
                await sse.aclose()
                await lines.aclose()


async def test_a_stream_the_relay_ends_ends_behind_nginx(door: str, tmp_path: Path) -> None:
    async with running(make_config(), door=door) as relay, clients(relay.port) as connect:
        ws, _ = await join(connect, "/c/ending")
        with behind_nginx(tmp_path, relay) as port:
            for accept in (SSE, NDJSON):
                member = await StreamMember.open(port, "/c/ending", accept)
                try:
                    assert (await promptly(member))["self"] is True
                    assert (await recv_json(ws))["type"] == "join"
                    # A push through nginx: the message, then the leave; the stream ends.
                    assert await send_as(port, member.token, {"bye": accept}, "close") == 204
                    assert (await recv_json(ws))["message"] == {"bye": accept}
                    assert (await recv_json(ws))["type"] == "leave"
                    with anyio.move_on_after(3):
                        assert await member.ended() == []
                    assert member.client.ended, f"the stream did not end ({accept})"
                    if accept == SSE:
                        assert member.events[-1] == ("close", '{"code":1000,"reason":""}')
                finally:
                    await member.aclose()


async def test_a_long_poll_member_behind_nginx_polls_sends_and_leaves(door: str, tmp_path: Path) -> None:
    async with running(make_config(), door=door) as relay, clients(relay.port) as connect:
        ws, _ = await join(connect, "/c/polled")
        with behind_nginx(tmp_path, relay) as port:
            token, first = await poll_open(port, "/c/polled?alias=Lp&announce=true")
            assert [f["type"] for f in first] == ["join"] and first[0]["self"] is True
            assert (await recv_json(ws))["alias"] == "Lp"

            async def speak_later() -> None:
                await anyio.sleep(0.3)
                await ws.send('{"n": 1}')

            started = time.monotonic()
            async with anyio.create_task_group() as tg:
                tg.start_soon(speak_later)
                status, frames = await poll(port, token)  # waits in the relay, through nginx
            assert status == 200 and [f["message"] for f in frames] == [{"n": 1}]
            assert time.monotonic() - started < 0.3 + PROMPT
            assert await send_as(port, token, "from lp") == 204
            assert (await recv_json(ws))["message"] == "from lp"
            assert (await session_request(port, "DELETE", token))[0] == 204
            assert (await recv_json(ws))["type"] == "leave"
            status, _ = await poll(port, token)  # what was left (nothing), then 404
            if status == 200:
                status, _ = await poll(port, token)
            assert status == 404
