"""Origins and CORS in the session layer, and WebSockets over HTTP/2, without I/O."""

from __future__ import annotations

import pytest

from relaycore import Answer, ClientSession, Config, ConfigError, Hub, MessageOutbox
from relaycore._origins import Origins, normalize_origin
from relaycore.testing import FakeClock, seeded_uids

UPGRADE = [
    (b"upgrade", b"websocket"),
    (b"connection", b"Upgrade"),
    (b"sec-websocket-version", b"13"),
    (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
]


class Link:
    def __init__(self) -> None:
        self.answers: list[Answer] = []

    def session_closed(self, code: int, reason: str) -> None:
        pass

    def session_opened(self) -> None:
        pass

    def session_refused(self, answer: Answer) -> None:
        self.answers.append(answer)

    def session_answered(self, answer: Answer) -> None:
        self.answers.append(answer)


def hub(origins: str = '["*"]') -> Hub:
    toml = f'[server]\nallowed_origins = {origins}\n[namespaces."app"]\nsend_key = "k"\n'
    return Hub(Config.from_toml(toml, env={}), FakeClock(), seeded_uids(1))


def session(relay: Hub) -> ClientSession:
    return ClientSession(relay, MessageOutbox(1 << 20, relay.ready), Link())


def headers_of(answer: Answer) -> dict[bytes, bytes]:
    return dict(answer.headers)


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("https://Chat.Example", "https://chat.example"),
        ("https://chat.example:443", "https://chat.example"),
        ("http://chat.example:80", "http://chat.example"),
        ("http://chat.example:8080", "http://chat.example:8080"),
        ("http://[::1]:3000", "http://[::1]:3000"),
    ],
)
def test_origins_are_compared_in_their_normal_form(text: str, normal: str) -> None:
    assert normalize_origin(text) == normal


@pytest.mark.parametrize("text", ["chat.example", "https://chat.example/", "https://x/path", "https://u@x", "null", ""])
def test_a_setting_that_is_no_origin_is_a_config_error_naming_the_key(text: str) -> None:
    with pytest.raises(ConfigError, match="allowed_origins"):
        Config.from_toml(f'[server]\nallowed_origins = ["{text}"]', env={})


def test_the_environment_sets_the_list_comma_separated() -> None:
    config = Config.from_toml("", env={"RELAYCORE_SERVER_ALLOWED_ORIGINS": "https://a.example, http://b.example:81"})
    assert config.server.allowed_origins == ["https://a.example", "http://b.example:81"]
    assert Config().server.allowed_origins == ["*"]


def test_garbage_origins_are_never_allowed() -> None:
    origins = Origins(["https://a.example"])
    for garbage in (b"null", b"\xff\xfe", b"https://a.example/x", b"a.example", b""):
        assert not origins.allows(garbage), garbage
    assert Origins([]).allows(None) and not Origins([]).allows(b"https://a.example")


def test_an_upgrade_from_a_disallowed_page_is_refused_before_anyone_joins() -> None:
    relay = hub('["https://a.example"]')
    refused = session(relay)
    answer = refused.request(b"GET", b"/c/room", [*UPGRADE, (b"origin", b"https://b.example")], upgrade=True)
    assert answer is not None and (answer.status, answer.body) == (403, b"Origin not allowed.")
    assert headers_of(answer)[b"content-type"] == b"text/plain; charset=utf-8"
    assert relay.channels == {} and refused.refused == 403
    welcome = session(relay)
    assert welcome.request(b"GET", b"/c/room", [*UPGRADE, (b"origin", b"https://a.example")], upgrade=True) is None
    assert welcome.member is not None


def test_the_refusal_of_a_bad_upgrade_comes_before_the_origin() -> None:
    """A malformed upgrade is told what is wrong with it whatever its origin."""
    relay = hub('["https://a.example"]')
    answer = session(relay).request(b"GET", b"/c/room", [(b"origin", b"https://b.example")], upgrade=False)
    assert answer is not None and answer.status == 426


def test_preflight_answers_what_a_page_needs_and_nothing_to_others() -> None:
    relay = hub('["https://a.example"]')
    asked = [(b"origin", b"https://a.example"), (b"access-control-request-method", b"POST")]
    answer = session(relay).request(b"OPTIONS", b"/push/app:x", asked)
    assert answer is not None and answer.status == 204 and answer.body == b""
    fields = headers_of(answer)
    assert fields[b"access-control-allow-origin"] == b"https://a.example"
    assert fields[b"access-control-allow-methods"] == b"POST, OPTIONS"
    assert fields[b"access-control-allow-headers"] == b"content-type, x-send-key"
    assert fields[b"access-control-max-age"] == b"7200"
    assert fields[b"vary"] == b"origin"
    other = session(relay).request(b"OPTIONS", b"/push/app:x", [(b"origin", b"https://b.example")])
    assert other is not None and other.status == 204
    assert not [name for name, _ in other.headers if name.startswith(b"access-control-")]


def test_a_push_from_a_page_carries_its_origin_back_and_one_from_elsewhere_is_refused() -> None:
    relay = hub('["https://a.example"]')
    page = [(b"origin", b"https://a.example"), (b"x-send-key", b"k")]
    answer = session(relay).request(b"POST", b"/push/app:x", page, b"1")
    assert answer is not None and answer.status == 200
    assert headers_of(answer)[b"access-control-allow-origin"] == b"https://a.example"
    wrong_key = session(relay).request(b"POST", b"/push/app:x", [(b"origin", b"https://a.example")], b"1")
    assert wrong_key is not None and wrong_key.status == 403
    assert headers_of(wrong_key)[b"access-control-allow-origin"] == b"https://a.example"
    too_big = session(relay).body_too_large(b"/push/app:x", [(b"origin", b"https://a.example")])
    assert too_big.status == 413 and headers_of(too_big)[b"access-control-allow-origin"] == b"https://a.example"
    elsewhere = session(relay).request(b"POST", b"/push/app:x", [(b"origin", b"https://b.example"), page[1]], b"1")
    assert elsewhere is not None and (elsewhere.status, elsewhere.body) == (
        403,
        b'{"ok":false,"error":"Origin not allowed."}',
    )
    assert relay.counters.pushes[403] == 2 and relay.counters.pushes[200] == 1


def test_a_program_without_origin_gets_no_cors_header_from_a_restricted_relay() -> None:
    relay = hub('["https://a.example"]')
    answer = session(relay).request(b"GET", b"/version", [])
    assert answer is not None and answer.status == 200
    assert headers_of(answer).get(b"access-control-allow-origin") is None
    assert headers_of(answer)[b"vary"] == b"origin"


def test_a_websocket_over_http2_has_no_upgrade_headers_to_check() -> None:
    """RFC 8441: an extended CONNECT carries none of HTTP/1.1's upgrade headers."""
    relay = hub()
    h2 = session(relay)
    assert h2.request(b"GET", b"/c/room?alias=Ann", [(b"sec-websocket-version", b"13")], extended_connect=True) is None
    assert h2.member is not None and h2.outbox.take()[0].startswith(b'{"type":"join","self":true')
    # The same headers over HTTP/1.1 are not an upgrade.
    h1 = session(relay)
    answer = h1.request(b"GET", b"/c/room", [(b"sec-websocket-version", b"13")], upgrade=True)
    assert answer is not None and answer.status == 426
    # Every other rule still holds over HTTP/2: a bad channel, a refused origin.
    bad = session(relay).request(b"GET", b"/c/", [], extended_connect=True)
    assert bad is not None and bad.status == 400
    locked = hub('["https://a.example"]')
    foreign = session(locked).request(b"GET", b"/c/room", [(b"origin", b"https://b.example")], extended_connect=True)
    assert foreign is not None and foreign.status == 403
