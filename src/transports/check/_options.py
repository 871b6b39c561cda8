"""Section 2 of the contract: the connection options of the query string."""

from __future__ import annotations

from typing import Any

from ._expect import GRACE, carrying, expect, marked, same, show, typed
from ._registry import check
from ._wire import Peer, Probe

__all__: list[str] = []  # the checks register themselves in CHECKS


async def _alias_of(p: Probe, query: str) -> Any:
    return (await p.join(p.fresh(), "A", query)).hello.get("alias", "(none)")


@check("2.alias")
async def _alias(p: Probe) -> str:
    """``alias`` is the display name: in the self-join, and in every envelope of the member's."""
    channel = p.fresh()
    a = await p.join(channel, "A", "alias=Ann")
    expect(a.hello.get("alias") == "Ann", f"?alias=Ann: the self-join's alias is {a.hello.get('alias', '(none)')!r}")
    b = await p.join(channel, "B")
    payload = {"hello": p.token()}
    await a.send_json(payload)
    frame = (await b.read_until(carrying(payload), "A's message"))[-1]
    expect(frame.obj is not None and frame.obj.get("alias") == "Ann", f"A's envelope lacks alias Ann: {frame.show()}")
    return "self-join and envelope carry the alias"


@check("2.alias-as")
async def _alias_as(p: Probe) -> str:
    """``as`` is another name of ``alias``."""
    alias = await _alias_of(p, "as=Bo")
    expect(alias == "Bo", f"?as=Bo: the self-join's alias is {alias!r}")
    return "?as=Bo -> alias Bo"


@check("2.alias-wins", tags=["decision"])
async def _alias_wins(p: Probe) -> str:
    """When both are given, ``alias`` wins over ``as`` (**decision**), whatever their order."""
    for query in ("alias=Ann&as=Bo", "as=Bo&alias=Ann"):
        alias = await _alias_of(p, query)
        expect(alias == "Ann", f"?{query}: the self-join's alias is {alias!r}, not 'Ann'")
    return "alias=Ann beats as=Bo, either order"


@check("2.alias-too-long-400", tags=["decision"])
async def _alias_too_long(p: Probe) -> str:
    """An alias is at most 64 characters (**decision**), else the upgrade is refused with 400."""
    alias = await _alias_of(p, "alias=" + "é" * 64)
    expect(alias == "é" * 64, f"a 64-character alias came back as {alias!r}")
    status = await p.upgrade_status(p.target(p.fresh(), "alias=" + "x" * 65))
    expect(status == 400, f"a 65-character alias got HTTP {status}, not 400")
    return "64 characters join, 65 -> 400"


@check("2.query-decoding")
async def _query_decoding(p: Probe) -> str:
    """Options are an HTML form query: ``+`` is a space, ``%XX`` is decoded, unknown keys ignored."""
    alias = await _alias_of(p, "alias=J%C3%B6+Doe%21&colour=blue")
    expect(alias == "Jö Doe!", f"?alias=J%C3%B6+Doe%21: the alias is {alias!r}, not 'Jö Doe!'")
    return "'J%C3%B6+Doe%21' -> 'Jö Doe!'"


@check("2.announce")
async def _announce(p: Probe) -> str:
    """With ``announce``, others' join and leave events about me carry my uid and alias."""
    channel = p.fresh()
    a = await p.join(channel, "A")
    b = await p.join(channel, "B", "announce&alias=Bo")
    join = (await a.read_until(typed("join"), "B's join"))[-1].obj or {}
    expect(
        join.get("uid") == b.uid and join.get("alias") == "Bo", f"B's join lacks uid {b.uid} / alias Bo: {show(join)}"
    )
    await b.close()
    leave = (await a.read_until(typed("leave"), "B's leave"))[-1].obj or {}
    expect(leave.get("uid") == b.uid and leave.get("alias") == "Bo", f"B's leave lacks uid / alias: {show(leave)}")
    return "join and leave carry uid and alias"


@check("2.echo")
async def _echo(p: Probe) -> str:
    """With ``echo``, I receive my own broadcasts back, in the envelope everyone gets."""
    a = await p.join(p.fresh(), "A", "echo=true")
    payload = {"echo": p.token()}
    await a.send_json(payload)
    frame = (await a.read_until(carrying(payload), "the echo of A's message"))[-1]
    expect(frame.obj is not None and frame.obj.get("uid") == a.uid, f"the echo does not carry A's uid: {frame.show()}")
    return "own broadcast came back with own uid"


@check("2.list")
async def _list(p: Probe) -> str:
    """With ``list``, the self-join's ``users`` are the announced members in join order, each
    ``{uid, alias?}``; my own entry (with ``"self":true``) only if I announced."""
    channel = p.fresh()
    a = await p.join(channel, "A", "announce&alias=Ann")
    expect("users" not in a.hello, f"a self-join without ?list has users: {show(a.hello)}")
    await p.join(channel, "B")
    c = await p.join(channel, "C", "announce")
    d = await p.join(channel, "D", "list&announce&alias=Dee")
    wanted = [{"uid": a.uid, "alias": "Ann"}, {"uid": c.uid}, {"uid": d.uid, "alias": "Dee", "self": True}]
    users = d.hello.get("users")
    expect(same(users, wanted), f"D (announced) got users {show(users)}, not {show(wanted)}")
    e = await p.join(channel, "E", "list")
    users = e.hello.get("users")
    expect(same(users, [*wanted[:2], {"uid": d.uid, "alias": "Dee"}]), f"E (not announced) got users {show(users)}")
    return "announced members in join order, self entry only if announced"


async def _echoes(p: Probe, channel: str, query: str, partner: Peer, *, on: bool) -> bool:
    """Whether a member joined with ``query`` gets its own broadcast back. (An echo comes before
    the partner's marker, which is sent once the partner has the message: the grace is for OFF.)"""
    x = await p.join(channel, "X", query)
    payload = {"echo": p.token()}
    await x.send_json(payload)
    await partner.read_until(carrying(payload), f"X's message (X joined with ?{query})")
    seen = await marked(x, partner, f"X's message (?{query})", after=0.0 if on else GRACE)
    await x.close()
    return any(carrying(payload)(frame) for frame in seen)


@check("2.flag-spellings")
async def _flags(p: Probe) -> str:
    """A flag is ON when its value is ``true``, ``1`` or empty (``?echo``, ``?echo=``), OFF when
    it is ``false``, ``0`` or absent (tried on ``echo``)."""
    channel = p.fresh()
    partner = await p.join(channel, "P")
    for query in ("echo=true", "echo=1", "echo", "echo="):
        expect(await _echoes(p, channel, query, partner, on=True), f"?{query} did not turn echo on")
    for query in ("echo=false", "echo=0", ""):
        expect(not await _echoes(p, channel, query, partner, on=False), f"?{query or '(no echo)'} turned echo on")
    return "true/1/empty are ON, false/0/absent are OFF"
