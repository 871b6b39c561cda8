"""examples/selectors_loop.py: the relay on the selectors module alone, between real clients.

The example runs in its own process with asyncio, trio and anyio made unimportable, so
the test fails if the core (or the example) ever needs an event loop.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rawws import RawPeer, http, text

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "selectors_loop.py"
LAUNCH = (
    "import runpy, sys\n"
    "for name in ('asyncio', 'trio', 'anyio', 'sniffio'):\n"
    "    sys.modules[name] = None  # importing any of them now fails\n"
    "sys.argv = [sys.argv[1], '--port', '0']\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the clients' side; the relay under test has no event loop at all


@pytest.fixture
def example_port() -> Iterator[int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, str(EXAMPLE)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "listening on ws://" in line, line + proc.stderr.read()
        yield int(line.rsplit(":", 1)[1])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_two_clients_talk_through_the_selectors_loop(example_port: int) -> None:
    alice = await RawPeer.connect(example_port)
    bob = await RawPeer.connect(example_port)
    try:
        status, _ = await alice.upgrade("/c/room?alias=Alice&announce")
        assert status == 101
        hello = await alice.read_json()
        assert hello["type"] == "join" and hello["self"] is True and hello["total"] == 1
        status, _ = await bob.upgrade("/c/room?alias=Bob&announce")
        assert status == 101
        assert (await bob.read_json())["total"] == 2
        joined = await alice.read_json()
        assert joined["type"] == "join" and joined["alias"] == "Bob"
        await bob.send(text(json.dumps({"type": "chat", "text": "hi"})))
        relayed = await alice.read_json()
        assert relayed["alias"] == "Bob" and relayed["message"] == {"type": "chat", "text": "hi"}
        await bob.send(text(f"\x1f{hello['uid']}\x1f" + '"psst"'))
        assert (await alice.read_json())["message"] == "psst"
        await bob.aclose()
        leave = await alice.read_json()
        assert leave["type"] == "leave" and leave["alias"] == "Bob" and leave["total"] == 1
    finally:
        await alice.aclose()
        await bob.aclose()
    status, _, body = await http(example_port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200 and json.loads(body)["status"] == "ok"
