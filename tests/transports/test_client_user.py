"""The client as an application's own tests would use it: a relay from a fixture, the client's
three functions, nothing else of the project."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from relaycore import Config, NamespaceConfig
from relaycore.testing import config_for_tests
from transports.client import connect, http_push, push

pytestmark = pytest.mark.anyio

# relay_server comes from the relaycore pytest plugin; this file's relay reserves one
# namespace ("alerts") with a send key, for HTTP push.


@pytest.fixture
def relay_config() -> Config:
    return config_for_tests(namespaces={"alerts": NamespaceConfig(send_key="alert-key")})


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
