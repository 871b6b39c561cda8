"""The fast path for whole text frames, and the scanner that says when it may run.

The differential fuzz test (tests/fuzzing, ``test_fast_path_matches_wsproto``) checks that
connections behave the same with and without it; these are the plain cases.
"""

from __future__ import annotations

import pytest

from relaycore._fastpath import FrameScanner, take_text_frames

from ._frames import OP_BINARY, OP_PING, OP_TEXT, client_frame, continuation, fragmented, ping, text

LIMIT = 100_000


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 125, 126, 127, 1000, 65535])
@pytest.mark.parametrize("mask", [b"\x00\x00\x00\x00", b"\x37\xfa\x21\x3d", b"\xff\xff\xff\xff"])
def test_a_whole_text_frame_is_unmasked_exactly(size: int, mask: bytes) -> None:
    message = ("\u00e9" * size)[: size // 2] + "x" * (size % 2)
    frame = client_frame(OP_TEXT, message.encode(), mask=mask)
    assert take_text_frames(frame, LIMIT) == ([message], len(frame))


def test_several_frames_in_one_read_come_out_in_order() -> None:
    data = text("one") + text('{"two":2}') + text("") + text("\U0001f600")
    assert take_text_frames(data, LIMIT) == (["one", '{"two":2}', "", "\U0001f600"], len(data))


@pytest.mark.parametrize(
    "stopper",
    [
        pytest.param(text("x", fin=False), id="first-fragment"),
        pytest.param(continuation("x"), id="continuation"),
        pytest.param(client_frame(OP_BINARY, b"x"), id="binary"),
        pytest.param(ping(b"p"), id="control"),
        pytest.param(client_frame(OP_TEXT, b"x", rsv=1), id="reserved-bit"),
        pytest.param(client_frame(OP_TEXT, b"x", mask=None), id="unmasked"),
        pytest.param(text(b'"\xff"'), id="invalid-utf8"),
        pytest.param(text(b"\xe2\x82"), id="utf8-cut-short"),
        pytest.param(text("x" * 65536), id="64-bit-length"),
        pytest.param(b"\x81\xfe\x00\x05\x00\x00\x00\x00hello", id="non-minimal-length"),
        pytest.param(text("x" * 200)[:-1], id="not-fully-arrived"),
        pytest.param(text("x" * 101), id="over-the-limit"),
        pytest.param(b"\x81", id="one-byte"),
    ],
)
def test_the_first_frame_it_does_not_take_ends_the_run(stopper: bytes) -> None:
    head = text("a") + text("b")
    after = text("c")
    assert take_text_frames(head + stopper + after, 100) == (["a", "b"], len(head))


def test_a_frame_at_exactly_the_limit_is_taken() -> None:
    frame = text("x" * 100)
    assert take_text_frames(frame, 100) == (["x" * 100], len(frame))


def boundaries(stream: bytes) -> list[int]:
    """Offsets at which a scanner fed byte by byte says it is at rest."""
    scanner = FrameScanner()
    seen = [0] if scanner.at_rest else []
    for i in range(len(stream)):
        scanner.feed(stream[i : i + 1])
        if scanner.at_rest:
            seen.append(i + 1)
    return seen


def test_the_scanner_is_at_rest_only_between_frames_outside_fragmented_messages() -> None:
    a, b = text("hello"), ping(b"p")
    frag = fragmented("abcdef", 2, 2, 2)
    big = text("y" * 300)  # 16-bit length
    huge = text("z" * 70_000)  # 64-bit length
    stream = a + b + frag + big + huge
    ends = [len(a), len(a) + len(b), len(a) + len(b) + len(frag)]
    ends += [ends[-1] + len(big), ends[-1] + len(big) + len(huge)]
    assert boundaries(stream) == [0, *ends]


def test_a_control_frame_inside_a_fragmented_message_is_not_a_rest() -> None:
    first = text("ab", fin=False)
    middle = ping(b"!")
    last = continuation("cd")
    stream = first + middle + last
    assert boundaries(stream) == [0, len(stream)]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1000])
def test_the_scanner_gives_the_same_answer_whatever_the_read_sizes(chunk: int) -> None:
    stream = text("a" * 130) + text("b", fin=False) + continuation("c") + client_frame(OP_PING, b"") + text("d")
    scanner = FrameScanner()
    for start in range(0, len(stream), chunk):
        scanner.feed(stream[start : start + chunk])
    assert scanner.at_rest
    scanner.feed(stream[:5])
    assert not scanner.at_rest
