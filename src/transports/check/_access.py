"""Section 6 of the contract, access control: the first joiner's keys, reserved namespaces."""

from __future__ import annotations

from contextlib import AsyncExitStack

import anyio

from relaycore.texts import SEND_KEY_REQUIRED
from transports.client import Refused

from ._expect import carrying, errors, expect, marked, member, refused, relayed, show
from ._registry import Failed, check
from ._wire import Probe

__all__: list[str] = []  # the checks register themselves in CHECKS


@check("6.first-joiner-join-key")
async def _first_join_key(p: Probe) -> str:
    """On an open channel the first joiner's ``joinKey`` becomes the channel's: a later joiner
    without it, or with another, gets 403 on the upgrade; with it, joins."""
    channel, key = p.fresh(), f"jk-{p.token()}"
    await p.join(channel, "A", f"joinKey={key}")
    await refused(p, channel, "", 403, "a later joiner without the joinKey")
    await refused(p, channel, "joinKey=wrong", 403, "a later joiner with a wrong joinKey")
    c = await p.join(channel, "C", f"joinKey={key}")
    expect(c.hello.get("total") == 2, f"the joiner with the key got total {c.hello.get('total')}")
    return "no key / wrong key -> 403, the key joins"


@check("6.first-joiner-send-key")
async def _first_send_key(p: Probe) -> str:
    """The first joiner's ``sendKey`` becomes the channel's: a later joiner with a wrong one (or
    none) joins listen-only, its sends get ``Sending requires a valid sendKey.`` and go nowhere."""
    channel, key = p.fresh(), f"sk-{p.token()}"
    a = await p.join(channel, "A", f"sendKey={key}")
    b = await p.join(channel, "B", "sendKey=wrong")
    c = await p.join(channel, "C")
    refused_payload = {"refused": p.token()}
    for peer in (b, c):
        await peer.send_json(refused_payload)
    d = await p.join(channel, "D", f"sendKey={key}")
    for peer in (b, c):  # the listen-only members still listen, and got the error
        got = errors(await marked(peer, d, "a send without the sendKey"))
        expect(got == [SEND_KEY_REQUIRED], f"{peer.label} got errors {got}, not [{SEND_KEY_REQUIRED!r}]")
    got_a = relayed(await marked(a, d, "the sends without the sendKey"))
    expect(not got_a, f"A got a message sent without the sendKey: {show(got_a)}")
    return "wrong / no sendKey: listen-only with the error; the key sends"


@check("6.later-keys-ignored")
async def _later_keys(p: Probe) -> str:
    """Keys offered by later joiners on an open channel that has none are ignored."""
    channel = p.fresh()
    a = await p.join(channel, "A")
    await p.join(channel, "B", "joinKey=late&sendKey=late")
    c = await p.join(channel, "C")
    expect(c.hello.get("total") == 3, f"a keyless joiner after B got total {c.hello.get('total')}, not 3")
    payload = {"free": p.token()}
    await c.send_json(payload)
    await a.read_until(carrying(payload), "C's message (the channel has no sendKey)")
    return "B's keys did not lock C out"


@check("6.keys-vanish")
async def _keys_vanish(p: Probe) -> str:
    """A channel exists while it has members: its keys vanish with its last member, and the next
    joiner (with transports.client) finds an open channel."""
    channel, key = p.fresh(), f"jk-{p.token()}"
    async with AsyncExitStack() as stack:
        first = await member(stack, p, channel, "A", join_key=key)
        await first.close()
    for _ in range(20):  # the relay may take a moment to see A's close
        try:
            async with AsyncExitStack() as stack:
                joined = await member(stack, p, channel, "B")
                expect(joined.total == 1, f"B found {joined.total} members")
                return "after the last member left, a keyless joiner got in"
        except Refused as refusal:
            if refusal.status != 403:
                raise
            await anyio.sleep(0.05)
    raise Failed("the channel kept its joinKey after its last member left (403 for a second)")


@check("6.reserved-join-key", needs=["namespace", "join_key"])
async def _reserved_join_key(p: Probe) -> str:
    """Under a reserved namespace, a wrong or missing joinKey gets HTTP 403 (no WebSocket opens)."""
    channel = p.reserved()
    await refused(p, channel, "", 403, "no joinKey")
    await refused(p, channel, "joinKey=wrong", 403, "a wrong joinKey")
    await p.join(channel, "A", p.keys())
    return "no key / wrong key -> 403, the namespace's key joins"


@check("6.reserved-foreign-key-403", needs=["namespace"])
async def _reserved_foreign(p: Probe) -> str:
    """Under a reservation, offering a ``joinKey``/``sendKey`` that is not the namespace's own
    (including when it has none) gets 403; a reservation without keys still blocks ephemeral keys."""
    channel, wrong = p.reserved(), f"foreign-{p.token()}"
    joined = p.keys()
    await refused(p, channel, "&".join(filter(None, [joined, f"sendKey={wrong}"])), 403, "a foreign sendKey")
    if p.settings.join_key is None:
        await refused(p, channel, f"joinKey={wrong}", 403, "a joinKey where the namespace has none")
    return "foreign keys -> 403"


@check("6.reserved-send-key", needs=["namespace", "send_key"])
async def _reserved_send_key(p: Probe) -> str:
    """Under a reservation with a sendKey, a member without it listens only (error frame on a
    send); with it, its messages are delivered."""
    channel = p.reserved()
    a = await p.join(channel, "A", p.keys())
    b = await p.join(channel, "B", p.keys())
    await b.send_json({"refused": True})
    c = await p.join(channel, "C", p.keys(send=True))
    got = errors(await marked(b, c, "B's send without the sendKey"))
    expect(got == [SEND_KEY_REQUIRED], f"B got errors {got}, not [{SEND_KEY_REQUIRED!r}]")
    got_a = relayed(await marked(a, c, "B's send without the sendKey"))
    expect(not got_a, f"A got B's refused message: {show(got_a)}")
    return "without the key: the error; with it: delivered"


@check("6.namespace-match", needs=["namespace", "join_key"])
async def _namespace_match(p: Probe) -> str:
    """Namespace N covers channel C iff C == N or C starts with N followed by ``:`` or ``/``."""
    ns = p.settings.namespace
    assert ns is not None
    for channel in (ns, f"{ns}:{p.fresh()}", f"{ns}/{p.fresh()}"):
        await refused(p, channel, "", 403, f"{channel!r} without the joinKey")
    outside = f"{ns}{p.token()}:room"
    await p.join(outside, "A")
    return f"N, N:x, N/x need the key; {outside!r} does not"
