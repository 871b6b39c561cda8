"""The command line: ``relaycore`` and its subcommands, each from the door or tool it runs.

``serve`` is the native server's (:mod:`transports.server`: one process, or N workers with
``--workers``); ``listen``, ``send`` and ``push`` the client's; ``check`` the checker's.
This module parses, sets up the logs and dispatches.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from relaycore import __version__

from . import check, server
from .client._commands import add_commands
from .logs import configure, fail

__all__ = ["main"]

log = logging.getLogger("relaycore")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="relaycore", description="A WebSocket relay speaking itty-sockets.")
    parser.add_argument("--version", action="version", version=f"relaycore {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="json: one JSON object per line (for collectors)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the relay server")
    server.add_arguments(serve)
    serve.set_defaults(func=server.run)
    add_commands(sub)
    checker = sub.add_parser("check", help="check any relay against the itty-sockets protocol")
    check.add_arguments(checker)
    checker.set_defaults(func=check.run)
    return parser


class _Parser(argparse.ArgumentParser):
    """Usage errors as ``fail()`` says them: a JSON line when ``--log-format json`` was asked for."""

    #: Set by :func:`main` from the command line before it is parsed (subcommands share it).
    json_errors = False

    def error(self, message: str) -> NoReturn:
        if _Parser.json_errors:
            configure("info", "json")
            fail(f"{message} (see relaycore --help)")
            sys.exit(2)
        super().error(message)


def _asks_for_json(argv: Sequence[str]) -> bool:
    """Whether the command line asks for JSON logs (read before it is known to parse)."""
    return "--log-format=json" in argv or any(
        word == "--log-format" and following == "json" for word, following in itertools.pairwise(argv)
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``relaycore`` command."""
    _Parser.json_errors = _asks_for_json(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    # The workers of --workers N share the supervisor's stderr: their lines carry their pid.
    configure(args.log_level, args.log_format, pid=getattr(args, "supervisor_fd", None) is not None)
    if args.log_format != "json":
        return int(args.func(args))
    try:
        return int(args.func(args))
    except Exception:  # a crash is a JSON line too (type and frames, never its text)
        log.exception("relaycore failed", extra={"event": "crashed"})
        return 1


if __name__ == "__main__":
    sys.exit(main())
