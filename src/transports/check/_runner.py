"""Running the checks: the selection, the skips, one check within its deadline, then all of them."""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Sequence
from typing import Literal

import anyio

from transports.client import ClientError, Refused

from ._expect import need
from ._registry import CHECKS, Check, Failed, Result, Settings, Skipped
from ._wire import Base, Probe

__all__ = ["run_checks", "run_one", "selected"]

#: How many lines of the transcript a failure shows.
SHOWN_LINES = 40


def selected(only: Sequence[str]) -> list[Check]:
    """The checks whose names match one of the glob patterns (all without patterns)."""
    return [c for c in CHECKS if not only or any(fnmatch.fnmatchcase(c.name, pattern) for pattern in only)]


def _skip_reason(item: Check, settings: Settings) -> str | None:
    reason = need(settings, *item.needs)
    if reason is None and settings.skip_config and "config" in item.tags:
        reason = "needs the default limits (--skip-config)"
    return reason


def _innermost(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def run_one(item: Check, settings: Settings, base: Base) -> Result:
    """Run one check within its deadline; never raises (but for cancellation)."""
    tags = list(item.tags)
    reason = _skip_reason(item, settings)
    if reason is not None:
        return Result(name=item.name, status="SKIP", detail=reason, seconds=0.0, tags=tags)
    probe = Probe(settings, base, item.name)
    started = time.perf_counter()
    status: Literal["PASS", "FAIL", "SKIP"] = "FAIL"
    with anyio.move_on_after(settings.timeout) as scope:
        try:
            detail = await item.run(probe)
            status = "PASS"
        except BaseException as raised:
            exc = _innermost(raised)
            if isinstance(exc, Skipped):
                status, detail = "SKIP", str(exc)
            elif isinstance(exc, Failed):
                detail = str(exc)
            elif isinstance(exc, Refused):
                detail = f"{probe.waiting}: refused, " + f"HTTP {exc.status} {exc.reason}".strip()
            elif isinstance(exc, OSError | ClientError | anyio.BrokenResourceError | anyio.EndOfStream):
                detail = f"{probe.waiting}: {type(exc).__name__}: {exc}"
            elif isinstance(exc, Exception):
                detail = f"{probe.waiting}: unexpected {type(exc).__name__}: {exc}"
            else:
                raise
        finally:
            await probe.aclose()
    if scope.cancelled_caught:
        status, detail = "FAIL", f"timed out after {settings.timeout:g} s waiting for {probe.waiting}"
    if status == "FAIL" and "decision" in item.tags:
        detail = f"(decision) {detail}"
    frames = probe.transcript[-SHOWN_LINES:] if status == "FAIL" else []
    if status == "FAIL" and len(probe.transcript) > SHOWN_LINES:
        frames.insert(0, f"... ({len(probe.transcript) - SHOWN_LINES} earlier lines)")
    seconds = round(time.perf_counter() - started, 3)
    return Result(
        name=item.name, status=status, detail=" ".join(detail.split()), seconds=seconds, tags=tags, frames=frames
    )


async def run_checks(settings: Settings, progress: Callable[[Result], None] | None = None) -> list[Result]:
    """Run the selected checks against ``settings.url``, one after another.

    ``progress`` is called with each result as it comes. Raises ValueError for a bad URL::

        results = await run_checks(Settings(url="ws://127.0.0.1:8787"))
        print(format_table(results))
    """
    base = Base.parse(settings.url)
    results = []
    for item in selected(settings.only):
        result = await run_one(item, settings, base)
        results.append(result)
        if progress is not None:
            progress(result)
    return results
