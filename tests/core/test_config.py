"""Configuration: defaults, TOML, environment overrides and validation errors."""

from __future__ import annotations

import pytest

from relaycore import Config, ConfigError, LimitsConfig, NamespaceConfig, ServerConfig


def test_defaults_match_the_documented_limits() -> None:
    cfg = Config()
    assert cfg.limits.max_message_bytes == 100 * 1024
    assert cfg.limits.messages_per_second == 100
    assert cfg.limits.messages_burst == 200
    assert cfg.limits.connections_per_second_per_ip == 10
    assert cfg.limits.outbound_buffer_bytes == 1024 * 1024
    assert cfg.limits.ping_interval == 30
    assert cfg.limits.ping_timeout == 30
    assert cfg.server.trusted_proxies == []
    assert cfg.namespaces == {}


def test_empty_toml_and_environment_give_the_defaults() -> None:
    assert Config.from_toml(b"", env={}) == Config()
    assert Config.from_toml("", env=None) == Config()


def test_toml_sections_set_values() -> None:
    cfg = Config.from_toml(
        b"""
[server]
host = "0.0.0.0"
port = 9000
trusted_proxies = ["10.0.0.1"]

[limits]
max_message_bytes = 4096
messages_per_second = 5.5
outbound_buffer_bytes = 65536
""",
        env={},
    )
    assert cfg.server == ServerConfig(host="0.0.0.0", port=9000, trusted_proxies=["10.0.0.1"])
    assert cfg.limits.max_message_bytes == 4096
    assert cfg.limits.messages_per_second == 5.5
    assert cfg.limits.outbound_buffer_bytes == 65536
    assert cfg.limits.messages_burst == 200  # untouched keys keep their default


def test_toml_text_may_be_str() -> None:
    assert Config.from_toml("[server]\nport = 1234\n", env={}).server.port == 1234


def test_namespaces_table() -> None:
    cfg = Config.from_toml(
        b"""
[namespaces."myapp"]
join_key = "j"
send_key = "s"

[namespaces."myapp/private"]
send_key = "p"

[namespaces."open"]
""",
        env={},
    )
    assert cfg.namespaces == {
        "myapp": NamespaceConfig(join_key="j", send_key="s"),
        "myapp/private": NamespaceConfig(send_key="p"),
        "open": NamespaceConfig(),
    }
    assert cfg.namespaces["open"].join_key is None
    assert cfg.namespaces["open"].send_key is None


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        (b"[limits]\nmax_msg_bytes = 10\n", "max_msg_bytes"),
        (b"[server]\nhostname = 'x'\n", "hostname"),
        (b"[limitz]\nmax_message_bytes = 10\n", "limitz"),
        (b"[namespaces.'a']\nsendkey = 's'\n", "sendkey"),
        (b"verbose = true\n", "verbose"),
    ],
)
def test_unknown_key_is_an_error_naming_the_key(toml: bytes, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_toml(toml, env={})
    assert key in str(info.value)


#: A value of the wrong type, and the key its error must name.
WRONG_TYPES = {
    b"[server]\nport = 'eighty'\n": "port",
    b"[limits]\nmax_message_bytes = 'big'\n": "max_message_bytes",
    b"[server]\ntrusted_proxies = 5\n": "trusted_proxies",
    b"[namespaces.'a']\nsend_key = 5\n": "send_key",
    b"limits = 5\n": "limits",
}


@pytest.mark.parametrize(("toml", "key"), WRONG_TYPES.items())
def test_wrong_type_is_an_error_naming_the_key(toml: bytes, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_toml(toml, env={})
    assert key in str(info.value)


@pytest.mark.parametrize(
    "key",
    ["max_message_bytes", "messages_per_second", "messages_burst", "outbound_buffer_bytes", "ping_interval"],
)
@pytest.mark.parametrize("value", ["0", "-1"])
def test_non_positive_limit_is_an_error_naming_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_toml(f"[limits]\n{key} = {value}\n", env={})
    assert key in str(info.value)


def test_the_socket_send_buffer_may_be_0_but_not_negative() -> None:
    assert Config().limits.socket_send_buffer_bytes == 128 * 1024
    cfg = Config.from_toml(b"", env={"RELAYCORE_LIMITS_SOCKET_SEND_BUFFER_BYTES": "0"})
    assert cfg.limits.socket_send_buffer_bytes == 0  # the system's own
    with pytest.raises(ConfigError, match="socket_send_buffer_bytes"):
        Config.from_toml(b"[limits]\nsocket_send_buffer_bytes = -1\n", env={})


def test_port_out_of_range_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_toml(b"[server]\nport = 70000\n", env={})
    assert "port" in str(info.value)


def test_invalid_toml_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        Config.from_toml(b"[limits\nmax_message_bytes = 1", env={})


def test_direct_construction_validates_limits_too() -> None:
    with pytest.raises(ValueError, match="max_message_bytes"):
        Config(limits=LimitsConfig(max_message_bytes=0))


# -- environment --------------------------------------------------------------------------


def test_env_overrides_the_message_size_limit() -> None:
    cfg = Config.from_toml(b"[limits]\nmax_message_bytes = 4096\n", env={"RELAYCORE_LIMITS_MAX_MESSAGE_BYTES": "2048"})
    assert cfg.limits.max_message_bytes == 2048


def test_env_overrides_the_port_without_toml() -> None:
    assert Config.from_toml(b"", env={"RELAYCORE_SERVER_PORT": "9999"}).server.port == 9999


def test_env_override_keeps_other_toml_keys_of_the_section() -> None:
    cfg = Config.from_toml(b"[server]\nhost = '0.0.0.0'\nport = 1\n", env={"RELAYCORE_SERVER_PORT": "2"})
    assert cfg.server.host == "0.0.0.0"
    assert cfg.server.port == 2


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("false", False), ("TRUE", True), (" False ", False)])
def test_env_booleans(value: str, expected: bool) -> None:
    toml = f"[server]\necho_endpoint = {str(not expected).lower()}\n"  # the environment overrides it
    cfg = Config.from_toml(toml, env={"RELAYCORE_SERVER_ECHO_ENDPOINT": value})
    assert cfg.server.echo_endpoint is expected


def test_env_float_setting() -> None:
    assert Config.from_toml(b"", env={"RELAYCORE_LIMITS_PING_INTERVAL": "2.5"}).limits.ping_interval == 2.5


def test_env_trusted_proxies_are_comma_separated() -> None:
    cfg = Config.from_toml(b"", env={"RELAYCORE_SERVER_TRUSTED_PROXIES": "10.0.0.1, 10.0.0.2,,"})
    assert cfg.server.trusted_proxies == ["10.0.0.1", "10.0.0.2"]


def test_unknown_env_setting_is_an_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_toml(b"", env={"RELAYCORE_LIMITS_MAX_MESSAGE_SIZE": "10"})
    assert "RELAYCORE_LIMITS_MAX_MESSAGE_SIZE" in str(info.value)


def test_env_value_of_the_wrong_type_is_an_error_naming_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_toml(b"", env={"RELAYCORE_SERVER_PORT": "eighty"})
    assert "port" in str(info.value)


def test_env_non_positive_limit_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_toml(b"", env={"RELAYCORE_LIMITS_OUTBOUND_BUFFER_BYTES": "0"})
    assert "outbound_buffer_bytes" in str(info.value)


def test_unrelated_environment_variables_are_ignored() -> None:
    assert Config.from_toml(b"", env={"HOME": "/root", "PATH": "/bin", "RELAYCOREX": "1"}) == Config()
