"""A channel's broadcast to members of several wire forms (no I/O): each member gets its own
form's bytes, rendered once per form and shared by every member of that form; the sender is
skipped, slow consumers of any form depart together, and the tally counts every delivery."""

from __future__ import annotations

import json
from typing import Any

from relaycore import MESSAGES, NDJSON, SSE, WEBSOCKET, Config, Hub, JoinOptions, Member, WireForm
from relaycore._deflate import deflate_form
from relaycore.testing import FakeClock, seeded_uids

FORMS = [WEBSOCKET, SSE, NDJSON, MESSAGES, WEBSOCKET, SSE, NDJSON, MESSAGES]


class Session:
    def __init__(self) -> None:
        self.kicks: list[tuple[int, str]] = []

    def kick(self, code: int, reason: str) -> None:
        self.kicks.append((code, reason))


def channel_of(forms: list[WireForm], config: Config | None = None) -> tuple[Hub, list[Member]]:
    hub = Hub(config or Config(), FakeClock(1_700_000_000.0), seeded_uids(3))
    members = []
    for form in forms:
        member = hub.join("mixed", JoinOptions(echo=True), hub.new_outbox(form), Session())
        assert member is not None
        members.append(member)
    for member in members:
        member.outbox.take()  # the joins
    return hub, members


def payload_of(form: WireForm, data: bytes) -> Any:
    """The JSON a member of ``form`` got in ``data`` (one message)."""
    if form is WEBSOCKET:
        assert data[0] == 0x81
        return json.loads(data[2:] if data[1] < 126 else data[4:])
    if form is SSE:
        assert data.startswith(b"data: ") and data.endswith(b"\n\n")
        return json.loads(data[6:-2])
    if form is NDJSON:
        assert data.endswith(b"\n") and data.count(b"\n") == 1
        return json.loads(data)
    return json.loads(data)


def test_each_form_gets_its_own_bytes_made_once_and_shared() -> None:
    hub, members = channel_of(FORMS)
    sender = members[0]
    assert hub.receive(sender, '{"text": "hello"}') is None
    got: dict[WireForm, list[bytes]] = {}
    for member in members:
        (data,) = member.outbox.take()
        assert payload_of(member.outbox.form, data)["message"] == {"text": "hello"}
        got.setdefault(member.outbox.form, []).append(data)
    for form, chunks in got.items():
        assert len(chunks) == 2 and chunks[0] is chunks[1], f"{form} rendered twice"
    channel = sender.channel
    assert channel.tally.delivered == len(members)


def test_the_sender_is_skipped_in_a_mixed_channel_and_a_lone_websocket_channel_alike() -> None:
    for forms in (FORMS, [WEBSOCKET] * 4):
        hub, members = channel_of(forms)
        sender = members[1]
        sender.echo = False
        assert hub.receive(sender, '"x"') is None
        assert [bool(m.outbox) for m in members] == [m is not sender for m in members]
        assert sender.channel.tally.delivered == len(members) - 1


def test_the_groups_follow_joins_and_leaves() -> None:
    hub, members = channel_of([WEBSOCKET, WEBSOCKET])
    channel = members[0].channel
    assert channel.forms == (), "every member on WebSocket: the plain delivery"
    late = hub.join("mixed", JoinOptions(), hub.new_outbox(SSE), Session())
    assert late is not None
    assert [(form, len(group)) for form, group in channel.forms] == [(WEBSOCKET, 2), (SSE, 1)]
    hub.leave(late)
    assert channel.forms == ()
    hub.receive(members[0], '"after"')
    assert all(payload_of(WEBSOCKET, m.outbox.take()[-1])["message"] == "after" for m in members[1:])


def test_deflate_members_get_their_forms_frame_beside_plain_ones() -> None:
    form = deflate_form(15, 6, 16)
    hub, members = channel_of([WEBSOCKET, form, SSE, form])
    hub.receive(members[0], json.dumps({"text": "y" * 200}))
    chunks = [m.outbox.take() for m in members]
    assert chunks[1][0] is chunks[3][0] and chunks[1][0][0] == 0xC1, "compressed once, RSV1 set"
    assert payload_of(SSE, chunks[2][0])["message"] == {"text": "y" * 200}


def test_slow_consumers_of_every_form_depart_together_and_the_others_get_it() -> None:
    config = Config()
    config.limits.outbound_buffer_bytes = 4096
    hub, members = channel_of(FORMS, config)
    big = json.dumps("z" * 3000)
    stalled = {members[2].uid, members[5].uid}
    for member in members:
        if member.uid in stalled:
            member.outbox.write(b"." * 2000, pin=False)  # owed bytes it never read
    hub.receive(members[0], big)
    for member in members:
        if member.uid in stalled:
            assert member.session.kicks == [(1008, "slow consumer")]  # type: ignore[attr-defined]
            assert not member.joined
        else:
            assert payload_of(member.outbox.form, member.outbox.take()[0])["message"] == "z" * 3000
    channel = members[0].channel
    assert channel.tally.dropped["slow_consumer"] == 2
    assert channel.tally.delivered == len(members) - 2
