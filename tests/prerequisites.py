"""What a test needs from outside the Python environment, and the one rule when it is missing.

Locally a test whose prerequisite is missing (Node.js, Redis, Chromium, nginx, an optional
package) is skipped, with how to install it. Under CI (the ``CI`` environment variable set
and not empty, as every CI service sets it) it fails instead: CI is where every test must
run, and a skip there would hide that a whole part of the suite never ran.

Use :func:`require` (any condition) or :func:`require_module` (an import) instead of
``pytest.skip`` / ``pytest.importorskip`` whenever what is missing is a prerequisite::

    node = require(shutil.which("node"), "node is not on PATH", "install Node.js")
    kosoku = require_module("kosoku", "pip install -e '.[test]'")

(Chromium, in ``tests/browser/cdp.py``, goes through :func:`missing` too.)
"""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Callable
from types import ModuleType
from typing import Any, NoReturn, TypeVar, overload

import pytest

__all__ = ["in_ci", "missing", "nginx_binary", "require", "require_module"]

T = TypeVar("T")


def in_ci() -> bool:
    """Whether this is a CI run: ``CI`` is set and not empty (``CI=1``, ``CI=true``)."""
    return bool(os.environ.get("CI"))


def missing(what: str, how_to_install: str) -> NoReturn:
    """The test cannot run without ``what``: skip it, or under CI fail it, saying how to
    install it. Also at the top of a module (skipped whole; under CI, a collection error)."""
    message = f"{what} ({how_to_install})"
    if in_ci():
        pytest.fail(f"{message}; CI must run every test, so a missing prerequisite fails", pytrace=False)
    pytest.skip(message, allow_module_level=True)


@overload
def require(condition: Callable[[], T | None], what: str, how_to_install: str) -> T: ...


@overload
def require(condition: T | None, what: str, how_to_install: str) -> T: ...


def require(condition: Any, what: str, how_to_install: str) -> Any:
    """``condition`` (called first, if callable) when it is true, for the caller to use (a
    path, say); otherwise :func:`missing` with ``what`` and ``how_to_install``."""
    value = condition() if callable(condition) else condition
    if not value:
        missing(what, how_to_install)
    return value


def require_module(name: str, how_to_install: str) -> ModuleType:
    """The module ``name``, imported: :func:`pytest.importorskip` under the rule of this
    module (a failure under CI)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing(f"{name} cannot be imported: {exc}", how_to_install)


def nginx_binary() -> str:
    """The path of ``nginx`` (Debian installs it in /usr/sbin, which a user's PATH may lack)."""
    packaged = "/usr/sbin/nginx"
    return require(
        lambda: shutil.which("nginx") or (packaged if os.path.exists(packaged) else None),
        "nginx is not installed",
        "apt-get install -y nginx",
    )
