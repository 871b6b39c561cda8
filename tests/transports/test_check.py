"""``relaycore check``: the conformance checker against relaycore's own doors (every check
passes) and against bench's websockets reference relay (the checker names what it lacks)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import msgspec
import pytest

from conftest import make_config, running
from transports.check import CHECKS, Result, Settings, format_json, format_table, main, run_checks

REPO = Path(__file__).resolve().parents[2]
KEYED = make_config(
    """
[namespaces."secure"]
join_key = "jk"
send_key = "sk"
"""
)
KEYS = ["--namespace", "secure", "--join-key", "jk", "--send-key", "sk"]
ROW = re.compile(r"^(?P<name>\S+)\s+(?P<status>PASS|FAIL|SKIP)\s+(?P<detail>.*)$")
#: A whole run on a local relay takes about 3 s; this bounds it in the tests.
RUN_TIMEOUT = 30.0

#: What bench/ref_websockets.py lacks, by check (see docs/check.md).
REFERENCE_FAILS = {
    "1.join-r",  # no /r/ legacy path: 404
    "1.channel-empty-400",  # /c/ -> 404
    "1.channel-too-long-400",  # no channel length limit
    "1.version",  # no /version
    "2.alias-as",  # no `as`
    "2.alias-too-long-400",  # no alias length limit
    "2.list",  # lists every member, announced or not, without "self"
    "3.1.push-envelope",  # no HTTP push at all
    "3.4.error-unknown-uid",  # a direct message to nobody is dropped silently
    "3.4.error-binary",  # binary frames are decoded and relayed
    "4.direct-legacy",  # no @@uid@@ form
    "5.push-200",
    "5.push-400",
    "5.push-403",
    "5.push-405",
    "5.push-413",
    "6.first-joiner-join-key",  # no keys of any kind
    "6.first-joiner-send-key",
    "6.reserved-join-key",
    "6.reserved-foreign-key-403",
    "6.reserved-send-key",
    "6.namespace-match",
    "8.message-size-1009",  # websockets' own 1 MiB limit, not 100 KiB
    "8.rate-limit",  # no message rate limit
}


def by_status(results: list[Result]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {"PASS": set(), "FAIL": set(), "SKIP": set()}
    for result in results:
        found[result.status].add(result.name)
    return found


def failures(results: list[Result]) -> str:
    return format_table([r for r in results if r.status == "FAIL"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def checker(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m transports.check ...``, bounded in time."""
    return subprocess.run(
        [sys.executable, "-m", "transports.check", *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT + 10,
        check=False,
    )


@pytest.fixture(scope="module")
def reference() -> Iterator[str]:
    """bench's websockets reference relay in a process of its own: its ws:// base URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "ref_websockets.py"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the reference relay did not start: {process.stderr!r}") from None
                time.sleep(0.05)
        yield f"ws://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- relaycore itself: every check passes -------------------------------------------------------


@pytest.mark.anyio
async def test_every_check_passes_on_the_native_server() -> None:
    async with running(KEYED) as server:
        settings = Settings(url=f"ws://127.0.0.1:{server.port}", namespace="secure", join_key="jk", send_key="sk")
        with anyio.fail_after(RUN_TIMEOUT):
            results = await run_checks(settings)
    assert [r.name for r in results] == [c.name for c in CHECKS]
    assert by_status(results)["PASS"] == {c.name for c in CHECKS}, failures(results)
    assert len(CHECKS) >= 55


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_every_check_passes_on_uvicorn_and_json_parses() -> None:
    async with running(KEYED, door="uvicorn") as door:
        with anyio.fail_after(RUN_TIMEOUT + 10):
            url = f"http://127.0.0.1:{door.port}"
            done = await anyio.to_thread.run_sync(lambda: checker(url, *KEYS, "--json"))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert (report["passed"], report["failed"], report["skipped"]) == (len(CHECKS), 0, 0)
    assert [r["name"] for r in report["results"]] == [c.name for c in CHECKS]
    first = report["results"][0]
    assert set(first) == {"name", "status", "detail", "seconds", "tags", "frames"}
    assert report["seconds"] < RUN_TIMEOUT


# -- the websockets reference relay: the checker names what it lacks ----------------------------


def test_the_reference_relay_fails_what_it_lacks(reference: str) -> None:
    done = checker(reference, *KEYS, "--timeout", "2")
    assert done.returncode == 1, done.stdout + done.stderr
    table, _, details = done.stdout.partition("\n\n")
    rows = [ROW.match(line) for line in table.splitlines()[1:]]
    assert all(rows), table
    status = {row["name"]: row["status"] for row in rows if row}
    assert list(status) == [c.name for c in CHECKS]
    failed = {name for name, value in status.items() if value == "FAIL"}
    assert failed == REFERENCE_FAILS, done.stdout
    assert {name for name, value in status.items() if value == "SKIP"} == {"1.health"}  # optional
    # Below the table: each failure with its frames.
    for name in REFERENCE_FAILS:
        assert f"\nFAIL {name}: " in details
    assert "frames seen" in details
    assert re.search(r"A > \\x1f\w{6}\\x1f\{\}", details), "the frames of 3.4.error-unknown-uid"
    assert "HTTP > POST /push/secure:check-5.push-200-" in details
    assert "joinKey=***" in details and "joinKey=jk" not in details  # the namespace's keys are not shown


def test_the_reference_relay_only_and_skip_config(reference: str) -> None:
    done = checker(reference, "--only", "8.*", "--only", "9.close-1000", "--skip-config")
    assert done.returncode == 0, done.stdout
    status = {m["name"]: m["status"] for m in map(ROW.match, done.stdout.splitlines()[1:5]) if m}
    assert status == {
        "8.message-size-ok": "SKIP",
        "8.message-size-1009": "SKIP",
        "8.rate-limit": "SKIP",
        "9.close-1000": "PASS",
    }
    assert "needs the default limits (--skip-config)" in done.stdout


# -- the report and the command line ------------------------------------------------------------


def test_the_table_and_json_formats() -> None:
    results = [
        Result(name="2.echo", status="PASS", detail="own broadcast came back", seconds=0.01, tags=[]),
        Result(
            name="8.message-size-1009",
            status="FAIL",
            detail="a 200 KiB message got close 1000, not 1009",
            seconds=0.2,
            tags=["config"],
            frames=["A > a 200 KiB message", "A < [close 1000 '']"],
        ),
        Result(name="5.push-200", status="SKIP", detail="needs --send-key", seconds=0.0, tags=[]),
    ]
    table = format_table(results)
    lines = table.splitlines()
    assert lines[0].split() == ["CHECK", "RESULT", "DETAIL"]
    assert [ROW.match(line)["status"] for line in lines[1:4]] == ["PASS", "FAIL", "SKIP"]  # type: ignore[index]
    assert "3 checks: 1 passed, 1 failed, 1 skipped" in table
    assert "FAIL 8.message-size-1009: a 200 KiB message got close 1000, not 1009" in table
    assert "    A < [close 1000 '']" in table
    report = msgspec.json.decode(format_json(results, Settings(url="ws://x")))
    assert report["ok"] is False and report["failed"] == 1
    assert report["results"][1]["frames"] == ["A > a 200 KiB message", "A < [close 1000 '']"]


@pytest.mark.anyio
async def test_without_a_namespace_the_keyed_checks_skip_and_the_others_run() -> None:
    """A run with no ``--namespace``: what needs the keys is skipped, saying so; the rest passes."""
    async with running(KEYED) as server:
        with anyio.fail_after(RUN_TIMEOUT):
            results = await run_checks(Settings(url=f"ws://127.0.0.1:{server.port}"))
    found = by_status(results)
    assert not found["FAIL"], failures(results)
    assert {"5.push-200", "5.push-400", "5.push-413", "3.1.push-envelope", "6.reserved-join-key"} <= found["SKIP"]
    assert {"5.push-403", "5.push-405", "2.echo", "6.first-joiner-join-key"} <= found["PASS"]
    for result in results:
        if result.status == "SKIP":
            assert "namespace" in result.detail or "key" in result.detail, result


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["ftp://127.0.0.1:1"]) == 2
    assert "need a ws://" in capsys.readouterr().err
    assert main(["ws://127.0.0.1:1", "--send-key", "sk"]) == 2
    assert main(["ws://127.0.0.1:1", "--only", "nothing.*"]) == 2
    assert main([f"ws://127.0.0.1:{free_port()}"]) == 2
    assert "cannot reach" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["ws://127.0.0.1:1", "--timeout", "0"])


def test_list_names_every_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == [c.name for c in CHECKS]
    assert all(re.fullmatch(r"[1-9](\.[1-4])?\.[a-z0-9-]+", name) for name in names)
    assert len(set(names)) == len(names)
