"""What a cluster node asks of Redis: its calls, in order, and the messages it publishes.

Theory of operation. The node never talks to Redis itself: it queues :class:`Call` objects
(a script of :data:`~relaycore.SCRIPTS`, or a publish), and the transport takes them all at
once, in order, as one pipeline. Messages for the other nodes never wait, and go to each
node that has members in their channel on that node's own pub/sub channel
(``rc:d:<node>``), so a node never hears its own messages back. Every message of a burst for
one node shares one ``M`` record, whatever its channel: a run of messages per channel, each
run headed by the channel's name (:func:`run_head`). A record is closed when a script is
queued behind it (a join or leave must reach every node after the messages sent before it)
or a direct message to its node (which must keep its place among them). What waits for
Redis is bounded (``publish_buffer_bytes``); over the bound, and while Redis is away,
messages for the other nodes are dropped and counted (at-most-once), never queued without
end.

An ``M`` record on a node's channel, fields separated by 0x1f::

    M <from node> ( 0x1f <channel> 0x1f <message> ( 0x1e <message> )* )+

A message is encoded JSON, which never holds 0x1e or 0x1f; the channel is its name in UTF-8,
or, for a name holding a byte under 0x20, 0x1d and the name's UTF-8 in hex. So one split
takes a record apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._config import ClusterConfig

__all__ = ["MAX_RECORD", "MSG_SEP", "SEP", "Call", "CallQueue", "run_head", "runs"]

#: Between the fields of a record.
SEP = b"\x1f"
#: Between the messages of one ``M`` record (never inside encoded JSON).
MSG_SEP = b"\x1e"
#: An ``M`` record is closed at this size; the next message starts another.
MAX_RECORD = 1 << 20
#: Starts a channel's name written in hex (a name holding a byte under 0x20).
_HEX = b"\x1d"


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


def run_head(name: str) -> bytes:
    """What starts channel ``name``'s run of messages in an ``M`` record.

    >>> run_head("room"), run_head("a\\x1fb")
    (b'\\x1froom\\x1f', b'\\x1f\\x1d611f62\\x1f')
    """
    raw = name.encode()
    if min(raw, default=0) < 0x20:
        raw = _HEX + raw.hex().encode()
    return SEP + raw + SEP


def runs(record: bytes | bytearray) -> dict[str, list[bytes]]:
    """The messages of an ``M`` record from another node, by channel, each in its order."""
    found: dict[str, list[bytes]] = {}
    fields = bytes(record).split(SEP)
    for k in range(1, len(fields) - 1, 2):
        raw = fields[k]
        name = (bytes.fromhex(raw[1:].decode()) if raw[:1] == _HEX else raw).decode()
        payloads = fields[k + 1].split(MSG_SEP)
        known = found.get(name)
        if known is None:
            found[name] = payloads
        else:
            known += payloads
    return found


def _nothing() -> None:
    pass


class _Record:
    """An open ``M`` record for one node: its bytes, and the head of its last run."""

    __slots__ = ("data", "head")

    def __init__(self, data: bytearray, head: bytes) -> None:
        self.data = data
        self.head = head


class CallQueue:
    """The calls a node has queued for Redis, and whether Redis is reachable."""

    __slots__ = (
        "_config",
        "_messages",
        "_node_raw",
        "_queued",
        "_records",
        "_run",
        "_run_count",
        "_run_head",
        "_run_nodes",
        "_run_room",
        "_run_start",
        "calls",
        "online",
        "stats",
        "wake",
    )

    def __init__(self, node_raw: bytes, config: ClusterConfig, stats: dict[str, int]) -> None:
        self._node_raw = node_raw
        #: Read at each run of messages: ``publish_buffer_bytes`` bounds what waits for Redis.
        self._config = config
        #: What Redis is to do, in order.
        self.calls: list[Call] = []
        #: Whether Redis is reachable (the transport says); calls made while not are dropped.
        self.online = False
        #: Called when :attr:`calls` gets its first entry (the transport's wake-up).
        self.wake: Callable[[], None] = _nothing
        #: The node's counters (``published`` when taken, ``dropped_messages``).
        self.stats = stats
        #: The open ``M`` record for each node, by node.
        self._records: dict[bytes, _Record] = {}
        #: Bytes and messages queued for the other nodes (the run in progress aside).
        self._queued = 0
        self._messages = 0
        #: Where the last message went: the records of ``_run_nodes`` (one each), all ending
        #: with the run of messages that ``_run_head`` starts; how many bytes more each may
        #: take (``_run_room``, down from ``_run_start``: the record's size and the publish
        #: bound) and how many messages went there after the first. The next message to
        #: the same nodes goes there at once: the hot path of a burst.
        self._run: list[bytearray] | None = None
        self._run_head = b""
        self._run_nodes: tuple[bytes, ...] = ()
        self._run_room = self._run_start = self._run_count = 0

    def take(self) -> list[Call]:
        """Everything queued, in order (and forget it)."""
        self._settle()
        self.stats["published"] += self._messages
        return self._clear()

    def drop(self) -> None:
        """Redis is gone: forget everything queued (the messages in it are lost, and counted)."""
        self._settle()
        self.stats["dropped_messages"] += self._messages
        self._clear()

    def _clear(self) -> list[Call]:
        calls = self.calls
        self.calls = []
        self._records.clear()
        self._queued = self._messages = 0
        return calls

    def call(self, call: Call) -> None:
        """Queue a script or a publish (nothing while Redis is away)."""
        if not self.online:
            return
        if call.script != "publish":
            # Messages sent before a join or leave go out before it.
            self._settle()
            self._records.clear()
        calls = self.calls
        calls.append(call)
        if len(calls) == 1:
            self.wake()

    def publish(self, nodes: tuple[bytes, ...], head: bytes, payload: bytes) -> None:
        """Queue ``payload`` for ``nodes``, in the run of messages ``head`` starts (bounded;
        at-most-once)."""
        run = self._run
        if run is not None and (nodes is self._run_nodes or nodes == self._run_nodes):
            # The hot path: the burst goes on to the same nodes (in the same channel, or not).
            sep = MSG_SEP if head is self._run_head else head
            room = self._run_room - len(payload) - len(sep)
            if room >= 0:
                self._run_room = room
                self._run_head = head
                self._run_count += 1
                for data in run:
                    data += sep
                    data += payload
                return
        if self.online:
            self._start_run(nodes, head, payload)

    def publish_direct(self, node: bytes, record: bytes) -> None:
        """Queue a direct-message ``record`` for ``node``; the messages queued for it after
        this go out after it (bounded; at-most-once)."""
        if not self.online:
            return
        self._settle()
        if self._reserve(len(record)):
            self._records.pop(node, None)
            self.call(Call("publish", [b"rc:d:" + node], [record]))

    def _start_run(self, nodes: tuple[bytes, ...], head: bytes, payload: bytes) -> None:
        """Queue ``payload`` for each of ``nodes``, the first message of a run."""
        self._settle()
        size = len(payload) + 1
        records = self._records
        run: list[bytearray] = []
        for node in nodes:
            if not self._reserve(size):
                continue
            record = records.get(node)
            if record is not None and len(record.data) + len(head) + size <= MAX_RECORD:
                data = record.data
                if record.head is head:
                    data += MSG_SEP
                else:
                    data += head
                    record.head = head
            else:
                data = bytearray(b"M" + self._node_raw)
                data += head
                records[node] = _Record(data, head)
                self.calls.append(Call("publish", [b"rc:d:" + node], [data]))
                if len(self.calls) == 1:
                    self.wake()
            data += payload
            run.append(data)
        if run and len(run) == len(nodes):
            self._run = run
            self._run_head = head
            self._run_nodes = nodes
            bound = (self._config.publish_buffer_bytes - self._queued) // len(run)
            self._run_room = self._run_start = min(MAX_RECORD - max(map(len, run)), bound)
            self._run_count = 0

    def _settle(self) -> None:
        """The run in progress ends: what its messages took is counted."""
        run = self._run
        if run is not None:
            self._run = None
            self._queued += (self._run_start - self._run_room) * len(run)
            self._messages += self._run_count * len(run)
            for node in self._run_nodes:
                self._records[node].head = self._run_head

    def _reserve(self, size: int) -> bool:
        """Count a message of ``size`` bytes against the publish bound; False (and one more
        drop) when over."""
        if self._queued + size > self._config.publish_buffer_bytes:
            self.stats["dropped_messages"] += 1
            return False
        self._queued += size
        self._messages += 1
        return True
