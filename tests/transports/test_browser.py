"""``GET /client.js`` (transports._browser): the browser client, served by every door.

- Behind every front door, ``GET /client.js`` answers the shipped script as JavaScript
  (``text/javascript; charset=utf-8``, ``nosniff``, revalidated on each load), with the
  CORS headers of the other HTTP endpoints: ``*`` by default, the page's own origin when
  ``allowed_origins`` lists it, none for another page. A preflight is answered; another
  method is 405.
- The path is the relay's own: a ``client.js`` in ``static_dir`` never takes its place,
  in any percent-encoding, while the other files are served.

The script's behaviour in a browser is tested in ``tests/browser/test_fallback_client.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rawws import http

from conftest import make_config, running
from relaycore import Config, Hub
from relaycore.testing import FakeClock, seeded_uids
from transports._browser import ClientScript
from transports._door import door_parts

pytestmark = [pytest.mark.anyio, pytest.mark.doors]

SCRIPT = (Path(__file__).resolve().parents[2] / "src" / "transports" / "client.js").read_bytes()
PAGE = "http://127.0.0.1:5173"
OTHER = "http://evil.example"
RESTRICTED = f'[server]\nallowed_origins = ["{PAGE}"]\n'


def get(path: str, origin: str | None = None, method: str = "GET") -> bytes:
    extra = f"Origin: {origin}\r\n" if origin else ""
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


async def test_every_door_serves_the_script_with_cors(door: str) -> None:
    async with running(make_config(), door=door) as relay:
        status, headers, body = await http(relay.port, get("/client.js", OTHER))
        assert (status, body) == (200, SCRIPT)
        assert headers["content-type"] == "text/javascript; charset=utf-8"
        assert headers["x-content-type-options"] == "nosniff" and headers["cache-control"] == "no-cache"
        assert headers["access-control-allow-origin"] == "*"
        assert b"export function connect" in body
        status, headers, _ = await http(relay.port, get("/client.js", OTHER, "OPTIONS"))
        assert status == 204 and "GET" in headers["access-control-allow-methods"]
        status, headers, body = await http(relay.port, get("/client.js", method="POST"))
        assert (status, body) == (405, b"Method not allowed.") and headers["allow"] == "GET, HEAD, OPTIONS"


async def test_the_script_reads_for_an_allowed_page_only(door: str) -> None:
    async with running(make_config(RESTRICTED), door=door) as relay:
        for origin, allowed in ((PAGE, True), (OTHER, False)):
            status, headers, body = await http(relay.port, get("/client.js", origin))
            assert (status, body) == (200, SCRIPT)
            assert "origin" in headers["vary"].lower()
            assert headers.get("access-control-allow-origin") == (origin if allowed else None)


def test_a_static_file_never_takes_the_scripts_place(tmp_path: Path) -> None:
    (tmp_path / "client.js").write_text("// not the relay's")
    (tmp_path / "app.js").write_text("// the app's")
    hub = Hub(Config.from_toml(f'[server]\nstatic_dir = "{tmp_path}"\n', env={}), FakeClock(), seeded_uids(0))
    routes = door_parts(hub, lambda: None).routes
    assert routes is not None
    for path in (b"/client.js", b"/client%2Ejs", b"/%63lient.js"):
        answer = routes(b"GET", path, [])
        assert answer is not None and answer.body == SCRIPT, path
    answer = routes(b"GET", b"/app.js", [])
    assert answer is not None and answer.body == b"// the app's"


def test_head_answers_the_scripts_headers() -> None:
    script = ClientScript(Hub(Config(), FakeClock(), seeded_uids(0)))
    answer = script.answer(b"HEAD", [(b"origin", PAGE.encode())])
    assert answer.status == 200 and dict(answer.headers)[b"access-control-allow-origin"] == b"*"
