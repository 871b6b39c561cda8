"""``relaycore serve --workers N``: N worker processes on one port, under a supervisor.

Real processes on 127.0.0.1 and a real redis-server (``--workers 2`` needs a cluster
backplane). What the workers say to each other through Redis is the cluster's business
and is tested with it; here: the port, the spreading of connections, restarts, and stops.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from redisproc import RedisProcess, redis_server
from relayproc import RelayProcess, relay_process
from wsclient import clients, expect_close, recv_json

from transports.server._supervisor import next_backoff

pytestmark = pytest.mark.anyio

CONFIG = "[server]\nshutdown_grace = 1.0\n[limits]\nconnections_per_second_per_ip = 100000.0\n"
#: The supervisor's line, logged once every worker logged its own.
SUPERVISOR_LISTENING = re.compile(r"listening on ws://127\.0\.0\.1:(\d+) \(\w+, 2 workers\)")
RESTART_WITHIN = 5.0


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def tcp_sockets(pid: int, port: int, state: str) -> int:
    """How many of ``pid``'s IPv4 TCP sockets on local ``port`` are in ``state``
    (``/proc/net/tcp``: ``01`` established, ``0A`` listening; a socket only bound is not listed).

    The kernel writes the table a page at a time while other sockets come and go (other
    tests), so one reading may list a socket twice or miss one: see :func:`settled`.
    """
    inodes = socket_inodes(pid)
    found = set()
    with open(f"/proc/{pid}/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local_port = int(fields[1].rpartition(":")[2], 16)
            if local_port == port and fields[3] == state and fields[9] in inodes:
                found.add(fields[9])
    return len(found)


async def settled(read: Callable[[], list[int]], expected_total: int, timeout: float = 3.0) -> list[int]:
    """``read()`` again until its counts add up to ``expected_total`` (bounded); the last reading."""
    deadline = time.monotonic() + timeout
    while sum(counts := read()) != expected_total and time.monotonic() < deadline:
        await anyio.sleep(0.05)
    return counts


@asynccontextmanager
async def two_workers(backend: str, directory: Path) -> AsyncIterator[tuple[RedisProcess, RelayProcess]]:
    """A real Redis, and ``relaycore serve --workers 2 --redis URL`` on it, its supervisor
    listening (each worker said so, then the supervisor)."""
    async with (
        redis_server(directory) as redis,
        relay_process(
            backend, directory, CONFIG, args=["--workers", "2", "--redis", redis.url], listening=SUPERVISOR_LISTENING
        ) as relay,
    ):
        yield redis, relay


async def wait_for_workers(relay: RelayProcess, count: int, timeout: float = 5.0) -> list[int]:
    with anyio.fail_after(timeout):
        while len(pids := relay.children()) != count:
            await anyio.sleep(0.02)
    return pids


async def joins(port: int, count: int, tag: str) -> None:
    """``count`` new clients, each in a channel of its own, each gets its self-join."""
    async with clients(port) as connect:
        for index in range(count):
            member = await connect(f"/c/{tag}-{index}")
            hello = await recv_json(member)
            assert hello["type"] == "join" and hello["self"] is True, hello


async def test_two_workers_share_one_port_and_both_serve(anyio_backend: str, tmp_path: Path) -> None:
    async with two_workers(anyio_backend, tmp_path) as (redis, relay):
        workers = await wait_for_workers(relay, 2)
        assert len(relay.matching("INFO", "listening on ws://127.0.0.1")) == 3  # each worker's, then ours
        # The supervisor holds the port bound, never listening: no connection waits in it.
        assert tcp_sockets(relay.pid, relay.port, "0A") == 0
        assert await settled(lambda: [tcp_sockets(pid, relay.port, "0A") for pid in workers], 2) == [1, 1]
        assert_taken(relay.port)
        second = await anyio.to_thread.run_sync(
            lambda: run_cli("serve", "--port", str(relay.port), "--workers", "2", "--redis", redis.url)
        )
        assert second.returncode == 1, second.stderr  # refused, not sharing the port with us
        assert f"relaycore: cannot listen on 127.0.0.1:{relay.port}: " in second.stderr

        async with clients(relay.port) as connect:
            for index in range(40):
                member = await connect(f"/c/spread-{index}")
                hello = await recv_json(member)
                assert hello["type"] == "join" and hello["self"] is True, hello
            served = await settled(lambda: [tcp_sockets(pid, relay.port, "01") for pid in workers], 40)
        assert sum(served) == 40 and min(served) > 0, served


async def test_a_killed_worker_is_restarted_and_the_port_keeps_accepting(anyio_backend: str, tmp_path: Path) -> None:
    async with two_workers(anyio_backend, tmp_path) as (_, relay):
        victim, survivor = await wait_for_workers(relay, 2)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        # Once the supervisor has reaped it, the victim's listener is gone: from then on
        # every connection reaches a live worker, during the backoff and the restart too.
        await relay.wait_for_line(
            lambda line: f"(pid {victim}) exited with SIGKILL; restarting in 0.5 s" in line and " WARNING " in line,
            RESTART_WITHIN,
            "about the killed worker",
        )
        tried = 0
        while True:
            await joins(relay.port, 1, f"during-{tried}")
            tried += 1
            pids = relay.children()
            fresh = [pid for pid in pids if pid not in (victim, survivor)]
            if fresh and relay.matching("INFO", f"(pid {fresh[0]}) ready"):
                break
            assert time.monotonic() - killed_at < RESTART_WITHIN, f"no new worker ready:\n{relay.log_tail()}"
            await anyio.sleep(0.02)
        assert survivor in pids and victim not in pids and len(pids) == 2
        assert relay.matching("INFO", f"worker {pid_slot(relay, victim)} (pid {fresh[0]}) started (restart 1)")
        await joins(relay.port, 20, "after")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the supervisor's business alone
async def test_the_port_stays_reserved_while_no_worker_listens(anyio_backend: str, tmp_path: Path) -> None:
    async with two_workers(anyio_backend, tmp_path) as (_, relay):
        workers = await wait_for_workers(relay, 2)
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        for pid in workers:
            await relay.wait_for_line(lambda line, pid=pid: f"(pid {pid}) exited with SIGKILL" in line, 5, "a death")
        # Until the first restart (0.5 s after the first death), only the supervisor holds
        # the port. (On a machine so slow that a restart came first, this proves less.)
        assert_taken(relay.port)
        with anyio.fail_after(RESTART_WITHIN):
            while len(relay.matching("INFO", ") ready")) < 4:  # two at the start, two restarted
                await anyio.sleep(0.02)
        await joins(relay.port, 4, "back")


def assert_taken(port: int) -> None:
    """Another program cannot bind the port, even with SO_REUSEADDR (most servers set it)."""
    with socket.socket() as intruder:
        intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with pytest.raises(OSError):
            intruder.bind(("127.0.0.1", port))


def pid_slot(relay: RelayProcess, pid: int) -> int:
    """The worker number the supervisor gave ``pid`` (``worker 2 (pid 1234) ready``)."""
    for line in relay.lines():
        match = re.search(rf"worker (\d+) \(pid {pid}\) ready", line)
        if match:
            return int(match.group(1))
    raise AssertionError(f"pid {pid} was never a ready worker:\n{relay.log_tail()}")


async def test_sigterm_stops_every_worker_and_exits_0(anyio_backend: str, tmp_path: Path) -> None:
    async with redis_server(tmp_path) as redis:
        config = CONFIG + f'[cluster]\nredis_url = "{redis.url}"\n'  # the URL from the file, not a flag
        async with relay_process(
            anyio_backend, tmp_path, config, args=["--workers", "2"], listening=SUPERVISOR_LISTENING
        ) as relay:
            workers = await wait_for_workers(relay, 2)
            async with clients(relay.port) as connect:
                members = [await connect(f"/c/stop-{index}") for index in range(6)]
                for member in members:
                    await recv_json(member)
                started = time.monotonic()
                os.kill(relay.pid, signal.SIGTERM)
                # Each worker drains: every member gets the shutdown close.
                for member in members:
                    assert await expect_close(member) == 1001
            with anyio.fail_after(10):
                while relay.alive():
                    await anyio.sleep(0.02)
            assert relay.process.returncode == 0
            assert time.monotonic() - started < 8
            assert relay.children() == []
            assert not [pid for pid in workers if alive(pid)]
            assert relay.lines()[-1].endswith("INFO relaycore: relaycore stopped")


async def test_workers_stop_when_the_supervisor_is_killed(anyio_backend: str, tmp_path: Path) -> None:
    async with two_workers(anyio_backend, tmp_path) as (_, relay):
        workers = await wait_for_workers(relay, 2)
        os.kill(relay.pid, signal.SIGKILL)
        with anyio.fail_after(5):
            while [pid for pid in workers if alive(pid)]:
                await anyio.sleep(0.02)
        assert len(relay.matching("WARNING", "the supervisor is gone, shutting down")) == 2


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_worker_failing_at_start_up_ends_the_start_with_its_status(anyio_backend: str, tmp_path: Path) -> None:
    async with redis_server(tmp_path) as redis:
        result = await anyio.to_thread.run_sync(
            lambda: run_cli(
                "serve", "--port", "0", "--workers", "2", "--redis", redis.url, "--certfile", str(tmp_path / "none.pem")
            )
        )
    assert result.returncode == 2, result.stderr
    assert "relaycore: cannot load the TLS certificate" in result.stderr
    assert "during start-up" in result.stderr
    assert "Traceback" not in result.stderr


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie left to an init that does not reap counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("RELAYCORE_")}
    return subprocess.run(
        [sys.executable, "-m", "transports", *args], capture_output=True, text=True, timeout=30, check=False, env=env
    )


def test_workers_without_a_backplane_is_one_line_and_exit_2() -> None:
    result = run_cli("serve", "--port", "0", "--workers", "2")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "relaycore: --workers 2 needs a cluster backplane: pass --redis URL (or set [cluster] redis_url)"
    ]


def test_zero_workers_is_exit_2() -> None:
    result = run_cli("serve", "--port", "0", "--workers", "0", "--redis", "redis://127.0.0.1:1/0")
    assert result.returncode == 2
    assert "argument --workers: must be 1 or more" in result.stderr


def test_a_bad_node_id_is_named_and_exit_2() -> None:
    result = run_cli("serve", "--port", "0", "--node-id", "no spaces")
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["relaycore: `cluster.node_id` must be 1..64 letters, digits, '-', '_' or '.'"]


def test_a_node_id_too_long_for_its_workers_is_exit_2() -> None:
    result = run_cli("serve", "--port", "0", "--workers", "2", "--redis", "redis://x:1/0", "--node-id", "n" * 62)
    assert result.returncode == 2
    assert "`cluster.node_id` must be 1..64" in result.stderr and "-w2" in result.stderr


def test_the_supervisor_on_a_taken_port_is_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2", "--redis", "redis://x:1/0"
        )
    assert result.returncode == 1
    assert result.stderr.startswith(f"relaycore: cannot listen on 127.0.0.1:{port}: ")
    assert "Traceback" not in result.stderr


def test_the_restart_backoff_doubles_to_10_s_and_resets_after_a_life_of_10_s() -> None:
    delays = [next_backoff(0.0, lived=0.2)]
    while len(delays) < 8:
        delays.append(next_backoff(delays[-1], lived=3.0))
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert next_backoff(10.0, lived=10.0) == 0.5


async def test_workers_are_one_relay(anyio_backend: str, tmp_path: Path) -> None:
    """Members spread over the workers hear each other and count each other."""
    async with two_workers(anyio_backend, tmp_path) as (_, relay):
        workers = await wait_for_workers(relay, 2)
        async with clients(relay.port) as connect:
            members = []
            for index in range(12):
                member = await connect("/c/together")
                hello = await recv_json(member)
                assert hello["total"] == index + 1, hello  # counts the members on both workers
                for earlier in members:
                    assert (await recv_json(earlier))["total"] == index + 1
                members.append(member)
            served = await settled(lambda: [tcp_sockets(pid, relay.port, "01") for pid in workers], 12)
            assert min(served) > 0, f"the kernel put every member on one worker: {served}"
            await members[0].send('{"hello":"everyone"}')
            for member in members[1:]:
                assert (await recv_json(member))["message"] == {"hello": "everyone"}
