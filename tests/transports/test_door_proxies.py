"""The client address behind every front door: trusted proxies and forged headers.

Behind ASGI the relay counts the address the server puts in the scope's ``client``, then
applies ``[server] trusted_proxies`` to it exactly as the native server does to the TCP
peer (PROTOCOL.md section 8, docs/proxies.md). So the server must hand over the TCP peer
untouched: uvicorn, by default, replaces it with the last hop of ``X-Forwarded-For`` when
the peer is 127.0.0.1 or ::1, which is why the uvicorn door runs with ``--no-proxy-headers``;
the last test shows what happens without it.
"""

from __future__ import annotations

import anyio
import pytest
from doors import POOL, config_toml, server_gap
from rawws import http, post, upgrade_status

from conftest import make_config, running

pytestmark = [pytest.mark.anyio, pytest.mark.doors]

HEADERS = ["x-forwarded-for", "forwarded"]


def relay_config(trusted: str, header: str = "x-forwarded-for") -> str:
    return (
        f'[server]\ntrusted_proxies = {trusted}\nforwarded_header = "{header}"\n'
        "[limits]\nconnections_per_second_per_ip = 2\npushes_per_second_per_ip = 2\n"
        '[namespaces."api"]\nsend_key = "k"\n'
    )


def forwarded(header: str, address: str) -> str:
    """The header line a proxy adds for a client at ``address``."""
    if header == "x-forwarded-for":
        return f"X-Forwarded-For: {address}\r\n"
    return f"Forwarded: for={address}\r\n"


@pytest.mark.parametrize("header", HEADERS)
async def test_a_trusted_proxy_passes_each_client_its_own_budget(door: str, header: str) -> None:
    async with running(make_config(relay_config('["127.0.0.1"]', header)), door=door) as server:

        async def status(address: str) -> int:
            return await upgrade_status(server.port, "/c/room", forwarded(header, address))

        assert [await status("203.0.113.7") for _ in range(3)] == [101, 101, 429]
        assert await status("198.51.100.1") == 101  # another client behind the same proxy
        # Pushes are counted per forwarded client too.
        push = post("/push/api:x", b"1", "x-send-key: k\r\n" + forwarded(header, "192.0.2.5"))
        assert [(await http(server.port, push))[0] for _ in range(3)] == [200, 200, 429]


async def test_an_untrusted_peer_cannot_choose_its_address(door: str) -> None:
    async with running(make_config(relay_config("[]")), door=door) as server:
        statuses = [
            await upgrade_status(server.port, "/c/room", f"X-Forwarded-For: 198.51.100.{n}\r\n") for n in range(3)
        ]
        # Every attempt is 127.0.0.1's, whatever the header says.
        assert statuses == [101, 101, 429]


@pytest.mark.doors("uvicorn")
@server_gap(
    "uvicorn",
    raises=AssertionError,
    match=r"(?m)^assert \[101, 101, 101\] == \[101, 101, 429\]$",
    reason="uvicorn's --proxy-headers is on by default and trusts X-Forwarded-For from 127.0.0.1 and ::1: it puts "
    "the forged address in the scope's client before the relay sees the request, so behind a default "
    "uvicorn a client on the same host picks a new address (and a fresh rate budget) per request; serve "
    "with --no-proxy-headers and let trusted_proxies decide",
)
async def test_uvicorn_with_its_default_proxy_headers_lets_a_local_peer_choose_its_address(door: str) -> None:
    text = config_toml(make_config(relay_config("[]")))
    process = await anyio.to_thread.run_sync(lambda: POOL.get(door, text, extra=["--proxy-headers"]))
    try:
        statuses = [
            await upgrade_status(process.port, "/c/room", f"X-Forwarded-For: 198.51.100.{n}\r\n") for n in range(3)
        ]
        assert statuses == [101, 101, 429]
    finally:
        await anyio.to_thread.run_sync(POOL.release, process)
