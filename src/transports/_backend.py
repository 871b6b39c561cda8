"""Which event loop runs the current task, told without sniffio (anyio no longer needs it,
so a plain install may not have it).

anyio runs on asyncio or trio. Under trio no asyncio loop is running, so asking asyncio is
enough to tell them apart; the doors use it to take each loop's own fast primitives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import anyio

__all__ = ["event_class", "running_asyncio_loop"]


def running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The asyncio loop running this task, or None on another backend (trio) or outside one."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def event_class() -> Callable[[], Any]:
    """The running loop's own event class (``asyncio.Event`` or ``trio.Event``).

    ``anyio.Event()`` looks the backend up on every creation, which a writer waiting once per
    idle spell pays once per message on a busy channel.
    """
    if running_asyncio_loop() is not None:
        return asyncio.Event
    try:
        import trio

        trio.lowlevel.current_task()
    except (ImportError, RuntimeError):
        return anyio.Event
    return trio.Event
