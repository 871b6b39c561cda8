"""Per-address limits behind a trusted reverse proxy, over real sockets.

The test client plays both the client and the proxy at 127.0.0.1: each request carries
what a client forged, in both headers, followed by the hop the proxy adds to the one
header ``[server] forwarded_header`` names. However the forged addresses rotate, the
client is counted as its one real address; distinct real addresses have budgets of their
own. PROTOCOL.md section 8, docs/proxies.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from rawws import http, post, upgrade_status

from conftest import make_config, running
from relaycore import Config

pytestmark = pytest.mark.anyio

HEADERS = ["x-forwarded-for", "forwarded"]
REAL = "203.0.113.7"
PUSH = "x-send-key: k\r\n"


def behind_proxy(header: str, limits: str, trusted: str = '["127.0.0.1"]') -> Config:
    """A relay that trusts the test client as its proxy and reads ``header``."""
    return make_config(
        f'[server]\ntrusted_proxies = {trusted}\nforwarded_header = "{header}"\n'
        f'[limits]\n{limits}\n[namespaces."api"]\nsend_key = "k"\n'
    )


def node(address: str) -> str:
    """``address`` as the value of a ``for=`` pair (RFC 7239: IPv6 in brackets, quoted)."""
    return f'"[{address}]"' if ":" in address else address


def through_proxy(header: str, real: str, forged: Sequence[str] = ()) -> str:
    """The header lines that reach the relay for a client at ``real`` that sent ``forged``.

    The client put its forged addresses in both headers. The proxy adds ``real`` to
    ``header`` only (nginx style: appended to the client's line; HAProxy style for
    ``forwarded``: a line of its own) and passes the other header on untouched, after
    its own, as nginx does: nearer than the proxy's hop, were it believed.
    """
    forged_xff = ", ".join(forged)
    forged_fwd = ", ".join(f"for={node(address)}" for address in forged)
    if header == "x-forwarded-for":
        lines = f"X-Forwarded-For: {forged_xff + ', ' if forged else ''}{real}\r\n"
        return lines + (f"Forwarded: {forged_fwd}\r\n" if forged else "")
    lines = f"Forwarded: {forged_fwd}\r\n" if forged else ""
    lines += f"Forwarded: for={node(real)}\r\n"
    return lines + (f"X-Forwarded-For: {forged_xff}\r\n" if forged else "")


def forgeries(n: int) -> list[str]:
    """Another set of made-up addresses for attempt ``n``, one of them the proxy's own."""
    return [f"198.51.100.{n}", f"2001:db8:{n:x}::1", "127.0.0.1"]


# -- WebSocket upgrades ------------------------------------------------------------------------


@pytest.mark.parametrize("header", HEADERS)
async def test_rotating_forged_addresses_do_not_escape_the_connection_rate(header: str) -> None:
    async with running(behind_proxy(header, "connections_per_second_per_ip = 2")) as server:
        statuses = [
            await upgrade_status(server.port, "/c/room", through_proxy(header, REAL, forgeries(n))) for n in range(5)
        ]
        assert statuses == [101, 101, 429, 429, 429]
        # Without any forgery the same client is just as spent.
        assert await upgrade_status(server.port, "/c/room", through_proxy(header, REAL)) == 429


@pytest.mark.parametrize("header", HEADERS)
async def test_distinct_real_addresses_have_connection_budgets_of_their_own(header: str) -> None:
    async with running(behind_proxy(header, "connections_per_second_per_ip = 2")) as server:

        async def status(real: str, n: int) -> int:
            return await upgrade_status(server.port, "/c/room", through_proxy(header, real, forgeries(n)))

        assert [await status(REAL, n) for n in range(3)] == [101, 101, 429]
        for real in ["203.0.113.8", "2001:db8::7", "198.51.100.1"]:
            assert [await status(real, n) for n in range(3)] == [101, 101, 429], real


@pytest.mark.parametrize("header", HEADERS)
async def test_the_header_the_relay_does_not_read_cannot_choose_the_client(header: str) -> None:
    """A client alone in the other header: the proxy's hop, in the chosen header, decides."""
    other = "Forwarded: for={}\r\n" if header == "x-forwarded-for" else "X-Forwarded-For: {}\r\n"
    async with running(behind_proxy(header, "connections_per_second_per_ip = 2")) as server:
        statuses = []
        for n in range(4):
            lines = through_proxy(header, REAL) + other.format(f"198.51.100.{n}")
            statuses.append(await upgrade_status(server.port, "/c/room", lines))
        assert statuses == [101, 101, 429, 429]


@pytest.mark.parametrize(
    ("header", "spellings"),
    [
        ("x-forwarded-for", ["2001:DB8:0::7", "[2001:db8::7]:4711", "2001:0db8:0000:0000:0000:0000:0000:0007"]),
        ("forwarded", ['"[2001:DB8:0::7]"', '"[2001:db8::7]:4711"', "2001:db8::7"]),
    ],
)
async def test_one_ipv6_client_written_several_ways_is_one_client(header: str, spellings: list[str]) -> None:
    name = "X-Forwarded-For: {}\r\n" if header == "x-forwarded-for" else "Forwarded: for={}\r\n"
    async with running(behind_proxy(header, "connections_per_second_per_ip = 2")) as server:
        statuses = [await upgrade_status(server.port, "/c/room", name.format(hop)) for hop in spellings]
        assert statuses == [101, 101, 429]


@pytest.mark.parametrize("header", HEADERS)
async def test_an_untrusted_peer_is_counted_whatever_it_forwards(header: str) -> None:
    """Nothing trusted: every request is the peer's own, whatever real address it claims."""
    async with running(behind_proxy(header, "connections_per_second_per_ip = 2", trusted="[]")) as server:
        statuses = [
            await upgrade_status(server.port, "/c/room", through_proxy(header, f"203.0.113.{n}")) for n in range(3)
        ]
        assert statuses == [101, 101, 429]


# -- HTTP push ---------------------------------------------------------------------------------


@pytest.mark.parametrize("header", HEADERS)
async def test_rotating_forged_addresses_do_not_escape_the_push_rate(header: str) -> None:
    async with running(behind_proxy(header, "pushes_per_second_per_ip = 2")) as server:

        async def push(real: str, n: int) -> int:
            lines = PUSH + through_proxy(header, real, forgeries(n))
            return (await http(server.port, post("/push/api:feed", b'{"n":1}', lines)))[0]

        assert [await push(REAL, n) for n in range(5)] == [200, 200, 429, 429, 429]
        # Another real client behind the same proxy still has its whole budget.
        assert [await push("2001:db8::7", n) for n in range(3)] == [200, 200, 429]
        assert [await push("203.0.113.8", n) for n in range(3)] == [200, 200, 429]
