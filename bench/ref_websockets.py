"""Reference relay on python-websockets, used as a baseline by the benchmark.

It speaks the same channel protocol as relaycore (itty-sockets compatible) and
is written the way a Python developer would write it by hand: one asyncio
handler per connection, stdlib ``json`` for validation and encoding, and
``websockets.asyncio.server.broadcast`` for fan-out.

Run: ``python bench/ref_websockets.py --host 127.0.0.1 --port 8080``; with ``--compression
deflate`` it negotiates permessage-deflate as python-websockets does by default (a compressor
and a decompressor per connection, 12-bit windows), for the compression benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http
import json
import random
import signal
import string
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from wsclient import raise_nofile_limit  # bench/ is on sys.path when run as a script

UID_ALPHABET = string.ascii_letters + string.digits
DIRECT_MARK = "\x1f"
TRUE_VALUES = ("true", "1", "")


@dataclass(slots=True)
class Member:
    """One connection inside one channel."""

    ws: ServerConnection
    uid: str
    alias: str | None
    echo: bool
    announce: bool


@dataclass(slots=True)
class Options:
    """Per-connection options taken from the query string."""

    channel: str
    echo: bool
    announce: bool
    list_users: bool
    alias: str | None


def now_ms() -> int:
    return int(time.time() * 1000)


def encode(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


def parse_options(path: str) -> Options | None:
    """Parse ``/c/<channel>?<query>``; None when the path is not a channel."""
    parts = urlsplit(path)
    if not parts.path.startswith("/c/"):
        return None
    channel = unquote(parts.path[3:])
    if not channel:
        return None
    query = parse_qs(parts.query, keep_blank_values=True)

    def flag(name: str) -> bool:
        values = query.get(name)
        return values is not None and values[-1].lower() in TRUE_VALUES

    alias_values = query.get("alias")
    alias = alias_values[-1] if alias_values and alias_values[-1] else None
    return Options(channel, flag("echo"), flag("announce"), flag("list"), alias)


class Relay:
    """Channel registry and message routing."""

    def __init__(self) -> None:
        self.channels: dict[str, dict[str, Member]] = {}

    def new_uid(self, members: dict[str, Member]) -> str:
        while True:
            uid = "".join(random.choices(UID_ALPHABET, k=6))
            if uid not in members:
                return uid

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if parse_options(request.path) is None:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "Not Found\n")
        return None

    async def handler(self, ws: ServerConnection) -> None:
        opts = parse_options(ws.request.path if ws.request else "")
        if opts is None:
            return
        members = self.channels.setdefault(opts.channel, {})
        me = Member(ws, self.new_uid(members), opts.alias, opts.echo, opts.announce)
        members[me.uid] = me
        # No await between registering and the two broadcasts below, so the
        # self-join is always the first frame the joiner gets.
        hello: dict[str, Any] = {"type": "join", "self": True, "uid": me.uid}
        if me.alias is not None:
            hello["alias"] = me.alias
        hello["total"] = len(members)
        hello["date"] = now_ms()
        if opts.list_users:
            hello["users"] = [self.describe(m) for m in members.values()]
        broadcast([ws], encode(hello))
        self.notify(members, me, "join")
        try:
            async for data in ws:
                self.on_message(members, me, data)
        except ConnectionClosed:
            pass  # the client went away without a closing handshake
        finally:
            del members[me.uid]
            if members:
                self.notify(members, me, "leave")
            elif self.channels.get(opts.channel) is members:
                del self.channels[opts.channel]

    @staticmethod
    def describe(member: Member) -> dict[str, str]:
        info = {"uid": member.uid}
        if member.alias is not None:
            info["alias"] = member.alias
        return info

    def notify(self, members: dict[str, Member], who: Member, kind: str) -> None:
        event: dict[str, Any] = {"type": kind}
        if who.announce:
            event.update(self.describe(who))
        event["total"] = len(members)
        event["date"] = now_ms()
        broadcast([m.ws for m in members.values() if m is not who], encode(event))

    def envelope(self, sender: Member, value: Any) -> str:
        env: dict[str, Any] = {"uid": sender.uid}
        if sender.alias is not None:
            env["alias"] = sender.alias
        env["date"] = now_ms()
        env["message"] = value
        return encode(env)

    def on_message(self, members: dict[str, Member], me: Member, data: str | bytes) -> None:
        if isinstance(data, bytes):
            try:
                data = data.decode()
            except UnicodeDecodeError:
                self.send_error(me)
                return
        if data.startswith(DIRECT_MARK):
            self.on_direct(members, me, data)
            return
        try:
            value = json.loads(data)
        except ValueError:
            self.send_error(me)
            return
        frame = self.envelope(me, value)
        if me.echo:
            broadcast([m.ws for m in members.values()], frame)
        else:
            broadcast([m.ws for m in members.values() if m is not me], frame)

    def on_direct(self, members: dict[str, Member], me: Member, data: str) -> None:
        target_uid, sep, body = data[1:].partition(DIRECT_MARK)
        if not sep:
            self.send_error(me)
            return
        try:
            value = json.loads(body)
        except ValueError:
            self.send_error(me)
            return
        target = members.get(target_uid)
        if target is not None:
            broadcast([target.ws], self.envelope(me, value))

    def send_error(self, me: Member) -> None:
        error = {"type": "error", "message": "Invalid JSON message.", "date": now_ms()}
        broadcast([me.ws], encode(error))


async def main(host: str, port: int, compression: str | None = None) -> None:
    relay = Relay()
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.cancel)
    async with serve(
        relay.handler,
        host,
        port,
        compression=compression,
        process_request=relay.process_request,
        backlog=1024,
    ):
        with contextlib.suppress(asyncio.CancelledError):
            await stop


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--compression", choices=("none", "deflate"), default="none")
    args = parser.parse_args()
    raise_nofile_limit()
    asyncio.run(main(args.host, args.port, None if args.compression == "none" else args.compression))


if __name__ == "__main__":
    cli()
