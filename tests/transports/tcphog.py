"""Another program using TCP memory: loopback connections written fast and read slowly.

Run as a process of its own beside a test (``python tcphog.py CONNECTIONS``): it opens
that many connections to itself over 127.0.0.1, each with fixed 1 MiB send and receive
buffers, keeps their send buffers full, and reads a little from each every 50 ms, so that
the kernel holds about 3-4 MiB for each connection for as long as it runs. It prints
``ready`` once every buffer is full, then runs until it is terminated.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import sys
import time

BUFFER = 1 << 20
CHUNK = b"h" * 65536
SIP = 8192  # read from each connection per round
ROUND = 0.05


def connections(count: int) -> tuple[list[socket.socket], list[socket.socket]]:
    """``count`` connected pairs over loopback: (the writers, the readers)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(count)
    writers, readers = [], []
    for _ in range(count):
        writer = socket.socket()
        writer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
        writer.connect(listener.getsockname())
        reader, _ = listener.accept()
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
        writer.setblocking(False)
        reader.setblocking(False)
        writers.append(writer)
        readers.append(reader)
    listener.close()
    return writers, readers


def fill(writers: list[socket.socket]) -> None:
    """Write into every writer until the kernel takes no more."""
    for writer in writers:
        while True:
            try:
                writer.send(CHUNK)
            except BlockingIOError:
                break


def main(count: int) -> None:
    writers, readers = connections(count)
    selector = selectors.DefaultSelector()
    for writer in writers:
        selector.register(writer, selectors.EVENT_WRITE)
    fill(writers)
    print("ready", flush=True)
    while True:
        started = time.monotonic()
        for reader in readers:
            with contextlib.suppress(BlockingIOError):
                reader.recv(SIP)
        for key, _ in selector.select(0):
            fill([key.fileobj])  # type: ignore[list-item]
        time.sleep(max(0.0, ROUND - (time.monotonic() - started)))


if __name__ == "__main__":
    main(int(sys.argv[1]))
