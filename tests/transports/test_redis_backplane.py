"""transports.redis_backplane: a cluster of relay processes on one real Redis behaves as one relay.

(The cluster node itself, ClusterHub, is tested without I/O in tests/core/test_cluster.py.)

Every test starts a ``redis-server`` on a free port and two or three ``relaycore serve
--redis`` processes (on the test's backend, asyncio or trio), then talks to them with real
WebSocket clients: each behaviour of PROTOCOL.md, across nodes, and the failures a cluster
meets (a node killed with SIGKILL, Redis restarted without its data).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from doors import start_door
from rawws import http, post
from redisproc import RedisProcess, redis_server
from relayproc import RelayProcess, relay_process
from wsclient import Client, Rejected, clients, expect_silence, join, join_across, recv_json

pytestmark = pytest.mark.anyio

CONFIG = """
[limits]
connections_per_second_per_ip = 100000.0
pushes_per_second_per_ip = 100000.0
messages_per_second = 100000.0
messages_burst = 100000

[namespaces."pub"]
send_key = "push-key"

[namespaces."vip"]
join_key = "door"
"""


class Cluster:
    def __init__(self, redis: RedisProcess, nodes: list[RelayProcess]) -> None:
        self.redis = redis
        self.nodes = nodes


@asynccontextmanager
async def cluster(backend: str, directory: Path, count: int = 2, config: str = CONFIG) -> AsyncIterator[Cluster]:
    async with redis_server(directory) as redis, AsyncExitStack() as stack:
        nodes = []
        for i in range(count):
            name = f"{backend}-{'abc'[i]}"
            node = await stack.enter_async_context(
                relay_process(backend, directory, config, args=["--redis", redis.url, "--node-id", name], name=name)
            )
            await node.wait_for_line(lambda line: "joined the cluster" in line, 10, "joining the cluster")
            nodes.append(node)
        yield Cluster(redis, nodes)


@asynccontextmanager
async def members(c: Cluster | list[int]) -> AsyncIterator[list[Any]]:
    """One ``connect(path)`` per node. All connections share one exit stack, so they close
    in the reverse order of opening whichever node they are on (trio's nurseries nest)."""
    async with AsyncExitStack() as stack:

        def on(port: int) -> Any:
            async def connect(path: str) -> Client:
                connect_one = await stack.enter_async_context(clients(port))
                return await connect_one(path)

            return connect

        ports = c if isinstance(c, list) else [node.port for node in c.nodes]
        yield [on(port) for port in ports]


async def frames_until(client: Client, predicate: Any, timeout: float = 5.0) -> list[Any]:
    """Read frames until one satisfies ``predicate``; return all of them (that one last)."""
    seen = []
    with anyio.fail_after(timeout):
        while True:
            frame = await recv_json(client, timeout)
            seen.append(frame)
            if predicate(frame):
                return seen


async def http_post(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    """POST ``body`` to ``path`` on a fresh connection: the status, and the JSON answer (None if empty)."""
    status, _, payload = await http(port, post(path, body, "".join(f"{k}: {v}\r\n" for k, v in headers.items())))
    return status, json.loads(payload) if payload else None


async def test_broadcast_presence_and_users_across_three_nodes(anyio_backend: str, tmp_path: Path) -> None:
    async with cluster(anyio_backend, tmp_path, 3) as c, members(c) as (on_a, on_b, on_c):
        alice = await on_a("/c/room?announce&alias=Alice&echo")
        me = await recv_json(alice)
        assert (me["total"], me["alias"]) == (1, "Alice")
        bob = await on_b("/c/room?announce&alias=Bob&list")
        bob_self = await recv_json(bob)
        assert bob_self["total"] == 2
        assert bob_self["users"] == [
            {"uid": me["uid"], "alias": "Alice"},
            {"uid": bob_self["uid"], "alias": "Bob", "self": True},
        ]
        joined = await recv_json(alice)
        assert joined == {
            "type": "join",
            "uid": bob_self["uid"],
            "alias": "Bob",
            "total": 2,
            "date": joined["date"],
        }
        carol = await on_c("/c/room?list")  # does not announce
        carol_self = await recv_json(carol)
        assert carol_self["total"] == 3
        assert [u["uid"] for u in carol_self["users"]] == [me["uid"], bob_self["uid"]]
        for earlier in (alice, bob):
            assert await recv_json(earlier) == {"type": "join", "total": 3, "date": ANY}

        # One broadcast: the same envelope, byte for byte, on every node (the echo too).
        await alice.send('{"text":"hello","n":[1,2]}')
        raw = [await member.recv() for member in (alice, bob, carol)]
        assert raw[0] == raw[1] == raw[2]
        envelope = json.loads(raw[0])
        assert envelope["uid"] == me["uid"] and envelope["alias"] == "Alice"
        assert envelope["message"] == {"text": "hello", "n": [1, 2]} and "type" not in envelope

        await bob.send('{"from":"bob"}')
        for member in (alice, carol):
            assert (await recv_json(member))["message"] == {"from": "bob"}
        await expect_silence(bob)  # no echo without ?echo

        # Leaves, with totals that count every node, in order.
        await carol.close()
        for member in (alice, bob):
            assert await recv_json(member) == {"type": "leave", "total": 2, "date": ANY}
        await bob.close()
        assert await recv_json(alice) == {
            "type": "leave",
            "uid": bob_self["uid"],
            "alias": "Bob",
            "total": 1,
            "date": ANY,
        }
        for node in c.nodes:
            health = await node.health()
            assert health["cluster"]["online"] is True


async def test_direct_messages_find_their_target_on_any_node(anyio_backend: str, tmp_path: Path) -> None:
    async with cluster(anyio_backend, tmp_path, 2) as c, members(c) as (on_a, on_b, *_):
        (alice, a), (bob, b), (neighbour, n) = [await join(connect, "/c/dm") for connect in (on_a, on_b, on_b)]
        alice_uid, bob_uid, neighbour_uid = a["uid"], b["uid"], n["uid"]
        await frames_until(alice, lambda f: f.get("total") == 3)
        await frames_until(bob, lambda f: f.get("total") == 3)

        await alice.send(f'\x1f{bob_uid}\x1f{{"secret":1}}')
        got = await recv_json(bob)
        assert got["uid"] == alice_uid and got["message"] == {"secret": 1}
        await bob.send(f'@@{alice_uid}@@{{"back":2}}')  # the legacy form, across nodes
        assert (await recv_json(alice))["message"] == {"back": 2}
        for sender in (alice, bob):  # nobody else hears a direct message, from either node
            await expect_silence(neighbour, after=(sender, neighbour_uid))

        await alice.send('\x1fnobody\x1f{"x":1}')
        error = await recv_json(alice)
        assert error["type"] == "error" and error["message"] == "User nobody not found."


async def test_per_sender_order_and_send_then_close_across_nodes(anyio_backend: str, tmp_path: Path) -> None:
    count = 500
    async with cluster(anyio_backend, tmp_path, 3) as c, members(c) as (on_a, on_b, on_c):
        listeners = []
        for connect in (on_b, on_c):
            member, _ = await join(connect, "/c/order")
            listeners.append(member)
        await frames_until(listeners[0], lambda f: f.get("total") == 2)
        sender, _ = await join(on_a, "/c/order")
        for member in listeners:
            await frames_until(member, lambda f: f.get("total") == 3)
        for i in range(count):
            await sender.send(json.dumps({"i": i}))
        await sender.close()  # send and close: every message comes before the leave
        for member in listeners:
            frames = await frames_until(member, lambda f: f.get("type") == "leave", timeout=15)
            assert [f["message"]["i"] for f in frames[:-1]] == list(range(count))
            assert frames[-1]["total"] == 2


async def test_keys_are_the_first_joiners_wherever_they_join(anyio_backend: str, tmp_path: Path) -> None:
    async with cluster(anyio_backend, tmp_path, 2) as c, members(c) as (on_a, on_b, *_):
        first, _ = await join(on_a, "/c/locked?joinKey=j1&sendKey=s1")
        with pytest.raises(Rejected) as refused:
            await on_b("/c/locked")
        assert refused.value.status == 403
        with pytest.raises(Rejected):
            await on_b("/c/locked?joinKey=wrong")
        listener, _ = await join(on_b, "/c/locked?joinKey=j1&sendKey=nope")
        await recv_json(first)  # its join
        await listener.send('{"x":1}')
        error = await recv_json(listener)
        assert error["message"] == "Sending requires a valid sendKey."
        sender, _ = await join(on_b, "/c/locked?joinKey=j1&sendKey=s1")
        await sender.send('{"ok":1}')
        # The listener's message would have come first (both are on node b: one record stream).
        relayed = [f["message"] for f in await frames_until(first, lambda f: "message" in f) if "message" in f]
        assert relayed == [{"ok": 1}]
        for member in (first, listener, sender):
            await member.close()
        # The channel and its keys vanished with its last member, cluster-wide.
        with anyio.fail_after(5):
            while (await c.redis.command("EXISTS", "rc:k:{locked}")) != b":0\r\n":
                await anyio.sleep(0.05)
        assert (await join(on_b, "/c/locked"))[1]["total"] == 1

        # A reserved namespace refuses a missing join key on every node.
        for connect in (on_a, on_b):
            with pytest.raises(Rejected) as refused:
                await connect("/c/vip:lounge")
            assert refused.value.status == 403
        assert (await join(on_b, "/c/vip:lounge?joinKey=door"))[1]["total"] == 1


async def test_http_push_to_any_node_reaches_every_member(anyio_backend: str, tmp_path: Path) -> None:
    async with cluster(anyio_backend, tmp_path, 3) as c, members(c) as (on_a, on_b, *_):
        one, two = await join_across((on_a, "/c/pub:news"), (on_b, "/c/pub:news"))
        for node in c.nodes:  # node c serves nobody in the channel: it asks Redis
            status, body = await http_post(node.port, "/push/pub:news", b'{"n":1}', {"x-send-key": "push-key"})
            assert (status, body) == (200, {"ok": True, "recipients": 2})
            for member in (one, two):
                got = await recv_json(member)
                assert got["message"] == {"n": 1} and "uid" not in got
        status, body = await http_post(c.nodes[2].port, "/push/pub:empty", b"1", {"x-send-key": "push-key"})
        assert (status, body) == (200, {"ok": True, "recipients": 0})
        status, body = await http_post(c.nodes[2].port, "/push/pub:news", b"1", {"x-send-key": "wrong"})
        assert status == 403


async def test_uids_are_unique_and_totals_count_everyone(anyio_backend: str, tmp_path: Path) -> None:
    per_node = 60
    async with cluster(anyio_backend, tmp_path, 3) as c, members(c) as connects:
        uids = set()
        crowd = []
        for i in range(per_node * 3):
            member = await connects[i % 3]("/c/crowd?announce")
            frame = await recv_json(member)
            assert frame["total"] == i + 1
            uids.add(frame["uid"])
            crowd.append(member)
        assert len(uids) == per_node * 3
        last = await connects[0]("/c/crowd?list")
        frame = await recv_json(last)
        assert frame["total"] == per_node * 3 + 1
        assert {u["uid"] for u in frame["users"]} == uids
        for node in c.nodes:
            assert (await node.health())["connections"] in (per_node, per_node + 1)


async def test_a_killed_node_s_members_leave_everywhere_within_ten_seconds(anyio_backend: str, tmp_path: Path) -> None:
    async with cluster(anyio_backend, tmp_path, 3) as c, members(c) as (on_a, on_b, on_c):
        watcher_a, _ = await join(on_a, "/c/k?announce")
        watcher_c, _ = await join(on_c, "/c/k")
        doomed = []
        for _ in range(3):
            member = await on_b("/c/k?announce")
            doomed.append((await recv_json(member))["uid"])
        for watcher in (watcher_a, watcher_c):
            await frames_until(watcher, lambda f: f.get("total") == 5)
        os.kill(c.nodes[1].pid, signal.SIGKILL)
        killed = time.monotonic()
        for watcher in (watcher_a, watcher_c):
            frames = await frames_until(watcher, lambda f: f.get("total") == 2, timeout=12)
            assert [f["type"] for f in frames] == ["leave"] * 3
            assert sorted(f["uid"] for f in frames) == sorted(doomed)
            assert [f["total"] for f in frames] == [4, 3, 2]
        took = time.monotonic() - killed
        print(f"\nkill -9: leaves announced on both survivors after {took:.2f} s")
        assert took < 10
        assert (await join(on_c, "/c/k?list"))[1]["total"] == 3


async def test_redis_restart_local_delivery_never_stops(anyio_backend: str, tmp_path: Path) -> None:
    async with cluster(anyio_backend, tmp_path, 2) as c, members(c) as (on_a, on_b, *_):
        sender, local, remote = await join_across((on_a, "/c/live"), (on_a, "/c/live"), (on_b, "/c/live"))
        received_local: list[int] = []
        received_remote: list[tuple[int, float]] = []
        restarted_at = 0.0

        async def read(member: Client, into: list[Any], stamp: bool) -> None:
            while True:
                frame = await recv_json(member, 30)
                if "message" in frame:
                    into.append((frame["message"]["i"], time.monotonic()) if stamp else frame["message"]["i"])

        async with anyio.create_task_group() as tg:
            tg.start_soon(read, local, received_local, False)
            tg.start_soon(read, remote, received_remote, True)
            i = 0
            started = time.monotonic()
            while time.monotonic() - started < 9:
                await sender.send(json.dumps({"i": i}))
                i += 1
                await anyio.sleep(0.02)
                if not restarted_at and time.monotonic() - started > 1.5:
                    await c.redis.restart(down_for=1.0)  # no data survives
                    restarted_at = time.monotonic()
            await anyio.sleep(0.5)
            tg.cancel_scope.cancel()
        # Local delivery never stopped: every message, in order, Redis or not.
        assert received_local == list(range(i))
        after = [at for n, at in received_remote if at > restarted_at]
        assert after, "cross-node delivery never resumed"
        resumed = after[0] - restarted_at
        print(f"\nRedis restart: {i} messages, all local; cross-node again {resumed:.2f} s after the restart")
        assert resumed < 5
        numbers = [n for n, _ in received_remote]
        assert numbers == sorted(numbers)  # at-most-once, in order
        # The cluster state was repaired: a newcomer anywhere counts all three.
        assert (await join(on_b, "/c/live?list"))[1]["total"] == 4
        for node in c.nodes:
            assert len(node.matching("WARNING", "Redis unreachable")) == 1
            assert len(node.matching("INFO", "Redis reachable again")) == 1


async def test_a_node_gets_no_traffic_for_channels_it_does_not_serve(anyio_backend: str, tmp_path: Path) -> None:
    async with cluster(anyio_backend, tmp_path, 3) as c, members(c) as (on_a, on_b, on_c):
        await join(on_c, "/c/quiet")  # a member of its own channel on node c
        talker, _ = await join(on_a, "/c/busy")
        hearer, _ = await join(on_b, "/c/busy")
        await recv_json(talker)
        before = (await c.nodes[2].health())["cluster"]
        for i in range(300):
            await talker.send(json.dumps({"i": i, "pad": "x" * 200}))
        frames = await frames_until(hearer, lambda f: f.get("message", {}).get("i") == 299, timeout=10)
        assert len(frames) == 300
        after = (await c.nodes[2].health())["cluster"]
        heard = (await c.nodes[1].health())["cluster"]
        print(
            f"\n300 messages in 'busy': node b took {heard['records_in']} records / {heard['bytes_in']} bytes"
            f" from Redis; node c (not serving it) {after['records_in'] - before['records_in']} records"
        )
        assert after["records_in"] == before["records_in"]
        assert heard["bytes_in"] > 300 * 200
        numsub = await c.redis.command("PUBSUB", "NUMSUB", "rc:c:{busy}", "rc:c:{quiet}")
        counts = [int(x) for x in re.findall(rb":(\d+)", numsub)]
        assert counts == [2, 1]


class _Any:
    def __eq__(self, other: object) -> bool:
        return True


ANY: Any = _Any()


async def test_a_stopped_node_s_members_leave_at_once(anyio_backend: str, tmp_path: Path) -> None:
    async with cluster(anyio_backend, tmp_path, 2) as c, members(c) as (on_a, on_b, *_):
        watcher, _ = await join(on_a, "/c/stop")
        for _ in range(2):
            await on_b("/c/stop")
        await frames_until(watcher, lambda f: f.get("total") == 3)
        c.nodes[1].process.send_signal(signal.SIGTERM)  # a graceful stop: no waiting for the reaper
        stopped = time.monotonic()
        frames = await frames_until(watcher, lambda f: f.get("total") == 1, timeout=5)
        took = time.monotonic() - stopped
        assert [f["type"] for f in frames] == ["leave", "leave"]
        print(f"\nSIGTERM: leaves announced on the other node after {took:.2f} s")
        assert took < 2.5


async def test_asgi_servers_are_nodes_of_the_same_cluster(anyio_backend: str, tmp_path: Path) -> None:
    async with redis_server(tmp_path) as redis, AsyncExitStack() as stack:
        text = CONFIG + f'\n[cluster]\nredis_url = "{redis.url}"\n'
        doors = []
        for door in ("uvicorn", "hypercorn-trio"):
            process = await anyio.to_thread.run_sync(start_door, door, text, tmp_path / door)
            stack.callback(process.stop)
            doors.append(process)
        native = await stack.enter_async_context(
            relay_process(anyio_backend, tmp_path, CONFIG, args=["--redis", redis.url], name="native")
        )
        ports = [door.port for door in doors] + [native.port]
        async with members(ports) as connects:
            people = []
            for i, connect in enumerate(connects):
                member = await connect("/c/pub:asgi?announce&sendKey=push-key")
                frame = await recv_json(member, 10)
                assert frame["total"] == i + 1
                for earlier in people:
                    assert (await recv_json(earlier, 10))["total"] == i + 1
                people.append(member)
            for i, member in enumerate(people):
                await member.send(json.dumps({"from": i}))
                for other in people:
                    if other is not member:
                        assert (await recv_json(other, 10))["message"] == {"from": i}
            for port in ports:
                status, body = await http_post(port, "/push/pub:asgi", b'"all"', {"x-send-key": "push-key"})
                assert (status, body) == (200, {"ok": True, "recipients": 3})
                for member in people:
                    assert (await recv_json(member, 10))["message"] == "all"
            await people[0].close()
            for member in people[1:]:
                assert (await recv_json(member, 10))["type"] == "leave"
