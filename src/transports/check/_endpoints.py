"""Section 1 of the contract, the endpoints: ``/c/`` and ``/r/``, the channel in the path,
``/version``, ``/health``, and the plain HTTP answers (404, 426)."""

from __future__ import annotations

import msgspec

from ._expect import expect, show, typed
from ._registry import Failed, Skipped, check
from ._wire import Probe, cut

__all__: list[str] = []  # the checks register themselves in CHECKS


@check("1.join-c")
async def _join_c(p: Probe) -> str:
    """``GET /c/<channel>`` with an upgrade opens a WebSocket whose first frame is the self-join."""
    a = await p.join(p.fresh(), "A")
    return f"101, self-join uid {a.uid} total {a.hello.get('total')}"


@check("1.join-r")
async def _join_r(p: Probe) -> str:
    """``/r/<channel>`` is the legacy path of 2025 clients: the same channel as ``/c/<channel>``."""
    channel = p.fresh()
    await p.join(channel, "A", path="r")
    b = await p.join(channel, "B")
    expect(
        b.hello.get("total") == 2,
        f"an /r/ and a /c/ member of one channel did not meet: B's total is {b.hello.get('total')}",
    )
    return "/r/ joins the channel /c/ names"


@check("1.channel-slash")
async def _channel_slash(p: Probe) -> str:
    """The channel is everything after ``/c/``, slashes included, case-sensitive and exact."""
    channel = p.fresh("/sub/Room")
    await p.join(channel, "A")
    b = await p.join(channel, "B")
    expect(b.hello.get("total") == 2, f"two members of {channel!r} did not meet: total {b.hello.get('total')}")
    c = await p.join(channel.rsplit("/", 1)[0], "C")
    expect(
        c.hello.get("total") == 1,
        f"{channel.rsplit('/', 1)[0]!r} is not a channel of its own: total {c.hello.get('total')}",
    )
    d = await p.join(channel[:-4] + "room", "D")
    expect(d.hello.get("total") == 1, f"channel names are not case-sensitive: total {d.hello.get('total')}")
    return "'/' is part of the name, which is case-sensitive"


@check("1.channel-decoding")
async def _channel_decoding(p: Probe) -> str:
    """The channel is percent-decoded: members on ``a%3Ab`` and on ``a:b`` meet."""
    channel = p.fresh()
    a = await p.join(f"{channel}%3Ab", "A", raw=True)
    b = await p.join(f"{channel}:b", "B", raw=True)
    expect(b.hello.get("total") == 2, f"'%3A' and ':' are two channels: B's total is {b.hello.get('total')}")
    await a.read_until(typed("join"), "B's join")
    return "'%3A' and ':' name one channel"


@check("1.channel-empty-400")
async def _channel_empty(p: Probe) -> str:
    """An empty channel name is refused with HTTP 400 on the upgrade."""
    status = await p.upgrade_status(p.target(""))
    expect(status == 400, f"an upgrade of {p.target('')} got HTTP {status}, not 400")
    return "/c/ -> 400"


@check("1.channel-too-long-400", tags=["decision"])
async def _channel_too_long(p: Probe) -> str:
    """A channel is 1..256 bytes of UTF-8 after decoding (**decision**): 257 bytes -> 400."""
    name = p.fresh()
    longest = name + "x" * (256 - len(name.encode()))
    await p.join(longest, "A")
    status = await p.upgrade_status(p.target(longest + "x"))
    expect(status == 400, f"a 257-byte channel got HTTP {status}, not 400")
    return "256 bytes joins, 257 -> 400"


@check("1.plain-get-426")
async def _plain_get(p: Probe) -> str:
    """A GET on ``/c/...`` without a WebSocket upgrade gets 426 (Upgrade Required) or 400."""
    status, _, _ = await p.http("GET", p.target(p.fresh()))
    expect(status in (426, 400), f"a plain GET of /c/<channel> got HTTP {status}, not 426 or 400")
    return f"HTTP {status}"


@check("1.unknown-path-404")
async def _unknown_path(p: Probe) -> str:
    """Any path that is not an endpoint of the protocol gets a plain HTTP 404."""
    target = f"{p.base.prefix}/{p.fresh()}"
    status, _, _ = await p.http("GET", target)
    expect(status == 404, f"GET {target} got HTTP {status}, not 404")
    return f"GET {target} -> 404"


@check("1.version")
async def _version(p: Probe) -> str:
    """``GET /version`` answers 200 with the server's version as plain text."""
    status, headers, body = await p.http("GET", f"{p.base.prefix}/version")
    expect(status == 200, f"GET /version got HTTP {status}, not 200")
    text = body.decode(errors="replace").strip()
    expect(bool(text), "GET /version answered an empty body")
    kind = headers.get("content-type", "")
    expect(not kind or kind.startswith("text/"), f"GET /version is not plain text: content-type {kind!r}")
    return f"200 {cut(text)!r}"


@check("1.health", tags=["optional"])
async def _health(p: Probe) -> str:
    """``GET /health`` answers JSON ``{"status":"ok", ...}``: optional, a decision of relaycore's."""
    status, _, body = await p.http("GET", f"{p.base.prefix}/health")
    if status == 404:
        raise Skipped("optional (relaycore's own endpoint): GET /health -> 404")
    expect(status == 200, f"GET /health got HTTP {status}, not 200")
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise Failed(f"GET /health is not JSON: {cut(body.decode(errors='replace'))}") from None
    expect(isinstance(document, dict) and document.get("status") == "ok", f"GET /health says {show(document)}")
    return '200 {"status":"ok",...}'
