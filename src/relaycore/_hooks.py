"""The host's hooks: who may join (``authorize``), who joined and left, and each message.

Theory of operation. An embedder passes one :class:`Hooks` to its door (``RelayServer``,
``create_app``, ``Harness``); the hub holds it. Every join on every door goes through
:meth:`Hub.join <relaycore.Hub.join>` with a :class:`JoinAttempt` (what the door knows of
the client: its headers, cookies, address, transport). The protocol's keys are checked
first; then ``authorize(attempt)`` answers :class:`Admit` (perhaps fixing the alias and
``announce``, or taking away the right to send) or :class:`Refuse` (the client gets that
status and text, as any refused join). A plain function decides at once. An ``async`` one
cannot be awaited by the hub, which never waits: the join becomes a join decided later (the
seam a cluster's joins use), and the door runs :meth:`Authorizing.run` in a task of its
own, so nobody else waits for it. One that raises refuses with 500; the hub's
``hook_failed`` is told the exception (the doors log its type, never the connection's
secrets).

``on_join(member)`` and ``on_leave(member, code)`` are told after the fact;
``on_message(member, message)`` sees each member's message, parsed, before it is relayed,
and returns it, a replacement, or None to drop it (the sender is not told). It runs inside
the hub's decision, so it must be a plain function. An async ``on_join``/``on_leave`` runs in
a task of the door's (``hub.spawn``); without one (the Harness) it runs to its end at once,
as long as it never really waits.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import msgspec

from ._errors import HTTPError, RelayUsageError
from ._names import JoinOptions
from ._texts import INTERNAL_ERROR_TEXT

if TYPE_CHECKING:
    from ._channel import Member
    from ._protocols import JoinRequest

__all__ = ["Admit", "Authorizing", "Hooks", "JoinAttempt", "Refuse", "apply_decision", "finish", "run_now"]


class JoinAttempt(msgspec.Struct, kw_only=True, frozen=True):
    """A client asking to join, as ``authorize`` sees it (before the member exists)."""

    #: The channel's name.
    channel: str
    alias: str | None = None
    announce: bool = False
    echo: bool = False
    list: bool = False
    #: Whether the client gave a joinKey or a sendKey (they were checked already).
    keys: bool = False
    #: The request's headers, names lower-case (several values joined with ", ").
    headers: dict[str, str] = {}
    #: The request's cookies, by name.
    cookies: dict[str, str] = {}
    #: The client's address as the relay decided it (trusted proxies considered).
    client: str = ""
    #: How the client came: "websocket", "sse", "ndjson", "long-poll", or a door's form name.
    transport: str = "websocket"


class Admit(msgspec.Struct, kw_only=True, frozen=True):
    """``authorize``'s yes: optionally the member's alias and ``announce``, and whether it may send."""

    alias: str | None = None
    announce: bool | None = None
    can_send: bool = True


class Refuse(msgspec.Struct, frozen=True):
    """``authorize``'s no: the client gets ``status`` with ``message`` (text/plain), on every door."""

    status: int = 403
    message: str = "Forbidden."


class Hooks(msgspec.Struct, kw_only=True):
    """The host's hooks; every field is optional (see the module docstring)."""

    authorize: Callable[[JoinAttempt], Admit | Refuse | Awaitable[Admit | Refuse]] | None = None
    on_join: Callable[[Member], Any] | None = None
    on_leave: Callable[[Member, int], Any] | None = None
    on_message: Callable[[Member, Any], Any] | None = None


def attempt_for(channel: str, options: JoinOptions, headers: Any, client: str, transport: str) -> JoinAttempt:
    """The :class:`JoinAttempt` of a request (``headers``: the raw header pairs)."""
    joined: dict[str, str] = {}
    for name, value in headers:
        key = bytes(name).decode("latin-1").lower()
        text = bytes(value).decode("latin-1")
        joined[key] = f"{joined[key]}, {text}" if key in joined else text
    return JoinAttempt(
        channel=channel,
        alias=options.alias,
        announce=options.announce,
        echo=options.echo,
        list=options.list,
        keys=options.join_key is not None or options.send_key is not None,
        headers=joined,
        cookies=_cookies(joined.get("cookie", "")),
        client=client,
        transport=transport,
    )


def _cookies(header: str) -> dict[str, str]:
    cookies = {}
    for part in header.replace(",", ";").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name:
            cookies[name] = value.strip().strip('"')
    return cookies


def apply_decision(request: JoinRequest, decision: object) -> None:
    """Make ``authorize``'s answer the request's: HTTPError for a refusal, new options for a yes."""
    if isinstance(decision, Refuse):
        raise HTTPError(decision.status, decision.message)
    if not isinstance(decision, Admit):
        raise RelayUsageError(f"authorize returned {decision!r}: it must return relaycore.Admit or relaycore.Refuse")
    options = request.options
    changes: dict[str, Any] = {}
    if decision.alias is not None:
        changes["alias"] = decision.alias
    if decision.announce is not None:
        changes["announce"] = decision.announce
    if changes:
        request.options = msgspec.structs.replace(options, **changes)
    request.can_send = decision.can_send


def refused_by(exc: BaseException) -> HTTPError:
    """The refusal of a join whose ``authorize`` raised: 500, nothing of the exception said."""
    if isinstance(exc, HTTPError):
        return exc
    return HTTPError(500, INTERNAL_ERROR_TEXT)


class Authorizing:
    """An async ``authorize`` running for one join (the door runs :meth:`run` in a task)."""

    __slots__ = ("decide", "pending")

    def __init__(self, pending: Awaitable[Any], decide: Callable[[object, BaseException | None], None]) -> None:
        self.pending = pending
        self.decide = decide

    async def run(self) -> None:
        """Await the decision, then let the hub act on it (the door flushes after)."""
        try:
            decision = await self.pending
        except Exception as exc:  # a hook's failure refuses this join only
            self.decide(None, exc)
            return
        self.decide(decision, None)


def finish(result: object, spawn: Callable[[Coroutine[Any, Any, None]], None] | None) -> None:
    """Let an ``on_join``/``on_leave`` result that is a coroutine run (``spawn``: the door's task)."""
    if inspect.isawaitable(result):
        if spawn is not None:
            spawn(_drain(result))
        else:
            run_now(result)


async def _drain(awaitable: Awaitable[Any]) -> None:
    await awaitable


def run_now(awaitable: Awaitable[Any]) -> Any:
    """Run a coroutine that never really waits to its end, without an event loop (the Harness)."""
    coroutine = _drain(awaitable) if not inspect.iscoroutine(awaitable) else awaitable
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RelayUsageError("a hook waited for something: the Harness runs only hooks that never wait")
