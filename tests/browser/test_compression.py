"""Chromium's own WebSocket with permessage-deflate, against the native server.

Chromium offers the extension on every WebSocket; the relay answers without context
takeover both ways. Two sockets in one page each send a state message of a few KB (which
Chromium sends compressed) and read the other's, which the relay sends compressed, once
for both of them.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from cdp import chromium

from conftest import make_config, running
from relaycore._deflate import DeflateForm

pytestmark = pytest.mark.anyio

ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

EXCHANGE = """
(async () => {
  const url = %s
  const open = () => new Promise((resolve, reject) => {
    const ws = new WebSocket(url)
    const frames = []
    ws.onmessage = (e) => frames.push(JSON.parse(e.data))
    ws.onopen = () => resolve({ ws, frames })
    ws.onerror = () => reject(new Error('the WebSocket failed'))
  })
  const until = async (test) => {
    for (let i = 0; i < 200 && !test(); i++) await new Promise((r) => setTimeout(r, 10))
    if (!test()) throw new Error('timed out')
  }
  const a = await open()
  const b = await open()
  await until(() => a.frames.length >= 2 && b.frames.length >= 1)
  const row = (i) => ({ id: 'p' + i, x: i * 1.5, hp: i %% 90 })
  const board = (who) => ({ type: 'state', who, rows: Array.from({ length: 60 }, (_, i) => row(i)) })
  a.ws.send(JSON.stringify(board('a')))
  b.ws.send(JSON.stringify(board('b')))
  const relayed = (c) => c.frames.find((f) => f.message && f.message.type === 'state')
  await until(() => relayed(a) && relayed(b))
  return {
    extensions: [a.ws.extensions, b.ws.extensions],
    got: [relayed(a).message, relayed(b).message],
    expected: [board('b'), board('a')],
  }
})()
"""


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only: the DevTools client is python-websockets, which is asyncio's."""
    return "asyncio"


async def test_chromium_negotiates_deflate_and_exchanges_compressed_messages(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with running(make_config()) as relay, chromium(tmp_path / "chromium") as browser:
            page = await browser.new_page("about:blank")
            url = f"ws://127.0.0.1:{relay.port}/c/chromium-deflate"
            result = await page.evaluate(EXCHANGE % json.dumps(url))
            members = relay.hub.channels["chromium-deflate"].members.values()
            forms = {member.outbox.form for member in members}
    assert result["extensions"] == [ANSWER, ANSWER]
    assert len(forms) == 1 and isinstance(forms.pop(), DeflateForm)  # one parameter set for both
    assert result["got"] == result["expected"]
