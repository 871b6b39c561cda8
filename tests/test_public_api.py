"""The public names and paths users and other tools rely on: a move inside the packages must
keep every one of them working (each is documented in docs/ or README.md).

Adding a name is fine; removing or renaming one fails here, on purpose.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

#: module -> the names of its ``__all__`` that are promised (at least these).
PUBLIC = {
    "relaycore": [
        "DROP_REASONS", "SCRIPTS", "Answer", "Backplane", "Call", "Channel", "ClientSession", "Clock",
        "ClusterConfig", "ClusterHub", "Config", "ConfigError", "Connection", "Counters", "HTTPError", "Headers",
        "Hub", "JoinOptions", "JoinRequest", "JoiningSession", "LimitsConfig", "LocalBackplane", "Member",
        "MessageOutbox", "MetricsConfig", "NamespaceConfig", "NamespaceTable", "Outbox", "PushWaiter",
        "RelayError", "RelayUsageError", "RelayValueError", "Routes", "ServerConfig", "UNIX_PEER", "Session",
        "SessionTransport", "State", "Tally", "UidSource",
        "Door", "FormOutbox", "WireForm", "WEBSOCKET", "MESSAGES", "SSE", "NDJSON", "Stream", "HTTPConfig",
        "Hooks", "JoinAttempt", "Admit", "Refuse", "Roster",
        "__version__", "channel_keys", "parse_channel", "parse_json", "parse_options", "text_frame",
    ],
    "relaycore.testing": [
        "DeferredBackplane", "FakeClock", "HTTPAnswer", "Harness", "VirtualClient", "VirtualMember",
        "config_for_tests", "seeded_uids",
    ],
    "relaycore.texts": [
        "BINARY_UNSUPPORTED", "INVALID_JSON", "INVALID_JSON_BODY", "JOIN_KEY_REQUIRED", "SEND_KEY_REQUIRED",
        "user_not_found",
    ],
    "transports.asgi": ["RelayApp", "app", "create_app"],
    "transports.server": ["RelayServer"],
    "transports.client": [
        "ArgumentError", "Channel", "ChannelClosed", "ChannelState", "ClientError", "Close", "Error", "Event", "Join",
        "Leave", "Message", "ProtocolError", "Reconnect", "Refused", "UsageError", "User", "connect", "http_push",
        "push",
    ],
    "transports.check": [
        "CHECKS", "Check", "Failed", "Result", "Settings", "Skipped", "add_arguments", "format_json",
        "format_table", "main", "run", "run_checks",
    ],
    "transports.metrics": ["CONTENT_TYPE", "Metrics", "RelayCollector"],
    "transports.plugins": ["GROUP", "DoorFactory", "PluggedDoor", "installed_doors", "load_doors"],
}  # fmt: skip

#: Attributes reached by dotted path in users' configuration and code (not always in __all__).
PATHS = [
    "transports.redis_backplane.RedisBackplane",
    "transports.logs.JSONFormatter",  # a string in users' logging configs (uvicorn --log-config)
    "transports.pytest_plugin.relay_server",
    "transports.pytest_plugin.relay_harness",
    "transports.pytest_plugin.relay_config",
]

#: The console script's subcommands and the flags of each.
COMMANDS = {
    "serve": ["--backend", "--certfile", "--config", "--host", "--keyfile", "--node-id", "--port", "--redis",
              "--static", "--uds", "--workers"],
    "listen": ["--alias", "--announce", "--backend", "--join-key", "--send-key"],
    "send": ["--alias", "--announce", "--backend", "--join-key", "--send-key", "--to"],
    "push": ["--send-key"],
    "check": ["--join-key", "--json", "--list", "--namespace", "--only", "--prefix", "--send-key", "--skip-config",
              "--timeout"],
}  # fmt: skip

#: Logger names users filter on (docs/operations.md).
LOGGERS = {"relaycore", "relaycore.asgi", "relaycore.cluster", "relaycore.server"}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_every_promised_name_is_exported_and_importable(module: str) -> None:
    loaded = importlib.import_module(module)
    exported = set(getattr(loaded, "__all__", ()))
    missing = [name for name in PUBLIC[module] if name not in exported]
    assert not missing, f"{module}.__all__ lacks {missing}"
    for name in exported:
        assert hasattr(loaded, name), f"{module}.__all__ names {name}, which it does not have"


@pytest.mark.parametrize("path", PATHS)
def test_every_documented_path_resolves(path: str) -> None:
    module, _, name = path.rpartition(".")
    assert hasattr(importlib.import_module(module), name), path


def test_the_asgi_app_path_is_an_asgi_callable() -> None:
    from transports.asgi import app

    assert callable(app)


def test_the_entry_points_are_declared() -> None:
    distribution = importlib.metadata.distribution("relaycore")
    points = {(point.group, point.name): point.value for point in distribution.entry_points}
    assert points[("console_scripts", "relaycore")] == "transports.cli:main"
    assert points[("pytest11", "relaycore")] == "transports.pytest_plugin"


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    from transports.cli import build_parser

    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("the relaycore command has no subcommands")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_keeps_its_flags(command: str) -> None:
    parser = _subcommands()[command]
    flags = {flag for action in parser._actions for flag in action.option_strings}
    missing = [flag for flag in COMMANDS[command] if flag not in flags]
    assert not missing, f"relaycore {command} lacks {missing}"


def test_the_checker_runs_as_a_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "transports.check", "--list"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "9.close-1000" in result.stdout


def test_the_logger_names_are_the_documented_ones() -> None:
    """Every module logs under one of the documented names (a rename would orphan users' filters),
    and each documented name is still used."""
    import transports

    used = set()
    for found in pkgutil.walk_packages(transports.__path__, "transports."):
        if found.name.rpartition(".")[2] == "__main__":
            continue  # running it is the command itself
        module = importlib.import_module(found.name)
        logger = getattr(module, "log", None)
        if isinstance(logger, logging.Logger):
            assert logger.name in LOGGERS, f"{module.__name__} logs as {logger.name!r}"
            used.add(logger.name)
    assert used == LOGGERS


def test_one_error_family_in_the_core_and_one_in_the_client() -> None:
    import relaycore
    import transports.client as client

    for name in ("ConfigError", "HTTPError", "RelayUsageError", "RelayValueError"):
        assert issubclass(getattr(relaycore, name), relaycore.RelayError), name
    assert issubclass(relaycore.ConfigError, ValueError) and issubclass(relaycore.RelayValueError, ValueError)
    for name in ("ArgumentError", "ChannelClosed", "ProtocolError", "Refused", "UsageError"):
        assert issubclass(getattr(client, name), client.ClientError), name
    assert issubclass(client.ArgumentError, ValueError)
