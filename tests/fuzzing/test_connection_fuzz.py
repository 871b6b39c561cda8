"""Byte-stream fuzzing of :class:`relaycore.Connection`.

Each example is a :class:`Scenario`: a configuration, an optional bystander (a well-behaved
member of channel ``room``, there to receive what the fuzzed peers broadcast and to see
their joins and leaves), and one or more scripts. A script is a byte stream (HTTP requests,
an opening handshake, WebSocket frames, mutations of those, or random bytes) cut at random
points into ``receive_data`` calls, and an ending: nothing, EOF, ``connection_lost()`` or a
``close()`` by the relay (after which the peer may still send). With several scripts their
chunks are interleaved. The invariants are checked after every single call; see
``_harness.py`` for the list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import relaycore._connection as connection_module
from relaycore import Config, LimitsConfig, NamespaceConfig, ServerConfig

from . import _grammar as g
from ._harness import Harness, Tracked, known_uids

NAMESPACES = {
    "ns": NamespaceConfig(join_key="jk", send_key="sk"),
    "pub": NamespaceConfig(send_key="psk"),
}
SMALL = 2048
CONFIGS = {
    "small": Config(limits=LimitsConfig(max_message_bytes=SMALL), namespaces=NAMESPACES),
    "default": Config(namespaces=NAMESPACES),
    "tight_outbox": Config(
        limits=LimitsConfig(max_message_bytes=SMALL, outbound_buffer_bytes=1024), namespaces=NAMESPACES
    ),
    "echo": Config(
        server=ServerConfig(echo_endpoint=True), limits=LimitsConfig(max_message_bytes=SMALL), namespaces=NAMESPACES
    ),
}
#: Direct-message targets: the uids the first joiners get, and some that nobody has.
UIDS = (*known_uids(), "nobody", "", "x" * 300, "\u00e9\u00e9\u00e9")
ENDINGS = ("none", "eof", "lost", "close")
RELAY_CLOSE_CODES = (1001, 1000, 1008, 1011)


@dataclass
class Script:
    """One connection's input: chunks fed in order, then an ending."""

    chunks: list[bytes]
    ending: str = "none"
    close_code: int = 1001
    after_close: list[bytes] = field(default_factory=list)
    eof_after_close: bool = False

    def __repr__(self) -> str:
        chunks = ", ".join(g.compact(c) for c in self.chunks)
        after = ", ".join(g.compact(c) for c in self.after_close)
        return (
            f"Script(chunks=[{chunks}], ending={self.ending!r}, close_code={self.close_code}, "
            f"after_close=[{after}], eof_after_close={self.eof_after_close})"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """Hypothesis prints failing examples with this (IPython's protocol)."""
        printer.text(repr(self))


@dataclass
class Scenario:
    config: str
    bystander: bool
    scripts: list[Script]
    schedule: list[int] = field(default_factory=list)


# -- strategies ---------------------------------------------------------------------------


@st.composite
def scripts(draw: st.DrawFn, stream: st.SearchStrategy[bytes]) -> Script:
    data = draw(stream)
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=16))
    ending = draw(st.sampled_from(ENDINGS))
    script = Script(g.split(data, cuts), ending)
    if ending == "close":
        script.close_code = draw(st.sampled_from(RELAY_CLOSE_CODES))
        script.after_close = [c for c in draw(st.lists(g.frames(UIDS), max_size=2)) if c]
        script.eof_after_close = draw(st.booleans())
    return script


@st.composite
def maybe_mutated(draw: st.DrawFn, stream: st.SearchStrategy[bytes], probability: int = 4) -> bytes:
    """``stream``, mutated about once in ``probability`` draws."""
    data = draw(stream)
    if draw(st.integers(0, probability - 1)) == probability - 1:
        data = draw(g.mutations(data))
    return data


@st.composite
def http_streams(draw: st.DrawFn) -> bytes:
    """A few pipelined requests from the grammar, sometimes ending with a valid handshake."""
    requests = draw(st.lists(g.http_requests(), min_size=1, max_size=3))
    if draw(st.booleans()):
        requests.append(draw(g.valid_upgrades()))
        requests += draw(st.lists(g.frames(UIDS), max_size=3))
    return b"".join(requests)


@st.composite
def websocket_streams(draw: st.DrawFn, *, handshake: st.SearchStrategy[bytes] | None = None) -> bytes:
    """Sometimes a few plain requests, then an opening handshake, then frames."""
    prefix = b""
    if draw(st.integers(0, 5)) == 5:
        prefix = b"".join(
            draw(st.lists(st.sampled_from((b"GET /health HTTP/1.1\r\nHost: h\r\n\r\n",)), min_size=1, max_size=8))
        )
    opening = draw(handshake if handshake is not None else g.valid_upgrades())
    body = draw(st.lists(g.frames(UIDS), max_size=12))
    return prefix + opening + b"".join(body)


@st.composite
def random_streams(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(("after_handshake", "raw", "after_request_line")))
    noise = draw(st.binary(max_size=300))
    if kind == "after_handshake":
        return draw(g.valid_upgrades()) + noise
    if kind == "after_request_line":
        return b"GET /c/room HTTP/1.1\r\n" + noise
    return noise


def scenarios(
    stream: st.SearchStrategy[bytes],
    *,
    configs: tuple[str, ...] = ("small", "default", "tight_outbox", "default", "echo", "small"),
    peers: st.SearchStrategy[int] | None = None,
) -> st.SearchStrategy[Scenario]:
    @st.composite
    def build(draw: st.DrawFn) -> Scenario:
        config = draw(st.sampled_from(configs))
        bystander = draw(st.booleans())
        count = draw(peers) if peers is not None else 1
        items = [draw(scripts(stream)) for _ in range(count)]
        schedule = draw(st.lists(st.integers(0, count - 1), max_size=40)) if count > 1 else []
        return Scenario(config, bystander, items, schedule)

    return build()


# -- running ------------------------------------------------------------------------------


def run(scenario: Scenario) -> Harness:
    harness = Harness(CONFIGS[scenario.config])
    if scenario.bystander:
        watcher = harness.open("bystander")
        harness.feed(watcher, g.websocket_handshake("/c/room?announce&list"))
    peers = [harness.open(f"peer{i}") for i in range(len(scenario.scripts))]
    pending = [list(script.chunks) for script in scenario.scripts]
    for index in scenario.schedule:
        if pending[index]:
            harness.feed(peers[index], pending[index].pop(0))
    for peer, chunks in zip(peers, pending, strict=True):
        for chunk in chunks:
            harness.feed(peer, chunk)
    for peer, script in zip(peers, scenario.scripts, strict=True):
        end(harness, peer, script)
    for peer in peers:
        describe(peer)
    return harness


def describe(peer: Tracked) -> None:
    """Coverage notes for ``--hypothesis-show-statistics``."""
    if not currently_in_test_context():
        return
    conn = peer.conn
    event(f"final state {conn.state.value}")
    if conn.upgraded:
        event("upgraded (echo)" if peer.echo else "upgraded")
    texts = sum(1 for f in peer.frames if f.opcode == 0x1)
    if texts > 1:
        event("got frames after the self-join")
    if conn.close_code is not None:
        event(f"close code {conn.close_code}")


def end(harness: Harness, peer: Tracked, script: Script) -> None:
    if script.ending == "eof":
        harness.eof(peer)
    elif script.ending == "lost":
        harness.lost(peer)
    elif script.ending == "close":
        harness.close(peer, script.close_code)
        for chunk in script.after_close:
            harness.feed(peer, chunk)
        if script.eof_after_close:
            harness.eof(peer)


# -- regressions ----------------------------------------------------------------------------
# Minimal failing examples found by the search, replayed on every run (test_regression) so
# that the bounded CI search checks them whatever path it takes.


def single(config: str, *chunks: bytes, ending: str = "none") -> Scenario:
    return Scenario(config, False, [Script(list(chunks), ending)])


DEEP = b"[" * 1000 + b"]" * 1000
ROOM = g.websocket_handshake("/c/room")
#: A text frame holding JSON nested 1000 deep (2000 bytes, under the 2048-byte limit).
DEEP_TEXT = single("small", ROOM + g.encode_frame(g.OP_TEXT, DEEP))
#: The same document as an HTTP push body (parsed before any key is checked).
DEEP_PUSH = single("small", b"POST /push/ns HTTP/1.1\r\nHost: h\r\nContent-Length: 2000\r\n\r\n" + DEEP)
#: A HEAD request refused before it is routed (413 here; 431 for a long head).
HEAD_REFUSED = single("small", b"HEAD /version HTTP/1.1\r\nHost: h\r\nContent-Length: 99999\r\n\r\n")
#: The peer closes with an application code; the relay echoes it.
CLOSE_4000 = single("small", ROOM + g.encode_frame(g.OP_CLOSE, b"\x0f\xa0"))
#: Pipelined responses fill a small outbox, so the self-join overflows it: the joiner is
#: kicked inside its own join (while a bystander listens in ``room``), then sends a message.
KICKED_WHILE_JOINING = Scenario(
    "tight_outbox",
    True,
    [Script([b"GET /health HTTP/1.1\r\nHost: h\r\n\r\n" * 8 + ROOM, g.encode_frame(g.OP_TEXT, b'{"hi":1}')])],
)
#: A member with echo overflows its own 1 KiB outbox before the transport flushed the 101
#: response: the slow-consumer close must not discard the handshake response.
SLOW_BEFORE_FLUSH = single(
    "tight_outbox", g.websocket_handshake("/c/room?echo") + g.encode_frame(g.OP_TEXT, b'"' + b"x" * 1000 + b'"')
)
REGRESSIONS = {
    "deep-json-text-frame": DEEP_TEXT,
    "deep-json-push-body": DEEP_PUSH,
    "head-request-refused": HEAD_REFUSED,
    "peer-close-code-4000": CLOSE_4000,
    "kicked-while-joining": KICKED_WHILE_JOINING,
    "slow-consumer-before-flush": SLOW_BEFORE_FLUSH,
}


@pytest.mark.parametrize("name", list(REGRESSIONS))
def test_regression(name: str) -> None:
    """Replay one minimal failing example found by the search."""
    run(REGRESSIONS[name])


# -- tests ----------------------------------------------------------------------------------


@given(scenarios(maybe_mutated(http_streams())))
def test_http_requests(scenario: Scenario) -> None:
    """Requests from the HTTP grammar (pipelined, sometimes mutated) never break the driver."""
    run(scenario)


@given(scenarios(websocket_streams()))
def test_websocket_frames(scenario: Scenario) -> None:
    """After a handshake, every kind of frame, well or badly formed."""
    run(scenario)


@st.composite
def mutated_streams(draw: st.DrawFn) -> bytes:
    """A handshake then mutated frames, or a mutated handshake-and-frames stream."""
    if draw(st.booleans()):
        opening = draw(g.valid_upgrades())
        return opening + draw(g.mutations(b"".join(draw(st.lists(g.frames(UIDS), min_size=1, max_size=10)))))
    return draw(g.mutations(draw(websocket_streams())))


@given(scenarios(mutated_streams()))
def test_mutated_websocket_streams(scenario: Scenario) -> None:
    """Handshakes and frames with byte-level mutations."""
    run(scenario)


@given(scenarios(random_streams()))
def test_random_bytes(scenario: Scenario) -> None:
    """Plain random bytes: on a fresh connection, after a request line, after a handshake."""
    run(scenario)


ECHO_HANDSHAKES = st.sampled_from((g.websocket_handshake("/echo"), g.websocket_handshake("/echo?x")))


@given(scenarios(websocket_streams(handshake=ECHO_HANDSHAKES), configs=("echo",)))
def test_echo_endpoint(scenario: Scenario) -> None:
    """The optional ``/echo`` endpoint gets the same frames."""
    run(scenario)


@given(scenarios(websocket_streams(), peers=st.integers(2, 3)))
def test_interleaved_connections(scenario: Scenario) -> None:
    """Several fuzzed peers (plus the bystander) interleaved on one hub: direct messages,
    broadcasts, joins and leaves cross between them."""
    run(scenario)


def observed(harness: Harness) -> list[tuple[Any, ...]]:
    """Everything each connection's client received, and how each connection ended."""
    return [(t.label, bytes(t.http), t.frames, t.conn.state, t.conn.close_code) for t in harness.tracked]


def without_fast_path(data: bytes, limit: int) -> tuple[list[str], int]:
    return [], 0


FAST_SIZES = (0, 1, 2, 124, 125, 126, 127, 2047, 2048, 2049, 65535, 65536)


@st.composite
def text_heavy_frames(draw: st.DrawFn) -> bytes:
    """Mostly single text frames (what the fast path takes), any mask, any payload; else
    frames it must leave to wsproto: near misses, control frames, fragments, anything."""
    kind = draw(st.integers(0, 9))
    if kind < 6:
        payload = draw(
            st.one_of(
                g.json_texts().map(str.encode),
                st.sampled_from(g.BAD_UTF8),
                st.binary(max_size=12),
                st.sampled_from(FAST_SIZES).map(lambda n: b"a" * n),
                st.text(max_size=20).map(str.encode),
            )
        )
        return g.encode_frame(g.OP_TEXT, payload, mask=draw(st.binary(min_size=4, max_size=4)))
    if kind < 8:
        payload = draw(g.json_texts()).encode()
        near = draw(st.sampled_from(("form16", "form64", "rsv", "unmasked", "unfinished", "binary")))
        if near == "form16":
            return g.encode_frame(g.OP_TEXT, payload, form="16")
        if near == "form64":
            return g.encode_frame(g.OP_TEXT, payload, form="64")
        if near == "rsv":
            return g.encode_frame(g.OP_TEXT, payload, rsv=draw(st.integers(1, 7)))
        if near == "unmasked":
            return g.encode_frame(g.OP_TEXT, payload, mask=None)
        if near == "unfinished":
            return g.encode_frame(g.OP_TEXT, payload, fin=False)
        return g.encode_frame(g.OP_BINARY, payload)
    return draw(g.frames(UIDS))


@st.composite
def fast_path_scenarios(draw: st.DrawFn) -> Scenario:
    config = draw(st.sampled_from(("small", "default", "echo")))
    path = draw(st.sampled_from(("/echo", "/echo?x"))) if config == "echo" else "/c/room?echo"
    data = g.websocket_handshake(path) + b"".join(draw(st.lists(text_heavy_frames(), max_size=12)))
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=12))
    return Scenario(config, True, [Script(g.split(data, cuts), draw(st.sampled_from(ENDINGS)))])


@pytest.mark.parametrize("config", ["small", "default", "echo"])
@pytest.mark.parametrize("size", FAST_SIZES)
def test_fast_path_matches_wsproto_at_the_size_boundaries(config: str, size: int) -> None:
    """Around the 7-bit and 16-bit length forms and the small config's size limit, a JSON
    string, text that is not JSON, and a string cut in a UTF-8 sequence: same outcome."""
    path = "/echo" if config == "echo" else "/c/room?echo"
    json_string = b'"' + b"a" * (size - 2) + b'"' if size >= 2 else b"a" * size
    accents = ("\u00e9" * size).encode()[:size]  # cut inside a character when size is odd
    for payload in (json_string, b"a" * size, accents):
        frame = g.encode_frame(g.OP_TEXT, payload, mask=b"\x01\x02\x03\x04")
        for chunks in ([g.websocket_handshake(path) + frame * 2], [g.websocket_handshake(path), frame, frame]):
            scenario = Scenario(config, True, [Script(chunks)])
            fast = observed(run(scenario))
            with mock.patch.object(connection_module, "take_text_frames", without_fast_path):
                slow = observed(run(scenario))
            assert fast == slow


@given(
    fast_path_scenarios()
    | fast_path_scenarios()
    | scenarios(websocket_streams())
    | scenarios(websocket_streams(handshake=ECHO_HANDSHAKES), configs=("echo",))
)
def test_fast_path_matches_wsproto(scenario: Scenario) -> None:
    """Frames decoded by the fast path (relaycore._fastpath) give byte for byte what the same
    stream gives through wsproto alone: the same frames to every client, the same ends."""
    fast = observed(run(scenario))
    with mock.patch.object(connection_module, "take_text_frames", without_fast_path):
        slow = observed(run(scenario))
    assert fast == slow
