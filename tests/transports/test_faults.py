"""Bugs inside the server: one connection's failure costs that connection (1011) and
nothing else; a failure of the server's own machinery ends ``serve()`` with the error
instead of leaving a relay that silently stops answering."""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
from typing import Any

import anyio
import pytest
from wsclient import clients, expect_close, join_all, recv_json

import transports.server._listeners as listeners_module
from conftest import make_config, running
from relaycore import Connection, Hub, Member, Outbox, RelayUsageError, State
from transports._door import SystemClock, secure_uids
from transports.server import RelayServer

pytestmark = pytest.mark.anyio


class BrokenHub(Hub):
    """A hub with a bug: a message saying "boom" raises inside the core."""

    def receive(self, member: Member, text: str | bytes) -> None:
        if text == '"boom"':
            raise RuntimeError("a bug in message handling")
        super().receive(member, text)


async def test_a_bug_for_one_connection_closes_it_with_1011_and_spares_the_others() -> None:
    config = make_config()
    server = RelayServer(config, hub=BrokenHub(config, SystemClock(), secure_uids))
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve, "127.0.0.1", 0)
        async with clients(server.port) as connect:
            victim = await connect("/c/faults")
            other = await connect("/c/faults")
            assert (await recv_json(victim))["type"] == "join"
            assert (await recv_json(other))["type"] == "join"
            assert (await recv_json(victim))["type"] == "join"  # the other one joining
            await victim.send('"boom"')
            assert await expect_close(victim) == 1011
            leave = await recv_json(other)
            assert leave["type"] == "leave"
            # The relay still serves: a new member joins and hears a broadcast.
            late = await connect("/c/faults")
            assert (await recv_json(late))["type"] == "join"
            assert (await recv_json(other))["type"] == "join"
            await other.send('"still here"')
            assert (await recv_json(late))["message"] == "still here"
        tg.cancel_scope.cancel()


class BrokenServer(RelayServer):
    """A server whose accept path has a bug."""

    def _accept(self, listener: object) -> None:
        raise RuntimeError("a bug in the accept path")


async def test_a_bug_in_the_server_itself_ends_serve_with_the_error() -> None:
    server = BrokenServer(make_config())
    with pytest.raises(BaseException) as caught:  # an ExceptionGroup, or the error itself
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                await tg.start(server.serve, "127.0.0.1", 0)
                stream = await anyio.connect_tcp("127.0.0.1", server.port)
                await stream.aclose()
                await anyio.sleep(10)
    errors = caught.value.exceptions if isinstance(caught.value, BaseExceptionGroup) else (caught.value,)
    flat: list[BaseException] = []
    while errors:
        exc = errors[0]
        errors = errors[1:]
        if isinstance(exc, BaseExceptionGroup):
            errors = (*errors, *exc.exceptions)
        else:
            flat.append(exc)
    assert [str(exc) for exc in flat] == ["a bug in the accept path"]


class FlakyListener:
    """A listening socket whose first accept() calls fail the way the kernel reports a
    client that vanished early; everything else is the real socket's."""

    def __init__(self, sock: socket.socket, failures: list[int]) -> None:
        self._sock = sock
        self._failures = failures

    def accept(self) -> tuple[socket.socket, Any]:
        if self._failures:
            code = self._failures.pop(0)
            raise OSError(code, os.strerror(code))
        return self._sock.accept()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


async def test_transient_accept_errors_are_skipped_and_the_relay_serves_on(caplog: pytest.LogCaptureFixture) -> None:
    server = RelayServer(make_config())
    server.bind("127.0.0.1", 0)
    failures = [errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ECONNABORTED]
    server._listeners = [FlakyListener(sock, failures) for sock in server._listeners]  # type: ignore[misc]
    caplog.set_level(logging.DEBUG, logger="relaycore.server")
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        async with clients(server.port) as connect:
            first = await connect("/c/accept")
            assert (await recv_json(first))["type"] == "join"
            second = await connect("/c/accept")
            assert (await recv_json(second))["type"] == "join"
            await second.send('"hello"')
            assert (await recv_json(first))["type"] == "join"
            assert (await recv_json(first))["message"] == "hello"
        tg.cancel_scope.cancel()
    assert not failures, "the flaky accept() calls were made"
    skipped = [r for r in caplog.records if "accept failed" in r.getMessage()]
    assert len(skipped) == 4 and all(r.levelno == logging.DEBUG for r in skipped)


class TickBug(Connection):
    """A connection whose timer handling has a bug in channel "broken"."""

    def tick(self, now: float) -> None:
        if self.member is not None and self.member.channel.name == "broken":
            raise RuntimeError("a bug in tick")
        super().tick(now)


class FlushBug(Outbox):
    """An outbox that fails when the transport writes it, once its connection is armed."""

    __slots__ = ()

    def view(self) -> bytes:
        if self.peer is not None and getattr(self.peer.conn, "armed", False):
            raise RuntimeError("a bug in flush")
        return super().view()


class Armed(Connection):
    """The member with alias "victim" breaks its outbox with its first message."""

    armed = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outbox.__class__ = FlushBug

    def receive_data(self, data: bytes) -> None:
        was_open = self.state is State.WEBSOCKET
        super().receive_data(data)
        if was_open and self.member is not None and self.member.alias == "victim":
            self.armed = True


async def test_a_bug_in_tick_costs_that_connection_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listeners_module, "Connection", TickBug)
    config = make_config("[limits]\nping_interval = 0.2\nping_timeout = 5.0")
    async with running(config) as server, clients(server.port) as connect:
        broken = await connect("/c/broken")
        fine = await connect("/c/fine")
        buddy = await connect("/c/fine")
        assert (await recv_json(broken))["type"] == "join"
        for member in (fine, buddy, fine):
            assert (await recv_json(member))["type"] == "join"
        assert await expect_close(broken, timeout=5) == 1011
        for _ in range(3):  # the timers keep running for everyone else
            await anyio.sleep(0.25)
            await fine.send('"tick"')
            assert (await recv_json(buddy))["message"] == "tick"


async def test_a_bug_in_flush_costs_that_connection_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listeners_module, "Connection", Armed)
    async with running(make_config()) as server, clients(server.port) as connect:
        victim, other, third = await join_all(connect, "/c/flush?alias=victim&announce", "/c/flush", "/c/flush")
        await victim.send('"arming"')
        assert (await recv_json(other))["message"] == "arming"
        assert (await recv_json(third))["message"] == "arming"
        await other.send('"after"')  # its flush to the victim fails; the others' must not
        assert (await recv_json(third))["message"] == "after"
        leave = await recv_json(third)
        assert leave["type"] == "leave" and leave["alias"] == "victim" and leave["total"] == 2
        assert await expect_close(victim) in (None, 1006)  # dropped: nothing could be written
        late = await connect("/c/flush")
        assert (await recv_json(late))["type"] == "join"
        assert (await recv_json(third))["type"] == "join"


async def test_a_hub_brings_its_own_configuration() -> None:
    config = make_config("[server]\nhost = '127.0.0.1'\nport = 0\n[limits]\nmax_message_bytes = 64")
    hub = Hub(config, SystemClock(), secure_uids)
    server = RelayServer(hub=hub)
    assert server.config is config
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)  # no host or port given: the hub's config says where
        assert server.addresses[0][0] == "127.0.0.1" and server.port != 8787
        async with clients(server.port) as connect:
            member = await connect("/c/cfg")
            assert (await recv_json(member))["type"] == "join"
            await member.send(json.dumps("x" * 100))  # over the hub's 64-byte limit
            assert await expect_close(member) == 1009
        tg.cancel_scope.cancel()


def test_a_config_that_disagrees_with_the_hub_is_refused() -> None:
    hub = Hub(make_config(), SystemClock(), secure_uids)
    with pytest.raises(RelayUsageError, match=r"hub\.config"):
        RelayServer(make_config("[limits]\nmax_message_bytes = 10"), hub=hub)
    with pytest.raises(RelayUsageError, match="clock"):
        RelayServer(hub=hub, clock=SystemClock())
    assert RelayServer(hub.config, hub=hub).config is hub.config
