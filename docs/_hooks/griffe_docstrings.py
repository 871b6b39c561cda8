"""A griffe extension: turn the docstrings' reST into the Markdown mkdocstrings renders.

The docstrings are written for ``help()`` and doctest, in reST: ``:class:`~relaycore.Connection```
roles, ``>>>`` doctest blocks, and ``::`` literal blocks. mkdocstrings reads docstrings as
Markdown, where a role shows as its name before the code, ``>>>`` is three nested quotes and
a literal block's marker stays. Before rendering, this extension rewrites each docstring:

- a role becomes a code span, ``~a.b.C`` shortened to ``C`` as Sphinx does;
- a doctest block (from a ``>>>`` line to the next blank line) becomes a ``pycon`` fence;
- ``text::`` followed by an indented block becomes ``text:`` and a ``python`` fence.

Text inside Markdown fences is left alone. The extension changes only the docstrings griffe
read from the sources: nothing of the project is imported. It is loaded by mkdocs.yml.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

__all__ = ["ReSTDocstrings", "rewrite"]

_ROLE = re.compile(r":(?:py:)?(?:attr|class|data|exc|func|meth|mod|obj):`(~?)([^`]+)`")
_TITLED = re.compile(r"(.*?)\s*<([^<>]+)>", re.DOTALL)
_FENCE = re.compile(r"^\s*(```|~~~)")


def _code_span(match: re.Match[str]) -> str:
    short, target = match.groups()
    target = " ".join(target.split())  # a role may run over two lines
    titled = _TITLED.fullmatch(target)
    if titled:  # :meth:`title <path>` shows the title, as Sphinx does
        return f"`{titled.group(1)}`"
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def rewrite(text: str) -> str:
    """The Markdown for one reST docstring.

    >>> rewrite("See :class:`~relaycore.Hub` and :func:`connect`.")
    'See `Hub` and `connect`.'
    >>> rewrite("For example:\\n>>> 1 + 1\\n2").splitlines()
    ['For example:', '', '```pycon', '>>> 1 + 1', '2', '```']
    """
    lines = text.splitlines()
    out: list[str] = []
    prose: list[str] = []  # lines of text, whose roles are replaced together (they may wrap)

    def code(*block: str) -> None:
        if prose:
            out.extend(_ROLE.sub(_code_span, "\n".join(prose)).split("\n"))
            prose.clear()
        out.extend(block)

    i = 0
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):  # a Markdown fence: copied as it stands, up to its end
            end = i + 1
            while end < len(lines) and not _FENCE.match(lines[end]):
                end += 1
            code(*lines[i : end + 1])
            i = end + 1
            continue
        if line.lstrip().startswith(">>>"):  # a doctest block runs to the next blank line
            end = i
            while end < len(lines) and lines[end].strip():
                end += 1
            pad = " " * _indent(line)
            gap = [""] if prose and prose[-1].strip() else []
            code(*gap, f"{pad}```pycon", *lines[i:end], f"{pad}```")
            i = end
            continue
        if line.rstrip().endswith("::") and i + 1 < len(lines) and not lines[i + 1].strip():
            start = i + 2
            while start < len(lines) and not lines[start].strip():
                start += 1
            if start < len(lines) and _indent(lines[start]) > _indent(line):
                end = start
                while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > _indent(line)):
                    end += 1
                while not lines[end - 1].strip():
                    end -= 1
                head = line.rstrip()[:-2].rstrip()
                if head.strip():
                    prose.append(head + ":")
                pad = " " * _indent(line)
                body = lines[start:end]
                cut = min(_indent(b) for b in body if b.strip())
                code("", f"{pad}```python", *(pad + b[cut:] if b.strip() else "" for b in body), f"{pad}```")
                i = end
                continue
        prose.append(line)
        i += 1
    code()
    return "\n".join(out)


class ReSTDocstrings(griffe.Extension):
    """Rewrite every docstring with :func:`rewrite` once griffe has read the package."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self.on_object(obj=pkg)  # griffe fires on_object for a package's members, not for it
