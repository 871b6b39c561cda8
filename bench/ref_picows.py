"""Reference relay on picows: the fast floor of the benchmark.

Same channel protocol as relaycore (itty-sockets compatible), built on the
picows listener API: frames arrive in ``on_ws_frame`` and fan-out is one
``transport.send(WSMsgType.TEXT, payload)`` per recipient. Client JSON is
validated with msgspec and spliced unchanged into the envelope, which is
built once per message and written to every recipient.

Run: ``python bench/ref_picows.py --host 127.0.0.1 --port 8080``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import string
import time
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server
from wsclient import raise_nofile_limit  # bench/ is on sys.path when run as a script

UID_ALPHABET = string.ascii_letters + string.digits
DIRECT_MARK = 0x1F
TRUE_VALUES = ("true", "1", "")
DATA_TYPES = (WSMsgType.TEXT, WSMsgType.BINARY)

json_decode = msgspec.json.decode
json_encode = msgspec.json.encode


def now_ms() -> int:
    return int(time.time() * 1000)


class Relay:
    """Channel registry: channel name -> {uid: Member}."""

    def __init__(self) -> None:
        self.channels: dict[str, dict[str, Member]] = {}

    def new_uid(self, members: dict[str, Member]) -> str:
        while True:
            uid = "".join(random.choices(UID_ALPHABET, k=6))
            if uid not in members:
                return uid

    def route(self, request: WSUpgradeRequest) -> WSListener | None:
        """Listener factory: a Member for ``/c/<channel>``, None (404) otherwise."""
        parts = urlsplit(request.path.decode("latin-1"))
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
        return Member(self, channel, alias, flag("echo"), flag("announce"), flag("list"))


class Member(WSListener):
    """One connection in one channel."""

    def __init__(
        self, relay: Relay, channel: str, alias: str | None, echo: bool, announce: bool, list_users: bool
    ) -> None:
        super().__init__()
        self.relay = relay
        self.channel = channel
        self.alias = alias
        self.echo = echo
        self.announce = announce
        self.list_users = list_users
        self.uid = ""
        self.prefix = b""
        self.transport: WSTransport | None = None
        self.members: dict[str, Member] = {}
        self.fragments: list[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        members = self.relay.channels.setdefault(self.channel, {})
        self.members = members
        self.uid = self.relay.new_uid(members)
        head = b'{"uid":"' + self.uid.encode() + b'"'
        if self.alias is not None:
            head += b',"alias":' + json_encode(self.alias)
        self.prefix = head + b',"date":'
        members[self.uid] = self
        hello: dict[str, Any] = {"type": "join", "self": True, "uid": self.uid}
        if self.alias is not None:
            hello["alias"] = self.alias
        hello["total"] = len(members)
        hello["date"] = now_ms()
        if self.list_users:
            hello["users"] = [m.describe() for m in members.values()]
        transport.send(WSMsgType.TEXT, json_encode(hello))
        self.notify("join")

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        members = self.members
        if members.get(self.uid) is not self:
            return
        del members[self.uid]
        if members:
            self.notify("leave")
        elif self.relay.channels.get(self.channel) is members:
            del self.relay.channels[self.channel]

    def describe(self) -> dict[str, str]:
        info = {"uid": self.uid}
        if self.alias is not None:
            info["alias"] = self.alias
        return info

    def notify(self, kind: str) -> None:
        event: dict[str, Any] = {"type": kind}
        if self.announce:
            event.update(self.describe())
        event["total"] = len(self.members)
        event["date"] = now_ms()
        payload = json_encode(event)
        for member in self.members.values():
            if member is not self and member.transport is not None:
                member.transport.send(WSMsgType.TEXT, payload)

    # -- frames ----------------------------------------------------------------

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type in DATA_TYPES:
            if frame.fin:
                self.on_message(frame.get_payload_as_bytes())
            else:
                self.fragments = [frame.get_payload_as_bytes()]
        elif msg_type == WSMsgType.CONTINUATION and self.fragments is not None:
            self.fragments.append(frame.get_payload_as_bytes())
            if frame.fin:
                data = b"".join(self.fragments)
                self.fragments = None
                self.on_message(data)
        elif msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_message(self, data: bytes) -> None:
        if data and data[0] == DIRECT_MARK:
            self.on_direct(data)
            return
        try:
            json_decode(data)
        except msgspec.DecodeError:
            self.send_error()
            return
        envelope = self.prefix + str(now_ms()).encode() + b',"message":' + data + b"}"
        text = WSMsgType.TEXT
        if self.echo:
            for member in self.members.values():
                member.transport.send(text, envelope)  # type: ignore[union-attr]
        else:
            for member in self.members.values():
                if member is not self:
                    member.transport.send(text, envelope)  # type: ignore[union-attr]

    def on_direct(self, data: bytes) -> None:
        target_uid, sep, body = data[1:].partition(b"\x1f")
        if not sep:
            self.send_error()
            return
        try:
            json_decode(body)
        except msgspec.DecodeError:
            self.send_error()
            return
        target = self.members.get(target_uid.decode("latin-1"))
        if target is not None and target.transport is not None:
            envelope = self.prefix + str(now_ms()).encode() + b',"message":' + body + b"}"
            target.transport.send(WSMsgType.TEXT, envelope)

    def send_error(self) -> None:
        error = {"type": "error", "message": "Invalid JSON message.", "date": now_ms()}
        if self.transport is not None:
            self.transport.send(WSMsgType.TEXT, json_encode(error))


async def main(host: str, port: int) -> None:
    relay = Relay()
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.cancel)
    server = await ws_create_server(relay.route, host, port, backlog=1024)
    with contextlib.suppress(asyncio.CancelledError):
        await stop
    server.close()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    raise_nofile_limit()
    asyncio.run(main(args.host, args.port))


if __name__ == "__main__":
    cli()
