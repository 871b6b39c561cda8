"""A page from another origin, in headless Chromium: CORS on HTTP push, and ``allowed_origins``.

The relay runs in this process (the native server), with the reserved namespace ``myapp``
and its send key; the page is served by Python's ``http.server`` on another port, so every
request it makes to the relay is cross-origin. A Python member listens on ``myapp:alerts``.
Three relays, each with its own ``[server] allowed_origins``:

- ``["*"]`` (the default): the page's ``fetch('http://127.0.0.1:<relay>/push/myapp:alerts',
  {method: 'POST', headers: {'content-type': 'application/json', 'x-send-key': KEY}, body})``
  passes the browser's preflight; the page reads ``{"ok":true,"recipients":1}`` and the
  member gets the push envelope ``{"date":..., "message":...}``;
- another origin only: the page's ``new WebSocket(...)`` never opens (error, close 1006;
  from Python, the same upgrade with the page's ``Origin`` gets 403 ``Origin not allowed.``);
  its push is stopped by the browser (``fetch`` rejects with a TypeError), and the relay
  refuses such a push itself (403, no CORS headers); the member gets nothing: a marker
  pushed from Python afterwards is the very next event it sees;
- exactly the page's origin: its WebSocket opens (the self-join is its first frame), its
  push reaches both members, and every answer carries ``Access-Control-Allow-Origin`` set to
  that origin (with ``Vary: origin``); the preflight allows the method and headers.

Every step has a deadline.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from cdp import Browser, Page, chromium
from test_chat import static_server

from conftest import make_config, running
from transports.client import Channel, Message, connect, http_push

pytestmark = pytest.mark.anyio

KEY = "k3y-for-myapp"
CHANNEL = "myapp:alerts"
TEST_TIMEOUT = 30.0  # a whole test; each takes a few seconds
STEP_TIMEOUT = 5.0

PAGE = """\
<!doctype html>
<meta charset="utf-8">
<title>another origin</title>
<body>
<script>
// The protocol's HTTP push, as a page does it: JSON body, send key in a header (so a preflight).
async function push(relay, key, value) {
  try {
    const response = await fetch(`${relay}/push/myapp:alerts`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-send-key': key },
      body: JSON.stringify(value),
    })
    return { status: response.status, body: await response.json() }
  } catch (error) {
    return { error: error.name, text: error.message }
  }
}

// Open a WebSocket; resolve once it closes (or after `wait` ms), with what happened.
const sockets = []
function openSocket(url, wait) {
  return new Promise(resolve => {
    const seen = { opened: false, error: false, frames: [] }
    const socket = new WebSocket(url)
    sockets.push(socket)
    socket.onopen = () => { seen.opened = true }
    socket.onerror = () => { seen.error = true }
    socket.onmessage = event => { seen.frames.push(JSON.parse(event.data)) }
    socket.onclose = event => resolve({ ...seen, code: event.code })
    setTimeout(() => resolve({ ...seen, code: null }), wait)
  })
}
document.body.dataset.state = 'ready'
</script>
"""


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only: the DevTools client is python-websockets, which is asyncio's."""
    return "asyncio"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    directory = tmp_path / "site"
    directory.mkdir()
    (directory / "index.html").write_text(PAGE)
    return directory


def relay_config(origins: list[str]) -> Any:
    return make_config(f'[server]\nallowed_origins = {json.dumps(origins)}\n[namespaces."myapp"]\nsend_key = "{KEY}"\n')


def request(port: int, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, Any, bytes]:
    """A plain HTTP request from a blocking socket: status, headers, body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=STEP_TIMEOUT)
    try:
        connection.request(method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


async def ask(port: int, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, Any, bytes]:
    return await anyio.to_thread.run_sync(request, port, method, path, headers, body)


def upgrade_headers(origin: str) -> dict[str, str]:
    return {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        "Origin": origin,
    }


async def next_event(member: Channel, what: str) -> Any:
    with anyio.fail_after(STEP_TIMEOUT):
        try:
            return await member.receive()
        except TimeoutError:
            raise AssertionError(f"the member never got {what}") from None


async def open_page(browser: Browser, http_port: int) -> Page:
    page = await browser.new_page(f"http://127.0.0.1:{http_port}/index.html")
    await page.wait_for("document.body && document.body.dataset.state === 'ready'", "the page to load")
    return page


@dataclass
class Scene:
    """A relay, and the page from another origin (served on ``http_port``) open in Chromium."""

    http_port: int
    relay: Any
    page: Page

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def relay_url(self) -> str:
        return f"http://127.0.0.1:{self.relay.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.relay.port}/c/{CHANNEL}"

    async def push(self, value: Any) -> Any:
        """The page pushes ``value`` to CHANNEL: what its ``fetch`` gave."""
        return await self.page.evaluate(f"push({json.dumps(self.relay_url)}, {json.dumps(KEY)}, {json.dumps(value)})")


@asynccontextmanager
async def cross_origin_page(site: Path, tmp_path: Path, allowed: Callable[[int], list[str]]) -> AsyncIterator[Scene]:
    """The page of ``site`` open in Chromium, and a relay whose ``allowed_origins`` is
    ``allowed(http_port)``, for the block (which has TEST_TIMEOUT)."""
    with static_server(site) as http_port, anyio.fail_after(TEST_TIMEOUT):
        async with running(relay_config(allowed(http_port))) as relay, chromium(tmp_path / "chromium") as browser:
            yield Scene(http_port, relay, await open_page(browser, http_port))


async def test_push_from_another_origin(site: Path, tmp_path: Path) -> None:
    async with cross_origin_page(site, tmp_path, lambda _: ["*"]) as scene:
        async with connect(scene.ws_url) as member:
            value = {"type": "alert", "text": "from the page", "level": 3}
            answer = await scene.push(value)
            assert answer == {"status": 200, "body": {"ok": True, "recipients": 1}}, answer
            event = await next_event(member, "the page's push")
            assert isinstance(event, Message) and event.message == value, event
            assert event.uid is None and event.alias is None and isinstance(event.date, int), event

        # What the browser was told: any origin may read (and the preflight let it send).
        preflight = {"Origin": scene.origin, "Access-Control-Request-Method": "POST"}
        status, headers, _ = await ask(scene.relay.port, "OPTIONS", f"/push/{CHANNEL}", preflight)
        assert status == 204 and headers["access-control-allow-origin"] == "*", (status, headers)


def a_neighbour(http_port: int) -> list[str]:
    """Only the origin on the port next to the page's."""
    return [f"http://127.0.0.1:{http_port + 1 if http_port < 65535 else http_port - 1}"]


async def test_a_disallowed_origin_is_refused(site: Path, tmp_path: Path) -> None:
    async with cross_origin_page(site, tmp_path, a_neighbour) as scene, connect(scene.ws_url) as member:
        origin, port = scene.origin, scene.relay.port

        # The page's WebSocket never opens.
        outcome = await scene.page.evaluate(f"openSocket({json.dumps(scene.ws_url)}, 4000)")
        assert outcome == {"opened": False, "error": True, "frames": [], "code": 1006}, outcome
        # ... because the relay answered its upgrade 403 (the same request from Python).
        status, _, body = await ask(port, "GET", f"/c/{CHANNEL}", upgrade_headers(origin))
        assert (status, body) == (403, b"Origin not allowed."), (status, body)

        # The page's push: the browser stops it at the preflight.
        value = {"type": "alert", "text": "should not arrive"}
        answer = await scene.push(value)
        assert answer.get("error") == "TypeError", answer
        # The preflight's answer has no CORS header for that origin ...
        preflight = {"Origin": origin, "Access-Control-Request-Method": "POST"}
        status, headers, _ = await ask(port, "OPTIONS", f"/push/{CHANNEL}", preflight)
        assert status == 204 and "access-control-allow-origin" not in headers, (status, headers)
        # ... and a push with that Origin (a client that skips the preflight) is refused anyway.
        post = {"Origin": origin, "content-type": "application/json", "x-send-key": KEY}
        status, headers, body = await ask(port, "POST", f"/push/{CHANNEL}", post, json.dumps(value).encode())
        assert status == 403 and "access-control-allow-origin" not in headers, (status, headers)
        assert json.loads(body) == {"ok": False, "error": "Origin not allowed."}, body

        # Nothing reached the member (no push, no join of the page's socket): the
        # marker pushed now (no Origin: a program) is the first thing it gets.
        assert await http_push(scene.relay_url, CHANNEL, {"marker": 1}, send_key=KEY) == 1
        event = await next_event(member, "the marker")
        assert isinstance(event, Message) and event.message == {"marker": 1}, event


async def test_exactly_the_page_origin_is_allowed(site: Path, tmp_path: Path) -> None:
    async with cross_origin_page(site, tmp_path, lambda http_port: [f"http://127.0.0.1:{http_port}"]) as scene:
        origin, page = scene.origin, scene.page
        async with connect(scene.ws_url) as member:
            # The page's WebSocket opens: its first frame is the self-join; the member sees it join.
            await page.evaluate(f"window.socket = openSocket({json.dumps(scene.ws_url)}, 60000), null")
            await page.wait_for("sockets[0].readyState === WebSocket.OPEN", "the page's WebSocket to open")
            event = await next_event(member, "the page's join")
            assert event.type == "join" and event.total == 2, event

            # Its push reaches both members; the page may read the answer.
            value = {"type": "alert", "text": "allowed"}
            answer = await scene.push(value)
            assert answer == {"status": 200, "body": {"ok": True, "recipients": 2}}, answer
            event = await next_event(member, "the page's push")
            assert isinstance(event, Message) and event.message == value and event.uid is None, event
            await page.evaluate("sockets[0].close()")
            outcome = await page.evaluate("window.socket")
            assert outcome["opened"] is True and outcome["code"] == 1005, outcome
            first, pushed = outcome["frames"]
            assert first["type"] == "join" and first["self"] is True and first["total"] == 2, first
            assert pushed["message"] == value and "uid" not in pushed, pushed

        # The answers name the page's origin, and vary by it.
        preflight = {
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-send-key",
        }
        status, headers, _ = await ask(scene.relay.port, "OPTIONS", f"/push/{CHANNEL}", preflight)
        assert status == 204, status
        assert headers["access-control-allow-origin"] == origin
        assert "POST" in headers["access-control-allow-methods"]
        assert headers["access-control-allow-headers"] == "content-type, x-send-key"
        assert headers["access-control-max-age"] == "7200" and headers["vary"].lower() == "origin"
        post = {"Origin": origin, "content-type": "application/json", "x-send-key": KEY}
        status, headers, body = await ask(scene.relay.port, "POST", f"/push/{CHANNEL}", post, b'"hi"')
        assert (status, json.loads(body)) == (200, {"ok": True, "recipients": 0}), body
        assert headers["access-control-allow-origin"] == origin and headers["vary"].lower() == "origin"
        status, headers, _ = await ask(scene.relay.port, "GET", "/health", {"Origin": origin})
        assert status == 200 and headers["access-control-allow-origin"] == origin, headers
