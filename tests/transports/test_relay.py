"""The relay over real sockets, with real WebSocket clients, behind every front door.

PROTOCOL.md sections 3, 4 and 7: frames, broadcast, echo, direct messages, errors,
presence, ordering and the channel lifecycle.
"""

from __future__ import annotations

import re

import anyio
import pytest
from doors import (
    ASGI_DOORS,
    Relay,
    health,
    hypercorn_refuses_frames_behind_the_upgrade,
    raw_peer,
    server_gap,
    timeout_says,
    wait_for_connections,
)
from rawws import CONTINUATION, TEXT, RawPeer, close_frame, frame, text, upgrade_request
from wsclient import Closed, clients, expect_close, expect_silence, join_all, joined, recv_json

from conftest import make_config, running

pytestmark = [pytest.mark.anyio, pytest.mark.doors]

UID = re.compile(r"^[A-Za-z0-9]{6}$")
SMALL_MESSAGES = make_config("[limits]\nmax_message_bytes = 1024")


async def test_self_join_is_the_first_frame(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        alice = await connect("/c/room?alias=Alice")
        hello = await recv_json(alice)
        assert hello["type"] == "join" and hello["self"] is True
        assert UID.match(hello["uid"]) and hello["alias"] == "Alice" and hello["total"] == 1
        assert isinstance(hello["date"], int) and "users" not in hello

        bob = await connect("/c/room")
        hello_bob = await recv_json(bob)
        assert hello_bob["total"] == 2 and "alias" not in hello_bob and hello_bob["uid"] != hello["uid"]
        # Bob did not announce: Alice learns a connection arrived, not who.
        assert await recv_json(alice) == {"type": "join", "total": 2, "date": hello_bob["date"]}


async def test_broadcast_envelope_reaches_others_not_the_sender(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        alice = await connect("/c/room?alias=Alice")
        alice_uid = (await recv_json(alice))["uid"]
        bob = await joined(connect, "/c/room")
        await recv_json(alice)  # bob's join

        await alice.send('{"type":"chat","text":"hi"}')
        relayed = await recv_json(bob)
        assert set(relayed) == {"uid", "alias", "date", "message"}  # no envelope `type`
        assert relayed["uid"] == alice_uid and relayed["alias"] == "Alice"
        assert relayed["message"] == {"type": "chat", "text": "hi"}
        await expect_silence(alice)

        await bob.send("[1, 2, 3]")
        relayed = await recv_json(alice)
        assert "alias" not in relayed and relayed["message"] == [1, 2, 3]


async def test_echo_returns_the_same_envelope_bytes(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        alice, bob = await join_all(connect, "/c/room?echo&alias=A", "/c/room")
        await alice.send('"hello"')
        assert await alice.recv() == await bob.recv()


async def test_scalar_and_nested_values_are_relayed_unchanged(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        alice = await joined(connect, "/c/room")
        bob = await joined(connect, "/c/room")
        for value in ["42", "null", "true", '"x"', '{"a":{"b":[1,{"c":null}]}}', '"\\u00e9\\ud83d\\ude00"']:
            await alice.send(value)
            frame_text = await bob.recv()
            assert isinstance(frame_text, str)
            assert frame_text.endswith(f'"message":{value}}}')


async def test_invalid_json_gets_an_error_and_the_connection_stays(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        alice, bob = await join_all(connect, "/c/room", "/c/room")
        for bad in ["undefined", "{", "1 2", ""]:
            await alice.send(bad)
            error = await recv_json(alice)
            assert error["type"] == "error" and error["message"] == "Invalid JSON message."
            assert isinstance(error["date"], int)
        await alice.send(b"\x00\x01")
        assert (await recv_json(alice))["message"] == "Binary messages are not supported."
        await alice.send('{"ok":true}')
        assert (await recv_json(bob))["message"] == {"ok": True}  # nothing bad was relayed


async def test_direct_messages_reach_only_their_target(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        alice = await joined(connect, "/c/room?echo")
        bob = await connect("/c/room")
        bob_uid = (await recv_json(bob))["uid"]
        carol = await joined(connect, "/c/room")
        for _ in range(2):
            await recv_json(alice)
        await recv_json(bob)

        await alice.send(f'\x1f{bob_uid}\x1f{{"secret":1}}')
        await alice.send(f'@@{bob_uid}@@{{"secret":2}}')
        assert (await recv_json(bob))["message"] == {"secret": 1}
        assert (await recv_json(bob))["message"] == {"secret": 2}
        await expect_silence(carol)
        await expect_silence(alice)  # direct messages are never echoed

        await alice.send('\x1fNOSUCH\x1f{"x":1}')
        error = await recv_json(alice)
        assert error["type"] == "error" and error["message"] == "User NOSUCH not found."


async def test_announce_and_list(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        alice = await connect("/c/room?announce&alias=Alice")
        alice_uid = (await recv_json(alice))["uid"]
        await joined(connect, "/c/room")  # a member that does not announce itself
        await recv_json(alice)
        bob = await connect("/c/room?as=Bob&announce=true&list=1")
        hello = await recv_json(bob)
        assert hello["users"] == [
            {"uid": alice_uid, "alias": "Alice"},
            {"uid": hello["uid"], "alias": "Bob", "self": True},
        ]
        assert hello["total"] == 3
        notice = await recv_json(alice)
        assert notice == {"type": "join", "uid": hello["uid"], "alias": "Bob", "total": 3, "date": notice["date"]}

        lister = await connect("/c/room?list")  # lists, but does not announce itself
        own = await recv_json(lister)
        assert [u["uid"] for u in own["users"]] == [alice_uid, hello["uid"]]

        await bob.close()
        left = await recv_json(alice)
        while left["type"] == "join":
            left = await recv_json(alice)
        assert left == {"type": "leave", "uid": hello["uid"], "alias": "Bob", "total": 3, "date": left["date"]}


async def test_push_relays_everything_before_the_leave(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        watcher = await joined(connect, "/c/room")
        pusher = await RawPeer.connect(relay.port)
        assert (await pusher.upgrade("/c/room"))[0] == 101
        assert (await pusher.read_json())["self"] is True
        # Three messages and the close frame in ONE write, as a fast pusher sends them.
        await pusher.send(text('{"n":1}') + text('{"n":2}') + text('{"n":3}') + close_frame())
        assert await pusher.read_close() == 1000
        await pusher.aclose()

        assert (await recv_json(watcher))["type"] == "join"
        assert [(await recv_json(watcher))["message"]["n"] for _ in range(3)] == [1, 2, 3]
        assert (await recv_json(watcher))["type"] == "leave"


@server_gap(
    "uvicorn",
    raises=TimeoutError,
    match=r"^no close frame within 1 s of the 101 and the self-join$",
    reason="uvicorn (its h11 HTTP protocol) drops the bytes that arrive in the same read as the upgrade request: "
    "the frames never reach the relay and the connection stays open",
)
@hypercorn_refuses_frames_behind_the_upgrade(101)
@pytest.mark.filterwarnings("ignore::doors.DoorWarning")
async def test_frames_sent_before_the_101_are_relayed(relay: Relay) -> None:
    """An eager pusher writes the handshake, its messages and the close in one go."""
    async with clients(relay.port) as connect:
        watcher = await joined(connect, "/c/room")
        async with raw_peer(relay.port) as pusher:
            burst = text('{"n":1}') + text('{"n":2}') + close_frame()
            assert (await pusher.upgrade("/c/room", extra=burst))[0] == 101
            assert (await pusher.read_json(timeout=1))["self"] is True
            with timeout_says("no close frame within 1 s of the 101 and the self-join"):
                assert await pusher.read_close(timeout=1) == 1000
        assert (await recv_json(watcher))["type"] == "join"
        assert [(await recv_json(watcher))["message"]["n"] for _ in range(2)] == [1, 2]
        assert (await recv_json(watcher))["type"] == "leave"


@server_gap(
    "hypercorn-trio",
    raises=AssertionError,
    match=r"^the server is gone after the request: ",
    reason="hypercorn answers this request 400 by itself, and the request crashes its trio worker: h11's "
    "LocalProtocolError escapes into the server's nursery and the whole process exits with status 1, so "
    "/health is refused or reset",
)
@pytest.mark.filterwarnings("ignore::doors.DoorWarning")
async def test_an_upgrade_followed_at_once_by_frames_leaves_no_member_behind(relay: Relay) -> None:
    async with raw_peer(relay.port) as peer:
        await peer.send(upgrade_request("/c/room") + text('{"n":1}') + close_frame())
        with anyio.move_on_after(0.5):
            await peer.read_to_eof()  # whatever the answer
    try:
        await wait_for_connections(relay.port, 0, timeout=2)
        assert (await health(relay.port))["channels"] == 0
    except OSError as exc:  # refused, or reset while the process died
        raise AssertionError(f"the server is gone after the request: {exc!r}") from None


async def test_network_drop_broadcasts_a_leave(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        watcher = await joined(connect, "/c/room")
        peer = await RawPeer.connect(relay.port)
        assert (await peer.upgrade("/c/room"))[0] == 101
        await peer.read_json()
        assert (await recv_json(watcher))["type"] == "join"
        await peer.aclose()  # no close frame: the TCP connection just goes
        left = await recv_json(watcher)
        assert left == {"type": "leave", "total": 1, "date": left["date"]}


async def test_channel_names_are_exact_and_percent_decoded(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        await joined(connect, "/c/team%3Aone/general")
        b = await connect("/r/team:one/general")  # the legacy path, same channel
        assert (await recv_json(b))["total"] == 2
        other = await connect("/c/Team:one/general")  # case-sensitive
        assert (await recv_json(other))["total"] == 1


async def test_channel_vanishes_with_its_last_member(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        a = await joined(connect, "/c/ephemeral?sendKey=s1&joinKey=j1")
        now = await health(relay.port)
        assert (now["channels"], now["connections"]) == (1, 1)
        await a.close()
        with anyio.fail_after(5):
            while (await health(relay.port))["channels"]:
                await anyio.sleep(0.01)
        # The keys went with it: a new first joiner may set different ones.
        b = await connect("/c/ephemeral?joinKey=j2")
        assert (await recv_json(b))["total"] == 1


async def test_uids_are_unique_and_new_on_every_connection(relay: Relay) -> None:
    seen = set()
    async with clients(relay.port) as connect:
        for _ in range(30):
            c = await connect("/c/uids")
            uid = (await recv_json(c))["uid"]
            assert UID.match(uid) and uid not in seen
            seen.add(uid)


async def test_ipv6_loopback(door: str) -> None:
    async with running(host="::1", door=door) as server, clients(server.port, host="::1") as connect:
        a = await connect("/c/v6")
        assert (await recv_json(a))["total"] == 1


async def test_message_over_the_size_limit_closes_with_1009(door: str) -> None:
    async with running(SMALL_MESSAGES, door=door) as server, clients(server.port) as connect:
        watcher, big = await join_all(connect, "/c/room", "/c/room")
        await big.send('"' + "x" * 1022 + '"')  # exactly 1024 bytes: allowed
        assert len(await watcher.recv()) > 1024
        await big.send('"' + "x" * 1023 + '"')
        assert await expect_close(big) == 1009
        assert (await recv_json(watcher))["type"] == "leave"


async def test_fragmented_message_over_the_limit_closes_with_1009(door: str) -> None:
    async with running(SMALL_MESSAGES, door=door) as server, clients(server.port) as connect:
        watcher = await joined(connect, "/c/room")
        peer = await RawPeer.connect(server.port)
        assert (await peer.upgrade("/c/room"))[0] == 101
        await peer.read_json()
        # Three fragments of 600 bytes, each under the limit, together over it.
        fragments = [frame(TEXT, b'"' + b"x" * 599, fin=False), frame(CONTINUATION, b"x" * 600, fin=False)]
        await peer.send(b"".join(fragments) + frame(CONTINUATION, b"x" * 599 + b'"'))
        assert await peer.read_close() == 1009
        await peer.aclose()
        assert (await recv_json(watcher))["type"] == "join"
        assert (await recv_json(watcher))["type"] == "leave"  # nothing was relayed


@server_gap(
    *ASGI_DOORS,
    raises=TimeoutError,
    match=r"^no close frame within 1 s of the unfinished message over the limit$",
    reason="the ASGI server hands the app whole messages only: it gathers the fragments up to its own limit (16 "
    "MiB by default) and the relay's max_message_bytes can act only once the last fragment has arrived",
)
async def test_unfinished_fragmented_message_is_cut_off_at_the_limit(door: str) -> None:
    async with running(SMALL_MESSAGES, door=door) as server, raw_peer(server.port) as peer:
        assert (await peer.upgrade("/c/room"))[0] == 101
        await peer.read_json()
        await peer.send(frame(TEXT, b'"' + b"x" * 600, fin=False) + frame(CONTINUATION, b"x" * 600, fin=False))
        with timeout_says("no close frame within 1 s of the unfinished message over the limit"):
            assert await peer.read_close(timeout=1.0) == 1009


async def test_closed_client_gets_no_more_frames_and_others_continue(relay: Relay) -> None:
    async with clients(relay.port) as connect:
        a, b = await join_all(connect, "/c/room", "/c/room")
        await b.close()
        with pytest.raises(Closed):
            await b.recv(1)
        assert (await recv_json(a))["type"] == "leave"
        await a.send("1")
        await expect_silence(a)
