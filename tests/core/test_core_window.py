"""The LLM window: units, policies, trimming and segments."""

from __future__ import annotations

import pytest
from core_builders import (
    append,
    config,
    ids,
    machine_with,
    message_input,
    stored,
    text,
    tool_call,
    tool_result,
    window_of,
)
from fastpaca_server.core import InvalidInput, Message, PutContext
from fastpaca_server.core import window as windows
from fastpaca_server.core.window import (
    apply_policy,
    build_units,
    is_pinned,
    segments,
    strip_parts,
    trim,
)


def without_orphans(window: list[Message]) -> list[Message]:
    """What a non-manual policy leaves of a window that fits: orphan results removed."""
    return trim(window, max_tokens=10**9, max_messages=None)


def assert_paired(window: list[Message]) -> None:
    """Every tool result in ``window`` answers a call earlier in ``window``."""
    calls: set[str] = set()
    for message in window:
        for call_id in windows.tool_result_ids(message):
            assert call_id in calls, f"orphan result for {call_id} in {ids(window)}"
        calls.update(windows.tool_call_ids(message))


def reasoning_and_text(message_id: str, role: str = "assistant") -> object:
    return message_input(
        message_id,
        role,
        [{"type": "reasoning", "text": "hmm"}, {"type": "text", "text": message_id}],
        [5, 1],
    )


# --- pinning and units ----------------------------------------------------------


def test_system_and_metadata_pinned_messages_are_pinned() -> None:
    assert is_pinned(stored(text("s", "system"), 1))
    assert is_pinned(stored(text("p", metadata={"pinned": True}), 1))
    assert not is_pinned(stored(text("u"), 1))
    assert not is_pinned(stored(text("u", metadata={"pinned": "yes"}), 1))
    assert not is_pinned(stored(text("u", metadata={"pinned": False}), 1))


def test_units_group_calls_with_their_results() -> None:
    window = window_of(
        text("u"),
        tool_call("call", "t1", "t2"),
        tool_result("r1", "t1"),
        text("between", "assistant"),
        tool_result("r2", "t2"),
        tool_result("orphan", "nope"),
    )
    units = build_units(window)
    assert [u.indices for u in units] == [(0,), (1, 2, 4), (3,), (5,)]
    assert not any(u.pinned for u in units)
    assert units[1].tokens == 6 + 5 + 5  # the call has two parts
    assert units[1].tokens == sum(window[i].token_count for i in (1, 2, 4))


def test_one_result_message_answering_two_calls_joins_their_units() -> None:
    window = window_of(
        tool_call("a", "t1"), text("x"), tool_call("b", "t2"), tool_result("r", "t1", "t2")
    )
    units = build_units(window)
    assert [u.indices for u in units] == [(0, 2, 3), (1,)]


def test_pinned_member_pins_the_unit() -> None:
    window = window_of(tool_call("call", "t1"), tool_result("r", "t1"))
    window[0] = stored(
        message_input("call", "assistant", window[0].parts, [1], {"pinned": True}), 1
    )
    (unit,) = build_units(window)
    assert unit.pinned


def test_ai_sdk_tool_part_is_a_single_unit() -> None:
    part = {
        "type": "tool-weather",
        "toolCallId": "c1",
        "state": "output-available",
        "input": {"city": "Oslo"},
        "output": {"weather": "sunny"},
    }
    window = window_of(text("u"), message_input("a", "assistant", [part], [10]), text("u2"))
    units = build_units(window)
    assert [u.indices for u in units] == [(0,), (1,), (2,)]
    kept = trim(window, max_tokens=19, max_messages=None)
    assert ids(kept) == ["a", "u2"]


# --- trim / last_n ----------------------------------------------------------------


def test_last_n_keeps_the_newest_n_messages() -> None:
    window = window_of(*[text(f"m{i}") for i in range(10)])
    kept, needs = apply_policy(window, config(strategy="last_n", limit=3))
    assert ids(kept) == ["m7", "m8", "m9"]
    assert needs is False


def test_last_n_is_unit_aligned() -> None:
    window = window_of(
        text("u1"), tool_call("call", "t1"), tool_result("res", "t1"), text("a1", "assistant")
    )
    # Limit 2: the call unit has two messages; keeping it would make 3, so it goes whole.
    kept, _ = apply_policy(window, config(strategy="last_n", limit=2))
    assert ids(kept) == ["a1"]
    kept, _ = apply_policy(window, config(strategy="last_n", limit=3))
    assert ids(kept) == ["call", "res", "a1"]


def test_last_n_keeps_pinned_messages_beyond_the_limit() -> None:
    window = window_of(text("sys", "system"), *[text(f"m{i}") for i in range(5)])
    window.insert(3, stored(text("pin", metadata={"pinned": True}), 99))
    kept, _ = apply_policy(window, config(strategy="last_n", limit=2))
    assert ids(kept) == ["sys", "pin", "m3", "m4"]


def test_trim_drops_the_oldest_units_until_the_budget_holds() -> None:
    window = window_of(
        text("sys", "system", tokens=6), *[text(f"m{i}", tokens=6) for i in range(5)]
    )
    kept = trim(window, max_tokens=35, max_messages=None)
    assert ids(kept) == ["sys", "m3", "m4"]
    assert windows.window_tokens(kept) == 30


def test_trim_keeps_a_call_and_its_result_together() -> None:
    window = window_of(
        text("u1", tokens=1),  # 5
        tool_call("call", "t1", tokens=11),  # 15
        text("u2", tokens=1),  # 5
        tool_result("res", "t1", tokens=11),  # 15
        text("u3", tokens=1),  # 5
    )
    # 45 tokens; at 30 the call unit (30 tokens with its result) must go as a whole.
    kept = trim(window, max_tokens=30, max_messages=None)
    assert ids(kept) == ["u2", "u3"]
    kept = trim(window, max_tokens=40, max_messages=None)
    assert ids(kept) == ["call", "u2", "res", "u3"]


def test_trim_drops_orphan_results_even_under_budget() -> None:
    window = window_of(
        tool_result("orphan", "gone"), text("u"), tool_call("c", "t"), tool_result("r", "t")
    )
    assert ids(trim(window, max_tokens=1000, max_messages=None)) == ["u", "c", "r"]


def test_a_result_before_its_call_is_an_orphan() -> None:
    window = window_of(tool_result("early", "t"), tool_call("call", "t"))
    assert ids(without_orphans(window)) == ["call"]


def test_orphan_result_next_to_an_answered_result_does_not_stay() -> None:
    window = window_of(
        text("u"), tool_call("call", "t1"), tool_result("both", "t1", "gone"), text("after")
    )
    kept = without_orphans(window)
    assert_paired(kept)
    # docs/api.md: orphan result parts are stripped; the answered result stays.
    assert ids(kept) == ["u", "call", "both", "after"]
    both = kept[2]
    assert [p["tool_call_id"] for p in both.parts] == ["t1"]
    assert (both.part_tokens, both.token_count) == ([1], 5)
    assert both.seq == 3


def test_joined_units_with_an_orphan_result_leave_no_orphan() -> None:
    window = window_of(
        tool_call("a", "t1"),
        message_input(
            "b",
            "tool",
            [
                {"type": "tool_result", "tool_call_id": "gone", "output": 1},
                {"type": "tool_call", "id": "t2", "name": "f", "payload": {}},
            ],
            [1, 1],
        ),
        tool_result("r", "t1", "t2"),
        text("u"),
    )
    kept = without_orphans(window)
    assert_paired(kept)
    assert "u" in ids(kept)
    assert ("r" in ids(kept)) == ("a" in ids(kept))


def test_orphan_result_bound_to_a_pinned_call_does_not_stay() -> None:
    # Regression: the orphan flag used to be cleared for pinned units, so the result
    # for "never-called" stayed in the window next to the pinned call's result.
    machine = machine_with(config(token_budget=1000))
    pinned_call = message_input(
        "call",
        "assistant",
        [{"type": "tool_call", "id": "t1", "name": "lookup", "payload": {}}],
        metadata={"pinned": True},
    )
    append(machine, pinned_call, text("u"))
    append(machine, tool_result("both", "t1", "never-called"))
    window = machine.get("c").window
    assert_paired(window)
    assert "call" in ids(window)
    assert machine.get("c").used_tokens == sum(m.token_count for m in window)


def test_trim_keeps_pinned_even_over_the_limits() -> None:
    window = window_of(text("sys", "system", tokens=96), text("u"))
    assert ids(trim(window, max_tokens=50, max_messages=0)) == ["sys"]


# --- manual -----------------------------------------------------------------------


def test_manual_only_raises_needs_compaction() -> None:
    window = window_of(tool_result("orphan", "gone"), *[text(f"m{i}", tokens=50) for i in range(4)])
    kept, needs = apply_policy(window, config(token_budget=100, strategy="manual"))
    assert kept == window
    assert needs is True


def test_manual_context_keeps_everything_and_flags_it() -> None:
    machine = machine_with(config(token_budget=100, strategy="manual"))
    assert append(machine, text("a", tokens=60)).needs_compaction is False  # 64 <= 70
    result = append(machine, text("b", tokens=60))
    assert result.needs_compaction is True
    context = machine.get("c")
    assert ids(context.window) == ["a", "b"]
    assert context.used_tokens == 128


# --- skip_parts ---------------------------------------------------------------------


def test_skip_parts_strips_older_units_and_keeps_the_current_turn() -> None:
    window = window_of(
        text("u1"),
        reasoning_and_text("a1"),
        tool_call("call1", "t1"),
        tool_result("res1", "t1"),
        text("u2"),  # last user message: from here on nothing is stripped
        reasoning_and_text("a2"),
        tool_call("call2", "t2"),
        tool_result("res2", "t2"),
    )
    kept, needs = apply_policy(window, config(token_budget=1000, strategy="skip_parts"))
    assert needs is False
    assert ids(kept) == ["u1", "a1", "u2", "a2", "call2", "res2"]
    stripped_a1 = kept[1]
    assert stripped_a1.parts == [{"type": "text", "text": "a1"}]
    assert stripped_a1.part_tokens == [1]
    assert stripped_a1.token_count == 5
    assert stripped_a1.seq == 2
    assert kept[3] == window[5]  # untouched in the current turn


def test_skip_parts_uses_the_configured_kinds_as_prefixes() -> None:
    ai_sdk = message_input(
        "a",
        "assistant",
        [
            {"type": "tool-weather", "toolCallId": "c1", "state": "output-available"},
            {"type": "dynamic-tool", "toolName": "x"},
            {"type": "text", "text": "done"},
        ],
        [7, 3, 1],
    )
    window = window_of(ai_sdk, text("u"))
    kept = strip_parts(window, ["tool"], keep_from=1)
    assert [p["type"] for p in kept[0].parts] == ["dynamic-tool", "text"]
    assert kept[0].token_count == 4 + 3 + 1
    kept = strip_parts(window, ["tool", "dynamic-tool"], keep_from=1)
    assert [p["type"] for p in kept[0].parts] == ["text"]
    assert strip_parts(window, [], keep_from=1) == window


def test_skip_parts_leaves_pinned_messages_alone() -> None:
    pinned = message_input(
        "p", "assistant", [{"type": "reasoning", "text": "r"}], [3], {"pinned": True}
    )
    window = window_of(pinned, text("u"))
    assert strip_parts(window, ["reasoning"], keep_from=1) == window


def test_skip_parts_without_a_user_message_keeps_the_newest_unit_whole() -> None:
    window = window_of(reasoning_and_text("a1"), tool_call("c", "t"), tool_result("r", "t"))
    kept, _ = apply_policy(window, config(strategy="skip_parts"))
    assert ids(kept) == ["a1", "c", "r"]
    assert kept[0].parts == [{"type": "text", "text": "a1"}]
    assert kept[1:] == window[1:]


def test_skip_parts_that_strip_only_calls_drop_the_orphaned_results() -> None:
    window = window_of(tool_call("call", "t1"), tool_result("res", "t1"), text("u"))
    kept, _ = apply_policy(window, config(strategy="skip_parts", skip_kinds=["tool_call"]))
    assert ids(kept) == ["u"]


def test_skip_parts_then_trims_to_the_trigger() -> None:
    window = window_of(*[reasoning_and_text(f"a{i}") for i in range(4)], text("u", tokens=20))
    # Stripped, each a{i} is 5 tokens; with u (24) the window is 44.
    kept, _ = apply_policy(
        window, config(token_budget=35, trigger_ratio=1.0, strategy="skip_parts")
    )
    assert ids(kept) == ["a2", "a3", "u"]
    assert windows.window_tokens(kept) == 34
    kept, _ = apply_policy(
        window, config(token_budget=35, trigger_ratio=0.8, strategy="skip_parts")
    )  # down to 28
    assert ids(kept) == ["u"]


def test_skip_parts_context_strips_when_the_trigger_is_crossed() -> None:
    machine = machine_with(config(token_budget=100, strategy="skip_parts"))
    append(machine, text("u1"), reasoning_and_text("a1"))  # 5 + 10
    context = machine.get("c")
    assert context.window[1].parts[0]["type"] == "reasoning"  # under the trigger: untouched
    append(machine, text("u2", tokens=60))  # 79 > 70
    # Stripped: 5 + 5 + 64 = 74, still over the trigger, so u1 goes too.
    assert ids(context.window) == ["a1", "u2"]
    assert context.window[0].parts == [{"type": "text", "text": "a1"}]
    assert context.used_tokens == 5 + 64
    assert context.log[1].parts[0]["type"] == "reasoning"  # the log is untouched


# --- state-level pairing ------------------------------------------------------------


def test_context_drops_call_and_result_together() -> None:
    machine = machine_with(config(token_budget=50, strategy="last_n"))
    append(
        machine, text("u1"), tool_call("call", "t1", tokens=6), tool_result("res", "t1", tokens=6)
    )
    append(machine, text("u2", tokens=36))  # 5 + 10 + 10 + 40 = 65 > 50
    context = machine.get("c")
    # Dropping u1 leaves 60; the call goes next, and its result with it.
    assert ids(context.window) == ["u2"]
    assert ids(context.log) == ["u1", "call", "res", "u2"]


def test_window_never_starts_with_a_result_whose_call_was_cut() -> None:
    machine = machine_with(config(token_budget=40, strategy="last_n"))
    append(machine, text("sys", "system"), tool_call("call", "t1", tokens=16))  # 5 + 20
    append(machine, text("u", tokens=6))  # 35 > 28 -> trim keeps all (35 <= 40)
    append(machine, tool_result("res", "t1", tokens=16))  # 55: the call unit (40) goes whole
    context = machine.get("c")
    assert ids(context.window) == ["sys", "u"]
    assert context.used_tokens == 15


def test_policy_trims_down_to_the_trigger() -> None:
    machine = machine_with(config(token_budget=100, trigger_ratio=0.5))
    for i in range(6):
        append(machine, text(f"m{i}", tokens=6))  # 10 each
    context = machine.get("c")
    # 60 > 50 on the sixth append: trimmed to 50 or less.
    assert ids(context.window) == ["m1", "m2", "m3", "m4", "m5"]
    append(machine, text("m6", tokens=6))
    assert ids(context.window) == ["m2", "m3", "m4", "m5", "m6"]
    assert context.used_tokens == 50


def test_trigger_tokens_and_message_limit() -> None:
    assert windows.trigger_tokens(config(token_budget=35, trigger_ratio=0.7)) == 24
    assert windows.trigger_tokens(config(token_budget=100, trigger_ratio=1.0)) == 100
    assert windows.message_limit(config(limit=7)) == 7
    assert windows.message_limit(config(strategy="skip_parts", limit=3)) == 3
    assert windows.message_limit(config(strategy="manual")) is None


def test_the_newest_message_stays_even_above_the_trigger() -> None:
    machine = machine_with(config(token_budget=100, trigger_ratio=0.5))
    append(machine, text("old", tokens=6))
    append(machine, text("big", tokens=76))  # 80 > 50 on its own
    context = machine.get("c")
    assert ids(context.window) == ["big"]
    assert context.used_tokens == 80


def test_the_newest_tool_unit_stays_whole_beyond_the_limit() -> None:
    machine = machine_with(config(token_budget=1000, limit=1))
    append(machine, text("u"), tool_call("call", "t1"), tool_result("res", "t1"))
    assert ids(machine.get("c").window) == ["call", "res"]


def test_limit_is_enforced_below_the_trigger() -> None:
    machine = machine_with(config(token_budget=1000, limit=3))
    for i in range(5):
        append(machine, text(f"m{i}"))
    context = machine.get("c")
    assert ids(context.window) == ["m2", "m3", "m4"]
    assert context.used_tokens == 15


def test_pinned_messages_do_not_count_towards_the_limit() -> None:
    machine = machine_with(config(token_budget=1000, limit=2))
    append(machine, text("sys", "system"), *[text(f"m{i}") for i in range(4)])
    assert ids(machine.get("c").window) == ["sys", "m2", "m3"]


def test_skip_parts_does_not_run_when_only_pinned_messages_exceed_the_limit() -> None:
    # Regression: pinned messages used to count towards the limit that makes the policy run.
    machine = machine_with(config(token_budget=1000, strategy="skip_parts", limit=3))
    # 3 unpinned messages (the limit) plus a system prompt; 20 tokens, trigger 700.
    append(machine, text("sys", "system"), text("u1"), reasoning_and_text("a1"), text("u2"))
    a1 = machine.get("c").window[2]
    assert [part["type"] for part in a1.parts] == ["reasoning", "text"]


def test_the_tool_result_just_appended_stays_in_the_window() -> None:
    # Regression: keep_newest used to protect the unit with the highest first index, not the unit
    # of the message just appended.
    machine = machine_with(config(token_budget=100))  # trigger 70
    append(machine, tool_call("call", "t1", tokens=26), text("note", "assistant", tokens=26))
    append(machine, tool_result("res", "t1", tokens=16))  # 30 + 30 + 20 = 80 > 70
    context = machine.get("c")
    assert {"call", "res"} <= set(ids(context.window))
    assert context.used_tokens <= 100


def test_skip_parts_keeps_the_current_turn_after_its_user_message_was_trimmed() -> None:
    # Regression: the current turn used to end where the window's last user message was.
    machine = machine_with(config(token_budget=100, strategy="skip_parts"))  # trigger 70
    append(machine, text("question", tokens=16))  # 20
    for i in range(3):  # an agent loop: a call and its result, 20 tokens each pair
        append(
            machine,
            tool_call(f"call{i}", f"t{i}", tokens=6),
            tool_result(f"r{i}", f"t{i}", tokens=6),
        )
    context = machine.get("c")
    assert ids(context.window) == ["call0", "r0", "call1", "r1", "call2", "r2"]  # question trimmed
    append(machine, tool_call("call3", "t3", tokens=6), tool_result("r3", "t3", tokens=6))
    # Everything after the question is the current turn: nothing is stripped, the oldest
    # pair is trimmed (this used to leave only call3/r3, and before that nothing).
    assert ids(context.window) == ["call1", "r1", "call2", "r2", "call3", "r3"]
    assert context.used_tokens == 60


def test_switching_from_manual_trims_an_oversized_newest_message_to_the_budget() -> None:
    machine = machine_with(config(token_budget=1000, strategy="manual"))
    append(machine, text("a"), text("big", tokens=80))  # 5 + 84
    machine.apply(PutContext("c", 2, config(token_budget=82, trigger_ratio=0.5)))
    context = machine.get("c")
    # The newest unit is kept while trimming to the trigger, but it alone is over
    # the budget, so the second pass drops it too.
    assert ids(context.window) == []
    assert context.used_tokens == 0
    machine.apply(PutContext("c", 3, config(token_budget=1000, strategy="manual")))
    assert ids(machine.get("c").window) == []


# --- budget_tokens reads ----------------------------------------------------------------


def test_window_within_a_budget_that_fits_is_the_window() -> None:
    machine = machine_with()
    append(machine, text("a"), text("b"))
    context = machine.get("c")
    assert context.window_within(10) == context.window
    assert context.window_within(1000) == context.window


def test_window_within_trims_a_copy_by_units() -> None:
    machine = machine_with()
    append(
        machine,
        text("sys", "system"),
        text("u1", tokens=6),  # 10
        tool_call("call", "t1", tokens=6),  # 10
        tool_result("res", "t1", tokens=6),  # 10
        text("u2", tokens=6),  # 10
    )
    context = machine.get("c")
    stored_window = list(context.window)
    assert ids(context.window_within(45)) == ["sys", "u1", "call", "res", "u2"]
    assert ids(context.window_within(35)) == ["sys", "call", "res", "u2"]
    assert ids(context.window_within(34)) == ["sys", "u2"]  # the pair goes whole
    assert ids(context.window_within(5)) == ["sys"]
    assert context.window == stored_window  # the stored window is untouched


def test_window_within_less_than_the_pinned_messages_is_refused() -> None:
    machine = machine_with()
    append(machine, text("sys", "system", tokens=16), text("u"))  # 20 pinned
    context = machine.get("c")
    assert ids(context.window_within(20)) == ["sys"]
    with pytest.raises(InvalidInput) as raised:
        context.window_within(19)
    assert raised.value.code == "budget_too_small"


# --- segments ---------------------------------------------------------------------


def test_segments_describe_log_runs_and_replacements() -> None:
    window = [
        stored(text("s1", tokens=1), None),
        stored(text("s2", tokens=2), None),
        stored(text("m3", tokens=3), 3),
        stored(text("m4", tokens=4), 4),
        stored(text("m7", tokens=1), 7),
        stored(text("s3", tokens=0), None),
        stored(text("m8", tokens=0), 8),
    ]
    assert segments(window) == [
        {"type": "replacement", "count": 2, "tokens": 11},
        {"type": "log", "from_seq": 3, "to_seq": 4, "count": 2, "tokens": 15},
        {"type": "log", "from_seq": 7, "to_seq": 7, "count": 1, "tokens": 5},
        {"type": "replacement", "count": 1, "tokens": 4},
        {"type": "log", "from_seq": 8, "to_seq": 8, "count": 1, "tokens": 4},
    ]


def test_segments_of_an_empty_window() -> None:
    assert segments([]) == []


def test_segments_cover_the_window() -> None:
    machine = machine_with(config(token_budget=60))  # trigger 42
    append(machine, *[text(f"m{i}", tokens=6) for i in range(8)])
    context = machine.get("c")
    runs = segments(context.window)
    assert sum(int(r["count"]) for r in runs) == len(context.window)
    assert sum(int(r["tokens"]) for r in runs) == context.used_tokens
    assert runs == [{"type": "log", "from_seq": 5, "to_seq": 8, "count": 4, "tokens": 40}]


# --- promises the window used to break -----------------------------------------------------


def call_with_own_result(message_id: str, call_id: str) -> object:
    """One assistant message that carries a call and its own result."""
    return message_input(
        message_id,
        "assistant",
        [
            {"type": "tool_call", "id": call_id, "name": "lookup"},
            {"type": "tool_result", "tool_call_id": call_id, "output": "42"},
            {"type": "text", "text": "It is 42."},
        ],
        [3, 2, 1],
    )


def test_a_result_in_the_same_message_as_its_call_is_not_an_orphan() -> None:
    window = window_of(text("u"), call_with_own_result("a", "t1"))
    kept = windows.strip_orphan_results(window)
    assert kept == window
    assert trim(window, max_tokens=10**9, max_messages=None) == window


@pytest.mark.parametrize("kinds", [["tool_result"], ["tool_call"], ["tool_c"], ["tool_r"]])
def test_skip_parts_removes_a_call_and_its_result_together_whatever_the_kinds_name(
    kinds: list[str],
) -> None:
    answer = message_input(
        "a", "assistant", [{"type": "text", "text": "checking"}, *_call("t1")], [1, 3]
    )
    window = window_of(text("u1"), answer, tool_result("r", "t1"), text("u2"))
    kept = strip_parts(window, kinds, keep_from=3)
    assert_paired(kept)
    assert all(not windows.tool_call_ids(m) for m in kept), kinds
    assert ids(kept) == ["u1", "a", "u2"]
    assert kept[1].parts == [{"type": "text", "text": "checking"}]


def _call(call_id: str) -> list[dict[str, object]]:
    return [{"type": "tool_call", "id": call_id, "name": "lookup"}]


def test_skip_parts_in_a_context_never_leaves_a_call_without_its_result() -> None:
    machine = machine_with(
        config(
            token_budget=60, trigger_ratio=0.5, strategy="skip_parts", skip_kinds=["tool_result"]
        )
    )
    append(machine, text("u1"), tool_call("c1", "t1", tokens=5), tool_result("r1", "t1", tokens=5))
    append(machine, text("u2", tokens=10))
    window = machine.get("c").window
    assert_paired(window)
    assert "c1" not in ids(window) and "r1" not in ids(window)


def test_skip_parts_drops_a_message_left_with_only_step_markers() -> None:
    husk = message_input(
        "a",
        "assistant",
        [
            {"type": "step-start"},
            {"type": "reasoning", "text": "thinking"},
            {"type": "step-start"},
        ],
        [1, 9, 1],
    )
    window = window_of(text("u1"), husk, text("u2"))
    kept = strip_parts(window, ["reasoning"], keep_from=2)
    assert ids(kept) == ["u1", "u2"]


def test_a_message_that_keeps_content_keeps_its_step_markers() -> None:
    step = message_input(
        "a",
        "assistant",
        [{"type": "step-start"}, {"type": "reasoning", "text": "r"}, {"type": "text", "text": "t"}],
        [1, 9, 1],
    )
    kept = strip_parts(window_of(text("u1"), step, text("u2")), ["reasoning"], keep_from=2)
    assert [p["type"] for p in kept[1].parts] == ["step-start", "text"]
    assert kept[1].token_count == step.token_count - 9


# --- budget -----------------------------------------------------------------------------


def test_budget_trims_a_triggered_window_to_its_target_ratio() -> None:
    """10 tokens a message (5 + overhead), budget 200, trigger 0.7 (140): the 15th
    message crosses the trigger and the window drops to half the budget (100)."""
    machine = machine_with(config(token_budget=200, strategy="budget", target_ratio=0.5))
    for number in range(14):
        append(machine, text(f"m{number}", tokens=6))
    assert len(machine.get("c").window) == 14  # 140 tokens: at the trigger, not over it
    result = append(machine, text("m14", tokens=6))
    context = machine.get("c")
    assert ids(context.window) == [f"m{n}" for n in range(5, 15)]
    assert result.used_tokens == context.used_tokens == 100
    assert result.needs_compaction is False
    assert len(context.log) == 15  # the log keeps everything


def test_budget_has_no_message_limit_and_keeps_pins_and_pairs() -> None:
    machine = machine_with(config(token_budget=10_000, strategy="budget", target_ratio=0.2))
    append(machine, text("sys", "system", tokens=96))
    for number in range(300):  # far beyond last_n's default of 200 messages
        append(machine, text(f"m{number}", tokens=1))
    assert len(machine.get("c").window) == 301
    append(machine, tool_call("call", "t1", tokens=46), tool_result("result", "t1", tokens=46))
    append(machine, text("big", tokens=6_500))  # crosses the trigger (7,000)
    context = machine.get("c")
    assert context.used_tokens <= 2_000 + 6_504  # the newest unit stays, pins stay
    assert ids(context.window)[0] == "sys"
    kept = ids(context.window)
    assert ("call" in kept) == ("result" in kept)
    assert kept[-1] == "big"


@pytest.mark.parametrize("ratio", [0.1, 0.5, 1.0])
def test_budget_never_leaves_a_window_over_the_budget(ratio: float) -> None:
    machine = machine_with(config(token_budget=100, strategy="budget", target_ratio=ratio))
    for number in range(40):
        append(machine, text(f"m{number}", tokens=number % 7 + 1))
        assert machine.get("c").used_tokens <= 100


# --- time_window ---------------------------------------------------------------------


def test_time_window_drops_messages_older_than_max_age_at_each_write() -> None:
    """The time comes from the command (``at``, ms), never from a clock."""
    machine = machine_with(config(strategy="time_window", max_age_seconds=10))
    append(machine, text("sys", "system"), at=0)
    append(machine, text("old"), at=1_000)
    append(machine, tool_call("call", "t1"), tool_result("result", "t1"), at=2_000)
    append(machine, text("recent"), at=9_000)
    assert ids(machine.get("c").window) == ["sys", "old", "call", "result", "recent"]
    append(machine, text("now"), at=11_500)  # cutoff 1,500: "old" (1,000) expires
    assert ids(machine.get("c").window) == ["sys", "call", "result", "recent", "now"]
    append(machine, text("later"), at=12_500)  # cutoff 2,500: the call and its result go
    context = machine.get("c")
    assert ids(context.window) == ["sys", "recent", "now", "later"]
    assert context.used_tokens == sum(m.token_count for m in context.window)
    assert len(context.log) == 7  # the log keeps everything
    append(machine, text("much later"), at=100_000)  # the newest message always stays
    assert ids(machine.get("c").window) == ["sys", "much later"]


def test_time_window_keeps_the_budget_like_last_n() -> None:
    machine = machine_with(
        config(token_budget=100, strategy="time_window", trigger_ratio=0.5, max_age_seconds=3600)
    )
    for number in range(30):
        append(machine, text(f"m{number}", tokens=6), at=number)
        assert machine.get("c").used_tokens <= 50
