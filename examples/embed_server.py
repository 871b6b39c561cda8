"""Run the relay inside your own anyio program, on asyncio or on trio.

    python examples/embed_server.py                    # asyncio, port 8787
    python examples/embed_server.py --backend trio     # trio (pip install trio)
    python examples/embed_server.py --port 0 --seconds 5

The program builds its configuration in code, starts ``RelayServer`` in a task group, and
goes on with work of its own next to it: here, a clock that pushes the time into the
channel ``demo:clock`` every few seconds, over the relay's own HTTP push endpoint. Watch it
with:

    python examples/chat_client.py demo:clock --alias watcher

Ctrl-C (or SIGTERM, or the end of ``--seconds``) shuts the relay down gracefully: every
member is closed with code 1001, then the program exits.
"""

from __future__ import annotations

import argparse
import json
import signal
import time

import anyio
import anyio.abc

from relaycore import Config, LimitsConfig, NamespaceConfig, ServerConfig
from transports.server import RelayServer

CLOCK_KEY = "embedded-demo-key"


async def http_push(port: int, channel: str, message: object) -> bytes:
    """A minimal HTTP push over an anyio socket (works on both backends)."""
    body = json.dumps(message).encode()
    request = (
        f"POST /push/{channel} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-send-key: {CLOCK_KEY}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(request + body)
        answer = b""
        async for chunk in stream:
            answer += chunk
    return answer.partition(b"\r\n\r\n")[2]


async def announce_time(port: int, every: float) -> None:
    """Work of our own, running next to the relay."""
    while True:
        answer = await http_push(port, "demo:clock", {"type": "chat", "text": time.strftime("%H:%M:%S")})
        print("pushed the time:", answer.decode(), flush=True)
        await anyio.sleep(every)


async def wait_for_signal() -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


async def main(port: int, seconds: float | None, every: float) -> None:
    config = Config(
        server=ServerConfig(host="127.0.0.1", port=port),
        limits=LimitsConfig(max_message_bytes=16_384),
        namespaces={"demo": NamespaceConfig(send_key=CLOCK_KEY)},
    )
    server = RelayServer(config)
    async with anyio.create_task_group() as tg:
        addresses = await tg.start(server.serve)  # host and port from the config
        for host, bound_port in addresses:
            print(f"relay listening on ws://{host}:{bound_port}", flush=True)
        async with anyio.create_task_group() as ours:
            ours.start_soon(announce_time, server.port, every)
            if seconds is None:
                await wait_for_signal()
            else:
                with anyio.move_on_after(seconds):
                    await wait_for_signal()
            ours.cancel_scope.cancel()  # stop our own work first
        print("shutting down", flush=True)
        server.shutdown()  # members get 1001; serve() returns and the task group ends
    print("stopped", flush=True)


def cli() -> None:
    parser = argparse.ArgumentParser(description="Run relaycore inside an anyio program.")
    parser.add_argument("--port", type=int, default=8787, help="port (0: any free port)")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--seconds", type=float, help="stop after this many seconds")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between two clock pushes")
    args = parser.parse_args()
    anyio.run(main, args.port, args.seconds, args.every, backend=args.backend)


if __name__ == "__main__":
    cli()
