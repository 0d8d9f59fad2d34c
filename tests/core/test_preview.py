"""``preview``: the window a context would have under another config, without changing it."""

from __future__ import annotations

import contextlib
import json
import random
from typing import Any

import pytest
from core_builders import (
    TOKENIZER,
    append,
    compact,
    config,
    ids,
    machine_with,
    message_input,
    text,
    tool_call,
    tool_result,
)
from fastpaca_server.core import (
    AppendMessages,
    Command,
    ContextConfig,
    DomainError,
    MessageInput,
    Policy,
    PutContext,
    StateMachine,
    Tombstone,
)
from fastpaca_server.core import preview as previews
from fastpaca_server.core import window as windows
from fastpaca_server.core.models import converter
from fastpaca_server.core.preview import Preview, preview
from fastpaca_server.tokens import MESSAGE_OVERHEAD

# --- helpers -------------------------------------------------------------------------


def missing_ranges(kept: set[int], last_seq: int) -> list[tuple[int, int]]:
    """The inclusive ranges of ``1..last_seq`` not in ``kept`` (computed the slow way)."""
    ranges: list[tuple[int, int]] = []
    for seq in range(1, last_seq + 1):
        if seq in kept:
            continue
        if ranges and ranges[-1][1] == seq - 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges


def check_consistent(result: Preview, machine: StateMachine, context_id: str = "c") -> None:
    """What holds for every preview: dropped, changed and segments agree with the messages."""
    context = machine.get(context_id)
    seqs = [m.seq for m in result.messages]
    assert all(seq is not None for seq in seqs)
    assert seqs == sorted(seqs)  # type: ignore[type-var]
    kept = {seq for seq in seqs if seq is not None}
    assert result.dropped == missing_ranges(kept, context.last_seq)
    assert result.used_tokens == windows.window_tokens(result.messages)
    assert result.segments == windows.segments(result.messages)
    refused = {entry["seq"] for entry in result.refused}
    assert not refused & kept
    for message in result.messages:
        original = context.log[(message.seq or 0) - 1]
        assert (message.id, message.role, message.created_at) == (
            original.id,
            original.role,
            original.created_at,
        )


# --- random histories ----------------------------------------------------------------

STRATEGIES = ("last_n", "skip_parts", "budget", "time_window", "manual")
"""Strategies of the random histories (each seed uses ``STRATEGIES[seed % 5]``)."""


def random_config(rng: random.Random, strategy: str) -> ContextConfig:
    budget = rng.randint(40, 260)
    trigger = rng.choice([0.3, 0.5, 0.7, 0.9, 1.0])
    if strategy == "last_n":
        policy = Policy("last_n", {"limit": rng.randint(1, 10)})
    elif strategy == "skip_parts":
        kinds = rng.sample(["tool", "reasoning", "dynamic-tool", "tool_call", "tool_result"], 2)
        policy = Policy("skip_parts", {"limit": rng.randint(2, 12), "skip_kinds": kinds})
    elif strategy == "budget":
        policy = Policy("budget", {"target_ratio": rng.choice([0.2, 0.5, 0.8, 1.0])})
    elif strategy == "time_window":
        policy = Policy("time_window", {"max_age_seconds": rng.randint(1, 20)})
    else:
        assert strategy == "manual"
        policy = Policy("manual", {})
    return ContextConfig(
        token_budget=budget, trigger_ratio=trigger, policy=policy, tokenizer=TOKENIZER
    )


def random_message(rng: random.Random, n: int, open_calls: list[str]) -> MessageInput:
    """One message of a random conversation (``open_calls``: calls not answered yet)."""
    kind = rng.choices(
        ["user", "assistant", "system", "pinned", "call", "result", "mixed", "orphan"],
        weights=[6, 4, 1, 1, 3, 3, 2, 1],
    )[0]
    tokens = rng.randint(0, 12)
    if kind in ("user", "assistant", "system"):
        return message_input(f"m{n}", kind, [{"type": "text", "text": f"{kind} {n}"}], [tokens])
    if kind == "pinned":
        return message_input(
            f"m{n}", "user", [{"type": "text", "text": f"pin {n}"}], [tokens], {"pinned": True}
        )
    if kind == "call":
        calls = [f"call-{n}-{i}" for i in range(rng.randint(1, 2))]
        open_calls.extend(calls)
        parts: list[dict[str, Any]] = [{"type": "text", "text": "checking"}] * rng.randint(0, 1)
        parts += [{"type": "tool_call", "id": c, "name": "weather", "payload": {}} for c in calls]
        return message_input(f"m{n}", "assistant", parts, [rng.randint(0, 8) for _ in parts], None)
    if kind == "result" and open_calls:
        answered = rng.sample(open_calls, min(len(open_calls), rng.randint(1, 2)))
        for call in answered:
            open_calls.remove(call)
        parts = [{"type": "tool_result", "tool_call_id": c, "output": "sunny"} for c in answered]
        return message_input(f"m{n}", "tool", parts, [rng.randint(0, 8) for _ in parts])
    if kind == "orphan":
        parts = [{"type": "tool_result", "tool_call_id": "nobody", "output": "?"}]
        return message_input(f"m{n}", "tool", parts, [tokens])
    choices: list[dict[str, Any]] = [
        {"type": "reasoning", "text": "thinking"},
        {"type": "tool-weather", "toolCallId": "x", "state": "output-available"},
        {"type": "dynamic-tool", "toolName": "search", "state": "input-available"},
        {"type": "step-start"},
        {"type": "text", "text": "answer"},
    ]
    parts = [rng.choice(choices) for _ in range(rng.randint(1, 3))]
    return message_input(f"m{n}", "assistant", parts, [rng.randint(0, 8) for _ in parts])


def random_history(seed: int, strategy: str) -> StateMachine:
    """A context ``c`` under one random config of ``strategy``: about 60 appends
    (single messages and batches, tool calls with their results among them) at
    increasing times; appends the machine refuses are left out of the log."""
    rng = random.Random(seed)
    machine = machine_with(random_config(rng, strategy))
    open_calls: list[str] = []
    at = 1_000
    n = 0
    for _ in range(60):
        at += rng.choice([0, 1, 300, 2_000, 7_000])
        size = rng.choices([1, 2, 3], weights=[6, 2, 1])[0]
        batch = []
        for _ in range(size):
            n += 1
            batch.append(random_message(rng, n, open_calls))
        with contextlib.suppress(DomainError):  # refused appends are not in the log
            append(machine, *batch, at=at + 1)  # +1: no two appends share a time
        at += 1
    return machine


# --- the context's own config reproduces its window ----------------------------------


@pytest.mark.parametrize("seed", range(50))
def test_own_config_reproduces_the_window(seed: int) -> None:
    strategy = STRATEGIES[seed % len(STRATEGIES)]
    machine = random_history(seed, strategy)
    context = machine.get("c")
    assert len(context.log) > 20
    before = machine.to_bytes()

    result = preview(context, context.config)

    assert machine.to_bytes() == before
    assert result.messages == context.window  # raw bytes and part counts
    assert [m.raw for m in result.messages] == [m.raw for m in context.window]
    assert result.used_tokens == context.used_tokens
    assert result.needs_compaction == context.needs_compaction
    assert result.segments == windows.segments(context.window)
    assert result.refused == []
    assert result.config == context.config
    assert result.changed == [
        m.seq for m in context.window if m.seq and m.raw != context.log[m.seq - 1].raw
    ]
    check_consistent(result, machine)


def test_all_strategies_are_covered() -> None:
    assert {STRATEGIES[seed % len(STRATEGIES)] for seed in range(50)} == set(STRATEGIES)


def test_skip_parts_reports_stripped_messages_as_changed() -> None:
    machine = machine_with(config(1000, "skip_parts", limit=200, skip_kinds=["tool"]))
    append(machine, text("u1"), at=1)
    append(machine, tool_call("call", "t1"), tool_result("result", "t1"), at=2)
    append(machine, text("a1", "assistant"), at=3)
    append(machine, text("u2"), at=4)
    context = machine.get("c")
    # the window is under the trigger: nothing was stripped yet
    assert preview(context, context.config).changed == []
    # a small trigger runs the policy: the old turn's call and result are stripped
    result = preview(context, config(1000, "skip_parts", trigger_ratio=0.02, skip_kinds=["tool"]))
    assert [m.id for m in result.messages] == ["u1", "a1", "u2"]
    assert result.dropped == [(2, 3)]
    assert result.changed == []
    check_consistent(result, machine)


def test_a_stripped_part_makes_a_message_changed() -> None:
    """A message with text and a tool call loses the call (and its result goes)."""
    machine = machine_with(config(1000, "skip_parts", limit=200, skip_kinds=["tool"]))
    call = message_input(
        "call",
        "assistant",
        [{"type": "text", "text": "checking"}, tool_call("x", "t1").parts[0]],
        [1, 1],
    )
    append(machine, text("u1"), at=1)
    append(machine, call, tool_result("result", "t1"), at=2)
    append(machine, text("u2"), at=3)
    context = machine.get("c")
    result = preview(context, config(1000, "skip_parts", trigger_ratio=0.02, skip_kinds=["tool"]))
    assert ids(result.messages) == ["u1", "call", "u2"]
    assert result.changed == [2]
    assert result.messages[1].parts == [{"type": "text", "text": "checking"}]
    assert result.dropped == [(3, 3)]
    check_consistent(result, machine)


# --- other configs -------------------------------------------------------------------


def long_conversation(count: int = 30, tokens: int = 6) -> StateMachine:
    """``count`` alternating user/assistant messages of ``4 + tokens`` tokens each."""
    machine = machine_with(config(10_000, "last_n", limit=1000))
    for n in range(1, count + 1):
        append(machine, text(f"m{n}", "user" if n % 2 else "assistant", tokens), at=n)
    return machine


def test_a_smaller_budget_drops_the_oldest_messages() -> None:
    machine = long_conversation()
    context = machine.get("c")
    assert len(context.window) == 30
    before = machine.to_bytes()

    result = preview(context, config(100, "last_n", limit=1000))

    assert machine.to_bytes() == before
    assert result.used_tokens <= 100
    assert result.used_tokens == 10 * len(result.messages)
    first = 30 - len(result.messages) + 1
    assert [m.seq for m in result.messages] == list(range(first, 31))
    assert result.dropped == [(1, first - 1)]
    assert result.segments == [
        {"type": "log", "from_seq": first, "to_seq": 30, "count": 30 - first + 1,
         "tokens": result.used_tokens}
    ]  # fmt: skip
    assert result.messages == context.log[first - 1 :]
    check_consistent(result, machine)


def test_dropped_ranges_skip_pinned_messages() -> None:
    machine = machine_with(config(10_000))
    append(machine, text("sys", "system", 6), at=1)
    for n in range(2, 21):
        metadata = {"pinned": True} if n == 10 else None
        append(machine, text(f"m{n}", tokens=6, metadata=metadata), at=n)
    context = machine.get("c")
    result = preview(context, config(100))
    seqs = [m.seq or 0 for m in result.messages]
    assert seqs[:2] == [1, 10]
    assert seqs[2:] == list(range(seqs[2], 21))
    assert result.dropped == [(2, 9), (11, seqs[2] - 1)]
    assert result.used_tokens <= 100
    check_consistent(result, machine)


def test_a_smaller_limit_keeps_the_newest_messages() -> None:
    machine = long_conversation()
    result = preview(machine.get("c"), config(10_000, "last_n", limit=5))
    assert [m.seq for m in result.messages] == [26, 27, 28, 29, 30]
    assert result.dropped == [(1, 25)]
    check_consistent(result, machine)


def test_a_larger_budget_keeps_more_than_the_current_window() -> None:
    machine = machine_with(config(60, "last_n", limit=1000))
    for n in range(1, 21):
        append(machine, text(f"m{n}", tokens=6), at=n)
    context = machine.get("c")
    assert len(context.window) < 10
    before = machine.to_bytes()

    result = preview(context, config(10_000, "last_n", limit=1000))

    assert machine.to_bytes() == before
    assert result.messages == context.log
    assert result.dropped == []
    assert result.used_tokens == 200
    assert not result.needs_compaction
    check_consistent(result, machine)


def test_a_larger_limit_keeps_more_than_the_current_window() -> None:
    machine = machine_with(config(10_000, "last_n", limit=3))
    for n in range(1, 11):
        append(machine, text(f"m{n}"), at=n)
    context = machine.get("c")
    assert ids(context.window) == ["m8", "m9", "m10"]
    result = preview(context, config(10_000, "last_n", limit=6))
    assert ids(result.messages) == ["m5", "m6", "m7", "m8", "m9", "m10"]
    assert result.dropped == [(1, 4)]


def test_time_window_uses_the_messages_times() -> None:
    machine = machine_with(config(10_000))
    for n in range(1, 11):
        append(machine, text(f"m{n}"), at=n * 10_000)  # one message every ten seconds
    result = preview(machine.get("c"), config(10_000, "time_window", max_age_seconds=25))
    # at the last append (100 s) the messages before 75 s had expired
    assert ids(result.messages) == ["m8", "m9", "m10"]
    assert result.dropped == [(1, 7)]


def test_preview_to_manual_keeps_everything_and_flags_compaction() -> None:
    machine = long_conversation()
    result = preview(machine.get("c"), config(100, "manual"))
    assert len(result.messages) == 30
    assert result.needs_compaction
    assert result.used_tokens == 300
    assert result.dropped == []


def test_a_manual_compaction_is_not_reproduced() -> None:
    machine = long_conversation(count=4)
    compact(machine, text("summary", "system"), at=10)
    context = machine.get("c")
    assert ids(context.window) == ["summary"]
    result = preview(context, context.config)
    assert ids(result.messages) == ["m1", "m2", "m3", "m4"]
    assert all(m.seq is not None for m in result.messages)


def test_an_earlier_config_change_is_not_reproduced() -> None:
    """The preview is the config's from the start, not the context's history of configs."""
    machine = machine_with(config(10_000, "last_n", limit=2))
    for n in range(1, 7):
        append(machine, text(f"m{n}"), at=n)
    machine.apply(PutContext("c", 7, config(10_000, "last_n", limit=100)))
    context = machine.get("c")
    assert ids(context.window) == ["m5", "m6"]
    assert len(preview(context, context.config).messages) == 6


def test_an_empty_context() -> None:
    machine = machine_with(config(100))
    result = preview(machine.get("c"), config(50, "budget"))
    assert (result.messages, result.dropped, result.used_tokens) == ([], [], 0)
    assert result.segments == []


def test_a_tombstoned_context_can_be_previewed() -> None:
    machine = long_conversation(count=6)
    machine.apply(Tombstone("c", 100))
    result = preview(machine.get("c"), config(25))
    assert result.used_tokens <= 25
    assert result.messages


# --- refusals ------------------------------------------------------------------------


def test_messages_bigger_than_the_budget_are_refused_and_the_rest_replayed() -> None:
    machine = machine_with(config(10_000))
    append(machine, text("m1", tokens=6), at=1)
    append(machine, text("big", tokens=200), at=2)
    append(machine, text("m3", tokens=6), at=3)
    append(machine, text("m4", tokens=6), at=4)
    context = machine.get("c")
    before = machine.to_bytes()

    result = preview(context, config(100))

    assert machine.to_bytes() == before
    assert result.refused == [{"seq": 2, "code": "message_exceeds_budget"}]
    assert [m.seq for m in result.messages] == [1, 3, 4]  # the log's seqs, not the replay's
    assert result.messages == [context.log[0], context.log[2], context.log[3]]
    assert result.dropped == [(2, 2)]
    assert result.changed == []
    assert result.segments == [
        {"type": "log", "from_seq": 1, "to_seq": 1, "count": 1, "tokens": 10},
        {"type": "log", "from_seq": 3, "to_seq": 4, "count": 2, "tokens": 20},
    ]
    check_consistent(result, machine)


def test_a_refused_batch_is_replayed_message_by_message() -> None:
    machine = machine_with(config(10_000))
    append(machine, text("m1", tokens=6), at=1)
    append(machine, text("m2", tokens=6), text("big", tokens=500), text("m4", tokens=6), at=2)
    append(machine, text("m5", tokens=6), at=3)
    result = preview(machine.get("c"), config(100))
    assert result.refused == [{"seq": 3, "code": "message_exceeds_budget"}]
    assert ids(result.messages) == ["m1", "m2", "m4", "m5"]
    assert [m.seq for m in result.messages] == [1, 2, 4, 5]
    assert result.dropped == [(3, 3)]
    check_consistent(result, machine)


def test_refusals_and_policy_changes_together_keep_the_log_seqs() -> None:
    """A stripped message after a refused one is reported at its log seq."""
    machine = machine_with(config(10_000, "skip_parts", limit=200, skip_kinds=["reasoning"]))
    append(machine, text("u1"), at=1)
    append(machine, text("big", tokens=500), at=2)
    mixed = message_input(
        "mixed",
        "assistant",
        [{"type": "reasoning", "text": "hmm"}, {"type": "text", "text": "hi"}],
        [3, 1],
    )
    append(machine, mixed, at=3)
    append(machine, text("u2"), at=4)
    new = config(100, "skip_parts", trigger_ratio=0.1, skip_kinds=["reasoning"])
    result = preview(machine.get("c"), new)
    assert result.refused == [{"seq": 2, "code": "message_exceeds_budget"}]
    assert "mixed" in ids(result.messages)
    stripped = next(m for m in result.messages if m.id == "mixed")
    assert stripped.seq == 3
    assert stripped.parts == [{"type": "text", "text": "hi"}]
    assert result.changed == [3]
    check_consistent(result, machine)


def test_pinned_messages_over_the_budget_are_refused() -> None:
    machine = machine_with(config(10_000))
    append(machine, text("sys1", "system", 40), at=1)
    append(machine, text("sys2", "system", 40), at=2)
    append(machine, text("u1", tokens=6), at=3)
    result = preview(machine.get("c"), config(60))
    assert result.refused == [{"seq": 2, "code": "pinned_exceeds_budget"}]
    assert ids(result.messages) == ["sys1", "u1"]
    check_consistent(result, machine)


def test_a_manual_target_refuses_nothing() -> None:
    machine = machine_with(config(10_000))
    append(machine, text("big", tokens=500), at=1)
    result = preview(machine.get("c"), config(100, "manual"))
    assert result.refused == []
    assert result.needs_compaction


# --- recount ---------------------------------------------------------------------------


def test_recount_replaces_the_stored_counts() -> None:
    machine = long_conversation(count=5)
    context = machine.get("c")
    seen: list[list[dict[str, Any]]] = []

    def doubled(parts: list[dict[str, Any]]) -> tuple[int, list[int]]:
        seen.append(parts)
        part_tokens = [12 for _ in parts]
        return MESSAGE_OVERHEAD * 2 + sum(part_tokens), part_tokens

    plain = preview(context, config(10_000, tokenizer="cl100k_base"))
    recounted = preview(context, config(10_000, tokenizer="cl100k_base"), recount=doubled)

    assert plain.used_tokens == 50
    assert recounted.used_tokens == 100
    assert seen == [m.parts for m in context.log]
    assert [m.token_count for m in recounted.messages] == [20] * 5
    assert [m.part_tokens for m in recounted.messages] == [[12]] * 5
    assert recounted.changed == []  # new counts are not a policy's change
    assert [m.seq for m in recounted.messages] == [1, 2, 3, 4, 5]
    data = recounted.to_json()
    assert [entry["token_count"] for entry in data["breakdown"]] == [20] * 5
    assert data["config"]["tokenizer"] == "cl100k_base"


def test_recount_can_push_the_window_over_a_budget() -> None:
    machine = long_conversation(count=10)

    def doubled(parts: list[dict[str, Any]]) -> tuple[int, list[int]]:
        return 20, [16]

    assert preview(machine.get("c"), config(150)).dropped == []
    result = preview(machine.get("c"), config(150), recount=doubled)
    assert result.dropped
    assert result.used_tokens <= 150


def test_stored_counts_supplied_by_the_client_are_kept() -> None:
    machine = machine_with(config(10_000))
    odd = MessageInput("odd", "user", [{"type": "text", "text": "x"}], None, 77, [1])
    append(machine, odd, at=1)
    result = preview(machine.get("c"), config(1000))
    assert result.used_tokens == 77
    assert result.messages == machine.get("c").log


# --- batches ---------------------------------------------------------------------------


class RecordingMachine(StateMachine):
    """A state machine that remembers the commands applied to it."""

    commands: list[Command]

    def apply(self, command: Command) -> Any:
        if not hasattr(self, "commands"):
            self.commands = []
        self.commands.append(command)
        return super().apply(command)


def test_messages_of_one_time_replay_as_one_append(monkeypatch: pytest.MonkeyPatch) -> None:
    machines: list[RecordingMachine] = []

    def recording() -> RecordingMachine:
        machines.append(RecordingMachine())
        return machines[-1]

    monkeypatch.setattr(previews, "StateMachine", recording)
    machine = machine_with(config(10_000))
    append(machine, text("u1"), at=5)
    append(machine, tool_call("call", "t1"), tool_result("result", "t1"), at=6)
    append(machine, text("a1", "assistant"), at=7)

    preview(machine.get("c"), config(500, "budget"))

    (replay,) = machines
    put, *appends = replay.commands
    assert isinstance(put, PutContext)
    assert (put.at, put.config, put.context_id) == (5, config(500, "budget"), "c")
    assert all(isinstance(command, AppendMessages) for command in appends)
    batches = [
        ([m.id for m in command.messages], command.at, command.tokenizer)
        for command in appends
        if isinstance(command, AppendMessages)
    ]
    assert batches == [
        (["u1"], 5, TOKENIZER),
        (["call", "result"], 6, TOKENIZER),
        (["a1"], 7, TOKENIZER),
    ]


def test_a_batch_is_trimmed_as_one_append() -> None:
    """One append of two messages trims once: replaying them one by one would not."""
    budget = config(100, "budget", trigger_ratio=0.25, target_ratio=0.2)
    batched = machine_with(budget)
    append(batched, text("u1", tokens=6), at=1)
    append(batched, text("u2", tokens=16), text("a2", "assistant", tokens=1), at=2)
    one_by_one = machine_with(budget)
    for n, message in enumerate(batched.get("c").log):
        append(one_by_one, message_input(message.id, message.role, message.parts,
                                         message.part_tokens), at=n)  # fmt: skip
    assert ids(batched.get("c").window) != ids(one_by_one.get("c").window)

    result = preview(batched.get("c"), budget)
    assert result.messages == batched.get("c").window


def test_a_tool_call_batch_bigger_than_the_budget_keeps_what_fits() -> None:
    machine = machine_with(config(10_000))
    append(machine, text("u1", tokens=6), at=1)
    append(machine, tool_call("call", "t1", tokens=40), tool_result("res", "t1", tokens=40), at=2)
    append(machine, text("u2", tokens=6), at=3)
    result = preview(machine.get("c"), config(60))
    # call and result together are over the budget; the call alone fits
    assert result.refused == [{"seq": 3, "code": "unit_exceeds_budget"}]
    assert "res" not in ids(result.messages)
    check_consistent(result, machine)


# --- JSON --------------------------------------------------------------------------------


def test_to_json() -> None:
    machine = machine_with(config(10_000))
    append(machine, text("m1", tokens=6), at=1)
    append(machine, text("big", tokens=200), at=2)
    append(machine, text("m3", tokens=6), at=3)
    new = config(100, "budget")
    result = preview(machine.get("c"), new)
    data = result.to_json()
    assert data == {
        "config": converter.unstructure(new, ContextConfig),
        "used_tokens": 20,
        "needs_compaction": False,
        "messages": [machine.get("c").log[0].to_json(), machine.get("c").log[2].to_json()],
        "breakdown": [
            {"seq": 1, "id": "m1", "role": "user", "token_count": 10, "part_tokens": [6]},
            {"seq": 3, "id": "m3", "role": "user", "token_count": 10, "part_tokens": [6]},
        ],
        "dropped": [{"from_seq": 2, "to_seq": 2, "count": 1}],
        "changed": [],
        "refused": [{"seq": 2, "code": "message_exceeds_budget"}],
        "segments": [
            {"type": "log", "from_seq": 1, "to_seq": 1, "count": 1, "tokens": 10},
            {"type": "log", "from_seq": 3, "to_seq": 3, "count": 1, "tokens": 10},
        ],
    }
    assert set(data["config"]) == {"token_budget", "trigger_ratio", "policy", "tokenizer"}
    assert data["config"]["policy"] == {"strategy": "budget", "config": {"target_ratio": 0.5}}
    # JSON-ready: plain types only, and a new object each call
    assert json.loads(json.dumps(data)) == data
    data["messages"].clear()
    assert len(result.to_json()["messages"]) == 2
