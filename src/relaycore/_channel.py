"""A channel and its members, and what a member needs of its connection.

A :class:`Channel` exists while it has members; a :class:`Member` is one connection's
membership of it, holding its :class:`Session` (the way to close that connection) and its
outbox. The hub (:mod:`relaycore._hub`) decides everything about them; this module only
keeps them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ._config import NamespaceConfig
from ._counters import Tally
from ._errors import HTTPError
from ._forms import WEBSOCKET, WireForm
from ._limits import TokenBucket
from ._names import JoinOptions
from ._outbox import Outbox

if TYPE_CHECKING:
    from ._crowd import Crowd

__all__ = ["Channel", "Departure", "JoiningSession", "Member", "Present", "Session"]


class Session(Protocol):
    """What the hub needs of a connection: a way to close it on its own initiative.

    A session whose joins a backplane may decide later (see :class:`~relaycore.Backplane`)
    also has ``joined(member)`` and ``join_refused(error)``, as
    :class:`~relaycore.ClientSession` does.
    """

    def kick(self, code: int, reason: str) -> None:
        """Close the connection with a WebSocket close ``code`` (the hub already removed it)."""


@runtime_checkable
class JoiningSession(Session, Protocol):
    """A session that can wait for a join a backplane decides later."""

    def joined(self, member: Member) -> None:
        """The join was admitted: ``member`` is in, its self-join is in the outbox."""

    def join_refused(self, error: HTTPError) -> None:
        """The join was refused (403): nothing changed in the hub."""


class Present(Protocol):
    """A member as presence frames show it, here or (in a cluster) on another node."""

    uid: str
    alias: str | None
    announce: bool


class Member:
    """One connection's membership of a channel."""

    __slots__ = (
        "alias",
        "announce",
        "bucket",
        "can_send",
        "channel",
        "echo",
        "left",
        "outbox",
        "session",
        "uid",
        "warnings",
    )

    def __init__(
        self, uid: str, options: JoinOptions, channel: Channel, outbox: Outbox, session: Session, bucket: TokenBucket
    ) -> None:
        self.uid = uid
        self.alias = options.alias
        self.announce = options.announce
        self.echo = options.echo
        self.can_send = True
        self.channel = channel
        self.outbox = outbox
        self.session = session
        #: Messages per second this member may send.
        self.bucket = bucket
        #: When the recent rate-limit warnings were given (monotonic seconds).
        self.warnings: list[float] = []
        #: The close code the client left with, when it closed by itself (None: unknown).
        self.left: int | None = None

    def __repr__(self) -> str:
        return f"<Member {self.uid} of {self.channel.name!r}>"

    @property
    def joined(self) -> bool:
        """True until the member has left its channel."""
        return self.channel.members.get(self.uid) is self


class Channel:
    """A named room; exists while it has members."""

    __slots__ = ("_everyone", "_forms", "crowd", "join_key", "members", "name", "reservation", "send_key", "tally")

    def __init__(self, name: str, reservation: NamespaceConfig | None, tally: Tally | None = None) -> None:
        self.name = name
        self.reservation = reservation
        #: The counters of the channel's namespace (see :class:`~relaycore.Counters`).
        self.tally = tally if tally is not None else Tally("")
        self.join_key: str | None = None
        self.send_key: str | None = None
        #: Members by uid, in join order.
        self.members: dict[str, Member] = {}
        self._everyone: tuple[Member, ...] | None = None
        self._forms: tuple[tuple[WireForm, tuple[Member, ...]], ...] | None = None
        #: Its coalesced presence, when it has more members than a set count (see
        #: :mod:`relaycore._crowd`); None: every join and leave is told as it happens.
        self.crowd: Crowd | None = None

    @property
    def everyone(self) -> tuple[Member, ...]:
        """An immutable snapshot of the members (rebuilt only after a join or leave)."""
        snapshot = self._everyone
        if snapshot is None:
            snapshot = self._everyone = tuple(self.members.values())
        return snapshot

    @property
    def forms(self) -> tuple[tuple[WireForm, tuple[Member, ...]], ...]:
        """The members by wire form, each group in join order; ``()`` while every member is
        on WebSocket (rebuilt only after a join or leave)."""
        groups = self._forms
        if groups is None:
            found: dict[WireForm, list[Member]] = {}
            for member in self.members.values():
                found.setdefault(member.outbox.form, []).append(member)
            if len(found) == 1 and WEBSOCKET in found:
                groups = ()
            else:
                groups = tuple((form, tuple(members)) for form, members in found.items())
            self._forms = groups
        return groups

    def _changed(self) -> None:
        self._everyone = None
        self._forms = None


#: A member on its way out: the close code and reason its session gets (None: it left by
#: itself, nothing to close).
Departure = tuple["Member", int | None, str]
