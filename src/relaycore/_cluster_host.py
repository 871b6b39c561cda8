"""The host's calls and the HTTP door across a cluster (a part of :class:`~relaycore.ClusterHub`).

Theory of operation. A node knows every member of a channel it serves (its replica: uid,
node, alias, announce), so the host's calls reach members on other nodes through the node
that holds them, on that node's own Redis channel (``rc:d:<node>``), as direct messages do:

- ``publish(..., to=uid)``: a ``D`` record with the push envelope, delivered there;
- ``disconnect``: a ``K`` record; that node closes its member, everyone hears the leave;
- ``presence``: the replica's members, every node's.

The HTTP door's tokens end with their node's name (``.<base64 of the node>``), so a
``GET``/``POST``/``DELETE /s/<token>`` that reaches another node is forwarded to the node
holding the member (a ``Q`` record; no sticky sessions), which does it as if the request had
come to it and sends the answer back (an ``A`` record: status, headers, body), at once for a
``POST`` or ``DELETE`` (``204``, or the ``404``, ``413``, ``429`` and texts a request there
gets), when frames come for a long poll (or ``[]`` a second before ``poll_wait``). A request
nobody answers within ``poll_wait`` (the token's node is gone, or never was) gets what a
long poll with nothing gets (``[]``), or ``404`` for a ``POST`` or ``DELETE``: that member is
gone.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import msgspec

from ._cluster_calls import SEP
from ._errors import HTTPError
from ._fanout import envelope
from ._http_sessions import HTTPSessions
from ._outbox import MessageOutbox
from ._protocols import PushWaiter
from ._session_seams import Answer, PlainRequest, refusal
from ._texts import CLOSE_POLICY, SESSION_NOT_FOUND

if TYPE_CHECKING:
    from ._channel import Channel
    from ._cluster_calls import CallQueue
    from ._cluster_replica import Replica
    from ._session import ClientSession

__all__ = ["ClusterHostSide", "RemotePoll"]


def node_of(token: str) -> bytes | None:
    """The node a token names (None: not a cluster token)."""
    _, dot, tail = token.rpartition(".")
    if not dot or not tail:
        return None
    try:
        return base64.urlsafe_b64decode(tail + "=" * (-len(tail) % 4))
    except ValueError:
        return None


class RemotePoll:
    """A request asked of another node: what the waiting session gives up to."""

    __slots__ = ("method",)

    def __init__(self, method: bytes) -> None:
        self.method = method

    def give_up(self, session: object, now: float) -> Answer:
        if self.method == b"GET":
            return Answer(200, b"[]", [(b"content-type", b"application/json")])
        return refusal(HTTPError(404, SESSION_NOT_FOUND), [])


class _RemoteWaiter:
    """A requester on another node, waiting for a long-poll member's frames here."""

    __slots__ = ("awaiting", "id", "node", "pending", "queue")

    #: Waits on another node (HTTPSessions.tick gives it up before that node does).
    remote = True

    def __init__(self, queue: CallQueue, node: bytes, request: bytes) -> None:
        self.queue = queue
        self.node = node
        self.id = request
        self.pending = True
        self.awaiting: Any = None

    def answered(self, answer: Answer) -> None:
        self.pending = False
        sent = msgspec.msgpack.encode((answer.status, answer.headers, answer.body))
        self.queue.publish_direct(self.node, b"A" + self.id + SEP + sent)


class ClusterHostSide:
    """Reaching the members of other nodes (see the module docstring)."""

    node_raw: bytes
    queue: CallQueue
    channels: dict[str, Channel]
    http: HTTPSessions
    _remote_polls: dict[bytes, ClientSession]

    if TYPE_CHECKING:

        def now_ms(self) -> int: ...

        @property
        def replicas(self) -> dict[str, Replica]: ...

    def _token_suffix(self) -> str:
        return "." + base64.urlsafe_b64encode(self.node_raw).decode().rstrip("=")

    def _holder(self, name: str, uid: str) -> bytes | None:
        """The node holding member ``uid`` of ``name``, when another node does."""
        replica = self.replicas.get(name)
        entry = None if replica is None else replica.members.get(uid)
        if entry is None or entry.node == self.node_raw:
            return None
        return entry.node

    def deliver_to(self, name: str, uid: str, message: msgspec.Raw, waiter: PushWaiter | None) -> int | None:
        local = super().deliver_to(name, uid, message, waiter)  # type: ignore[misc]
        if local:
            return int(local)
        node = self._holder(name, uid)
        if node is None:
            return 0
        payload = envelope(self.now_ms(), message)
        self.queue.publish_direct(node, b"D" + uid.encode() + SEP + payload + SEP + name.encode())
        return 1

    def present(self, channel: Channel) -> list[Any]:
        replica = self.replicas.get(channel.name)
        if replica is None:
            return list(channel.members.values())
        return list(replica.members.values())

    def disconnect(self, channel: str, uid: str, *, code: int = CLOSE_POLICY, reason: str = "") -> bool:
        if super().disconnect(channel, uid, code=code, reason=reason):  # type: ignore[misc]
            return True
        node = self._holder(channel, uid)
        if node is None:
            return False
        record = b"K" + channel.encode() + SEP + uid.encode() + SEP + b"%d" % code + SEP + reason.encode()
        self.queue.publish_direct(node, record)
        return True

    # -- the HTTP door --------------------------------------------------------------------

    def forward_session(self, session: ClientSession, method: bytes, rest: bytes, body: bytes) -> Answer | None:
        token = rest.partition(b"?")[0].decode("latin-1")
        node = node_of(token)
        if node is None or node == self.node_raw:
            raise HTTPError(404, SESSION_NOT_FOUND)
        request = b"%d" % next(self._tokens)  # type: ignore[attr-defined]
        self._remote_polls[request] = session
        session.pending = True
        session.awaiting = RemotePoll(method)  # type: ignore[assignment]
        record = b"Q" + method + SEP + rest + SEP + self.node_raw + SEP + request + SEP + body
        self.queue.publish_direct(node, record)
        return None

    def _on_host_record(self, data: bytes) -> bool:
        """A record of this module's kinds on this node's channel (False: not one)."""
        kind, rest = data[:1], data[1:]
        if kind == b"K":
            name, _, rest = rest.partition(SEP)
            uid, _, rest = rest.partition(SEP)
            code, _, reason = rest.partition(SEP)
            super().disconnect(name.decode(), uid.decode(), code=int(code), reason=reason.decode())  # type: ignore[misc]
        elif kind == b"Q":
            method, _, rest = rest.partition(SEP)
            target, _, rest = rest.partition(SEP)
            node, _, rest = rest.partition(SEP)
            request, _, body = rest.partition(SEP)
            self._session_here(method, target, body, _RemoteWaiter(self.queue, node, request))
        elif kind == b"A":
            request, _, sent = rest.partition(SEP)
            session = self._remote_polls.pop(request, None)
            if session is not None and session.pending:
                status, headers, body = msgspec.msgpack.decode(sent)
                session.answered(Answer(status, body, [(bytes(k), bytes(v)) for k, v in headers]))
        else:
            return False
        return True

    def _session_here(self, method: bytes, target: bytes, body: bytes, waiter: _RemoteWaiter) -> None:
        """Do what another node was asked of a member of this node, and answer it."""
        from ._session import ClientSession

        try:
            if method != b"GET":
                session = ClientSession(self, MessageOutbox(0, []), PlainRequest())  # type: ignore[arg-type]
                answer = session._session_request(method, target, body)
            else:
                poll = self.http.polls.get(target.partition(b"?")[0].decode("latin-1"))
                if poll is None:
                    raise HTTPError(404, SESSION_NOT_FOUND)
                answer = poll.wait(waiter, self.http_clock())
        except HTTPError as exc:
            answer = refusal(exc, [])
        if answer is not None:
            waiter.answered(answer)

    def http_clock(self) -> float:
        return self.clock.monotonic()  # type: ignore[attr-defined,no-any-return]

    def _remote_poll_timeout(self, session: ClientSession) -> None:
        """A requester gave up waiting (its own bound): forget its request."""
        for request, waiting in list(self._remote_polls.items()):
            if waiting is session:
                del self._remote_polls[request]
