"""The documentation site builds with ``mkdocs build --strict``, API reference included.

Strict mode (with mkdocs.yml's ``validation`` settings) turns every broken link or anchor,
every page missing from the nav and every docstring mkdocstrings cannot render into a
failure. The build needs the ``docs`` extra (part of ``test``): without it the test is
skipped locally, and fails in CI, where a skip would hide a broken site.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prerequisites import require

ROOT = Path(__file__).resolve().parents[1]
NEEDED = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "griffe")

# mkdocs' own command line, run in a child process; on the way out it reports which modules
# of the project were imported, since the reference must come from static analysis alone.
BUILD = """
import sys
from mkdocs.__main__ import cli
try:
    cli(sys.argv[1:], prog_name="mkdocs")
finally:
    mine = sorted(m for m in sys.modules if m.split(".")[0] in ("relaycore", "transports"))
    print("project modules imported:", ",".join(mine) or "none", file=sys.stderr)
"""


def _missing() -> list[str]:
    missing = []
    for name in NEEDED:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            missing.append(name)
    return missing


def _require_docs_tools() -> None:
    missing = _missing()
    require(not missing, f"the docs extra is not installed (no {', '.join(missing)})", "pip install -e '.[docs]'")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    _require_docs_tools()
    out = tmp_path_factory.mktemp("docs") / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-c", BUILD, "build", "--strict", "--clean", "-d", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return out, result


def test_the_site_builds_strictly(site: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, result = site
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    assert (out / "index.html").is_file()
    assert (out / "performance-fanout.png").is_file()  # performance.md's plot
    assert not (out / "_hooks").exists()  # the build's extension is not published


def test_building_imports_nothing_of_the_project(site: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    _, result = site
    assert "project modules imported: none" in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize(
    ("page", "names"),
    [
        ("api/relaycore", ["relaycore.ClusterHub", "relaycore.ClientSession", "relaycore.Config.from_toml"]),
        ("api/testing", ["relaycore.testing.Harness", "transports.pytest_plugin.relay_server"]),
        (
            "api/transports",
            ["transports.server.RelayServer", "transports.asgi.create_app", "transports.client.connect"],
        ),
    ],
)
def test_the_api_reference_documents(
    site: tuple[Path, subprocess.CompletedProcess[str]], page: str, names: list[str]
) -> None:
    out, result = site
    assert result.returncode == 0, result.stderr[-2000:]
    html = (out / page / "index.html").read_text(encoding="utf-8")
    for name in names:
        assert f'id="{name}"' in html, f"{name} has no entry on {page}"
    # The docstrings' reST was turned into Markdown: no role names, no doctest as quotes.
    assert ":class:<code>" not in html and ":meth:<code>" not in html
    assert "<blockquote>" not in html


def test_the_docstring_rewrite() -> None:
    _require_docs_tools()
    spec = importlib.util.spec_from_file_location("griffe_docstrings", ROOT / "docs/_hooks/griffe_docstrings.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rewrite = module.rewrite

    assert rewrite("see :class:`~relaycore.Hub`, :meth:`Channel.on` and :mod:`transports`") == (
        "see `Hub`, `Channel.on` and `transports`"
    )
    assert rewrite("it is :meth:`online\n<relaycore.ClusterHub.online>`, then") == "it is `online`, then"
    assert rewrite("Text.\n>>> 1 + 1\n2\n\nAfter.").splitlines() == [
        "Text.", "", "```pycon", ">>> 1 + 1", "2", "```", "", "After.",
    ]  # fmt: skip
    assert rewrite("Leaving closes it::\n\n    async with x:\n        pass\n\nAfter.").splitlines() == [
        "Leaving closes it:", "", "```python", "async with x:", "    pass", "```", "", "After.",
    ]  # fmt: skip
    fenced = "```python\n>>> not a doctest here\n:class:`kept`\n```"
    assert rewrite(fenced) == fenced
