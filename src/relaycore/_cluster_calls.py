"""What a cluster node asks of Redis: its calls, in order, and the messages it publishes.

Theory of operation. The node never talks to Redis itself: it queues :class:`Call` objects
(a script of :data:`~relaycore.SCRIPTS`, or a publish), and the transport takes them all at
once, in order, as one pipeline. Messages for the other nodes never wait: several messages
to one channel share one ``M`` record until a join or leave of that channel (or a direct
message from the same node) is queued behind them, so that every node hears them in the
order they were sent. What waits for Redis is bounded (``publish_buffer_bytes``); over the
bound, and while Redis is away, messages for the other nodes are dropped and counted
(at-most-once), never queued without end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._config import ClusterConfig

__all__ = ["MAX_RECORD", "MSG_SEP", "SEP", "Call", "CallQueue", "messages_in"]

#: Between the fields of a record.
SEP = b"\x1f"
#: Between the messages of one ``M`` record (never inside encoded JSON).
MSG_SEP = b"\x1e"
#: An ``M`` record is closed at this size; the next message starts another.
MAX_RECORD = 1 << 20


class Call:
    """One thing for Redis, in order: ``script`` is a name of :data:`SCRIPTS` or ``"publish"``.

    For a publish, ``keys`` is ``[channel]`` and ``args`` is ``[data]``. ``reply`` (if any)
    takes the script's result; a call whose connection failed is simply dropped (the
    transport reports the failure through :meth:`ClusterHub.offline`).
    """

    __slots__ = ("args", "keys", "reply", "script")

    def __init__(
        self, script: str, keys: list[bytes], args: list[Any], reply: Callable[[Any], None] | None = None
    ) -> None:
        self.script = script
        self.keys = keys
        self.args = args
        self.reply = reply

    def __repr__(self) -> str:
        return f"<Call {self.script} {self.keys[:1]!r}>"


def messages_in(call: Call) -> int:
    """How many messages a publish call carries."""
    data = call.args[0]
    return data.count(MSG_SEP) + 1 if data[:1] == b"M" else 1


def _nothing() -> None:
    pass


class CallQueue:
    """The calls a node has queued for Redis, and whether Redis is reachable."""

    __slots__ = ("_batches", "_config", "_node_raw", "_queued", "calls", "online", "stats", "wake")

    def __init__(self, node_raw: bytes, config: ClusterConfig, stats: dict[str, int]) -> None:
        self._node_raw = node_raw
        #: Read at each message: ``publish_buffer_bytes`` bounds what waits for Redis.
        self._config = config
        #: What Redis is to do, in order.
        self.calls: list[Call] = []
        #: Whether Redis is reachable (the transport says); calls made while not are dropped.
        self.online = False
        #: Called when :attr:`calls` gets its first entry (the transport's wake-up).
        self.wake: Callable[[], None] = _nothing
        #: The node's counters (``published``, ``dropped_messages`` are counted here).
        self.stats = stats
        #: The open ``M`` record of each channel, by pub/sub channel.
        self._batches: dict[bytes, Call] = {}
        self._queued = 0

    def take(self) -> list[Call]:
        """Everything queued, in order (and forget it)."""
        calls = self.calls
        self.calls = []
        self._batches.clear()
        self._queued = 0
        return calls

    def drop(self) -> None:
        """Redis is gone: forget everything queued (the messages in it are lost, and counted)."""
        self.stats["dropped_messages"] += sum(messages_in(call) for call in self.calls if call.script == "publish")
        self.take()

    def call(self, call: Call) -> None:
        """Queue a script or a publish (nothing while Redis is away)."""
        if not self.online:
            return
        calls = self.calls
        if call.script != "publish" and call.keys:
            # Messages sent before a join or leave go out before it.
            self._batches.pop(b"rc:c:" + call.keys[0][5:], None)
        calls.append(call)
        if len(calls) == 1:
            self.wake()

    def publish(self, pub: bytes, payload: bytes) -> None:
        """Queue ``payload`` for the other nodes serving the channel (bounded; at-most-once)."""
        if not self.online:
            return
        size = len(payload) + 1
        if not self._reserve(size):
            return
        batch = self._batches.get(pub)
        if batch is not None:
            data: bytearray = batch.args[0]
            if len(data) + size <= MAX_RECORD:
                data += MSG_SEP
                data += payload
                return
        batch = Call("publish", [pub], [bytearray(b"M" + self._node_raw + SEP + payload)])
        self._batches[pub] = batch
        self.calls.append(batch)
        if len(self.calls) == 1:
            self.wake()

    def publish_direct(self, pub: bytes, to: bytes, record: bytes) -> None:
        """Queue a direct-message ``record`` for node channel ``to``; ``pub`` is the channel
        the sender is in, whose later broadcasts must go after it (bounded; at-most-once)."""
        if self.online and self._reserve(len(record)):
            self._batches.pop(pub, None)
            self.call(Call("publish", [to], [record]))

    def _reserve(self, size: int) -> bool:
        """Count ``size`` bytes against the publish bound; False (and one more drop) when over."""
        if self._queued + size > self._config.publish_buffer_bytes:
            self.stats["dropped_messages"] += 1
            return False
        self._queued += size
        self.stats["published"] += 1
        return True
