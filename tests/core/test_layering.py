"""The core stays sans-I/O: no event loop, socket, thread or transport imports.

ARCHITECTURE.md: ``relaycore`` never imports ``transports``, ``anyio``, ``asyncio``,
``trio``, ``socket`` or ``selectors`` (nor threads: the core never blocks or waits).
"""

from __future__ import annotations

import ast
import re
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
    expected = {"__init__.py", "_hub.py", "_session.py", "_connection.py", "_wire.py", "testing.py"}
    assert {p.name for p in MODULES} >= expected


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


# -- one rule, one place ------------------------------------------------------------------

SOURCES = sorted((CORE.parent).rglob("*.py"))  # relaycore and transports
PROTOCOL_DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def _code_patterns(source: str) -> list[re.Pattern[str]]:
    """Every string literal of ``source`` but docstrings, as a pattern (an f-string's
    replacement fields match anything)."""
    tree = ast.parse(source)
    skip = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    patterns = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts, literal = [], 0
            for value in node.values:
                skip.add(id(value))
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    parts.append(re.escape(value.value))
                    literal += len(value.value.strip())
                else:
                    parts.append(".+?")
            if literal >= 6:  # `f"{phrase}."` says nothing of its own
                patterns.append(re.compile("".join(parts), re.DOTALL))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            patterns.append(re.compile(re.escape(node.value), re.DOTALL))
        elif isinstance(node, ast.Constant) and isinstance(node.value, bytes):  # b"Method not allowed."
            patterns.append(re.compile(re.escape(node.value.decode("latin-1")), re.DOTALL))
    return patterns


def _protocol_texts() -> list[str]:
    """The error and refusal texts docs/protocol.md promises (backticked sentences in its tables)."""
    texts = []
    for line in PROTOCOL_DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("|"):
            for quoted in line.split("`")[1::2]:
                text = quoted.split('"error":"')[-1].rstrip('"}')
                if text[:1].isupper() and text.endswith(".") and " " in text:
                    texts.append(text)
    return sorted(set(texts))


def test_protocol_doc_lists_the_texts() -> None:
    texts = _protocol_texts()
    assert "Invalid JSON message." in texts and "Too many pushes; slow down." in texts and len(texts) > 15


@pytest.mark.parametrize("text", _protocol_texts())
def test_each_protocol_text_is_written_once_in_src(text: str) -> None:
    """ARCHITECTURE.md: each decision is made once; so each text the clients see is written
    once in src/ (relaycore and transports), and every front door gets it from there."""
    sample = re.sub(r"<[^>]*>", "x", text)  # `User <uid> not found.` -> `User x not found.`
    where = [
        f"{path.name}: {pattern.pattern}"
        for path in SOURCES
        for pattern in _code_patterns(path.read_text(encoding="utf-8"))
        if pattern.fullmatch(sample)
    ]
    assert len(where) == 1, f"{text!r} is written {len(where)} times in src/: {where}"


# -- module order ------------------------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    """The relaycore modules ``path`` imports, TYPE_CHECKING imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("relaycore."):
            found.add(node.module.split(".")[1])  # type: ignore[union-attr]
    return found


def test_relaycore_modules_import_in_one_order() -> None:
    """No import circle in the core, not even one for type checking: each module can be
    read after the ones it uses (the order below is the one the modules stand in)."""
    graph = {path.stem: _imports(path) & {p.stem for p in CORE.glob("*.py")} for path in CORE.glob("*.py")}
    order: list[str] = []
    while graph:
        ready = sorted(name for name, uses in graph.items() if uses <= set(order))
        assert ready, f"an import circle among {sorted(graph)}: {[(n, sorted(u)) for n, u in graph.items()]}"
        order += ready
        for name in ready:
            del graph[name]
    assert order.index("_texts") < order.index("_hub") < order.index("_cluster")


def test_no_module_imports_the_private_names_of_another_package() -> None:
    """ARCHITECTURE.md: public API through each package's ``__init__``; a private module or
    name is its own package's business (tests aside)."""
    offences = []
    for path in SOURCES:
        package = path.relative_to(CORE.parent).parts[0]
        inside = ".".join(path.relative_to(CORE.parent).with_suffix("").parts[:-1])
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            parts = node.module.split(".")
            private = [part for part in parts[1:] if part.startswith("_")]
            owner = ".".join(parts[: parts.index(private[0])]) if private else node.module
            if private and not (inside == owner or inside.startswith(owner + ".")):
                offences.append(f"{path.relative_to(CORE.parent)} imports {node.module}")
            names = [alias.name for alias in node.names if alias.name.startswith("_") and alias.name != "__version__"]
            if names and parts[0] != package:
                offences.append(f"{path.relative_to(CORE.parent)} imports {names} from {node.module}")
    assert not offences, offences


def test_each_close_code_is_written_once_in_src() -> None:
    """The close codes a client meets (1001-1015; 1000 is too common a number to search for)
    are named once, in relaycore._texts, and used by name everywhere else."""
    where = [
        f"{path.relative_to(CORE.parent)}:{node.lineno}: {node.value}"
        for path in SOURCES
        if path.name != "_texts.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and type(node.value) is int and 1001 <= node.value <= 1015
    ]
    assert not where, f"close codes written as numbers: {where}"
