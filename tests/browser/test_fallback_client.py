"""The browser client (``GET /client.js``) in headless Chromium, with and without WebSockets.

The relay runs in a process of its own (``relaycore serve`` on asyncio and on trio, and the
ASGI app under uvicorn, see ``relays.py``) with ``[server] static_dir`` holding a test page
and a copy of the chat example. The pages are loaded through a proxy in this process
(``middlebox.py``) that breaks what some networks break; the page's module imports
``/client.js`` from there and connects with a channel name only, so every request of the
client goes through the proxy. A Python member (``transports.client``, a WebSocket straight
to the relay) shares the channel. In each case the page joins (``alias``, ``announce``), sees
the Python member come, sends a chat line and gets one (the payload spread under the
envelope, as the itty-sockets client gives it), sends and gets a direct message, and pushes
a last line, which the Python member gets before the page's leave; the page's ``close``
listener is told ``1000``.

- WebSockets refused (403 to every upgrade): the client falls back to SSE at once, and
  remembers it (localStorage): a second channel opens over SSE with no upgrade tried;
- WebSockets held (never answered) and streams buffered, with ``wait`` at one second: the
  client gives up on each in turn and chats over long-poll;
- nothing blocked: the client uses the WebSocket and remembers nothing;
- the chat example, WebSockets refused: it joins over SSE and chats with the Python member;
- beside the stock itty-sockets client (0.6.1, from ``tests/js``) in one channel, nothing
  blocked: both get equal events for the same frames.

Every step has a deadline.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from cdp import Page, chromium
from middlebox import Middlebox, middlebox
from relays import BROWSER_DOORS, DoorProcess, relay_process
from test_chat import join as join_chat
from test_chat import say, wait_for_text

from conftest import make_config
from prerequisites import require
from transports.client import Channel, Leave, Message, connect

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
CHAT = REPO / "examples" / "chat"
ITTY = REPO / "tests" / "js" / "node_modules" / "itty-sockets" / "connect.mjs"
TEST_TIMEOUT = 40.0
STEP_TIMEOUT = 5.0

PAGE = """\
<!doctype html>
<meta charset="utf-8">
<title>the fallback client</title>
<script type="module">
import { connect } from '/client.js'

// What each channel of the page saw, by channel name, for the test to read.
window.seen = {}
window.channels = {}
window.join = (name, options = {}, settings = {}) => {
  const log = window.seen[name] = { opens: 0, closes: [], events: [], messages: [], chats: [], dms: [] }
  window.channels[name] = connect(name, options, settings)
    .on('open', () => log.opens++)
    .on('close', (info) => log.closes.push(info))
    .on('*', (event) => log.events.push(event))
    .on('message', (event) => log.messages.push(event))
    .on('chat', (event) => log.chats.push(event))
    .on((event) => event.type === 'dm', (event) => log.dms.push(event))
  return true
}
// The stock itty-sockets client (a WebSocket only), beside it, for the shapes of its events.
window.stockJoin = async (name, options) => {
  const { connect: stockConnect } = await import('/itty.mjs')
  const log = window.seen[`stock:${name}`] = { messages: [], chats: [], joins: [], leaves: [] }
  stockConnect(`ws://${location.host}/c/${name}`, options)
    .on('message', (event) => log.messages.push(event))
    .on('chat', (event) => log.chats.push(event))
    .on('join', (event) => log.joins.push(event))
    .on('leave', (event) => log.leaves.push(event))
  return true
}
window.memory = () => JSON.parse(localStorage.getItem(`relaycore:transport:${location.origin}/`))
document.body.dataset.state = 'ready'
</script>
"""


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only: the DevTools client is python-websockets, which is asyncio's."""
    return "asyncio"


@pytest.fixture(scope="module", params=BROWSER_DOORS)
def relay(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DoorProcess]:
    """The relay behind one door, serving the test page and the chat example."""
    site = tmp_path_factory.mktemp("site")
    (site / "fallback.html").write_text(PAGE)
    shutil.copytree(CHAT, site / "chat")
    if ITTY.is_file():
        shutil.copy(ITTY, site / "itty.mjs")
    config = make_config(f"[server]\nstatic_dir = {json.dumps(str(site))}\n")
    with relay_process(request.param, config, tmp_path_factory.mktemp("relay")) as process:
        yield process


async def open_page(browser: Any, box: Middlebox) -> Page:
    page: Page = await browser.new_page(f"http://127.0.0.1:{box.port}/fallback.html")
    await page.wait_for("document.body && document.body.dataset.state === 'ready'", "the page to load")
    return page


async def next_event(member: Channel, kind: type[Any]) -> Any:
    """The Python member's next event of ``kind`` (others skipped)."""
    with anyio.fail_after(STEP_TIMEOUT):
        while not isinstance(event := await member.receive(), kind):
            pass
        return event


def seen(name: str, what: str) -> str:
    return f"seen[{json.dumps(name)}].{what}"


async def chat_with_a_websocket_member(page: Page, port: int, name: str, settings: str = "{}") -> str:
    """The exchange of the module docstring in channel ``name``; the way the page went."""
    await page.evaluate(f"join({json.dumps(name)}, {{ alias: 'Page', announce: true }}, {settings})")
    me = await page.wait_for(seen(name, "events.find((e) => e.type === 'join' && e.self)"), "the self-join", 10)
    assert await page.evaluate(seen(name, "opens")) == 1
    transport: str = await page.evaluate(f"channels[{json.dumps(name)}].transport")
    channel = f"channels[{json.dumps(name)}]"
    async with connect(f"ws://127.0.0.1:{port}/c/{name}", alias="Py", announce=True) as py:
        came = await page.wait_for(seen(name, "events.find((e) => e.type === 'join' && e.alias === 'Py')"), "Py")
        assert (came["uid"], came["total"]) == (py.uid, 2)

        await page.evaluate(f"{channel}.send({{ type: 'chat', text: 'from the page' }})")
        got = await next_event(py, Message)
        assert (got.uid, got.alias, got.message) == (me["uid"], "Page", {"type": "chat", "text": "from the page"})

        await py.send({"type": "chat", "text": "from python"})
        line = await page.wait_for(seen(name, "chats[0]"), "Py's line")
        payload = {"type": "chat", "text": "from python"}
        assert {key: line[key] for key in ("type", "text", "uid", "alias", "message")} == {
            **payload,
            "uid": py.uid,
            "alias": "Py",
            "message": payload,
        }
        assert isinstance(line["date"], int) and line == (await page.evaluate(seen(name, "messages[0]")))

        await py.send({"type": "dm", "text": "just you"}, to=me["uid"])
        await page.evaluate(f"{channel}.send({{ type: 'dm', text: 'just you too' }}, {json.dumps(py.uid)})")
        direct = await page.wait_for(seen(name, "dms[0]"), "Py's direct message")
        assert (direct["uid"], direct["text"]) == (py.uid, "just you")
        assert (await next_event(py, Message)).message == {"type": "dm", "text": "just you too"}

        await page.evaluate(f"{channel}.push({{ type: 'chat', text: 'bye' }})")
        assert (await next_event(py, Message)).message == {"type": "chat", "text": "bye"}
        left = await next_event(py, Leave)
        assert (left.uid, left.total) == (me["uid"], 1)
        closes = await page.wait_for(seen(name, "closes.length && " + seen(name, "closes")), "the page's close")
        assert [close["code"] for close in closes] == [1000]
        assert await page.evaluate(f"{channel}.transport") is None
    return transport


async def test_websockets_refused_falls_back_to_sse_and_remembers(relay: DoorProcess, tmp_path: Path) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with middlebox(relay.port, upgrades="refuse") as box, chromium(tmp_path / "chromium") as browser:
            page = await open_page(browser, box)
            assert await chat_with_a_websocket_member(page, relay.port, "fallback-sse") == "sse"
            assert len(box.seen(upgrade=True)) == 1
            memory = await page.evaluate("memory()")
            assert memory["name"] == "sse"
            # Remembered: the next channel goes straight to SSE, with no upgrade tried.
            assert await chat_with_a_websocket_member(page, relay.port, "fallback-sse-again") == "sse"
            assert len(box.seen(upgrade=True)) == 1
            assert box.seen(path="/s/") and box.seen(stream=True, path="/c/fallback-sse-again")


async def test_websockets_held_and_streams_buffered_fall_back_to_long_poll(relay: DoorProcess, tmp_path: Path) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with (
            middlebox(relay.port, upgrades="hold", streams="buffer") as box,
            chromium(tmp_path / "chromium") as browser,
        ):
            page = await open_page(browser, box)
            started = anyio.current_time()
            assert await chat_with_a_websocket_member(page, relay.port, "fallback-poll", "{ wait: 1000 }") == "poll"
            assert anyio.current_time() - started >= 2.0  # a second for each way given up
            assert len(box.seen(upgrade=True)) == 1 and len(box.seen(stream=True)) == 1
            assert (await page.evaluate("memory()"))["name"] == "poll"


async def test_websockets_let_through_are_used(relay: DoorProcess, tmp_path: Path) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with middlebox(relay.port) as box, chromium(tmp_path / "chromium") as browser:
            page = await open_page(browser, box)
            assert await chat_with_a_websocket_member(page, relay.port, "fallback-none") == "websocket"
            assert len(box.seen(upgrade=True)) == 1 and not box.seen(path="/s/")
            assert await page.evaluate("memory()") is None


async def test_the_chat_example_falls_back_to_sse(relay: DoorProcess, tmp_path: Path) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with middlebox(relay.port, upgrades="refuse") as box, chromium(tmp_path / "chromium") as browser:
            page = await browser.new_page(f"http://127.0.0.1:{box.port}/chat/index.html?room=fallback-chat")
            await join_chat(page, "Ann")
            assert await page.evaluate("document.body.dataset.transport") == "sse"
            url = f"ws://127.0.0.1:{relay.port}/c/fallback-chat"
            async with connect(url, alias="Py", announce=True) as py:
                await wait_for_text(page, "#members li", "Py", "Py in Ann's list")
                await py.send({"type": "chat", "text": "hello Ann"})
                await wait_for_text(page, "#log .msg", "hello Ann", "Py's line on Ann's page")
                await say(page, "hello Py")
                got = await next_event(py, Message)
                assert (got.alias, got.message) == ("Ann", {"type": "chat", "text": "hello Py"})
                await page.click("#leave")
                assert (await next_event(py, Leave)).alias == "Ann"
                await page.wait_for("document.body.dataset.state === 'closed'", "Ann's page to say she left")


async def test_events_have_the_stock_clients_shapes(relay: DoorProcess, tmp_path: Path) -> None:
    """Our client and the stock itty-sockets client (0.6.1, tests/js) in one channel get the same
    events for the same frames: a chat line (by its type and as a message), a string, an
    array, an object without a type, and the Python member's join and leave."""
    require(ITTY.is_file(), "tests/js/node_modules/itty-sockets is missing", "run `npm ci --prefix tests/js`")
    name = "fallback-shapes"
    ours, stock = seen(name, ""), seen(f"stock:{name}", "")
    with anyio.fail_after(TEST_TIMEOUT):
        async with middlebox(relay.port) as box, chromium(tmp_path / "chromium") as browser:
            page = await open_page(browser, box)
            await page.evaluate(f"join('{name}', {{ alias: 'Page', announce: true }})")
            await page.wait_for(f"{ours}opens === 1", "our client to open")
            await page.evaluate(f"stockJoin('{name}', {{ alias: 'Stock', announce: true }})")
            await page.wait_for(f"{stock}joins.some((e) => e.self)", "the stock client's self-join")
            async with connect(f"ws://127.0.0.1:{relay.port}/c/{name}", alias="Py", announce=True) as py:
                for message in ({"type": "chat", "text": "hi"}, "just text", [1, 2], {"text": "no type"}):
                    await py.send(message)
                await page.wait_for(f"{ours}messages.length === 4 && {stock}messages.length === 4", "4 messages each")
            left = f"{stock}leaves.length === 1 && {ours}events.some((e) => e.type === 'leave')"
            await page.wait_for(left, "Py's leave on both clients")
            py_presence = "((e) => e.alias === 'Py' && !e.message)"
            got = await page.evaluate(f"""({{
                ours: [{ours}messages, {ours}chats, {ours}events.filter({py_presence})],
                stock: [{stock}messages, {stock}chats, [...{stock}joins, ...{stock}leaves].filter({py_presence})],
            }})""")
    assert got["ours"] == got["stock"]
    messages, chats, presence = got["ours"]
    assert [event["message"] for event in messages] == [
        {"type": "chat", "text": "hi"},
        "just text",
        [1, 2],
        {"text": "no type"},
    ]
    assert chats == messages[:1] and messages[0]["text"] == "hi" and messages[3]["text"] == "no type"
    assert [event["type"] for event in presence] == ["join", "leave"]
