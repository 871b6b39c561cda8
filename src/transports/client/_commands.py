"""The command-line tools around a channel: ``listen``, ``send`` and ``push``.

They are thin on purpose: each is a few lines over :mod:`transports.client`. Exit codes
(documented in docs/client.md):

- 0: done (``listen``: the channel closed normally, or Ctrl-C);
- 1: the relay could not be reached, or closed the channel abnormally;
- 2: a usage error (a bad URL, a value that is not JSON);
- 3: the relay refused (the HTTP status and its text are printed).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any
from urllib.parse import unquote

import anyio
import msgspec

from relaycore import RelayValueError
from relaycore.client import parse_url
from relaycore.texts import CLOSE_GOING_AWAY, CLOSE_NORMAL

from ..logs import fail
from ._connect import connect, http_push, push
from ._errors import ChannelClosed, ClientError, Refused

__all__ = ["add_commands"]

OK, UNREACHABLE, USAGE, REFUSED = 0, 1, 2, 3


def add_commands(sub: Any) -> None:
    """Add ``listen``, ``send`` and ``push`` to the ``relaycore`` subcommands."""
    listen = _member_command(sub, "listen", "print every frame of a channel as one JSON line, until Ctrl-C")
    listen.set_defaults(func=_cmd_listen)

    send = _member_command(sub, "send", "join a channel, send one JSON value, leave")
    send.add_argument("value", help='the JSON value to send, e.g. \'{"type":"chat","text":"hi"}\'')
    send.add_argument("--to", default=None, metavar="UID", help="send to this member only")
    send.set_defaults(func=_cmd_send)

    http = sub.add_parser("push", help="HTTP push one JSON value to a channel of a reserved namespace")
    http.add_argument("url", help="http://host:port/push/<channel> or ws://host:port/c/<channel>")
    http.add_argument("value", help="the JSON value to push")
    http.add_argument("--send-key", required=True, metavar="KEY", help="the namespace's send key")
    http.set_defaults(func=_cmd_push)


def _member_command(sub: Any, name: str, text: str) -> argparse.ArgumentParser:
    """A subcommand that joins a channel: its URL, the join options, and the event loop."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=text)
    parser.add_argument("url", help="ws://host:port/c/<channel>")
    parser.add_argument("--alias", default=None)
    parser.add_argument("--announce", action="store_true", default=None, help="others see my uid and alias")
    parser.add_argument("--join-key", default=None, metavar="KEY")
    parser.add_argument("--send-key", default=None, metavar="KEY")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"], help="event loop")
    return parser


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {"alias": args.alias, "announce": args.announce, "join_key": args.join_key, "send_key": args.send_key}


def _fail(code: int, text: str) -> int:
    fail(text)
    return code


def _value(text: str) -> tuple[Any, str | None]:
    try:
        return msgspec.json.decode(text), None
    except msgspec.DecodeError:
        return None, f"not a JSON value: {text!r} (a string needs its quotes: '\"hi\"')"


def _run(args: argparse.Namespace, main: Any, *arguments: Any) -> int:
    """Run ``main`` on the chosen loop, turning the client's failures into exit codes."""
    try:
        with contextlib.suppress(KeyboardInterrupt):
            code: int = anyio.run(main, *arguments, backend=getattr(args, "backend", "asyncio"))
            return code
        return OK
    except Refused as exc:
        return _fail(REFUSED, f"refused: HTTP {exc.status}: {exc.reason}")
    except ChannelClosed as exc:
        return _fail(UNREACHABLE, f"the relay closed the channel: {exc.code} {exc.reason}".rstrip())
    except ValueError as exc:  # the client's word for a URL it cannot use
        return _fail(USAGE, str(exc))
    except (OSError, ClientError) as exc:
        return _fail(UNREACHABLE, f"cannot reach the relay: {exc}")


def _cmd_listen(args: argparse.Namespace) -> int:
    return _run(args, _listen, args.url, _options(args))


async def _listen(url: str, options: dict[str, Any]) -> int:
    encode = msgspec.json.encode
    async with connect(url, list=True, **options) as channel:
        hello = {"type": "join", "self": True, "uid": channel.uid, "total": channel.total}
        if channel.alias is not None:
            hello["alias"] = channel.alias
        _line(encode(hello))
        async for event in channel:
            _line(encode(event))
    code = channel.close_code
    if code not in (None, CLOSE_NORMAL, CLOSE_GOING_AWAY):
        return _fail(UNREACHABLE, f"the relay closed the channel: {code} {channel.close_reason}".rstrip())
    return OK


def _line(data: bytes) -> None:
    sys.stdout.write(data.decode() + "\n")
    sys.stdout.flush()


def _cmd_send(args: argparse.Namespace) -> int:
    value, problem = _value(args.value)
    if problem is not None:
        return _fail(USAGE, problem)
    return _run(args, _send, args.url, value, args.to, _options(args))


async def _send(url: str, value: Any, to: str | None, options: dict[str, Any]) -> int:
    await push(url, value, to, **options)
    return OK


def _cmd_push(args: argparse.Namespace) -> int:
    value, problem = _value(args.value)
    if problem is not None:
        return _fail(USAGE, problem)
    try:
        address = parse_url(args.url)
    except RelayValueError:
        return _fail(USAGE, f"not an http(s) or ws(s) URL: {args.url!r}")
    for marker in ("/push/", "/c/", "/r/"):
        before, found, channel = address.path.partition(marker)
        if found and channel:
            break
    else:
        return _fail(
            USAGE, f"not a channel URL: {args.url!r} (http://host:port/push/<channel> or ws://.../c/<channel>)"
        )
    base = f"{'https' if address.tls else 'http'}://{address.host_header}{before}"
    return _run(args, _push, base, unquote(channel), value, args.send_key)


async def _push(base: str, channel: str, value: Any, send_key: str) -> int:
    recipients = await http_push(base, channel, value, send_key=send_key)
    _line(msgspec.json.encode({"ok": True, "recipients": recipients}))
    return OK
