"""permessage-deflate on the native server over real sockets, on both backends.

A real client (python-websockets, which offers the extension by default) talks to it both
ways; raw peers show the bytes: the same compressed frame for every member that negotiated
it, the plain frame for the others; and a relay process fed deflate bombs closes each with
1009 while its memory stays where it was.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import anyio
import pytest
from rawws import TEXT, RawPeer, frame, text
from relayproc import relay_process

from core._frames import deflated, head_size
from transports.server import RelayServer

pytestmark = pytest.mark.anyio

OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
STATE = json.dumps(
    {"type": "state", "players": [{"id": f"p{i:03d}", "x": i * 1.5, "y": 200 - i, "hp": i % 90} for i in range(60)]},
    separators=(",", ":"),
).encode()  # about 2.6 KB


async def member(port: int, offer: bool, path: str = "/c/deflate") -> RawPeer:
    """A raw member of ``path`` (offering permessage-deflate or not), its self-join read."""
    peer = await RawPeer.connect(port)
    status, headers = await peer.upgrade(path, headers=OFFER if offer else "")
    assert status == 101
    assert headers.get("sec-websocket-extensions") == (ANSWER if offer else None)
    await read_frame(peer)
    return peer


async def read_frame(peer: RawPeer) -> tuple[int, bytes, bytes]:
    """One server frame: its first byte, its payload (inflated when RSV1 says compressed)
    and every byte it took on the wire."""
    head = await peer.read_exactly(2)
    head += await peer.read_exactly(head_size(head[1]) - 2)
    length = head[1] & 0x7F
    if length >= 126:
        length = int.from_bytes(head[2:], "big")
    payload = await peer.read_exactly(length)
    wire = head + payload
    if head[0] & 0x40:
        payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
    return head[0], payload, wire


async def read_close(peer: RawPeer) -> int:
    while True:
        first, payload, _ = await read_frame(peer)
        if first & 0x0F == 0x8:
            return int.from_bytes(payload[:2], "big")


async def test_deflate_members_get_one_compressed_frame_plain_members_the_plain_one(relay: RelayServer) -> None:
    first = await member(relay.port, True)
    second = await member(relay.port, True)
    plain = await member(relay.port, False)
    sender = await member(relay.port, False)
    for peer, joins in ((first, 3), (second, 2), (plain, 1)):
        for _ in range(joins):
            await read_frame(peer)
    await sender.send(text(STATE))
    got = [await read_frame(peer) for peer in (first, second, plain)]
    (a_first, a_payload, a_wire), (_, _, b_wire), (p_first, p_payload, p_wire) = got
    assert a_first == 0xC1 and p_first == 0x81  # RSV1: compressed
    assert a_wire == b_wire and a_payload == p_payload
    assert json.loads(a_payload)["message"] == json.loads(STATE)
    assert len(a_wire) * 3 < len(p_wire), (len(a_wire), len(p_wire))
    await sender.send(frame(TEXT, deflated(STATE), rsv=4))  # without the extension: 1002
    assert await read_close(sender) == 1002
    for peer in (first, second, plain, sender):
        await peer.aclose()


async def test_a_compressed_message_from_a_raw_peer_is_relayed(relay: RelayServer) -> None:
    sender = await member(relay.port, True)
    receiver = await member(relay.port, False)
    await read_frame(sender)  # the receiver's join
    await sender.send(frame(TEXT, deflated(STATE), rsv=4))
    _, payload, _ = await read_frame(receiver)
    assert json.loads(payload)["message"] == json.loads(STATE)
    await sender.aclose()
    await receiver.aclose()


def _websockets_round_trip(port: int) -> dict[str, Any]:
    """Two python-websockets clients with their default compression: one sends a state
    message and a short one, the other reads them. Runs in a thread (a sync client)."""
    from websockets.extensions.permessage_deflate import PerMessageDeflate
    from websockets.sync.client import connect

    url = f"ws://127.0.0.1:{port}/c/library"
    with connect(url, compression="deflate") as alice, connect(url, compression="deflate") as bob:
        json.loads(alice.recv(timeout=5))  # self-join
        json.loads(bob.recv(timeout=5))
        json.loads(alice.recv(timeout=5))  # bob's join
        extensions = alice.protocol.extensions
        alice.send(STATE.decode())
        alice.send('{"short":true}')
        alice.send(STATE.decode())
        got = [json.loads(bob.recv(timeout=5))["message"] for _ in range(3)]
        deflate = [ext for ext in extensions if isinstance(ext, PerMessageDeflate)]
        return {
            "got": got,
            "negotiated": [(ext.remote_no_context_takeover, ext.local_no_context_takeover) for ext in deflate],
        }


async def test_python_websockets_with_its_default_compression(relay: RelayServer) -> None:
    result = await anyio.to_thread.run_sync(_websockets_round_trip, relay.port)
    # Both ways without context takeover: the server's messages and the client's.
    assert result["negotiated"] == [(True, True)]
    assert result["got"] == [json.loads(STATE), {"short": True}, json.loads(STATE)]


def _bomb(inflated_mb: int) -> bytes:
    """A compressed message of zeros that inflates to ``inflated_mb`` MB: one megabyte's
    DEFLATE repeated (each copy starts with a literal and then refers one byte back)."""
    megabyte = deflated(b"0" * 1_000_000)
    return megabyte * inflated_mb


async def test_deflate_bombs_close_1009_and_the_relay_memory_stays_flat(anyio_backend: str, tmp_path: Path) -> None:
    bomb = frame(TEXT, _bomb(200), rsv=4)  # 200 MB inflated from about 200 KB
    assert len(bomb) < 300_000
    config = "[limits]\nconnections_per_second_per_ip = 1000.0\n"
    async with relay_process(anyio_backend, tmp_path, config) as relay:
        witness = await member(relay.port, False, "/c/bombs")
        before = relay.rss()
        for _ in range(20):
            attacker = await member(relay.port, True, "/c/bombs")
            await read_frame(witness)  # its join
            await attacker.send(bomb)
            assert await read_close(attacker) == 1009
            await attacker.aclose()
            _, payload, _ = await read_frame(witness)
            assert json.loads(payload)["type"] == "leave"
        grown = relay.rss() - before
        await witness.send(text(b'"still here"'))
        await witness.aclose()
    # 20 bombs of 200 MB each: inflating any one would take 200 MB.
    print(f"RSS grew by {grown} bytes over 20 bombs")
    assert grown < 8 * 1024 * 1024, f"the relay grew by {grown / 1e6:.1f} MB"
