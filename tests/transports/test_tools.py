"""``relaycore listen``, ``send`` and ``push``: real processes against a real relay.

``listen`` prints one JSON line per frame; what ``send`` and ``push`` deliver shows up
there. The relay runs in this process (on the test's backend); every tool is a child
process, as a user's shell would run it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from conftest import make_config, running

pytestmark = pytest.mark.anyio

CONFIG = """
[namespaces."news"]
send_key = "press"
"""


def tool(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "transports", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


class Listener:
    """``relaycore listen URL`` in a child process, its output read line by line."""

    def __init__(self, url: str, *extra: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "transports", "listen", url, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    async def line(self, timeout: float = 10) -> Any:
        assert self.process.stdout is not None
        with anyio.fail_after(timeout):
            text = await anyio.to_thread.run_sync(self.process.stdout.readline)
        assert text, f"listen ended: {self.process.stderr.read() if self.process.stderr else ''}"
        return json.loads(text)

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(10)


async def test_listen_prints_what_send_and_push_deliver(anyio_backend: str, tmp_path: Path) -> None:
    async with running(make_config(CONFIG)) as relay:
        base = f"ws://127.0.0.1:{relay.port}"
        listener = Listener(f"{base}/c/news:today", "--alias", "ears", "--announce")
        try:
            hello = await listener.line()
            assert hello["type"] == "join" and hello["self"] is True and hello["alias"] == "ears"
            assert hello["total"] == 1 and len(hello["uid"]) == 6

            sent = await anyio.to_thread.run_sync(
                tool, "send", f"{base}/c/news:today", '{"type":"chat","text":"hi"}', "--send-key", "press"
            )
            assert sent.returncode == 0, sent.stderr
            join, message, leave = [await listener.line() for _ in range(3)]
            assert join["type"] == "join" and join["total"] == 2
            assert message["type"] == "message" and message["message"] == {"type": "chat", "text": "hi"}
            assert message["kind"] == "chat"
            assert leave["type"] == "leave" and leave["total"] == 1

            direct = await anyio.to_thread.run_sync(
                tool, "send", f"{base}/c/news:today", "42", "--to", hello["uid"], "--send-key", "press"
            )
            assert direct.returncode == 0, direct.stderr
            lines = [await listener.line() for _ in range(3)]
            assert [line["type"] for line in lines] == ["join", "message", "leave"]
            assert lines[1]["message"] == 42

            pushed = await anyio.to_thread.run_sync(
                tool, "push", f"http://127.0.0.1:{relay.port}/push/news:today", '{"n":1}', "--send-key", "press"
            )
            assert pushed.returncode == 0, pushed.stderr
            assert json.loads(pushed.stdout) == {"ok": True, "recipients": 1}
            got = await listener.line()
            assert got["message"] == {"n": 1} and got.get("uid") is None

            # The channel's ws:// URL works for push too.
            pushed = await anyio.to_thread.run_sync(
                tool, "push", f"{base}/c/news:today", '"again"', "--send-key", "press"
            )
            assert pushed.returncode == 0, pushed.stderr
            assert (await listener.line())["message"] == "again"
        finally:
            listener.stop()


async def test_exit_codes_say_what_went_wrong(anyio_backend: str) -> None:
    async with running(make_config(CONFIG)) as relay:
        base = f"ws://127.0.0.1:{relay.port}"
        refused = await anyio.to_thread.run_sync(
            tool, "push", f"http://127.0.0.1:{relay.port}/push/news:x", "1", "--send-key", "wrong"
        )
        assert refused.returncode == 3
        assert "refused: HTTP 403: Pushing requires a valid x-send-key." in refused.stderr
        not_json = await anyio.to_thread.run_sync(tool, "send", f"{base}/c/room", "hello")
        assert not_json.returncode == 2 and "not a JSON value" in not_json.stderr
        bad_url = await anyio.to_thread.run_sync(tool, "push", "ftp://x/y", "1", "--send-key", "k")
        assert bad_url.returncode == 2
    with_nobody = await anyio.to_thread.run_sync(tool, "send", "ws://127.0.0.1:9/c/room", "1")
    assert with_nobody.returncode == 1 and "cannot reach the relay" in with_nobody.stderr
