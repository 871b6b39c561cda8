"""Headless Chromium for the browser tests, driven over the Chrome DevTools Protocol.

::

    async with chromium(tmp_path / "profile") as browser:
        page = await browser.new_page("http://127.0.0.1:8000/index.html")
        await page.wait_for("document.readyState === 'complete'", "the page to load")
        await page.click("#join")
        png = await page.screenshot()

Theory of operation: Debian's ``chromium`` runs headless with ``--remote-debugging-port=0``;
it picks a free port and writes it, with the browser's WebSocket path, to
``DevToolsActivePort`` in its profile directory. One WebSocket (python-websockets) to that
path carries every command: each page is attached in "flat" mode, so its commands travel on
the browser's socket tagged with the page's ``sessionId``. Replies are matched to calls by
``id``; events are not needed (the tests poll the DOM instead, always with a deadline).
Each page gets a browser context of its own, like a separate profile: no shared storage,
and a window of its own, so no page is a background tab.

The browser is an asyncio program's (python-websockets is asyncio only). At exit it gets
``Browser.close``, then SIGTERM and SIGKILL to its process group, each after a bound.

Without ``chromium`` the test is skipped, or fails when ``CI`` is set.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from prerequisites import missing

START_TIMEOUT = 15.0
CALL_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
WINDOW = (1000, 680)

# fmt: off
FLAGS = [
    "--headless=new",
    "--remote-debugging-port=0",
    "--no-sandbox",                  # the tests run as root in CI; the sandbox refuses root
    "--no-first-run",
    "--no-default-browser-check",
    "--no-proxy-server",             # every page and relay here is on 127.0.0.1
    "--disable-gpu",
    "--disable-dev-shm-usage",       # containers have a small /dev/shm
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--mute-audio",
    "--hide-scrollbars",
    "--force-color-profile=srgb",
    "--lang=en-US",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
]
# fmt: on


# python-websockets 15 and later use the environment's proxy unless told not to; 14 never does.
_NO_PROXY: dict[str, Any] = {"proxy": None} if "proxy" in inspect.signature(connect).parameters else {}


def chromium_binary() -> str:
    """The path of Chromium; the test is skipped (locally) or fails (CI) without it."""
    packaged = "/usr/bin/chromium"  # Debian's, should PATH lack /usr/bin
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.path.exists(packaged):
        found = packaged
    if found is not None:
        return found
    missing("chromium is not installed", "apt-get install -y chromium")


class CDPError(Exception):
    """A command the browser answered with an error, or a page script that threw."""


class Browser:
    """One Chromium process and the DevTools WebSocket to it."""

    def __init__(self, process: subprocess.Popen[bytes], socket: ClientConnection, log_path: Path) -> None:
        self.process = process
        self.socket = socket
        self.log_path = log_path
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def call(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None) -> Any:
        """Send one command and return its ``result``; raise CDPError on an error answer."""
        ident = next(self._ids)
        command: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            command["sessionId"] = session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        try:
            await self.socket.send(json.dumps(command))
            async with asyncio.timeout(CALL_TIMEOUT):
                reply = await future
        finally:
            self._pending.pop(ident, None)
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error'].get('message')} {reply['error'].get('data', '')}".strip())
        return reply.get("result", {})

    async def _read(self) -> None:
        error: BaseException = ConnectionError("the DevTools connection closed")
        try:
            async for data in self.socket:
                reply = json.loads(data)
                future = self._pending.get(reply.get("id", -1))
                if future is not None and not future.done():
                    future.set_result(reply)
        except ConnectionClosed as exc:
            error = ConnectionError(f"the DevTools connection closed: {exc}")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)

    async def new_page(self, url: str) -> Page:
        """Open ``url`` in a new window of a new browser context, attached and ready for commands."""
        context = (await self.call("Target.createBrowserContext"))["browserContextId"]
        width, height = WINDOW
        target = await self.call(
            "Target.createTarget",
            {"url": url, "browserContextId": context, "newWindow": True, "width": width, "height": height},
        )
        attached = await self.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = Page(self, target["targetId"], attached["sessionId"], context)
        # Only one window has the focus; typing into another would go nowhere without this.
        await page.call("Emulation.setFocusEmulationEnabled", enabled=True)
        return page

    def log_tail(self, n: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


class Page:
    """One page (tab) of the browser: evaluate, wait, type, click, screenshot."""

    def __init__(self, browser: Browser, target_id: str, session_id: str, context_id: str) -> None:
        self.browser = browser
        self.target_id = target_id
        self.session_id = session_id
        self.context_id = context_id

    async def call(self, method: str, **params: Any) -> Any:
        return await self.browser.call(method, params, session=self.session_id)

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` in the page (promises awaited); CDPError if it throws."""
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"{expression!r} threw: {text}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, what: str, timeout: float = 5.0) -> Any:
        """Poll ``expression`` until it is truthy and return its value; fail after ``timeout`` s.

        An evaluation that throws (the page is still loading, an element is not there yet)
        counts as not yet.
        """
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = await self.evaluate(expression)
            except CDPError as exc:
                last = exc
            else:
                if last:
                    return last
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}: last {last!r}")
            await asyncio.sleep(0.05)

    async def focus(self, selector: str) -> None:
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")

    async def type(self, selector: str, text: str) -> None:
        """Focus ``selector`` and type ``text`` into it as the keyboard would (IME-style insert)."""
        await self.focus(selector)
        await self.call("Input.insertText", text=text)

    async def press_enter(self) -> None:
        for kind in ("keyDown", "keyUp"):
            await self.call(
                "Input.dispatchKeyEvent",
                type=kind,
                key="Enter",
                code="Enter",
                windowsVirtualKeyCode=13,
                nativeVirtualKeyCode=13,
                **({"text": "\r"} if kind == "keyDown" else {}),
            )

    async def click(self, selector: str) -> None:
        """A real mouse click (pressed, released) at the middle of the element ``selector``."""
        box = await self.evaluate(
            f"""(() => {{
                const element = document.querySelector({json.dumps(selector)})
                element.scrollIntoView({{block: 'center'}})
                const r = element.getBoundingClientRect()
                return {{x: r.left + r.width / 2, y: r.top + r.height / 2}}
            }})()"""
        )
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            await self.call("Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"], button="left", clickCount=1)

    async def screenshot(self) -> bytes:
        """A PNG of the page's viewport."""
        result = await self.call("Page.captureScreenshot", format="png")
        return base64.b64decode(result["data"])

    async def close(self) -> None:
        """Close the page as a user closing its tab would (unload, sockets closed)."""
        await self.browser.call("Target.closeTarget", {"targetId": self.target_id})


def _read_active_port(profile: Path) -> tuple[int, str] | None:
    try:
        lines = (profile / "DevToolsActivePort").read_text().splitlines()
    except OSError:
        return None
    if len(lines) < 2 or not lines[0].isdigit():
        return None  # written but not complete yet
    return int(lines[0]), lines[1]


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    # The browser leads a session of its own (start_new_session): its group is its children.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


async def _stop(process: subprocess.Popen[bytes]) -> None:
    for signum in (signal.SIGTERM, signal.SIGKILL):
        if process.poll() is None:
            _signal_group(process, signum)
        deadline = time.monotonic() + STOP_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    _signal_group(process, signal.SIGKILL)  # renderers outliving the browser, if any


@asynccontextmanager
async def chromium(profile: Path, *, flags: Sequence[str] = ()) -> AsyncIterator[Browser]:
    """Headless Chromium with a fresh profile in ``profile`` (its log beside it), for the block.

    ``flags``: more command-line switches, after the usual ones (a certificate to trust).
    """
    binary = chromium_binary()
    profile.mkdir(parents=True, exist_ok=True)
    log_path = profile.with_suffix(".log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [binary, *FLAGS, *flags, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    browser: Browser | None = None
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while (active := _read_active_port(profile)) is None:
            if process.poll() is not None:
                raise AssertionError(f"chromium exited ({process.returncode}):\n{log_path.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                raise AssertionError(f"chromium did not open its DevTools port within {START_TIMEOUT} s")
            await asyncio.sleep(0.05)
        port, path = active
        socket = await connect(f"ws://127.0.0.1:{port}{path}", max_size=None, **_NO_PROXY)
        browser = Browser(process, socket, log_path)
        yield browser
    finally:
        if browser is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(STOP_TIMEOUT):
                    await browser.call("Browser.close")
            await browser.socket.close()
            browser._reader.cancel()
        await _stop(process)
