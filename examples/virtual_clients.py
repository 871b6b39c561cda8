"""Play a whole relay conversation in memory with relaycore.testing: no sockets, no waiting.

    python examples/virtual_clients.py

Virtual clients join a hub exactly as WebSocket clients would, with the same options, keys,
limits, frames and error texts, but through plain calls. A fake clock makes time move only
when the script says so, and seeded uids make every run print the same thing. The same
pattern makes deterministic unit tests for code that speaks the protocol: each ``assert``
below is such a test.
"""

from __future__ import annotations

import json
from typing import Any

from relaycore import Config, HTTPError, Hub, LimitsConfig, NamespaceConfig, parse_json
from relaycore.testing import FakeClock, VirtualClient, seeded_uids


def show(name: str, client: VirtualClient, seen: dict[str, int]) -> list[dict[str, Any]]:
    """Print the frames ``client`` received since the last call, and return them."""
    frames = client.received()
    new = frames[seen.get(name, 0) :]
    seen[name] = len(frames)
    for frame in new:
        print(f"  {name} <- {json.dumps(frame)}")
    return new


def main() -> None:
    config = Config(
        limits=LimitsConfig(messages_per_second=1.0, messages_burst=3),
        namespaces={"news": NamespaceConfig(send_key="editor-key")},
    )
    clock = FakeClock()
    hub = Hub(config, clock, seeded_uids(2024))
    seen: dict[str, int] = {}

    print("1. Ann creates an open channel; Bob joins with presence on")
    ann = VirtualClient(hub, "lobby", alias="Ann", announce=True, list=True)
    bob = VirtualClient(hub, "lobby", alias="Bob", announce=True, list=True)
    show("ann", ann, seen)
    (bob_join,) = show("bob", bob, seen)
    assert bob_join["self"] is True and [u["alias"] for u in bob_join["users"]] == ["Ann", "Bob"]

    print("2. A broadcast reaches the others; a direct message reaches one member")
    carol = VirtualClient(hub, "lobby")  # not announced: others see only the new total
    for name, client in (("ann", ann), ("bob", bob), ("carol", carol)):
        show(name, client, seen)
    ann.send({"type": "chat", "text": "hello all"})
    ann.send({"type": "chat", "text": "psst, Bob"}, to=bob.uid)
    assert len(show("bob", bob, seen)) == 2
    assert len(show("carol", carol, seen)) == 1
    assert show("ann", ann, seen) == []  # no echo unless asked for

    print("3. Mistakes get an error frame, and the connection stays")
    carol.send_text("undefined")
    carol.send({"x": 1}, to="nobody")
    assert [f["message"] for f in show("carol", carol, seen)] == ["Invalid JSON message.", "User nobody not found."]

    print("4. The rate limit (1 per second, bursts of 3 here) runs on the fake clock")
    for n in range(4):
        bob.send(n)
    errors = [f for f in show("bob", bob, seen) if f.get("type") == "error"]
    assert errors[0]["message"] == "Rate limit exceeded (warning 1 of 3)."
    show("ann", ann, seen)
    show("carol", carol, seen)
    clock.advance(2.0)
    bob.send("after a pause")
    assert show("ann", ann, seen)[-1]["message"] == "after a pause"
    show("carol", carol, seen)

    print("5. A reserved namespace: listeners, a writer with the key, and HTTP push")
    reader = VirtualClient(hub, "news:today")
    editor = VirtualClient(hub, "news:today", alias="Editor", send_key="editor-key")
    show("reader", reader, seen)
    show("editor", editor, seen)
    reader.send({"type": "chat", "text": "can I write?"})
    assert show("reader", reader, seen)[-1]["message"] == "Sending requires a valid sendKey."
    editor.send({"type": "headline", "text": "Relay ships"})
    show("reader", reader, seen)
    breaking = parse_json(b'{"type":"breaking"}')  # what the HTTP endpoint does with a body
    assert breaking is not None
    recipients = hub.push("news:today", breaking, "editor-key", client="10.0.0.1")
    assert recipients == 2
    assert "uid" not in show("reader", reader, seen)[-1]  # a push has no sender
    try:
        VirtualClient(hub, "news:today", send_key="guess")
    except HTTPError as exc:
        print(f"  a wrong sendKey is refused at the door: {exc.status} {exc.message}")

    print("6. Leaving: the others are told; the last one out ends the channel")
    ann.leave()
    show("bob", bob, seen)
    show("carol", carol, seen)
    bob.leave()
    carol.leave()
    assert "lobby" not in hub.channels
    print("all checks passed")


if __name__ == "__main__":
    main()
