"""A terminal chat on one relaycore channel, written with python-websockets.

Start a relay, then open two terminals on the same channel:

    relaycore serve
    python examples/chat_client.py my-room --alias Ann
    python examples/chat_client.py my-room --alias Bob

Type a line and press Enter to send it to everyone else in the channel. ``/to <uid> text``
sends it to one member only (the uids are shown as people join). Ctrl-D or Ctrl-C quits.

The client joins with ``announce`` (others see who you are) and ``list`` (you see who is
already there), sends ``{"type": "chat", "text": ...}`` messages, as the itty-sockets
JavaScript example in the README does, and prints whatever arrives: chat lines, other JSON
payloads, join and leave events, errors, and messages pushed over HTTP by a backend
(see push_from_backend.py).

``--join-key`` and ``--send-key`` pass the channel's keys: without the send key of a
protected channel you can listen but not talk, and the first member of an open channel
sets its keys for everyone who comes after.

Without a keyboard, for scripts and checks: ``--say`` sends lines at start-up and
``--seconds`` stays that long, printing what arrives, then leaves:

    python examples/chat_client.py my-room --alias Bot --say "hello" --seconds 2

Needs the ``websockets`` package (``pip install websockets``), which relaycore's test
extra installs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import threading
from typing import Any
from urllib.parse import quote, urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus


def channel_url(base: str, channel: str, alias: str | None, join_key: str | None, send_key: str | None) -> str:
    """The WebSocket URL of ``channel``, with the options this client uses."""
    options = {"announce": "true", "list": "true"}
    for name, value in (("alias", alias), ("joinKey", join_key), ("sendKey", send_key)):
        if value:
            options[name] = value
    return f"{base.rstrip('/')}/c/{quote(channel, safe='/:')}?{urlencode(options)}"


def who(frame: dict[str, Any]) -> str:
    """How to name the member a frame is about (announced members only have a name)."""
    if "alias" in frame:
        return f"{frame['alias']} ({frame['uid']})"
    return str(frame.get("uid", "someone"))


def describe(frame: dict[str, Any]) -> str:
    """One printable line for one frame from the relay."""
    kind = frame.get("type")
    if kind == "join" and frame.get("self"):
        here = ", ".join(who(user) for user in frame.get("users", []) if not user.get("self"))
        return f"* you are {frame['uid']}; {frame['total']} here" + (f": {here}" if here else "")
    if kind == "join":
        return f"* {who(frame)} joined ({frame['total']} here)"
    if kind == "leave":
        return f"* {who(frame)} left ({frame['total']} here)"
    if kind == "error":
        return f"! {frame['message']}"
    # A relayed envelope: no "type" of its own, the payload is under "message".
    message = frame.get("message")
    sender = who(frame) if "uid" in frame else "[push]"
    if isinstance(message, dict) and message.get("type") == "chat":
        return f"{sender}: {message.get('text', '')}"
    return f"{sender}: {json.dumps(message)}"


def chat_frame(line: str) -> str:
    """The text frame for one typed line: a broadcast, or a direct message with /to."""
    if line.startswith("/to "):
        _, uid, text = [*line.split(" ", 2), ""][:3]
        return f"\x1f{uid}\x1f" + json.dumps({"type": "chat", "text": text})
    return json.dumps({"type": "chat", "text": line})


async def print_frames(ws: ClientConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for data in ws:
            print(describe(json.loads(data)), flush=True)
    print(f"* disconnected (code {ws.close_code})", flush=True)


def read_lines(loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]) -> None:
    """Read the keyboard in a daemon thread, so that a blocked read never delays the exit."""
    for line in sys.stdin:
        loop.call_soon_threadsafe(lines.put_nowait, line.rstrip("\n"))
    loop.call_soon_threadsafe(lines.put_nowait, None)


async def send_typed_lines(ws: ClientConnection) -> None:
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    threading.Thread(target=read_lines, args=(asyncio.get_running_loop(), lines), daemon=True).start()
    while (line := await lines.get()) is not None:
        if line.strip():
            await ws.send(chat_frame(line))


async def chat(args: argparse.Namespace) -> int:
    url = channel_url(args.url, args.channel, args.alias, args.join_key, args.send_key)
    try:
        ws = await connect(url)
    except InvalidStatus as exc:  # the relay refused the upgrade (403 keys, 400 name, 429 rate)
        print(f"refused: HTTP {exc.response.status_code} {exc.response.body.decode(errors='replace')}")
        return 1
    except OSError as exc:
        print(f"cannot connect to {args.url}: {exc}")
        return 1
    async with ws:
        printer = asyncio.create_task(print_frames(ws))
        for line in args.say:
            await ws.send(chat_frame(line))
        if args.seconds is not None:
            await asyncio.wait([printer], timeout=args.seconds)
        else:
            typing = asyncio.create_task(send_typed_lines(ws))
            await asyncio.wait([printer, typing], return_when=asyncio.FIRST_COMPLETED)
            typing.cancel()
    await printer
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Chat on a relaycore channel.")
    parser.add_argument("channel", help="the channel to join, e.g. my-room or myapp:lobby")
    parser.add_argument("--alias", help="your display name (at most 64 characters)")
    parser.add_argument("--join-key", help="the joinKey of a protected channel (or to protect a new one)")
    parser.add_argument("--send-key", help="the sendKey of a protected channel (or to protect a new one)")
    parser.add_argument("--url", default="ws://127.0.0.1:8787", help="the relay (default ws://127.0.0.1:8787)")
    parser.add_argument("--say", action="append", default=[], metavar="TEXT", help="send TEXT on joining")
    parser.add_argument("--seconds", type=float, help="leave after this many seconds instead of reading the keyboard")
    args = parser.parse_args()
    try:
        return asyncio.run(chat(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
