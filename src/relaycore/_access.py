"""Who may join a channel, who may send in it, and who may push to it (PROTOCOL.md section 6).

Theory of operation. Two rules decide a join, each written once here:

- a channel under a **reserved namespace** takes its keys from the configuration
  (:meth:`Access.reserved`); the longest namespace covering the channel decides;
- an **open channel** takes the keys its first joiner offered, and keeps them until it
  empties (:meth:`Access.open`). One relay keeps those keys as given, on its
  :class:`~relaycore.Channel`; a cluster keeps only their SHA-256 digests, in Redis and in
  each node's replica of the channel, so that no key is ever stored. The rule is the same
  for both: it is written once over a :class:`KeyForm`, :data:`PLAIN` or :data:`DIGEST`,
  and every comparison is constant-time.

A join either raises ``HTTPError(403)`` or says whether the joiner may send; a member that
may not send listens only. An HTTP push needs a reserved namespace with a send key
(:meth:`Access.push`).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from ._channel import Channel
from ._cluster_scripts import key_digest
from ._config import NamespaceConfig
from ._errors import HTTPError
from ._names import JoinOptions, NamespaceTable
from ._texts import FOREIGN_SEND_KEY, JOIN_KEY_REQUIRED

__all__ = ["DIGEST", "PLAIN", "Access", "KeyForm", "Locks"]

K = TypeVar("K", str, bytes)


class Locks(Protocol[K]):
    """The keys an open channel's first joiner set, in one form (None: no such key)."""

    join_key: K | None
    send_key: K | None


class KeyForm(Generic[K]):
    """How an open channel's keys are kept: ``seal`` turns a key into its kept form."""

    __slots__ = ("_seal",)

    def __init__(self, seal: Callable[[str], K]) -> None:
        self._seal: Callable[[str], K] = seal

    def seal(self, key: str | None) -> K | None:
        """The kept form of ``key`` (None stays None: no key)."""
        return None if key is None else self._seal(key)

    def same(self, offered: str | None, kept: K | None) -> bool:
        """Whether ``offered`` is the key kept as ``kept``; a missing side never matches."""
        if offered is None or kept is None:
            return False
        return hmac.compare_digest(_bytes(self._seal(offered)), _bytes(kept))


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _plain(key: str) -> str:
    return key


#: The keys as given: one relay process keeps them on its channel.
PLAIN: KeyForm[str] = KeyForm(_plain)
#: SHA-256 digests (hex): what a cluster keeps, in Redis and in each node's replica.
DIGEST: KeyForm[bytes] = KeyForm(key_digest)


class Access:
    """The access rules of one relay, over its configured namespaces.

    >>> from relaycore import Config, NamespaceConfig
    >>> access = Access(Config(namespaces={"game": NamespaceConfig(send_key="s")}).namespaces)
    >>> label, reservation = access.lookup("game:1")
    >>> label, reservation.send_key, access.lookup("chat")
    ('game', 's', ('', None))
    """

    __slots__ = ("_reservations", "_table")

    def __init__(self, namespaces: dict[str, NamespaceConfig]) -> None:
        self._reservations = namespaces
        self._table = NamespaceTable(namespaces)

    def lookup(self, name: str) -> tuple[str, NamespaceConfig | None]:
        """Channel ``name``'s namespace label and reservation: ``("", None)`` for an open channel."""
        prefix = self._table.lookup(name)
        if prefix is None:
            return "", None
        return prefix, self._reservations[prefix]

    def reservation(self, name: str) -> NamespaceConfig | None:
        """The reserved namespace covering channel ``name``, if any."""
        prefix = self._table.lookup(name)
        return None if prefix is None else self._reservations[prefix]

    def join(self, channel: Channel, options: JoinOptions, first: bool) -> bool:
        """One relay's decision for a joiner of ``channel`` (``first``: it is a new channel)."""
        reservation = channel.reservation
        if reservation is not None:
            return self.reserved(reservation, options)
        return self.open(channel, options, first, PLAIN)

    @staticmethod
    def reserved(reservation: NamespaceConfig, options: JoinOptions) -> bool:
        """The keys of a reserved namespace: HTTPError(403) or whether the joiner may send."""
        key_in_play = reservation.join_key is not None or options.join_key is not None
        if key_in_play and not PLAIN.same(options.join_key, reservation.join_key):
            raise HTTPError(403, JOIN_KEY_REQUIRED)
        if options.send_key is not None:
            if not PLAIN.same(options.send_key, reservation.send_key):
                raise HTTPError(403, FOREIGN_SEND_KEY)
            return True
        return reservation.send_key is None

    @staticmethod
    def open(locks: Locks[K], options: JoinOptions, first: bool, form: KeyForm[K]) -> bool:
        """The keys of an open channel: HTTPError(403) or whether the joiner may send.

        The ``first`` joiner sets the keys (kept in ``form``) and may always send.
        """
        if first:
            locks.join_key = form.seal(options.join_key)
            locks.send_key = form.seal(options.send_key)
            return True
        if locks.join_key is not None and not form.same(options.join_key, locks.join_key):
            raise HTTPError(403, JOIN_KEY_REQUIRED)
        return Access.may_send(locks, options, form)

    @staticmethod
    def may_send(locks: Locks[K], options: JoinOptions, form: KeyForm[K]) -> bool:
        """The send half of :meth:`open`, for a joiner whose join key was already checked."""
        return locks.send_key is None or form.same(options.send_key, locks.send_key)

    def push(self, name: str, key: str | None) -> None:
        """An HTTP push to channel ``name`` with send key ``key``: HTTPError(403) unless allowed."""
        reservation = self.reservation(name)
        if reservation is None or reservation.send_key is None:
            raise HTTPError(403, "Pushing requires a reserved namespace with a sendKey.")
        if not PLAIN.same(key, reservation.send_key):
            raise HTTPError(403, "Pushing requires a valid x-send-key.")
