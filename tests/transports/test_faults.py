"""Bugs inside the server: one connection's failure costs that connection (1011) and
nothing else; a failure of the server's own machinery ends ``serve()`` with the error
instead of leaving a relay that silently stops answering."""

from __future__ import annotations

import anyio
import pytest
from wsclient import clients, expect_close, recv_json

from conftest import make_config
from relaycore import Hub, Member
from transports._clock import SystemClock, secure_uids
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
