"""WebSockets over HTTP/2 (RFC 8441): headless Chromium and a raw h2 client, through hypercorn.

``hypercorn --certfile --keyfile`` speaks HTTP/2 over TLS (ALPN ``h2``) and advertises
``SETTINGS_ENABLE_CONNECT_PROTOCOL``, so a client that has an h2 connection to it asks for a
WebSocket with an *extended CONNECT* (``:method CONNECT``, ``:protocol websocket``): no
``Upgrade``, ``Connection`` or ``Sec-WebSocket-Key`` header, and an ASGI scope whose
``http_version`` is ``"2"``. The relay must accept that as a WebSocket.

Hypercorn serves the relay wrapped in ``scope_app.py``, which records the ``http_version``
(and ``Origin``) of every WebSocket scope in a file, with ``[server] static_dir`` serving a
small page and the stock itty-sockets client (``connect.mjs``) at ``/``, and with
``allowed_origins`` set to the page's own origin. Certificates come from a throwaway CA
(trustme); Chromium trusts the server's key by its SPKI hash. Once on each hypercorn worker
(asyncio, trio):

- the page loads over h2 (``nextHopProtocol``), joins a channel with the itty-sockets client,
  and chats both ways with a Python member (``transports.client`` over wss, HTTP/1.1): the
  join, a broadcast each way, a direct message from the page, the page's leave. Its
  WebSocket scope said ``http_version`` ``"2"`` and the page's origin;
- an ``h2``-library client (no browser): the server's SETTINGS enable extended CONNECT; an
  extended CONNECT to ``/c/<channel>`` gets ``:status 200`` and, as its first WebSocket
  frame, the relay's self-join; the same with an ``origin`` that ``allowed_origins`` does not
  list gets 403 ``Origin not allowed.``; a masked close frame is answered with a close.

Every wait has a deadline; hypercorn is stopped by pid (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
import trustme
from anyio.streams.tls import TLSAttribute
from cdp import chromium
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from scope_app import SCOPE_LOG

from prerequisites import require
from transports.client import Message, connect

pytestmark = pytest.mark.anyio

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ITTY = REPO / "tests" / "js" / "node_modules" / "itty-sockets" / "connect.mjs"
TEST_TIMEOUT = 30.0  # a whole test; each takes a few seconds
START_TIMEOUT = 20.0  # for hypercorn to answer /health
STOP_TIMEOUT = 5.0
STEP_TIMEOUT = 5.0  # any one exchange

E = TypeVar("E", bound=h2.events.Event)

PAGE = """\
<!doctype html>
<meta charset="utf-8">
<title>relaycore over HTTP/2</title>
<ul id="log"></ul>
<script type="module">
import { connect } from './connect.mjs'

const channelName = new URLSearchParams(location.search).get('channel')
const log = document.querySelector('#log')
const state = window.state = { self: null, joins: [], leaves: [], messages: [], errors: [], closes: 0 }
const line = text => log.appendChild(document.createElement('li')).textContent = text

const channel = window.channel = connect(`wss://${location.host}/c/${channelName}`, { alias: 'Page', announce: true })
channel
  .on('join', event => {
    if (event.self) state.self = event
    else state.joins.push(event)
    line(`join ${event.alias ?? '?'}`)
  })
  .on('leave', event => { state.leaves.push(event); line(`leave ${event.alias ?? '?'}`) })
  .on('message', event => { state.messages.push(event); line(`${event.alias}: ${JSON.stringify(event.message)}`) })
  .on('error', event => state.errors.push(event))
  .on('close', () => state.closes++)
document.body.dataset.state = 'loaded'
</script>
"""


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only: the DevTools client is python-websockets, which is asyncio's."""
    return "asyncio"


# -- certificates ------------------------------------------------------------------------------


@dataclass
class Certificates:
    ca: trustme.CA
    certfile: Path
    keyfile: Path
    spki: str  # base64 SHA-256 of the server's SubjectPublicKeyInfo, for Chromium

    def client_context(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        if alpn:
            context.set_alpn_protocols(alpn)
        return context


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(keyfile))
    leaf = x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes())
    spki = leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return Certificates(ca, certfile, keyfile, base64.b64encode(digest.finalize()).decode())


# -- hypercorn ---------------------------------------------------------------------------------


@dataclass
class Hypercorn:
    worker: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    scope_log: Path

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def scopes(self, path: str) -> list[dict[str, Any]]:
        """The recorded WebSocket scopes of ``path``, oldest first."""
        if not self.scope_log.exists():
            return []
        lines = [json.loads(text) for text in self.scope_log.read_text().splitlines() if text]
        return [line for line in lines if line["path"] == path]

    def stop(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGKILL):
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.process.pid, signum)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_TIMEOUT)
                return


def _health(port: int, context: ssl.SSLContext) -> int:
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=1.0)
    try:
        connection.request("GET", "/health")
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def start_hypercorn(worker: str, directory: Path, site: Path, certificates: Certificates) -> Hypercorn:
    """hypercorn -k ``worker`` over TLS, serving ``scope_app:app``; ready (``/health`` 200)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        port = listener.getsockname()[1]
        config_path = directory / f"relay-{worker}.toml"
        # Only the page's own origin may open WebSockets; the connection rates are raised (every
        # client here is 127.0.0.1, and those limits have tests of their own).
        config_path.write_text(
            f"[server]\nstatic_dir = {json.dumps(str(site))}\n"
            f'allowed_origins = ["https://127.0.0.1:{port}"]\n'
            "[limits]\nconnections_per_second_per_ip = 100000.0\npushes_per_second_per_ip = 100000.0\n"
        )
        env = {name: value for name, value in os.environ.items() if not name.startswith("RELAYCORE_")}
        env["RELAYCORE_CONFIG"] = str(config_path)
        env[SCOPE_LOG] = str(directory / f"scopes-{worker}.jsonl")
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        log_path = directory / f"hypercorn-{worker}.log"
        with log_path.open("wb") as log:
            # fmt: off
            command = [
                sys.executable, "-m", "hypercorn", "-k", worker, "-w", "0", "--bind", f"fd://{listener.fileno()}",
                "--certfile", str(certificates.certfile), "--keyfile", str(certificates.keyfile),
                "--log-level", "info", "scope_app:app",
            ]
            # fmt: on
            process = subprocess.Popen(
                command,
                pass_fds=[listener.fileno()],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
    finally:
        listener.close()  # the child has its own copy
    server = Hypercorn(worker, process, port, log_path, Path(env[SCOPE_LOG]))
    context = certificates.client_context()
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while True:
            if process.poll() is not None:
                raise AssertionError(f"hypercorn -k {worker} exited with {process.returncode}:\n{server.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if _health(port, context) == 200:
                    return server
            if time.monotonic() > deadline:
                raise AssertionError(f"hypercorn -k {worker}: no /health after {START_TIMEOUT} s:\n{server.log_tail()}")
            time.sleep(0.05)
    except BaseException:
        server.stop()
        raise


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The static directory: the test page and the stock itty-sockets ES module beside it."""
    directory = tmp_path_factory.mktemp("site")
    (directory / "index.html").write_text(PAGE)
    if ITTY.is_file():  # else the browser test skips; the h2 probe needs no page
        shutil.copy(ITTY, directory / "connect.mjs")
    return directory


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, site: Path, certificates: Certificates
) -> Iterator[Hypercorn]:
    """hypercorn on one of its workers, over TLS with h2, for the module's tests."""
    process = start_hypercorn(request.param, tmp_path_factory.mktemp("hypercorn"), site, certificates)
    try:
        yield process
    finally:
        process.stop()


# -- Chromium and the stock itty-sockets client --------------------------------------------------


async def next_message(channel: Any, what: str) -> Message:
    """The channel's next relayed message (joins and leaves skipped), within STEP_TIMEOUT."""
    with anyio.fail_after(STEP_TIMEOUT):
        while True:
            event = await channel.receive()
            if isinstance(event, Message):
                return event
            if event.type == "error":
                raise AssertionError(f"error while waiting for {what}: {event}")


async def test_chromium_itty_sockets_over_http2(server: Hypercorn, certificates: Certificates, tmp_path: Path) -> None:
    require(ITTY.is_file(), "tests/js/node_modules/itty-sockets is missing", "npm ci --prefix tests/js")
    name = f"h2-{server.worker}"
    path = f"/c/{name}"
    flags = [f"--ignore-certificate-errors-spki-list={certificates.spki}"]
    with anyio.fail_after(TEST_TIMEOUT):
        async with chromium(tmp_path / "chromium", flags=flags) as browser:
            page = await browser.new_page(f"{server.origin}/index.html?channel={name}")
            try:
                await page.wait_for("window.state && state.self", "the page's self-join", STEP_TIMEOUT)
            except AssertionError as exc:
                state = await page.evaluate("JSON.stringify(window.state)")
                raise AssertionError(
                    f"{exc}\npage: {state}\nscopes: {server.scopes(path)}\n{server.log_tail()}"
                ) from None
            # The page came over HTTP/2: the connection Chromium then asks the WebSocket on.
            protocol = await page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol")
            assert protocol == "h2", protocol
            page_self = await page.evaluate("state.self")
            assert page_self["alias"] == "Page" and page_self["total"] == 1, page_self

            url = f"wss://127.0.0.1:{server.port}{path}"
            async with connect(url, alias="Py", announce=True, ssl=certificates.client_context()) as member:
                assert member.total == 2
                # The Python member's join, on the page.
                joined = await page.wait_for("state.joins[0]", "Py's join on the page", STEP_TIMEOUT)
                assert joined["uid"] == member.uid and joined["alias"] == "Py" and joined["total"] == 2, joined

                # Python -> page.
                await member.send({"type": "chat", "text": "hello page"})
                got = await page.wait_for("state.messages[0]", "Py's line on the page", STEP_TIMEOUT)
                assert got["message"] == {"type": "chat", "text": "hello page"}, got
                assert got["uid"] == member.uid and got["alias"] == "Py" and isinstance(got["date"], int), got

                # Page -> Python: a broadcast, then a direct message (the \\x1f<uid>\\x1f<json> frame).
                await page.evaluate("channel.send({type: 'chat', text: 'hello python'})")
                message = await next_message(member, "the page's broadcast")
                assert message.message == {"type": "chat", "text": "hello python"}
                assert message.uid == page_self["uid"] and message.alias == "Page"
                await page.evaluate(f"channel.send({{type: 'dm', text: 'just you'}}, {json.dumps(member.uid)})")
                message = await next_message(member, "the page's direct message")
                assert message.message == {"type": "dm", "text": "just you"} and message.uid == page_self["uid"]

                # The page leaves: Python sees it go.
                await page.evaluate("channel.close()")
                with anyio.fail_after(STEP_TIMEOUT):
                    while (event := await member.receive()).type != "leave":
                        pass
                assert event.uid == page_self["uid"] and event.total == 1, event
                await page.wait_for("state.closes === 1", "the page's close", STEP_TIMEOUT)
                assert await page.evaluate("state.errors") == []

    # The proof: the page's WebSocket was an extended CONNECT over HTTP/2 (the Python
    # member's, an HTTP/1.1 upgrade), and it carried the page's (allowed) origin.
    scopes = server.scopes(path)
    browser_scopes = [scope for scope in scopes if scope["origin"] is not None]
    assert browser_scopes == [{"path": path, "http_version": "2", "origin": server.origin}], scopes
    assert [scope["http_version"] for scope in scopes if scope["origin"] is None] == ["1.1"], scopes


# -- a raw h2 client -----------------------------------------------------------------------------


class H2Client:
    """One TLS connection speaking HTTP/2 with the ``h2`` library, every read bounded."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.events: list[h2.events.Event] = []

    async def flush(self) -> None:
        data = self.connection.data_to_send()
        if data:
            await self.stream.send(data)

    async def wait(self, what: str, kind: type[E], stream_id: int | None = None) -> E:
        """Read until an event of ``kind`` (on ``stream_id``) comes; return it (others are kept)."""
        with anyio.fail_after(STEP_TIMEOUT):
            while True:
                for index, event in enumerate(self.events):
                    if isinstance(event, kind) and (
                        stream_id is None or getattr(event, "stream_id", None) == stream_id
                    ):
                        self.events.pop(index)
                        return event
                try:
                    data = await self.stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    raise AssertionError(f"the server closed the connection while waiting for {what}") from None
                self.events += self.connection.receive_data(data)
                await self.flush()  # settings acks, window updates

    def ended(self, stream_id: int) -> bool:
        """Whether the server ended ``stream_id`` (in what was read so far)."""
        return any(isinstance(e, h2.events.StreamEnded) and e.stream_id == stream_id for e in self.events)

    async def response(self, stream_id: int) -> dict[bytes, bytes]:
        event = await self.wait(f"the response on stream {stream_id}", h2.events.ResponseReceived, stream_id)
        return {bytes(name): bytes(value) for name, value in event.headers or []}

    async def data(self, stream_id: int) -> bytes:
        event = await self.wait(f"data on stream {stream_id}", h2.events.DataReceived, stream_id)
        assert event.flow_controlled_length is not None and event.data is not None
        self.connection.acknowledge_received_data(event.flow_controlled_length, stream_id)
        return bytes(event.data)

    async def extended_connect(self, port: int, path: str, headers: list[tuple[str, str]] = []) -> int:  # noqa: B006
        stream_id = self.connection.get_next_available_stream_id()
        request = [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "https"),
            (":path", path),
            (":authority", f"127.0.0.1:{port}"),
            ("sec-websocket-version", "13"),
            *headers,
        ]
        self.connection.send_headers(stream_id, request)
        await self.flush()
        return stream_id


def read_frame(buffer: bytes) -> tuple[int, bytes, bytes] | None:
    """(opcode, payload, rest) of the first complete server WebSocket frame in ``buffer``."""
    if len(buffer) < 2:
        return None
    assert buffer[0] & 0x80, "a fragmented frame"
    assert not buffer[1] & 0x80, "a masked frame from the server"
    length, start = buffer[1] & 0x7F, 2
    if length == 126:
        length, start = int.from_bytes(buffer[2:4], "big"), 4
    elif length == 127:
        length, start = int.from_bytes(buffer[2:10], "big"), 10
    if len(buffer) < start + length:
        return None
    return buffer[0] & 0x0F, buffer[start : start + length], buffer[start + length :]


def close_frame(code: int = 1000) -> bytes:
    """A masked close frame, as a client sends it (masking applies over HTTP/2 too)."""
    payload = code.to_bytes(2, "big")
    mask = os.urandom(4)
    return bytes([0x88, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def test_h2_extended_connect_probe(server: Hypercorn, certificates: Certificates) -> None:
    path = f"/c/probe-{server.worker}"
    with anyio.fail_after(TEST_TIMEOUT):
        stream = await anyio.connect_tcp(
            "127.0.0.1", server.port, ssl_context=certificates.client_context(["h2"]), tls_standard_compatible=False
        )
        async with stream:
            assert stream.extra(TLSAttribute.alpn_protocol) == "h2"
            client = H2Client(stream)
            client.connection.initiate_connection()
            await client.flush()

            # The server's SETTINGS allow the extended CONNECT (RFC 8441, section 3).
            settings = await client.wait("the server's SETTINGS", h2.events.RemoteSettingsChanged)
            enable = settings.changed_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL)
            assert enable is not None and enable.new_value == 1, settings.changed_settings

            # A WebSocket on stream 1: 200, then the self-join as the first frame.
            ws = await client.extended_connect(server.port, f"{path}?alias=Probe")
            headers = await client.response(ws)
            assert headers[b":status"] == b"200", (headers, server.log_tail())
            assert b"sec-websocket-accept" not in headers  # nothing of HTTP/1.1's handshake
            buffer = b""
            while (frame := read_frame(buffer)) is None:
                buffer += await client.data(ws)
            opcode, payload, buffer = frame
            assert opcode == 0x1, opcode  # text
            hello = json.loads(payload)
            assert hello["type"] == "join" and hello["self"] is True and hello["alias"] == "Probe", hello
            assert hello["total"] == 1 and len(hello["uid"]) == 6 and isinstance(hello["date"], int), hello

            # A page from an origin allowed_origins does not list: 403, on the same connection.
            refused = await client.extended_connect(server.port, path, [("origin", "https://evil.example")])
            headers = await client.response(refused)
            assert headers[b":status"] == b"403", headers
            body = b""
            with anyio.fail_after(STEP_TIMEOUT):
                while not client.ended(refused):
                    body += await client.data(refused)
            assert body == b"Origin not allowed.", body

            # The probe closes its WebSocket: the relay answers with a close frame.
            client.connection.send_data(ws, close_frame(1000))
            await client.flush()
            while (frame := read_frame(buffer)) is None:
                buffer += await client.data(ws)
            opcode, payload, _ = frame
            assert opcode == 0x8 and payload[:2] == (1000).to_bytes(2, "big"), (opcode, payload)
            client.connection.close_connection()
            await client.flush()

    scopes = server.scopes(path)
    assert [(scope["http_version"], scope["origin"]) for scope in scopes] == [
        ("2", None),
        ("2", "https://evil.example"),
    ], scopes
