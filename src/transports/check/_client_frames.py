"""Section 4 of the contract, what a client sends: broadcasts, direct messages, send then close."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from ._expect import carrying, expect, marked, relayed, same, show, typed
from ._registry import check
from ._wire import Probe

__all__: list[str] = []  # the checks register themselves in CHECKS


@check("4.broadcast")
async def _broadcast(p: Probe) -> str:
    """A JSON frame goes to every OTHER member, and not back to the sender without ``echo``."""
    channel = p.fresh()
    a, b, c = await p.join(channel, "A"), await p.join(channel, "B"), await p.join(channel, "C")
    payload = {"broadcast": p.token()}
    await a.send_json(payload)
    for peer in (b, c):
        frame = (await peer.read_until(carrying(payload), "A's broadcast"))[-1]
        expect(frame.obj is not None and frame.obj.get("uid") == a.uid, f"{peer.label} got {frame.show()}")
    back = [frame.show() for frame in await marked(a, b, "A's broadcast") if carrying(payload)(frame)]
    expect(not back, "A got its own broadcast back without ?echo")
    return "B and C got it, A did not"


async def _direct(p: Probe, frame_of: Callable[[str, str], str], form: str) -> str:
    channel = p.fresh()
    a, b, c = await p.join(channel, "A"), await p.join(channel, "B"), await p.join(channel, "C")
    payload = {"direct": p.token()}
    await a.send_text(frame_of(b.uid, msgspec.json.encode(payload).decode()))
    # A's marker comes after the direct message from the same sender: B has it by then.
    got = [frame for frame in await marked(b, a, f"A's {form} message", after=0.0) if carrying(payload)(frame)]
    expect(bool(got), f"B did not get A's {form} message (before A's next broadcast)")
    envelope = got[0].obj or {}
    expect(envelope.get("uid") == a.uid and "type" not in envelope, f"B got {got[0].show()}, not A's envelope")
    leaked = [frame.show() for frame in await marked(c, a, f"A's {form} message to B") if carrying(payload)(frame)]
    expect(not leaked, f"C got A's {form} message to B")
    return f"{form} reached B only"


@check("4.direct")
async def _direct_new(p: Probe) -> str:
    """``\\x1f<uid>\\x1f<JSON>`` is a direct message to member ``<uid>`` of the channel only."""
    return await _direct(p, lambda uid, text: f"\x1f{uid}\x1f{text}", "\\x1f direct")


@check("4.direct-legacy")
async def _direct_legacy(p: Probe) -> str:
    """``@@<uid>@@<JSON>`` is the legacy direct-message form of 2025 clients: accepted too."""
    return await _direct(p, lambda uid, text: f"@@{uid}@@{text}", "@@ direct")


@check("4.direct-not-echoed", tags=["decision"])
async def _direct_not_echoed(p: Probe) -> str:
    """Direct messages are never echoed, even to a sender with ``echo`` (**decision**)."""
    channel = p.fresh()
    a, b = await p.join(channel, "A", "echo"), await p.join(channel, "B")
    payload = {"direct": p.token()}
    await a.send_text(f"\x1f{b.uid}\x1f{msgspec.json.encode(payload).decode()}")
    await b.read_until(carrying(payload), "A's direct message")
    back = [frame.show() for frame in await marked(a, a, "A's direct message") if carrying(payload)(frame)]
    expect(not back, "A (with ?echo) got its own direct message back")
    return "the sender with ?echo did not get it"


@check("4.send-then-close")
async def _send_then_close(p: Probe) -> str:
    """Send and close: the relay relays every data frame received before the close frame, and
    only then broadcasts the leave (all written in one TCP segment here)."""
    channel = p.fresh()
    b = await p.join(channel, "B")
    a = await p.join(channel, "A", "announce")
    await b.read_until(typed("join"), "A's join")
    count = 20
    data = b"".join(a.conn.send_text(f'{{"n":{n}}}') for n in range(count))
    await a.send_raw(data + a.conn.close(1000), f'{count} messages {{"n":0..{count - 1}}} + [close 1000]')
    await a.read_until(lambda frame: frame.kind == "close", "the answer to A's close frame")
    frames = await b.read_until(typed("leave"), "A's leave")
    got = [envelope["message"] for envelope in relayed(frames)]
    expect(same(got, [{"n": n} for n in range(count)]), f"before A's leave, B got {len(got)} of {count}: {show(got)}")
    return f"{count} messages, then the leave"
