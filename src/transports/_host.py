"""What every door gives its host: ``publish``, ``presence`` and ``disconnect``, awaitable, and
the tasks the host's async hooks run in (see :mod:`relaycore._hooks`).

``RelayServer`` and ``RelayApp`` are :class:`HostCalls`. The hub decides everything at once
and never awaits; what a cluster answers later (a publish's count across the nodes) is
awaited here, bounded by ``handshake_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import anyio
import anyio.abc

from relaycore import Hooks, HTTPError, Hub, RelayUsageError, Roster
from relaycore.texts import CLOSE_POLICY, CLUSTER_UNAVAILABLE

from ._door import event_class, running_asyncio_loop

__all__ = ["HostCalls", "fit_hooks"]

log = logging.getLogger("relaycore")


def fit_hooks(hub: Hub, hooks: Hooks | None) -> None:
    """Give ``hub`` the host's ``hooks`` (and where their failures are logged)."""
    if hooks is not None:
        hub.hooks = hooks
    hub.hook_failed = _log_failure


def _log_failure(where: str, exc: BaseException) -> None:
    # The exception's type only: its text may hold what the host read (a cookie, a token).
    log.warning("hook %s failed: %s", where, type(exc).__name__, extra={"event": "hook.failed", "hook": where})


class _Count:
    """Waits for a count a cluster gives later (the :class:`relaycore.PushWaiter` side)."""

    def __init__(self) -> None:
        self.value: int | None = None
        self.error: HTTPError | None = None
        self.done = event_class()()

    def pushed(self, recipients: int) -> None:
        self.value = recipients
        self.done.set()

    def push_failed(self, error: HTTPError) -> None:
        self.error = error
        self.done.set()


class HostCalls:
    """The host's calls and the hooks' tasks (a part of ``RelayServer`` and ``RelayApp``)."""

    hub: Hub
    _tasks: anyio.abc.TaskGroup | None = None
    _loose: set[asyncio.Task[None]]

    def flush(self) -> None:
        raise NotImplementedError

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """``hub.spawn``: run an async hook in a task, then flush what it did."""
        if self._tasks is not None:
            self._tasks.start_soon(self._run_hook, coroutine)
            return
        if running_asyncio_loop():
            task = asyncio.get_running_loop().create_task(self._run_hook(coroutine))
            self._loose.add(task)
            task.add_done_callback(self._loose.discard)
            return
        coroutine.close()
        raise RelayUsageError("async hooks on trio need the app's lifespan (or `async with app.running()`)")

    async def _run_hook(self, coroutine: Coroutine[Any, Any, None]) -> None:
        try:
            await coroutine
        finally:
            self.flush()

    async def publish(self, channel: str, message: Any, *, to: str | None = None) -> int:
        """Deliver ``message`` (any JSON value) to every member of ``channel``, or to member
        ``to``, as an HTTP push would: how many members it reached (every node's)."""
        count = _Count()
        reached = self.hub.publish(channel, message, to=to, waiter=count)
        self.flush()
        if reached is not None:
            return reached
        with anyio.move_on_after(self.hub.config.limits.handshake_timeout):
            await count.done.wait()
        if count.value is None:
            raise count.error or HTTPError(503, CLUSTER_UNAVAILABLE)
        return count.value

    async def presence(self, channel: str) -> Roster:
        """``channel``'s ``total`` and its announced ``members`` (uid, alias), every node's."""
        return self.hub.roster(channel)

    async def disconnect(self, channel: str, uid: str, *, code: int = CLOSE_POLICY, reason: str = "") -> bool:
        """Close member ``uid`` of ``channel`` with ``code`` (the others hear its leave):
        whether it was found (on any node)."""
        found = self.hub.disconnect(channel, uid, code=code, reason=reason)
        self.flush()
        return found
