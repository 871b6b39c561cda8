"""Deterministic helpers for testing code that speaks the relay protocol, with no sockets.

- :class:`Harness`: a whole relay in one object, driven by plain calls. Its members
  (:class:`VirtualMember`) come in through the native server's front door: an HTTP upgrade
  and WebSocket frames fed to a :class:`~relaycore.Connection`, whose
  :class:`~relaycore.ClientSession` decides everything, exactly as for a socket. HTTP
  requests (:meth:`Harness.push`, :meth:`Harness.http`) go to a ``ClientSession`` too.
- :class:`FakeClock`: time that moves only when told. :meth:`Harness.advance` moves it and
  runs every timer that falls due meanwhile (pings, dead peers, close timeouts).
- :func:`seeded_uids`: a reproducible uid source. :func:`config_for_tests`: the defaults,
  with the per-address rates raised, since every test client comes from one address.
- :class:`DeferredBackplane`: joins decided only when told, to test transports against
  a backplane that answers later (a cluster's).
- :class:`VirtualClient`: a member of a hub itself (no session, no framing), which records
  the frames it receives as decoded JSON.

Nothing here opens a socket, starts a loop or a thread, or reads the time: the same calls
give the same frames, uids and dates on every run.

>>> h = Harness()
>>> ann = h.join("/c/room?alias=Ann&announce")
>>> bob = h.join("room", alias="Bob")
>>> ann.expect("join", total=2)["date"]
1700000000000
>>> bob.send({"type": "chat", "text": "hi"})
>>> ann.expect("message", uid=bob.uid, alias="Bob")["message"]
{'type': 'chat', 'text': 'hi'}
>>> ann.expect_nothing()
"""

from __future__ import annotations

from typing import Any

import msgspec

from ._channel import Member
from ._errors import RelayUsageError
from ._harness import FakeClock, Harness, HTTPAnswer, config_for_tests, seeded_uids
from ._hub import Hub
from ._names import JoinOptions
from ._outbox import MessageOutbox
from ._protocols import JoinRequest
from ._virtual_member import VirtualMember

__all__ = [
    "DeferredBackplane",
    "FakeClock",
    "HTTPAnswer",
    "Harness",
    "VirtualClient",
    "VirtualMember",
    "config_for_tests",
    "seeded_uids",
]


class VirtualClient:
    """A channel member with no socket: sends with plain calls, records what it receives."""

    def __init__(self, hub: Hub, channel: str, **options: Any) -> None:
        self.hub = hub
        self.outbox = MessageOutbox(hub.config.limits.outbound_buffer_bytes, hub.ready)
        self.kicked: tuple[int, str] | None = None
        self._inbox: list[Any] = []
        member = hub.join(channel, JoinOptions(**options), self.outbox, self)
        if member is None:
            raise RelayUsageError("a VirtualClient needs a hub whose backplane decides joins at once")
        self.member: Member = member

    @property
    def uid(self) -> str:
        return self.member.uid

    def kick(self, code: int, reason: str) -> None:
        self.kicked = (code, reason)

    def send(self, value: Any, to: str | None = None) -> None:
        """Send a JSON-able value (to one uid when ``to`` is given), like a real client."""
        self.send_text(msgspec.json.encode(value).decode(), to)

    def send_text(self, text: str | bytes, to: str | None = None) -> None:
        """Send a raw frame's content (``bytes`` for a binary frame), as the wire would.

        With ``to``, the text is sent as a direct message (``\x1f<uid>\x1f<text>``).
        """
        if to is not None:
            assert isinstance(text, str), "direct messages are text"
            text = f"\x1f{to}\x1f{text}"
        self.hub.receive(self.member, text)

    def leave(self) -> None:
        self.hub.leave(self.member)

    def received(self) -> list[Any]:
        """Every frame received so far, decoded, oldest first."""
        self._inbox.extend(msgspec.json.decode(chunk) for chunk in self.outbox.take())
        return self._inbox


class DeferredBackplane:
    """A backplane that decides joins only when told, as a cluster's does after a round trip.

    >>> from relaycore import Config, Hub
    >>> backplane = DeferredBackplane()
    >>> hub = Hub(Config(), FakeClock(), seeded_uids(1), backplane=backplane)
    >>> len(backplane.requests), backplane.decide()
    (0, 0)
    """

    def __init__(self) -> None:
        #: Joins waiting for a decision, oldest first.
        self.requests: list[JoinRequest] = []
        self._hub: Hub | None = None

    def join(self, hub: Hub, request: JoinRequest) -> None:
        self._hub = hub
        self.requests.append(request)

    def decide(self) -> int:
        """Decide every waiting join, oldest first (in this process); return how many."""
        requests, self.requests = self.requests, []
        for request in requests:
            assert self._hub is not None
            self._hub.resolve_join(request)
        return len(requests)
