"""Protocol smoke check for a running relay (reference relays or relaycore).

Connects a few python-websockets clients and checks the frames the benchmark
relies on: self-join first, join/leave notices, the exact broadcast envelope
(no ``type`` key), echo, invalid JSON errors and direct messages.

Run: ``python bench/check_protocol.py --port 8080`` (exit 1 on a mismatch)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from contextlib import ExitStack
from typing import Any

from websockets.sync.client import ClientConnection, connect

UID_RE = re.compile(r"^[A-Za-z0-9]{6}$")


class Checker:
    """Collects failed expectations instead of stopping at the first one."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def expect(self, ok: bool, what: str) -> None:
        print(("ok   " if ok else "FAIL ") + what)
        if not ok:
            self.failures.append(what)


def recv_json(ws: ClientConnection, timeout: float = 2.0) -> tuple[str, Any]:
    raw = ws.recv(timeout=timeout)
    assert isinstance(raw, str), f"expected a text frame, got {raw!r}"
    return raw, json.loads(raw)


def open_client(stack: ExitStack, base: str, channel: str, query: str = "") -> tuple[ClientConnection, dict[str, Any]]:
    url = f"{base}/c/{channel}{'?' + query if query else ''}"
    ws = stack.enter_context(connect(url, compression=None))
    _, hello = recv_json(ws)
    return ws, hello


def run(base: str) -> list[str]:
    with ExitStack() as stack:
        return check_channel(stack, base)


def check_channel(stack: ExitStack, base: str) -> list[str]:
    c = Checker()
    channel = "proto%20check"
    alice, hello_a = open_client(stack, base, channel, "echo=true")
    c.expect(hello_a.get("type") == "join" and hello_a.get("self") is True, "self-join is the first frame")
    c.expect(bool(UID_RE.match(str(hello_a.get("uid")))), "uid is 6 characters [A-Za-z0-9]")
    c.expect(hello_a.get("total") == 1, "first member sees total=1")
    c.expect(isinstance(hello_a.get("date"), int), "self-join carries an integer ms date")

    bob, hello_b = open_client(stack, base, channel, "alias=bob&announce")
    c.expect(hello_b.get("total") == 2 and hello_b.get("alias") == "bob", "second member: total=2, alias echoed")
    _, join = recv_json(alice)
    c.expect(join.get("type") == "join" and join.get("total") == 2, "others get a join notice")
    c.expect(join.get("uid") == hello_b["uid"] and join.get("alias") == "bob", "announce adds uid/alias to notice")
    c.expect("self" not in join, "join notice to others has no self key")

    alice.send(json.dumps({"n": 1, "s": "hé"}))
    raw_b, env_b = recv_json(bob)
    raw_a, _env_a = recv_json(alice)
    c.expect(list(env_b) == ["uid", "date", "message"], f"envelope keys are uid,date,message: {raw_b}")
    c.expect("type" not in env_b, "envelope has no type key")
    c.expect(env_b.get("uid") == hello_a["uid"], "envelope uid is the sender's uid")
    c.expect(env_b.get("message") == {"n": 1, "s": "hé"}, "message value relayed unchanged")
    c.expect(raw_a == raw_b, "echo delivers the same bytes to the sender")

    bob.send('"from bob"')
    raw, env = recv_json(alice)
    c.expect(list(env) == ["uid", "alias", "date", "message"], f"alias follows uid in envelope: {raw}")
    c.expect(env.get("message") == "from bob", "string message relayed")
    try:
        extra = bob.recv(timeout=0.3)
        c.expect(False, f"no echo without echo flag (got {extra!r})")
    except TimeoutError:
        c.expect(True, "no echo without echo flag")

    bob.send("{not json")
    _, err = recv_json(bob)
    c.expect(err.get("type") == "error" and err.get("message") == "Invalid JSON message.", "invalid JSON error")
    try:
        leaked = alice.recv(timeout=0.3)
        c.expect(False, f"invalid JSON is not relayed (got {leaked!r})")
    except TimeoutError:
        c.expect(True, "invalid JSON is not relayed")

    carol, hello_c = open_client(stack, base, channel, "list")
    c.expect(hello_c.get("total") == 3 and isinstance(hello_c.get("users"), list), "list flag adds users")
    recv_json(alice)
    recv_json(bob)
    alice.send(f"\x1f{hello_c['uid']}\x1f[1,2]")
    _, direct = recv_json(carol)
    c.expect(direct.get("message") == [1, 2] and direct.get("uid") == hello_a["uid"], "direct message delivered")
    try:
        stray = bob.recv(timeout=0.3)
        c.expect(False, f"direct message only reaches its target (bob got {stray!r})")
    except TimeoutError:
        c.expect(True, "direct message only reaches its target")

    bob.close()
    _, leave = recv_json(alice)
    c.expect(leave.get("type") == "leave" and leave.get("total") == 2, "leave notice with new total")
    c.expect(leave.get("uid") == hello_b["uid"], "announce adds uid to leave notice")
    alice.close()
    carol.close()
    return c.failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    failures = run(f"ws://{args.host}:{args.port}")
    print(f"{len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
