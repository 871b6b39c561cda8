"""Relays in processes of their own, for browser tests that run on asyncio (the DevTools
client's loop) against servers on other loops.

:func:`relay_process` serves a configuration behind one of :data:`BROWSER_DOORS`:

- ``native-asyncio``, ``native-trio``: ``relaycore serve --backend asyncio|trio --port 0``;
  the port is read from its start-up line (``listening on ws://127.0.0.1:<port>``);
- ``uvicorn``: ``python -m uvicorn transports.asgi:app`` on a socket this process bound
  (``doors.start_door``).

Each is ready once ``GET /health`` answers, and stopped by pid (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from relaycore import Config

# The door helpers of the transport tests (tests/transports is on the path only when pytest
# collects a test there).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "transports"))
from doors import REPO, DoorProcess, config_toml, start_door

__all__ = ["BROWSER_DOORS", "DoorProcess", "relay_process"]

BROWSER_DOORS = ("native-asyncio", "native-trio", "uvicorn")
START_TIMEOUT = 20.0
_LISTENING = re.compile(rb"listening on ws://127\.0\.0\.1:(\d+)")


@contextmanager
def relay_process(door: str, config: Config, directory: Path) -> Iterator[DoorProcess]:
    """The relay for ``config`` behind ``door``, for the block (its files in ``directory``)."""
    directory.mkdir(parents=True, exist_ok=True)
    text = config_toml(config)
    if door == "uvicorn":
        process = start_door(door, text, directory)
    else:
        process = _relaycore_serve(door.removeprefix("native-"), text, directory)
    try:
        yield process
    finally:
        process.stop()


def _relaycore_serve(backend: str, config_text: str, directory: Path) -> DoorProcess:
    fd, name = tempfile.mkstemp(prefix=f"serve-{backend}-", suffix=".toml", dir=directory)
    os.close(fd)
    config_path = Path(name)
    config_path.write_text(config_text)
    log_path = config_path.with_suffix(".log")
    command = [sys.executable, "-m", "transports", "serve", "--host", "127.0.0.1", "--port", "0"]
    command += ["--backend", backend, "--config", str(config_path)]
    env = {key: value for key, value in os.environ.items() if not key.startswith("RELAYCORE_")}
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + START_TIMEOUT
    while (found := _LISTENING.search(log_path.read_bytes())) is None:
        if popen.poll() is not None or time.monotonic() > deadline:
            popen.kill()
            popen.wait()
            raise AssertionError(f"relaycore serve --backend {backend} did not start:\n{log_path.read_text()}")
        time.sleep(0.05)
    process = DoorProcess(f"native-{backend}", popen, int(found[1]), "127.0.0.1", log_path, "/health")
    try:
        process.wait_until_ready()
    except BaseException:
        process.stop()
        raise
    return process
