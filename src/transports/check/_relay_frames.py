"""Section 3 of the contract, the relay's frames: the envelope, the self-join, others' join and
leave, and the error frame."""

from __future__ import annotations

import secrets
import string
from collections.abc import Awaitable, Callable
from typing import Any

from relaycore.texts import BINARY_UNSUPPORTED, INVALID_JSON, user_not_found

from ._expect import UID, carrying, errors, expect, is_date, marked, push, relayed, same, show, typed
from ._registry import check
from ._wire import Frame, Peer, Probe, cut

__all__: list[str] = []  # the checks register themselves in CHECKS


SELF_JOIN_KEYS = {"type", "self", "uid", "alias", "total", "date", "users"}


@check("3.2.self-join")
async def _self_join(p: Probe) -> str:
    """The first frame is the self-join: ``type`` join, ``self`` true, a ``uid`` of 6 characters
    ``[A-Za-z0-9]``, ``total`` (me included), ``date``; ``alias`` only if set, ``users`` only with list."""
    hello = (await p.join(p.fresh(), "A")).hello
    expect(UID.fullmatch(str(hello.get("uid"))) is not None, f"the uid is not 6 characters [A-Za-z0-9]: {show(hello)}")
    expect(hello.get("total") == 1, f"the first member's total is {hello.get('total')}, not 1")
    expect(is_date(hello.get("date")), f"the self-join has no date in ms: {show(hello)}")
    expect("alias" not in hello and "users" not in hello, f"alias or users without ?alias / ?list: {show(hello)}")
    extra = set(hello) - SELF_JOIN_KEYS
    expect(not extra, f"the self-join has keys the protocol does not name: {sorted(extra)}")
    return f"{show(hello)}"


@check("3.2.self-join-total")
async def _self_join_total(p: Probe) -> str:
    """The self-join's ``total`` counts the connections in the channel, the joiner included."""
    channel = p.fresh()
    totals = [(await p.join(channel, label)).hello.get("total") for label in "ABC"]
    expect(totals == [1, 2, 3], f"three joiners got totals {totals}, not [1, 2, 3]")
    return "totals 1, 2, 3"


@check("3.3.join-leave")
async def _join_leave(p: Probe) -> str:
    """Others get ``{"type":"join"|"leave","total":n,"date":...}``: no ``self``, no ``users``, no uid
    unless the member announced; ``total`` counts ALL connections after the change."""
    channel = p.fresh()
    a = await p.join(channel, "A")
    b = await p.join(channel, "B")
    join = (await a.read_until(typed("join"), "B's join"))[-1].obj or {}
    expect(set(join) == {"type", "total", "date"}, f"B did not announce, yet its join is {show(join)}")
    expect(join["total"] == 2 and is_date(join["date"]), f"B's join: {show(join)}, not total 2 with a date")
    await p.join(channel, "C", "announce")
    join = (await a.read_until(typed("join"), "C's join"))[-1].obj or {}
    expect(join.get("total") == 3 and "self" not in join, f"C's join: {show(join)}, not total 3 without self")
    await b.close()
    leave = (await a.read_until(typed("leave"), "B's leave"))[-1].obj or {}
    expect(set(leave) == {"type", "total", "date"} and leave["total"] == 2, f"B's leave: {show(leave)}, not total 2")
    return "join total 2, 3; leave total 2; no uid unless announced"


async def _relay_once(p: Probe, payload: Any, *, alias: str = "") -> tuple[Peer, Frame]:
    """A (with ``alias``) broadcasts ``payload``; B's frame of it."""
    channel = p.fresh()
    a = await p.join(channel, "A", f"alias={alias}" if alias else "")
    b = await p.join(channel, "B")
    await a.send_json(payload)
    return a, (await b.read_until(carrying(payload), "A's message"))[-1]


@check("3.1.envelope-fields")
async def _envelope_fields(p: Probe) -> str:
    """A relayed message is ``{"uid":..., "date":..., "message":...}``: the sender's uid, the server's
    time in ms as a number, the value unchanged; no ``alias`` key for a sender without one."""
    payload = {"n": 1, "text": p.token()}
    a, frame = await _relay_once(p, payload)
    envelope = frame.obj or {}
    expect(
        set(envelope) == {"uid", "date", "message"},
        f"the envelope's keys are {sorted(envelope)}, not uid, date, message",
    )
    expect(envelope["uid"] == a.uid, f"the envelope's uid is {envelope['uid']!r}, not the sender's {a.uid}")
    expect(is_date(envelope["date"]), f"the envelope's date is {envelope['date']!r}")
    return frame.show()


@check("3.1.envelope-no-type")
async def _envelope_no_type(p: Probe) -> str:
    """MUST: the envelope has NO ``type`` key (clients route on the payload's own ``type``)."""
    payload = {"type": "chat", "text": p.token()}
    _, frame = await _relay_once(p, payload)
    expect(frame.obj is not None and "type" not in frame.obj, f"the envelope has a type key: {frame.show()}")
    expect(frame.obj is not None and same(frame.obj.get("message"), payload), f"the payload changed: {frame.show()}")
    return "the payload's type stays inside message"


@check("3.1.envelope-alias")
async def _envelope_alias(p: Probe) -> str:
    """MUST: ``uid``, ``alias`` and ``date`` are top-level, never inside ``message``; ``alias`` is
    there only if the sender set one (never ``null``)."""
    payload = {"text": p.token()}
    _, frame = await _relay_once(p, payload, alias="Ann")
    envelope = frame.obj or {}
    expect(envelope.get("alias") == "Ann", f"the sender's alias is missing: {frame.show()}")
    expect(same(envelope.get("message"), payload), f"the payload changed: {frame.show()}")
    return frame.show()


@check("3.1.envelope-identical")
async def _envelope_identical(p: Probe) -> str:
    """The envelope is identical for every recipient of one message, the echo included: the
    server stamps ``date`` once and encodes once (compared byte for byte)."""
    channel = p.fresh()
    a = await p.join(channel, "A", "echo&alias=Ann")
    b, c = await p.join(channel, "B"), await p.join(channel, "C")
    payload = {"text": p.token(), "list": [1, 2.5, None, True, "é"]}
    await a.send_json(payload)
    texts = {(await peer.read_until(carrying(payload), "A's message"))[-1].text for peer in (a, b, c)}
    expect(len(texts) == 1, f"recipients got {len(texts)} different texts: {' | '.join(map(cut, texts))}")
    return "B, C and A's echo got the same bytes"


VALUES: list[Any] = ["text", 42, -3.5, 1e300, True, False, None, [], {}, [1, "two", {"three": 3}], {"é": "ü 😀\u2028"}]


@check("3.1.message-unchanged")
async def _message_unchanged(p: Probe) -> str:
    """The sender's JSON value is relayed unchanged, whatever its type (string, number, boolean,
    null, array, object, non-ASCII text)."""
    channel = p.fresh()
    a, b = await p.join(channel, "A"), await p.join(channel, "B")
    for value in VALUES:
        await a.send_json(value)
    got = relayed(await b.read_until(carrying(VALUES[-1]), "A's last message"))
    values = [envelope["message"] for envelope in got]
    expect(same(values, VALUES), f"B got {show(values)}, not {show(VALUES)}")
    return f"{len(VALUES)} values of every JSON type"


@check("3.1.push-envelope", needs=["namespace", "send_key"])
async def _push_envelope(p: Probe) -> str:
    """An HTTP-pushed message has no sender: ``{"date":...,"message":...}``, no uid, no alias."""
    channel = p.reserved()
    m = await p.join(channel, "M", p.keys())
    payload = {"pushed": p.token()}
    status, _, body = await push(p, channel, payload)
    expect(status == 200, f"the push got HTTP {status}: {cut(body.decode(errors='replace'))}")
    frame = (await m.read_until(carrying(payload), "the pushed message"))[-1]
    expect(frame.obj is not None and set(frame.obj) == {"date", "message"}, f"the pushed envelope is {frame.show()}")
    return frame.show()


async def _errs(p: Probe, sent: str, send: Callable[[Peer], Awaitable[None]], text: str) -> str:
    """A (with echo) does ``send``; A must get the error frame ``text``, stay open, and B nothing."""
    channel = p.fresh()
    a, b = await p.join(channel, "A", "echo"), await p.join(channel, "B")
    await send(a)
    seen = await marked(a, a, sent)
    got = errors(seen)
    expect(got == [text], f"after {sent}, A got errors {got}, not [{text!r}]")
    frame = next(frame for frame in seen if frame.obj is not None and frame.obj.get("type") == "error")
    assert frame.obj is not None
    expect(set(frame.obj) == {"type", "message", "date"}, f"the error frame is {frame.show()}")
    leaked = [frame.show() for frame in await marked(b, a, sent)]
    expect(not leaked, f"B received {leaked} after A's {sent}")
    return f"{text!r}, connection kept"


@check("3.4.error-unknown-uid")
async def _error_unknown_uid(p: Probe) -> str:
    """A direct message to an unknown uid gets the error naming the uid (MUST contain
    the uid); the connection stays open."""
    ghost = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(6))
    return await _errs(
        p, f"a direct message to {ghost}", lambda a: a.send_text(f"\x1f{ghost}\x1f{{}}"), user_not_found(ghost)
    )


@check("3.4.error-invalid-json")
async def _error_invalid_json(p: Probe) -> str:
    """A frame that is not JSON (``undefined``, what ``.send()`` sends) is never relayed: the error
    the protocol's invalid-JSON error, connection kept."""
    return await _errs(p, "the text 'undefined'", lambda a: a.send_text("undefined"), INVALID_JSON)


@check("3.4.error-binary")
async def _error_binary(p: Probe) -> str:
    """A binary frame (even of valid JSON) gets the error ``Binary messages are not supported.``"""

    async def send(a: Peer) -> None:
        await a.send_raw(a.conn.send_binary(b'{"binary":true}'), "[binary, 15 bytes]")

    return await _errs(p, "a binary frame", send, BINARY_UNSUPPORTED)
