"""Deterministic helpers for testing protocol code against the relay, with no sockets.

- :class:`FakeClock`: time that moves only when told.
- :func:`seeded_uids`: a reproducible uid source.
- :class:`DeferredBackplane`: joins decided only when told, to test transports against
  a backplane that answers later (a cluster's).
- :class:`VirtualClient`: a member of a hub driven by plain calls, which records the
  frames it receives as decoded JSON.

>>> from relaycore import Config, Hub
>>> hub = Hub(Config(), FakeClock(), seeded_uids(7))
>>> alice = VirtualClient(hub, "room", alias="Alice")
>>> bob = VirtualClient(hub, "room", echo=True)
>>> bob.send({"type": "chat", "text": "hi"})
>>> alice.received()[-1]["message"]
{'type': 'chat', 'text': 'hi'}
"""

from __future__ import annotations

import random
import string
from typing import Any

import msgspec

from ._backplane import JoinRequest
from ._errors import RelayUsageError
from ._hub import Hub, Member
from ._names import JoinOptions
from ._outbox import MessageOutbox

__all__ = ["DeferredBackplane", "FakeClock", "VirtualClient", "seeded_uids"]

_UID_ALPHABET = string.ascii_letters + string.digits


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
            raise ValueError("time only moves forward")
        self._now += seconds


def seeded_uids(seed: int) -> Any:
    """A uid source drawing from ``random.Random(seed)``: the same seed, the same uids."""
    return uid_source(random.Random(seed))


def uid_source(rng: random.Random) -> Any:
    """A uid source drawing 6 characters of ``[A-Za-z0-9]`` from ``rng``."""

    def next_uid() -> str:
        return "".join(rng.choices(_UID_ALPHABET, k=6))

    return next_uid


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
