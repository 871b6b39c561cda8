"""The hub: channels, members, presence, access keys and routing.

Theory of operation. A :class:`Hub` owns every channel of one relay process. A
transport (or the per-connection driver) calls :meth:`Hub.join` with a :class:`Session`
(something the hub can ``kick``) and an :class:`~relaycore.Outbox`; the hub answers with a
:class:`Member`. From then on, :meth:`Hub.send`, :meth:`Hub.send_direct` and
:meth:`Hub.leave` route messages. Nothing here knows about WebSocket framing beyond one
shared frame build: every message is encoded ONCE, framed ONCE, and the same two bytes
objects are put into every recipient's outbox.

Time and identity are injected: ``clock`` gives the wall time for ``date`` stamps, ``uids``
makes candidate uids. The hub never touches sockets or the event loop.

The hub is made of three parts, each a rule written once, which a cluster node
(:class:`~relaycore.ClusterHub`, a hub too) uses as they are:

- :attr:`Hub.access` (``relaycore._access.Access``): who may join, send and push;
- :attr:`Hub.presence` (``relaycore._presence.Presence``): uids, self-joins, join and
  leave events, and the sweep of the members too slow to take the leaves;
- :attr:`Hub.fanout` (``relaycore._fanout.Fanout``): one encoded message into many
  outboxes, the slow consumers departing together.

Where a cluster node differs, the hub calls one of its own public methods, which the node
overrides: :meth:`Hub.broadcast` (a member's message also goes to the other nodes),
:meth:`Hub.forward` (a direct message to a uid on another node), :meth:`Hub.deliver_push`
(a push counts every node's members) and :meth:`Hub.departed` (a node asks Redis before
anyone hears of a leave). Joins go through the backplane (``relaycore._protocols``).
Every departure, whatever its cause, is one call of :meth:`Hub.depart`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import msgspec

from ._access import Access
from ._channel import Channel, Departure, JoiningSession, Member, Session
from ._config import Config
from ._counters import Counters
from ._errors import HTTPError, RelayUsageError
from ._fanout import Fanout, envelope
from ._hooks import Hooks, JoinAttempt
from ._host import HostSide
from ._http_sessions import HTTPSessions
from ._limits import ClientLimiter, TrustedProxies
from ._names import JoinOptions
from ._origins import Origins
from ._outbox import Outbox
from ._presence import Presence
from ._protocols import Backplane, Clock, JoinRequest, LocalBackplane, PushWaiter, UidSource
from ._ready import ReadyOutboxes
from ._texts import (
    BINARY_UNSUPPORTED,
    CLOSE_POLICY,
    INVALID_JSON,
    RATE_LIMITED,
    SEND_KEY_REQUIRED,
    TOO_MANY_CONNECTIONS,
    TOO_MANY_PUSHES,
    rate_limited,
    user_not_found,
)
from ._wire import ErrorFrame, encode, parse_json

__all__ = ["Hub"]


#: A message not relayed: the drop reason (a key of ``Tally.dropped``) and the error text sent.
Dropped = tuple[str, str]

#: Rate-limit warnings within WARNING_WINDOW seconds before the sender is closed.
MAX_WARNINGS = 3
WARNING_WINDOW = 60.0


class Hub(HostSide, ReadyOutboxes):
    """Every channel of one relay, and the routing between their members.

    >>> from relaycore.testing import FakeClock, seeded_uids
    >>> hub = Hub(Config(), FakeClock(), seeded_uids(1))
    """

    def __init__(self, config: Config, clock: Clock, uids: UidSource, *, backplane: Backplane | None = None) -> None:
        self.config = config
        self.clock = clock
        #: Decides joins: at once in memory (the default), or later for a cluster.
        self.backplane: Backplane = backplane or LocalBackplane()
        #: What the relay did, counted where it decided it (read by metrics exporters).
        self.counters = Counters(config.namespaces)
        #: Who may join, send and push: the key rules.
        self.access = Access(config.namespaces)
        #: Delivery: one encoded message into many outboxes.
        self.fanout = Fanout(self.depart)
        #: Joins and leaves: uids, self-joins, join and leave events.
        self.presence = Presence(config, clock, uids, self.now_ms, self.access, self.counters, self.fanout)
        #: Live channels by name.
        self.channels: dict[str, Channel] = {}
        #: Outboxes with bytes to flush; see :meth:`take_ready`.
        self.ready: list[Outbox] = []
        #: Set by :meth:`shutdown`: members then leave without presence events.
        self.closing = False
        limits = config.limits
        #: WebSocket joins per client address.
        self.joins = ClientLimiter(limits.connections_per_second_per_ip, max(1.0, limits.connections_per_second_per_ip))
        #: HTTP pushes per client address.
        self.pushes = ClientLimiter(limits.pushes_per_second_per_ip, max(1.0, limits.pushes_per_second_per_ip))
        #: The proxies believed about who their client is, and the one header they say it in.
        self.trusted_proxies = TrustedProxies(config.server.trusted_proxies, header=config.server.forwarded_header)
        #: The web origins whose pages may open WebSockets and read the HTTP endpoints.
        self.origins = Origins(config.server.allowed_origins)
        #: The host's hooks, a door's task runner and where hook failures go (``_host``).
        self.hooks = Hooks()
        self.spawn: Callable[[Coroutine[Any, Any, None]], None] | None = None
        self.hook_failed: Callable[[str, BaseException], None] = _ignore
        #: The HTTP door's members by token; a door turns it on by giving it a token
        #: source (``hub.http.tokens``), since the core has no randomness of its own.
        self.http = HTTPSessions(config.http)

    def now_ms(self) -> int:
        """The ``date`` stamp: the injected wall clock in whole milliseconds."""
        return int(self.clock.time() * 1000)

    @property
    def connections(self) -> int:
        """How many members all channels hold."""
        return sum(len(channel.members) for channel in self.channels.values())

    def health(self) -> dict[str, Any]:
        """What ``/health`` reports of the hub."""
        return {"channels": len(self.channels), "connections": self.connections}

    def namespace(self, name: str) -> str:
        """The namespace label of channel ``name``: the reserved prefix covering it, or ``""``."""
        return self.access.lookup(name)[0]

    # -- membership ---------------------------------------------------------------

    def join(
        self,
        name: str,
        options: JoinOptions,
        outbox: Outbox,
        session: Session,
        greeting: bytes = b"",
        attempt: JoinAttempt | None = None,
    ) -> Member | None:
        """Ask to admit a connection to channel ``name``; the backplane decides.

        Decided at once (always, with the default in-memory backplane): raises HTTPError(403)
        when the keys do not allow it (no state is changed then); on success returns the
        member, the joiner's outbox holds ``greeting`` (bytes that must come first, such as
        the handshake response) then its self-join frame, and every other member got a join
        event. Decided later: returns None, and the session hears ``joined(member)`` or
        ``join_refused(error)`` from :meth:`resolve_join`. With ``attempt`` (what the door
        knows of the client), the host's ``authorize`` hook decides first (``_host``).
        """
        return self._join_request(JoinRequest(name, options, outbox, session, greeting), attempt)

    def resolve_join(self, request: JoinRequest) -> Member | None:
        """A backplane decided ``request`` later: admit it now and tell its session."""
        session = request.session
        if not isinstance(session, JoiningSession):
            raise RelayUsageError("a join decided later needs a session with joined() and join_refused()")
        try:
            member = self.admit(request)
        except HTTPError as exc:
            session.join_refused(exc)
            return None
        session.joined(self._admitted(request, member))  # type: ignore[arg-type]
        return member

    def admit(self, request: JoinRequest) -> Member:
        """Decide ``request`` in this process (the in-memory backplane's decision)."""
        name = request.name
        channel = self.channels.get(name)
        fresh = channel is None
        if channel is None:
            channel = self.presence.open(name)
        can_send = self.access.join(channel, request.options, fresh)
        if fresh:
            self.channels[name] = channel
        members = channel.members
        uid = self.presence.new_uid(members.__contains__)
        return self.presence.enroll(channel, uid, request, can_send, members.values())

    def leave(self, member: Member) -> None:
        """Remove a member (any way it goes); the others get a leave event.

        Calling it again for the same member does nothing.
        """
        if member.joined:
            self.depart(member.channel, [(member, None, "")])

    def shutdown(self) -> None:
        """The relay is going away: from now on nobody is told about leaves.

        Every member is being closed at once; a leave event to each of them about all the
        others would be a storm of frames nobody will read.
        """
        self.closing = True

    def kick(self, member: Member, code: int, reason: str) -> None:
        """Remove a member on the relay's initiative and ask its session to close."""
        if member.joined:
            self.depart(member.channel, [(member, code, reason)])

    def depart(self, channel: Channel, departures: list[Departure]) -> None:
        """Remove members from ``channel``, tell the others, then close the kicked ones.

        Every departure goes through here: a leave, a kick, the slow consumers of one
        delivery. It never recurses, however many members go at once: the members left are
        told once (:meth:`departed`, which may find more slow consumers and add them to the
        departures), a channel that emptied vanishes with its keys and uids, and only then
        are the sessions asked to close (which never calls back into the hub's routing).
        """
        members = channel.members
        before = len(members)
        gone = self.presence.remove(channel, departures)
        if not gone:
            return
        self.departed(channel, gone, before)
        if self.hooks.on_leave is not None:
            self._departed_hooks(gone)
        if not members and self.channels.get(channel.name) is channel:
            del self.channels[channel.name]
        for member, code, reason in gone:
            if code is not None:
                member.session.kick(code, reason)

    def departed(self, channel: Channel, gone: list[Departure], before: int) -> None:
        """``gone`` left ``channel``, which had ``before`` members: tell the others.

        One relay announces the leaves now (unless it is shutting down), sweeping into
        ``gone`` the members too slow to take them. A cluster node overrides this: it asks
        Redis first, and its members hear the leaves when Redis's record comes back.
        """
        if channel.members and not self.closing:
            self.presence.announce_leaves(channel, gone, before)

    # -- limits -------------------------------------------------------------------

    def admit_connection(self, client: str) -> None:
        """Count a new WebSocket connection from ``client``; HTTPError(429) over the rate."""
        if not self.joins.take(client, self.clock.monotonic()):
            raise HTTPError(429, TOO_MANY_CONNECTIONS, [(b"retry-after", b"1")])

    def tick(self, now: float) -> None:
        """Periodic housekeeping: forget the rate state of clients gone quiet; coalesced presence."""
        self.joins.prune(now)
        self.pushes.prune(now)
        if not self.closing:
            self.presence.tick(now)
        if self.http.polls:
            self.http.tick(now)

    def _limit(self, member: Member) -> Dropped | None:
        """Spend a message token (None); over the rate, warn (and close at the third warning)."""
        now = self.clock.monotonic()
        if member.bucket.take(now):
            return None
        warnings = member.warnings
        warnings[:] = [t for t in warnings if now - t < WARNING_WINDOW]
        warnings.append(now)
        dropped = self._drop(member, "rate", rate_limited(len(warnings), MAX_WARNINGS))
        if len(warnings) >= MAX_WARNINGS:
            self.kick(member, CLOSE_POLICY, RATE_LIMITED)
        return dropped

    # -- messages -----------------------------------------------------------------

    def receive(self, member: Member, text: str | bytes) -> Dropped | None:
        """Handle one complete data message from ``member`` (PROTOCOL.md section 4).

        ``str`` is a text message: a JSON value to broadcast, or ``\x1f<uid>\x1f<JSON>`` /
        ``@@<uid>@@<JSON>`` for one member. ``bytes`` is a binary message, which the
        protocol does not carry: the sender gets an error frame. Returns None when the
        message went on, else why not: the drop reason and the error text the sender got.
        """
        member.channel.tally.received += 1
        dropped = self._limit(member)
        if dropped is not None:
            return dropped
        if not isinstance(text, str):
            return self._drop(member, "binary", BINARY_UNSUPPORTED)
        uid = None
        if text.startswith("\x1f"):
            uid, sep, text = text[1:].partition("\x1f")
        elif text.startswith("@@"):
            uid, sep, text = text[2:].partition("@@")
        message = parse_json(text)
        if message is None or (uid is not None and not sep):
            return self._drop(member, "invalid_json", INVALID_JSON)
        if self.hooks.on_message is not None:
            message = self._moderate(member, message)
            if message is None:  # the host dropped it: the sender is not told
                member.channel.tally.dropped["hook"] += 1
                return ("hook", "")
        if uid is None:
            return self.send(member, message)
        return self.send_direct(member, uid, message)

    def send(self, member: Member, message: msgspec.Raw) -> Dropped | None:
        """Broadcast a validated JSON value from ``member`` to its channel."""
        if not member.can_send:
            return self._drop(member, "send_key", SEND_KEY_REQUIRED)
        self.broadcast(member.channel, envelope(self.now_ms(), message, member), None if member.echo else member)
        return None

    def broadcast(self, channel: Channel, payload: bytes, skip: Member | None) -> None:
        """Deliver a member's encoded message to everyone in ``channel`` but ``skip``.

        A cluster node overrides this to send the same bytes to the other nodes too.
        """
        self.fanout.broadcast(channel, payload, skip, channel.tally)

    def send_direct(self, member: Member, uid: str, message: msgspec.Raw) -> Dropped | None:
        """Send a validated JSON value from ``member`` to member ``uid`` of its channel only."""
        if not member.can_send:
            return self._drop(member, "send_key", SEND_KEY_REQUIRED)
        channel = member.channel
        target = channel.members.get(uid)
        if target is not None:
            self.fanout.deliver((target,), envelope(self.now_ms(), message, member), None, channel.tally)
        elif not self.forward(member, uid, message):
            return self._drop(member, "unknown_uid", user_not_found(uid))
        return None

    def forward(self, member: Member, uid: str, message: msgspec.Raw) -> bool:
        """A direct message from ``member`` to ``uid``, who is not here: whether it went on.

        One relay has nobody else to ask (False: the sender hears that ``uid`` is not
        found). A cluster node overrides this to send it to the node ``uid`` is on.
        """
        return False

    def push(
        self, name: str, message: msgspec.Raw, key: str | None, client: str = "", waiter: PushWaiter | None = None
    ) -> int | None:
        """HTTP push: deliver ``message`` (no sender) to channel ``name``.

        Returns how many members it reached (a cluster may instead return None and tell
        ``waiter.pushed(n)`` later; one process always answers at once). Raises HTTPError(403) unless ``name`` falls
        under a reserved namespace whose send key equals ``key``, and HTTPError(429) when
        ``client`` pushes faster than ``pushes_per_second_per_ip``.
        """
        if not self.pushes.take(client, self.clock.monotonic()):
            raise HTTPError(429, TOO_MANY_PUSHES, [(b"retry-after", b"1")])
        self.access.push(name, key)
        return self.deliver_push(name, message, waiter)

    def deliver_push(self, name: str, message: msgspec.Raw, waiter: PushWaiter | None) -> int | None:
        """Deliver an allowed push to channel ``name``: how many members it reached.

        A cluster node overrides this to count (and reach) every node's members, and may
        answer later, through ``waiter``.
        """
        channel = self.channels.get(name)
        if channel is None:
            return 0
        self.fanout.broadcast(channel, envelope(self.now_ms(), message), None, channel.tally)
        return len(channel.members)

    def error(self, member: Member, text: str) -> None:
        """Send an error frame to ``member`` only."""
        self.fanout.deliver((member,), encode(ErrorFrame(message=text, date=self.now_ms())), None)

    def _drop(self, member: Member, reason: str, text: str) -> Dropped:
        """``member``'s message is not relayed, for ``reason`` (counted): it gets error ``text``."""
        member.channel.tally.dropped[reason] += 1
        self.error(member, text)
        return (reason, text)


def _ignore(where: str, exc: BaseException) -> None:
    """A hook failure with nobody to tell (a hub without a door)."""
