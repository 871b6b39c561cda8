"""Doors from other packages: the ``relaycore.doors`` entry points that ``relaycore serve`` runs.

A door is a package. It declares an entry point in the group ``relaycore.doors`` naming a
factory: ``factory(hub, settings) -> door``, where ``settings`` is the door's own table of
the configuration (``[doors.<name>]``) and ``door`` a :class:`PluggedDoor`. ``relaycore
serve`` runs every door its configuration names beside the native server, on the same hub
and event loop, so their members share channels. docs/transports.md says what a door does
with the core (:class:`relaycore.Stream`, :class:`relaycore.WireForm`,
:class:`relaycore.Door`); ``examples/ndjson-door`` is a whole one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any, Protocol

import anyio
import anyio.abc

from relaycore import ConfigError, Door, Hub

__all__ = ["GROUP", "DoorFactory", "PluggedDoor", "installed_doors", "load_doors"]

#: The entry-point group of installed doors.
GROUP = "relaycore.doors"


class PluggedDoor(Door, Protocol):
    """A door ``relaycore serve`` runs: a :class:`relaycore.Door` that serves and stops."""

    async def run(self, *, task_status: anyio.abc.TaskStatus[Any] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen (then call ``task_status.started()``) and serve until cancelled."""

    async def shutdown(self) -> None:
        """The relay is going away: close every member (1001), briefly wait for the closes."""


DoorFactory = Callable[[Hub, Mapping[str, Any]], PluggedDoor]
"""``factory(hub, settings)``: what an entry point of :data:`GROUP` names."""


def installed_doors() -> dict[str, Any]:
    """The entry points of :data:`GROUP`, by name."""
    return {point.name: point for point in entry_points(group=GROUP)}


def load_doors(hub: Hub, tables: Mapping[str, Mapping[str, Any]]) -> list[PluggedDoor]:
    """Make the doors ``tables`` names (``[doors.<name>]``), each with its settings.

    Raises :class:`relaycore.ConfigError` for a name no installed package declares, or a
    door whose factory refuses its settings.
    """
    if not tables:
        return []
    points = installed_doors()
    doors = []
    for name, settings in tables.items():
        point = points.get(name)
        if point is None:
            known = ", ".join(sorted(points)) or "none"
            raise ConfigError(f"`doors.{name}`: no installed door is named {name!r} (installed: {known})")
        factory: DoorFactory = point.load()
        try:
            doors.append(factory(hub, dict(settings)))
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"`doors.{name}`: {exc}") from None
    return doors
