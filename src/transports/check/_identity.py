"""Section 7 of the contract, identity and ordering (seen through :mod:`transports.client`)."""

from __future__ import annotations

from contextlib import AsyncExitStack

import anyio

from transports.client import Channel
from transports.client import Error as ErrorEvent
from transports.client import Message as MessageEvent

from ._expect import UID, expect, member
from ._registry import Failed, check
from ._wire import Probe, cut

__all__: list[str] = []  # the checks register themselves in CHECKS


@check("7.uid")
async def _uids(p: Probe) -> str:
    """A uid is 6 characters ``[A-Za-z0-9]``, unique within the channel, new on every connection
    (seen through transports.client)."""
    channel = p.fresh()
    async with AsyncExitStack() as stack:
        members = [await member(stack, p, channel, f"M{n}") for n in range(5)]
        uids = [joined.uid for joined in members]
        expect(len(set(uids)) == len(uids), f"uids repeat within the channel: {uids}")
        expect(all(UID.fullmatch(uid) for uid in uids), f"uids that are not 6 characters [A-Za-z0-9]: {uids}")
        await members[0].close()
        again = await member(stack, p, channel, "M0 again")
        expect(again.uid not in uids, f"a new connection got the uid {again.uid} again")
    return f"5 distinct uids, and a new one on reconnection ({', '.join(uids)})"


@check("7.order")
async def _order(p: Probe) -> str:
    """Per connection, relays arrive in the order they were received from each sender: two
    senders of 200 messages each, interleaved, one receiver (transports.client)."""
    channel, count = p.fresh(), 200
    async with AsyncExitStack() as stack:
        receiver = await member(stack, p, channel, "R")
        senders = [await member(stack, p, channel, label) for label in ("S1", "S2")]

        async def send_all(sender: Channel) -> None:
            for n in range(count):
                await sender.send({"n": n})

        p.waiting = f"R: {2 * count} messages"
        seen: dict[str | None, list[int]] = {sender.uid: [] for sender in senders}
        async with anyio.create_task_group() as tg:
            for sender in senders:
                tg.start_soon(send_all, sender)
            while sum(map(len, seen.values())) < 2 * count:
                event = await receiver.receive()
                if isinstance(event, MessageEvent) and event.uid in seen:
                    seen[event.uid].append(event.message["n"])
                elif isinstance(event, ErrorEvent):
                    raise Failed(f"R got an error: {event.message!r}")
    for uid, numbers in seen.items():
        p.log(f"R < from {uid}: {cut(str(numbers))}")
        expect(numbers == list(range(count)), f"the messages of {uid} came out of order")
    return f"{count} + {count} messages, each sender's in order"
