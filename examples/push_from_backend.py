"""Push a message into a relaycore channel from a backend, with the standard library only.

HTTP push works only on channels inside a reserved namespace that has a send key. Give the
relay a configuration file such as ``relay.toml``:

    [namespaces."alerts"]
    send_key = "change-me"

then start it, watch a channel of that namespace, and push to it:

    relaycore serve --config relay.toml
    python examples/chat_client.py alerts:ops --alias watcher
    python examples/push_from_backend.py alerts:ops "disk almost full" --key change-me

Every member of ``alerts:ops`` receives ``{"date": ..., "message": {...}}``: a message with
no ``uid``, since no member sent it. The script prints the relay's answer, for example
``200 {"ok":true,"recipients":1}``, and exits with 0 on success, 1 otherwise.

By default the message is a chat line, ``{"type": "chat", "text": TEXT}``; with ``--json``
TEXT is sent as it is and must be a JSON value. The key can also come from the
``PUSH_SEND_KEY`` environment variable (not ``RELAYCORE_...``: the relay treats every
variable with that prefix as one of its own settings).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from urllib.parse import quote


def push(base_url: str, channel: str, payload: bytes, key: str, timeout: float = 5.0) -> tuple[int, dict[str, object]]:
    """POST ``payload`` (JSON) to ``channel``; return the HTTP status and the JSON answer."""
    request = urllib.request.Request(
        f"{base_url.rstrip('/')}/push/{quote(channel, safe='/:')}",
        data=payload,
        method="POST",
        headers={"content-type": "application/json", "x-send-key": key},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 4xx: the body says why
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:  # 405 and 413 answer in plain text
            return exc.code, {"ok": False, "error": body.decode(errors="replace")}


def main() -> int:
    parser = argparse.ArgumentParser(description="Push a message into a relaycore channel over HTTP.")
    parser.add_argument("channel", help="a channel inside a namespace with a send key, e.g. alerts:ops")
    parser.add_argument("text", help="the chat text to send (or a JSON value with --json)")
    parser.add_argument("--json", action="store_true", help="send TEXT as a raw JSON value")
    parser.add_argument("--key", default=os.environ.get("PUSH_SEND_KEY"), help="the namespace's send key")
    parser.add_argument("--url", default="http://127.0.0.1:8787", help="the relay (default http://127.0.0.1:8787)")
    args = parser.parse_args()
    if not args.key:
        parser.error("give the send key with --key or PUSH_SEND_KEY")
    if args.json:
        json.loads(args.text)  # fail here, with a clear traceback, rather than get a 400
        payload = args.text.encode()
    else:
        payload = json.dumps({"type": "chat", "text": args.text}).encode()
    try:
        status, answer = push(args.url, args.channel, payload, args.key)
    except OSError as exc:
        print(f"cannot reach {args.url}: {exc}")
        return 1
    print(status, json.dumps(answer, separators=(",", ":")))
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
