"""Purge and redact in the pure core: what stays, what goes, and what is refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from core_builders import append, compact, config, machine_with, message_input, text
from fastpaca_server.core import (
    Conflict,
    MarkArchived,
    NotFound,
    PatchMetadata,
    Purge,
    Redact,
    StateMachine,
    Summarize,
    Tombstone,
    command_from_json,
    command_to_json,
)
from fastpaca_server.core import window as windows
from fastpaca_server.core.models import REDACTED_PART
from fastpaca_server.core.state import ContextView
from fastpaca_server.tokens import MESSAGE_OVERHEAD

MARKER_TOKENS = [6]
MARKER_COUNT = MESSAGE_OVERHEAD + 6


def redact(machine: StateMachine, seq: int, archived: int | None = None, **kw: Any) -> ContextView:
    command = Redact(kw.pop("context_id", "c"), 50, seq, MARKER_COUNT, MARKER_TOKENS, archived)
    result = machine.apply(command)
    assert isinstance(result, ContextView)
    return result


def test_a_purge_keeps_the_counters_and_erases_the_rest() -> None:
    machine = machine_with(config(), metadata={"owner": "ada"})
    append(machine, text("u1", tokens=3), text("u2", tokens=3))
    compact(machine, text("gist", "assistant"))
    append(machine, text("u3"), idempotency_key="k", fingerprint="f", at=2)
    before = machine.get("c")
    counters = (before.last_seq, before.compactions, before.created_at, before.config)
    assert machine.usage_of("").tokens > 0
    view = machine.apply(Purge("c", 9, "ops"))
    context = machine.get("c")
    assert view.status == context.status == "purged" and view.purge == (9, "ops")
    assert (context.last_seq, context.compactions, context.created_at, context.config) == counters
    assert (context.metadata, context.log, context.window, context.used_tokens) == ({}, [], [], 0)
    assert context.all_records() == [] and context.archived_seq == context.last_seq == 3
    assert context.idempotency.get("k") is None
    assert (machine.usage_of("").contexts, machine.usage_of("").tokens) == (1, 0)
    # Idempotent; every write is refused as for a tombstone; the id is never reused.
    assert machine.apply(Purge("c", 10, "someone")).version == view.version
    assert machine.apply(Tombstone("c", 11)).version == view.version
    with pytest.raises(Conflict) as refused:
        append(machine, text("again"))
    assert refused.value.code == "context_tombstoned"
    with pytest.raises(Conflict):
        machine.apply(PatchMetadata("c", 12, {"a": 1}))
    restored = StateMachine.from_bytes(machine.to_bytes())
    assert restored.to_bytes() == machine.to_bytes()
    assert restored.get("c").purge == (9, "ops") and restored.usage_of("").tokens == 0


def test_a_redact_replaces_the_parts_in_the_log_and_the_window() -> None:
    machine = machine_with(config(60, "skip_parts", skip_kinds=["reasoning"]))
    reasoning = [{"type": "reasoning", "text": "secret plan"}, {"type": "text", "text": "hi"}]
    append(machine, message_input("m1", "assistant", reasoning, [5, 5], {"k": 1}))
    append(machine, text("u2", tokens=26), at=2)  # past the trigger: reasoning stripped
    context = machine.get("c")
    assert context.window[0].parts == [{"type": "text", "text": "hi"}]  # stripped copy
    used, stored = context.used_tokens, machine.usage_of("").tokens
    view = redact(machine, 1)
    context = machine.get("c")
    marker = context.log[0]
    assert (marker.parts, marker.metadata) == ([REDACTED_PART], {"k": 1})
    assert (marker.id, marker.seq) == ("m1", 1)
    assert marker.token_count == MARKER_COUNT
    assert context.window[0] is marker  # the window takes the log's redacted message
    assert view.used_tokens == context.used_tokens == used - (MESSAGE_OVERHEAD + 5) + MARKER_COUNT
    assert machine.usage_of("").tokens == stored - (MESSAGE_OVERHEAD + 10) + MARKER_COUNT
    assert context.redactions == [1]
    # Again: nothing changes, not even the version.
    assert redact(machine, 1).version == view.version
    with pytest.raises(NotFound):
        redact(machine, 3)
    with pytest.raises(NotFound):
        redact(machine, 0)


def test_an_archived_message_is_redacted_with_the_archives_token_count() -> None:
    machine = machine_with(config())
    append(machine, text("u1", tokens=20), text("u2"), text("u3"))
    machine.apply(MarkArchived("c", 3, 1))
    stored = machine.usage_of("").tokens
    view = redact(machine, 1, archived=MESSAGE_OVERHEAD + 20)
    assert machine.usage_of("").tokens == stored - (MESSAGE_OVERHEAD + 20) + MARKER_COUNT
    window = machine.get("c").window
    assert window[0].parts == [REDACTED_PART] and window[0].seq == 1
    assert redact(machine, 1, archived=MESSAGE_OVERHEAD + 20).version == view.version


def test_a_tombstone_may_be_redacted_a_purged_context_not() -> None:
    machine = machine_with(config())
    append(machine, text("u1"))
    machine.apply(Tombstone("c", 2))
    assert redact(machine, 1).status == "tombstoned"
    machine.apply(Purge("c", 3))
    with pytest.raises(Conflict) as refused:
        redact(machine, 1)
    assert refused.value.code == "context_purged"


def test_a_redact_under_a_summary_asks_for_the_summary_to_be_rebuilt() -> None:
    machine = machine_with(config(100, "summarize", target_ratio=0.4))
    append(machine, text("rules", "system", tokens=6))
    for n in range(8):
        append(machine, text(f"u{n}", tokens=6), at=n + 1)
    context = machine.get("c")
    plan = windows.plan_summary(context.window, context.config)
    assert plan is not None
    summary = message_input("sum1", "system", None, [6])
    machine.apply(Summarize("c", 20, context.compactions, plan.to_seq, summary=summary))
    assert machine.get("c").needs_compaction is False
    view = redact(machine, 3)  # u1, folded into the summary
    context = machine.get("c")
    assert view.needs_compaction is True and context.summary_rebuild is True
    append(machine, text("u8", tokens=1), at=30)  # stays flagged until the summary is rebuilt
    assert machine.get("c").needs_compaction is True
    covered = context.messages_between(1, 7, 10)
    rebuilt = windows.plan_summary(context.window, context.config, covered)
    assert rebuilt is not None and rebuilt.previous is None
    assert rebuilt.messages[1]["parts"] == [REDACTED_PART]
    assert "sum1" not in json.dumps(rebuilt.messages)
    new = message_input("sum2", "system", None, [6])
    result = machine.apply(Summarize("c", 40, context.compactions, rebuilt.to_seq, summary=new))
    assert result.outcome == "applied"
    context = machine.get("c")
    assert context.summary_rebuild is False and context.needs_compaction is False
    assert [m.id for m in context.window if windows.is_summary(m)] == ["sum2"]


def test_an_archived_tombstone_drops_its_history_from_memory() -> None:
    machine = machine_with(config())
    append(machine, text("u1"), text("u2"), idempotency_key="k", fingerprint="f")
    machine.apply(MarkArchived("c", 2, 1000))
    assert machine.get("c").window  # active: nothing is dropped
    machine.apply(Tombstone("c", 3))
    version = machine.get("c").version
    machine.apply(MarkArchived("c", 2, 1000))
    context = machine.get("c")
    assert (context.log, context.window, context.used_tokens) == ([], [], 0)
    assert context.log_offset == context.last_seq == 2 and context.version == version
    assert context.idempotency.get("k") is None
    assert machine.usage_of("").tokens > 0  # what it stores is in the archive, still counted


def test_erasure_commands_survive_json_and_old_snapshots_load() -> None:
    for command in (Purge("c", 1, "ops"), Purge("c", 1), Redact("c", 2, 3, 10, [6], 7)):
        assert command_from_json(json.loads(json.dumps(command_to_json(command)))) == command
    machine = machine_with(config())
    append(machine, text("u1"))
    machine.apply(Tombstone("c", 5))
    state = json.loads(machine.to_bytes())
    for key in ("tombstoned_at", "purge", "redactions", "summary_rebuild"):
        del state["contexts"][0][key]  # a snapshot of a version without erasure
    old = StateMachine.from_bytes(json.dumps(state).encode())
    assert old.get("c").tombstoned_at == old.get("c").updated_at == 5
    assert (old.get("c").purge, old.get("c").redactions) == (None, [])


def test_a_marker_larger_than_the_message_never_puts_the_window_over_its_budget() -> None:
    """A redaction marker can cost more tokens than the message it replaces: the policy
    runs as after an append, so the window stays within the budget (and the trigger)."""
    budget = 7 * (MESSAGE_OVERHEAD + 1) + 2  # the seven messages fit, one marker more does not
    machine = machine_with(config(token_budget=budget, strategy="budget", trigger_ratio=1.0))
    for n in range(7):
        append(machine, text(f"m{n}", tokens=1))
    before = machine.get("c")
    assert before.used_tokens <= budget and len(before.window) == 7
    for seq in (1, 2, 3, 4):
        redact(machine, seq)
        context = machine.get("c")
        assert context.used_tokens <= budget, f"redacting {seq}: {context.used_tokens} > {budget}"
        assert context.used_tokens == sum(m.token_count for m in context.window)
