"""Graceful shutdown: SIGTERM / SIGINT stop accepting, close every member with 1001, wait
(bounded) for the close handshakes, then exit 0, with no leave storm."""

from __future__ import annotations

import signal
import socket
import sys

import anyio
import pytest
from anyio.abc import Process
from rawws import RawPeer
from wsclient import Closed, clients, recv_json

from conftest import make_config, running

pytestmark = pytest.mark.anyio


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_server(backend: str, port: int) -> Process:
    process = await anyio.open_process(
        [sys.executable, "-m", "transports", "serve", "--host", "127.0.0.1", "--port", str(port), "--backend", backend]
    )
    with anyio.fail_after(15):
        while True:
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.05)
                continue
            await stream.aclose()
            return process


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_closes_members_with_1001_and_exits_0(anyio_backend: str, signum: int) -> None:
    port = free_port()
    process = await start_server(anyio_backend, port)
    try:
        async with clients(port) as connect:
            members = []
            for _ in range(3):
                member = await connect("/c/room")
                await recv_json(member)
                members.append(member)
            for index, member in enumerate(members):  # drain the join events
                for _ in range(len(members) - 1 - index):
                    assert (await recv_json(member))["type"] == "join"
            process.send_signal(signum)
            for member in members:
                # The very next thing each member gets is the close: no leave storm.
                with pytest.raises(Closed) as closed:
                    await member.recv(timeout=5)
                assert closed.value.code == 1001
        with anyio.fail_after(10):
            assert await process.wait() == 0
        with pytest.raises(OSError):  # no longer accepting
            await anyio.connect_tcp("127.0.0.1", port)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                await stream.aclose()


async def test_shutdown_waits_only_the_grace_period_for_silent_peers(anyio_backend: str) -> None:
    config = make_config("[server]\nshutdown_grace = 0.5")
    async with running(config) as server:
        peer = await RawPeer.connect(server.port)  # never answers the close frame
        assert (await peer.upgrade("/c/room"))[0] == 101
        await peer.read_json()
        start = anyio.current_time()
        server.shutdown()
        assert await peer.read_close() == 1001
        with anyio.fail_after(5):
            while server._listeners or server._peers:
                await anyio.sleep(0.02)
        assert anyio.current_time() - start < 3
        await peer.aclose()
