"""A real ``redis-server`` for the cluster tests, on a free loopback port, stopped by pid.

::

    async with redis_server(tmp_path) as redis:
        redis.url            # redis://127.0.0.1:<port>/0
        redis.cpu_seconds()  # its own CPU time
        await redis.restart()  # SIGKILL, then a fresh server on the same port (no data kept)

Nothing is persisted: ``--save ""`` and no append-only file, so a restart loses every key,
as a Redis without persistence does when it crashes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from prerequisites import require

START_TIMEOUT = 10.0


def redis_binary() -> str:
    """The path of ``redis-server``; the test is skipped (locally) or fails (CI) without it
    (:func:`prerequisites.require`)."""
    packaged = "/usr/bin/redis-server"
    return require(
        shutil.which("redis-server") or (packaged if os.path.exists(packaged) else None),
        "redis-server is not installed",
        "apt-get install -y redis-server",
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    """One redis-server child process."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the server so far (/proc/<pid>/stat)."""
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def start(self) -> None:
        log = open(self.directory / f"redis-{self.port}.log", "ab")  # noqa: SIM115 (the child owns it)
        # fmt: off
        command = [
            redis_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--protected-mode", "no",
        ]
        # fmt: on
        self.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if await self.ping():
                return
            await anyio.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING in time")

    async def ping(self) -> bool:
        try:
            with anyio.fail_after(1):
                async with await anyio.connect_tcp("127.0.0.1", self.port) as stream:
                    await stream.send(b"PING\r\n")
                    return (await stream.receive()).startswith(b"+PONG")
        except (OSError, TimeoutError, anyio.EndOfStream):
            return False

    async def command(self, *args: str) -> bytes:
        """Send one command in RESP and return the raw reply (for test assertions)."""
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        with anyio.fail_after(5):
            async with await anyio.connect_tcp("127.0.0.1", self.port) as stream:
                await stream.send(b"".join(parts))
                return await stream.receive()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    async def restart(self, down_for: float = 0.0) -> None:
        """Kill the server (no data survives) and start a fresh one on the same port."""
        self.kill()
        if down_for:
            await anyio.sleep(down_for)
        await self.start()


@asynccontextmanager
async def redis_server(directory: Path) -> AsyncIterator[RedisProcess]:
    redis = RedisProcess(directory)
    await redis.start()
    try:
        yield redis
    finally:
        with contextlib.suppress(Exception):
            redis.stop()
