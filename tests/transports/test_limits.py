"""Limits over real sockets (PROTOCOL.md section 8): rates, slow consumers, keepalive,
behind every front door.

Each test asserts what the client concerned sees (error text, close code, HTTP status)
AND that the other members keep receiving.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import anyio
import pytest
from doors import ASGI_DOORS, NATIVE_DOORS, health, raw_peer, server_gap, timeout_says, wait_for_connections
from rawws import PING, PONG, RawPeer, frame, http, post, upgrade_status
from wsclient import clients, expect_close, expect_silence, join_all, recv_json

from conftest import make_config, running

pytestmark = [pytest.mark.anyio, pytest.mark.doors]

#: Behind ASGI the server, not the relay, pings and times out (the app cannot send a ping).
SERVER_KEEPALIVE = server_gap(
    *ASGI_DOORS,
    raises=TimeoutError,
    match=r"^no ping within 1 s \(ping_interval 0\.2 s\)$",
    reason="the ASGI server does the keepalive (uvicorn: a ping every 20 s, --ws-ping-interval and "
    "--ws-ping-timeout; hypercorn: none unless --websocket-ping-interval), so the relay's ping_interval "
    "and ping_timeout do not apply",
)


async def test_message_rate_warns_drops_and_closes_at_the_third_warning(door: str) -> None:
    config = make_config("[limits]\nmessages_per_second = 0.5\nmessages_burst = 5")
    async with running(config, door=door) as server, clients(server.port) as connect:
        watcher, flood = await join_all(connect, "/c/room", "/c/room")
        for n in range(8):
            await flood.send(f'{{"n":{n}}}')
        # The burst passes, then three warnings; the messages over the rate are dropped.
        for n in range(3):
            warning = await recv_json(flood)
            assert warning["type"] == "error"
            assert warning["message"] == f"Rate limit exceeded (warning {n + 1} of 3)."
        assert await expect_close(flood) == 1008
        got = [await recv_json(watcher) for _ in range(6)]
        assert [g["message"]["n"] for g in got[:5]] == [0, 1, 2, 3, 4]
        assert got[5]["type"] == "leave"
        await expect_silence(watcher)


async def test_connection_rate_per_address_answers_429(door: str) -> None:
    config = make_config("[limits]\nconnections_per_second_per_ip = 3")
    async with running(config, door=door) as server:
        statuses = []
        for _ in range(5):
            peer = await RawPeer.connect(server.port)
            statuses.append((await peer.upgrade("/c/room"))[0])
            await peer.aclose()
        assert statuses[:3] == [101, 101, 101]
        assert statuses[3:] == [429, 429]
        await anyio.sleep(0.5)  # 1.5 tokens back
        peer = await RawPeer.connect(server.port)
        assert (await peer.upgrade("/c/room"))[0] == 101
        await peer.aclose()


@pytest.mark.doors(*NATIVE_DOORS)  # /echo is the native server's: behind ASGI the server frames
async def test_the_echo_endpoint_is_not_held_to_the_connection_rate(door: str) -> None:
    """A conformance suite opens hundreds of /echo connections a second from one address."""
    config = make_config("[server]\necho_endpoint = true\n[limits]\nconnections_per_second_per_ip = 2")
    async with running(config, door=door) as server:
        assert [await upgrade_status(server.port, "/echo") for _ in range(20)] == [101] * 20
        # The channels keep their limit, in the same second, for the same address.
        assert [await upgrade_status(server.port, "/c/room") for _ in range(3)] == [101, 101, 429]


async def test_connection_rate_follows_forwarded_address_of_trusted_proxy(door: str) -> None:
    config = make_config('[server]\ntrusted_proxies = ["127.0.0.1"]\n[limits]\nconnections_per_second_per_ip = 2')
    async with running(config, door=door) as server:

        async def status(forwarded_for: str) -> int:
            return await upgrade_status(server.port, "/c/room", f"X-Forwarded-For: {forwarded_for}\r\n")

        assert [await status("203.0.113.7") for _ in range(3)] == [101, 101, 429]
        # Another client behind the same proxy is not locked out by the first one's burst.
        assert await status("198.51.100.1, 203.0.113.9") == 101


async def test_push_rate_per_address_answers_429(door: str) -> None:
    config = make_config('[limits]\npushes_per_second_per_ip = 2\n[namespaces."api"]\nsend_key = "k"')
    async with running(config, door=door) as server:
        request = post("/push/api:feed", b'{"n":1}', "x-send-key: k\r\n")
        statuses = [(await http(server.port, request))[0] for _ in range(3)]
        assert statuses == [200, 200, 429]


async def test_slow_consumer_is_closed_and_never_slows_the_others(door: str) -> None:
    limit = 1024 * 1024
    # close_timeout: the slow member reads its close frame only after the whole broadcast;
    # a relay resets a socket not sent its close frame by then.
    config = make_config(
        f"[limits]\noutbound_buffer_bytes = {limit}\nmessages_per_second = 100000\nmessages_burst = 100000\n"
        "close_timeout = 60"
    )
    async with running(config, door=door) as server, clients(server.port) as connect:
        readers = []
        for _ in range(2):
            reader = await connect("/c/firehose")
            await recv_json(reader)
            readers.append(reader)
        # The slow member: a tiny receive buffer, and it does not read at all.
        slow = await RawPeer.connect(server.port, rcvbuf=4096)
        assert (await slow.upgrade("/c/firehose"))[0] == 101
        for reader in readers:
            await recv_json(reader)  # the slow member's join
        await recv_json(readers[0])  # the second reader's join, seen by the first

        sender = await connect("/c/firehose")
        await recv_json(sender)
        for reader in readers:
            await recv_json(reader)
        chunk = '"' + "x" * 10_000 + '"'
        peak = 0

        progress = [0, 0]

        async def send_all() -> None:
            for n in range(2_000):  # 20 MB in all
                # The live readers share this process with the server; keep at most
                # ~500 kB in flight to them so that only the stalled member falls behind.
                while n - min(progress) > 50:
                    await anyio.sleep(0.001)
                await sender.send(chunk)

        native = door.startswith("native-")
        rss_at_start = 0 if native else resident(server.pid)
        rss_peak = rss_at_start

        async def watch_memory() -> None:
            """Native: the outboxes themselves. Behind ASGI they live in the server process,
            so its resident memory is watched instead."""
            nonlocal peak, rss_peak
            while True:
                if native:
                    for peer in list(server._peers):
                        peak = max(peak, peer.conn.outbox.size)
                else:
                    rss_peak = max(rss_peak, resident(server.pid))
                await anyio.sleep(0.005)

        counts = []

        async def read_all(index: int, reader: Any) -> None:
            received, saw_leave = 0, False
            while received < 2_000 or not saw_leave:
                item = await recv_json(reader, timeout=30)
                if "message" in item:
                    received += 1
                    progress[index] = received
                elif item.get("type") == "leave":
                    saw_leave = True
            counts.append(received)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_memory)
            async with anyio.create_task_group() as readers_group:
                for index, reader in enumerate(readers):  # each reader drains concurrently
                    readers_group.start_soon(read_all, index, reader)
                await send_all()
            tg.cancel_scope.cancel()
        assert counts == [2_000, 2_000]
        if native:
            # No outbox ever held more than its limit plus one frame.
            assert 0 < peak <= limit + len(chunk) + 100
        else:
            # 20 MB went to the stalled member; what the server kept of it is its outbox's
            # bound plus the server's own buffers (hypercorn's asyncio worker holds a few MB).
            grown = rss_peak - rss_at_start
            print(f"{door}: the server's resident memory grew {grown / 2**20:.1f} MiB at most")
            assert grown < 10 * 2**20, f"the server grew {grown / 2**20:.1f} MiB while a member stalled"
        # The slow member, once it reads again, finds a close frame with 1008.
        assert await slow.read_close(timeout=30) == 1008
        await slow.aclose()


def resident(pid: int) -> int:
    """A process's resident memory in bytes (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


@SERVER_KEEPALIVE
async def test_server_pings_and_closes_a_dead_peer(door: str) -> None:
    config = make_config("[limits]\nping_interval = 0.2\nping_timeout = 0.3")
    async with running(config, door=door) as server, clients(server.port) as connect:
        watcher = await connect("/c/room")  # a real client answers pings by itself
        await recv_json(watcher)
        async with raw_peer(server.port) as mute:
            assert (await mute.upgrade("/c/room"))[0] == 101
            await mute.read_json()
            assert (await recv_json(watcher))["type"] == "join"
            with timeout_says("no ping within 1 s (ping_interval 0.2 s)"):
                opcode, _ = await mute.read_frame(timeout=1)
            assert opcode == PING
            # The mute peer never answers: it is closed and the others get its leave.
            left = await recv_json(watcher, timeout=3)
            assert left["type"] == "leave" and left["total"] == 1
            await anyio.sleep(0.6)  # the live client, which answers pings, is still there
            assert (await health(server.port))["connections"] == 1


@SERVER_KEEPALIVE
async def test_a_pong_keeps_a_quiet_peer_alive(door: str) -> None:
    config = make_config("[limits]\nping_interval = 0.2\nping_timeout = 0.3")
    async with running(config, door=door) as server, raw_peer(server.port) as peer:
        assert (await peer.upgrade("/c/room"))[0] == 101
        await peer.read_json()
        for _ in range(4):
            with timeout_says("no ping within 1 s (ping_interval 0.2 s)"):
                opcode, payload = await peer.read_frame(timeout=1)
            assert opcode == PING
            await peer.send(frame(PONG, payload))
        assert (await health(server.port))["connections"] == 1


async def test_client_pings_are_answered(door: str) -> None:
    async with running(door=door) as server:
        peer = await RawPeer.connect(server.port)
        assert (await peer.upgrade("/c/room"))[0] == 101
        await peer.read_json()
        await peer.send(frame(PING, b"are you there"))
        opcode, payload = await peer.read_frame(timeout=2)
        while opcode == PING:
            opcode, payload = await peer.read_frame(timeout=2)
        assert (opcode, payload) == (PONG, b"are you there")
        await wait_for_connections(server.port, 1)
        await peer.aclose()


@server_gap(
    *ASGI_DOORS,
    raises=TimeoutError,
    match=r"^the half-sent request was not closed within 1\.5 s \(handshake_timeout 0\.3 s\)$",
    reason="the ASGI server reads the request; the relay's handshake_timeout does not apply (uvicorn and "
    "hypercorn close a half-sent request only after their keep-alive timeout, 5 s by default)",
)
async def test_incomplete_request_times_out(door: str) -> None:
    config = make_config("[limits]\nhandshake_timeout = 0.3")
    async with running(config, door=door) as server:
        async with raw_peer(server.port) as peer:
            await peer.send(b"GET /c/room HTTP/1.1\r\nHost: x\r\n")  # never finished
            what = "the half-sent request was not closed within 1.5 s (handshake_timeout 0.3 s)"
            with timeout_says(what), anyio.fail_after(1.5):
                await peer.read_to_eof()
        # The server is still there for everyone else.
        status, _, _ = await http(server.port, b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200


async def test_close_frame_reason_is_kept_and_code_echoed(door: str) -> None:
    async with running(door=door) as server:
        peer = await RawPeer.connect(server.port)
        assert (await peer.upgrade("/c/room"))[0] == 101
        await peer.read_json()
        await peer.send(frame(0x8, struct.pack("!H", 4001) + b"bye"))
        assert await peer.read_close() == 4001
        await peer.aclose()
