"""relaycore.testing.Harness: the relay in memory, through the native server's front door.

Every test here is what an application's own test would do: members join with the
JavaScript client's options, send, push, and let time pass on the fake clock; each
assertion is about the frames a member received or the answer a request got.
"""

from __future__ import annotations

import pytest

from relaycore import Config, HTTPError, LimitsConfig, NamespaceConfig, RelayUsageError, ServerConfig, State
from relaycore.testing import Harness, VirtualMember, config_for_tests

T0 = 1_700_000_000_000
ALERTS = NamespaceConfig(send_key="alert-key")
GAME = NamespaceConfig(join_key="players", send_key="server")


@pytest.fixture
def h() -> Harness:
    return Harness(config_for_tests(namespaces={"alerts": ALERTS, "game": GAME}))


def test_the_default_config_is_for_tests() -> None:
    h = Harness()
    assert h.config == config_for_tests()
    assert h.config.limits.connections_per_second_per_ip == 10_000.0
    assert h.config.limits.pushes_per_second_per_ip == 10_000.0
    assert h.config.limits.messages_burst == Config().limits.messages_burst
    kept = config_for_tests(limits=LimitsConfig(connections_per_second_per_ip=2.0))
    assert kept.limits.connections_per_second_per_ip == 2.0 and kept.limits.pushes_per_second_per_ip == 10_000.0


# -- joins and presence ------------------------------------------------------------------------


def test_a_join_reads_the_self_join_and_the_others_see_it(h: Harness) -> None:
    ann = h.join("/c/room?alias=Ann&announce")
    assert ann.hello == {"type": "join", "self": True, "uid": ann.uid, "alias": "Ann", "total": 1, "date": T0}
    assert ann.channel == "room" and ann.alias == "Ann" and ann.frames() == []
    bob = h.join("room")
    assert bob.hello is not None and bob.hello["total"] == 2 and bob.alias is None
    ann.expect("join", total=2, uid=None)
    carol = h.join("room", alias="Carol", announce=True)
    for member in (ann, bob):
        member.expect("join", uid=carol.uid, alias="Carol", total=3)
    carol.expect_nothing()


def test_list_shows_the_announced_members(h: Harness) -> None:
    ann = h.join("room", alias="Ann", announce=True)
    h.join("room")  # not announced: counted, not listed
    cat = h.join("/c/room?list&announce=true", alias="Cat")
    assert cat.hello is not None and cat.hello["total"] == 3
    assert cat.hello["users"] == [
        {"uid": ann.uid, "alias": "Ann"},
        {"uid": cat.uid, "alias": "Cat", "self": True},
    ]


def test_keywords_replace_the_query_options(h: Harness) -> None:
    ann = h.join("/c/room?alias=Ann&echo", alias="Anne", echo=False)
    ann.send("hi")
    assert ann.alias == "Anne"
    ann.expect_nothing()  # echo=False won over the query's echo


def test_channel_names_are_percent_encoded(h: Harness) -> None:
    member = h.join("room 1/a:b?#")
    assert member.channel == "room 1/a:b?#"


def test_leaves_are_announced(h: Harness) -> None:
    ann = h.join("room", alias="Ann", announce=True)
    bob = h.join("room", alias="Bob", announce=True)
    carol = h.join("room")
    ann.take()
    bob.close()
    assert bob.closed == (1000, "") and bob.connection.state is State.CLOSED
    ann.expect("leave", uid=bob.uid, alias="Bob", total=2)
    carol.drop()  # the network failed: no close frame
    assert carol.closed == (1006, "")
    ann.expect("leave", uid=None, total=1)
    with pytest.raises(RelayUsageError, match="closed"):
        bob.send("too late")


# -- messages ------------------------------------------------------------------------------------


def test_broadcast_direct_and_echo(h: Harness) -> None:
    ann = h.join("room", alias="Ann")
    bob = h.join("room", echo=True)
    ann.take()
    bob.send({"type": "chat", "text": "hi"})
    ann.expect("message", uid=bob.uid, alias=None, date=T0, message={"type": "chat", "text": "hi"})
    bob.expect("message", uid=bob.uid)  # echo: its own broadcast comes back
    ann.send([1, 2], to=bob.uid)
    bob.expect("message", uid=ann.uid, alias="Ann", message=[1, 2])
    ann.expect_nothing()
    h.clock.advance(1.5)
    ann.send_raw("@@" + bob.uid + "@@null")  # the legacy direct form
    assert bob.next() == {"uid": ann.uid, "alias": "Ann", "date": T0 + 1500, "message": None}


def test_errors_go_to_the_sender_only(h: Harness) -> None:
    ann = h.join("room")
    bob = h.join("room")
    ann.take()
    bob.send_raw("undefined")
    bob.expect("error", message="Invalid JSON message.")
    bob.send_raw(b"\x00\x01")
    bob.expect("error", message="Binary messages are not supported.")
    bob.send("psst", to="nobody")
    bob.expect("error", message="User nobody not found.")
    ann.expect_nothing()


def test_a_message_over_the_limit_closes_1009() -> None:
    h = Harness(config_for_tests(limits=LimitsConfig(max_message_bytes=1000)))
    ann = h.join("room")
    bob = h.join("room")
    ann.send("x" * 990)
    bob.expect("message", message="x" * 990)
    ann.send("x" * 1000)
    assert ann.closed == (1009, "message too big")
    bob.expect("leave", total=1)


# -- keys ----------------------------------------------------------------------------------------


def test_an_open_channel_takes_the_keys_of_its_first_joiner(h: Harness) -> None:
    owner = h.join("private", join_key="j", send_key="s")
    with pytest.raises(HTTPError) as refused:
        h.join("private")
    assert (refused.value.status, refused.value.message) == (403, "Joining requires a valid joinKey.")
    reader = h.join("private", join_key="j")
    reader.send("hello")
    reader.expect("error", message="Sending requires a valid sendKey.")
    owner.expect("join", total=2)
    owner.expect_nothing()
    writer = h.join("private", join_key="j", send_key="s")
    writer.send("hello")
    reader.expect("join", total=3)
    reader.expect("message", uid=writer.uid, message="hello")


def test_a_reserved_namespace(h: Harness) -> None:
    with pytest.raises(HTTPError) as refused:
        h.join("game:1")
    assert refused.value.status == 403
    with pytest.raises(HTTPError, match=r"Invalid sendKey for this namespace\."):
        h.join("game:1", join_key="players", send_key="guess")
    server = h.join("game:1", join_key="players", send_key="server")
    player = h.join("game:1", join_key="players")
    player.send("move")
    player.expect("error", message="Sending requires a valid sendKey.")
    server.send({"turn": player.uid})
    player.expect("message", uid=server.uid, message={"turn": player.uid})


# -- HTTP ----------------------------------------------------------------------------------------


def test_push_reaches_a_reserved_channel(h: Harness) -> None:
    ops = h.join("alerts:ops")
    answer = h.push("alerts:ops", {"text": "disk"}, send_key="alert-key")
    assert answer.status == 200 and answer.json() == {"ok": True, "recipients": 1}
    assert answer.headers["content-type"] == "application/json"
    assert ops.next() == {"date": T0, "message": {"text": "disk"}}  # no uid: nobody sent it
    assert h.push("alerts:nobody", 1, send_key="alert-key").json() == {"ok": True, "recipients": 0}


@pytest.mark.parametrize(
    ("channel", "key", "status", "error"),
    [
        ("room", None, 403, "Pushing requires a reserved namespace with a sendKey."),
        ("alerts:ops", None, 403, "Pushing requires a valid x-send-key."),
        ("alerts:ops", "wrong", 403, "Pushing requires a valid x-send-key."),
    ],
)
def test_push_refusals(h: Harness, channel: str, key: str | None, status: int, error: str) -> None:
    ops = h.join("alerts:ops")
    answer = h.push(channel, "x", send_key=key)
    assert (answer.status, answer.json()) == (status, {"ok": False, "error": error})
    ops.expect_nothing()


def test_plain_http(h: Harness) -> None:
    bad = h.http("POST", "/push/alerts:ops", body=b"{nope", headers={"X-Send-Key": "alert-key"})
    assert (bad.status, bad.json()["error"]) == (400, "Invalid JSON body.")
    assert h.http("GET", "/version").text.startswith("relaycore ")
    h.join("room")
    assert h.http("GET", "/health").json()["connections"] == 1
    assert h.http("GET", "/nowhere").status == 404
    assert h.http("GET", "/c/room").status == 426


def test_pushes_are_rate_limited_per_address() -> None:
    h = Harness(Config(limits=LimitsConfig(pushes_per_second_per_ip=2.0), namespaces={"alerts": ALERTS}))
    answers = [h.push("alerts:x", n, send_key="alert-key").status for n in range(3)]
    assert answers == [200, 200, 429]
    assert h.push("alerts:x", 0, send_key="alert-key", client="10.0.0.2").status == 200
    h.advance(0.5)
    assert h.push("alerts:x", 0, send_key="alert-key").status == 200


# -- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "status", "text"),
    [
        ("/c/" + "x" * 257, 400, "Channel name must be 1 to 256 bytes."),
        ("/c/room?alias=" + "a" * 65, 400, "Alias must be at most 64 characters."),
        ("/c/%FF", 400, "Channel name is not valid UTF-8."),
        ("/nowhere", 404, "Not found."),
    ],
)
def test_refused_joins_raise_http_errors(h: Harness, target: str, status: int, text: str) -> None:
    with pytest.raises(HTTPError) as refused:
        h.join(target)
    assert (refused.value.status, refused.value.message) == (status, text)
    assert h.hub.connections == 0 and h.http("GET", "/health").json()["connections"] == 0


def test_members_join_channels_only() -> None:
    h = Harness(config_for_tests(server=ServerConfig(echo_endpoint=True)))
    with pytest.raises(RelayUsageError, match="opened no channel"):
        h.join("/echo")
    assert h.http("GET", "/health").json()["connections"] == 0


def test_the_connection_rate_per_address() -> None:
    h = Harness(Config())  # the real defaults: 10 connections a second per address
    for _ in range(10):
        h.join("room")
    with pytest.raises(HTTPError) as refused:
        h.join("room")
    assert refused.value.status == 429 and (b"retry-after", b"1") in refused.value.headers
    h.join("room", client="10.0.0.2")  # another address has its own budget
    h.advance(0.5)
    h.join("room")  # and time refills it


# -- rate limit warnings ----------------------------------------------------------------------------


def test_three_rate_warnings_close_the_sender_1008() -> None:
    h = Harness(config_for_tests(limits=LimitsConfig(messages_per_second=1.0, messages_burst=2)))
    flood = h.join("room", echo=True)
    calm = h.join("room")
    flood.take()
    for n in range(3):
        flood.send(n)
    assert [frame.get("message") for frame in flood.take()] == [0, 1, "Rate limit exceeded (warning 1 of 3)."]
    h.advance(1.0)  # one token back
    flood.send("ok")
    flood.expect("message", message="ok")
    flood.send("again")
    flood.expect("error", message="Rate limit exceeded (warning 2 of 3).")
    assert flood.closed is None
    flood.send("and again")
    flood.expect("error", message="Rate limit exceeded (warning 3 of 3).")
    assert flood.closed == (1008, "rate limit exceeded")
    assert [frame.get("message") for frame in calm.take()] == [0, 1, "ok", None]
    assert calm.frames()[-1] == {"type": "leave", "total": 1, "date": T0 + 1000}


def test_warnings_older_than_a_minute_are_forgotten() -> None:
    h = Harness(config_for_tests(limits=LimitsConfig(messages_per_second=0.01, messages_burst=1)))
    member = h.join("room")
    member.send(0)
    for n in (1, 2, 2, 2):  # a warning at 0 s, 30 s, 60 s, 90 s: never three within 60 s
        member.send("over")
        member.expect("error", message=f"Rate limit exceeded (warning {n} of 3).")
        h.advance(30)
    assert member.closed is None


# -- time: keepalive --------------------------------------------------------------------------------


def test_a_member_that_never_answers_pings_is_dropped() -> None:
    h = Harness()
    ann = h.join("room", alias="Ann", announce=True)
    ghost = h.join("room", alias="Ghost", announce=True, responsive=False)
    ann.take()
    h.advance(30)  # ping_interval: both are pinged
    assert (ann.pings, ghost.pings) == (1, 1)
    h.advance(29.9)
    assert ghost.closed is None
    ann.expect_nothing()
    h.advance(0.1)  # ping_timeout after the ping, with no answer at all
    assert ghost.closed == (1006, "") and ghost.connection.problem == "no pong in time (dead peer)"
    ann.expect("leave", uid=ghost.uid, total=1, date=T0 + 60_000)
    h.advance(3600)
    assert ann.closed is None and ann.pings == 2 + 3600 // 30


def test_a_member_stops_answering_later() -> None:
    h = Harness()
    member = h.join("room")
    h.advance(95)
    member.responsive = False
    assert member.pings == 3 and member.closed is None
    h.advance(24)  # the next ping at 120 s
    assert member.closed is None
    h.advance(1)
    assert member.pings == 4
    h.advance(30)
    assert member.closed == (1006, "")


def test_an_unanswered_close_times_out() -> None:
    h = Harness(config_for_tests(limits=LimitsConfig(max_message_bytes=10)))
    member = h.join("room", responsive=False)
    member.send("x" * 20)
    assert member.closed == (1009, "message too big")
    assert member.connection.state is State.CLOSING
    h.advance(10)  # close_timeout
    assert member.connection.state is State.CLOSED


def test_shutdown_closes_everyone_1001_without_leaves(h: Harness) -> None:
    ann = h.join("room")
    bob = h.join("room")
    ann.take()
    h.shutdown()
    assert ann.closed == bob.closed == (1001, "server shutting down")
    ann.expect_nothing()


# -- expectations and determinism ---------------------------------------------------------------------


def test_expect_says_what_arrived(h: Harness) -> None:
    ann = h.join("room")
    h.join("room")
    with pytest.raises(AssertionError, match=r"expected a 'leave' frame with total=1; the next one is .*'join'"):
        ann.expect("leave", total=1)
    with pytest.raises(AssertionError, match="unread frames"):
        ann.expect_nothing()
    assert ann.unread() == ann.frames() and len(ann.unread()) == 1
    ann.expect("join")
    with pytest.raises(AssertionError, match="no unread frame"):
        ann.expect("join")
    with pytest.raises(AssertionError, match="no unread frame"):
        ann.next()


def test_the_same_calls_give_the_same_frames() -> None:
    def play(seed: int) -> list[object]:
        h = Harness(seed=seed)
        members: list[VirtualMember] = [h.join("room", alias=f"m{n}", announce=True) for n in range(3)]
        members[0].send("hi")
        h.advance(45)
        members[1].close()
        return [(member.uid, member.hello, member.frames()) for member in members]

    assert play(7) == play(7)
    assert play(7) != play(8)


def test_advance_goes_forward_only(h: Harness) -> None:
    with pytest.raises(ValueError, match="forward"):
        h.advance(-1)
    h.advance(0)
    assert h.clock.time() == T0 / 1000
