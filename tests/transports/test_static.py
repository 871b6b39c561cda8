"""Static files at ``/`` (``[server] static_dir``, ``relaycore serve --static DIR``), behind
the native server and uvicorn: content types, ``index.html``, HEAD, only safe paths, and the
relay's own paths first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from doors import NATIVE_DOORS, Relay, raw_peer
from rawws import http, upgrade_status
from wsclient import clients, recv_json

from conftest import make_config, running
from relaycore import Config, ConfigError
from transports.static import MAX_BYTES, StaticFiles

pytestmark = [pytest.mark.anyio, pytest.mark.doors(*NATIVE_DOORS, "uvicorn")]

BIG = 3 * 1024 * 1024 + 17  # over outbound_buffer_bytes: the answer is queued in pieces

FILES = {
    "index.html": b"<!doctype html><title>relay</title>",
    "app.js": b"console.log('hi')",
    "style.css": b"body{}",
    "data.json": b'{"a":1}',
    "logo.png": b"\x89PNG\r\n\x1a\n",
    "blob.unknownext": b"\x00\x01",
    "docs/index.html": b"<p>docs</p>",
    "docs/page one.txt": "é".encode(),
    "empty/.keep": b"",
    ".hidden": b"hidden",
    ".git/config": b"[core]",
    "docs/.env": b"SECRET=1",
    "health": b"not the relay's health",
    "version": b"not the relay's version",
    "metrics": b"not the metrics",
    "echo": b"not the echo",
    "c/room": b"not a channel",
    "push/room": b"not a push",
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("static")
    (base / "secret.txt").write_bytes(b"outside the site")
    root = base / "site"
    for name, data in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "big.bin").write_bytes(bytes(range(256)) * (BIG // 256) + b"x" * (BIG % 256))
    with open(root / "huge.bin", "wb") as huge:  # sparse: over the cap without the disk space
        huge.truncate(MAX_BYTES + 1)
    (root / "escape.txt").symlink_to(base / "secret.txt")
    (root / "outside").symlink_to(base)
    (root / "inside.txt").symlink_to(root / "data.json")
    (root / "to-hidden").symlink_to(root / ".git" / "config")
    yield root


@pytest.fixture
def config(site: Path) -> Config:
    config = make_config()
    config.server.static_dir = str(site)
    return config


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()


async def status_of(port: int, path: str) -> int:
    return (await http(port, get(path)))[0]


@pytest.mark.parametrize(
    ("path", "content_type", "name"),
    [
        ("/", "text/html; charset=utf-8", "index.html"),
        ("/index.html", "text/html; charset=utf-8", "index.html"),
        ("/app.js", "text/javascript; charset=utf-8", "app.js"),
        ("/style.css", "text/css; charset=utf-8", "style.css"),
        ("/data.json", "application/json; charset=utf-8", "data.json"),
        ("/logo.png", "image/png", "logo.png"),
        ("/blob.unknownext", "application/octet-stream", "blob.unknownext"),
        ("/docs/", "text/html; charset=utf-8", "docs/index.html"),
        ("/docs/page%20one.txt", "text/plain; charset=utf-8", "docs/page one.txt"),
        ("/inside.txt", "text/plain; charset=utf-8", "data.json"),  # a link inside the site
        ("/app.js?v=3", "text/javascript; charset=utf-8", "app.js"),
    ],
)
async def test_files_are_served_with_their_content_type(relay: Relay, path: str, content_type: str, name: str) -> None:
    status, headers, body = await http(relay.port, get(path))
    assert status == 200
    assert headers["content-type"] == content_type
    assert headers["x-content-type-options"] == "nosniff"
    assert body == FILES[name]


async def test_a_directory_without_its_slash_is_redirected(relay: Relay) -> None:
    status, headers, _ = await http(relay.port, get("/docs"))
    assert status == 301 and headers["location"] == "docs/"


async def test_head_says_the_length_and_sends_no_body(relay: Relay) -> None:
    async with raw_peer(relay.port) as peer:
        await peer.send(get("/app.js", "HEAD"))
        head = await peer.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert f"content-length: {len(FILES['app.js'])}".encode() in head.lower()
        assert await peer.read_to_eof() == b""


@pytest.mark.parametrize(
    "path",
    [
        "/missing.html",
        "/empty/",  # a directory without index.html: no listing
        "/../secret.txt",
        "/docs/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/docs/%2e%2e/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/docs%2findex.html",  # an encoded slash, even to a file that exists
        "/docs%5cindex.html",
        "/docs//index.html",
        "/./index.html",
        "/escape.txt",  # a link to a file outside
        "/outside/secret.txt",  # through a link to a directory outside
        "/to-hidden",  # a link to a dotfile inside
        "/.hidden",
        "/%2ehidden",
        "/.git/config",
        "/docs/.env",
        "/empty/.keep",
        "/huge.bin",  # over the size cap
        "/index.html%00.png",
        "/%ff.html",  # not UTF-8
    ],
)
async def test_unsafe_and_missing_paths_are_404(relay: Relay, path: str) -> None:
    status, _, body = await http(relay.port, get(path))
    assert status == 404, path
    assert body == b"Not found."


async def test_other_methods_on_a_file_are_405(relay: Relay) -> None:
    status, headers, _ = await http(relay.port, b"DELETE /app.js HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert status == 405 and headers["allow"] == "GET, HEAD"


async def test_the_relays_own_paths_win_over_files(relay: Relay) -> None:
    port = relay.port
    status, headers, body = await http(port, get("/health"))
    assert status == 200 and headers["content-type"] == "application/json" and b'"status":"ok"' in body
    assert (await http(port, get("/version")))[2].startswith(b"relaycore ")
    assert await status_of(port, "/metrics") == 404  # metrics are off: still the relay's path
    assert await status_of(port, "/echo") == 404
    assert await status_of(port, "/%65cho") == 404
    assert await status_of(port, "/c/room") == 426
    assert await status_of(port, "/%63/room") == 404  # /c/room, encoded: not a file either
    assert await status_of(port, "/push/room") == 405
    assert await upgrade_status(port, "/index.html") == 404  # a file is no WebSocket
    async with clients(port) as connect:
        member = await connect("/c/room")
        assert (await recv_json(member))["self"] is True


async def test_a_large_file_arrives_whole(relay: Relay, site: Path) -> None:
    status, headers, body = await http(relay.port, get("/big.bin"))
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    assert body == (site / "big.bin").read_bytes()


@pytest.mark.doors(*NATIVE_DOORS)
async def test_a_websocket_after_a_large_file_on_the_same_connection_is_not_a_slow_consumer(relay: Relay) -> None:
    async with raw_peer(relay.port) as peer:
        await peer.send(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = await peer.response()
        assert status == 200 and len(body) == BIG
        status, _ = await peer.upgrade("/c/room")
        assert status == 101
        assert (await peer.read_json())["self"] is True
        await peer.send(b"\x81\x84\x00\x00\x00\x00" + b'"hi"')
        with pytest.raises(TimeoutError):  # no close frame, no error: just quiet
            await peer.read_frame(timeout=0.3)


@pytest.mark.doors(*NATIVE_DOORS)
async def test_static_files_are_off_by_default(anyio_backend: str) -> None:
    async with running(make_config()) as relay:
        assert await status_of(relay.port, "/") == 404
        assert await status_of(relay.port, "/index.html") == 404


def test_a_static_dir_that_is_not_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="static_dir"):
        StaticFiles(tmp_path / "nowhere")
    result = subprocess.run(
        [sys.executable, "-m", "transports", "serve", "--port", "0", "--static", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={name: value for name, value in os.environ.items() if not name.startswith("RELAYCORE_")},
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"relaycore: `server.static_dir`: {str(tmp_path / 'nowhere')!r} is not a directory"
