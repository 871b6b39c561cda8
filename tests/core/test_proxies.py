"""Who a client is behind a reverse proxy: ``client_address`` and ``[server] forwarded_header``.

Only the header the operator's proxy sets is read, and only when the peer is a trusted
proxy; the client is the nearest hop that is not itself a trusted proxy. Whatever a client
writes into either header must never let it pick the address it is counted as.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relaycore import Config, ConfigError, Hub, ServerConfig
from relaycore._limits import TrustedProxies, client_address
from relaycore.testing import FakeClock, seeded_uids

PROXY = "10.0.0.1"
XFF = TrustedProxies(["10.0.0.0/8", "2001:db8:ffff::/48"])
FWD = TrustedProxies(["10.0.0.0/8", "2001:db8:ffff::/48"], header="forwarded")

Headers = list[tuple[bytes, bytes]]
IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def xff(*values: str | bytes) -> Headers:
    return [(b"x-forwarded-for", v if isinstance(v, bytes) else v.encode("latin-1")) for v in values]


def fwd(*values: str | bytes) -> Headers:
    return [(b"forwarded", v if isinstance(v, bytes) else v.encode("latin-1")) for v in values]


# -- the header choice ----------------------------------------------------------------------


def test_x_forwarded_for_is_the_default_header() -> None:
    assert TrustedProxies([PROXY]).header == b"x-forwarded-for"
    assert client_address(PROXY, xff("203.0.113.7"), XFF) == "203.0.113.7"


def test_forwarded_is_read_when_chosen() -> None:
    assert client_address(PROXY, fwd("for=203.0.113.7"), FWD) == "203.0.113.7"


@pytest.mark.parametrize("header", ["Forwarded", "FORWARDED", "X-Forwarded-For", "x-forwarded-FOR"])
def test_the_header_choice_is_case_insensitive(header: str) -> None:
    assert TrustedProxies([], header=header).header == header.lower().encode()


@pytest.mark.parametrize("header", ["", "x-real-ip", "forwarded-for", "x-forwarded-for ", "both"])
def test_any_other_header_is_refused(header: str) -> None:
    with pytest.raises(ValueError, match="forwarded"):
        TrustedProxies([PROXY], header=header)


def test_a_header_line_is_matched_whatever_the_case_of_its_name() -> None:
    assert client_address(PROXY, [(b"X-Forwarded-For", b"203.0.113.7")], XFF) == "203.0.113.7"
    assert client_address(PROXY, [(b"Forwarded", b"for=203.0.113.7")], FWD) == "203.0.113.7"


# -- when no header is read -----------------------------------------------------------------


def test_an_untrusted_peer_is_the_client_whatever_it_sends() -> None:
    headers = xff("203.0.113.7") + fwd("for=203.0.113.8")
    assert client_address("198.51.100.1", headers, XFF) == "198.51.100.1"
    assert client_address("198.51.100.1", headers, FWD) == "198.51.100.1"


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    nobody = TrustedProxies([])
    assert not nobody
    assert client_address(PROXY, xff("203.0.113.7"), nobody) == PROXY


def test_a_trusted_peer_without_the_header_is_the_client() -> None:
    assert client_address(PROXY, [(b"host", b"relay.example")], XFF) == PROXY
    assert client_address(PROXY, [], FWD) == PROXY


@pytest.mark.parametrize("value", ["", " ", ",", " , ,, "])
def test_an_empty_header_counts_the_peer(value: str) -> None:
    assert client_address(PROXY, xff(value), XFF) == PROXY
    assert client_address(PROXY, fwd(value), FWD) == PROXY


# -- spoofing -------------------------------------------------------------------------------


def test_a_client_sent_forwarded_is_ignored_when_the_proxy_sets_x_forwarded_for() -> None:
    # nginx appends to X-Forwarded-For and passes the client's own Forwarded through.
    headers = fwd("for=198.51.100.99") + xff("203.0.113.7")
    assert client_address(PROXY, headers, XFF) == "203.0.113.7"
    # And the order of the lines makes no difference.
    assert client_address(PROXY, headers[::-1], XFF) == "203.0.113.7"


def test_a_client_sent_x_forwarded_for_is_ignored_when_the_proxy_sets_forwarded() -> None:
    headers = xff("198.51.100.99") + fwd("for=203.0.113.7")
    assert client_address(PROXY, headers, FWD) == "203.0.113.7"
    assert client_address(PROXY, headers[::-1], FWD) == "203.0.113.7"


def test_forged_hops_before_the_appended_one_are_not_believed() -> None:
    assert client_address(PROXY, xff("198.51.100.1, 198.51.100.2, 203.0.113.7"), XFF) == "203.0.113.7"
    assert client_address(PROXY, fwd("for=198.51.100.1, for=198.51.100.2, for=203.0.113.7"), FWD) == "203.0.113.7"


def test_a_forged_hop_that_looks_like_a_trusted_proxy_changes_nothing() -> None:
    assert client_address(PROXY, xff("10.9.9.9, 203.0.113.7"), XFF) == "203.0.113.7"
    assert client_address(PROXY, fwd("for=10.9.9.9, for=203.0.113.7"), FWD) == "203.0.113.7"


def test_every_line_of_the_header_is_one_list_the_last_nearest() -> None:
    # HAProxy's `option forwardfor` adds its own line after the client's.
    assert client_address(PROXY, xff("198.51.100.1, 198.51.100.2", "203.0.113.7"), XFF) == "203.0.113.7"
    assert client_address(PROXY, fwd("for=198.51.100.1", "for=203.0.113.7"), FWD) == "203.0.113.7"


def test_the_chain_is_walked_past_trusted_proxies_only() -> None:
    # client -> 10.0.0.9 (an inner trusted proxy) -> 10.0.0.1 -> relay
    assert client_address(PROXY, xff("198.51.100.1, 203.0.113.7, 10.0.0.9"), XFF) == "203.0.113.7"
    assert client_address(PROXY, xff("198.51.100.1", "203.0.113.7", "10.0.0.9"), XFF) == "203.0.113.7"
    assert client_address(PROXY, fwd('for=203.0.113.7, for="[2001:db8:ffff::2]:80"'), FWD) == "203.0.113.7"


def test_an_all_trusted_chain_counts_its_outermost_hop() -> None:
    assert client_address(PROXY, xff("10.0.0.3, 10.0.0.2"), XFF) == "10.0.0.3"
    assert client_address(PROXY, fwd("for=10.0.0.3", "for=10.0.0.2"), FWD) == "10.0.0.3"


def test_a_stray_quote_from_the_client_cannot_swallow_the_appended_element() -> None:
    for forged in ['for="198.51.100.99', 'for=x"y', '"', 'a="b"c"', 'for="\\']:
        for real in ["for=203.0.113.7", 'for="203.0.113.7:80"', 'for="[2001:db8::7]"']:
            expected = "2001:db8::7" if "2001" in real else "203.0.113.7"
            assert client_address(PROXY, fwd(f"{forged}, {real}"), FWD) == expected, (forged, real)


# -- X-Forwarded-For hops -------------------------------------------------------------------


#: X-Forwarded-For hops as proxies write them, and the client address each stands for.
XFF_HOPS = {
    "203.0.113.7": "203.0.113.7",
    "203.0.113.7:5678": "203.0.113.7",
    " 203.0.113.7 ": "203.0.113.7",
    "\t203.0.113.7:1\t": "203.0.113.7",
    "2001:db8::1": "2001:db8::1",
    "[2001:db8::1]": "2001:db8::1",
    "[2001:db8::1]:4711": "2001:db8::1",
    "2001:DB8:0::1": "2001:db8::1",
    "2001:0db8:0000:0000:0000:0000:0000:0001": "2001:db8::1",
    "[2001:DB8::1]:4711": "2001:db8::1",
    "fe80::1%eth0": "fe80::1",
    "::ffff:203.0.113.7": "203.0.113.7",
    "[::ffff:cb00:7107]:80": "203.0.113.7",
}


@pytest.mark.parametrize(("hop", "client"), XFF_HOPS.items())
def test_x_forwarded_for_hop_forms(hop: str, client: str) -> None:
    assert client_address(PROXY, xff(f"198.51.100.1, {hop}"), XFF) == client


@pytest.mark.parametrize(
    "hop",
    ["unknown", "_hidden", "example.com", "203.0.113.7:port", "203.0.113.7:123456", "[2001:db8::1", "[::1]x", "1.2.3"],
)
def test_a_hop_that_is_no_address_is_counted_as_sent(hop: str) -> None:
    assert client_address(PROXY, xff(f"203.0.113.9, {hop}"), XFF) == hop


def test_the_same_client_written_two_ways_is_one_client() -> None:
    a = client_address(PROXY, xff("2001:DB8:0::1"), XFF)
    b = client_address(PROXY, xff("[2001:db8::1]:443"), XFF)
    c = client_address(PROXY, fwd('for="[2001:db8:0:0::1]:80"'), FWD)
    assert a == b == c == "2001:db8::1"


def test_a_hop_is_never_trusted_unless_it_is_an_address() -> None:
    assert "unknown" not in XFF
    assert "10.0.0.0/8" not in XFF
    assert "" not in XFF
    assert "10.0.0.7" in XFF
    assert "::ffff:10.0.0.7" in XFF  # a dual-stack listener shows IPv4 peers so
    assert "2001:db8:ffff::9" in XFF


# -- Forwarded hops -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "client"),
    [
        ("for=192.0.2.60", "192.0.2.60"),
        ('for="192.0.2.60:8080"', "192.0.2.60"),
        ("for=192.0.2.60:8080", "192.0.2.60"),
        ('for="[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17"),
        ('for="[2001:DB8:CAFE:0::17]"', "2001:db8:cafe::17"),
        ("for=2001:db8:cafe::17", "2001:db8:cafe::17"),
        ("for=unknown", "unknown"),
        ("for=_hidden", "_hidden"),
        ('for="_hidden:_port"', "_hidden:_port"),
        ('for="192.0.2.43:_port"', "192.0.2.43"),
        ("FOR=192.0.2.60", "192.0.2.60"),
        ("For = 192.0.2.60", "192.0.2.60"),
        ("proto=https;for=192.0.2.60;by=10.0.0.1", "192.0.2.60"),
        ("by=10.0.0.1", "unknown"),
        ("proto=https", "unknown"),
        ("for=", "unknown"),
        ('for=""', "unknown"),
        ("garbage", "unknown"),
    ],
)
def test_forwarded_element_forms(value: str, client: str) -> None:
    assert client_address(PROXY, fwd(f"for=198.51.100.1, {value}"), FWD) == client


def test_an_element_without_for_is_a_hop_of_its_own() -> None:
    # The nearest proxy said nothing about its client: all such requests share "unknown".
    assert client_address(PROXY, fwd("for=203.0.113.7, proto=https"), FWD) == "unknown"
    assert client_address(PROXY, fwd("for=203.0.113.7", "host=relay.example"), FWD) == "unknown"


def test_quoted_commas_and_semicolons_do_not_split() -> None:
    assert client_address(PROXY, fwd('for=198.51.100.1;host="a,b;c", for=203.0.113.7'), FWD) == "203.0.113.7"
    assert client_address(PROXY, fwd('for=203.0.113.7;host="a,for=198.51.100.1"'), FWD) == "203.0.113.7"
    assert client_address(PROXY, fwd('for="x, y"'), FWD) == "x, y"


def test_empty_elements_are_skipped() -> None:
    assert client_address(PROXY, fwd(",, for=203.0.113.7 ,,"), FWD) == "203.0.113.7"


# -- hostile input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b"\x00\xff\xfe",
        "\u00e9t\u00e9, \u00a0".encode("latin-1"),
        "\u4e2d\u6587".encode(),
        b'"' * 101,
        b"\\" * 50,
        b"[" * 20 + b"]" * 20,
        b"=;=;=,=;" * 50,
        b"for=" * 500,
        b"1.2.3.4:" * 100,
        b"9" * 10_000,
    ],
)
def test_garbage_never_crashes_and_never_hides_the_appended_hop(value: bytes) -> None:
    assert client_address(PROXY, xff(value + b", 203.0.113.7"), XFF) == "203.0.113.7"
    assert client_address(PROXY, xff(value, b"203.0.113.7"), XFF) == "203.0.113.7"
    assert client_address(PROXY, fwd(value + b", for=203.0.113.7"), FWD) == "203.0.113.7"
    assert client_address(PROXY, fwd(value, b"for=203.0.113.7"), FWD) == "203.0.113.7"
    assert isinstance(client_address(PROXY, xff(value), XFF), str)
    assert isinstance(client_address(PROXY, fwd(value), FWD), str)


def test_an_overlong_list_of_forged_hops_is_still_read_to_the_nearest() -> None:
    forged = ", ".join(f"198.51.{n // 256}.{n % 256}" for n in range(2000))
    assert client_address(PROXY, xff(f"{forged}, 203.0.113.7"), XFF) == "203.0.113.7"
    elements = ", ".join(f'for="[2001:db8::{n:x}]:1"' for n in range(2000))
    assert client_address(PROXY, fwd(f"{elements}, for=203.0.113.7"), FWD) == "203.0.113.7"


# -- the property ---------------------------------------------------------------------------

#: Characters that mean something to one of the two parsers, and a few that mean nothing.
_TRICKY = st.text(alphabet=' ,;="[]:_\\.-%\t0123456789abcdefABCDEFforunknw\u00e9', max_size=40)
_LINE = st.one_of(_TRICKY.map(lambda text: text.encode("latin-1")), st.binary(max_size=40))
_NAME = st.sampled_from([b"x-forwarded-for", b"forwarded", b"x-real-ip"])
_CLIENT_LINES = st.lists(st.tuples(_NAME, _LINE), max_size=6)
_REAL = st.ip_addresses().filter(lambda ip: str(ip) not in XFF)
#: A chain of one trusted proxy: what the client sent, its real address, how the proxy adds
#: its hop to the header (nginx's merge, a line of its own, or appended) and how it spells it.
_CHAIN = {
    "lines": _CLIENT_LINES,
    "real": _REAL,
    "how": st.sampled_from(["append", "merge", "line"]),
    "exploded": st.booleans(),
    "upper": st.booleans(),
    "port": st.booleans(),
}


def _counted(ip: IP) -> str:
    """The address a client at ``ip`` is counted as."""
    return str(ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else str(ip)


def _spelled(ip: IP, exploded: bool, upper: bool) -> str:
    text = ip.exploded if exploded else ip.compressed
    return text.upper() if upper else text


def _proxy_adds(lines: Headers, header: bytes, hop: str, how: str) -> Headers:
    """``lines`` as a proxy forwards them after it adds ``hop`` to ``header``."""
    if how == "append" and any(name == header for name, _ in lines):
        last = max(i for i, (name, _) in enumerate(lines) if name == header)
        joined = lines[last][1] + b", " + hop.encode()
        return [*lines[:last], (header, joined), *lines[last + 1 :]]
    if how == "merge":  # nginx: every line of the header becomes one, the hop at its end
        values = [value for name, value in lines if name == header]
        others = [(name, value) for name, value in lines if name != header]
        return [*others, (header, b", ".join([*values, hop.encode()]))]
    return [*lines, (header, hop.encode())]  # HAProxy: a line of its own


@settings(derandomize=True, max_examples=400, deadline=None, database=None)
@given(**_CHAIN)
def test_whatever_a_client_sends_the_x_forwarded_for_it_is_counted_as_its_real_address(
    lines: Headers, real: IP, how: str, exploded: bool, upper: bool, port: bool
) -> None:
    hop = _spelled(real, exploded, upper)
    if port:
        hop = f"[{hop}]:4711" if real.version == 6 else f"{hop}:4711"
    headers = _proxy_adds(lines, b"x-forwarded-for", hop, how)
    assert client_address(PROXY, headers, XFF) == _counted(real)


@settings(derandomize=True, max_examples=400, deadline=None, database=None)
@given(
    **_CHAIN,
    extra=st.sampled_from(["", ";proto=https", "proto=http;", ';host="relay.example:443"']),
)
def test_whatever_a_client_sends_the_forwarded_it_is_counted_as_its_real_address(
    lines: Headers,
    real: IP,
    how: str,
    exploded: bool,
    upper: bool,
    port: bool,
    extra: str,
) -> None:
    node = _spelled(real, exploded, upper)
    if real.version == 6:
        node = f'"[{node}]:4711"' if port else f'"[{node}]"'
    elif port:
        node = f'"{node}:4711"'
    element = f"proto=http;for={node}" if extra == "proto=http;" else f"for={node}{extra}"
    headers = _proxy_adds(lines, b"forwarded", element, how)
    assert client_address(PROXY, headers, FWD) == _counted(real)


@settings(derandomize=True, max_examples=200, deadline=None, database=None)
@given(lines=st.lists(st.tuples(_NAME, st.binary(max_size=200)), max_size=8))
def test_any_headers_give_a_string_and_never_raise(lines: Headers) -> None:
    for trusted in (XFF, FWD):
        assert isinstance(client_address(PROXY, lines, trusted), str)
        assert client_address("198.51.100.1", lines, trusted) == "198.51.100.1"


# -- configuration --------------------------------------------------------------------------


def test_the_default_forwarded_header_is_x_forwarded_for() -> None:
    assert Config().server.forwarded_header == "x-forwarded-for"
    assert Config.from_toml(b"", env={}).server.forwarded_header == "x-forwarded-for"


@pytest.mark.parametrize(
    ("value", "stored"),
    [("forwarded", "forwarded"), ("Forwarded", "forwarded"), ("X-Forwarded-For", "x-forwarded-for")],
)
def test_forwarded_header_in_the_file_is_stored_in_lower_case(value: str, stored: str) -> None:
    cfg = Config.from_toml(f'[server]\nforwarded_header = "{value}"\n', env={})
    assert cfg.server.forwarded_header == stored
    assert ServerConfig(forwarded_header=value).forwarded_header == stored


@pytest.mark.parametrize("value", ['"x-real-ip"', '""', '"forwarded, x-forwarded-for"'])
def test_another_forwarded_header_is_an_error_naming_the_key(value: str) -> None:
    with pytest.raises(ConfigError, match=r"server\.forwarded_header"):
        Config.from_toml(f"[server]\nforwarded_header = {value}\n", env={})


def test_a_forwarded_header_of_the_wrong_type_is_an_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="forwarded_header"):
        Config.from_toml(b"[server]\nforwarded_header = 1\n", env={})


def test_direct_construction_validates_the_forwarded_header_too() -> None:
    with pytest.raises(ValueError, match=r"server\.forwarded_header"):
        Config(server=ServerConfig(forwarded_header="via"))


@pytest.mark.parametrize(("value", "stored"), [("forwarded", "forwarded"), (" FORWARDED ", "forwarded")])
def test_the_environment_overrides_the_forwarded_header(value: str, stored: str) -> None:
    cfg = Config.from_toml(
        b'[server]\nforwarded_header = "x-forwarded-for"\n', env={"RELAYCORE_SERVER_FORWARDED_HEADER": value}
    )
    assert cfg.server.forwarded_header == stored


def test_a_bad_forwarded_header_in_the_environment_is_an_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"server\.forwarded_header"):
        Config.from_toml(b"", env={"RELAYCORE_SERVER_FORWARDED_HEADER": "x-real-ip"})


def test_the_hub_reads_the_header_the_configuration_names() -> None:
    toml = '[server]\ntrusted_proxies = ["10.0.0.1"]\nforwarded_header = "Forwarded"\n'
    hub = Hub(Config.from_toml(toml, env={}), FakeClock(), seeded_uids(1))
    assert hub.trusted_proxies.header == b"forwarded"
    headers = xff("198.51.100.99") + fwd("for=203.0.113.7")
    assert client_address(PROXY, headers, hub.trusted_proxies) == "203.0.113.7"
