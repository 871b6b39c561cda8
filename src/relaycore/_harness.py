"""The in-process harness behind :mod:`relaycore.testing` (see its docstring): the relay's
clock, uids and configuration for tests, and :class:`Harness`, whose members are
:class:`~relaycore.testing.VirtualMember` (:mod:`relaycore._virtual_member`)."""

from __future__ import annotations

import random
import string
from collections.abc import Coroutine, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import msgspec

from ._client import ClientConnection
from ._config import Config, LimitsConfig
from ._connection import Connection
from ._errors import HTTPError, RelayUsageError, RelayValueError
from ._hooks import Hooks, run_now
from ._host import Roster
from ._hub import Hub
from ._outbox import MessageOutbox
from ._session import Answer, ClientSession
from ._session_seams import PlainRequest
from ._texts import CLOSE_ABNORMAL, CLOSE_POLICY
from ._virtual_member import VirtualMember

__all__ = ["FakeClock", "HTTPAnswer", "Harness", "config_for_tests", "seeded_uids", "uid_source"]

_UID_ALPHABET = string.ascii_letters + string.digits
#: The per-address connection and push rates of :func:`config_for_tests`.
TEST_RATE_PER_ADDRESS = 10_000.0
#: The query keys of the connection options (docs/protocol.md, section 3).
_OPTION_KEYS = {
    "alias": "alias",
    "announce": "announce",
    "echo": "echo",
    "list": "list",
    "join_key": "joinKey",
    "send_key": "sendKey",
}


class FakeClock:
    """A clock for tests: starts at ``start`` (epoch seconds) and moves with :meth:`advance`."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        if seconds < 0:
            raise RelayValueError("time only moves forward")
        self._now += seconds


def seeded_uids(seed: int) -> Any:
    """A uid source drawing from ``random.Random(seed)``: the same seed, the same uids."""
    return uid_source(random.Random(seed))


def uid_source(rng: random.Random) -> Any:
    """A uid source drawing 6 characters of ``[A-Za-z0-9]`` from ``rng``."""

    def next_uid() -> str:
        return "".join(rng.choices(_UID_ALPHABET, k=6))

    return next_uid


def config_for_tests(**fields: Any) -> Config:
    """``Config(**fields)``, with the per-address connection and push rates raised to
    :data:`TEST_RATE_PER_ADDRESS` where they are left at their defaults.

    Every client of a test comes from one address, and the defaults (10 connections and 20
    pushes a second) would refuse the eleventh member of a test with 429. A rate set to
    anything else is kept, so the limits themselves can still be tested.

    >>> config = config_for_tests(limits=LimitsConfig(messages_burst=5))
    >>> config.limits.messages_burst, config.limits.connections_per_second_per_ip
    (5, 10000.0)
    """
    config = Config(**fields)
    defaults, limits = LimitsConfig(), config.limits
    raised = {
        name: TEST_RATE_PER_ADDRESS
        for name in ("connections_per_second_per_ip", "pushes_per_second_per_ip")
        if getattr(limits, name) == getattr(defaults, name)
    }
    return msgspec.structs.replace(config, limits=msgspec.structs.replace(limits, **raised))


# -- the harness ----------------------------------------------------------------------------


class HTTPAnswer:
    """The relay's answer to a plain HTTP request: ``status``, ``headers`` (lower-case
    names), ``body`` (bytes), and the body read as :attr:`text` or :meth:`json`."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, answer: Answer) -> None:
        self.status = answer.status
        self.headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in answer.headers}
        self.body = answer.body

    def __repr__(self) -> str:
        return f"<HTTPAnswer {self.status} {self.body[:60]!r}>"

    @property
    def text(self) -> str:
        """The body as text (``/version``, and the refusals of other requests, are text)."""
        return self.body.decode()

    def json(self) -> Any:
        """The body decoded as JSON (every answer of ``/push/`` and ``/health`` is)."""
        return msgspec.json.decode(self.body)


class Harness:
    """A relay in one object: virtual members, HTTP requests and time, all by plain calls.

    ``config`` is the relay's configuration; None means :func:`config_for_tests()`. Members
    and requests come from ``client`` (an address, for the per-address limits) unless they
    say otherwise. uids come from ``seeded_uids(seed)``, time from ``clock``, which starts at
    1,700,000,000 s (dates ``1700000000000``) unless you pass your own.

    After every call, everything the call caused has been delivered: each member's frames
    are there to read, and every answer a member owes the relay (its pongs, the answer to a
    close) has been given.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        seed: int = 0,
        clock: FakeClock | None = None,
        client: str = "127.0.0.1",
        hooks: Hooks | None = None,
    ) -> None:
        self.config = config_for_tests() if config is None else config
        self.clock = FakeClock() if clock is None else clock
        self.hub = Hub(self.config, self.clock, seeded_uids(seed))
        if hooks is not None:
            self.hub.hooks = hooks
        #: Async hooks to run once the call that started them is over (they must not wait).
        self._spawned: list[Coroutine[Any, Any, None]] = []
        self.hub.spawn = self._spawned.append
        self.client = client
        #: Members whose connection the relay has not finished with, in join order.
        self._open: list[VirtualMember] = []

    def __repr__(self) -> str:
        return f"<Harness {len(self._open)} open at {self.clock.monotonic()}>"

    def join(
        self,
        target: str,
        *,
        alias: str | None = None,
        announce: bool | None = None,
        echo: bool | None = None,
        list: bool | None = None,  # the protocol's own name for the option
        join_key: str | None = None,
        send_key: str | None = None,
        client: str | None = None,
        responsive: bool = True,
    ) -> VirtualMember:
        """Open a WebSocket to ``target`` and read the self-join, like a client's ``connect``.

        ``target`` is a path (``"/c/room?alias=Ann&announce"``, also ``/r/...``) or a bare
        channel name (``"team:ops"``, percent-encoded here). The keywords are the connection
        options; one that is not None replaces that option in the target's query. With
        ``responsive=False`` the member answers neither pings nor close frames (see
        :attr:`VirtualMember.responsive`). A refused upgrade raises
        :class:`~relaycore.HTTPError` with the relay's status, text and headers.
        """
        options: dict[str, str | bool | None] = {"alias": alias, "announce": announce, "echo": echo, "list": list}
        options.update(join_key=join_key, send_key=send_key)
        wire = ClientConnection(
            "relay.test", _target(target, options), binary=False, answer_pings=responsive, answer_close=responsive
        )
        conn = Connection(self.hub, client=self.client if client is None else client)
        member = VirtualMember(conn, wire, self._flush)
        conn.outbox.peer = member
        self._open.append(member)
        conn.receive_data(wire.request())
        self._flush()
        if member._refusal is not None:
            refused = member._refusal
            headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in refused.headers]
            raise HTTPError(refused.status, refused.body.decode(errors="replace"), headers)
        if member.hello is None:  # the opt-in /echo endpoint: no channel, no self-join
            conn.connection_lost()
            self._flush()
            raise RelayUsageError(f"{target!r} opened no channel (the harness's members join channels)")
        return member

    def http(
        self,
        method: str,
        target: str,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        client: str | None = None,
    ) -> HTTPAnswer:
        """One plain HTTP request (``/push/...``, ``/health``, ``/version``), as the relay answers it."""
        outbox = MessageOutbox(self.config.limits.outbound_buffer_bytes, self.hub.ready)
        session = ClientSession(self.hub, outbox, PlainRequest(), client=self.client if client is None else client)
        pairs = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()]
        answer = session.request(method.encode("ascii"), target.encode("ascii"), pairs, body)
        self._flush()
        if answer is None:
            raise RelayUsageError("the harness answers requests decided at once (no cluster)")
        return HTTPAnswer(answer)

    def push(self, channel: str, value: Any, *, send_key: str | None = None, client: str | None = None) -> HTTPAnswer:
        """``POST /push/<channel>`` with ``value`` as its JSON body (and ``x-send-key``).

        The answer's :meth:`~HTTPAnswer.json` is ``{"ok": true, "recipients": n}`` or
        ``{"ok": false, "error": ...}``.
        """
        headers = {"content-type": "application/json"}
        if send_key is not None:
            headers["x-send-key"] = send_key
        body = msgspec.json.encode(value)
        return self.http("POST", "/push/" + quote(channel, safe=":/"), body=body, headers=headers, client=client)

    def advance(self, seconds: float) -> None:
        """Move time ``seconds`` forward, running every connection's timers as they fall due
        (in time order, then join order), then the hub's housekeeping."""
        if seconds < 0:
            raise RelayValueError("time only moves forward")
        clock = self.clock
        # To the microsecond, so that advancing 29.9 s then 0.1 s lands on a 30 s deadline.
        end = round(clock.monotonic() + seconds, 6)
        while True:
            due = min((member.connection.deadline for member in self._open), default=end + 1)
            if due > end:
                break
            clock.advance(max(0.0, due - clock.monotonic()))
            now = max(due, clock.monotonic())  # never a rounding error short of the deadline
            for member in tuple(self._open):
                if member.connection.deadline <= now:
                    member.connection.tick(now)
            self._flush()
        clock.advance(max(0.0, end - clock.monotonic()))
        self.hub.tick(clock.monotonic())
        self._flush()

    def shutdown(self) -> None:
        """The relay goes away: every member is closed with 1001, no leaves are announced."""
        self.hub.shutdown()
        for member in tuple(self._open):
            member.connection.shutdown()
        self._flush()

    # -- the host's calls (synchronous here: nothing waits) -----------------------------------

    def publish(self, channel: str, message: Any, *, to: str | None = None) -> int:
        """Deliver ``message`` to ``channel``'s members (or member ``to``) as an HTTP push:
        how many it reached. As ``RelayServer.publish``, without the await."""
        reached = self.hub.publish(channel, message, to=to)
        self._flush()
        assert reached is not None  # one process answers at once
        return reached

    def presence(self, channel: str) -> Roster:
        """``channel``'s total and announced members."""
        return self.hub.roster(channel)

    def disconnect(self, channel: str, uid: str, *, code: int = CLOSE_POLICY, reason: str = "") -> bool:
        """Close member ``uid`` of ``channel`` with ``code``: whether it was found."""
        found = self.hub.disconnect(channel, uid, code=code, reason=reason)
        self._flush()
        return found

    def _flush(self) -> None:
        """Deliver every outbox to its member, until nobody owes anybody anything."""
        hub = self.hub
        while hub.ready or self._spawned:
            while self._spawned:
                run_now(self._spawned.pop(0))
            for outbox in hub.take_ready():
                member: VirtualMember | None = outbox.peer
                while outbox:
                    data = outbox.view()
                    if member is None:
                        outbox.consume(len(data))
                        continue
                    member.connection.sent(len(data))
                    member._receive(data)
        for member in tuple(self._open):
            if member.connection.finished:
                self._open.remove(member)
                if member.closed is None and member._refusal is None:
                    member.closed = (CLOSE_ABNORMAL, "")  # the relay dropped it without a close frame


def _target(target: str, options: dict[str, str | bool | None]) -> str:
    """The request target of a join: ``target``'s path, its query with ``options`` merged in."""
    if not target.startswith("/"):
        target = "/c/" + quote(target, safe=":/")
    parts = urlsplit(target)
    given = {
        _OPTION_KEYS[name]: ("true" if value else "false") if isinstance(value, bool) else value
        for name, value in options.items()
        if value is not None
    }
    pairs = [(key, value) for key, value in parse_qsl(parts.query, keep_blank_values=True) if key not in given]
    pairs += given.items()
    return parts.path + ("?" + urlencode(pairs, quote_via=quote) if pairs else "")
