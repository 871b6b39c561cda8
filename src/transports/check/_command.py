"""The command line: ``relaycore check URL [options]`` and ``python -m transports.check``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import anyio

from transports.logs import fail

from ._registry import Settings
from ._report import format_json, format_table
from ._runner import run_checks, selected
from ._wire import Base

__all__ = ["add_arguments", "main", "run"]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 600, not {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``relaycore check`` (see docs/check.md)."""
    parser.add_argument(
        "url", nargs="?", help="the relay's base URL: ws://host:port or http://host:port (a path is a mount prefix)"
    )
    parser.add_argument(
        "--namespace", metavar="NS", help="a reserved namespace of the relay (reserved and push checks)"
    )
    parser.add_argument("--join-key", metavar="K", help="the namespace's joinKey, if it has one")
    parser.add_argument("--send-key", metavar="K", help="the namespace's sendKey (enables the HTTP push checks)")
    parser.add_argument(
        "--skip-config", action="store_true", help="skip the checks that assume the default limits (size, rate)"
    )
    parser.add_argument(
        "--only", action="append", default=[], metavar="PATTERN", help="run the checks matching this glob (repeatable)"
    )
    parser.add_argument("--timeout", type=_seconds, default=5.0, metavar="S", help="seconds per check (default 5)")
    parser.add_argument("--prefix", default="check-", help="start of the random channel names (default check-)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--list", action="store_true", help="list the checks and exit")


def run(args: argparse.Namespace) -> int:
    """``relaycore check``: 0 when no check failed, 1 when one did, 2 for bad usage or no relay."""
    if args.list:
        for item in selected(args.only):
            tags = f" [{', '.join(item.tags)}]" if item.tags else ""
            print(f"{item.name:<28} {item.summary}{tags}")
        return 0
    if args.url is None:
        fail("the relay's URL is missing (ws://host:port)", command="relaycore check")
        return 2
    if (args.join_key or args.send_key) and not args.namespace:
        fail("--join-key and --send-key are the keys of a --namespace", command="relaycore check")
        return 2
    settings = Settings(
        url=args.url,
        namespace=args.namespace,
        join_key=args.join_key,
        send_key=args.send_key,
        skip_config=args.skip_config,
        only=tuple(args.only),
        timeout=args.timeout,
        prefix=args.prefix,
    )
    try:
        base = Base.parse(settings.url)
    except ValueError as exc:
        fail(str(exc), command="relaycore check")
        return 2
    if not selected(settings.only):
        fail(f"no check matches {' '.join(settings.only)} (see --list)", command="relaycore check")
        return 2
    try:
        anyio.run(_reachable, base)
    except OSError as exc:
        fail(f"cannot reach {base.address.host}:{base.address.port}: {exc}", command="relaycore check")
        return 2
    results = anyio.run(run_checks, settings)
    print(format_json(results, settings) if args.json else format_table(results))
    return 1 if any(r.status == "FAIL" for r in results) else 0


async def _reachable(base: Base) -> None:
    with anyio.fail_after(10):
        stream = await base.stream()
    await stream.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m transports.check URL [options]``."""
    parser = argparse.ArgumentParser(
        prog="relaycore check", description="Check a relay against the itty-sockets protocol."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
