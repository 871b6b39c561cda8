"""The largest modules and functions under src/, against the house's limits.

    python tools/sizes.py            # report the largest; exit 0
    python tools/sizes.py --check    # also exit 1 when a module or function is over its limit

A module counts its lines; a function, the lines from its ``def`` to its last line
(decorators excluded). STYLE.md asks for modules of about 400 lines and functions that fit
on a screen (60 lines).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

MODULE_LIMIT = 400
FUNCTION_LIMIT = 60
ROOT = Path(__file__).resolve().parent.parent / "src"


def modules(root: Path) -> list[tuple[int, str]]:
    return sorted(
        ((len(path.read_text().splitlines()), str(path.relative_to(root.parent))) for path in root.rglob("*.py")),
        reverse=True,
    )


def functions(root: Path) -> list[tuple[int, str]]:
    found = []
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno is not None:
                length = node.end_lineno - node.lineno + 1
                found.append((length, f"{path.relative_to(root.parent)}:{node.lineno} {node.name}"))
    return sorted(found, reverse=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when anything is over its limit")
    parser.add_argument("--top", type=int, default=10, help="how many of each to list")
    args = parser.parse_args(argv)
    mods, funcs = modules(ROOT), functions(ROOT)
    over = [m for m in mods if m[0] > MODULE_LIMIT] + [f for f in funcs if f[0] > FUNCTION_LIMIT]
    print(f"largest modules (limit {MODULE_LIMIT} lines):")
    for lines, name in mods[: args.top]:
        print(f"  {lines:5d}  {name}{'  OVER' if lines > MODULE_LIMIT else ''}")
    print(f"largest functions (limit {FUNCTION_LIMIT} lines):")
    for lines, name in funcs[: args.top]:
        print(f"  {lines:5d}  {name}{'  OVER' if lines > FUNCTION_LIMIT else ''}")
    over_modules = sum(1 for m in mods if m[0] > MODULE_LIMIT)
    over_functions = sum(1 for f in funcs if f[0] > FUNCTION_LIMIT)
    print(f"{over_modules} modules and {over_functions} functions over their limits")
    return 1 if args.check and over else 0


if __name__ == "__main__":
    sys.exit(main())
