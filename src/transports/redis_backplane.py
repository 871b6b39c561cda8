"""The Redis backplane driver: carries a :class:`relaycore.ClusterHub`'s calls over coredis.

Theory of operation. The core decides everything (see ``relaycore/_cluster.py``); this
module only moves its calls to Redis and Redis's pub/sub messages back, on asyncio or trio.
One connection session is: connect (a command client and one pub/sub connection), say this
node is alive, subscribe to what the hub serves, tell the hub it is :meth:`online
<relaycore.ClusterHub.online>`, then run four loops until any of them fails:

- the writer takes the hub's calls whenever there are some and sends them in order: one
  pipeline per batch (so a burst of messages is one round trip), subscriptions added
  before the batch and dropped after it;
- the heartbeat refreshes this node's key (with a TTL of ``node_timeout``), runs the
  reaper script (the members of nodes whose key expired leave, announced), and checks that
  the pub/sub connection still delivers (a ping to this node's own channel);
- the repair waits one ``node_timeout`` after connecting, then lets the hub drop the
  members of nodes that did not come back (after a Redis restart without data);
- the pub/sub consumer (coredis's, with our handler) feeds each message to the hub.

When the session fails (Redis down, restarted, a timeout, a silent pub/sub), the hub goes
:meth:`offline <relaycore.ClusterHub.offline>` (it serves its members alone) and the driver
reconnects with jittered exponential backoff, 0.1 s doubling to 2 s (so a node is back
within about 3 s of Redis). Each outage is logged
once when it starts and once when it ends, and counted in :attr:`RedisBackplane.stats`.

coredis's own defaults do not suit a relay, so they are overridden: no command retries
(a retried PUBLISH would deliver twice), no silent pub/sub reconnects (the hub must know
to re-register), timeouts on connect and on every reply, and no unbounded buffer: every
pub/sub message is handled in coredis's consumer task by a plain callback, and a watchdog
ends the session if coredis's own push buffer backs up anyway.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

import anyio
import coredis
import coredis.exceptions
from coredis.retry import NoRetryPolicy

from relaycore import SCRIPTS, Call, ClusterHub

__all__ = ["RedisBackplane", "node_name"]

log = logging.getLogger("relaycore.cluster")
# coredis reports each lost connection itself; this driver logs every outage once, its way.
logging.getLogger("coredis").setLevel(logging.WARNING)

#: Subscriptions per SUBSCRIBE command.
SUBSCRIBE_CHUNK = 1000
CONNECT_TIMEOUT = 2.0
REPLY_TIMEOUT = 5.0
BACKOFF_FIRST = 0.1
BACKOFF_MOST = 2.0
#: How long a starting node waits for Redis before it serves alone.
STARTUP_WAIT = 5.0
#: Pub/sub messages coredis may hold unread before the session is dropped and made anew.
MAX_PUSH_BACKLOG = 50_000


def node_name(node_id: str = "") -> str:
    """This process's name in the cluster: the configured id (or ``node``) and a random part."""
    return f"{node_id or 'node'}.{random.getrandbits(32):08x}"


class _PubSubSilent(Exception):
    """The pub/sub connection stopped delivering (it did not hear its own ping)."""


class RedisBackplane:
    """Runs ``hub``'s side of the cluster on the Redis at ``url`` until cancelled.

    ``flush`` writes what the hub queued for the node's members (the front door's own
    flush); it is called after every change the driver makes to the hub.
    """

    def __init__(self, hub: ClusterHub, url: str, flush: Callable[[], None]) -> None:
        self.hub = hub
        self.url = url
        self.flush = flush
        config = hub.config.cluster
        self.heartbeat_interval = config.heartbeat_interval
        self.node_timeout = config.node_timeout
        #: Counters: sessions begun, outages, members reaped by this node, ...
        self.stats = {"connects": 0, "outages": 0, "reaped": 0, "published_batches": 0}
        self._wake: anyio.Event | None = None
        self._idle: anyio.Event | None = None
        self._ping_sent = 0
        self._ping_heard = 0
        self._ping_sent_at = 0.0
        #: The round trip of the last heartbeat ping through Redis pub/sub back to this
        #: node, in seconds (None until one came back): behind any backlog of messages.
        self.ping_seconds: float | None = None
        self._down_since: float | None = None
        self._stopping = False
        self._joined: anyio.Event | None = None
        hub.on_calls = self._wake_writer

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect, serve, and reconnect for ever (until cancelled).

        Started (for ``TaskGroup.start``) once the node is in the cluster, or after
        ``STARTUP_WAIT`` seconds without Redis: a front door that waits for it opens with
        the cluster's view of every channel instead of a view of its own.
        """
        self._joined = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._reconnecting)
            with anyio.move_on_after(STARTUP_WAIT):
                await self._joined.wait()
            if not self._joined.is_set():
                log.warning("cluster: no Redis after %.0f s; serving this node's members alone meanwhile", STARTUP_WAIT)
            task_status.started()

    async def _reconnecting(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            began = time.monotonic()
            try:
                await self._session()
            except* Exception as group:
                if not self._stopping:  # at shutdown, whatever failed is over anyway
                    self._lost(_reason(group))
            if self._stopping:
                return
            if time.monotonic() - began > 10 * BACKOFF_MOST:
                delay = BACKOFF_FIRST
            await anyio.sleep(delay * (0.5 + random.random()))
            delay = min(BACKOFF_MOST, delay * 2)

    async def drain(self, timeout: float) -> None:
        """Send what the hub queued (its members' leaves at shutdown), within ``timeout``."""
        self._stopping = True
        with anyio.move_on_after(timeout):
            while self.hub.is_online and (self.hub.calls or self._idle is None or not self._idle.is_set()):
                self._wake_writer()
                await anyio.sleep(0.01)

    def _lost(self, reason: str) -> None:
        if self.hub.is_online or self._down_since is None:
            if self._down_since is None:
                self._down_since = time.monotonic()
                self.stats["outages"] += 1
                log.warning(
                    "cluster: Redis unreachable (%s); serving this node's members alone, reconnecting",
                    reason,
                    extra={"event": "cluster.outage", "reason": reason},
                )
            else:
                log.debug("cluster: reconnect failed: %s", reason, extra={"event": "cluster.retry", "reason": reason})
        else:
            log.debug("cluster: reconnect failed: %s", reason, extra={"event": "cluster.retry", "reason": reason})
        if self.hub.is_online:
            self.hub.offline()
            self.flush()

    # -- one connection session ----------------------------------------------------------------

    async def _session(self) -> None:
        hub = self.hub
        client: coredis.Redis[bytes] = coredis.Redis.from_url(
            self.url,
            decode_responses=False,
            connect_timeout=CONNECT_TIMEOUT,
            stream_timeout=REPLY_TIMEOUT,
            retry_policy=NoRetryPolicy(),
        )
        async with client:
            scripts = {name: client.register_script(text) for name, text in SCRIPTS.items()}
            await self._beat(client, scripts, reap=False)
            pubsub = client.pubsub(
                retry_policy=None, ignore_subscribe_messages=True, subscription_timeout=REPLY_TIMEOUT
            )
            async with pubsub:
                subscribed: set[bytes] = set()
                await self._subscribe(pubsub, subscribed)
                self._ping_sent = self._ping_heard = 0
                self.stats["connects"] += 1
                if self._down_since is not None:
                    log.info(
                        "cluster: Redis reachable again after %.1f s; registering %d members again",
                        time.monotonic() - self._down_since,
                        hub.connections,
                        extra={"event": "cluster.reconnected"},
                    )
                    self._down_since = None
                elif self.stats["connects"] == 1:
                    log.info(
                        "cluster: node %s joined the cluster at %s",
                        hub.node,
                        _safe_url(self.url),
                        extra={"event": "cluster.joined"},
                    )
                hub.online()
                self.flush()
                if self._joined is not None:
                    self._joined.set()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._writer, client, scripts, pubsub, subscribed)
                    tg.start_soon(self._heartbeat, client, scripts, pubsub)
                    tg.start_soon(self._repair_later)

    async def _subscribe(self, pubsub: Any, subscribed: set[bytes]) -> None:
        wanted = self.hub.subscriptions - subscribed
        if not wanted:
            return
        names = sorted(wanted)
        for i in range(0, len(names), SUBSCRIBE_CHUNK):
            chunk = names[i : i + SUBSCRIBE_CHUNK]
            await pubsub.subscribe(**{name.decode(): self._on_message for name in chunk})
            subscribed.update(chunk)

    async def _unsubscribe(self, pubsub: Any, subscribed: set[bytes]) -> None:
        unwanted = subscribed - self.hub.subscriptions
        if not unwanted:
            return
        names = sorted(unwanted)
        subscribed.difference_update(names)
        for i in range(0, len(names), SUBSCRIBE_CHUNK):
            await pubsub.unsubscribe(*names[i : i + SUBSCRIBE_CHUNK])

    def _on_message(self, message: Any) -> None:
        channel, data = message["channel"], message["data"]
        if channel == self.hub.direct_key and data[:1] == b"P":
            self._ping_heard = int(data[1:])
            if self._ping_heard == self._ping_sent:
                self.ping_seconds = time.monotonic() - self._ping_sent_at
            return
        self.hub.feed(channel, data)
        self.flush()

    # -- the loops ------------------------------------------------------------------------------

    def _wake_writer(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _writer(self, client: Any, scripts: dict[str, Any], pubsub: Any, subscribed: set[bytes]) -> None:
        hub = self.hub
        while True:
            self._wake = anyio.Event()
            if not hub.calls and hub.subscriptions == subscribed:
                self._idle = anyio.Event()
                self._idle.set()
                await self._wake.wait()
                self._idle = None
            calls = hub.take_calls()
            await self._subscribe(pubsub, subscribed)
            if calls:
                await self._send(client, scripts, calls)
            await self._unsubscribe(pubsub, subscribed)

    async def _send(self, client: Any, scripts: dict[str, Any], calls: list[Call]) -> None:
        if len(calls) == 1 and calls[0].script == "publish":
            call = calls[0]
            await client.publish(call.keys[0], bytes(call.args[0]))
            self.stats["published_batches"] += 1
            return
        requests = []
        async with client.pipeline(transaction=False) as pipe:
            for call in calls:
                if call.script == "publish":
                    requests.append((call, pipe.publish(call.keys[0], bytes(call.args[0]))))
                else:
                    requests.append((call, scripts[call.script](keys=call.keys, args=call.args, client=pipe)))
        self.stats["published_batches"] += sum(1 for call in calls if call.script == "publish")
        for call, request in requests:
            if call.reply is not None:
                call.reply(await request)
        self.flush()

    async def _beat(self, client: Any, scripts: dict[str, Any], *, reap: bool) -> None:
        hub = self.hub
        async with client.pipeline(transaction=False) as pipe:
            pipe.set(hub.heartbeat_key, b"1", px=int(self.node_timeout * 1000))
            pipe.sadd(b"rc:nodes", [hub.node_raw])
            reaping = scripts["reap"](keys=[], args=[], client=pipe) if reap else None
        if reaping is not None:
            reaped = int(await reaping)
            if reaped:
                self.stats["reaped"] += reaped
                log.info(
                    "cluster: %d members of nodes gone silent left their channels",
                    reaped,
                    extra={"event": "cluster.reaped"},
                )

    async def _heartbeat(self, client: Any, scripts: dict[str, Any], pubsub: Any) -> None:
        beats = 0
        while True:
            await anyio.sleep(self.heartbeat_interval)
            beats += 1
            await self._beat(client, scripts, reap=beats % 2 == 0)
            backlog = _push_backlog(pubsub)
            if backlog > MAX_PUSH_BACKLOG:
                raise _PubSubSilent(f"{backlog} pub/sub messages backed up")
            if self._ping_sent - self._ping_heard > 2:
                raise _PubSubSilent("the pub/sub connection stopped delivering")
            self._ping_sent += 1
            self._ping_sent_at = time.monotonic()
            await client.publish(self.hub.direct_key, b"P%d" % self._ping_sent)

    async def _repair_later(self) -> None:
        await anyio.sleep(self.node_timeout)
        self.hub.repair()
        self.flush()


def _push_backlog(pubsub: Any) -> int:
    """Messages coredis read from Redis that its consumer has not handled yet."""
    try:
        stream = pubsub.connection._push_message_buffer_out
        return int(stream.statistics().current_buffer_used)
    except Exception:  # private to coredis: without it, the ping still notices a stall
        return 0


def _reason(group: BaseExceptionGroup[Exception]) -> str:
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    first = leaves[0] if leaves else group
    text = str(first) or type(first).__name__
    return f"{type(first).__name__}: {text}" if str(first) else text


def _safe_url(url: str) -> str:
    """The URL without a password."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url
