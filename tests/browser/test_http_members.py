"""Chromium's own ``EventSource`` and ``fetch`` as members over the HTTP door, beside WebSockets.

The relay runs in a process of its own (``relaycore serve`` on asyncio and on trio, and the
ASGI app under uvicorn, see ``relays.py``); the page comes from Python's ``http.server`` on
another port, so every request it makes to the relay is cross-origin and goes by CORS. In
one channel:

- ``Py``, a Python WebSocket member (``transports.client``), joins first;
- ``Sse``, an ``EventSource`` on ``/c/<channel>`` (the ``session`` event gives the token),
  and ``Poll``, a long-poll member (``fetch`` with ``Accept: application/json``, the token
  read from the ``relay-session`` header, which the relay exposes to the page), both
  announced, join from the page; each posts with ``fetch`` to ``/s/<token>``.

Presence (self-joins with the running total, joins seen by the others), a broadcast from
each member reaching the two others with its sender's uid and alias, a direct message each
way between ``Py`` and ``Sse`` that ``Poll`` never gets, ``Poll`` leaving with ``DELETE`` (its
next poll is a 404), and ``Sse`` pushing a last message with ``?close``: ``Py`` gets it before
``Sse``'s leave, and the stream ends with the named ``close`` event; the token then is a 404.
Every step has a deadline.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
import pytest
from cdp import Page, chromium
from relays import BROWSER_DOORS, DoorProcess, relay_process
from test_chat import static_server

from conftest import make_config
from transports.client import Channel, Join, Leave, Message, connect

pytestmark = pytest.mark.anyio

CHANNEL = "http-door"
TEST_TIMEOUT = 40.0
STEP_TIMEOUT = 5.0

PAGE = """\
<!doctype html>
<meta charset="utf-8">
<title>members over plain HTTP</title>
<body>
<script>
// Members of the relay's HTTP door, on the browser's own EventSource and fetch.
const relay = new URLSearchParams(location.search).get('relay')
const members = {}

function sseMember (name, channel, query) {
  const member = members[name] = { frames: [], token: null, closed: null }
  const source = new EventSource(`${relay}/c/${channel}?${query}`)
  source.addEventListener('session', (event) => { member.token = JSON.parse(event.data).token })
  source.onmessage = (event) => member.frames.push(JSON.parse(event.data))
  // The relay ended the stream: say why, and do not let the EventSource join again.
  source.addEventListener('close', (event) => { member.closed = JSON.parse(event.data); source.close() })
}

async function pollMember (name, channel, query) {
  const member = members[name] = { frames: [], token: null, ended: false }
  const first = await fetch(`${relay}/c/${channel}?${query}`, { headers: { accept: 'application/json' } })
  member.token = first.headers.get('relay-session')
  member.frames.push(...await first.json())
  ;(async () => {
    for (;;) {
      const answer = await fetch(`${relay}/s/${member.token}`, { cache: 'no-store' })
      if (answer.status === 404) return (member.ended = true)
      member.frames.push(...await answer.json())
    }
  })()
  return first.status
}

async function post (name, message, query = '') {
  const url = `${relay}/s/${members[name].token}${query}`
  return (await fetch(url, { method: 'POST', body: JSON.stringify(message) })).status
}

async function leave (name) {
  return (await fetch(`${relay}/s/${members[name].token}`, { method: 'DELETE' })).status
}
document.body.dataset.state = 'ready'
</script>
"""


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only: the DevTools client is python-websockets, which is asyncio's."""
    return "asyncio"


@pytest.fixture(scope="module", params=BROWSER_DOORS)
def relay(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DoorProcess]:
    with relay_process(request.param, make_config(), tmp_path_factory.mktemp("relay")) as process:
        yield process


async def next_event(member: Channel, kind: type[Any]) -> Any:
    """The Python member's next event of ``kind`` (others skipped)."""
    with anyio.fail_after(STEP_TIMEOUT):
        while not isinstance(event := await member.receive(), kind):
            pass
        return event


async def frame(page: Page, name: str, test: str, what: str) -> Any:
    """The first frame of the page's member ``name`` for which the JS ``test`` (of ``f``) holds."""
    return await page.wait_for(f"members[{json.dumps(name)}].frames.find((f) => {test})", what)


def relayed(text: str) -> str:
    return f"f.message && f.message.text === {json.dumps(text)}"


async def test_eventsource_and_fetch_members_with_a_websocket_member(relay: DoorProcess, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(PAGE)
    with static_server(site) as page_port, anyio.fail_after(TEST_TIMEOUT):
        async with (
            chromium(tmp_path / "chromium") as browser,
            connect(f"ws://127.0.0.1:{relay.port}/c/{CHANNEL}", alias="Py", announce=True) as py,
        ):
            page = await browser.new_page(f"http://127.0.0.1:{page_port}/?relay=http://127.0.0.1:{relay.port}")
            await page.wait_for("document.body && document.body.dataset.state === 'ready'", "the page")
            uids = await presence(page, py)
            await broadcasts(page, py, uids)
            await direct_messages(page, py, uids["Sse"])
            await leaving(page, py, uids)


async def presence(page: Page, py: Channel) -> dict[str, str]:
    """Sse, then Poll, join with the running total; the others see each come, named. Their uids."""
    sse_query = urlencode({"announce": "true", "alias": "Sse"})
    await page.evaluate(f"sseMember('Sse', '{CHANNEL}', '{sse_query}')")
    sse = await frame(page, "Sse", "f.type === 'join' && f.self", "Sse's self-join")
    assert (sse["alias"], sse["total"]) == ("Sse", 2)
    assert await page.wait_for("members.Sse.token", "Sse's session event")
    came = await next_event(py, Join)
    assert (came.uid, came.alias, came.total) == (sse["uid"], "Sse", 2)

    poll_query = urlencode({"announce": "true", "alias": "Poll"})
    assert await page.evaluate(f"pollMember('Poll', '{CHANNEL}', '{poll_query}')") == 200
    poll = await frame(page, "Poll", "f.type === 'join' && f.self", "Poll's self-join")
    assert (poll["alias"], poll["total"]) == ("Poll", 3)
    assert await page.evaluate("members.Poll.token")  # the exposed relay-session header
    assert (await next_event(py, Join)).uid == poll["uid"]
    seen = await frame(page, "Sse", f"f.type === 'join' && f.uid === '{poll['uid']}'", "Poll's join on Sse")
    assert seen["total"] == 3
    return {"Sse": sse["uid"], "Poll": poll["uid"]}


async def broadcasts(page: Page, py: Channel, uids: dict[str, str]) -> None:
    """A broadcast from each member reaches the two others, with its sender's uid and alias."""
    await py.send({"text": "from py"})
    for name in ("Sse", "Poll"):
        got = await frame(page, name, relayed("from py"), f"Py's message on {name}")
        assert (got["uid"], got["alias"], got["message"]) == (py.uid, "Py", {"text": "from py"})
        assert "type" not in got and isinstance(got["date"], int)
    for name, other in (("Sse", "Poll"), ("Poll", "Sse")):
        assert await page.evaluate(f"post('{name}', {{ text: 'from {name}' }})") == 204
        got_py = await next_event(py, Message)
        assert (got_py.uid, got_py.alias, got_py.message) == (uids[name], name, {"text": f"from {name}"})
        got = await frame(page, other, relayed(f"from {name}"), f"{name}'s message on {other}")
        assert got["uid"] == uids[name]


async def direct_messages(page: Page, py: Channel, sse_uid: str) -> None:
    """Between Py and Sse, each way; Poll gets neither (the marker after them is its next frame)."""
    await py.send({"text": "py to sse"}, to=sse_uid)
    assert (await frame(page, "Sse", relayed("py to sse"), "Py's DM on Sse"))["uid"] == py.uid
    status = await page.evaluate(f"post('Sse', {{ text: 'sse to py' }}, '?to={py.uid}')")
    assert status == 204 and (await next_event(py, Message)).message == {"text": "sse to py"}
    await py.send({"text": "marker"})
    await frame(page, "Poll", relayed("marker"), "the marker on Poll")
    texts = await page.evaluate("members.Poll.frames.map((f) => f.message && f.message.text)")
    assert "py to sse" not in texts and "sse to py" not in texts


async def leaving(page: Page, py: Channel, uids: dict[str, str]) -> None:
    """Poll leaves with DELETE (its next poll is a 404); Sse pushes a last message with ?close:
    Py gets it before Sse's leave, the stream ends with the named close event."""
    assert await page.evaluate("leave('Poll')") == 204
    gone = await next_event(py, Leave)
    assert (gone.uid, gone.total) == (uids["Poll"], 2)
    await page.wait_for("members.Poll.ended", "Poll's 404")

    assert await page.evaluate("post('Sse', { text: 'bye' }, '?close')") == 204
    assert (await next_event(py, Message)).message == {"text": "bye"}
    left = await next_event(py, Leave)
    assert (left.uid, left.total) == (uids["Sse"], 1)
    closed = await page.wait_for("members.Sse.closed", "the named close event on Sse")
    assert closed["code"] == 1000
    assert await page.evaluate("post('Sse', { text: 'too late' })") == 404
