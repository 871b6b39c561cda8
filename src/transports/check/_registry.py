"""The checks' registry, their settings and their results: what a check is, and what it gives."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Literal

import msgspec

if TYPE_CHECKING:
    from ._wire import Probe

__all__ = ["CHECKS", "Check", "Failed", "Result", "Settings", "Skipped", "check"]


class Failed(Exception):
    """The relay did not do what the protocol says; the message is the one-line detail."""


class Skipped(Exception):
    """The check cannot run here (a missing option, an optional endpoint, --skip-config)."""


class Settings(msgspec.Struct, kw_only=True):
    """What to check and how: the command line's options."""

    url: str
    namespace: str | None = None
    join_key: str | None = None
    send_key: str | None = None
    skip_config: bool = False
    only: Sequence[str] = ()
    timeout: float = 5.0
    prefix: str = "check-"


class Result(msgspec.Struct, kw_only=True):
    """One row of the report. ``frames`` is the transcript, kept for failures only."""

    name: str
    status: Literal["PASS", "FAIL", "SKIP"]
    detail: str
    seconds: float
    tags: list[str]
    frames: list[str] = msgspec.field(default_factory=list)


class Check(msgspec.Struct, frozen=True):
    """A registered check: its name, its coroutine, what it needs to run."""

    name: str
    run: Callable[[Probe], Awaitable[str]]
    tags: tuple[str, ...]  # "decision" (PROTOCOL decides), "config" (default limits), "optional"
    needs: tuple[str, ...]  # among "namespace", "join_key", "send_key"
    summary: str


CHECKS: list[Check] = []
"""Every registered check, in the order they run: by section, then as the code lists them."""


def _section(item: Check) -> tuple[int, ...]:
    """``3.1.envelope-fields`` -> (3, 1): the section numbers a check's name starts with."""
    return tuple(int(part) for part in item.name.split(".") if part.isdigit())


def check(
    name: str, *, tags: Iterable[str] = (), needs: Iterable[str] = ()
) -> Callable[[Callable[[Probe], Awaitable[str]]], Callable[[Probe], Awaitable[str]]]:
    """Register the decorated coroutine as the check ``name``."""

    def register(run: Callable[[Probe], Awaitable[str]]) -> Callable[[Probe], Awaitable[str]]:
        summary = (run.__doc__ or "").strip().split("\n\n")[0].replace("``", "").replace("**", "")
        CHECKS.append(Check(name, run, tuple(tags), tuple(needs), " ".join(summary.split())))
        CHECKS.sort(key=_section)  # stable: in a section, the order of the code
        return run

    return register
