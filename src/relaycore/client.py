"""The client's side of the wire, sans-I/O: what a WebSocket client of the relay, a checker
or a test needs to speak the protocol without an event loop (see :class:`ClientConnection`).

>>> from relaycore.client import ClientConnection, parse_url
>>> address = parse_url("ws://127.0.0.1:8787/c/room")
>>> conn = ClientConnection(address.host_header, address.path)
>>> conn.state.value
'connecting'
"""

from __future__ import annotations

from ._client import (
    Accepted,
    Binary,
    ClientConnection,
    ClientEvent,
    ClientState,
    Closed,
    Refused,
    Text,
    client_frame,
)
from ._client_http import MAX_BODY, Address, HTTPExchange, Response, parse_url

__all__ = [
    "MAX_BODY",
    "Accepted",
    "Address",
    "Binary",
    "ClientConnection",
    "ClientEvent",
    "ClientState",
    "Closed",
    "HTTPExchange",
    "Refused",
    "Response",
    "Text",
    "client_frame",
    "parse_url",
]
