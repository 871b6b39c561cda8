"""The wire model: frame encodings, JSON validation and server frame headers."""

from __future__ import annotations

import json
import struct
from typing import Any

import msgspec
import pytest

from relaycore import parse_json, text_frame
from relaycore._wire import Envelope, ErrorFrame, JoinFrame, LeaveFrame, SelfJoinFrame, UserEntry, encode

DATE = 1_754_659_171_196


def _decoded(frame: msgspec.Struct) -> Any:
    return json.loads(encode(frame))


# -- frame Structs ------------------------------------------------------------------------


def test_envelope_without_alias_omits_the_key_and_has_no_type() -> None:
    raw = encode(Envelope(uid="k3J9aB", date=DATE, message=msgspec.Raw(b'{"type":"chat","n":1}')))
    assert json.loads(raw) == {"uid": "k3J9aB", "date": DATE, "message": {"type": "chat", "n": 1}}
    assert b"null" not in raw


def test_envelope_with_alias_puts_uid_alias_date_at_top_level() -> None:
    decoded = _decoded(Envelope(uid="k3J9aB", alias="Bob", date=DATE, message=msgspec.Raw(b'"hi"')))
    assert decoded == {"uid": "k3J9aB", "alias": "Bob", "date": DATE, "message": "hi"}
    assert list(decoded) == ["uid", "alias", "date", "message"]


def test_envelope_copies_the_payload_byte_for_byte() -> None:
    payload = b'{ "b" : [1, 2.50, "\\u00e9"] , "a":null }'
    raw = encode(Envelope(uid="abcdef", date=DATE, message=msgspec.Raw(payload)))
    assert raw == b'{"uid":"abcdef","date":' + str(DATE).encode() + b',"message":' + payload + b"}"


def test_pushed_envelope_has_only_date_and_message() -> None:
    assert _decoded(Envelope(date=DATE, message=msgspec.Raw(b"[1,2]"))) == {"date": DATE, "message": [1, 2]}


def test_relayed_null_message_keeps_the_message_key() -> None:
    message = parse_json("null")
    assert message is not None
    assert _decoded(Envelope(uid="abcdef", date=DATE, message=message)) == {
        "uid": "abcdef",
        "date": DATE,
        "message": None,
    }


def test_self_join_carries_self_true_and_omits_absent_fields() -> None:
    raw = encode(SelfJoinFrame(uid="abc123", total=1, date=DATE))
    assert json.loads(raw) == {"type": "join", "self": True, "uid": "abc123", "total": 1, "date": DATE}
    assert b"null" not in raw


def test_self_join_with_alias_and_users_list() -> None:
    users = [UserEntry(uid="abc123", alias="Alice", is_self=True), UserEntry(uid="def456")]
    decoded = _decoded(SelfJoinFrame(uid="abc123", alias="Alice", total=2, date=DATE, users=users))
    assert decoded == {
        "type": "join",
        "self": True,
        "uid": "abc123",
        "alias": "Alice",
        "total": 2,
        "date": DATE,
        "users": [{"uid": "abc123", "alias": "Alice", "self": True}, {"uid": "def456"}],
    }


def test_self_join_with_empty_users_list_keeps_it() -> None:
    assert _decoded(SelfJoinFrame(uid="abc123", total=1, date=DATE, users=[]))["users"] == []


def test_user_entry_omits_alias_and_self_when_absent() -> None:
    assert _decoded(UserEntry(uid="def456")) == {"uid": "def456"}
    assert _decoded(UserEntry(uid="def456", alias="Bob")) == {"uid": "def456", "alias": "Bob"}
    assert _decoded(UserEntry(uid="def456", is_self=True)) == {"uid": "def456", "self": True}


@pytest.mark.parametrize(("frame_type", "kind", "total"), [(JoinFrame, "join", 6), (LeaveFrame, "leave", 5)])
def test_join_and_leave_frames_anonymous_and_announced(frame_type: Any, kind: str, total: int) -> None:
    assert _decoded(frame_type(total=total, date=DATE)) == {"type": kind, "total": total, "date": DATE}
    assert _decoded(frame_type(uid="def456", alias="Bob", total=total, date=DATE)) == {
        "type": kind,
        "uid": "def456",
        "alias": "Bob",
        "total": total,
        "date": DATE,
    }
    assert _decoded(frame_type(uid="def456", total=total, date=DATE)) == {
        "type": kind,
        "uid": "def456",
        "total": total,
        "date": DATE,
    }


def test_others_join_and_leave_never_carry_self_or_users() -> None:
    for frame in (JoinFrame(uid="def456", total=2, date=DATE), LeaveFrame(uid="def456", total=1, date=DATE)):
        decoded = _decoded(frame)
        assert "self" not in decoded
        assert "users" not in decoded


def test_error_frame() -> None:
    assert _decoded(ErrorFrame(message="User zzzzzz not found.", date=DATE)) == {
        "type": "error",
        "message": "User zzzzzz not found.",
        "date": DATE,
    }


# -- parse_json -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"chat","text":"hi"}',
        "[1, 2, 3]",
        '"just a string"',
        "42",
        "-1.5e3",
        "true",
        "false",
        "null",
        "{}",
        '{"nested": {"deep": [{"a": null}]}}',
        '"h\\u00e9 \\ud83d\\ude00"',
        '"hé 😀"',
    ],
)
def test_parse_json_accepts_every_json_value(text: str) -> None:
    raw = parse_json(text)
    assert raw is not None
    assert bytes(raw) == text.encode()
    assert msgspec.json.decode(bytes(raw)) == json.loads(text)


@pytest.mark.parametrize("text", ['  {"a": 1}', '{"a": 1}\n', "\t\r\n [1] \n\t", " 7 "])
def test_parse_json_accepts_surrounding_whitespace(text: str) -> None:
    raw = parse_json(text)
    assert raw is not None
    assert msgspec.json.decode(bytes(raw)) == json.loads(text)


def test_parse_json_accepts_bytes() -> None:
    raw = parse_json(b'{"a":[1]}')
    assert raw is not None
    assert bytes(raw) == b'{"a":[1]}'


@pytest.mark.parametrize(
    "text",
    [
        "undefined",
        "",
        "   ",
        '{"a":',
        '{"a": 1',
        "[1, 2",
        '"unterminated',
        "{} {}",
        '{"a": 1} x',
        "1 2",
        "[1,]",
        "{'a': 1}",
        "NaN",
        "nul",
        "hello",
    ],
)
def test_parse_json_rejects_what_is_not_one_json_value(text: str) -> None:
    assert parse_json(text) is None


def test_parse_json_rejects_invalid_utf8_bytes() -> None:
    assert parse_json(b'"\xff"') is None


# -- text_frame -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "header"),
    [
        (0, b"\x81\x00"),
        (1, b"\x81\x01"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f" + struct.pack("!Q", 65536)),
    ],
)
def test_text_frame_header_for_each_length_class(length: int, header: bytes) -> None:
    payload = bytes((i * 7) % 251 for i in range(length))
    frame = text_frame(payload)
    assert frame[: len(header)] == header
    assert frame[len(header) :] == payload
    assert len(frame) == len(header) + length
