"""The install check: every door works in a plain install, with only what pyproject declares.

The test suite runs in an environment with everything (``.[test]``), where a module the
project imports but does not declare is usually there anyway: ``transports/asgi.py`` once
imported ``sniffio``, which no declared dependency provides, and under uvicorn in a plain
``pip install relaycore uvicorn`` the first write killed every WebSocket, while the suite
passed. So this module builds ONE wheel of the project and one fresh environment per door
(see ``installenv.py``), each with the wheel (an extra where named) and one server or tool:

| environment | installed | what must work there |
|---|---|---|
| ``plain`` | ``relaycore`` | ``relaycore serve`` relays; ``--backend trio``, ``[metrics]`` refuse, naming the extra |
| ``uvicorn`` | ``relaycore uvicorn`` | ``python -m uvicorn transports.asgi:app`` relays |
| ``hypercorn`` | ``relaycore hypercorn`` | ``python -m hypercorn transports.asgi:app`` relays |
| ``trio-hypercorn`` | ``relaycore[trio] hypercorn`` | the same with ``-k trio``, clients on trio |
| ``redis`` | ``relaycore[redis]`` | two ``relaycore serve --redis`` nodes on a real redis-server relay across nodes |
| ``metrics`` | ``relaycore[metrics]`` | ``[metrics] enabled = true``: it relays and ``GET /metrics`` answers |
| ``pytest`` | ``relaycore pytest`` | a user's test file using the plugin's fixtures passes |

Each exchange is ``exchange_client.py`` (relaycore's own client, which a plain install
has) run by the environment's own python. The plain relay also serves the browser client
(``GET /client.js``), which must be in the wheel. Every test is marked ``install``, which the
default ``pytest`` run deselects (pyproject's ``addopts``); run them with::

    pytest -m install tests/install

Warm (pip's cache filled), the whole check takes well under a minute; the environments
are built in parallel and removed at the end.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from installenv import (
    HERE,
    RUN_TIMEOUT,
    ServerProcess,
    Venv,
    build_wheel,
    create_venv,
    describe,
    free_port,
    http_get,
    redis_binary,
    redis_server,
    serving,
)

from prerequisites import require

pytestmark = pytest.mark.install

#: Each environment's requirements; ``{wheel}`` is the wheel's path.
ENVIRONMENTS: dict[str, list[str]] = {
    "plain": ["{wheel}"],
    "uvicorn": ["{wheel}", "uvicorn"],
    "hypercorn": ["{wheel}", "hypercorn"],
    "trio-hypercorn": ["{wheel}[trio]", "hypercorn"],
    "redis": ["{wheel}[redis]"],
    "metrics": ["{wheel}[metrics]"],
    "pytest": ["{wheel}", "pytest"],
}
#: Environments filled at once: pip is mostly CPU (2 cores) with some waiting on the index.
PARALLEL = 3

METRICS_TOML = "[metrics]\nenabled = true\n"


@pytest.fixture(scope="module")
def environments(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Venv | Exception]]:
    """Every environment of ENVIRONMENTS (or why it could not be made), removed afterwards."""
    root = tmp_path_factory.mktemp("install-envs")
    try:
        wheel = build_wheel(root)
        built: dict[str, Venv | Exception] = {}
        with ThreadPoolExecutor(PARALLEL) as pool:
            futures = {
                name: pool.submit(create_venv, root, name, [req.format(wheel=wheel) for req in requirements])
                for name, requirements in ENVIRONMENTS.items()
            }
            for name, future in futures.items():
                try:
                    built[name] = future.result()
                except Exception as exc:  # reported by the tests that need this environment
                    built[name] = exc
        yield built
    finally:
        shutil.rmtree(root, ignore_errors=True)


def venv(environments: dict[str, Venv | Exception], name: str) -> Venv:
    made = environments[name]
    if isinstance(made, Exception):
        pytest.fail(f"the {name!r} environment could not be made: {made}", pytrace=False)
    return made


def check_exchange(
    env: Venv,
    work: Path,
    send: ServerProcess,
    receive: ServerProcess | None = None,
    *,
    backend: str = "asyncio",
) -> dict[str, Any]:
    """Run exchange_client.py in ``env`` between ``send`` and ``receive`` (default: the same
    relay); on failure, the assertion shows the client's output and every server's log."""
    receive = receive or send
    script = work / "exchange_client.py"
    shutil.copy(HERE / "exchange_client.py", script)
    result = env.run(script, "--send", send.url, "--receive", receive.url, "--backend", backend, cwd=work)
    servers = [send] if receive is send else [send, receive]
    logs = "\n".join(server.report() for server in servers)
    assert result.returncode == 0, f"the exchange failed in the {env.name!r} environment\n{describe(result)}\n{logs}"
    outcome: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    # The client ran on the wheel installed in the environment, not on the checkout.
    assert Path(outcome["transports"]).is_relative_to(env.path), outcome
    return outcome


def refusal(env: Venv, work: Path, *args: str) -> str:
    """``relaycore serve ARGS`` must exit at once with a non-zero status and no traceback;
    returns its stderr."""
    result = env.run_script("relaycore", "serve", "--port", str(free_port()), *args, cwd=work, timeout=30)
    assert result.returncode not in (0, -9), f"`relaycore serve {' '.join(args)}` did not refuse\n{describe(result)}"
    assert "Traceback" not in result.stderr, describe(result)
    return result.stderr


def test_plain_native_server(environments: dict[str, Venv | Exception], tmp_path: Path) -> None:
    env = venv(environments, "plain")
    port = free_port()
    with serving("relaycore-serve", [env.bin("relaycore"), "serve", "--port", str(port)], env, tmp_path, port) as relay:
        check_exchange(env, tmp_path, relay)
        # The browser client is in the wheel, and served from there.
        status, body = http_get(f"{relay.url}/client.js")
        assert status == 200 and "export function connect" in body, f"GET /client.js: {status}\n{relay.report()}"


def test_plain_trio_backend_says_it_needs_trio(environments: dict[str, Venv | Exception], tmp_path: Path) -> None:
    env = venv(environments, "plain")
    stderr = refusal(env, tmp_path, "--backend", "trio")
    assert "needs trio" in stderr and "relaycore[trio]" in stderr, stderr


def test_plain_metrics_config_names_prometheus_client(
    environments: dict[str, Venv | Exception], tmp_path: Path
) -> None:
    env = venv(environments, "plain")
    config = tmp_path / "metrics.toml"
    config.write_text(METRICS_TOML)
    stderr = refusal(env, tmp_path, "--config", str(config))
    assert "prometheus-client" in stderr and "relaycore[metrics]" in stderr, stderr


def test_uvicorn(environments: dict[str, Venv | Exception], tmp_path: Path) -> None:
    env = venv(environments, "uvicorn")
    port = free_port()
    command = [env.python, "-m", "uvicorn", "transports.asgi:app", "--host", "127.0.0.1", "--port", str(port)]
    with serving("uvicorn", command, env, tmp_path, port) as relay:
        check_exchange(env, tmp_path, relay)


@pytest.mark.parametrize(("name", "worker"), [("hypercorn", "asyncio"), ("trio-hypercorn", "trio")])
def test_hypercorn(environments: dict[str, Venv | Exception], tmp_path: Path, name: str, worker: str) -> None:
    env = venv(environments, name)
    port = free_port()
    command = [env.python, "-m", "hypercorn", "-k", worker, "--bind", f"127.0.0.1:{port}", "transports.asgi:app"]
    with serving(f"hypercorn-{worker}", command, env, tmp_path, port) as relay:
        # The clients run on the backend the environment has: trio only where it is installed.
        outcome = check_exchange(env, tmp_path, relay, backend=worker)
    assert outcome["backend"] == worker


def test_redis_cluster(environments: dict[str, Venv | Exception], tmp_path: Path) -> None:
    binary = require(redis_binary(), "redis-server is not installed", "apt-get install -y redis-server")
    env = venv(environments, "redis")
    with redis_server(binary, tmp_path) as redis_url:
        ports = free_port(), free_port()
        commands = [[env.bin("relaycore"), "serve", "--port", str(port), "--redis", redis_url] for port in ports]
        with (
            serving("node-a", commands[0], env, tmp_path, ports[0]) as node_a,
            serving("node-b", commands[1], env, tmp_path, ports[1]) as node_b,
        ):
            # bob on node b, ann on node a: ann's self-join counts bob, her messages cross to b,
            # and bob's answer crosses back.
            check_exchange(env, tmp_path, node_a, node_b)


def test_metrics(environments: dict[str, Venv | Exception], tmp_path: Path) -> None:
    env = venv(environments, "metrics")
    config = tmp_path / "metrics.toml"
    config.write_text(METRICS_TOML)
    port = free_port()
    command = [env.bin("relaycore"), "serve", "--port", str(port), "--config", str(config)]
    with serving("relaycore-metrics", command, env, tmp_path, port) as relay:
        check_exchange(env, tmp_path, relay)
        status, body = http_get(f"{relay.url}/metrics")
        assert status == 200, f"GET /metrics: {status} {body[:500]}\n{relay.report()}"
        assert "relaycore_connections" in body, f"GET /metrics has no relaycore_connections:\n{body[:2000]}"


USER_TESTS = '''
"""A user's tests, using the fixtures relaycore's pytest plugin registers (docs/testing.md)."""

import anyio
import pytest

from relaycore import NamespaceConfig
from relaycore.testing import config_for_tests
from transports.client import connect, http_push


@pytest.mark.anyio
async def test_two_members_chat(relay_server):
    with anyio.fail_after(10):
        async with connect(relay_server.ws_url("room"), alias="ann") as ann:
            async with connect(relay_server.ws_url("room"), alias="bob") as bob:
                await bob.send({"type": "chat", "text": "hi"})
                async for event in ann:
                    if event.type == "message":
                        assert event.alias == "bob" and event.message["text"] == "hi"
                        break


def test_the_same_in_memory(relay_harness):
    ann = relay_harness.join("room", alias="ann")
    bob = relay_harness.join("room", alias="bob")
    bob.send({"type": "chat", "text": "hi"})
    ann.expect("join", total=2)
    ann.expect("message", alias="bob", message={"type": "chat", "text": "hi"})


class TestPush:
    @pytest.fixture
    def relay_config(self):
        return config_for_tests(namespaces={"alerts": NamespaceConfig(send_key="alert-key")})

    @pytest.mark.anyio
    async def test_a_backend_pushes(self, relay_server):
        key = relay_server.config.namespaces["alerts"].send_key
        with anyio.fail_after(10):
            async with connect(relay_server.ws_url("alerts:ops")) as ops:
                assert await http_push(relay_server.url, "alerts:ops", {"text": "disk"}, send_key=key) == 1
                assert (await ops.receive()).message == {"text": "disk"}
'''


def test_pytest_plugin(environments: dict[str, Venv | Exception], tmp_path: Path) -> None:
    env = venv(environments, "pytest")
    project = tmp_path / "project"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")  # the project's own rootdir, nothing above
    (project / "test_with_relay.py").write_text(textwrap.dedent(USER_TESTS))
    result = env.run("-m", "pytest", "-p", "no:cacheprovider", "-rA", cwd=project, timeout=RUN_TIMEOUT)
    assert result.returncode == 0, f"the user's tests failed with the plugin\n{describe(result)}"
    # Only asyncio exists here (no trio): one run of each async test.
    assert "3 passed" in result.stdout, describe(result)
