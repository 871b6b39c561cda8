"""The hub's ready list: outboxes that got bytes, and the doors they belong to.

A part of :class:`~relaycore.Hub`. The hub never writes to a socket: what it queues puts
the outbox on :attr:`ReadyOutboxes.ready`, and after each call into the core the door that
called takes the list (:meth:`ReadyOutboxes.wake`), writing its own outboxes and handing
every other door's to that door (:class:`~relaycore.Door`).
"""

from __future__ import annotations

from ._config import Config
from ._forms import WEBSOCKET, WireForm
from ._outbox import Door, Outbox, outbox_for

__all__ = ["ReadyOutboxes"]


class ReadyOutboxes:
    """The ready list and the outboxes made for it (a part of :class:`~relaycore.Hub`)."""

    config: Config
    #: Outboxes with bytes to flush; see :meth:`wake`.
    ready: list[Outbox]

    def new_outbox(self, form: WireForm = WEBSOCKET, door: Door | None = None) -> Outbox:
        """An outbox of wire ``form`` for a member behind ``door``, registered with this
        hub's ready list and sized by the config."""
        return outbox_for(form, self.config.limits.outbound_buffer_bytes, self.ready, door)

    def wake(self, door: object = None) -> list[Outbox]:
        """After a call into the core: ``door``'s outboxes that got bytes since the last
        call (and an outbox without a door); those of every other door are handed to its
        :meth:`~relaycore.Door.wake` first, grouped. What a wake queues meanwhile (an
        answer to a waiting request) is taken too."""
        own: list[Outbox] = []
        while self.ready:
            others: dict[Door, list[Outbox]] | None = None
            for outbox in self._take_ready():
                owner = outbox.door
                if owner is None or owner is door:
                    own.append(outbox)
                else:
                    if others is None:
                        others = {}
                    group = others.get(owner)
                    if group is None:
                        group = others[owner] = []
                    group.append(outbox)
            if others is None:
                break
            for owner, group in others.items():
                owner.wake(group)
        return own

    def take_ready(self) -> list[Outbox]:
        """Return (and clear) the outboxes without a door that got bytes since the last
        call; those of a door are handed to its wake (see :meth:`wake`)."""
        return self.wake(None)

    def _take_ready(self) -> list[Outbox]:
        ready = self.ready
        if not ready:
            return ready
        taken = ready[:]
        ready.clear()
        for outbox in taken:
            outbox.queued = False
        return taken
