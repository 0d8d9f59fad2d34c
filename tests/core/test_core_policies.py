"""The policy suite in the core: strip_tool_results, pipeline, pins, summaries,
custom policies and compaction records, on hand-made windows (the random
histories are in test_core_properties.py)."""

from __future__ import annotations

from typing import Any

from core_builders import (
    ContextConfig,
    Policy,
    append,
    ids,
    machine_with,
    message_input,
    text,
    tool_call,
)
from fastpaca_server.core import DomainError, PutContext, Summarize, SummarizeResult
from fastpaca_server.core import window as windows
from fastpaca_server.core.state import CUSTOM_POLICIES

FRAMES = {"tool_result": 3, "tool": 3, "dynamic-tool": 3}


def _config(policy: Policy, budget: int = 100, trigger: float = 0.7) -> ContextConfig:
    return ContextConfig(token_budget=budget, trigger_ratio=trigger, policy=policy)


def _strip(**options: Any) -> Policy:
    return Policy("strip_tool_results", {"placeholder": "[x]", "frames": FRAMES, **options})


def _result(message_id: str, call: str, tokens: int, tool: str | None = None) -> Any:
    part = {"type": "tool_result", "tool_call_id": call, "output": "x" * tokens}
    return message_input(message_id, "tool", [part], [tokens])


def _outputs(machine: Any) -> list[str]:
    """Each tool result in the window: its call id, and whether it was cleared."""
    return [
        f"{part['tool_call_id']}{'-' if part.get('cleared') else '+'}"
        for message in machine.get("c").window
        for part in message.parts
        if part["type"] == "tool_result"
    ]


def test_strip_tool_results_clears_all_but_the_newest_keep_and_records_it() -> None:
    machine = machine_with(_config(_strip(keep=1)))
    for n in range(3):
        append(machine, tool_call(f"call{n}", f"t{n}"), _result(f"res{n}", f"t{n}", 20), at=n)
    assert _outputs(machine) == ["t0-", "t1-", "t2+"]
    context = machine.get("c")
    cleared = context.window[1]
    assert cleared.parts[0] == {
        "type": "tool_result",
        "tool_call_id": "t0",
        "payload": "[x]",
        "cleared": True,
    }
    assert cleared.token_count == 4 + 3 + len('"t0"')  # overhead + frame + the id's JSON bytes
    assert context.log[1].parts[0]["output"] == "x" * 20  # the log keeps the output
    record = windows_record(context)
    assert record["actions"][0]["reason"] == "tool_output_cleared"
    assert record["actions"][0]["changed"] == [[2, 2], [4, 4]]
    assert record["actions"][0]["removed"] == []


def windows_record(context: Any) -> dict[str, Any]:
    import json

    record: dict[str, Any] = json.loads(context.all_records()[-1])
    return record


def test_clear_at_least_waits_until_a_pass_frees_enough() -> None:
    machine = machine_with(_config(_strip(keep=0, clear_at_least=60, target_ratio=1.0), 200))
    append(machine, tool_call("call0", "t0"), _result("res0", "t0", 40), at=0)
    append(machine, tool_call("call1", "t1"), _result("res1", "t1", 40), at=1)
    assert _outputs(machine) == [
        "t0+",
        "t1+",
    ]  # over the trigger, but a pass would free 2 x 33 < 60
    append(machine, tool_call("call2", "t2"), _result("res2", "t2", 40), at=2)
    assert _outputs(machine) == ["t0-", "t1-", "t2-"]


def test_excluded_tools_and_pinned_messages_keep_their_output() -> None:
    machine = machine_with(_config(_strip(keep=0, exclude_tools=["weather"], target_ratio=1.0)))
    append(machine, tool_call("call0", "t0"), _result("res0", "t0", 30))
    append(machine, text("u", tokens=30))
    assert _outputs(machine) == ["t0+"]  # the builders' tool_call parts are named weather


def test_a_pipeline_reports_each_step() -> None:
    policy = Policy(
        "pipeline",
        {
            "steps": [
                {"strategy": "strip_tool_results", "config": {"keep": 0, "frames": FRAMES}},
                {"strategy": "last_n", "config": {"limit": 3}},
            ]
        },
    )
    machine = machine_with(_config(policy))
    append(machine, tool_call("call0", "t0"), _result("res0", "t0", 60), at=0)
    result = append(machine, text("u1"), text("u2"), at=1)
    assert result.compaction is not None
    actions = [(a["step"], a["policy"], a["reason"]) for a in result.compaction["actions"]]
    assert actions == [
        (0, "strip_tool_results", "tool_output_cleared"),
        (1, "last_n", "over_message_limit"),
    ]
    # The call and its (cleared) result are one unit: over the limit of 3, it goes whole.
    assert ids(machine.get("c").window) == ["u1", "u2"]


def test_pin_none_drops_system_messages_flagged_ones_stay() -> None:
    machine = machine_with(_config(Policy("last_n", {"limit": 1, "pin": "none"})))
    append(machine, text("rules", "system"), text("flag", metadata={"pinned": True}))
    append(machine, text("u1"), at=2)
    append(machine, text("u2"), at=3)
    assert ids(machine.get("c").window) == ["flag", "u2"]


def _summarize_machine() -> Any:
    machine = machine_with(_config(Policy("summarize", {"target_ratio": 0.4}), budget=100))
    append(machine, text("rules", "system", tokens=6))
    for n in range(8):
        append(machine, text(f"u{n}", tokens=6), at=n + 1)
    return machine


def _summary(to_seq: int, base: int, n: int = 1, error: str | None = None) -> Summarize:
    summary = None if error else message_input(f"sum{n}", "system", None, [6])
    return Summarize("c", 100 + n, base, to_seq, summary=summary, error=error)


def test_a_summary_folds_the_oldest_units_after_the_pinned_ones() -> None:
    machine = _summarize_machine()
    context = machine.get("c")
    assert context.needs_compaction is True  # 80 tokens > 70: a summary is due
    plan = windows.plan_summary(context.window, context.config)
    assert plan is not None and plan.to_seq == 6 and plan.previous is None
    assert [m["id"] for m in plan.messages] == ["u0", "u1", "u2", "u3", "u4"]
    result = machine.apply(_summary(plan.to_seq, context.compactions))
    assert isinstance(result, SummarizeResult) and result.outcome == "applied"
    window = machine.get("c").window
    assert ids(window) == ["rules", "sum1", "u5", "u6", "u7"]
    assert window[1].metadata == {"summary": {"number": 1, "from_seq": 2, "to_seq": 6}}
    assert windows.segments(window)[1] == {
        "type": "summary",
        "from_seq": 2,
        "to_seq": 6,
        "count": 1,
        "tokens": 10,
    }
    assert machine.get("c").needs_compaction is False
    assert windows_record(machine.get("c"))["actions"][0]["removed"] == [[2, 6]]

    # The next one folds the previous summary too, and covers from seq 2 still.
    for n in range(8, 12):  # 90 tokens: past the trigger, not the budget
        append(machine, text(f"u{n}", tokens=6), at=n + 1)
    context = machine.get("c")
    plan = windows.plan_summary(context.window, context.config)
    assert plan is not None and plan.previous == "sum1"
    machine.apply(_summary(plan.to_seq, context.compactions, n=2))
    window = machine.get("c").window
    assert ids(window)[:2] == ["rules", "sum2"]
    assert window[1].metadata["summary"]["from_seq"] == 2  # type: ignore[index]
    assert sum(windows.is_summary(m) for m in window) == 1


def test_a_stale_summary_changes_nothing_and_a_failure_is_recorded() -> None:
    machine = _summarize_machine()
    before = machine.to_bytes()
    stale = machine.apply(_summary(6, base=machine.get("c").compactions + 1))
    assert stale.outcome == "stale" and machine.to_bytes() == before
    failed = machine.apply(_summary(6, machine.get("c").compactions, error="HTTP 500"))
    context = machine.get("c")
    assert failed.outcome == "failed" and context.summary_failures == 1
    assert context.last_summary_error == "HTTP 500"
    assert context.compactions == 0  # a failure is not a compaction
    record = windows_record(context)
    assert (record["outcome"], record["error"]) == ("failed", "HTTP 500")


def test_the_budget_fallback_holds_when_no_summary_comes() -> None:
    machine = _summarize_machine()
    for n in range(8, 20):
        append(machine, text(f"u{n}", tokens=6), at=n + 1)
        assert machine.get("c").used_tokens <= 100
    actions = [a["reason"] for a in windows_record(machine.get("c"))["actions"]]
    assert actions == ["over_budget"]


def test_a_summary_of_a_tombstoned_context_is_refused() -> None:
    from fastpaca_server.core import Tombstone

    machine = _summarize_machine()
    machine.apply(Tombstone("c", 50))
    try:
        machine.apply(_summary(6, 0))
    except DomainError as error:
        assert error.code == "context_tombstoned"
    else:
        raise AssertionError("accepted")


def test_custom_policies_keep_a_subsequence_pins_and_the_budget() -> None:
    def odd_only(window: list[Any], config: dict[str, Any]) -> list[Any]:
        return [m for m in window if m.seq is not None and m.seq % 2 == 1] + [
            text("new").stored(None, 0)
        ]

    CUSTOM_POLICIES["odd_only"] = odd_only
    try:
        machine = machine_with(_config(Policy("odd_only", {}), budget=60, trigger=0.5))
        append(machine, text("rules", "system", tokens=4))
        for n in range(2, 10):
            append(machine, text(f"u{n}", tokens=6), at=n)
        window = machine.get("c").window
        assert window[0].id == "rules"  # pinned: back even if the policy dropped it
        assert "new" not in ids(window)  # not from the window: ignored
        assert machine.get("c").used_tokens <= 60
        reasons = {a["reason"] for r in machine.get("c").all_records() for a in _actions(r)}
        assert "custom" in reasons
    finally:
        del CUSTOM_POLICIES["odd_only"]


def _actions(record: bytes) -> list[dict[str, Any]]:
    import json

    actions: list[dict[str, Any]] = json.loads(record)["actions"]
    return actions


def test_a_custom_policy_that_raises_leaves_the_window_to_the_trim() -> None:
    def broken(window: list[Any], config: dict[str, Any]) -> list[Any]:
        raise RuntimeError("bug")

    CUSTOM_POLICIES["broken"] = broken
    try:
        machine = machine_with(_config(Policy("broken", {}), budget=60, trigger=0.5))
        for n in range(10):
            append(machine, text(f"u{n}", tokens=6), at=n)
        assert machine.get("c").used_tokens <= 30
    finally:
        del CUSTOM_POLICIES["broken"]


def test_records_merge_runs_of_the_same_kind_and_keep_the_newest_100() -> None:
    machine = machine_with(_config(Policy("last_n", {"limit": 2}), budget=100_000))
    for n in range(50):
        append(machine, text(f"u{n}"), at=n)
    context = machine.get("c")
    assert (len(context.all_records()), context.compactions) == (1, 48)
    assert windows_record(context)["actions"][0]["removed"] == [[1, 48]]
    for n in range(150):  # a config change between appends: every record its own
        limit = 2 + n % 2
        machine.apply(
            PutContext("c", 100 + n, _config(Policy("last_n", {"limit": limit}), 100_000))
        )
        append(machine, text(f"v{n}"), at=100 + n)
    assert len(machine.get("c").all_records()) == 100


def test_a_summary_that_would_break_the_budget_is_a_failure() -> None:
    machine = _summarize_machine()
    context = machine.get("c")
    huge = message_input("huge", "system", None, [200])
    command = Summarize("c", 100, context.compactions, 6, summary=huge)
    result = machine.apply(command)
    context = machine.get("c")
    assert result.outcome == "failed" and context.summaries == 0
    assert "would not fit the budget" in (context.last_summary_error or "")
    assert not any(windows.is_summary(m) for m in context.window)


def test_a_merged_record_leaves_the_record_an_earlier_event_holds_as_it_was() -> None:
    machine = machine_with(_config(Policy("last_n", {"limit": 1}), budget=100_000))
    append(machine, text("u0"), at=0)
    first = append(machine, text("u1"), at=1).compaction
    second = append(machine, text("u2"), at=2).compaction
    assert first is not None and second is not None
    assert (first["runs"], first["actions"][0]["removed"]) == (1, [[1, 1]])
    assert (second["runs"], second["actions"][0]["removed"]) == (2, [[1, 2]])
    assert first["number"] == second["number"]
