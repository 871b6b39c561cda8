"""Presence that scales, over real sockets, behind every front door.

A namespace sets ``presence_coalesce_above``: in its channels, above that many members the
joins and leaves of members who did not announce reach the others as one event carrying the
current total, at most once per ``interval`` (docs/protocol.md, section 5.4). On every door
(the native server on asyncio and trio, uvicorn, hypercorn on asyncio and trio):

- with real WebSocket clients, every member comes to hear the current total, in far fewer
  events than joins and leaves; an announced member's join and leave are still named, at
  once, with the total;
- the stock itty-sockets client (Node.js, tests/js/crowd.mjs) in a channel of 300 keeps
  showing the current total as the channel fills and empties.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from doors import JS_DIR, Relay, require_node
from wsclient import Client, clients, join, recv_json

from conftest import make_config
from relaycore import Config

pytestmark = [pytest.mark.anyio, pytest.mark.doors]

ABOVE = 4
CHANNEL = "crowd:hall"
#: How long a member may wait for the current total: the interval (1 s) and a door's tick.
SETTLE = 5.0


@pytest.fixture
def config() -> Config:
    return make_config(f'[namespaces."crowd"]\npresence_coalesce_above = {ABOVE}\n')


async def until_total(client: Client, total: int) -> list[dict[str, Any]]:
    """The presence events ``client`` hears until one carries ``total``."""
    heard: list[dict[str, Any]] = []
    with anyio.fail_after(SETTLE):
        while not heard or heard[-1]["total"] != total:
            frame = await recv_json(client, SETTLE)
            assert frame.get("type") in ("join", "leave"), f"not a presence event: {frame}"
            heard.append(frame)
    return heard


async def test_members_of_a_big_channel_hear_its_total_and_few_events(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        members = [(await join(connect, f"/c/{CHANNEL}"))[0] for _ in range(20)]
        first = members[0]
        heard = await until_total(first, 20)
        assert [event["total"] for event in heard[: ABOVE - 1]] == [2, 3, 4], "up to the bound, one by one"
        assert len(heard) < 19, f"19 joins, not coalesced: {heard}"
        assert all("uid" not in event for event in heard)
        for member in members[1:]:
            await until_total(member, 20)

        host, _ = await join(connect, f"/c/{CHANNEL}?announce&alias=Host")
        for member in members:
            assert (await recv_json(member))["alias"] == "Host", "an announced join is named, at once"

        for member in members[:8]:
            await member.close()
        for member in members[8:]:
            leaves = await until_total(member, 13)
            assert leaves[-1]["type"] == "leave" and "uid" not in leaves[-1]
            assert len(leaves) < 8
        await host.close()
        for member in members[8:]:
            event = await recv_json(member)
            assert (event["type"], event["alias"], event["total"]) == ("leave", "Host", 12)


async def test_the_stock_client_in_a_big_channel_shows_the_current_total(relay: Relay) -> None:
    node = require_node()
    script = [node, str(JS_DIR / "crowd.mjs"), f"ws://127.0.0.1:{relay.port}", CHANNEL, "300", "120"]
    run = await anyio.run_process(script, cwd=JS_DIR, check=False)
    out, err = run.stdout.decode(), run.stderr.decode()
    assert run.returncode == 0, f"crowd.mjs failed (exit {run.returncode}):\n{err}\n{out}"
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["ok"] and summary["total"] == 180
    assert summary["joinEvents"] < 40 and summary["leaveEvents"] < 40, summary
