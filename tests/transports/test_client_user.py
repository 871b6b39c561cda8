"""The client as an application's own tests would use it: a relay from a fixture, the client's
three functions, nothing else of the project."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from transports.client import connect, http_push, push

pytestmark = pytest.mark.anyio

# -- provided by the relaycore pytest plugin once it exists ---------------------------------
# A stand-in until then: the native relay in this process, on a free port, with one
# reserved namespace ("alerts") that has a send key. Swap this block for the plugin.

from conftest import make_config, running  # noqa: E402


class _RelayServer:
    def __init__(self, server: Any) -> None:
        self.config = server.config
        self.url = f"http://127.0.0.1:{server.port}"


@pytest.fixture
async def relay_server() -> AsyncIterator[_RelayServer]:
    config = make_config('[namespaces."alerts"]\nsend_key = "alert-key"')
    async with running(config) as server:
        yield _RelayServer(server)


# -- end of the stand-in ------------------------------------------------------------------------


async def test_two_members_chat(relay_server: Any) -> None:
    room = f"{relay_server.url}/c/room"
    with anyio.fail_after(10):
        async with connect(room, alias="ann") as ann, connect(room, alias="bob") as bob:
            await bob.send({"type": "chat", "text": "hello ann"})
            async for event in ann:
                if event.type == "message" and event.kind == "chat":
                    assert event.alias == "bob" and event.message["text"] == "hello ann"
                    break
            await ann.send({"type": "chat", "text": "hi bob"}, to=bob.uid)
            async for event in bob:
                if event.type == "message":
                    assert event.uid == ann.uid and event.message["text"] == "hi bob"
                    break


async def test_handlers_see_a_push(relay_server: Any) -> None:
    room = f"{relay_server.url}/c/room"
    texts: list[str] = []
    left = anyio.Event()
    with anyio.fail_after(10):
        async with connect(room) as ann:
            ann.on("note", lambda event: texts.append(event.message["text"])).on("leave", lambda event: left.set())
            await push(room, {"type": "note", "text": "one-off"})
            await left.wait()
            assert texts == ["one-off"]


async def test_a_backend_pushes_over_http(relay_server: Any) -> None:
    key = relay_server.config.namespaces["alerts"].send_key
    with anyio.fail_after(10):
        async with connect(f"{relay_server.url}/c/alerts:ops") as ops:
            reached = await http_push(relay_server.url, "alerts:ops", {"type": "alert", "text": "disk"}, send_key=key)
            assert reached == 1
            event = await ops.receive()
            assert event.type == "message" and event.kind == "alert" and event.uid is None
            with pytest.raises(Exception, match="x-send-key") as refused:
                await http_push(relay_server.url, "alerts:ops", {}, send_key="wrong")
            assert getattr(refused.value, "status", None) == 403
