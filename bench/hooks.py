"""The cost of the host's hooks on the message path, in one process (no sockets).

A hub with one channel of N members behind outboxes that are emptied after each message;
one member sends the same small chat message again and again. Printed: microseconds per
message and nanoseconds per delivery, without hooks, with a trivial ``on_message`` (it
returns the message as it came, so the original bytes are relayed) and with one that
rewrites it (the replacement is encoded once for every recipient).

    python bench/hooks.py [--members 100] [--messages 20000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from relaycore import Config, Hooks, Hub, JoinOptions, Member
from relaycore.testing import FakeClock, seeded_uids

MESSAGE = '{"type":"chat","text":"hello there, how is everyone doing today?","n":12345}'


class _Session:
    def kick(self, code: int, reason: str) -> None:
        pass


def hub_with(members: int, hooks: Hooks) -> tuple[Hub, Member]:
    config = Config()
    config.limits.messages_per_second = 1e12
    config.limits.messages_burst = 10**12
    config.limits.connections_per_second_per_ip = 1e12
    hub = Hub(config, FakeClock(), seeded_uids(1))
    hub.hooks = hooks
    first = None
    for _ in range(members):
        member = hub.join("room", JoinOptions(), hub.new_outbox(), _Session())
        assert member is not None
        first = first or member
    assert first is not None
    return hub, first


def run(members: int, messages: int, hooks: Hooks) -> float:
    """Seconds per message."""
    hub, sender = hub_with(members, hooks)
    outboxes = [m.outbox for m in sender.channel.members.values()]
    receive = hub.receive
    started = time.perf_counter()
    for _ in range(messages):
        receive(sender, MESSAGE)
        hub.ready.clear()
        for outbox in outboxes:
            outbox.take()
            outbox.queued = False
    return (time.perf_counter() - started) / messages


def same(member: Member, message: Any) -> Any:
    return message


def rewrite(member: Member, message: Any) -> Any:
    return {**message, "text": message["text"].upper()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    cases = {
        "no hooks": Hooks(),
        "on_message (same)": Hooks(on_message=same),
        "on_message (rewrite)": Hooks(on_message=rewrite),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, hooks in cases.items():  # in turn, so that a busy moment touches every case
            results[name].append(run(args.members, args.messages, hooks))
    base = statistics.median(results["no hooks"])
    print(f"{args.members} members, {args.messages} messages per run, median of {args.runs} runs")
    for name, values in results.items():
        per = statistics.median(values)
        print(
            f"{name:22} {per * 1e6:8.2f} us/message  {per / (args.members - 1) * 1e9:7.1f} ns/delivery"
            f"  {(per - base) * 1e6:+7.2f} us  ({per / base:.2f}x)"
        )


if __name__ == "__main__":
    main()
