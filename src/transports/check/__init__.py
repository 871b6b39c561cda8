"""``relaycore check URL``: a conformance checker for any relay that claims the itty-sockets protocol.

Theory of operation. A *check* is a small coroutine registered under a name that starts with
the section of the protocol contract it tests (``2.echo``, ``3.1.envelope-no-type``,
``8.message-size-1009``: the numbering of the shared contract, PROTOCOL.md; docs/check.md maps
it to the sections of docs/protocol.md). The runner gives every check a fresh ``Probe``
(random channel names of its own, a transcript of every frame sent and seen, a deadline of
``--timeout`` seconds) and runs the checks one after another. A check passes by returning a
one-line detail, fails by raising :class:`Failed`, and skips by raising :class:`Skipped`; a
timeout, a refused upgrade or a broken connection is a failure that says what the check was
waiting for. The rule each check holds the relay to is written in its docstring.

Most checks need the wire as it is: byte-identical envelopes, keys that must be absent, close
codes, refused upgrades, binary and malformed frames. They talk through a ``Peer``: a byte
stream driving the core's client wire (:class:`relaycore.client.ClientConnection`), which
shows every message and the close, beside the frames a check writes as they are (malformed
ones built with :func:`relaycore.client.client_frame`); plain HTTP requests are the core's
:class:`relaycore.client.HTTPExchange`. The checks about what an application sees (uids,
ordering, keys that vanish) use :mod:`transports.client`, as an application would.

Expectations that something does NOT arrive are made fast with a marker: after the action,
a member sends a message carrying a fresh token, and what a peer sees before that token (and
within a short grace after it) is what the relay sent it because of the action. A relay that
does not conform then fails in a fraction of a second instead of running into the timeout.

Upgrades answered with 429 (the relay's connection rate per address) are tried again after a
pause, within the check's deadline, so that a relay with its default limits can be checked.

The package (the names of ``__all__`` are its public face):

- ``_registry``: what a check is (:class:`Check`, :data:`CHECKS`), :class:`Settings`, :class:`Result`;
- ``_wire``: the relay's address, the raw peers, the plain HTTP requests, the probe;
- ``_expect``: what frames say, and the expectations the checks share (the marker);
- one module per section of the contract, its checks in the order they run:
  ``_endpoints`` (1), ``_options`` (2), ``_relay_frames`` (3), ``_client_frames`` (4),
  ``_http_push`` (5), ``_access`` (6), ``_identity`` (7), ``_limits`` (8), ``_close_codes`` (9);
- ``_runner``: one check within its deadline, then all of them (:func:`run_checks`);
- ``_report``: :func:`format_table` and :func:`format_json`;
- ``_command``: the command line (:func:`add_arguments`, :func:`run`, :func:`main`).
"""

from __future__ import annotations

# The sections register their checks as they are imported: in a section, the order of its code.
from . import (  # noqa: F401
    _access,
    _client_frames,
    _close_codes,
    _endpoints,
    _http_push,
    _identity,
    _limits,
    _options,
    _relay_frames,
)
from ._command import add_arguments, main, run
from ._registry import CHECKS, Check, Failed, Result, Settings, Skipped
from ._report import format_json, format_table
from ._runner import run_checks

__all__ = [
    "CHECKS",
    "Check",
    "Failed",
    "Result",
    "Settings",
    "Skipped",
    "add_arguments",
    "format_json",
    "format_table",
    "main",
    "run",
    "run_checks",
]
