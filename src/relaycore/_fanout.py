"""Fan-out: one encoded message to many members, framed once.

Theory of operation. Every message a member receives (a broadcast, a direct message, a
push, a presence event, an error) is encoded ONCE, by whoever makes it, and handed to
:meth:`Fanout.deliver` with its recipients; the WebSocket frame is built once too, and the
same two bytes objects go into every recipient's outbox. A recipient whose outbox refuses
the message is a slow consumer: all such recipients of one delivery depart together, in one
call to the hub's departure (``depart``), never one by one, so a crowd of them costs one
pass and no call depth. Both hubs, a single relay and a cluster node, deliver through here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from ._channel import Channel, Departure, Member
from ._counters import Tally
from ._forms import WEBSOCKET
from ._texts import CLOSE_POLICY, SLOW_CONSUMER
from ._wire import Envelope, encode, text_frame

__all__ = ["Fanout", "envelope"]


def envelope(date: int, message: msgspec.Raw, sender: Member | None = None) -> bytes:
    """A relayed message as its recipients get it: from ``sender`` (None for an HTTP push)."""
    if sender is None:
        return encode(Envelope(date=date, message=message))
    return encode(Envelope(uid=sender.uid, alias=sender.alias, date=date, message=message))


class Fanout:
    """Puts encoded messages into outboxes; hands the slow consumers to ``depart``."""

    __slots__ = ("depart",)

    def __init__(self, depart: Callable[[Channel, list[Departure]], None]) -> None:
        #: The hub's departure: removes members of one channel, then closes the kicked ones.
        self.depart = depart

    def broadcast(self, channel: Channel, payload: bytes, skip: Member | None, relayed: Tally | None = None) -> None:
        """:meth:`deliver` to every member of ``channel`` (but ``skip``), rendered once per
        wire form present: each member of a form gets that form's bytes, made before its
        group's turn, so the outbox only queues them."""
        groups = channel.forms
        if not groups:  # every member on WebSocket
            self.deliver(channel.everyone, payload, skip, relayed)
            return
        frame = text_frame(payload)
        slow: list[Departure] | None = None
        for form, members in groups:
            rendered = frame if form is WEBSOCKET else form.message(payload)
            put = type(members[0].outbox).put_rendered
            for member in members:
                if member is not skip and not put(member.outbox, payload, rendered):
                    if slow is None:
                        slow = []
                    slow.append((member, CLOSE_POLICY, SLOW_CONSUMER))
        if relayed is not None:
            reached = len(channel.members) - (skip is not None) - (0 if slow is None else len(slow))
            relayed.delivered += reached
            relayed.bytes_out += reached * len(payload)
        if slow is not None:
            self._slow(slow)

    def deliver(
        self, recipients: Sequence[Member], payload: bytes, skip: Member | None, relayed: Tally | None = None
    ) -> None:
        """Put one encoded message into every recipient's outbox (framed once).

        The recipients are members of one channel (``skip``, if given, is one of them);
        those whose outbox refuses the message are closed as slow consumers, all in one
        departure. A relayed message (a broadcast, a direct message, a push, not a presence
        event or an error) is counted in the ``relayed`` tally, its channel's.
        """
        frame = text_frame(payload)
        slow: list[Departure] | None = None
        for member in recipients:
            if member is not skip and not member.outbox.put(payload, frame):
                if slow is None:
                    slow = []
                slow.append((member, CLOSE_POLICY, SLOW_CONSUMER))
        if relayed is not None:
            reached = len(recipients) if skip is None else len(recipients) - 1
            if slow is not None:
                reached -= len(slow)
            relayed.delivered += reached
            relayed.bytes_out += reached * len(payload)
        if slow is not None:
            self._slow(slow)

    def _slow(self, slow: list[Departure]) -> None:
        """The slow consumers of one delivery, on their way out together."""
        channel = slow[0][0].channel
        channel.tally.dropped["slow_consumer"] += len(slow)
        self.depart(channel, slow)
