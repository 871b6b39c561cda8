"""Every module src/ imports is declared in pyproject.toml: the fast, static half of the
install check (tests/install runs the doors in fresh environments; this reads the source).

The test environment has everything (``.[test]``), so an import of a package that no
declared dependency provides passes every other test and breaks only a user's plain
install (``transports/asgi.py`` once imported ``sniffio``). The rule, per import found by
``ast`` in ``src/``:

- an import that runs when its module is loaded (top level of the module, or of a class
  body; not under ``if TYPE_CHECKING:``, not inside ``try: ... except ImportError``) in a
  module that a plain install loads must be the standard library, the project's own
  packages, or a distribution of ``[project] dependencies``;
- any other import (inside a function, guarded by ``except ImportError``, or anywhere in
  one of the OPTIONAL_MODULES) may also come from a *feature* extra (``trio``, ``redis``,
  ``metrics``): not from the extras of the project's own tooling (TOOLING_EXTRAS), which
  no user installs to get a feature;
- imports under ``if TYPE_CHECKING:`` never run and are not checked.

Which modules a plain install loads: all of them, but those in OPTIONAL_MODULES, which are
loaded only by the feature they serve; a second test checks that no other module imports
one of them when it is loaded, so the table cannot hide an eager import. Distribution names
are mapped to the names they are imported by with ``importlib.metadata`` (the test
environment has every extra installed), e.g. ``prometheus-client`` -> ``prometheus_client``.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement  # pytest's own dependency

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
OWN_PACKAGES = frozenset(path.name for path in SRC.iterdir() if (path / "__init__.py").is_file())

#: Extras of the project's own tooling (tests, docs, benchmarks, development): a module of
#: src/ may not rely on one of them, since installing relaycore for a feature never brings them.
TOOLING_EXTRAS = frozenset({"test", "docs", "bench", "dev"})

#: Modules loaded only by the feature they serve (dotted name: why, and the modules they may
#: import beyond the dependencies and the feature extras).
OPTIONAL_MODULES: dict[str, tuple[str, frozenset[str]]] = {
    # The pytest11 entry point: only pytest loads it, so pytest is there whenever it is.
    "transports.pytest_plugin": ("loaded by pytest only (the pytest11 entry point)", frozenset({"pytest"})),
    # The Redis backplane: imported by transports._door inside the functions that build a
    # cluster node, once `relaycore serve --redis` (or [cluster] redis_url) asks for one.
    "transports.redis_backplane": ("loaded for a cluster only (the redis extra)", frozenset()),
}

#: Modules that may import more, wherever they are loaded, and why.
EXTRA_ALLOWED: dict[str, frozenset[str]] = {
    # The in-memory harness for users' tests; allowed pytest, should it ever import it.
    "relaycore.testing": frozenset({"pytest"}),
}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    path: Path
    line: int
    target: str  # the imported module, dotted and absolute
    eager: bool  # runs when the importing module is loaded


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    names = {kind.id if isinstance(kind, ast.Name) else getattr(kind, "attr", None) for kind in kinds if kind}
    return bool(names & {"ImportError", "ModuleNotFoundError"})


def _resolve(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The absolute dotted names ``node`` imports (for ``from X import a``: ``X.a`` if that is
    one of our own modules, else ``X``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level == 0:
        base = node.module or ""
    else:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, *([node.module] if node.module else [])])
    names = []
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        relative = Path(*candidate.split("."))
        if (SRC / relative).with_suffix(".py").is_file() or (SRC / relative / "__init__.py").is_file():
            names.append(candidate)
        else:
            names.append(base)
    return names


def imports_of(path: Path, module: str | None = None) -> list[Import]:
    """Every import of one source file (module ``module``, by default the one ``path`` is in
    src/), with whether it runs when the module is loaded."""
    module = module or module_name(path)
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def visit(node: ast.AST, eager: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.extend(Import(module, path, node.lineno, name, eager) for name in _resolve(module, is_package, node))
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for statement in node.orelse:  # the body never runs
                visit(statement, eager)
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            for child in ast.iter_child_nodes(node):
                visit(child, False)
            return
        if isinstance(node, ast.Try) and any(_catches_import_error(handler) for handler in node.handlers):
            for statement in node.body:
                visit(statement, False)
            for part in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(part, eager)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, eager)

    visit(ast.parse(path.read_text(), str(path)), True)
    return found


def all_imports() -> list[Import]:
    return [found for path in sorted(SRC.rglob("*.py")) for found in imports_of(path)]


@functools.cache
def _installed() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _import_names(distribution: str) -> set[str]:
    """The top-level names a distribution is imported by, from its installed metadata."""
    wanted = _canonical(distribution)
    names = {
        name
        for name, distributions in _installed().items()
        if any(_canonical(found) == wanted for found in distributions)
    }
    if not names:
        pytest.fail(
            f"{distribution} is declared but not installed here, so the names it is imported by are unknown: "
            "run the tests in an environment with '.[test]'"
        )
    return names


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> tuple[set[str], set[str]]:
    """The import names of ``[project] dependencies``, and of the feature extras."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    dependencies = {name for text in project["dependencies"] for name in _import_names(Requirement(text).name)}
    features = {
        name
        for extra, requirements in project.get("optional-dependencies", {}).items()
        if extra not in TOOLING_EXTRAS
        for text in requirements
        if _canonical(Requirement(text).name) != "relaycore"
        for name in _import_names(Requirement(text).name)
    }
    return dependencies, features


def shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def undeclared(imports: list[Import], dependencies: set[str], features: set[str]) -> list[str]:
    """Each import the rule above does not allow, as ``path:line: module imports X (why)``."""
    allowed_anywhere = set(sys.stdlib_module_names) | OWN_PACKAGES | dependencies
    problems = []
    for found in imports:
        top = found.target.split(".")[0]
        optional = found.module in OPTIONAL_MODULES
        allowed = allowed_anywhere | EXTRA_ALLOWED.get(found.module, frozenset())
        if optional:
            allowed = allowed | features | OPTIONAL_MODULES[found.module][1]
        elif not found.eager:
            allowed = allowed | features
        if top in allowed:
            continue
        where = f"{shown(found.path)}:{found.line}"
        if found.eager and not optional:
            why = "loaded by a plain install: it must be in [project] dependencies"
        else:
            why = "imported lazily, guarded or for a feature: it must be in [project] dependencies or a feature extra"
        problems.append(f"{where}: {found.module} imports {top} ({why})")
    return problems


def test_every_import_is_declared() -> None:
    dependencies, features = declared()
    problems = undeclared(all_imports(), dependencies, features)
    assert not problems, "imports that a user's install may not have:\n" + "\n".join(problems)


def test_optional_modules_are_loaded_only_for_their_feature() -> None:
    """No module a plain install loads imports an optional module when it is loaded."""
    eager = [
        f"{shown(found.path)}:{found.line}: {found.module} imports {found.target} when loaded"
        for found in all_imports()
        if found.eager
        and found.module not in OPTIONAL_MODULES
        and any(found.target == name or found.target.startswith(name + ".") for name in OPTIONAL_MODULES)
    ]
    assert not eager, "an optional module is loaded by a plain install:\n" + "\n".join(eager)
    sources = {module_name(path) for path in SRC.rglob("*.py")}
    assert set(OPTIONAL_MODULES) <= sources, (
        f"OPTIONAL_MODULES names modules that are gone: {set(OPTIONAL_MODULES) - sources}"
    )


def test_the_rule_catches_an_undeclared_import(tmp_path: Path) -> None:
    """The checker itself: sniffio (no declared distribution provides it) imported eagerly, or
    lazily, is reported; a feature extra's module is accepted lazily only."""
    text = (
        "import sniffio\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    import nothing_at_runtime\n"
        "try:\n"
        "    import trio\n"
        "except ImportError:\n"
        "    trio = None\n"
        "import coredis\n"
        "def later():\n"
        "    import prometheus_client\n"
        "    import sniffio\n"
    )
    probe = tmp_path / "probe.py"
    probe.write_text(text)
    found = imports_of(probe, "transports._install_check_probe")
    assert [(item.target, item.eager) for item in found] == [
        ("sniffio", True),
        ("typing", True),
        ("trio", False),
        ("coredis", True),
        ("prometheus_client", False),
        ("sniffio", False),
    ]
    dependencies, features = declared()
    problems = undeclared(found, dependencies, features)
    assert [problem.split(": ", 1)[1].split(" (")[0] for problem in problems] == [
        "transports._install_check_probe imports sniffio",
        "transports._install_check_probe imports coredis",
        "transports._install_check_probe imports sniffio",
    ]
