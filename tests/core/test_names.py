"""Channel names, connection options and reserved namespaces."""

from __future__ import annotations

import pytest

from relaycore import HTTPError, JoinOptions, NamespaceTable, parse_channel, parse_options

# -- channels ---------------------------------------------------------------------------


def test_channel_is_percent_decoded() -> None:
    assert parse_channel(b"room%3A1") == "room:1"
    assert parse_channel(b"room%3a1") == "room:1"
    assert parse_channel(b"my%20room") == "my room"


def test_channel_keeps_slashes_and_colons() -> None:
    assert parse_channel(b"myapp/private:room/a") == "myapp/private:room/a"


def test_channel_is_case_sensitive_and_keeps_plus() -> None:
    assert parse_channel(b"Room+A") == "Room+A"


def test_channel_of_256_bytes_is_accepted() -> None:
    assert parse_channel(b"a" * 256) == "a" * 256


def test_channel_of_257_bytes_is_refused_with_400() -> None:
    with pytest.raises(HTTPError) as info:
        parse_channel(b"a" * 257)
    assert info.value.status == 400


def test_channel_length_is_counted_after_decoding() -> None:
    # 256 bytes once decoded, 768 characters of path before.
    assert parse_channel(b"%61" * 256) == "a" * 256
    with pytest.raises(HTTPError) as info:
        parse_channel(b"%61" * 257)
    assert info.value.status == 400


def test_empty_channel_is_refused_with_400() -> None:
    with pytest.raises(HTTPError) as info:
        parse_channel(b"")
    assert info.value.status == 400


@pytest.mark.parametrize("raw", [b"%FF", b"room%C3", b"\xff\xfe", b"a%80b"])
def test_channel_that_is_not_utf8_is_refused_with_400(raw: bytes) -> None:
    with pytest.raises(HTTPError) as info:
        parse_channel(raw)
    assert info.value.status == 400


def test_multibyte_channel_is_counted_in_bytes() -> None:
    e_acute = b"%C3%A9"  # one character, two bytes
    assert parse_channel(e_acute * 128) == "é" * 128
    with pytest.raises(HTTPError) as info:
        parse_channel(e_acute * 129)  # 129 characters but 258 bytes
    assert info.value.status == 400
    assert parse_channel("😀".encode() * 64) == "😀" * 64  # 256 bytes
    with pytest.raises(HTTPError):
        parse_channel("😀".encode() * 64 + b"a")


# -- options -------------------------------------------------------------------------------


def test_no_query_gives_every_option_off() -> None:
    assert parse_options(b"") == JoinOptions(
        alias=None, announce=False, echo=False, list=False, join_key=None, send_key=None
    )


@pytest.mark.parametrize("query", [b"echo=true", b"echo=1", b"echo", b"echo="])
def test_flag_is_on_for_true_one_or_empty(query: bytes) -> None:
    assert parse_options(query).echo is True


@pytest.mark.parametrize("query", [b"echo=false", b"echo=0", b"", b"other=1"])
def test_flag_is_off_for_false_zero_or_absent(query: bytes) -> None:
    assert parse_options(query).echo is False


def test_each_flag_is_read_from_its_own_key() -> None:
    assert parse_options(b"announce") == JoinOptions(announce=True)
    assert parse_options(b"list=1") == JoinOptions(list=True)
    assert parse_options(b"echo=true&announce=0&list") == JoinOptions(echo=True, list=True)


def test_alias_from_as() -> None:
    assert parse_options(b"as=Bob").alias == "Bob"


@pytest.mark.parametrize("query", [b"as=A&alias=B", b"alias=B&as=A"])
def test_alias_wins_over_as(query: bytes) -> None:
    assert parse_options(query).alias == "B"


def test_alias_of_64_characters_is_accepted() -> None:
    assert parse_options(b"alias=" + b"x" * 64).alias == "x" * 64


def test_alias_of_65_characters_is_refused_with_400() -> None:
    with pytest.raises(HTTPError) as info:
        parse_options(b"alias=" + b"x" * 65)
    assert info.value.status == 400


def test_alias_given_as_as_is_limited_too() -> None:
    with pytest.raises(HTTPError) as info:
        parse_options(b"as=" + b"x" * 65)
    assert info.value.status == 400


def test_alias_limit_counts_characters_not_bytes() -> None:
    assert parse_options(b"alias=" + b"%C3%A9" * 64).alias == "é" * 64
    with pytest.raises(HTTPError):
        parse_options(b"alias=" + b"%C3%A9" * 65)


def test_plus_is_a_space_and_percent_escapes_are_decoded() -> None:
    assert parse_options(b"alias=Bob+Smith").alias == "Bob Smith"
    assert parse_options(b"alias=a%2Bb%26c%3Dd").alias == "a+b&c=d"


def test_join_and_send_keys() -> None:
    options = parse_options(b"joinKey=j%20k&sendKey=s+k")
    assert options.join_key == "j k"
    assert options.send_key == "s k"


def test_keys_are_case_sensitive_option_names() -> None:
    options = parse_options(b"joinkey=j&SENDKEY=s&Alias=x")
    assert options == JoinOptions()


def test_unknown_options_are_ignored() -> None:
    assert parse_options(b"foo=bar&baz&alias=A") == JoinOptions(alias="A")


def test_query_that_is_not_utf8_is_refused_with_400() -> None:
    with pytest.raises(HTTPError) as info:
        parse_options(b"alias=%FF")
    assert info.value.status == 400


# -- namespaces ---------------------------------------------------------------------------------

TABLE = NamespaceTable(["myapp", "myapp/private", "team:a"])


@pytest.mark.parametrize(
    ("channel", "expected"),
    [
        ("myapp", "myapp"),
        ("myapp/private", "myapp/private"),
        ("team:a", "team:a"),
        ("myapp:room", "myapp"),
        ("myapp/room", "myapp"),
        ("myapp/private:room", "myapp/private"),
        ("myapp/private/room", "myapp/private"),
        ("myapp/private/a:b/c", "myapp/private"),
        ("myapp/privateer", "myapp"),
        ("myapp/privateer:x", "myapp"),
        ("myapp:private", "myapp"),
        ("team:a/x", "team:a"),
        ("team:ab", None),
        ("team", None),
        ("myapps", None),
        ("myapps:x", None),
        ("myappx/private", None),
        ("xmyapp:1", None),
        ("Myapp:1", None),
        ("my", None),
        (":myapp", None),
        ("/myapp", None),
        ("other", None),
    ],
)
def test_longest_namespace_on_a_boundary_wins(channel: str, expected: str | None) -> None:
    assert TABLE.lookup(channel) == expected


def test_namespace_needs_a_boundary_right_after_it() -> None:
    table = NamespaceTable(["myapp/private"])
    assert table.lookup("myapp/privateer") is None
    assert table.lookup("myapp") is None
    assert table.lookup("myapp/private:x") == "myapp/private"


def test_empty_table_matches_nothing() -> None:
    assert NamespaceTable([]).lookup("myapp:x") is None
