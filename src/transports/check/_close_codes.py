"""Section 9 of the contract: close codes."""

from __future__ import annotations

from relaycore.texts import CLOSE_INVALID_DATA, CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR

from ._expect import expect, typed
from ._registry import check
from ._wire import Probe, raw_frame

__all__: list[str] = []  # the checks register themselves in CHECKS


@check("9.close-1000")
async def _close_1000(p: Probe) -> str:
    """A normal close (1000) is answered with a close frame of 1000; the others see the leave."""
    channel = p.fresh()
    b = await p.join(channel, "B")
    a = await p.join(channel, "A")
    await b.read_until(typed("join"), "A's join")
    end = await a.close(CLOSE_NORMAL)
    expect(end.code == CLOSE_NORMAL, f"our close 1000 was answered with {end.code} {end.reason!r}")
    await b.read_until(typed("leave"), "A's leave")
    return "1000 echoed, leave broadcast"


async def _bad_frame(p: Probe, data: bytes, what: str, code: int) -> str:
    a = await p.join(p.fresh(), "A")
    await a.send_raw(data, what, may_fail=True)
    end = (await a.read_until(lambda frame: frame.kind == "close", "the relay's close"))[-1]
    expect(end.code == code, f"{what} got close {end.code} {end.reason!r}, not {code}")
    return f"close {code}"


@check("9.invalid-utf8-1007")
async def _invalid_utf8(p: Probe) -> str:
    """Invalid UTF-8 in a text frame closes the connection with 1007."""
    return await _bad_frame(p, raw_frame(0x1, b'"\xff\xfe"'), "a text frame of invalid UTF-8", CLOSE_INVALID_DATA)


@check("9.protocol-error-1002")
async def _protocol_error(p: Probe) -> str:
    """A bad frame (a reserved opcode, 0x3) is a protocol error: close 1002."""
    return await _bad_frame(p, raw_frame(0x3, b"{}"), "a frame with the reserved opcode 0x3", CLOSE_PROTOCOL_ERROR)
