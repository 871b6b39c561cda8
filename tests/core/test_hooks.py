"""The host's hooks and calls, in the Harness (no I/O): authorize, on_join, on_leave,
on_message, publish, presence, disconnect (relaycore._hooks, relaycore._host)."""

from __future__ import annotations

from typing import Any

import pytest

from relaycore import Admit, Config, Hooks, HTTPError, JoinAttempt, Member, Refuse, RelayUsageError, RelayValueError
from relaycore.testing import Harness


def test_authorize_refuses_with_the_hosts_status_and_text_and_admits_with_its_alias() -> None:
    seen: list[JoinAttempt] = []

    def authorize(attempt: JoinAttempt) -> Admit | Refuse:
        seen.append(attempt)
        if attempt.alias != "ann":
            return Refuse(401, "Sign in first.")
        return Admit(alias="Ann Smith", announce=True)

    relay = Harness(hooks=Hooks(authorize=authorize))
    with pytest.raises(HTTPError) as refused:
        relay.join("/c/team:ops?alias=bob")
    assert (refused.value.status, refused.value.message) == (401, "Sign in first.")
    member = relay.join("/c/team:ops?alias=ann")
    assert member.alias == "Ann Smith"
    relay.join("/c/team:ops?alias=ann")
    assert member.expect("join", alias="Ann Smith")  # announced, as authorize said
    attempt = seen[-1]
    assert (attempt.channel, attempt.transport, attempt.client, attempt.keys) == (
        "team:ops",
        "websocket",
        "127.0.0.1",
        False,
    )


def test_the_protocols_keys_are_checked_before_authorize() -> None:
    calls = []
    config = Config.from_toml('[namespaces."vip"]\njoin_key = "jk"\n', env={})
    relay = Harness(config, hooks=Hooks(authorize=lambda attempt: calls.append(attempt) or Admit()))
    with pytest.raises(HTTPError) as refused:
        relay.join("/c/vip:room")
    assert refused.value.status == 403 and calls == []
    relay.join("/c/vip:room?joinKey=jk")
    assert len(calls) == 1 and calls[0].keys is True


def test_an_authorize_that_raises_refuses_with_500_and_is_reported() -> None:
    relay = Harness(hooks=Hooks(authorize=lambda attempt: 1 / 0))
    failures: list[tuple[str, str]] = []
    relay.hub.hook_failed = lambda where, exc: failures.append((where, type(exc).__name__))
    with pytest.raises(HTTPError) as refused:
        relay.join("/c/room")
    assert (refused.value.status, refused.value.message) == (500, "Internal server error.")
    assert failures == [("authorize", "ZeroDivisionError")]
    assert relay.hub.connections == 0


def test_an_async_authorize_decides_after_the_call_and_can_take_away_sending() -> None:
    async def authorize(attempt: JoinAttempt) -> Admit:
        return Admit(can_send=False)

    relay = Harness(hooks=Hooks(authorize=authorize))
    reader = relay.join("/c/room")
    writer = relay.join("/c/room")
    reader.expect("join")
    writer.send("hi")
    assert writer.expect("error")["message"] == "Sending requires a valid sendKey."
    reader.expect_nothing()


def test_on_join_and_on_leave_are_told_with_the_close_code() -> None:
    events: list[tuple[str, str, Any]] = []

    async def on_leave(member: Member, code: int) -> None:
        events.append(("leave", member.uid, code))

    relay = Harness(hooks=Hooks(on_join=lambda m: events.append(("join", m.uid, m.channel.name)), on_leave=on_leave))
    ann = relay.join("/c/room")
    bob = relay.join("/c/room")
    bob.close(1000)
    assert relay.disconnect("room", ann.uid, code=4001, reason="bye") is True
    assert ann.closed == (4001, "bye")
    assert events == [
        ("join", ann.uid, "room"),
        ("join", bob.uid, "room"),
        ("leave", bob.uid, 1000),
        ("leave", ann.uid, 4001),
    ]


def test_on_message_drops_rewrites_or_keeps_a_message() -> None:
    def moderate(member: Member, message: Any) -> Any:
        if message == "spam":
            return None
        if isinstance(message, dict) and "text" in message:
            return {**message, "text": message["text"].replace("darn", "****")}
        return message

    relay = Harness(hooks=Hooks(on_message=moderate))
    ann, bob = relay.join("/c/room"), relay.join("/c/room")
    ann.expect("join")
    bob.send("spam")
    bob.send({"text": "oh darn"})
    bob.send_raw("[1,  2]")
    assert [f["message"] for f in ann.take()] == [{"text": "oh ****"}, [1, 2]]
    bob.expect_nothing()  # a dropped message: the sender is not told
    assert relay.hub.channels["room"].tally.dropped["hook"] == 1


def test_publish_presence_and_disconnect() -> None:
    relay = Harness()
    ann = relay.join("/c/news?alias=Ann&announce=true")
    bob = relay.join("/c/news")
    ann.take()
    assert relay.publish("news", {"order": 42, "state": "shipped"}) == 2
    got = ann.expect()
    assert got["message"] == {"order": 42, "state": "shipped"} and "uid" not in got and "alias" not in got
    bob.expect()
    assert relay.publish("news", "just you", to=bob.uid) == 1
    assert bob.expect()["message"] == "just you"
    ann.expect_nothing()
    assert relay.publish("news", 1, to="nobody") == 0
    assert relay.publish("empty", 1) == 0
    roster = relay.presence("news")
    assert roster.total == 2 and [(m.uid, m.alias) for m in roster.members] == [(ann.uid, "Ann")]
    assert relay.disconnect("news", bob.uid) is True and bob.closed == (1008, "")
    assert ann.expect("leave")["total"] == 1
    assert relay.disconnect("news", bob.uid) is False
    with pytest.raises(RelayValueError):
        relay.publish("", 1)
    with pytest.raises(RelayValueError):
        relay.publish("news", object())


class _Waits:
    """An awaitable that really waits (it yields to an event loop)."""

    def __await__(self) -> Any:
        yield


def test_a_hook_that_waits_is_a_usage_error_in_the_harness() -> None:
    async def authorize(attempt: JoinAttempt) -> Admit:
        await _Waits()
        return Admit()

    relay = Harness(hooks=Hooks(authorize=authorize))
    with pytest.raises(RelayUsageError):
        relay.join("/c/room")
