"""Structured logs: one JSON object per line (``relaycore --log-format json serve``).

Theory of operation. The relay logs through the standard :mod:`logging` module, and puts
what a log collector wants as fields on each record (``extra={"event": ..., "client":
...}``). :class:`JSONFormatter` writes every record as one JSON object on one line:

- ``time``: UTC, ISO 8601 with milliseconds (``2026-11-28T01:38:30.189Z``);
- ``level``, ``logger``, ``message``: as in the text format (``message`` is the sentence);
- ``event``: a stable name for what happened (``connection.ended``, ``upgrade.refused``,
  ``listening``, ...); for lines of other libraries, the logger's name;
- ``client``, ``namespace``, ``code``, ``reason``, ``status``, ...: the fields the line has
  (:data:`FIELDS`): the client's address, the namespace label of its channel, a close
  code, why, an HTTP status.

What the relay logs never holds message content, keys or channel names (a namespace is a
prefix from the configuration). An exception is written as its type and its traceback's
frames, without its text, which could quote data.

With uvicorn or hypercorn the application's logging is theirs to set up; point their
logging configuration at ``transports.logs.JSONFormatter`` (docs/operations.md).

>>> import json, logging
>>> record = logging.LogRecord("relaycore.server", logging.INFO, "", 0, "connection from %s ended: %s",
...                            ("10.0.0.7", "slow consumer"), None)
>>> record.event, record.client, record.code = "connection.ended", "10.0.0.7", 1008
>>> line = json.loads(JSONFormatter().format(record))
>>> [line[name] for name in ("level", "event", "client", "code")]
['info', 'connection.ended', '10.0.0.7', 1008]
>>> line["message"]
'connection from 10.0.0.7 ended: slow consumer'
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from typing import Any, TextIO

import msgspec

__all__ = ["FIELDS", "JSONFormatter", "configure", "fail"]

#: The record attributes written when a line has them, in this order.
FIELDS = ("client", "namespace", "code", "reason", "status", "address", "backend", "signal", "worker")

_encode = msgspec.json.Encoder().encode


class JSONFormatter(logging.Formatter):
    """Formats each log record as one JSON object on one line (see the module docstring).

    With ``pid`` each line also says which process wrote it (the workers of ``--workers N``
    share one standard error).
    """

    def __init__(self, *, pid: bool = False) -> None:
        super().__init__()
        self.pid = pid

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None) or record.name,
            "message": record.getMessage(),
        }
        if self.pid:
            entry["pid"] = record.process
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            kind, _, tb = record.exc_info
            entry["exception"] = kind.__name__
            entry["traceback"] = "".join(traceback.format_tb(tb)).rstrip("\n")
        return _encode(entry).decode()


def _utc(created: float) -> str:
    seconds = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((created - seconds) * 1000):03d}Z"


def configure(
    level: str = "info", log_format: str = "text", *, pid: bool = False, stream: TextIO | None = None
) -> None:
    """Send the relay's logs (and every library's) to ``stream`` (stderr) at ``level``.

    ``log_format`` is ``text`` (``time LEVEL logger: message``) or ``json``; ``pid`` tags
    every line with the process id (the workers of ``--workers N``). Like
    :func:`logging.basicConfig`, it does nothing if logging is set up already.
    """
    global _json_format
    _json_format = log_format == "json"
    handler = logging.StreamHandler(stream or sys.stderr)
    if log_format == "json":
        handler.setFormatter(JSONFormatter(pid=pid))
    else:
        tag = "[%(process)d]" if pid else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s %(name)s{tag}: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    if _json_format:
        logging.captureWarnings(True)  # a library's warning is a JSON line too


#: Whether :func:`configure` chose JSON lines (then everything on stderr is a JSON object).
_json_format = False


def fail(message: str, *, command: str = "relaycore") -> None:
    """Say on standard error why the command cannot go on: ``relaycore: <message>`` for a
    person, or, with ``--log-format json``, a JSON line (``"event": "failed"``) like every other."""
    if _json_format:
        logging.getLogger(command.replace(" ", ".")).error(message, extra={"event": "failed"})
    else:
        print(f"{command}: {message}", file=sys.stderr)
