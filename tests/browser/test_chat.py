"""The browser chat (examples/chat/) in headless Chromium, against a real relay.

The relay runs in this process (the native server); the page is served by Python's
``http.server`` on another port and pointed at the relay with ``?relay=``. Three people,
each in a browser context of their own: Ann and Bob join with the room's send key, Carol
without it. Every step is checked in the pages' DOM, with a deadline:

- each sees the others in "who's here";
- Ann's chat line reaches Bob;
- Bob clicks Ann's name and sends a direct message: Ann sees it marked as direct, Carol
  never sees it (Bob's next broadcast reaches Carol after it would have);
- Carol, without the send key, gets the relay's error frame shown as an error line;
- Bob closes his page: Ann sees that he left, and he is gone from her list.

A screenshot of Ann's page is saved under the test's tmp_path (the path is printed) and,
when ``RELAYCORE_SCREENSHOT_DIR`` is set, copied there.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
import pytest
from cdp import Page, chromium

from conftest import make_config, running

pytestmark = pytest.mark.anyio

CHAT = Path(__file__).resolve().parents[2] / "examples" / "chat"
TEST_TIMEOUT = 30.0  # the whole test; it takes a few seconds


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only: the DevTools client is python-websockets, which is asyncio's."""
    return "asyncio"


class QuietHandler(SimpleHTTPRequestHandler):
    """Static files, without a log line per request on the test's output."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def static_server(directory: Path) -> Iterator[int]:
    """Serve ``directory`` over HTTP on a free loopback port, in a thread; yield the port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def texts(selector: str) -> str:
    """A page expression: the text of every element matching ``selector``, as a list."""
    return f"[...document.querySelectorAll({json.dumps(selector)})].map(e => e.textContent)"


async def join(page: Page, alias: str) -> None:
    await page.wait_for("document.body && document.body.dataset.state === 'idle'", f"{alias}'s page to load")
    await page.type("#alias", alias)
    await page.press_enter()
    await page.wait_for("document.body.dataset.state === 'joined'", f"{alias} to join")


async def wait_for_text(page: Page, selector: str, text: str, what: str) -> list[str]:
    """Wait until some element matching ``selector`` contains ``text``; return all their texts."""
    found: list[str] = await page.wait_for(
        f"(t => t.some(s => s.includes({json.dumps(text)})) && t)({texts(selector)})", what
    )
    return found


async def say(page: Page, text: str) -> None:
    await page.type("#text", text)
    await page.press_enter()


async def wait_for_list(page: Page, selector: str, expected: list[str], what: str) -> None:
    """Wait until the texts of ``selector`` are exactly ``expected``, in order (the page
    updates as frames arrive: a list read once may not be there yet)."""
    try:
        wanted = json.dumps(expected, separators=(",", ":"), ensure_ascii=False)  # as JSON.stringify writes it
        await page.wait_for(f"JSON.stringify({texts(selector)}) === {json.dumps(wanted)}", what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the list is {await page.evaluate(texts(selector))}") from None


def save_screenshot(png: bytes, tmp_path: Path) -> Path:
    path = tmp_path / "chat.png"
    path.write_bytes(png)
    print(f"screenshot of Ann's page: {path}")
    copy_dir = os.environ.get("RELAYCORE_SCREENSHOT_DIR")
    if copy_dir:
        Path(copy_dir).mkdir(parents=True, exist_ok=True)
        copy = shutil.copy(path, Path(copy_dir) / "chat.png")
        print(f"copied to {copy}")
    return path


async def test_join_chat_direct_message_leave(tmp_path: Path) -> None:
    with static_server(CHAT) as http_port, anyio.fail_after(TEST_TIMEOUT):
        async with running(make_config()) as relay, chromium(tmp_path / "chromium") as browser:
            page_url = f"http://127.0.0.1:{http_port}/index.html"
            member = urlencode({"relay": f"ws://127.0.0.1:{relay.port}", "room": "lobby", "sendKey": "s3cret"})
            listener = urlencode({"relay": f"ws://127.0.0.1:{relay.port}", "room": "lobby"})
            ann = await browser.new_page(f"{page_url}?{member}")
            bob = await browser.new_page(f"{page_url}?{member}")
            carol = await browser.new_page(f"{page_url}?{listener}")

            # Ann first: her send key becomes the room's.
            await join(ann, "Ann")
            await join(bob, "Bob")
            await join(carol, "Carol")

            # Who's here: each lists the others (and themselves, marked).
            await wait_for_text(ann, "#members li", "Bob", "Bob in Ann's list")
            await wait_for_text(ann, "#members li", "Carol", "Carol in Ann's list")
            await wait_for_list(ann, "#members li", ["Ann (you)", "Bob", "Carol"], "Ann's list")
            await wait_for_list(bob, "#members li", ["Ann", "Bob (you)", "Carol"], "Bob's list")
            await wait_for_text(ann, "#log .system", "Bob joined.", "Bob's join line on Ann's page")

            # A chat line from Ann reaches Bob (and Carol), with her name on it.
            await say(ann, "Hello <b>Bob</b> & all")
            lines = await wait_for_text(bob, "#log .msg", "Hello <b>Bob</b> & all", "Ann's line on Bob's page")
            assert any(line.endswith("Ann Hello <b>Bob</b> & all") for line in lines), lines
            assert await bob.evaluate("document.querySelectorAll('#log b').length") == 0  # text, not HTML
            await wait_for_text(carol, "#log .msg", "Hello <b>Bob</b>", "Ann's line on Carol's page")

            # Bob clicks Ann's name (a real mouse click) and sends her a direct message.
            ann_uid = await bob.evaluate("document.querySelector('#members button').dataset.uid")
            await bob.click(f"#members button[data-uid='{ann_uid}']")
            await bob.wait_for("document.querySelector('#target-label').textContent.includes('Ann')", "Bob's DM target")
            await say(bob, "psst, just for you")
            dms = await wait_for_text(ann, "#log .msg.dm", "psst, just for you", "Bob's DM on Ann's page")
            assert any("direct" in line and "Bob → you" in line for line in dms), dms
            sent = await bob.evaluate(texts("#log .msg.dm"))
            assert len(sent) == 1 and "you → Ann" in sent[0] and "psst, just for you" in sent[0], sent
            # Back to everyone: Carol gets this broadcast after any copy of the DM she could have had.
            await bob.click("#target-clear")
            await say(bob, "back to the room")
            await wait_for_text(carol, "#log .msg", "back to the room", "Bob's broadcast on Carol's page")
            assert not any("psst" in line for line in await carol.evaluate(texts("#log li"))), "Carol saw the DM"

            # Carol has no send key: the relay's error frame is shown to her, and nothing is relayed.
            await say(carol, "can anyone hear me?")
            await wait_for_text(carol, "#log .error", "Sending requires a valid sendKey.", "the error on Carol's page")

            # Bob closes his page: Ann sees him leave, and he is no longer listed.
            await bob.close()
            await wait_for_text(ann, "#log .system", "Bob left.", "Bob's leave line on Ann's page")
            await wait_for_list(ann, "#members li", ["Ann (you)", "Carol"], "Ann's list without Bob")
            assert not any("can anyone hear me?" in line for line in await ann.evaluate(texts("#log li")))

            save_screenshot(await ann.screenshot(), tmp_path)
