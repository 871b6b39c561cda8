"""``GET /client.js``: the browser client, served by every door (see docs/browser-client.md).

The script is ``client.js`` beside this module, shipped in the wheel, read once when a door
starts. A page loads it as a module, from its own origin or from another one: its answers
carry the CORS headers of the relay's other HTTP endpoints (``[server] allowed_origins``),
and a preflight is answered as theirs are. The path is the relay's own even with static
files: a file named ``client.js`` in ``static_dir`` is never served in its place.
"""

from __future__ import annotations

from importlib.resources import files
from urllib.parse import unquote_to_bytes

from relaycore import Answer, Headers, Hub
from relaycore.texts import METHOD_NOT_ALLOWED

__all__ = ["CLIENT_PATH", "ClientScript"]

#: Where every door serves the browser client.
CLIENT_PATH = b"/client.js"
_METHODS = b"GET, HEAD, OPTIONS"
_JAVASCRIPT = b"text/javascript; charset=utf-8"


def _origin(headers: Headers) -> bytes | None:
    for name, value in headers:
        if name == b"origin":
            return bytes(value)
    return None


class ClientScript:
    """The answers of ``/client.js`` for one hub (whose origins decide the CORS headers)."""

    __slots__ = ("body", "hub")

    def __init__(self, hub: Hub, body: bytes | None = None) -> None:
        self.hub = hub
        #: The script's bytes (the shipped ``client.js`` unless given).
        self.body = files(__package__ or "transports").joinpath("client.js").read_bytes() if body is None else body

    @staticmethod
    def owns(path: bytes) -> bool:
        """Whether ``path`` (as sent, or percent-decoded) is the script's."""
        return path == CLIENT_PATH or (b"%" in path and unquote_to_bytes(path) == CLIENT_PATH)

    def answer(self, method: bytes, headers: Headers) -> Answer:
        """The script (``GET``, ``HEAD``), a preflight's answer (``OPTIONS``), or 405."""
        origins = self.hub.origins
        if method == b"OPTIONS":
            return Answer(204, b"", [(b"allow", _METHODS), *origins.preflight(_origin(headers), _METHODS)])
        cors = origins.cors(_origin(headers))
        if method not in (b"GET", b"HEAD"):
            text = (b"content-type", b"text/plain; charset=utf-8")
            return Answer(405, METHOD_NOT_ALLOWED.encode(), [text, (b"allow", _METHODS), *cors])
        kind = [(b"content-type", _JAVASCRIPT), (b"x-content-type-options", b"nosniff")]
        # Revalidated on every load: a relay's upgrade reaches its pages at once.
        return Answer(200, self.body, [*kind, (b"cache-control", b"no-cache"), *cors])
