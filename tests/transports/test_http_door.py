"""The HTTP door behind every front door: SSE, NDJSON and long-poll members in one channel
with WebSocket members, and their ``/s/<token>`` endpoints (docs/transports.md).

Every rule of PROTOCOL.md holds for them as for a WebSocket member: presence and totals,
both directions, direct messages, push (the message before the leave), keys, and the
slow-consumer bound (a stream whose reader stops reading is closed, the others get
everything).
"""

from __future__ import annotations

import json

import anyio
import pytest
from httpdoor import NDJSON, SSE, HTTPClient, StreamMember, poll, poll_open, send_as, session_request
from wsclient import clients, join, recv_json

from conftest import make_config, running

pytestmark = [pytest.mark.anyio, pytest.mark.doors]


async def test_an_sse_member_and_a_websocket_member_chat_in_one_channel(door: str) -> None:
    async with running(make_config(), door=door) as relay, clients(relay.port) as connect:
        ws, _ = await join(connect, "/c/mixed?alias=Web&announce=true")
        sse = await StreamMember.open(relay.port, "/c/mixed?alias=Sse&announce=true", SSE)
        try:
            assert sse.client.status == 200
            headers = sse.client.headers
            assert headers["content-type"].startswith("text/event-stream")
            assert headers["cache-control"] == "no-cache" and headers["x-accel-buffering"] == "no"
            assert len(sse.token) >= 22  # at least 128 bits, URL-safe
            hello = await sse.frame()
            assert hello["type"] == "join" and hello["self"] is True and hello["total"] == 2
            # The named "session" event came first, with the same token.
            assert sse.events[0] == ("session", json.dumps({"token": sse.token}, separators=(",", ":")))
            joined = await recv_json(ws)
            assert (joined["type"], joined["uid"], joined["alias"], joined["total"]) == ("join", hello["uid"], "Sse", 2)
            # WebSocket -> SSE, exactly the envelope a WebSocket member gets.
            await ws.send('{"text": "hi sse"}')
            got = await sse.frame()
            assert got["message"] == {"text": "hi sse"} and got["alias"] == "Web"
            # SSE -> WebSocket, through POST /s/<token>.
            assert await send_as(relay.port, sse.token, {"text": "hi ws"}) == 204
            got = await recv_json(ws)
            assert got["message"] == {"text": "hi ws"} and got["uid"] == hello["uid"] and got["alias"] == "Sse"
            # A direct message to one member only.
            assert (
                await send_as(relay.port, sse.token, "just you", f"to={joined['uid'] and (await _uid_of(ws, sse))}")
                == 204
            )
            got = await recv_json(ws)
            assert got["message"] == "just you"
            # Push: the message, then the leave, in that order; the stream ends.
            assert await send_as(relay.port, sse.token, {"bye": 1}, "close") == 204
            assert (await recv_json(ws))["message"] == {"bye": 1}
            leave = await recv_json(ws)
            assert (leave["type"], leave["uid"], leave["total"]) == ("leave", hello["uid"], 1)
            await sse.ended()
            # The token ended with its member.
            assert (await session_request(relay.port, "POST", sse.token, b"1"))[0] == 404
        finally:
            await sse.aclose()


async def _uid_of(ws: object, sse: StreamMember) -> str:
    """The WebSocket member's uid, as the SSE member saw it in a message of its own."""
    await ws.send('"whoami"')  # type: ignore[attr-defined]
    return (await sse.frame())["uid"]


async def test_an_ndjson_member_gets_one_frame_per_line_and_leaves_with_delete(door: str) -> None:
    async with running(make_config(), door=door) as relay, clients(relay.port) as connect:
        ws, _ = await join(connect, "/c/lines")
        member = await StreamMember.open(relay.port, "/c/lines", NDJSON)
        try:
            assert member.client.headers["content-type"] == "application/x-ndjson"
            assert (await member.frame())["self"] is True
            assert (await recv_json(ws))["total"] == 2
            # A message whose JSON spans lines still arrives as one line, the same value.
            await ws.send('{"a":\n  [1,\n 2]}')
            assert (await member.frame())["message"] == {"a": [1, 2]}
            status, _, _ = await session_request(relay.port, "DELETE", member.token)
            assert status == 204
            assert (await recv_json(ws))["type"] == "leave"
            assert await member.ended() == []
        finally:
            await member.aclose()


async def test_a_long_poll_member_polls_sends_and_leaves(door: str) -> None:
    async with running(make_config(), door=door) as relay, clients(relay.port) as connect:
        ws, _ = await join(connect, "/c/polled")
        token, first = await poll_open(relay.port, "/c/polled?alias=Lp&announce=true")
        assert [f["type"] for f in first] == ["join"] and first[0]["self"] is True
        assert (await recv_json(ws))["alias"] == "Lp"

        async def speak_later() -> None:
            await anyio.sleep(0.3)
            await ws.send('{"n": 1}')
            await ws.send('{"n": 2}')

        async with anyio.create_task_group() as tg:
            tg.start_soon(speak_later)
            status, frames = await poll(relay.port, token)  # waits for the first
        assert status == 200 and frames and frames[0]["message"] == {"n": 1}
        if len(frames) == 1:
            frames += (await poll(relay.port, token))[1]
        assert [f["message"] for f in frames] == [{"n": 1}, {"n": 2}]
        assert await send_as(relay.port, token, "from lp") == 204
        assert (await recv_json(ws))["message"] == "from lp"
        assert (await session_request(relay.port, "DELETE", token))[0] == 204
        assert (await recv_json(ws))["type"] == "leave"
        status, text = await poll(relay.port, token)  # what was left (nothing), then 404
        if status == 200:
            status, text = await poll(relay.port, token)
        assert (status, text) == (404, "Session not found.")


async def test_session_endpoints_refuse_as_the_protocol_does(door: str) -> None:
    config = make_config('[namespaces."vip"]\njoin_key = "jk"\nsend_key = "sk"\n')
    async with running(config, door=door) as relay:
        assert (await session_request(relay.port, "POST", "no-such-token", b"1"))[:1] == (404,)
        # Keys apply as on a WebSocket: no joinKey, 403 with the protocol's text.
        client = await HTTPClient.connect(relay.port)
        await client.request("GET", "/c/vip:room", {"accept": SSE})
        assert (client.status, await client.body()) == (403, b"Joining requires a valid joinKey.")
        await client.aclose()
        member = await StreamMember.open(relay.port, "/c/vip:room?joinKey=jk", SSE)
        try:
            await member.frame()
            status, _, body = await session_request(relay.port, "POST", member.token, b'"hi"')
            assert (status, body) == (403, b"Sending requires a valid sendKey.")
            assert (await member.frame())["message"] == "Sending requires a valid sendKey."  # as a WebSocket member
            status, _, body = await session_request(relay.port, "POST", member.token, b"{not json")
            assert (status, body) == (400, b"Invalid JSON message.")
            big = b'"' + b"x" * 200_000 + b'"'
            assert (await session_request(relay.port, "POST", member.token, big))[0] == 413
        finally:
            await member.aclose()
        # A plain GET without a streaming Accept still needs the upgrade.
        client = await HTTPClient.connect(relay.port)
        await client.request("GET", "/c/room", {"accept": "*/*"})
        assert client.status == 426
        await client.aclose()


async def test_a_stream_whose_reader_stops_is_closed_and_the_others_get_everything(door: str) -> None:
    config = make_config(
        "[limits]\noutbound_buffer_bytes = 65536\nmessages_per_second = 10000\nmessages_burst = 10000\n"
    )
    async with running(config, door=door) as relay, clients(relay.port) as connect:
        sender, _ = await join(connect, "/c/stall")
        live = await StreamMember.open(relay.port, "/c/stall", SSE)
        stalled = await StreamMember.open(relay.port, "/c/stall", SSE, rcvbuf=4096)
        await live.frame()
        count, size = 200, 30_000
        payload = json.dumps({"fill": "x" * size})
        got = 0
        # Paced by the live member, which must get every message; the stalled one never reads.
        for _ in range(count):
            await sender.send(payload)
            while True:
                frame = await live.frame(10.0)
                if "message" in frame:
                    got += 1
                    break
        assert got == count
        # The stalled stream was closed by the relay: the live member saw it leave.
        with anyio.fail_after(10):
            while True:
                status, _, _ = await session_request(relay.port, "POST", stalled.token, b"1")
                if status == 404:
                    break
                await anyio.sleep(0.2)
        await live.aclose()
        await stalled.aclose()


async def test_an_idle_stream_gets_keepalives(door: str) -> None:
    config = make_config("[http]\nkeepalive_interval = 0.2\n")
    async with running(config, door=door) as relay:
        member = await StreamMember.open(relay.port, "/c/quiet", SSE)
        try:
            await member.frame()
            with anyio.fail_after(5):
                while member.comments < 2:
                    member._text += await member.client.chunk()
                    member._take()
        finally:
            await member.aclose()
