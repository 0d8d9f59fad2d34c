"""The event hub on its own (no server): retention, installs, no-ops, the replay/live seam.

The stream handlers and the Raft hook are covered by test_events.py against real
processes; these tests drive :class:`EventHub` with real core commands and results.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastpaca_server.api.events import EventHub, Subscription
from fastpaca_server.core import (
    AppendMessages,
    ContextConfig,
    MessageInput,
    Purge,
    PutContext,
    Redact,
    StateMachine,
)


def _message(text: str) -> MessageInput:
    return MessageInput(
        id=f"id-{text}",
        role="user",
        parts=[{"type": "text", "text": text}],
        metadata=None,
        token_count=1,
        part_tokens=[1],
    )


class World:
    """A state machine whose applied commands go to a hub, as the Raft hook hands them."""

    def __init__(self, **limits: Any) -> None:
        self.hub = EventHub(**limits)
        self.machine = StateMachine()
        self.at = 0

    def apply(self, command: Any) -> Any:
        result = self.machine.apply(command)
        self.hub.publish(command, result, None)
        return result

    def create(self, context_id: str) -> None:
        self.at += 1
        self.apply(PutContext(context_id, self.at, ContextConfig(token_budget=10_000)))

    def append(self, context_id: str, *texts: str, key: str | None = None) -> Any:
        self.at += 1
        messages = [_message(text) for text in texts]
        command = AppendMessages(
            context_id, self.at, messages, "o200k_base", idempotency_key=key, fingerprint=key
        )
        return self.apply(command)


def _drain(subscription: Subscription) -> list[tuple[str, int]]:
    events = []
    while (entry := subscription.pop()) is not None:
        events += [(event["type"], event["version"]) for event in entry.events()]
    return events


def run(body: Any) -> None:
    async def main() -> None:
        body()

    asyncio.run(main())


def test_retention_per_context_and_per_node() -> None:
    def body() -> None:
        world = World(retain=3, retain_total=8)
        world.create("a")  # a: version 1, one event
        world.create("b")  # b: version 1, one event
        for number in range(4):
            world.append("a", f"a{number}")  # a: versions 2 … 5, two events each
        # Per context, a keeps its last 3 versions (6 events); with b's one, 7 events.
        assert _drain(world.hub.subscribe("b", 0)) == [("context", 1)]
        replay = _drain(world.hub.subscribe("a", 0))
        assert replay[0] == ("gap", 2)
        assert [version for _, version in replay[1:]] == [3, 3, 4, 4, 5, 5]
        # Per node, 8 events: the oldest version node-wide goes first (b's 1, then a's 3).
        world.append("b", "b0")
        assert _drain(world.hub.subscribe("b", 0)) == [("gap", 1), ("message", 2), ("context", 2)]
        assert _drain(world.hub.subscribe("a", 0))[0] == ("gap", 2)
        world.append("b", "b1")
        assert _drain(world.hub.subscribe("a", 0))[0] == ("gap", 3)
        assert _drain(world.hub.subscribe("b", 1))[0] == ("message", 2)

    run(body)


def test_no_ops_and_idempotent_replays_are_no_events() -> None:
    def body() -> None:
        world = World()
        world.create("a")
        live = world.hub.subscribe("a", 1)
        world.append("a", "once", key="k")
        world.append("a", "once", key="k")  # the replay: same version, no event
        world.at += 1
        world.apply(PutContext("a", world.at, ContextConfig(token_budget=10_000)))  # no change
        assert _drain(live) == [("message", 2), ("context", 2)]

    run(body)


def test_a_subscription_drops_versions_it_already_has() -> None:
    """A client that read version N over REST subscribes with cursor N before the hub has
    published N: the live delivery of N is dropped, N + 1 is not."""

    def body() -> None:
        world = World()
        world.create("a")
        early = world.hub.subscribe("a", 2)  # the client already has version 2
        world.append("a", "two")
        world.append("a", "three")
        assert _drain(early) == [("message", 3), ("context", 3)]

    run(body)


def test_an_install_that_moves_a_version_is_a_gap_for_subscribers() -> None:
    def body() -> None:
        world = World()
        world.create("a")
        world.append("a", "one")
        live = world.hub.subscribe("a", 2)
        world.hub.installed({"a": 7})  # e.g. a snapshot from a leader
        assert _drain(live) == [("gap", 7)]
        gap = world.hub.subscribe("a", 0)
        assert [entry.events()[0] for entry in [gap.pop()]] == [
            {"type": "gap", "version": 7, "expected": 1, "actual": 8}
        ]

    run(body)


def test_slow_subscribers_are_ended_not_waited_for() -> None:
    def body() -> None:
        world = World(queue_limit=2)
        world.create("a")
        slow = world.hub.subscribe("a", 1)
        for number in range(3):
            world.append("a", f"m{number}")
        assert slow.ended.done() and slow.ended.result() == "slow_consumer"
        assert [version for _, version in _drain(slow)] == [2, 2, 3, 3]
        world.append("a", "after")  # no longer subscribed
        assert _drain(slow) == []

    run(body)


def test_an_erasure_drops_what_the_hub_retained_of_the_context() -> None:
    """Retained and queued versions hold message content: a redact drops them (queued
    subscribers get a gap), a purge too, and ends every feed with ``tombstoned``."""

    def body() -> None:
        world = World()
        world.create("a")
        world.create("b")
        world.append("a", "secret", "public")  # a: version 2
        world.append("b", "other")
        behind = world.hub.subscribe("a", 0)  # the replay of versions 1-2 is queued
        world.apply(Redact("a", 10, 1, 5, [1]))  # a: version 3
        assert _drain(behind) == [("gap", 2), ("context", 3)]
        replay = world.hub.subscribe("a", 0)
        assert _drain(replay) == [("gap", 2), ("context", 3)]  # nothing before the redact
        assert all(entry.context_id != "a" or entry.version >= 3 for entry in world.hub._order)
        assert [e for e, _ in _drain(world.hub.subscribe("b", 0))] == [
            "context",
            "message",
            "context",
        ]
        world.apply(Purge("a", 11, "ops"))  # a: version 4
        assert _drain(replay) == [("tombstoned", 4)]
        late = world.hub.subscribe("a", 0, tombstoned_at=4)
        assert _drain(late) == [("gap", 3), ("tombstoned", 4)]

    run(body)
