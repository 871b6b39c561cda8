"""What frames say, and the expectations the checks share: predicates on frames, JSON
equality, the marker that makes "nothing arrives" fast, refusals, and client members."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import quote

import anyio
import msgspec

from transports.client import Channel, Refused, connect

from ._registry import Failed, Settings
from ._wire import RETRY_PAUSE, Frame, Peer, Probe, cut

__all__ = [
    "GRACE",
    "UID",
    "carrying",
    "errors",
    "expect",
    "is_date",
    "is_marker",
    "marked",
    "member",
    "need",
    "push",
    "refused",
    "relayed",
    "same",
    "show",
    "typed",
]

#: How long a peer keeps listening after a marker, for a frame that should not come.
GRACE = 0.15
#: A uid as the protocol makes them.
UID = re.compile(r"[A-Za-z0-9]{6}")


def typed(kind: str) -> Callable[[Frame], bool]:
    """A frame whose ``type`` is ``kind`` (join, leave, error)."""
    return lambda frame: frame.obj is not None and frame.obj.get("type") == kind


def carrying(value: Any) -> Callable[[Frame], bool]:
    """A relayed envelope whose ``message`` is ``value``."""
    return lambda frame: frame.obj is not None and "message" in frame.obj and same(frame.obj["message"], value)


def errors(frames: Iterable[Frame]) -> list[str]:
    return [
        str(frame.obj.get("message")) for frame in frames if frame.obj is not None and frame.obj.get("type") == "error"
    ]


def relayed(frames: Iterable[Frame]) -> list[dict[str, Any]]:
    """The relayed envelopes among ``frames`` (objects without a ``type``, with a ``message``)."""
    return [
        frame.obj for frame in frames if frame.obj is not None and "type" not in frame.obj and "message" in frame.obj
    ]


def same(left: Any, right: Any) -> bool:
    """JSON equality (``true`` is not ``1``, key order does not matter)."""
    return bool(msgspec.json.encode(left, order="sorted") == msgspec.json.encode(right, order="sorted"))


def is_date(value: Any) -> bool:
    """A JSON number of milliseconds since the epoch (after 2017, before 2096)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 1.5e12 < value < 4e12


def expect(condition: bool, detail: str) -> None:
    if not condition:
        raise Failed(detail)


def show(value: Any) -> str:
    return cut(msgspec.json.encode(value).decode())


def need(settings: Settings, *needs: str) -> str | None:
    """Why a check with these needs cannot run, or None."""
    for what in needs:
        if getattr(settings, what) is None:
            return f"needs --{what.replace('_', '-')}"
    return None


async def marked(peer: Peer, sender: Peer, what: str, *, after: float = GRACE) -> list[Frame]:
    """What ``peer`` receives before a marker that ``sender`` broadcasts now (``peer`` may be
    ``sender`` itself, joined with echo), plus :data:`GRACE` seconds: the frames an earlier
    action caused. The marker's own frame is not in the list."""
    token = peer.probe.token()
    peer.probe.markers.add(token)
    await sender.send_json({"marker": token})
    frames = await peer.read_until(carrying({"marker": token}), f"the marker after {what}", after=after)
    return [frame for frame in frames if not is_marker(frame, peer.probe.markers)]


def is_marker(frame: Frame, tokens: set[str]) -> bool:
    message = frame.obj.get("message") if frame.obj is not None else None
    return isinstance(message, dict) and message.keys() == {"marker"} and message["marker"] in tokens


async def refused(probe: Probe, channel: str, query: str, status: int, what: str) -> None:
    got = await probe.upgrade_status(probe.target(channel, query))
    expect(got == status, f"{what}: HTTP {got}, not {status}")


async def member(stack: AsyncExitStack, probe: Probe, channel: str, label: str, **options: Any) -> Channel:
    """A :func:`transports.client.connect` member of ``channel`` (tried again on 429)."""
    while True:
        probe.waiting = f"{label}: transports.client.connect({channel!r})"
        try:
            joined = await stack.enter_async_context(connect(probe.url(channel), close_timeout=1.0, **options))
        except Refused as refusal:
            probe.log(f"{label} < {refusal!r}")
            if refusal.status != 429:
                raise
            await anyio.sleep(RETRY_PAUSE)
            continue
        probe.log(f"{label} < joined {channel} as {joined.uid} (total {joined.total})")
        return joined


async def push(
    p: Probe, channel: str, value: Any = None, *, body: bytes | None = None, key: str | None = ""
) -> tuple[int, dict[str, str], bytes]:
    """``POST /push/<channel>`` with ``value`` (or ``body``) and the send key (``key=""``: the
    one given on the command line; None: no header)."""
    key = p.settings.send_key if key == "" else key
    headers = [] if key is None else [("x-send-key", key)]
    data = msgspec.json.encode(value) if body is None else body
    return await p.http("POST", f"{p.base.prefix}/push/{quote(channel, safe='/:')}", data, headers)
