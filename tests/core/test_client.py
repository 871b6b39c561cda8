"""The client's side of the wire (relaycore.client), against the relay's own Connection: no I/O."""

from __future__ import annotations

import msgspec
import pytest

from relaycore import Config, Connection, Hub, RelayUsageError, RelayValueError
from relaycore.client import (
    Accepted,
    Binary,
    ClientConnection,
    ClientState,
    Closed,
    HTTPExchange,
    Refused,
    Text,
    client_frame,
    parse_url,
)
from relaycore.testing import FakeClock, seeded_uids

from ._frames import parse_frames

CONFIG = '[namespaces."locked"]\njoin_key = "jk"\n[namespaces."app"]\nsend_key = "sk"\n[limits]\nping_interval = 5'


@pytest.fixture
def hub() -> Hub:
    return Hub(Config.from_toml(CONFIG, env={}), FakeClock(), seeded_uids(3))


def written(server: Connection) -> bytes:
    data = bytes(server.outbox.view())
    server.outbox.consume(len(data))
    return data


def dial(hub: Hub, target: str, **policy: object) -> tuple[Connection, ClientConnection, list[object]]:
    server = Connection(hub, client="127.0.0.1")
    client = ClientConnection("relay.example", target, **policy)  # type: ignore[arg-type]
    server.receive_data(client.request())
    return server, client, list(client.receive_data(written(server)))


def test_the_answer_and_the_self_join_in_one_read(hub: Hub) -> None:
    _, client, events = dial(hub, "/c/room?alias=Ann")
    assert isinstance(events[0], Accepted) and client.state is ClientState.OPEN
    assert isinstance(events[1], Text)
    hello = msgspec.json.decode(events[1].data)
    assert (hello["type"], hello["self"], hello["alias"]) == ("join", True, "Ann")


def test_a_refusal_is_its_status_headers_and_body(hub: Hub) -> None:
    _, client, events = dial(hub, "/c/locked:room")
    (refused,) = events
    assert isinstance(refused, Refused)
    assert (refused.status, refused.body) == (403, b"Joining requires a valid joinKey.")
    assert ("content-type", "text/plain; charset=utf-8") in refused.headers
    assert client.state is ClientState.CLOSED


def test_messages_both_ways_and_the_leave(hub: Hub) -> None:
    ann_server, ann, _ = dial(hub, "/c/room")
    bob_server, bob, _ = dial(hub, "/c/room")
    written(ann_server)  # Bob's join, for Ann
    ann_server.receive_data(ann.send_text('{"n":1}'))
    (relayed,) = bob.receive_data(written(bob_server))
    assert isinstance(relayed, Text) and msgspec.json.decode(relayed.data)["message"] == {"n": 1}
    bob_server.receive_data(bob.close(1000, "bye"))
    closed = bob.receive_data(written(bob_server))
    assert closed == [Closed(1000, "bye")] and bob.state is ClientState.CLOSED
    (leave,) = ann.receive_data(written(ann_server))
    assert isinstance(leave, Text) and msgspec.json.decode(leave.data)["type"] == "leave"


def test_a_ping_is_answered_unless_told_not_to(hub: Hub) -> None:
    for answer in (True, False):
        server, client, _ = dial(hub, "/c/room", answer_pings=answer)
        server.tick(hub.clock.monotonic() + 5)  # the relay's ping is due
        assert client.receive_data(written(server)) == []
        pong = client.data_to_send()
        frames = [] if not pong else [frame.opcode for frame in parse_frames(pong, masked=True)]
        assert frames == ([0xA] if answer else [])


def test_the_relays_close_is_answered_and_reported_once(hub: Hub) -> None:
    server, client, _ = dial(hub, "/c/room")
    server.shutdown()
    assert client.receive_data(written(server)) == [Closed(1001, "server shutting down")]
    (answer,) = parse_frames(client.data_to_send(), masked=True)
    assert answer.opcode == 0x8 and answer.close_code == 1001
    assert client.receive_data(b"") == []  # the end of the stream says nothing more


def test_the_end_of_the_stream_without_a_close_frame_is_1006(hub: Hub) -> None:
    _, client, _ = dial(hub, "/c/room")
    (ended,) = client.receive_data(b"")
    assert isinstance(ended, Closed) and ended.code == 1006


def test_no_answer_to_the_upgrade_is_1006_with_the_reason() -> None:
    client = ClientConnection("relay.example", "/c/room")
    client.request()
    (ended,) = client.receive_data(b"")
    assert ended == Closed(1006, "the relay closed the connection without answering the upgrade")
    client = ClientConnection("relay.example", "/c/room")
    client.request()
    (ended,) = client.receive_data(b"SSH-2.0-OpenSSH\r\n\r\n")
    assert isinstance(ended, Closed) and ended.reason.startswith("an invalid answer to the upgrade: ")


def server_text(payload: bytes) -> bytes:
    return bytes([0x81, len(payload)]) + payload


def server_binary(payload: bytes) -> bytes:
    return bytes([0x82, len(payload)]) + payload


def opened(**policy: object) -> ClientConnection:
    """A client whose upgrade was accepted, fed by hand."""
    hub = Hub(Config(), FakeClock(), seeded_uids(1))
    _, client, _ = dial(hub, "/c/room", **policy)
    return client


def test_over_max_message_bytes_the_client_closes_1009() -> None:
    client = opened(max_message_bytes=10)
    assert client.receive_data(server_text(b'"' + b"x" * 20 + b'"')) == []
    (close,) = parse_frames(client.data_to_send(), masked=True)
    assert close.close_code == 1009 and client.state is ClientState.CLOSING


def test_binary_is_delivered_or_refused_with_1003() -> None:
    assert opened(binary=True).receive_data(server_binary(b"\x01\x02")) == [Binary(b"\x01\x02")]
    refusing = opened(binary=False)
    assert refusing.receive_data(server_binary(b"\x01\x02")) == []
    (close,) = parse_frames(refusing.data_to_send(), masked=True)
    assert close.close_code == 1003


def test_what_arrives_after_our_close_is_not_wanted_unless_asked_for() -> None:
    client = opened()
    client.close()
    assert client.receive_data(server_text(b'"late"')) == []
    client = opened(after_close=True)
    client.close()
    assert client.receive_data(server_text(b'"late"')) == [Text('"late"')]


def test_sending_is_for_an_open_connection_only() -> None:
    waiting = ClientConnection("relay.example", "/c/room")
    waiting.request()
    closing = opened()
    closing.close()
    for client in (waiting, closing):
        with pytest.raises(RelayUsageError, match="not open"):
            client.send_text("x")
        with pytest.raises(RelayUsageError, match="not open"):
            client.send_binary(b"x")
        assert client.close() == b""


def test_an_http_exchange_with_the_relay(hub: Hub) -> None:
    server = Connection(hub, client="127.0.0.1")
    exchange = HTTPExchange("relay.example", "POST", "/push/app:x", b'{"a":1}', [("x-send-key", "sk")])
    server.receive_data(exchange.request())
    answer = exchange.receive_data(written(server))
    assert answer is not None and answer.status == 200
    assert msgspec.json.decode(answer.body) == {"ok": True, "recipients": 0}
    assert answer.headers["content-type"] == "application/json"


def test_an_answer_that_is_not_http_is_an_error() -> None:
    exchange = HTTPExchange("relay.example", "GET", "/health")
    exchange.request()
    with pytest.raises(RelayValueError, match="the relay closed the connection without an HTTP answer"):
        exchange.receive_data(b"")


def test_a_urls_request_target() -> None:
    assert parse_url("ws://h/c/room?alias=Ann").target == "/c/room?alias=Ann"
    assert parse_url("https://h:8443/base").target == "/base"


@pytest.mark.parametrize("url", ["ftp://x/", "ws://", "x", "ws://host:99999/"])
def test_a_url_that_is_no_relays_is_an_error(url: str) -> None:
    with pytest.raises(RelayValueError):
        parse_url(url)


def test_client_frames_are_masked_and_read_back_by_the_relay(hub: Hub) -> None:
    server, _, _ = dial(hub, "/c/room", binary=True)
    other_server, _, _ = dial(hub, "/c/room")
    written(server)
    frame = client_frame(0x1, b'{"big":"' + b"y" * 70_000 + b'"}', b"\x12\x34\x56\x78")
    assert frame[1] & 0x80 and frame[1] & 0x7F == 127  # masked, with a 64-bit length
    server.receive_data(frame)
    (relayed,) = parse_frames(written(other_server))
    assert msgspec.json.decode(relayed.payload)["message"] == {"big": "y" * 70_000}
