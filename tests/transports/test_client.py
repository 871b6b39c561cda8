"""transports.client against real relays: the native server in this process (asyncio and
trio), the ASGI app under uvicorn, and TLS with a throwaway CA."""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import trustme

from conftest import make_config, running, ws_url
from relaycore import Config
from transports.client import (
    Channel,
    ChannelClosed,
    ChannelState,
    Close,
    Error,
    Event,
    Join,
    Leave,
    Message,
    Reconnect,
    Refused,
    UsageError,
    User,
    connect,
    http_push,
    push,
)
from transports.client._link import channel_address
from transports.server import RelayServer

pytestmark = pytest.mark.anyio

UID = re.compile(r"^[A-Za-z0-9]{6}$")
TIMEOUT = 10.0
KEYED = make_config(
    """
[namespaces."news"]
send_key = "sk"

[namespaces."vault"]
join_key = "jk"
"""
)
FAST = make_config("[limits]\nmessages_per_second = 100000.0\nmessages_burst = 100000")


async def next_event(channel: Channel, timeout: float = 5.0) -> Event:
    with anyio.fail_after(timeout):
        return await channel.receive()


async def events_until(channel: Channel, count: int) -> list[Event]:
    return [await next_event(channel) for _ in range(count)]


async def quiet(channel: Channel) -> None:
    """Nothing reached ``channel`` so far: the answer to its own probe (a direct message to a
    uid nobody has) is the very next event, where a quiet window would pass a late frame."""
    await channel.send("probe", to="NOUSER")
    event = await channel.receive()
    assert isinstance(event, Error) and event.message in (
        "User NOUSER not found.",
        "Sending requires a valid sendKey.",
    ), f"unexpected event {event!r}"


# -- frames ---------------------------------------------------------------------------------


async def test_the_self_join_is_read_before_connect_returns() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running() as relay:
            url = ws_url(relay, "/c/room")
            async with connect(url, alias="Ann") as ann:
                assert UID.match(ann.uid) and ann.alias == "Ann" and ann.total == 1
                assert ann.users is None and ann.name == "room" and ann.state is ChannelState.OPEN
                async with connect(url, announce=True, list=True) as bob:
                    assert bob.total == 2 and bob.alias is None and bob.uid != ann.uid
                    assert bob.users == [User(bob.uid)]  # Ann did not announce; Bob did


async def test_joins_and_leaves_keep_total_and_users_current() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running() as relay:
            url = ws_url(relay, "/c/room")
            async with connect(url, alias="Ann", announce=True, list=True) as ann:
                assert ann.users == [User(ann.uid, "Ann")]
                async with connect(url, alias="Bob", announce=True) as bob:
                    joined = await next_event(ann)
                    assert joined == Join(uid=bob.uid, alias="Bob", total=2, date=joined.date)
                    assert ann.users == [User(ann.uid, "Ann"), User(bob.uid, "Bob")]
                    async with connect(url):
                        anonymous = await next_event(ann)
                        assert isinstance(anonymous, Join) and anonymous.uid is None and anonymous.total == 3
                        assert ann.total == 3 and len(ann.users or []) == 2
                    left = await next_event(ann)
                    assert isinstance(left, Leave) and left.uid is None and left.total == 2 and ann.total == 2
                left = await next_event(ann)
                assert left == Leave(uid=bob.uid, alias="Bob", total=1, date=left.date)
                assert ann.users == [User(ann.uid, "Ann")] and ann.total == 1


async def test_messages_carry_the_envelope_and_the_payload_kind() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running() as relay:
            url = ws_url(relay, "/c/room")
            async with connect(url, echo=True) as ann, connect(url, alias="Bob") as bob:
                await next_event(ann)  # Bob's join
                await bob.send({"type": "chat", "text": "hi"})
                got = await next_event(ann)
                assert isinstance(got, Message) and got.type == "message"
                assert (got.uid, got.alias, got.kind) == (bob.uid, "Bob", "chat")
                assert got.message == {"type": "chat", "text": "hi"} and isinstance(got.date, int)
                for value in [[1, 2], "text", 42, None, {"type": 7}, {"no": "type"}]:
                    await bob.send(value)
                    got = await next_event(ann)
                    assert isinstance(got, Message) and got.message == value and got.kind is None
                await ann.send("mine")  # echo: the sender's own envelope comes back
                echoed = await next_event(ann)
                assert isinstance(echoed, Message) and echoed.uid == ann.uid and echoed.alias is None
                assert (await next_event(bob)) == echoed


async def test_error_frames_and_direct_messages() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running() as relay:
            url = ws_url(relay, "/c/locked")
            # The first joiner sets the open channel's send key; the second has none.
            async with connect(url, send_key="s3") as owner, connect(url) as listener, connect(url) as third:
                await events_until(owner, 2)
                await next_event(listener)
                await listener.send({"x": 1})
                error = await next_event(listener)
                assert error == Error(message="Sending requires a valid sendKey.", date=error.date)
                await owner.send({"to": "you"}, to=third.uid)
                direct = await next_event(third)
                assert isinstance(direct, Message) and direct.message == {"to": "you"} and direct.uid == owner.uid
                await quiet(listener)
                await owner.send(1, to="NOSUCH")
                error = await next_event(owner)
                assert isinstance(error, Error) and error.message == "User NOSUCH not found."
                with pytest.raises(ValueError):
                    await owner.send(1, to="a\x1fb")


async def test_push_sends_then_closes() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running() as relay:
            url = ws_url(relay, "/c/room")
            async with connect(url) as ann:
                await push(url, {"type": "alert", "n": 1}, announce=True)
                joined, message, left = await events_until(ann, 3)
                assert isinstance(joined, Join) and joined.uid is not None
                assert isinstance(message, Message) and message.kind == "alert" and message.uid == joined.uid
                assert isinstance(left, Leave) and left.uid == joined.uid and left.total == 1
                await push(url, "direct", to=ann.uid)
                kinds = [event.type for event in await events_until(ann, 3)]
                assert kinds == ["join", "message", "leave"]


async def test_http_push_returns_the_recipients_or_raises_the_relays_text() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running(KEYED) as relay:
            base = f"http://127.0.0.1:{relay.port}"
            assert await http_push(base, "news:empty", 1, send_key="sk") == 0
            url = ws_url(relay, "/c/news:today")
            async with connect(url) as ann, connect(url) as bob:
                assert await http_push(base, "news:today", {"type": "flash"}, send_key="sk") == 2
                await next_event(ann)  # Bob's join
                got = await next_event(ann)
                assert isinstance(got, Message) and got.uid is None and got.alias is None and got.kind == "flash"
                assert isinstance(await next_event(bob), Message)
                with pytest.raises(Refused) as refused:
                    await http_push(base, "news:today", 1, send_key="wrong")
                assert (refused.value.status, refused.value.reason) == (403, "Pushing requires a valid x-send-key.")
            with pytest.raises(Refused, match="reserved namespace") as refused:
                await http_push(f"ws://127.0.0.1:{relay.port}", "open", 1, send_key="sk")
            assert refused.value.status == 403


async def test_a_refused_upgrade_raises_refused_with_status_and_text() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running(KEYED) as relay:
            with pytest.raises(Refused) as refused:
                async with connect(ws_url(relay, "/c/vault:a")):
                    pass
            assert refused.value.status == 403 and refused.value.reason == "Joining requires a valid joinKey."
            assert repr(refused.value) == "Refused(status=403, reason='Joining requires a valid joinKey.')"
            with pytest.raises(Refused, match="Alias must be at most 64 characters") as refused:
                async with connect(ws_url(relay, "/c/room"), alias="x" * 65):
                    pass
            assert refused.value.status == 400
            async with connect(ws_url(relay, "/r/vault:a"), join_key="jk") as member:  # the /r/ path too
                assert member.total == 1 and member.name == "vault:a"


async def test_connection_failures_are_oserrors() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running() as relay:
            port = relay.port
        with pytest.raises(OSError):
            async with connect(f"ws://127.0.0.1:{port}/c/room"):
                pass
        # A peer that accepts and never answers: TimeoutError (an OSError) after open_timeout.
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        silent = listener.extra(anyio.abc.SocketAttribute.local_port)

        async def hold(stream: anyio.abc.SocketStream) -> None:
            await anyio.sleep(5)

        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, hold)
            with pytest.raises(TimeoutError, match=r"within 0\.3 s"):
                async with connect(f"ws://127.0.0.1:{silent}/c/room", open_timeout=0.3):
                    pass
            tg.cancel_scope.cancel()


def test_urls_and_options() -> None:
    for bad in ["room", "ws://127.0.0.1:1/room", "ws://127.0.0.1:1/c/", "ftp://h/c/x", "ws:///c/x"]:
        with pytest.raises(ValueError, match="connect"):
            channel_address(bad, {})
    address, name = channel_address(
        "ws://h:81/c/team%3Aops?alias=Url&echo&x=1",
        {"alias": "A B&C", "echo": None, "announce": "true", "joinKey": "k/=", "list": None},
    )
    assert name == "team:ops" and (address.host, address.port, address.host_header) == ("h", 81, "h:81")
    assert address.target == "/c/team%3Aops?echo=&x=1&alias=A%20B%26C&announce=true&joinKey=k%2F%3D"
    address, name = channel_address("wss://[::1]/relay/c/a b", {})
    assert (address.tls, address.port, address.host_header, address.target, name) == (
        True,
        443,
        "[::1]",
        "/relay/c/a%20b",
        "a b",
    )


async def test_options_in_the_url_are_kept_and_keywords_win() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running() as relay:
            url = ws_url(relay, "/c/room?alias=FromUrl&echo")
            async with connect(url) as kept, connect(url, alias="Kw", echo=False) as won:
                assert kept.alias == "FromUrl" and won.alias == "Kw"
                await next_event(kept)
                await kept.send(1)
                assert isinstance(await next_event(kept), Message)  # echo from the URL
                assert isinstance(await next_event(won), Message)
                await won.send(2)
                assert isinstance(await next_event(kept), Message)
                await quiet(won)  # echo=False won


# -- closing ----------------------------------------------------------------------------------


async def test_close_ends_iteration_and_sends_raise() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running() as relay:
            url = ws_url(relay, "/c/room")
            async with connect(url) as ann:
                async with connect(url) as bob:
                    await bob.close(4000, "bye")
                    assert (bob.close_code, bob.state) == (4000, ChannelState.CLOSED)
                    with pytest.raises(ChannelClosed):
                        await bob.send(1)
                    with pytest.raises(ChannelClosed):
                        await bob.receive()
                    await bob.close()  # again: nothing
                assert [event.type for event in await events_until(ann, 2)] == ["join", "leave"]
            with pytest.raises(ChannelClosed):
                await ann.send(1)
            assert ann.close_code == 1000


async def test_the_relays_close_ends_iteration_with_its_code() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running() as relay, connect(ws_url(relay, "/c/room")) as ann:
            relay.shutdown()
            seen = [event async for event in ann]
            assert seen == [] and (ann.close_code, ann.close_reason) == (1001, "server shutting down")
            with pytest.raises(ChannelClosed):
                await ann.send(1)


async def test_an_exception_in_the_block_leaves_as_itself() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running() as relay:
            with pytest.raises(KeyError):
                async with connect(ws_url(relay, "/c/room")):
                    raise KeyError("mine")
            with anyio.move_on_after(0.2) as scope:  # a cancellation passes through untouched
                async with connect(ws_url(relay, "/c/room")):
                    await anyio.sleep_forever()
            assert scope.cancelled_caught


async def test_pings_are_answered_while_nobody_reads() -> None:
    # A ping every 0.1 s, each to be answered within 1 s: a client that did not answer would
    # be dropped about 1.1 s in, well inside the 1.6 s below; a busy machine stalling the one
    # event loop that runs both for a moment does not come near the 1 s.
    config = make_config("[limits]\nping_interval = 0.1\nping_timeout = 1.0")
    with anyio.fail_after(TIMEOUT):
        async with running(config) as relay, connect(ws_url(relay, "/c/room"), echo=True) as ann:
            await anyio.sleep(1.6)
            assert ann.state is ChannelState.OPEN
            await ann.send("still here")
            assert isinstance(await next_event(ann), Message)


async def test_a_message_over_max_message_bytes_closes_with_1009() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running() as relay:
            url = ws_url(relay, "/c/room")
            async with connect(url, max_message_bytes=500) as small, connect(url) as bob:
                await next_event(small)
                await bob.send("x" * 1000)
                assert [event async for event in small] == []
                assert small.close_code == 1009


# -- handlers -------------------------------------------------------------------------------


async def test_handlers_by_event_type_and_payload_type() -> None:
    seen: list[tuple[str, Any]] = []
    done = anyio.Event()

    async def on_chat(event: Message) -> None:
        await anyio.sleep(0)
        seen.append(("chat", event.message["text"]))

    def on_close(event: Close) -> None:
        seen.append(("close", event.code))
        done.set()

    with anyio.fail_after(TIMEOUT):
        async with running() as relay:
            url = ws_url(relay, "/c/room")
            async with connect(url) as bob, connect(url) as ann:
                chained = (
                    ann.on("message", lambda event: seen.append(("message", event.kind)))
                    .on("chat", on_chat)
                    .on("join", lambda event: seen.append(("join", event.total)))
                    .on("leave", lambda event: seen.append(("leave", event.total)))
                    .on("close", on_close)
                )
                assert chained is ann
                with pytest.raises(UsageError):
                    await ann.receive()
                assert isinstance(await bob.receive(), Join)
                with pytest.raises(UsageError):
                    bob.on("message", print)
                await bob.send({"type": "chat", "text": "hi"})
                await bob.send({"type": "join"})  # a payload type named like an event: "message" only
                await bob.send([1])
                async with connect(url):
                    pass
                with anyio.fail_after(5):
                    while len(seen) < 6:
                        await anyio.sleep(0.01)
                await ann.close()
                await ann.wait_closed()
            assert done.is_set()
            assert seen == [
                ("message", "chat"),
                ("chat", "hi"),
                ("message", "join"),
                ("message", None),
                ("join", 3),
                ("leave", 2),
                ("close", 1000),
            ]


async def test_an_exception_in_a_handler_closes_the_channel_and_leaves_connect() -> None:
    def broken(event: Message) -> None:
        raise LookupError("handler bug")

    with anyio.fail_after(TIMEOUT):
        async with running() as relay:
            url = ws_url(relay, "/c/room")
            async with connect(url) as bob:
                with pytest.raises(LookupError, match="handler bug"):
                    async with connect(url) as ann:
                        ann.on("message", broken)
                        await bob.send(1)
                        await anyio.sleep_forever()
                assert ann.close_code == 1011
                assert [event.type for event in await events_until(bob, 2)] == ["join", "leave"]


# -- the bounded queue ------------------------------------------------------------------------


async def test_the_queue_is_bounded_and_reading_resumes() -> None:
    count = 300
    with anyio.fail_after(TIMEOUT):
        async with running(FAST) as relay:
            url = ws_url(relay, "/c/flood")
            async with connect(url, max_queue=8) as slow, connect(url) as fast:
                for n in range(count):
                    await fast.send(n)
                peak = 0
                with anyio.move_on_after(0.5):
                    while True:
                        peak = max(peak, slow.queued)
                        await anyio.sleep(0.005)
                assert peak == slow.queued == 8  # full, and never more
                join = await next_event(slow)
                assert isinstance(join, Join)
                numbers = [event.message for event in await events_until(slow, count) if isinstance(event, Message)]
                assert numbers == list(range(count))  # nothing lost: the relay held the rest


async def test_a_client_that_never_reads_meets_the_relays_slow_consumer_bound() -> None:
    # close_timeout: the slow client reads its close frame only after the whole broadcast.
    config = make_config(
        "[limits]\noutbound_buffer_bytes = 65536\nmessages_per_second = 100000.0\nmessages_burst = 100000\n"
        "close_timeout = 60.0"
    )
    chunk = "y" * 10_000
    with anyio.fail_after(30):
        async with running(config) as relay:
            url = ws_url(relay, "/c/slow")
            async with connect(url, max_queue=4) as slow, connect(url) as sender:
                for _ in range(2500):  # 25 MB: more than the kernel's buffers and the relay's bound
                    await sender.send(chunk)
                received = [event async for event in slow]
                assert 4 <= len(received) < 2500 and slow.queued == 0
                assert (slow.close_code, slow.close_reason) == (1008, "slow consumer")


# -- reconnecting -----------------------------------------------------------------------------


class Restartable:
    """A native relay that stops (shut down with 1001, or dropped without a close frame) and
    starts again on the same port, inside the test's task group."""

    def __init__(self, tg: anyio.abc.TaskGroup) -> None:
        self._tg = tg
        self.port = 0
        self.server: RelayServer | None = None
        self._scope = anyio.CancelScope()
        self._stopped = anyio.Event()

    async def start(self, config: Config | None = None) -> RelayServer:
        self.server = RelayServer(config or make_config())
        self._scope, self._stopped = anyio.CancelScope(), anyio.Event()
        await self._tg.start(self._serve, self.server)
        self.port = self.server.port
        return self.server

    async def _serve(self, server: RelayServer, *, task_status: anyio.abc.TaskStatus[Any]) -> None:
        try:
            with self._scope:
                await server.serve("127.0.0.1", self.port, task_status=task_status)
        finally:
            self._stopped.set()

    async def stop(self, *, graceful: bool) -> None:
        assert self.server is not None
        if graceful:
            self.server.shutdown()  # serve() returns once every member has answered the 1001
        else:
            self._scope.cancel()
        await self._stopped.wait()


@asynccontextmanager
async def restartable() -> AsyncIterator[Restartable]:
    async with anyio.create_task_group() as tg:
        relay = Restartable(tg)
        await relay.start()
        yield relay
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("graceful", [True, False], ids=["shutdown-1001", "dropped"])
async def test_reconnect_after_a_restart_on_the_same_port(graceful: bool) -> None:
    with anyio.fail_after(TIMEOUT):
        async with restartable() as relay:
            port = relay.port
            url = f"ws://127.0.0.1:{port}/c/room"
            options: dict[str, Any] = {"alias": "Ann", "list": True, "announce": True, "echo": True}
            async with connect(url, **options, reconnect=True, reconnect_max_delay=0.2) as ann:
                old = ann.uid
                await relay.stop(graceful=graceful)
                async with anyio.create_task_group() as tg:
                    # The relay is gone: a send waits for the connection to come back.
                    tg.start_soon(ann.send, {"type": "chat", "text": "sent while away"})
                    await anyio.sleep(0.3)
                    assert ann.state is ChannelState.RECONNECTING
                    await relay.start()
                    event = await next_event(ann)
                assert relay.port == port
                assert isinstance(event, Reconnect) and event.uid == ann.uid != old
                assert event.attempt >= 1 and event.alias == "Ann" and event.total == ann.total == 1
                assert ann.state is ChannelState.OPEN and ann.users == [User(ann.uid, "Ann")]
                echoed = await next_event(ann)  # the waiting send went out on the new connection
                assert isinstance(echoed, Message) and echoed.kind == "chat" and echoed.uid == ann.uid
                async with connect(url) as bob:
                    await ann.send("after")
                    joined, _ = await events_until(ann, 2)
                    assert isinstance(joined, Join) and ann.total == 2
                    assert isinstance(await next_event(bob), Message)


async def test_no_reconnect_after_a_refusal_that_would_repeat() -> None:
    locked = make_config('[namespaces."room"]\njoin_key = "other"')
    with anyio.fail_after(TIMEOUT):
        async with (
            restartable() as relay,
            connect(ws_url(relay, "/c/room"), reconnect=True, reconnect_max_delay=0.1) as ann,
        ):
            await relay.stop(graceful=False)
            await relay.start(locked)
            assert [event async for event in ann] == []
            assert ann.close_code == 1006 and ann.close_reason.startswith("reconnect refused: HTTP 403")


async def test_no_reconnect_unless_asked_and_closing_while_reconnecting() -> None:
    with anyio.fail_after(TIMEOUT):
        async with (
            restartable() as relay,
            connect(ws_url(relay, "/c/room")) as plain,
            connect(ws_url(relay, "/c/room"), reconnect=True, reconnect_max_delay=0.05) as ann,
        ):
            await relay.stop(graceful=False)
            assert [event.type async for event in plain] == ["join"] and plain.close_code == 1006
            await anyio.sleep(0.3)  # nothing listens: ann dials and fails, again and again
            assert ann.state is ChannelState.RECONNECTING
            await ann.close()
            assert ann.state is ChannelState.CLOSED and ann.close_code == 1000
            with pytest.raises(ChannelClosed):
                await ann.send(1)


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_wss_and_https_with_a_trusted_ca(ca: trustme.CA) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with anyio.fail_after(TIMEOUT):
        async with running(KEYED, ssl_context=server_context) as relay:
            url = f"wss://127.0.0.1:{relay.port}/c/news:tls"
            async with connect(url, ssl=client_context) as ann, connect(url, ssl=client_context, send_key="sk") as bob:
                await next_event(ann)
                await bob.send({"big": "z" * 50_000})
                got = await next_event(ann)
                assert isinstance(got, Message) and got.message == {"big": "z" * 50_000}
                base = f"https://127.0.0.1:{relay.port}"
                assert await http_push(base, "news:tls", 1, send_key="sk", ssl=client_context) == 2
            with pytest.raises(ssl.SSLError):  # the system's CAs do not know the throwaway one
                async with connect(url):
                    pass
            with pytest.raises(ValueError, match="ssl="):
                async with connect(url.replace("wss:", "ws:"), ssl=client_context):
                    pass


# -- through an ASGI server ---------------------------------------------------------------------


async def test_the_client_through_uvicorn() -> None:
    with anyio.fail_after(30):
        async with running(KEYED, door="uvicorn") as relay:
            url = ws_url(relay, "/c/news:asgi")
            async with connect(url, announce=True, list=True) as ann, connect(url, alias="Bob", send_key="sk") as bob:
                assert ann.users == [User(ann.uid)] and bob.total == 2
                joined = await next_event(ann)
                assert isinstance(joined, Join) and joined.total == 2
                await bob.send({"type": "chat"})
                got = await next_event(ann)
                assert isinstance(got, Message) and got.kind == "chat" and got.alias == "Bob"
                await ann.send(1)
                error = await next_event(ann)
                assert isinstance(error, Error) and error.message == "Sending requires a valid sendKey."
                base = f"http://127.0.0.1:{relay.port}"
                assert await http_push(base, "news:asgi", "hello", send_key="sk") == 2
                with pytest.raises(Refused) as refused:
                    await http_push(base, "news:asgi", "hello", send_key="no")
                assert refused.value.status == 403
                await push(url, "bye", send_key="sk")
                assert [event.type for event in await events_until(ann, 4)] == ["message", "join", "message", "leave"]
            with pytest.raises(Refused) as refused:
                async with connect(ws_url(relay, "/c/vault:x")):
                    pass
            assert (refused.value.status, refused.value.reason) == (403, "Joining requires a valid joinKey.")
