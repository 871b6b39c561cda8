"""What a WebSocket upgrade must show before a join is tried (docs/protocol.md, section 4).

A ``GET``; HTTP/1.1's upgrade headers (``Upgrade: websocket``, the ``upgrade`` connection
option, version 13, a valid key) or an HTTP/2 extended CONNECT (RFC 8441), which its server
checked; and an ``Origin``, when a page sent one, that the relay allows. A server that frames
for us has done most of the header checks already, but not every server checks the key's
form, so the session checks them whatever the door.
"""

from __future__ import annotations

import base64

from ._errors import HTTPError
from ._origins import Origins
from ._session_seams import Headers, method_not_allowed, origin
from ._texts import ORIGIN_NOT_ALLOWED, UPGRADE_REQUIRED

__all__ = ["check_upgrade", "upgrade_required"]


def upgrade_required() -> HTTPError:
    """The refusal of a plain request to a WebSocket endpoint (426)."""
    return HTTPError(426, UPGRADE_REQUIRED, [(b"upgrade", b"websocket"), (b"connection", b"Upgrade")])


def check_upgrade(method: bytes, headers: Headers, origins: Origins, *, upgrade: bool, extended_connect: bool) -> bytes:
    """The upgrade's ``Sec-WebSocket-Key`` (``b""`` for an extended CONNECT), or the
    HTTPError that refuses it (405, 426, 400, 403)."""
    if method != b"GET":
        raise method_not_allowed(b"GET")
    if not upgrade:
        raise upgrade_required()
    # HTTP/1.1's upgrade headers; an extended CONNECT has none (its server checked it).
    key = b"" if extended_connect else _upgrade_key(headers)
    if not origins.allows(origin(headers)):
        raise HTTPError(403, ORIGIN_NOT_ALLOWED)
    return key


def _upgrade_key(headers: Headers) -> bytes:
    """Check a WebSocket upgrade's own headers; return its key."""
    joined: dict[bytes, bytes] = {}
    for name, value in headers:
        name = bytes(name).lower()
        joined[name] = joined[name] + b"," + bytes(value) if name in joined else bytes(value)
    if joined.get(b"upgrade", b"").strip().lower() != b"websocket":
        raise upgrade_required()
    tokens = {t.strip().lower() for t in joined.get(b"connection", b"").split(b",")}
    if b"upgrade" not in tokens:
        # An Upgrade header means nothing without the connection option (RFC 9110, 7.8):
        # a plain GET, as every ASGI server takes it too.
        raise upgrade_required()
    if joined.get(b"sec-websocket-version", b"").strip() != b"13":
        raise HTTPError(426, "Unsupported WebSocket version.", [(b"sec-websocket-version", b"13")])
    key = joined.get(b"sec-websocket-key", b"").strip()
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        valid = False
    if not valid:
        raise HTTPError(400, "Invalid Sec-WebSocket-Key.")
    return key
