"""Two members exchange messages through a relay: run by an install check environment's python.

    python exchange_client.py --send http://127.0.0.1:A --receive http://127.0.0.1:B [--backend trio]

``bob`` joins channel ``install-check`` at the ``--receive`` relay, then ``ann`` at the
``--send`` relay (the same one, or another node of a cluster); ann's self-join must count
both. ann sends three messages, bob must get all three, in order, from ann; bob answers
one, which ann must get. On success one JSON line says what arrived and where
``transports`` was imported from; any failure is an exception (exit status 1).

It imports nothing but anyio and relaycore's own client (whose dependencies are
relaycore's: wsproto, h11, msgspec), so it runs in a plain install.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

CHANNEL = "install-check"
TIMEOUT = 30.0


async def exchange(send_base: str, receive_base: str) -> dict[str, Any]:
    import anyio

    from transports.client import connect

    sent = [{"type": "chat", "n": n, "text": f"hello {n}"} for n in range(3)]
    reply = {"type": "chat", "text": "got them"}
    with anyio.fail_after(TIMEOUT):
        async with (
            connect(f"{receive_base}/c/{CHANNEL}", alias="bob") as bob,  # bob first: ann's total counts him
            connect(f"{send_base}/c/{CHANNEL}", alias="ann") as ann,
        ):
            if ann.total != 2:
                raise AssertionError(f"ann's self-join counts {ann.total} members, not 2")
            for message in sent:
                await ann.send(message)
            received: list[Any] = []
            async for event in bob:
                if event.type == "message":
                    if event.alias != "ann":
                        raise AssertionError(f"bob got a message from {event.alias!r}: {event!r}")
                    received.append(event.message)
                    if len(received) == len(sent):
                        break
            if received != sent:
                raise AssertionError(f"bob got {received!r}, not {sent!r}")
            await bob.send(reply)
            answered = None
            async for event in ann:
                if event.type == "message":
                    answered = event.message
                    break
            if answered != reply:
                raise AssertionError(f"ann got {answered!r}, not {reply!r}")
    return {"received": received, "answered": answered}


def main(argv: list[str] | None = None) -> int:
    import anyio

    import transports

    parser = argparse.ArgumentParser()
    parser.add_argument("--send", required=True, help="the sender's relay, http://host:port")
    parser.add_argument("--receive", required=True, help="the receiver's relay, http://host:port")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args(argv)
    result = anyio.run(exchange, args.send, args.receive, backend=args.backend)
    result["transports"] = transports.__file__
    result["backend"] = args.backend
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
