"""The core stays sans-I/O: no event loop, socket, thread or transport imports.

ARCHITECTURE.md: ``relaycore`` never imports ``transports``, ``anyio``, ``asyncio``,
``trio``, ``socket`` or ``selectors`` (nor threads: the core never blocks or waits).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import relaycore

FORBIDDEN = frozenset({"anyio", "asyncio", "trio", "socket", "selectors", "threading", "transports"})
CORE = Path(relaycore.__file__).resolve().parent
MODULES = sorted(CORE.rglob("*.py"))


def forbidden_imports(source: str, filename: str) -> list[str]:
    """Every forbidden top-level package imported anywhere in ``source`` (any nesting)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr) in ("__import__", "import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        line = getattr(node, "lineno", 0)
        found += [f"{filename}:{line}: {name}" for name in names if name.split(".")[0] in FORBIDDEN]
    return found


def test_the_core_package_has_modules_to_check() -> None:
    assert CORE.name == "relaycore"
    assert {p.name for p in MODULES} >= {"__init__.py", "_hub.py", "_connection.py", "_wire.py", "testing.py"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_core_module_imports_no_io_library(path: Path) -> None:
    assert forbidden_imports(path.read_text(encoding="utf-8"), path.name) == []


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "import socket as s",
        "from anyio import sleep",
        "from transports.server import RelayServer",
        "import trio.lowlevel",
        "def f():\n    import threading",
        "try:\n    import selectors\nexcept ImportError:\n    pass",
        "import importlib\nimportlib.import_module('asyncio')",
        "__import__('socket')",
    ],
)
def test_the_import_check_catches_every_form(source: str) -> None:
    assert forbidden_imports(source, "example.py") != []


def test_the_import_check_allows_the_core_dependencies() -> None:
    source = "import msgspec\nimport h11\nfrom wsproto.events import Ping\nfrom . import _hub\nimport hmac"
    assert forbidden_imports(source, "example.py") == []


def test_importing_relaycore_loads_no_event_loop_library() -> None:
    code = (
        "import sys, relaycore, relaycore.testing\n"
        "bad = sorted(m for m in ('anyio', 'asyncio', 'trio', 'transports') if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
