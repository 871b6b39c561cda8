"""The host's side of the hub: its hooks run here, and its calls (publish, presence, disconnect).

A part of :class:`~relaycore.Hub` (see :mod:`relaycore._hooks` for the hooks' rules). What an
embedder calls is plain and synchronous here; the doors wrap it in ``async`` methods that
wait for what a cluster answers later (``RelayServer.publish``, ``RelayApp.publish``...).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import msgspec

from ._channel import Channel, Departure, JoiningSession, Member
from ._errors import HTTPError, RelayUsageError, RelayValueError
from ._hooks import Authorizing, Hooks, JoinAttempt, apply_decision, finish, refused_by
from ._names import check_channel
from ._protocols import JoinRequest, PushWaiter
from ._session_seams import Answer
from ._texts import CLOSE_ABNORMAL, CLOSE_POLICY, SESSION_NOT_FOUND
from ._wire import UserEntry

if TYPE_CHECKING:
    from ._access import Access
    from ._protocols import Backplane

__all__ = ["HostSide", "Roster"]


class Roster(msgspec.Struct, kw_only=True):
    """A channel's presence as the host asks for it: its total and its announced members."""

    total: int
    #: The announced members (``uid``, ``alias``), in join order.
    members: list[UserEntry]


class HostSide:
    """Hooks and the host's calls (a part of :class:`~relaycore.Hub`)."""

    channels: dict[str, Channel]
    backplane: Backplane
    access: Access
    closing: bool
    #: The host's hooks (all None: none).
    hooks: Hooks
    #: Runs a coroutine in a task of the door's (an async hook); None: no event loop.
    spawn: Callable[[Coroutine[Any, Any, None]], None] | None
    #: Told of a hook's exception (where, the exception); the doors log its type.
    hook_failed: Callable[[str, BaseException], None]

    if TYPE_CHECKING:

        def now_ms(self) -> int: ...
        def kick(self, member: Member, code: int, reason: str) -> None: ...
        def deliver_push(self, name: str, message: msgspec.Raw, waiter: PushWaiter | None) -> int | None: ...
        def error(self, member: Member, text: str) -> None: ...

    # -- joins ------------------------------------------------------------------------------

    def _join_request(self, request: JoinRequest, attempt: JoinAttempt | None) -> Member | None:
        """Authorize (when the host asked to), then let the backplane decide."""
        authorize = self.hooks.authorize
        if authorize is None or attempt is None:
            return self._admitted(request, self.backplane.join(self, request))  # type: ignore[arg-type]
        self._check_keys(request)
        try:
            decision = authorize(attempt)
        except Exception as exc:
            self.hook_failed("authorize", exc)
            raise refused_by(exc) from None
        if inspect.isawaitable(decision):
            if not isinstance(request.session, JoiningSession):
                raise RelayUsageError("an async authorize needs a session that can wait (joined, join_refused)")
            running = Authorizing(decision, lambda result, exc: self._authorized(request, result, exc))
            if self.spawn is None:
                raise RelayUsageError("an async authorize needs a door that runs tasks (hub.spawn)")
            self.spawn(running.run())
            return None
        apply_decision(request, decision)
        return self._admitted(request, self.backplane.join(self, request))  # type: ignore[arg-type]

    def _authorized(self, request: JoinRequest, decision: object, exc: BaseException | None) -> None:
        """An async ``authorize`` answered: go on with the join (or refuse it)."""
        session = request.session
        assert isinstance(session, JoiningSession)
        if getattr(session, "gone", False):
            return  # the client left while it was decided
        try:
            if exc is not None:
                self.hook_failed("authorize", exc)
                raise refused_by(exc)
            apply_decision(request, decision)
            member = self.backplane.join(self, request)  # type: ignore[arg-type]
        except HTTPError as error:
            session.join_refused(error)
            return
        if member is not None:
            session.joined(self._admitted(request, member))  # type: ignore[arg-type]

    def _check_keys(self, request: JoinRequest) -> None:
        """The protocol's keys come before the host's ``authorize`` (HTTPError 403)."""
        reservation = self.access.lookup(request.name)[1]
        if reservation is not None:
            self.access.reserved(reservation, request.options)
            return
        channel = self.channels.get(request.name)
        if channel is not None:
            self.access.join(channel, request.options, False)

    def _admitted(self, request: JoinRequest, member: Member | None) -> Member | None:
        """A member made: what ``authorize`` took away, and ``on_join``."""
        if member is None:
            return None
        if not request.can_send:
            member.can_send = False
        on_join = self.hooks.on_join
        if on_join is not None:
            self._call("on_join", on_join, member)
        return member

    def _departed_hooks(self, gone: list[Departure]) -> None:
        on_leave = self.hooks.on_leave
        if on_leave is not None:
            for member, code, _ in gone:
                self._call("on_leave", on_leave, member, code if code is not None else member.left or CLOSE_ABNORMAL)

    def _call(self, where: str, hook: Callable[..., Any], *args: Any) -> None:
        """Tell a hook after the fact: its failure is reported, never fatal."""
        try:
            finish(hook(*args), self.spawn)
        except Exception as exc:
            self.hook_failed(where, exc)

    def _moderate(self, member: Member, message: msgspec.Raw) -> msgspec.Raw | None:
        """``on_message``: the message to relay (perhaps another), or None to drop it."""
        hook = self.hooks.on_message
        assert hook is not None
        try:
            value = msgspec.json.decode(message)
            result = hook(member, value)
            if result is None:
                return None
            return message if result is value else msgspec.Raw(msgspec.json.encode(result))
        except Exception as exc:  # the host's rule failed: the message is not relayed
            self.hook_failed("on_message", exc)
            return None

    def forward_session(self, session: Any, method: bytes, rest: bytes, body: bytes) -> Answer | None:
        """``/s/<token>`` of a member not here: 404 (a cluster node asks the node holding it)."""
        raise HTTPError(404, SESSION_NOT_FOUND)

    # -- the host's calls -------------------------------------------------------------------

    def publish(
        self, channel: str, message: Any, *, to: str | None = None, waiter: PushWaiter | None = None
    ) -> int | None:
        """Deliver ``message`` (any JSON value) to ``channel``'s members, or member ``to``,
        as an HTTP push would (no sender, no key): how many it reached (None: a cluster
        answers ``waiter`` later). A bad channel name raises :class:`~relaycore.RelayValueError`."""
        name = _channel_name(channel)
        try:
            raw = msgspec.Raw(msgspec.json.encode(message))
        except (TypeError, msgspec.EncodeError) as exc:
            raise RelayValueError(f"the message is not JSON: {exc}") from None
        if to is None:
            return self.deliver_push(name, raw, waiter)
        return self.deliver_to(name, to, raw, waiter)

    def deliver_to(self, name: str, uid: str, message: msgspec.Raw, waiter: PushWaiter | None) -> int | None:
        """A push to member ``uid`` of ``name`` only: 1 when it reached it, else 0.

        A cluster node overrides this to reach a member on another node."""
        from ._fanout import envelope

        channel = self.channels.get(name)
        member = channel.members.get(uid) if channel is not None else None
        if member is None or channel is None:
            return 0
        self.fanout.deliver((member,), envelope(self.now_ms(), message), None, channel.tally)  # type: ignore[attr-defined]
        return 1

    def roster(self, channel: str) -> Roster:
        """``channel``'s total and announced members, here (a cluster node: every node's)."""
        found = self.channels.get(_channel_name(channel))
        if found is None:
            return Roster(total=0, members=[])
        everyone = list(self.present(found))
        return Roster(
            total=len(everyone), members=[UserEntry(uid=m.uid, alias=m.alias) for m in everyone if m.announce]
        )

    def present(self, channel: Channel) -> list[Any]:
        """Everyone in ``channel`` as presence counts them (a cluster node: every node's)."""
        return list(channel.members.values())

    def disconnect(self, channel: str, uid: str, *, code: int = CLOSE_POLICY, reason: str = "") -> bool:
        """Close member ``uid`` of ``channel`` with ``code`` (the others hear its leave):
        whether it was found here (a cluster node also asks the other nodes)."""
        found = self.channels.get(_channel_name(channel))
        member = found.members.get(uid) if found is not None else None
        if member is None:
            return False
        self.kick(member, code, reason)
        return True


def _channel_name(channel: str) -> str:
    """A channel name the host gave, checked as a client's would be."""
    if not isinstance(channel, str):
        raise RelayValueError(f"a channel name is a str, not {type(channel).__name__}")
    try:
        return check_channel(channel)
    except HTTPError as exc:
        raise RelayValueError(exc.message) from None
