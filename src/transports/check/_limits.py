"""Section 8 of the contract, the limits: message size and message rate."""

from __future__ import annotations

import re

import anyio

from relaycore.texts import CLOSE_POLICY, CLOSE_TOO_BIG

from ._expect import carrying, errors, expect, relayed, typed
from ._registry import check
from ._wire import Probe

__all__: list[str] = []  # the checks register themselves in CHECKS

RATE_WARNING = re.compile(r"Rate limit exceeded \(warning (\d+) of (\d+)\)\.")


@check("8.message-size-ok", tags=["config"])
async def _size_ok(p: Probe) -> str:
    """A message under the 100 KiB default limit (100,000 bytes) is relayed whole."""
    channel = p.fresh()
    a, b = await p.join(channel, "A"), await p.join(channel, "B")
    payload = "y" * 99_998
    await a.send_json(payload)
    await b.read_until(carrying(payload), "A's 100,000-byte message")
    return "100,000 bytes relayed"


@check("8.message-size-1009", tags=["config"])
async def _size_1009(p: Probe) -> str:
    """A WebSocket message over the limit (100 KiB by default; 200 KiB sent) closes the
    connection with 1009; it is not relayed."""
    channel = p.fresh()
    b = await p.join(channel, "B")
    a = await p.join(channel, "A", "echo")
    await b.read_until(typed("join"), "A's join")
    size = 200 * 1024
    data = a.conn.send_text('"' + "z" * size + '"')
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: a.send_raw(data, "a 200 KiB message", may_fail=True))
        frames = await a.read_until(lambda frame: frame.kind == "close" or frame.size > size, "the relay's close")
        tg.cancel_scope.cancel()
    end = frames[-1]
    expect(end.kind == "close", "the 200 KiB message was relayed (A's echo came back)")
    expect(end.code == CLOSE_TOO_BIG, f"a 200 KiB message got close {end.code} {end.reason!r}, not 1009")
    frames = await b.read_until(typed("leave"), "A's leave")
    expect(not relayed(frames), "B got the oversized message")
    return "close 1009, not relayed, then the leave"


@check("8.rate-limit", tags=["config", "decision"])
async def _rate_limit(p: Probe) -> str:
    """Over the rate (100 per second, burst 200, by default) a message is dropped with the error
    ``Rate limit exceeded (warning <n> of <max>).``; the 3rd warning in a minute closes with 1008."""
    channel = p.fresh()
    b = await p.join(channel, "B")
    a = await p.join(channel, "A", "echo")
    count = 400
    data = b"".join(a.conn.send_text(f'{{"n":{n}}}') for n in range(count))
    await a.send_raw(data, f'{count} messages {{"n":0..{count - 1}}} at once', may_fail=True)
    last = carrying({"n": count - 1})
    frames = await a.read_until(lambda f: f.kind == "close" or last(f), "the rate-limit warnings and the close")
    warnings = errors(frames)
    relayed_all = "all relayed, the last echoed" if last(frames[-1]) else f"then {frames[-1].show()}"
    expect(bool(warnings), f"{count} messages at once got no warning ({relayed_all})")
    bad = [text for text in warnings if RATE_WARNING.fullmatch(text) is None]
    expect(not bad, f"unexpected error texts: {bad}")
    numbers = [int(RATE_WARNING.fullmatch(text).group(1)) for text in warnings]  # type: ignore[union-attr]
    expect(numbers == [1, 2, 3], f"warnings {numbers}, not 1, 2, 3 before the close")
    expect(frames[-1].code == CLOSE_POLICY, f"after 3 warnings the close is {frames[-1].code}, not 1008")
    got = relayed(await b.read_until(typed("leave"), "A's leave"))
    expect(len(got) < count, f"B got all {count} messages")
    return f"warnings 1-3, close 1008; B got {len(got)} of {count}"
