"""Origins and CORS behind every front door (``[server] allowed_origins``).

- A WebSocket upgrade from a page whose ``Origin`` is not allowed is refused with 403 and a
  plain-text body; an allowed origin, and a request without ``Origin`` (a program), open.
- The HTTP endpoints answer a page's preflight ``OPTIONS`` with the CORS headers when its
  origin is allowed (``*`` when any is), carry ``Access-Control-Allow-Origin`` on the real
  answer (errors included), say ``Vary: origin`` where the answer depends on it, and give a
  disallowed origin no CORS header at all; its push is refused 403 on the server's side too.
"""

from __future__ import annotations

import json

import pytest
from doors import refusal
from rawws import http, post, upgrade_status

from conftest import make_config, running

pytestmark = [pytest.mark.anyio, pytest.mark.doors]

PAGE = "http://127.0.0.1:5173"
OTHER = "http://evil.example"
RESTRICTED = f"""
[server]
allowed_origins = ["{PAGE}", "https://chat.example"]

[namespaces."myapp"]
send_key = "sk"
"""
OPEN = """
[namespaces."myapp"]
send_key = "sk"
"""


def preflight(path: str, origin: str, method: str = "POST") -> bytes:
    return (
        f"OPTIONS {path} HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n"
        f"Access-Control-Request-Method: {method}\r\n"
        "Access-Control-Request-Headers: content-type,x-send-key\r\n\r\n"
    ).encode()


def pushing(origin: str | None, body: bytes = b'{"n":1}', key: str = "sk") -> bytes:
    extra = f"x-send-key: {key}\r\n" + (f"Origin: {origin}\r\n" if origin else "")
    return post("/push/myapp:alerts", body, extra)


async def test_a_websocket_from_a_page_of_another_origin_is_refused_with_403(door: str) -> None:
    async with running(make_config(RESTRICTED), door=door) as relay:
        status, headers, body, rest = await refusal(relay.port, "/c/room", f"Origin: {OTHER}\r\n")
        assert (status, body) == (403, b"Origin not allowed.")
        assert headers["content-type"] == "text/plain; charset=utf-8"
        assert rest == b""
        # "null" (a sandboxed page or a file) is never an allowed origin.
        assert (await refusal(relay.port, "/c/room", "Origin: null\r\n"))[0] == 403
        # The page's own origin, in any case and with its default port spelled out: open.
        assert await upgrade_status(relay.port, "/c/room", f"Origin: {PAGE}\r\n") == 101
        assert await upgrade_status(relay.port, "/c/room", "Origin: HTTPS://Chat.Example:443\r\n") == 101
        # No Origin: a program, not a page.
        assert await upgrade_status(relay.port, "/c/room") == 101


async def test_any_origin_opens_by_default(door: str) -> None:
    async with running(make_config(OPEN), door=door) as relay:
        assert await upgrade_status(relay.port, "/c/room", f"Origin: {OTHER}\r\n") == 101


async def test_preflight_of_a_push_from_an_allowed_origin(door: str) -> None:
    async with running(make_config(RESTRICTED), door=door) as relay:
        status, headers, body = await http(relay.port, preflight("/push/myapp:alerts", PAGE))
        assert status == 204 and body == b""
        assert headers["access-control-allow-origin"] == PAGE
        assert "POST" in headers["access-control-allow-methods"]
        allowed = {name.strip() for name in headers["access-control-allow-headers"].split(",")}
        assert {"content-type", "x-send-key"} <= allowed
        assert int(headers["access-control-max-age"]) > 0
        assert "origin" in headers["vary"].lower()
        status, headers, body = await http(relay.port, pushing(PAGE))
        assert (status, json.loads(body)) == (200, {"ok": True, "recipients": 0})
        assert headers["access-control-allow-origin"] == PAGE and "origin" in headers["vary"].lower()
        # An error is readable by the page too.
        status, headers, body = await http(relay.port, pushing(PAGE, key="wrong"))
        assert status == 403 and headers["access-control-allow-origin"] == PAGE


async def test_a_disallowed_origin_gets_no_cors_header_and_cannot_push(door: str) -> None:
    async with running(make_config(RESTRICTED), door=door) as relay:
        status, headers, _ = await http(relay.port, preflight("/push/myapp:alerts", OTHER))
        assert status == 204
        assert not [name for name in headers if name.startswith("access-control-")], headers
        status, headers, body = await http(relay.port, pushing(OTHER))
        assert (status, json.loads(body)) == (403, {"ok": False, "error": "Origin not allowed."})
        assert "access-control-allow-origin" not in headers


async def test_any_origin_is_answered_with_a_star(door: str) -> None:
    async with running(make_config(OPEN), door=door) as relay:
        status, headers, _ = await http(relay.port, preflight("/push/myapp:alerts", OTHER))
        assert status == 204 and headers["access-control-allow-origin"] == "*"
        status, headers, _ = await http(relay.port, pushing(OTHER))
        assert status == 200 and headers["access-control-allow-origin"] == "*"
        for path in ("/health", "/version"):
            request = f"GET {path} HTTP/1.1\r\nHost: x\r\nOrigin: {OTHER}\r\n\r\n".encode()
            status, headers, _ = await http(relay.port, request)
            assert status == 200 and headers["access-control-allow-origin"] == "*", path
            status, headers, _ = await http(relay.port, preflight(path, OTHER, "GET"))
            assert status == 204 and "GET" in headers["access-control-allow-methods"], path


async def test_health_reads_for_an_allowed_page_only(door: str) -> None:
    async with running(make_config(RESTRICTED), door=door) as relay:
        for origin, allowed in ((PAGE, True), (OTHER, False)):
            request = f"GET /health HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n\r\n".encode()
            status, headers, _ = await http(relay.port, request)
            assert status == 200 and "origin" in headers["vary"].lower()
            assert headers.get("access-control-allow-origin") == (origin if allowed else None)
