"""relaycore._errors: one family under RelayError, in the two kinds h11 and wsproto keep apart
(the caller misused the API; the peer's request is refused), plus the configuration's.

The classes keep the builtin bases callers already catch (a bad value is a ``ValueError``);
and the core raises them where it says it does.
"""

from __future__ import annotations

import pytest

import relaycore
from relaycore import ConfigError, HTTPError, RelayError, RelayUsageError, RelayValueError
from relaycore.testing import FakeClock, Harness


def test_every_error_relaycore_exports_is_of_the_family() -> None:
    errors = [value for value in map(relaycore.__dict__.get, relaycore.__all__) if isinstance(value, type)]
    errors = [kind for kind in errors if issubclass(kind, BaseException)]
    assert {kind.__name__ for kind in errors} >= {"ConfigError", "HTTPError", "RelayUsageError", "RelayValueError"}
    assert all(issubclass(kind, RelayError) for kind in errors), errors


@pytest.mark.parametrize(
    ("kind", "bases"),
    [
        (RelayUsageError, (RelayError, RuntimeError)),
        (RelayValueError, (RelayUsageError, ValueError)),
        (ConfigError, (RelayError, ValueError)),
        (HTTPError, (RelayError,)),
    ],
)
def test_each_error_is_also_what_callers_already_catch(kind: type[Exception], bases: tuple[type, ...]) -> None:
    assert all(issubclass(kind, base) for base in bases)


def test_an_http_error_carries_its_status_message_and_headers() -> None:
    plain = HTTPError(404, "Not found.")
    assert (plain.status, plain.message, plain.headers, str(plain)) == (404, "Not found.", [], "Not found.")
    limited = HTTPError(429, "Too many pushes; slow down.", [(b"retry-after", b"1")])
    assert limited.headers == [(b"retry-after", b"1")]


def test_a_bad_configuration_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ValueError, match="max_message_bytes") as raised:
        relaycore.Config.from_toml(b"[limits]\nmax_message_bytes = 'big'\n", env={})
    assert isinstance(raised.value, ConfigError)


def test_a_value_the_api_cannot_take_is_a_relay_value_error() -> None:
    with pytest.raises(RelayValueError, match="time only moves forward"):
        Harness().advance(-1.0)
    with pytest.raises(ValueError):
        FakeClock().advance(-1.0)


def test_a_refused_request_is_an_http_error_and_misuse_a_usage_error() -> None:
    relay = Harness()
    with pytest.raises(HTTPError) as refused:
        relay.join("/c/")
    assert refused.value.status == 400
    member = relay.join("room")
    member.drop()
    with pytest.raises(RelayUsageError, match="is closed"):
        member.send({"late": True})
