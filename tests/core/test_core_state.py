"""The per-context state machine: each command's effects and refusals."""

from __future__ import annotations

import json

import attrs
import pytest
from core_builders import (
    TOKENIZER,
    append,
    compact,
    config,
    ids,
    machine_with,
    message_input,
    stored,
    text,
    tool_call,
    tool_result,
)
from fastpaca_server.core import (
    AppendMessages,
    AppendResult,
    Compact,
    CompactResult,
    Conflict,
    ContextConfig,
    DomainError,
    InvalidInput,
    MessageInput,
    NotFound,
    PatchMetadata,
    Policy,
    PutContext,
    StateMachine,
    Tombstone,
    replay_commands,
)
from fastpaca_server.core import window as windows
from fastpaca_server.core.models import (
    IDEMPOTENCY_KEYS_PER_CONTEXT,
    KeptMessage,
    command_from_json,
    command_to_json,
    content_digest,
    converter,
)
from fastpaca_server.core.state import merge_patch


def assert_refused(
    machine: StateMachine, command: object, error: type[DomainError], code: str
) -> DomainError:
    """``command`` raises ``error`` with ``code`` and leaves the state byte-identical."""
    before = machine.to_bytes()
    with pytest.raises(error) as raised:
        machine.apply(command)  # type: ignore[arg-type]
    assert raised.value.code == code
    assert machine.to_bytes() == before
    return raised.value


# --- errors -----------------------------------------------------------------


def test_errors_carry_status_and_code() -> None:
    assert (InvalidInput("x").status, InvalidInput("x").code) == (400, "invalid_request")
    assert (NotFound("x").status, NotFound("x").code) == (404, "not_found")
    assert (Conflict("x").status, Conflict("x").code) == (409, "conflict")
    assert Conflict("x", "version_conflict").code == "version_conflict"
    assert Conflict("x", "a") == Conflict("x", "a")
    assert Conflict("x", "a") != InvalidInput("x", "a")


# --- PutContext ---------------------------------------------------------------


def test_put_creates_a_context() -> None:
    machine = StateMachine()
    context = machine.apply(PutContext("c", 5, config(token_budget=300), {"team": "a"}))
    assert context == machine.get("c").view()
    assert (context.version, context.status) == (1, "active")
    assert context.config.token_budget == 300
    assert context.metadata == {"team": "a"}
    assert (context.created_at, context.updated_at) == (5, 5)
    assert (context.used_tokens, context.last_seq) == (0, 0)
    assert (machine.get("c").log, machine.get("c").window) == ([], [])


def test_put_without_metadata_creates_empty_metadata() -> None:
    assert machine_with().get("c").metadata == {}


def test_get_unknown_context_is_not_found() -> None:
    with pytest.raises(NotFound):
        StateMachine().get("nope")


def test_identical_put_does_not_bump_the_version() -> None:
    machine = machine_with(config(token_budget=300), metadata={"a": 1})
    before = machine.to_bytes()
    machine.apply(PutContext("c", 9, config(token_budget=300), {"a": 1}))
    machine.apply(PutContext("c", 10, config(token_budget=300)))  # metadata None: unchanged
    assert machine.to_bytes() == before
    assert machine.get("c").version == 1


def test_put_with_a_new_config_updates_and_bumps_the_version() -> None:
    machine = machine_with(config(token_budget=300))
    context = machine.apply(PutContext("c", 7, config(token_budget=500)))
    assert context.config.token_budget == 500
    assert context.version == 2
    assert context.updated_at == 7
    assert context.created_at == 0


def test_put_with_new_metadata_replaces_it() -> None:
    machine = machine_with(metadata={"a": 1, "b": 2})
    context = machine.apply(PutContext("c", 3, config(), {"c": 3}))
    assert context.metadata == {"c": 3}
    assert context.version == 2


def test_tokenizer_can_change_while_the_context_is_empty() -> None:
    machine = machine_with()
    context = machine.apply(PutContext("c", 1, config(tokenizer="cl100k_base")))
    assert context.config.tokenizer == "cl100k_base"


def test_tokenizer_cannot_change_once_there_are_messages() -> None:
    machine = machine_with()
    append(machine, text("m1"))
    assert_refused(
        machine,
        PutContext("c", 2, config(tokenizer="cl100k_base")),
        Conflict,
        "tokenizer_immutable",
    )


def test_tokenizer_cannot_change_while_the_window_holds_compacted_messages() -> None:
    # Regression: only the log used to pin the tokenizer; a compacted window on an
    # empty log kept counts of the old tokenizer.
    machine = machine_with()
    compact(machine, text("summary", "system"))
    assert_refused(
        machine,
        PutContext("c", 2, config(tokenizer="cl100k_base")),
        Conflict,
        "tokenizer_immutable",
    )


def test_budget_below_pinned_tokens_is_refused() -> None:
    machine = machine_with(config(token_budget=100))
    append(machine, text("system", "system", tokens=40))  # 44 tokens
    error = assert_refused(
        machine, PutContext("c", 2, config(token_budget=43)), Conflict, "budget_below_pinned"
    )
    assert error.status == 409
    machine.apply(PutContext("c", 3, config(token_budget=44)))
    assert machine.get("c").config.token_budget == 44


def test_budget_below_pinned_is_allowed_for_manual() -> None:
    machine = machine_with(config(token_budget=100))
    append(machine, text("system", "system", tokens=40))
    machine.apply(PutContext("c", 2, config(token_budget=10, strategy="manual")))
    context = machine.get("c")
    assert context.config.token_budget == 10
    assert ids(context.window) == ["system"]
    assert context.needs_compaction is True


def test_lowering_the_budget_trims_the_window_to_the_trigger() -> None:
    machine = machine_with(config(token_budget=1000))
    append(machine, *[text(f"m{i}", tokens=6) for i in range(10)])  # 10 each
    machine.apply(PutContext("c", 2, config(token_budget=35)))  # trigger 24.5
    context = machine.get("c")
    assert ids(context.window) == ["m8", "m9"]
    assert context.used_tokens == 20
    assert len(context.log) == 10


def test_put_on_a_tombstoned_context_is_refused() -> None:
    machine = machine_with()
    machine.apply(Tombstone("c", 1))
    assert_refused(
        machine, PutContext("c", 2, config(token_budget=5)), Conflict, "context_tombstoned"
    )


# --- AppendMessages -----------------------------------------------------------


def test_append_assigns_gap_free_seqs_and_bumps_the_version() -> None:
    machine = machine_with()
    first = append(machine, text("a"), at=10)
    second = append(machine, text("b"), text("c"), text("d"), at=11)
    assert [m.seq for m in first.messages] == [1]
    assert [m.seq for m in second.messages] == [2, 3, 4]
    assert (first.version, second.version) == (2, 3)
    assert (second.last_seq, second.used_tokens) == (4, 20)
    assert [m.created_at for m in second.messages] == [11, 11, 11]
    context = machine.get("c")
    assert [m.seq for m in context.log] == [1, 2, 3, 4]
    assert ids(context.log) == ["a", "b", "c", "d"]
    assert context.log[1] == stored(text("b"), 2, at=11)
    assert ids(context.window) == ["a", "b", "c", "d"]
    assert context.used_tokens == 20
    assert context.updated_at == 11


def test_append_result_reports_the_window() -> None:
    machine = machine_with(config(token_budget=100, strategy="manual"))
    result = append(machine, text("a", tokens=70))
    assert result == AppendResult(
        version=2,
        last_seq=1,
        messages=result.messages,
        used_tokens=74,
        needs_compaction=True,
    )
    assert (result.messages[0].id, result.messages[0].token_count) == ("a", 74)


def test_append_to_unknown_context_is_not_found() -> None:
    machine = machine_with()
    assert_refused(
        machine, AppendMessages("nope", 1, [text("a")], TOKENIZER), NotFound, "not_found"
    )


def test_batch_with_one_message_over_budget_stores_nothing() -> None:
    machine = machine_with(config(token_budget=50))
    append(machine, text("a"))
    batch = AppendMessages("c", 2, [text("b"), text("huge", tokens=47), text("d")], TOKENIZER)
    error = assert_refused(machine, batch, InvalidInput, "message_exceeds_budget")
    assert "messages[1]" in error.message
    assert ids(machine.get("c").log) == ["a"]


def test_message_exactly_at_budget_is_accepted() -> None:
    machine = machine_with(config(token_budget=50))
    result = append(machine, text("a", tokens=46))
    assert result.used_tokens == 50


def test_manual_accepts_a_message_over_budget() -> None:
    machine = machine_with(config(token_budget=50, strategy="manual"))
    result = append(machine, text("huge", tokens=100))
    assert result.needs_compaction is True
    assert ids(machine.get("c").window) == ["huge"]


def test_pinned_messages_over_budget_are_refused() -> None:
    machine = machine_with(config(token_budget=50))
    append(machine, text("system", "system", tokens=26))  # 30
    batch = AppendMessages(
        "c", 2, [text("pin", tokens=16, metadata={"pinned": True})], TOKENIZER
    )  # 20 more pinned tokens: 50 is fine
    machine.apply(batch)
    assert_refused(
        machine,
        AppendMessages("c", 3, [text("sys2", "system", tokens=0)], TOKENIZER),
        InvalidInput,
        "pinned_exceeds_budget",
    )


def test_batch_larger_than_budget_keeps_the_newest_messages() -> None:
    machine = machine_with(config(token_budget=30))  # trigger 21
    result = append(machine, *[text(f"m{i}", tokens=6) for i in range(5)])  # 10 each
    context = machine.get("c")
    assert ids(context.log) == ["m0", "m1", "m2", "m3", "m4"]
    assert ids(context.window) == ["m3", "m4"]
    assert result.used_tokens == context.used_tokens == 20
    assert result.needs_compaction is False


def test_message_that_does_not_fit_beside_the_pinned_ones_is_refused() -> None:
    machine = machine_with(config(token_budget=100))
    append(machine, text("system", "system", tokens=56))  # 60 pinned
    error = assert_refused(
        machine,
        AppendMessages("c", 2, [text("big", tokens=37)], TOKENIZER),  # 41: 101 > 100
        InvalidInput,
        "message_exceeds_budget",
    )
    assert "60 tokens of pinned messages" in error.message
    assert append(machine, text("fits", tokens=36)).used_tokens == 100


def test_tool_call_with_its_results_must_fit_the_budget() -> None:
    machine = machine_with(config(token_budget=100))
    append(machine, tool_call("call", "t1", tokens=56))  # 60
    assert_refused(
        machine,
        AppendMessages("c", 2, [tool_result("res", "t1", tokens=37)], TOKENIZER),  # 41
        InvalidInput,
        "unit_exceeds_budget",
    )
    assert_refused(
        machine,
        AppendMessages(
            "c",
            2,
            [tool_call("c2", "t2", tokens=36), tool_result("r2", "t2", tokens=66)],
            TOKENIZER,
        ),  # 40 + 70: each fits, the unit does not
        InvalidInput,
        "unit_exceeds_budget",
    )
    append(machine, tool_result("res", "t1", tokens=36))
    assert ids(machine.get("c").window) == ["call", "res"]


def test_tool_messages_bound_to_a_pinned_call_count_as_pinned() -> None:
    machine = machine_with(config(token_budget=100))
    pinned_call = message_input(
        "call",
        "assistant",
        [{"type": "tool_call", "id": "t1", "name": "lookup", "payload": {}}],
        [6],
        {"pinned": True},
    )
    append(machine, pinned_call)  # 10 pinned
    assert_refused(
        machine,
        AppendMessages("c", 2, [tool_result("res", "t1", tokens=87)], TOKENIZER),  # 91
        InvalidInput,
        "pinned_exceeds_budget",
    )
    append(machine, tool_result("res", "t1", tokens=46))  # pinned unit: 60
    context = machine.get("c")
    assert ids(context.window) == ["call", "res"]
    assert context.used_tokens == 60
    assert_refused(
        machine, PutContext("c", 3, config(token_budget=59)), Conflict, "budget_below_pinned"
    )
    assert_refused(
        machine,
        AppendMessages("c", 4, [text("big", tokens=37)], TOKENIZER),  # 41 beside 60
        InvalidInput,
        "message_exceeds_budget",
    )


def test_orphan_results_are_stored_but_not_checked_against_pinned() -> None:
    machine = machine_with(config(token_budget=100))
    append(machine, text("system", "system", tokens=56))  # 60 pinned
    result = append(machine, tool_result("orphan", "missing", tokens=56))  # 60: never in window
    assert result.last_seq == 2
    assert ids(machine.get("c").window) == ["system"]


def test_if_version_must_match() -> None:
    machine = machine_with()
    append(machine, text("a"))
    assert machine.get("c").version == 2
    assert_refused(
        machine,
        AppendMessages("c", 2, [text("b")], TOKENIZER, if_version=1),
        Conflict,
        "version_conflict",
    )
    result = append(machine, text("b"), if_version=2)
    assert (result.version, result.last_seq) == (3, 2)


def test_append_to_a_tombstoned_context_is_refused() -> None:
    machine = machine_with()
    append(machine, text("a"))
    machine.apply(Tombstone("c", 2))
    assert_refused(
        machine, AppendMessages("c", 3, [text("b")], TOKENIZER), Conflict, "context_tombstoned"
    )


def test_tokens_counted_with_another_tokenizer_are_refused() -> None:
    machine = machine_with()
    assert_refused(
        machine,
        AppendMessages("c", 1, [text("a")], "cl100k_base"),
        Conflict,
        "tokenizer_changed",
    )


def test_idempotent_replay_returns_the_first_result_and_stores_nothing() -> None:
    machine = machine_with()
    command = AppendMessages("c", 1, [text("a"), text("b")], TOKENIZER, "key-1", "fp-1")
    first = machine.apply(command)
    append(machine, text("c"))
    after = machine.to_bytes()
    replay = machine.apply(
        AppendMessages("c", 9, [text("a"), text("b")], TOKENIZER, "key-1", "fp-1")
    )
    assert (first.replayed, replay.replayed) == (False, True)
    assert attrs.evolve(replay, replayed=False) == first
    assert replay.last_seq == 2
    assert machine.to_bytes() == after


def test_replay_wins_over_if_version_and_tombstone() -> None:
    machine = machine_with()
    first = append(machine, text("a"), idempotency_key="k", fingerprint="f", if_version=1)
    machine.apply(Tombstone("c", 2))
    after = machine.to_bytes()
    replay = append(machine, text("a"), idempotency_key="k", fingerprint="f", if_version=1)
    assert replay.replayed
    assert attrs.evolve(replay, replayed=False) == first
    assert machine.to_bytes() == after


def test_reused_idempotency_key_with_another_request_is_refused() -> None:
    machine = machine_with()
    append(machine, text("a"), idempotency_key="k", fingerprint="f1")
    assert_refused(
        machine,
        AppendMessages("c", 2, [text("other")], TOKENIZER, "k", "f2"),
        Conflict,
        "idempotency_key_reused",
    )


def test_idempotency_keys_are_per_context() -> None:
    machine = machine_with()
    machine.apply(PutContext("d", 0, config()))
    append(machine, text("a"), idempotency_key="k", fingerprint="f")
    result = append(machine, text("a"), context_id="d", idempotency_key="k", fingerprint="f")
    assert result.last_seq == 1
    assert ids(machine.get("d").log) == ["a"]


def test_refused_append_does_not_remember_its_key() -> None:
    machine = machine_with()
    with pytest.raises(Conflict):
        append(machine, text("a"), idempotency_key="k", fingerprint="f", if_version=99)
    result = append(machine, text("a"), idempotency_key="k", fingerprint="f")
    assert result.last_seq == 1


def test_ten_thousand_idempotency_keys_are_remembered_and_the_oldest_evicted() -> None:
    assert IDEMPOTENCY_KEYS_PER_CONTEXT >= 10_000
    machine = machine_with(config(token_budget=100))
    results = [
        append(machine, text(f"m{i}"), at=i, idempotency_key=f"key-{i}", fingerprint="f")
        for i in range(IDEMPOTENCY_KEYS_PER_CONTEXT)
    ]
    context = machine.get("c")
    assert len(context.idempotency) == IDEMPOTENCY_KEYS_PER_CONTEXT
    # The oldest key still replays: nothing stored.
    replay = append(machine, text("m0"), idempotency_key="key-0", fingerprint="f")
    assert attrs.evolve(replay, replayed=False) == results[0]
    assert context.last_seq == IDEMPOTENCY_KEYS_PER_CONTEXT
    # One more key evicts the oldest, and only it.
    append(machine, text("new"), idempotency_key="key-new", fingerprint="f")
    assert len(context.idempotency) == IDEMPOTENCY_KEYS_PER_CONTEXT
    assert "key-0" not in context.idempotency
    assert "key-1" in context.idempotency
    replay = append(machine, text("m1"), idempotency_key="key-1", fingerprint="f")
    assert attrs.evolve(replay, replayed=False) == results[1]
    # The evicted key now appends again.
    again = append(machine, text("m0"), idempotency_key="key-0", fingerprint="f")
    assert not again.replayed
    assert again.last_seq == IDEMPOTENCY_KEYS_PER_CONTEXT + 2


def test_snapshot_keeps_the_eviction_order_of_idempotency_keys() -> None:
    # Regression: to_bytes() used to sort the idempotency table's keys, so a machine
    # restored from a snapshot evicted the smallest key instead of the oldest.
    live = machine_with(config(token_budget=100))
    # Keys whose insertion order is the reverse of their sorted order.
    for i in range(IDEMPOTENCY_KEYS_PER_CONTEXT):
        key = f"key-{IDEMPOTENCY_KEYS_PER_CONTEXT - i:05d}"
        append(live, text(f"m{i}"), at=i, idempotency_key=key, fingerprint="f")
    restored = StateMachine.from_bytes(live.to_bytes())
    for machine in (live, restored):
        append(machine, text("new"), idempotency_key="key-new", fingerprint="f")
    assert list(restored.get("c").idempotency) == list(live.get("c").idempotency)
    assert restored.to_bytes() == live.to_bytes()


def test_tool_result_appended_without_its_call_is_dropped_from_the_window() -> None:
    machine = machine_with()
    append(machine, text("u"), tool_result("orphan", "missing"))
    context = machine.get("c")
    assert ids(context.log) == ["u", "orphan"]
    assert ids(context.window) == ["u"]
    assert context.used_tokens == 5


def test_manual_keeps_orphan_tool_results() -> None:
    machine = machine_with(config(strategy="manual"))
    append(machine, tool_result("orphan", "missing"))
    assert ids(machine.get("c").window) == ["orphan"]


# --- Compact ----------------------------------------------------------------


def test_compact_replaces_the_window_and_leaves_the_log() -> None:
    machine = machine_with(config(token_budget=1000))
    append(machine, text("a"), text("b"), text("c"))
    log_before = list(machine.get("c").log)
    result = compact(machine, text("summary", "assistant", tokens=3), at=5)
    context = machine.get("c")
    assert result == CompactResult(
        version=3, used_tokens=7, needs_compaction=False, message_count=1
    )
    assert context.log == log_before
    assert context.window == [stored(text("summary", "assistant", tokens=3), None, at=5)]
    assert context.used_tokens == 7
    # New messages append after the replacement and keep their log seqs.
    append(machine, text("d"))
    assert [m.seq for m in context.window] == [None, 4]


def test_compact_clears_needs_compaction_for_manual() -> None:
    machine = machine_with(config(token_budget=100, strategy="manual"))
    assert append(machine, *[text(f"m{i}", tokens=16) for i in range(5)]).needs_compaction
    result = compact(machine, text("summary", tokens=10))
    assert result.needs_compaction is False
    assert machine.get("c").needs_compaction is False


def test_manual_compact_above_the_trigger_still_needs_compaction() -> None:
    machine = machine_with(config(token_budget=100, strategy="manual"))
    result = compact(machine, text("summary", tokens=100))
    assert result.needs_compaction is True
    assert result.used_tokens == 104


def test_replacement_over_budget_is_refused_for_non_manual() -> None:
    machine = machine_with(config(token_budget=20))
    append(machine, text("a"))
    assert_refused(
        machine,
        Compact("c", 2, [text("x", tokens=10), text("y", tokens=3)], TOKENIZER),
        InvalidInput,
        "replacement_exceeds_budget",
    )
    assert compact(machine, text("x", tokens=10), text("y", tokens=2)).used_tokens == 20


def test_compact_checks_version_tombstone_and_tokenizer() -> None:
    machine = machine_with()
    append(machine, text("a"))
    assert_refused(
        machine, Compact("c", 2, [], TOKENIZER, if_version=1), Conflict, "version_conflict"
    )
    assert_refused(machine, Compact("c", 2, [], "cl100k_base"), Conflict, "tokenizer_changed")
    assert_refused(machine, Compact("nope", 2, [], TOKENIZER), NotFound, "not_found")
    machine.apply(Tombstone("c", 3))
    assert_refused(machine, Compact("c", 4, [], TOKENIZER), Conflict, "context_tombstoned")


def test_compact_is_idempotent_with_a_key() -> None:
    machine = machine_with()
    append(machine, text("a"))
    first = compact(machine, text("s"), idempotency_key="k", fingerprint="f")
    append(machine, text("b"))
    after = machine.to_bytes()
    replay = compact(machine, text("s"), idempotency_key="k", fingerprint="f")
    assert (first.replayed, replay.replayed) == (False, True)
    assert attrs.evolve(replay, replayed=False) == first
    assert machine.to_bytes() == after
    assert_refused(
        machine,
        Compact("c", 2, [text("t")], TOKENIZER, "k", "other"),
        Conflict,
        "idempotency_key_reused",
    )


def test_compact_to_an_empty_window() -> None:
    machine = machine_with()
    append(machine, text("a"))
    result = compact(machine)
    assert (result.used_tokens, result.message_count) == (0, 0)
    assert machine.get("c").window == []


def test_compact_stores_the_replacement_as_given_until_the_rules_run() -> None:
    # docs/api.md: "The replacement is stored as given. The usual window rules
    # apply to it from the next append on" (orphans go when a result is appended).
    machine = machine_with(config(token_budget=1000))
    compact(machine, tool_result("orphan", "missing"), text("summary", "assistant"))
    context = machine.get("c")
    assert ids(context.window) == ["orphan", "summary"]
    append(machine, text("next"))
    assert ids(context.window) == ["orphan", "summary", "next"]
    append(machine, tool_call("call", "t1"), tool_result("res", "t1"))
    assert ids(context.window) == ["summary", "next", "call", "res"]
    assert context.used_tokens == 20


# --- admission ------------------------------------------------------------------


def test_admission_check_refuses_what_apply_would_refuse() -> None:
    machine = machine_with()
    append(machine, text("a"), idempotency_key="k", fingerprint="f")
    machine.admission_check("c", None, None, None)
    machine.admission_check("c", None, None, 2)
    with pytest.raises(NotFound):
        machine.admission_check("nope", None, None, None)
    with pytest.raises(Conflict) as raised:
        machine.admission_check("c", None, None, 1)
    assert raised.value.code == "version_conflict"
    with pytest.raises(Conflict) as raised:
        machine.admission_check("c", "k", "other", None)
    assert raised.value.code == "idempotency_key_reused"
    machine.apply(Tombstone("c", 2))
    with pytest.raises(Conflict) as raised:
        machine.admission_check("c", None, None, None)
    assert raised.value.code == "context_tombstoned"
    # A matching key skips the checks: the replay must answer.
    machine.admission_check("c", "k", "f", 1)


# --- PatchMetadata ------------------------------------------------------------


def test_patch_metadata_merges() -> None:
    machine = machine_with(metadata={"keep": 1, "drop": 2, "nested": {"a": 1, "b": 2}})
    context = machine.apply(
        PatchMetadata("c", 4, {"drop": None, "new": [1], "nested": {"b": None, "c": 3}})
    )
    assert context.metadata == {"keep": 1, "new": [1], "nested": {"a": 1, "c": 3}}
    assert context.version == 2
    assert context.updated_at == 4


def test_patch_that_changes_nothing_does_not_bump_the_version() -> None:
    machine = machine_with(metadata={"a": 1})
    before = machine.to_bytes()
    machine.apply(PatchMetadata("c", 4, {"a": 1, "missing": None}))
    assert machine.to_bytes() == before


def test_patch_metadata_checks_version_and_tombstone() -> None:
    machine = machine_with()
    assert_refused(
        machine, PatchMetadata("c", 1, {"a": 1}, if_version=7), Conflict, "version_conflict"
    )
    assert machine.apply(PatchMetadata("c", 1, {"a": 1}, if_version=1)).version == 2
    assert_refused(machine, PatchMetadata("nope", 1, {"a": 1}), NotFound, "not_found")
    machine.apply(Tombstone("c", 2))
    assert_refused(machine, PatchMetadata("c", 3, {"a": 2}), Conflict, "context_tombstoned")


def test_patch_metadata_refuses_metadata_over_64_kib() -> None:
    machine = machine_with(metadata={"a": "x" * 40_000})
    assert_refused(
        machine, PatchMetadata("c", 1, {"b": "y" * 30_000}), InvalidInput, "metadata_too_large"
    )
    context = machine.apply(PatchMetadata("c", 1, {"a": None, "b": "y" * 30_000}))
    assert set(context.metadata) == {"b"}


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ({}, {}, {}),
    ],
)
def test_merge_patch_rfc7396_examples(target: dict, patch: dict, expected: dict) -> None:
    original = repr(target)
    assert merge_patch(target, patch) == expected
    assert repr(target) == original  # the target is not mutated


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
        ({"a": "b"}, {"a": {"c": None, "d": 1}}, {"a": {"d": 1}}),
    ],
)
def test_merge_patch_removes_nulls_inside_new_objects(
    target: dict, patch: dict, expected: dict
) -> None:
    # Regression: a nested patch object used to be copied verbatim, nulls included.
    assert merge_patch(target, patch) == expected


# --- Tombstone --------------------------------------------------------------


def test_tombstone_is_idempotent_and_keeps_history_readable() -> None:
    machine = machine_with()
    append(machine, text("a"), text("b"))
    context = machine.apply(Tombstone("c", 5))
    assert (context.status, context.version, context.updated_at) == ("tombstoned", 3, 5)
    before = machine.to_bytes()
    machine.apply(Tombstone("c", 6))
    assert machine.to_bytes() == before
    context = machine.get("c")
    assert ids(context.log) == ["a", "b"]
    assert ids(context.tail(0, 10)) == ["a", "b"]
    assert ids(context.messages_between(0, None, 10)) == ["a", "b"]
    assert ids(context.window) == ["a", "b"]


def test_tombstone_unknown_context_is_not_found() -> None:
    assert_refused(StateMachine(), Tombstone("nope", 1), NotFound, "not_found")


# --- paging -----------------------------------------------------------------


@pytest.fixture
def ten() -> StateMachine:
    machine = machine_with()
    append(machine, *[text(f"m{seq}") for seq in range(1, 11)])
    return machine


def seqs(messages: list) -> list[int]:
    return [m.seq for m in messages]


@pytest.mark.parametrize(
    ("offset", "limit", "expected"),
    [
        (0, 3, [8, 9, 10]),
        (0, 10, list(range(1, 11))),
        (0, 50, list(range(1, 11))),
        (3, 3, [5, 6, 7]),
        (8, 5, [1, 2]),
        (10, 5, []),
        (25, 5, []),
        (0, 0, []),
    ],
)
def test_tail(ten: StateMachine, offset: int, limit: int, expected: list[int]) -> None:
    assert seqs(ten.get("c").tail(offset, limit)) == expected


@pytest.mark.parametrize(
    ("after_seq", "before_seq", "limit", "expected"),
    [
        (0, None, 3, [1, 2, 3]),
        (0, None, 100, list(range(1, 11))),
        (3, None, 2, [4, 5]),
        (3, 6, 10, [4, 5]),
        (3, 4, 10, []),
        (3, 3, 10, []),
        (5, 2, 10, []),
        (9, None, 10, [10]),
        (10, None, 10, []),
        (0, 1, 10, []),
        (0, 11, 100, list(range(1, 11))),
        (0, 1000, 4, [1, 2, 3, 4]),
        (20, None, 5, []),
    ],
)
def test_messages_between(
    ten: StateMachine, after_seq: int, before_seq: int | None, limit: int, expected: list[int]
) -> None:
    assert seqs(ten.get("c").messages_between(after_seq, before_seq, limit)) == expected


def test_paging_an_empty_log() -> None:
    context = machine_with().get("c")
    assert context.tail(0, 10) == []
    assert context.messages_between(0, None, 10) == []


def test_paging_walks_the_whole_log() -> None:
    machine = machine_with()
    append(machine, *[text(f"m{i}") for i in range(23)])
    context = machine.get("c")
    backwards: list = []
    offset = 0
    while page := context.tail(offset, 5):
        backwards = page + backwards
        offset += len(page)
    assert backwards == context.log
    forwards: list = []
    after = 0
    while page := context.messages_between(after, None, 4):
        forwards += page
        after = page[-1].seq
    assert forwards == context.log


# --- snapshots and replay -------------------------------------------------------


def test_snapshot_round_trip() -> None:
    machine = machine_with(config(token_budget=60, strategy="skip_parts"), metadata={"x": [1]})
    append(machine, text("sys", "system"), tool_call("call", "t1"), tool_result("res", "t1"))
    append(machine, text("q"), idempotency_key="k", fingerprint="f")
    compact(machine, text("summary"), idempotency_key="c", fingerprint="g")
    data = machine.to_bytes()
    restored = StateMachine.from_bytes(data)
    assert restored.to_bytes() == data
    assert restored.get("c").window == machine.get("c").window
    assert restored.get("c").idempotency == machine.get("c").idempotency


def test_replay_commands_skips_refused_commands() -> None:
    commands = [
        PutContext("c", 0, config(token_budget=50)),
        AppendMessages("c", 1, [text("a")], TOKENIZER),
        AppendMessages("c", 2, [text("b", tokens=100)], TOKENIZER),  # over budget
        AppendMessages("nope", 3, [text("x")], TOKENIZER),  # unknown context
        AppendMessages("c", 4, [text("c")], TOKENIZER),
    ]
    machine = replay_commands(commands)
    assert ids(machine.get("c").log) == ["a", "c"]
    assert [m.seq for m in machine.get("c").log] == [1, 2]


def test_put_context_with_default_policy() -> None:
    default = ContextConfig(token_budget=10)
    assert default.policy == Policy("last_n", {"limit": 200})
    assert (default.trigger_ratio, default.tokenizer) == (0.7, "o200k_base")


# --- compaction that keeps log messages -------------------------------------------------


def kept(message: MessageInput, seq: int, **changes: object) -> KeptMessage:
    """What the API makes of a window message sent back with its seq."""
    role = str(changes.get("role", message.role))
    parts = changes.get("parts", message.parts)
    return KeptMessage(
        seq=seq,
        digest=content_digest(role, parts, message.metadata),  # type: ignore[arg-type]
        id=message.id,
    )


def test_compact_keeps_log_messages_by_seq() -> None:
    machine = machine_with(config(token_budget=1000, strategy="manual"))
    first, second, third = text("a", tokens=3), text("b", tokens=4), text("c", tokens=5)
    append(machine, first, second, third)
    summary = text("summary", "system", tokens=2)
    result = compact(machine, summary, kept(second, 2), kept(third, 3))
    context = machine.get("c")
    assert ids(context.window) == ["summary", "b", "c"]
    assert [m.seq for m in context.window] == [None, 2, 3]
    assert context.window[1] is context.log[1]  # the log's message itself, not a copy
    assert result.used_tokens == 6 + 8 + 9 == context.used_tokens
    assert windows.segments(context.window)[1] == {
        "type": "log",
        "from_seq": 2,
        "to_seq": 3,
        "count": 2,
        "tokens": 17,
    }


def test_compact_keeps_the_window_version_of_a_stripped_message() -> None:
    machine = machine_with(config(token_budget=100, trigger_ratio=0.5, strategy="skip_parts"))
    reasoning = message_input(
        "a",
        "assistant",
        [{"type": "reasoning", "text": "r"}, {"type": "text", "text": "a"}],
        [5, 1],
    )
    append(machine, text("u1"), reasoning, text("u2", tokens=40))  # 59 > 50: the policy runs
    context = machine.get("c")
    assert ids(context.window) == ["a", "u2"]
    stripped = context.window[0]
    assert stripped.parts == [{"type": "text", "text": "a"}] and stripped.token_count == 5
    as_read = MessageInput("a", "assistant", stripped.parts, None, 5, [1])
    compact(machine, kept(as_read, 2))
    assert machine.get("c").window == [stripped]
    compact(machine, kept(reasoning, 2))  # the log's version is accepted too
    assert machine.get("c").window[0] is machine.get("c").log[1]
    assert machine.get("c").used_tokens == reasoning.token_count


def test_compact_refuses_a_kept_message_whose_content_changed() -> None:
    machine = machine_with()
    append(machine, text("a"), text("b"))
    before = machine.to_bytes()
    edited = kept(text("b"), 2, parts=[{"type": "text", "text": "edited"}])
    with pytest.raises(InvalidInput) as refused:
        compact(machine, edited)
    assert refused.value.code == "kept_message_mismatch"
    with pytest.raises(InvalidInput) as refused:
        compact(machine, kept(text("b"), 3))
    assert refused.value.code == "unknown_seq"
    with pytest.raises(InvalidInput) as refused:
        compact(machine, KeptMessage(seq=2, digest=kept(text("b"), 2).digest, id="other"))
    assert refused.value.code == "kept_message_mismatch"
    assert machine.to_bytes() == before


def test_writes_answer_with_the_state_their_own_command_produced() -> None:
    machine = machine_with(metadata={"n": 0})
    answer = machine.apply(PatchMetadata("c", 2, {"n": 1}))
    machine.apply(PatchMetadata("c", 3, {"n": 2}))
    machine.apply(PutContext("c", 4, config(token_budget=77)))
    assert (answer.metadata, answer.version, answer.config.token_budget) == ({"n": 1}, 2, 1000)


def test_snapshots_keep_the_key_order_of_messages_and_metadata() -> None:
    machine = machine_with(metadata={"z": 1, "a": {"y": 2, "b": 3}})
    part = {
        "type": "tool_call",
        "name": "f",
        "id": "t",
        "input": {"zeta": 1, "alpha": [{"q": 1, "b": 2}]},
    }
    append(machine, message_input("m", "assistant", [part], [3], {"z": True, "a": None}))
    restored = StateMachine.from_bytes(machine.to_bytes())
    message = restored.get("c").log[0]
    assert json.dumps(message.parts) == json.dumps([part])
    assert list(message.metadata or {}) == ["z", "a"]
    assert json.dumps(restored.get("c").metadata) == '{"z": 1, "a": {"y": 2, "b": 3}}'
    assert restored.to_bytes() == machine.to_bytes()


def test_the_fast_command_codec_agrees_with_cattrs() -> None:
    """Appends skip cattrs' generic walk on the hot path; the JSON must not change."""
    command = AppendMessages(
        context_id="c",
        at=1_700_000_000_123,
        messages=[
            MessageInput("m1", "user", [{"type": "text", "text": "hi"}], None, 5, [1]),
            MessageInput("m2", "assistant", [{"type": "x", "b": 1, "a": [2]}], {"k": "v"}, 9, [5]),
        ],
        tokenizer="o200k_base",
        idempotency_key="key",
        fingerprint="f" * 64,
        if_version=3,
    )
    data = command_to_json(command)
    assert data == converter.unstructure(command)
    assert list(data) == list(converter.unstructure(command))
    assert command_from_json(data) == command == converter.structure(data, AppendMessages)
    older = {**data, "if_version": None, "idempotency_key": None, "fingerprint": None}
    assert command_from_json(older) == converter.structure(older, AppendMessages)
