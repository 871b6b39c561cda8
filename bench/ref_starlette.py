"""Reference relay on Starlette, served by uvicorn, used as a baseline by the benchmark.

This is the relay the Starlette and FastAPI documentation leads a developer to
write: a module-level dict from channel name to the set of WebSocket objects in
it, ``await websocket.accept()``, and for every message received a loop that
awaits ``send_text()`` on each member in turn. It speaks the same channel
protocol as relaycore and the other reference relays (self-join first,
join/leave notices, ``{"uid","date","message"}`` envelopes, echo, invalid JSON
errors, direct messages), with the connection's options kept on
``websocket.state``.

Because every send is awaited inside the loop, one member that stops reading
holds up the whole loop once the server's buffers for it are full: the members
after it in the set, and every later message, wait for it. The ``stalled``
benchmark scenario measures exactly that.

Run: ``python -m uvicorn ref_starlette:app --app-dir bench --port 8080``
(or ``python bench/ref_starlette.py --host 127.0.0.1 --port 8080``)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import string
import time
from typing import Any

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

UID_ALPHABET = string.ascii_letters + string.digits
DIRECT_MARK = "\x1f"
TRUE_VALUES = ("true", "1", "")

channels: dict[str, set[WebSocket]] = {}


def now_ms() -> int:
    return int(time.time() * 1000)


def encode(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


def new_uid(members: set[WebSocket]) -> str:
    taken = {ws.state.uid for ws in members}
    while True:
        uid = "".join(random.choices(UID_ALPHABET, k=6))
        if uid not in taken:
            return uid


def describe(ws: WebSocket) -> dict[str, str]:
    info = {"uid": ws.state.uid}
    if ws.state.alias is not None:
        info["alias"] = ws.state.alias
    return info


async def send_to(ws: WebSocket, text: str) -> None:
    # A member going away raises here; its own handler takes it out of the channel.
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        await ws.send_text(text)


async def send_all(members: set[WebSocket], text: str, skip: WebSocket | None = None) -> None:
    # A copy: other handlers join and leave while this loop awaits.
    for ws in list(members):
        if ws is not skip:
            await send_to(ws, text)


async def notify(members: set[WebSocket], who: WebSocket, kind: str) -> None:
    event: dict[str, Any] = {"type": kind}
    if who.state.announce:
        event.update(describe(who))
    event["total"] = len(members)
    event["date"] = now_ms()
    await send_all(members, encode(event), skip=who)


def envelope(sender: WebSocket, value: Any) -> str:
    env: dict[str, Any] = {"uid": sender.state.uid}
    if sender.state.alias is not None:
        env["alias"] = sender.state.alias
    env["date"] = now_ms()
    env["message"] = value
    return encode(env)


async def send_error(ws: WebSocket) -> None:
    await send_to(ws, encode({"type": "error", "message": "Invalid JSON message.", "date": now_ms()}))


async def on_message(members: set[WebSocket], me: WebSocket, text: str) -> None:
    if text.startswith(DIRECT_MARK):
        target_uid, sep, body = text[1:].partition(DIRECT_MARK)
        try:
            value = json.loads(body) if sep else None
        except ValueError:
            sep = ""
        if not sep:
            await send_error(me)
            return
        for ws in list(members):
            if ws.state.uid == target_uid:
                await send_to(ws, envelope(me, value))
                break
        return
    try:
        value = json.loads(text)
    except ValueError:
        await send_error(me)
        return
    await send_all(members, envelope(me, value), skip=None if me.state.echo else me)


async def channel_endpoint(websocket: WebSocket) -> None:
    name = websocket.path_params["channel"]
    if not name:
        await websocket.close()
        return
    query = websocket.query_params

    def flag(key: str) -> bool:
        return key in query and query[key].lower() in TRUE_VALUES

    await websocket.accept()
    members = channels.setdefault(name, set())
    state = websocket.state
    state.uid = new_uid(members)
    state.alias = query.get("alias") or None
    state.echo = flag("echo")
    state.announce = flag("announce")
    members.add(websocket)
    # Nothing else can run between joining the set and this send (uvicorn only
    # suspends a send when the connection's buffer is full, and this one is new),
    # so the self-join is the first frame the joiner gets.
    hello: dict[str, Any] = {"type": "join", "self": True, "uid": state.uid}
    if state.alias is not None:
        hello["alias"] = state.alias
    hello["total"] = len(members)
    hello["date"] = now_ms()
    if flag("list"):
        hello["users"] = [describe(ws) for ws in members]
    await send_to(websocket, encode(hello))
    await notify(members, websocket, "join")
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is None:
                try:
                    text = (message.get("bytes") or b"").decode()
                except UnicodeDecodeError:
                    await send_error(websocket)
                    continue
            await on_message(members, websocket, text)
    finally:
        members.discard(websocket)
        if members:
            await notify(members, websocket, "leave")
        elif channels.get(name) is members:
            del channels[name]


app = Starlette(routes=[WebSocketRoute("/c/{channel:path}", channel_endpoint)])


def cli() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    cli()
