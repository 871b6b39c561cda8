"""Who may join and who may send, and the connection options, over real sockets.

PROTOCOL.md section 6 (reservations, namespaces, ephemeral keys) and section 2 (options
in the query string), behind every front door.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from doors import Relay, hypercorn_refuses_frames_behind_the_upgrade
from rawws import RawPeer, text, upgrade_status
from wsclient import Client, Rejected, clients, expect_silence, join, recv_json

from relaycore import Config

pytestmark = [pytest.mark.anyio, pytest.mark.doors]

CONFIG = b"""
[limits]
connections_per_second_per_ip = 1000.0

[namespaces]
"myapp" = { join_key = "jk", send_key = "sk" }
"myapp/private" = { join_key = "pjk", send_key = "psk" }
"sendonly" = { send_key = "ssk" }
"joinonly" = { join_key = "ojk" }
"bare" = {}
"""

SEND_KEY_REQUIRED = "Sending requires a valid sendKey."
MARKER = "nothing-came-before-me"

Connect = Any  # the connect(path) -> Client callable that wsclient.clients yields


@pytest.fixture
def config() -> Config:
    """Nested reservations, one with each kind of key, and one without keys."""
    return Config.from_toml(CONFIG)


async def assert_send_refused(client: Client, data: str) -> None:
    """``data`` sent by a member without the send key gets the exact error frame."""
    await client.send(data)
    error = await recv_json(client)
    assert error == {"type": "error", "message": SEND_KEY_REQUIRED, "date": error["date"]}
    assert isinstance(error["date"], int)


async def assert_nothing_pending(client: Client) -> None:
    """Nothing reached ``client`` so far: a probe's answer is its very next frame."""
    await client.send('\x1fNOUSER\x1f"probe"')
    frame = await recv_json(client)
    assert frame == {"type": "error", "message": "User NOUSER not found.", "date": frame["date"]}, frame


async def assert_next_message(reader: Client, sender_uid: str, message: Any) -> None:
    relayed = await recv_json(reader)
    assert relayed.get("type") is None, f"expected a relayed message, got {relayed}"
    assert relayed["uid"] == sender_uid and relayed["message"] == message, relayed


# -- reserved namespaces: the join key --------------------------------------------------------


@pytest.mark.parametrize("channel", ["myapp", "myapp:room", "myapp/a/b", "myapp%3Aroom"])
@pytest.mark.parametrize(
    "query", ["", "?joinKey=nope", "?joinKey=JK", "?joinKey=j", "?joinKey=jkx", "?joinKey=ssk", "?sendKey=sk"]
)
async def test_join_without_the_join_key_is_refused_with_403(relay: Relay, channel: str, query: str) -> None:
    async with clients(relay.port) as connect:
        inside, _ = await join(connect, f"/c/{channel}?joinKey=jk")
        assert await upgrade_status(relay.port, f"/c/{channel}{query}") == 403
        # Nobody joined: the member inside hears of no one, and the next joiner is the second.
        _, hello = await join(connect, f"/c/{channel}?joinKey=jk")
        assert hello["total"] == 2
        joined = await recv_json(inside)
        assert joined == {"type": "join", "total": 2, "date": joined["date"]}


@hypercorn_refuses_frames_behind_the_upgrade(403)
@pytest.mark.filterwarnings("ignore::doors.DoorWarning")
async def test_refused_join_opens_no_websocket(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        inside, _ = await join(connect, "/c/myapp:room?joinKey=jk&sendKey=sk")
        peer = await RawPeer.connect(relay.port)
        try:
            # The handshake and a text frame in one write, as an eager client sends them.
            status, _ = await peer.upgrade("/c/myapp:room?joinKey=wrong", extra=text('{"sneaked":"in"}'))
            assert status == 403
            rest = await peer.read_to_eof()
            # No WebSocket frame follows (a text frame would start with 0x81); at most an HTTP answer.
            assert rest == b"" or rest.startswith(b"HTTP/1.1 4"), rest
        finally:
            await peer.aclose()
        # Neither a join nor the sneaked frame reached the member inside.
        _, hello = await join(connect, "/c/myapp:room?joinKey=jk")
        joined = await recv_json(inside)
        assert hello["total"] == 2
        assert joined == {"type": "join", "total": 2, "date": joined["date"]}


async def test_refusal_reaches_the_library_client_as_403(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        inside, _ = await join(connect, "/c/myapp:room?joinKey=jk")
        with pytest.raises(Rejected) as refused:
            await connect("/c/myapp:room?joinKey=wrong")
        assert refused.value.status == 403
        await expect_silence(inside)


# -- reserved namespaces: the send key --------------------------------------------------------


async def test_member_without_the_send_key_listens_but_cannot_send(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        speaker, speaker_hello = await join(connect, "/c/myapp:room?joinKey=jk&sendKey=sk")
        listener, listener_hello = await join(connect, "/c/myapp:room?joinKey=jk&echo")
        await recv_json(speaker)  # the listener's join
        speaker_uid, listener_uid = speaker_hello["uid"], listener_hello["uid"]

        await assert_send_refused(listener, '{"chat":"hello"}')
        await assert_send_refused(listener, f'\x1f{speaker_uid}\x1f{{"private":1}}')
        await assert_send_refused(listener, f'@@{speaker_uid}@@{{"private":2}}')

        await assert_nothing_pending(speaker)  # none of the refused sends was relayed

        await speaker.send('{"chat":"from the speaker"}')
        await assert_next_message(listener, speaker_uid, {"chat": "from the speaker"})
        await speaker.send(f'\x1f{listener_uid}\x1f{{"direct":true}}')
        await assert_next_message(listener, speaker_uid, {"direct": True})


async def test_namespace_with_only_a_send_key_admits_everyone_and_lets_key_holders_send(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        listener, _ = await join(connect, "/c/sendonly:feed")
        speaker, hello = await join(connect, "/c/sendonly:feed?sendKey=ssk")
        await recv_json(listener)  # the speaker's join
        await assert_send_refused(listener, '"may I?"')
        await assert_nothing_pending(speaker)
        await speaker.send('"news"')
        await assert_next_message(listener, hello["uid"], "news")


@pytest.mark.parametrize("path", ["/c/joinonly:room?joinKey=ojk", "/c/bare:room"])
async def test_namespace_without_a_send_key_lets_every_member_send(relay: Relay, path: str) -> None:
    async with clients(relay.port) as connect:
        alice, alice_hello = await join(connect, path)
        bob, bob_hello = await join(connect, path)
        await recv_json(alice)
        await alice.send('{"from":"alice"}')
        await assert_next_message(bob, alice_hello["uid"], {"from": "alice"})
        await bob.send(f'\x1f{alice_hello["uid"]}\x1f{{"from":"bob"}}')
        await assert_next_message(alice, bob_hello["uid"], {"from": "bob"})


@pytest.mark.parametrize(
    "path",
    [
        "/c/myapp:x?joinKey=jk&sendKey=nope",
        "/c/myapp:x?joinKey=jk&sendKey=psk",
        "/c/sendonly:x?sendKey=nope",
        "/c/sendonly:x?joinKey=ssk",
        "/c/sendonly:x?joinKey=anything&sendKey=ssk",
        "/c/joinonly:x?joinKey=ojk&sendKey=ojk",
        "/c/bare:x?joinKey=k",
        "/c/bare:x?sendKey=k",
        "/c/bare?joinKey=k&sendKey=k",
    ],
    ids=[
        "wrong-send-key",
        "other-namespace-send-key",
        "send-only-wrong-send-key",
        "send-only-has-no-join-key",
        "send-only-any-join-key",
        "join-only-has-no-send-key",
        "no-keys-join-key",
        "no-keys-send-key",
        "no-keys-both",
    ],
)
async def test_offering_a_key_that_is_not_the_namespaces_own_is_403(relay: Relay, path: str) -> None:
    assert await upgrade_status(relay.port, path) == 403
    channel = path.partition("?")[0]
    # A reservation without keys is not claimed by the refused joiner's keys either.
    if channel.startswith("/c/bare"):
        async with clients(relay.port) as connect:
            _, hello = await join(connect, channel)
            assert hello["total"] == 1


# -- the longest namespace wins ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/c/myapp?joinKey=jk", 101),
        ("/c/myapp/private?joinKey=pjk", 101),
        ("/c/myapp/private?joinKey=jk", 403),
        ("/c/myapp/private:x?joinKey=pjk", 101),
        ("/c/myapp/private/x/y?joinKey=jk", 403),
        ("/c/myapp%2Fprivate%3Ax?joinKey=jk", 403),
        ("/c/myapp/private:x?joinKey=pjk&sendKey=sk", 403),
        ("/c/myapp/private:x?joinKey=pjk&sendKey=psk", 101),
        ("/c/myapp/privateer?joinKey=jk", 101),
        ("/c/myapp/privateer?joinKey=pjk", 403),
        ("/c/myapp:private?joinKey=jk", 101),
        ("/c/myapp:private?joinKey=pjk", 403),
        ("/c/myapps:x", 101),
        ("/c/myapps:x?joinKey=pjk&sendKey=psk", 101),
        ("/c/myappx", 101),
        ("/c/Myapp:x", 101),
    ],
)
async def test_longest_covering_namespace_decides(relay: Relay, path: str, status: int) -> None:
    assert await upgrade_status(relay.port, path) == status


async def test_send_key_of_the_longest_namespace_decides(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        listener, _ = await join(connect, "/c/myapp/private:x?joinKey=pjk")
        speaker, hello = await join(connect, "/c/myapp/private:x?joinKey=pjk&sendKey=psk")
        await recv_json(listener)
        await assert_send_refused(listener, "1")
        await assert_nothing_pending(speaker)
        await speaker.send("2")
        await assert_next_message(listener, hello["uid"], 2)

        # Under plain `myapp`, `myapp/privateer` takes myapp's keys.
        outer_listener, _ = await join(connect, "/c/myapp/privateer?joinKey=jk")
        outer_speaker, outer_hello = await join(connect, "/c/myapp/privateer?joinKey=jk&sendKey=sk")
        await recv_json(outer_listener)
        await outer_speaker.send("3")
        await assert_next_message(outer_listener, outer_hello["uid"], 3)


# -- open channels: ephemeral keys -------------------------------------------------------------


async def test_first_joiners_join_key_locks_an_open_channel(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        first, _ = await join(connect, "/c/lounge?joinKey=j1")
        for query in ["", "?joinKey=wrong", "?joinKey=J1", "?sendKey=j1"]:
            assert await upgrade_status(relay.port, f"/c/lounge{query}") == 403, query
        _, hello = await join(connect, "/c/lounge?joinKey=j1")
        assert hello["total"] == 2
        joined = await recv_json(first)
        assert joined == {"type": "join", "total": 2, "date": joined["date"]}


@pytest.mark.parametrize("query", ["", "&sendKey=wrong", "&sendKey=S1"])
async def test_later_joiner_without_the_ephemeral_send_key_is_listen_only(relay: Relay, query: str) -> None:
    async with clients(relay.port) as connect:
        first, first_hello = await join(connect, "/c/lounge?sendKey=s1")
        listener, _ = await join(connect, f"/c/lounge?alias=L{query}")
        await recv_json(first)
        await assert_send_refused(listener, '{"hi":1}')
        await assert_send_refused(listener, f'\x1f{first_hello["uid"]}\x1f{{"hi":2}}')
        await assert_nothing_pending(first)

        holder, holder_hello = await join(connect, "/c/lounge?sendKey=s1")
        await recv_json(first)
        await recv_json(listener)
        await holder.send('{"hi":3}')
        await assert_next_message(first, holder_hello["uid"], {"hi": 3})
        await assert_next_message(listener, holder_hello["uid"], {"hi": 3})
        await first.send('{"hi":4}')
        await assert_next_message(listener, first_hello["uid"], {"hi": 4})


async def test_keys_offered_on_a_keyless_open_channel_are_ignored(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        first, first_hello = await join(connect, "/c/lounge")
        second, second_hello = await join(connect, "/c/lounge?joinKey=late&sendKey=late")
        await recv_json(first)
        # The second joiner's keys lock nothing: a keyless third joins and sends.
        third, third_hello = await join(connect, "/c/lounge")
        await recv_json(first)
        await recv_json(second)
        assert third_hello["total"] == 3
        await third.send('"from third"')
        await assert_next_message(first, third_hello["uid"], "from third")
        await assert_next_message(second, third_hello["uid"], "from third")
        await second.send('"from second"')
        await assert_next_message(first, second_hello["uid"], "from second")
        await assert_next_message(third, second_hello["uid"], "from second")
        await first.send('"from first"')
        await assert_next_message(third, first_hello["uid"], "from first")


async def test_ephemeral_keys_outlive_their_setter_and_vanish_with_the_last_member(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        setter, _ = await join(connect, "/c/lounge?joinKey=j1&sendKey=s1")
        keeper, _ = await join(connect, "/c/lounge?joinKey=j1&sendKey=s1")
        await recv_json(setter)
        await setter.close()
        left = await recv_json(keeper)
        assert left["type"] == "leave" and left["total"] == 1
        # The channel still has a member: its keys still hold.
        assert await upgrade_status(relay.port, "/c/lounge") == 403
        assert await upgrade_status(relay.port, "/c/lounge?joinKey=j2") == 403

        await keeper.close()
        # The last member went; the keys went with it (the close is processed asynchronously).
        with anyio.fail_after(5):
            while await upgrade_status(relay.port, "/c/lounge") == 403:
                await anyio.sleep(0.02)
        fresh, fresh_hello = await join(connect, "/c/lounge")
        assert fresh_hello["total"] == 1
        other, _ = await join(connect, "/c/lounge")
        await recv_json(fresh)
        await fresh.send('"no keys now"')
        await assert_next_message(other, fresh_hello["uid"], "no keys now")


# -- options in the query string -------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "alias"),
    [
        ("as=Bob", "Bob"),
        ("alias=Ann", "Ann"),
        ("as=Bob&alias=Ann", "Ann"),
        ("alias=Ann&as=Bob", "Ann"),
        ("alias=Big+Bob", "Big Bob"),
        ("as=Big+Bob", "Big Bob"),
        ("alias=a%2Bb", "a+b"),
        ("alias=%C3%89mile+Z", "Émile Z"),
        ("color=red&as=Bob&unknown", "Bob"),
    ],
)
async def test_alias_option(relay: Relay, query: str, alias: str) -> None:
    async with clients(relay.port) as connect:
        watcher, _ = await join(connect, "/c/room")
        named, hello = await join(connect, f"/c/room?{query}")
        assert hello["alias"] == alias
        await recv_json(watcher)
        await named.send("true")
        relayed = await recv_json(watcher)
        assert relayed == {"uid": hello["uid"], "alias": alias, "date": relayed["date"], "message": True}


@pytest.mark.parametrize(
    ("query", "echo"),
    [
        ("echo", True),
        ("echo=", True),
        ("echo=1", True),
        ("echo=true", True),
        ("alias=E&echo", True),
        ("echo=0", False),
        ("echo=false", False),
        ("", False),
        ("echoes=1", False),
    ],
)
async def test_echo_flag(relay: Relay, query: str, echo: bool) -> None:
    async with clients(relay.port) as connect:
        watcher, _ = await join(connect, "/c/room")
        sender, _ = await join(connect, f"/c/room?{query}")
        await recv_json(watcher)
        await sender.send('{"n":1}')
        seen = await watcher.recv()
        assert json.loads(seen)["message"] == {"n": 1}
        if echo:
            assert await sender.recv() == seen  # the same envelope as everyone's
        else:
            await assert_nothing_pending(sender)
