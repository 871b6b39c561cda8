"""Static files at ``/``, for both front doors: a small site next to the relay (a chat page).

Theory of operation. :class:`StaticFiles` answers a plain ``GET`` or ``HEAD`` for a path
the relay does not own (the session asks it last, see :data:`relaycore.Routes`) with the
file of that name under one directory, or None, which the session makes its 404. Only
safe paths are looked up:

- the path is percent-decoded once and must be UTF-8; an encoded ``/`` or ``\\``, a
  backslash, a NUL, an empty, ``.`` or ``..`` segment, or any segment starting with ``.``
  (dotfiles, ``.git``) is refused;
- the file found, after following symbolic links, must still lie inside the directory,
  through no dot-named directory, and be a regular file: a link pointing outside is as
  absent as a missing file;
- a directory answers with its ``index.html`` (a path to it without the final ``/`` is
  redirected to the one with it, so that relative links work); there is no listing.

Every answer is bounded: a file over ``max_bytes`` (16 MiB by default) is not served (404),
and what is read is never more than that. Files are read when asked for, on the event
loop: this serves a page and its scripts, not a download site.
"""

from __future__ import annotations

import mimetypes
import os
import stat
from pathlib import Path
from urllib.parse import unquote_to_bytes

from relaycore import Answer, ConfigError
from relaycore.texts import METHOD_NOT_ALLOWED

__all__ = ["MAX_BYTES", "StaticFiles"]

#: The largest file served, in bytes.
MAX_BYTES = 16 * 1024 * 1024
_TEXT = b"text/plain; charset=utf-8"
_FORBIDDEN = (b"%2f", b"%5c", b"\\", b"\x00")


class StaticFiles:
    """The files under ``directory``, served read-only (see the module docstring).

    >>> import tempfile
    >>> site = Path(tempfile.mkdtemp())
    >>> _ = (site / "index.html").write_text("<h1>hi</h1>")
    >>> files = StaticFiles(site)
    >>> answer = files.answer(b"GET", b"/")
    >>> answer.status, answer.headers[0], answer.body
    (200, (b'content-type', b'text/html; charset=utf-8'), b'<h1>hi</h1>')
    >>> files.answer(b"GET", b"/../etc/passwd") is None
    True
    """

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int = MAX_BYTES) -> None:
        root = Path(directory)
        if not root.is_dir():
            raise ConfigError(f"`server.static_dir`: {str(directory)!r} is not a directory")
        self.root = root.resolve()
        self.max_bytes = max_bytes

    def answer(self, method: bytes, path: bytes) -> Answer | None:
        """The answer for ``path`` (as sent, without the query), or None: not found."""
        parts = _segments(path)
        if parts is None:
            return None
        found = self._find(parts)
        if found is None:
            return None
        if isinstance(found, str):  # a directory named without its final slash
            return Answer(301, b"", [(b"content-type", _TEXT), (b"location", found.encode())])
        if method not in (b"GET", b"HEAD"):
            return Answer(405, METHOD_NOT_ALLOWED.encode(), [(b"content-type", _TEXT), (b"allow", b"GET, HEAD")])
        body = self._read(found)
        if body is None:
            return None
        # The name asked for says the type (a link named page.html is HTML, whatever its target).
        kind = _content_type(parts[-1] or "index.html")
        return Answer(200, body, [(b"content-type", kind), (b"x-content-type-options", b"nosniff")])

    def _find(self, parts: list[str]) -> Path | str | None:
        """The file for ``parts``; a relative redirect (str) for a directory without its slash."""
        wanted = self.root.joinpath(*parts)
        real = self._inside(wanted)
        if real is None:
            return None
        if real.is_dir():
            if parts and parts[-1]:
                return parts[-1] + "/"
            real = self._inside(real / "index.html")
            if real is None:
                return None
        return real

    def _inside(self, path: Path) -> Path | None:
        """``path`` with every link followed, if that is still in the directory and not hidden."""
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):  # missing, a loop of links, a name too long
            return None
        try:
            relative = real.relative_to(self.root)
        except ValueError:
            return None  # a link pointing outside
        if any(part.startswith(".") for part in relative.parts):
            return None  # a link to a dotfile inside
        return real

    def _read(self, path: Path) -> bytes | None:
        try:
            with open(path, "rb") as file:
                info = os.fstat(file.fileno())
                if not stat.S_ISREG(info.st_mode) or info.st_size > self.max_bytes:
                    return None
                body = file.read(self.max_bytes + 1)
        except OSError:
            return None
        return body if len(body) <= self.max_bytes else None  # it grew meanwhile


def _segments(path: bytes) -> list[str] | None:
    """The path's segments, decoded, or None when the path is not a safe one."""
    if not path.startswith(b"/") or any(bad in path.lower() for bad in _FORBIDDEN):
        return None
    try:
        text = unquote_to_bytes(path).decode()
    except UnicodeDecodeError:
        return None
    if "\x00" in text or "\\" in text:
        return None
    parts = text[1:].split("/")
    *dirs, last = parts  # last is "" for a directory's own path ("/", "/docs/")
    if any(not part or part.startswith(".") for part in dirs) or last.startswith("."):
        return None
    return parts


def _content_type(name: str) -> bytes:
    kind, encoding = mimetypes.guess_type(name, strict=False)
    if kind is None or encoding is not None:  # unknown, or compressed (.gz): raw bytes
        return b"application/octet-stream"
    if kind.startswith("text/") or kind in ("application/javascript", "application/json", "image/svg+xml"):
        return f"{kind}; charset=utf-8".encode()
    return kind.encode()
