"""relaycore._texts and its public face relaycore.texts: every text and close code a client
meets, defined once.

What the module promises: the close codes are the numbers RFC 6455 (7.4.1) and IANA register
for them, each text is the sentence the docs say, and they are what the relay really sends: a
relay in memory (relaycore.testing.Harness) is made to say each one. That no module of src/
writes one of them a second time is tests/core/test_layering.py's business.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import relaycore._texts as defined
from relaycore import HTTPError, LimitsConfig, NamespaceConfig, ServerConfig, texts
from relaycore._texts import (
    BINARY_UNSUPPORTED,
    BODY_TOO_LARGE,
    CLOSE_GOING_AWAY,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    INVALID_JSON,
    INVALID_JSON_BODY,
    JOIN_KEY_REQUIRED,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    ORIGIN_NOT_ALLOWED,
    SEND_KEY_REQUIRED,
    SHUTTING_DOWN,
    TOO_BIG,
    UPGRADE_REQUIRED,
    rate_limited,
    user_not_found,
)
from relaycore.testing import Harness, config_for_tests

DOCS = Path(__file__).resolve().parents[2] / "docs"

#: The close codes by the names RFC 6455 (7.4.1) and the IANA registry give them.
REGISTERED = {
    "CLOSE_NORMAL": 1000,
    "CLOSE_GOING_AWAY": 1001,
    "CLOSE_PROTOCOL_ERROR": 1002,
    "CLOSE_UNSUPPORTED": 1003,
    "CLOSE_ABNORMAL": 1006,
    "CLOSE_INVALID_DATA": 1007,
    "CLOSE_POLICY": 1008,
    "CLOSE_TOO_BIG": 1009,
    "CLOSE_INTERNAL_ERROR": 1011,
    "CLOSE_SERVICE_RESTART": 1012,
    "CLOSE_TRY_AGAIN_LATER": 1013,
    "CLOSE_BAD_GATEWAY": 1014,
}

ORIGIN = "https://app.example"


def _defined_here() -> dict[str, Any]:
    """Every public constant and function the module defines (not what it imports)."""
    return {
        name: value
        for name, value in vars(defined).items()
        if not name.startswith("_")
        and (isinstance(value, str | int) or getattr(value, "__module__", None) == defined.__name__)
    }


def test_all_lists_every_name_the_module_defines() -> None:
    assert sorted(defined.__all__) == sorted(_defined_here())


def test_the_public_face_is_the_module_whole() -> None:
    assert texts.__all__ == defined.__all__
    assert all(getattr(texts, name) is getattr(defined, name) for name in defined.__all__)


def test_close_codes_are_the_registered_numbers() -> None:
    codes = {name: value for name, value in _defined_here().items() if name.startswith("CLOSE_")}
    assert codes == REGISTERED


@pytest.mark.parametrize("name", sorted(name for name, value in _defined_here().items() if isinstance(value, str)))
def test_the_docs_say_each_text(name: str) -> None:
    """docs/protocol.md says each; the cluster's own (uid conflict, unavailable) docs/cluster.md."""
    said = (DOCS / "protocol.md").read_text(encoding="utf-8") + (DOCS / "cluster.md").read_text(encoding="utf-8")
    assert getattr(defined, name) in said


def test_the_formatted_texts_are_the_docs_patterns() -> None:
    protocol = (DOCS / "protocol.md").read_text(encoding="utf-8")
    assert user_not_found("<uid>") in protocol
    assert rate_limited(1, 3).replace("1", "<n>", 1) in protocol


# -- the relay says them ------------------------------------------------------------------------


@pytest.fixture
def relay() -> Harness:
    """Small messages and a small burst, a namespace with each key, and one allowed origin."""
    return Harness(
        config_for_tests(
            server=ServerConfig(allowed_origins=[ORIGIN]),
            limits=LimitsConfig(max_message_bytes=64, messages_per_second=0.001, messages_burst=3),
            namespaces={"news": NamespaceConfig(send_key="sk"), "vip": NamespaceConfig(join_key="door")},
        )
    )


def test_error_frames(relay: Harness) -> None:
    member = relay.join("room")
    member.send_raw("{")
    assert member.expect("error")["message"] == INVALID_JSON
    member.send_raw(b"\x00\x01")
    assert member.expect("error")["message"] == BINARY_UNSUPPORTED
    member.send({"x": 1}, to="NOUSER")
    assert member.expect("error")["message"] == user_not_found("NOUSER")
    reader = relay.join("news")
    reader.send({"x": 1})
    assert reader.expect("error")["message"] == SEND_KEY_REQUIRED


def test_the_rate_limit_warning_counts_to_three(relay: Harness) -> None:
    member = relay.join("room")
    for _ in range(4):  # the burst of 3, then one over it
        member.send({"x": 1})
    assert member.expect("error")["message"] == rate_limited(1, 3)


def test_http_refusals(relay: Harness) -> None:
    def answer(method: str, target: str) -> tuple[int, str]:
        got = relay.http(method, target)
        return got.status, got.text

    assert answer("GET", "/nope") == (404, NOT_FOUND)
    assert answer("DELETE", "/c/room") == (405, METHOD_NOT_ALLOWED)
    assert answer("GET", "/c/room") == (426, UPGRADE_REQUIRED)
    with pytest.raises(HTTPError) as refused:
        relay.join("vip:lounge")
    assert (refused.value.status, refused.value.message) == (403, JOIN_KEY_REQUIRED)


def test_push_refusals(relay: Harness) -> None:
    def error(**request: Any) -> tuple[int, str]:
        answer = relay.http("POST", "/push/news", **request)
        return answer.status, answer.json()["error"]

    key = {"x-send-key": "sk"}
    assert error(body=b"{", headers=key) == (400, INVALID_JSON_BODY)
    assert error(body=b'"' + b"x" * 64 + b'"', headers=key) == (413, BODY_TOO_LARGE)
    assert error(body=b"1", headers={**key, "origin": "https://elsewhere.example"}) == (403, ORIGIN_NOT_ALLOWED)


def test_close_codes_and_reasons(relay: Harness) -> None:
    big, stays = relay.join("room"), relay.join("room")
    big.send("x" * 64)
    assert big.closed == (CLOSE_TOO_BIG, TOO_BIG)
    flooder = relay.join("flood")
    for _ in range(6):  # the burst, then three warnings: the third closes
        flooder.send({"x": 1})
    assert flooder.closed is not None and flooder.closed[0] == CLOSE_POLICY
    relay.shutdown()
    assert stays.closed == (CLOSE_GOING_AWAY, SHUTTING_DOWN)
