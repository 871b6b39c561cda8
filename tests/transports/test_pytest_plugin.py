"""The pytest plugin (transports.pytest_plugin): its fixtures, as another project's tests use them.

One test runs a small project of its own in a fresh pytest process, which finds the plugin
through its ``pytest11`` entry point, as any project with relaycore installed would; the
others use the fixtures here, on both backends.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from relaycore import Config, NamespaceConfig
from relaycore.testing import Harness, config_for_tests
from transports import pytest_plugin
from transports.client import connect, http_push

pytest_plugins = ["pytester"]

USER_CONFTEST = """
import pytest

from relaycore import NamespaceConfig
from relaycore.testing import config_for_tests


@pytest.fixture
def relay_config():
    return config_for_tests(namespaces={"alerts": NamespaceConfig(send_key="k")})
"""

USER_TESTS = """
import anyio
import pytest

from transports.client import connect, http_push


@pytest.mark.anyio
async def test_two_members_chat(relay_server):
    with anyio.fail_after(10):
        async with connect(relay_server.ws_url("room"), alias="ann") as ann:
            async with connect(relay_server.url + "/c/room", alias="bob") as bob:
                assert bob.total == 2
                await bob.send({"type": "chat", "text": "hi"})
                async for event in ann:
                    if event.type == "message":
                        assert (event.alias, event.message) == ("bob", {"type": "chat", "text": "hi"})
                        break


@pytest.mark.anyio
async def test_a_backend_pushes(relay_server):
    assert "alerts" in relay_server.config.namespaces
    with anyio.fail_after(10):
        async with connect(relay_server.ws_url("alerts:ops")) as ops:
            assert await http_push(relay_server.url, "alerts:ops", {"n": 1}, send_key="k") == 1
            event = await ops.receive()
            assert event.message == {"n": 1} and event.uid is None


def test_the_harness(relay_harness):
    ann = relay_harness.join("alerts:ops", alias="ann")
    assert relay_harness.push("alerts:ops", {"n": 1}, send_key="k").json() == {"ok": True, "recipients": 1}
    ann.expect("message", message={"n": 1})
    ghost = relay_harness.join("alerts:ops", responsive=False)
    relay_harness.advance(60)
    assert ghost.closed == (1006, "")
"""


def test_a_project_uses_the_fixtures_on_both_backends(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(USER_CONFTEST)
    pytester.makepyfile(test_app=USER_TESTS)
    result = pytester.runpytest_subprocess("-v", "-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=5)
    passed = {line.split()[0] for line in result.outlines if " PASSED " in line}
    tests = ("test_two_members_chat", "test_a_backend_pushes")
    assert passed >= {f"test_app.py::{test}[{backend}]" for test in tests for backend in ("asyncio", "trio")}


def test_the_plugin_is_registered_by_its_entry_point(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.get_plugin("relaycore") is pytest_plugin


def test_the_default_config(relay_config: Config) -> None:
    assert relay_config == config_for_tests()
    assert relay_config.namespaces == {}


def test_the_harness_is_fresh_and_uses_the_config(relay_harness: Harness, relay_config: Config) -> None:
    assert relay_harness.config is relay_config
    assert relay_harness.hub.channels == {}
    member = relay_harness.join("room")
    assert member.hello is not None and member.hello["date"] == 1_700_000_000_000


@pytest.mark.anyio
async def test_the_server_serves_a_client(relay_server: Any, relay_config: Config) -> None:
    assert relay_server.config is relay_config
    assert relay_server.url == f"http://127.0.0.1:{relay_server.port}"
    assert relay_server.ws_url("team ops:1") == f"ws://127.0.0.1:{relay_server.port}/c/team%20ops:1"
    with anyio.fail_after(10):
        async with connect(relay_server.ws_url("team ops:1"), alias="ann") as ann:
            assert ann.name == "team ops:1" and ann.total == 1
            assert relay_server.hub.connections == 1


class TestAnOverride:
    """A module, class or conftest overrides ``relay_config`` for both fixtures."""

    @pytest.fixture
    def relay_config(self) -> Config:
        return config_for_tests(namespaces={"news": NamespaceConfig(send_key="editor")})

    @pytest.mark.anyio
    async def test_the_server(self, relay_server: Any) -> None:
        with anyio.fail_after(10):
            async with connect(relay_server.ws_url("news:today")) as reader:
                assert await http_push(relay_server.url, "news:today", "extra!", send_key="editor") == 1
                assert (await reader.receive()).message == "extra!"

    def test_the_harness(self, relay_harness: Harness) -> None:
        assert relay_harness.push("news:today", "extra!", send_key="editor").status == 200
