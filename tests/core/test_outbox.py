"""relaycore._outbox: the bytes a connection is owed, under one bound.

The module's theory of operation, held to: the first put puts the outbox on the hub's ready
list (once); a relayed message over the bound is refused and marks the outbox overflowed
(all of a batch or none of it); bytes the relay owes the peer itself are never refused but
count; the self-join is never refused and never marks it; a slow consumer's backlog is
dropped on a frame boundary, keeping what must still go out. How the hub and the drivers use
it is tested with them (test_hub.py, test_crowd.py, test_connection.py).
"""

from __future__ import annotations

from relaycore import MESSAGES, WEBSOCKET, MessageOutbox, Outbox
from relaycore._outbox import BATCH


def outbox(limit: int = 10) -> tuple[Outbox, list[Outbox]]:
    ready: list[Outbox] = []
    return Outbox(limit, ready), ready


def test_the_first_put_puts_it_on_the_ready_list_once() -> None:
    box, ready = outbox()
    assert not box and ready == []
    assert box.put(b"a", b"<a>") and box.put(b"b", b"<b>")
    assert ready == [box] and box.queued and box.size == 6 and box
    assert box.view() == b"<a><b>"


def test_a_relayed_message_over_the_bound_is_refused_and_the_outbox_stays_overflowed() -> None:
    box, _ = outbox(limit=10)
    assert box.put(b"", b"12345678") and box.room() == 2
    assert not box.put(b"", b"123")  # 11 > 10: nothing queued
    assert (box.size, box.overflowed, box.room()) == (8, True, -1)
    assert not box.put(b"", b"1")  # would fit, but the consumer is already slow
    assert box.view() == b"12345678"


def test_a_batch_is_queued_whole_or_not_at_all() -> None:
    box, _ = outbox(limit=10)
    assert box.put_batch([b"x", b"y"], b"<x><y>") and box.size == 6
    assert not box.put_batch([b"z", b"w"], b"<z><w>") and box.size == 6 and box.overflowed


def test_what_the_relay_owes_the_peer_is_never_refused_but_counts() -> None:
    box, ready = outbox(limit=4)
    box.write(b"HTTP/1.1 101")
    assert (box.size, box.overflowed, ready) == (12, True, [box])
    box.write(b"")  # nothing to queue, nothing to count
    assert box.size == 12


def test_the_self_join_is_never_refused_and_never_marks_it() -> None:
    box, _ = outbox(limit=4)
    box.put_always(b"", b"the self-join")
    assert (box.size, box.overflowed) == (13, False)
    assert not box.put(b"", b"x") and box.overflowed  # nothing more until it drains


def test_the_view_joins_up_to_a_batch_and_consume_keeps_the_rest() -> None:
    box, _ = outbox(limit=4 * BATCH)
    chunks = [bytes([n]) * (BATCH // 2) for n in range(4)]
    for chunk in chunks:
        assert box.put(b"", chunk)
    first = box.view()
    assert first == chunks[0] + chunks[1] and box.view() is first  # joined once, kept
    box.consume(len(first) - 1)
    assert box.size == BATCH + 1
    rest = box.view()
    assert rest == chunks[1][-1:] + chunks[2] + chunks[3]  # the byte left, then on from there
    box.consume(len(rest))
    assert (box.size, box.view(), bool(box)) == (0, b"", False)


def test_a_slow_consumer_s_backlog_goes_but_what_must_go_out_stays_on_a_frame_boundary() -> None:
    box, _ = outbox(limit=1000)
    box.write(b"<101>")  # the handshake: pinned
    box.put_always(b"", b"<self-join>")  # pinned
    box.put(b"", b"<relayed 1>")
    box.write(b"<pong>", pin=False)
    box.put(b"", b"<relayed 2>")
    box.consume(len(b"<101><self-join><rel"))  # the kernel took part of the first relayed frame
    box.write(b"<close 1008>")
    box.drop_backlog()
    assert box.view() == b"ayed 1><close 1008>"  # the frame begun ends; the close follows
    assert box.size == len(b"ayed 1><close 1008>")


def test_the_backlog_of_a_consumer_that_took_nothing_keeps_only_the_pinned() -> None:
    box, _ = outbox(limit=1000)
    box.write(b"<101>")
    box.put(b"", b"<relayed>")
    box.write(b"<pong>", pin=False)
    box.drop_backlog()
    assert box.view() == b"<101>"


def test_take_hands_over_every_chunk_in_order() -> None:
    box, _ = outbox(limit=100)
    box.write(b"<a>")
    box.put(b"", b"<b>")
    assert box.take() == [b"<a>", b"<b>"] and box.size == 0 and not box


def test_a_message_outbox_counts_and_hands_over_whole_payloads() -> None:
    ready: list[Outbox] = []
    box = MessageOutbox(8, ready)
    assert box.form is MESSAGES and Outbox(8, []).form is WEBSOCKET
    box.put_always(b'"hello"', b"<framed hello>")
    assert box.put(b"[1]", b"<framed [1]>") is False  # 7 + 3 > 8: the payload is what counts
    assert box.overflowed and ready == [box]
    other = MessageOutbox(8, ready)
    assert other.put_batch([b"1", b"22"], b"<1><22>") and other.size == 3
    assert not other.put_batch([b"333", b"4444"], b"") and other.size == 3  # all or nothing
    assert box.take() == [b'"hello"'] and other.take() == [b"1", b"22"]
