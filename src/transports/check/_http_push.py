"""Section 5 of the contract: HTTP push."""

from __future__ import annotations

from typing import Any

import msgspec

from relaycore.texts import INVALID_JSON_BODY

from ._expect import carrying, expect, push, same, show
from ._registry import Failed, check
from ._wire import Probe, cut

__all__: list[str] = []  # the checks register themselves in CHECKS


def _answer(body: bytes) -> dict[str, Any]:
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise Failed(f"the push answer is not JSON: {cut(body.decode(errors='replace'))}") from None
    if not isinstance(document, dict):
        raise Failed(f"the push answer is not a JSON object: {show(document)}")
    return document


@check("5.push-200", needs=["namespace", "send_key"])
async def _push_200(p: Probe) -> str:
    """``POST /push/<channel>`` with ``x-send-key`` delivers the body to the channel and answers
    200 ``{"ok":true,"recipients":n}`` (0 recipients is still 200)."""
    channel = p.reserved()
    status, _, body = await push(p, channel, {"nobody": "home"})
    expect(status == 200, f"a push to an empty channel got HTTP {status}, not 200")
    expect(same(_answer(body), {"ok": True, "recipients": 0}), f"a push to nobody answered {cut(body.decode())}")
    members = [await p.join(channel, label, p.keys()) for label in "MN"]
    payload = {"pushed": p.token()}
    status, _, body = await push(p, channel, payload)
    expect(status == 200 and same(_answer(body), {"ok": True, "recipients": 2}), f"HTTP {status} {cut(body.decode())}")
    for peer in members:
        await peer.read_until(carrying(payload), "the pushed message")
    return 'recipients 0, then 2: {"ok":true,"recipients":2}'


@check("5.push-400", needs=["namespace", "send_key"])
async def _push_400(p: Probe) -> str:
    """A body that is not JSON gets 400 with the protocol's JSON error."""
    status, _, body = await push(p, p.reserved(), body=b"{not json")
    expect(status == 400, f"an invalid JSON body got HTTP {status}, not 400")
    document = _answer(body)
    expect(same(document, {"ok": False, "error": INVALID_JSON_BODY}), f"the 400 answer is {show(document)}")
    return f"400 {msgspec.json.encode({'ok': False, 'error': INVALID_JSON_BODY}).decode()}"


@check("5.push-403")
async def _push_403(p: Probe) -> str:
    """A missing or wrong key, or a channel with no reserved namespace with a send key, gets 403
    ``{"ok":false,"error":"..."}``."""
    cases: list[tuple[str, str | None, str]] = [(p.fresh(), "some-key", "an open channel")]
    if p.settings.namespace is not None:
        cases += [(p.reserved(), f"wrong-{p.token()}", "a wrong key"), (p.reserved(), None, "no key")]
    for channel, key, what in cases:
        status, _, body = await push(p, channel, {"x": 1}, key=key)
        expect(status == 403, f"a push with {what} got HTTP {status}, not 403")
        document = _answer(body)
        expect(
            document.get("ok") is False and isinstance(document.get("error"), str),
            f"the 403 answer is {show(document)}",
        )
    return f"403 for {', '.join(what for _, _, what in cases)}"


@check("5.push-405")
async def _push_405(p: Probe) -> str:
    """A method other than POST on ``/push/<channel>`` gets 405."""
    status, _, _ = await p.http("GET", f"{p.base.prefix}/push/{p.fresh()}")
    expect(status == 405, f"GET /push/<channel> got HTTP {status}, not 405")
    return "GET -> 405"


@check("5.push-413", tags=["config"], needs=["namespace", "send_key"])
async def _push_413(p: Probe) -> str:
    """A body over the message-size limit (100 KiB by default; 200 KiB sent) gets 413."""
    status, _, _ = await push(p, p.reserved(), "x" * (200 * 1024))
    expect(status == 413, f"a 200 KiB body got HTTP {status}, not 413")
    return "200 KiB -> 413"
