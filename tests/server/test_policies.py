"""The policy suite over HTTP on a real server: strip_tool_results, pipeline, pin,
compaction records and counters, preview, and changing a policy (the log is never
touched). Token counts are tiktoken's (o200k_base)."""

from __future__ import annotations

import json
from typing import Any

from fastpaca_server.core import window as windows
from fastpaca_server.tokens import count_part

from tests.server._api import (
    Api,
    assert_error,
    new_id,
    text_message,
    tool_call_message,
    tool_result_message,
)

BIG = "lorem ipsum dolor sit amet " * 60  # about 300 tokens of tool output


def _records(api: Api, context_id: str, **params: Any) -> dict[str, Any]:
    response = api.get(f"/v1/contexts/{context_id}/compactions", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def _tool_turn(api: Api, context_id: str, n: int, output: str = BIG) -> None:
    api.append(
        context_id,
        text_message(f"question {n}"),
        tool_call_message(f"call-{n}", f"q{n}", name="search" if n % 2 else "fetch"),
        tool_result_message(f"call-{n}", output),
    )


def test_strip_tool_results_clears_old_outputs_and_counts_the_placeholder_as_an_upper_bound(
    api: Api,
) -> None:
    context_id = new_id("strip")
    policy = {"strategy": "strip_tool_results", "config": {"keep": 1, "placeholder": "[gone]"}}
    api.create(context_id, token_budget=2000, trigger_ratio=0.7, policy=policy)
    for n in range(4):
        _tool_turn(api, context_id, n)
    window = api.window(context_id)
    results = [
        part
        for message in window["messages"]
        for part in message["parts"]
        if part["type"] == "tool_result"
    ]
    assert window["used_tokens"] <= 2000
    assert window["used_tokens"] == sum(m["token_count"] for m in window["messages"])
    # Every question and call stays: only outputs were cleared, never whole messages.
    assert [m["seq"] for m in window["messages"]] == list(range(1, 13))
    assert results[-1]["output"] == BIG
    cleared = [part for part in results if part.get("cleared")]
    assert cleared and all(part["payload"] == "[gone]" for part in cleared)
    assert all("output" not in part for part in cleared)
    for message in window["messages"]:
        for part, tokens in zip(
            message["parts"], _part_tokens(api, context_id, message), strict=True
        ):
            if part.get("cleared"):
                exact = count_part(part, "o200k_base")
                assert exact <= tokens <= exact + 12, (part, exact, tokens)
    log = api.log(context_id)
    assert all(
        p.get("output") == BIG for m in log for p in m["parts"] if p["type"] == "tool_result"
    )
    record = _records(api, context_id)["records"][-1]
    assert record["policy"] == "strip_tool_results"
    assert record["actions"][0]["reason"] == "tool_output_cleared"
    assert record["actions"][0]["changed"] and not record["actions"][0]["removed"]


def _part_tokens(api: Api, context_id: str, message: dict[str, Any]) -> list[int]:
    """A window message's per-part token counts, from the preview breakdown."""
    response = api.post(f"/v1/contexts/{context_id}/preview", json={})
    assert response.status_code == 200, response.text
    for entry in response.json()["breakdown"]:
        if entry["seq"] == message["seq"]:
            counts: list[int] = entry["part_tokens"]
            return counts
    raise AssertionError(f"seq {message['seq']} not in the preview")


def test_strip_tool_results_spares_excluded_tools_and_falls_back_to_budget(api: Api) -> None:
    context_id = new_id("strip-exclude")
    policy = {
        "strategy": "strip_tool_results",
        "config": {"keep": 0, "exclude_tools": ["search"], "target_ratio": 0.5},
    }
    api.create(context_id, token_budget=1500, trigger_ratio=0.7, policy=policy)
    for n in range(6):
        _tool_turn(api, context_id, n)
    window = api.window(context_id)
    assert window["used_tokens"] <= 1500
    calls = {
        part["id"]: part["name"]
        for message in window["messages"]
        for part in message["parts"]
        if part["type"] == "tool_call"
    }
    for message in window["messages"]:
        for part in message["parts"]:
            if part["type"] == "tool_result":
                excluded = calls[part["tool_call_id"]] == "search"
                assert bool(part.get("cleared")) is not excluded, part
    reasons = {a["reason"] for r in _records(api, context_id)["records"] for a in r["actions"]}
    assert reasons == {"tool_output_cleared", "over_trigger"}  # search outputs forced a trim


def test_clear_at_least_keeps_the_prefix_until_a_pass_is_worth_it(api: Api) -> None:
    context_id = new_id("strip-least")
    policy = {
        "strategy": "strip_tool_results",
        "config": {"keep": 0, "clear_at_least": 100_000, "target_ratio": 0.9},
    }
    api.create(context_id, token_budget=2000, trigger_ratio=0.7, policy=policy)
    for n in range(5):
        _tool_turn(api, context_id, n)
    window = api.window(context_id)
    assert not any(p.get("cleared") for m in window["messages"] for p in m["parts"])
    assert window["used_tokens"] <= 2000


def test_a_pipeline_runs_its_steps_in_turn(api: Api) -> None:
    context_id = new_id("pipeline")
    policy = {
        "strategy": "pipeline",
        "config": {
            "steps": [
                {"strategy": "strip_tool_results", "config": {"keep": 1}},
                {"strategy": "last_n", "config": {"limit": 8}},
            ]
        },
    }
    created = api.create(context_id, token_budget=1800, trigger_ratio=0.7, policy=policy)
    steps = created["policy"]["config"]["steps"]
    assert [s["strategy"] for s in steps] == ["strip_tool_results", "last_n"]
    assert "frames" not in steps[0]["config"]  # the server's own counts stay inside
    for n in range(5):
        _tool_turn(api, context_id, n)
    window = api.window(context_id)
    assert len(window["messages"]) <= 8
    assert window["used_tokens"] <= 1800
    actions = [a for r in _records(api, context_id)["records"] for a in r["actions"]]
    assert {(a["step"], a["policy"]) for a in actions} >= {(0, "strip_tool_results")}
    assert any(a["step"] == 1 and a["reason"] == "over_message_limit" for a in actions)


def test_pin_none_lets_policies_drop_system_messages_but_never_flagged_ones(api: Api) -> None:
    for pin, kept in (("system", {"rules", "keep me"}), ("none", {"keep me"})):
        context_id = new_id(f"pin-{pin}")
        policy = {"strategy": "last_n", "config": {"limit": 2, "pin": pin}}
        created = api.create(context_id, token_budget=10_000, policy=policy)
        assert created["policy"]["config"].get("pin", "system") == pin
        api.append(
            context_id,
            text_message("rules", role="system"),
            text_message("keep me", metadata={"pinned": True}),
        )
        for n in range(4):
            api.append(context_id, text_message(f"m{n}"))
        texts = [m["parts"][0]["text"] for m in api.window(context_id)["messages"]]
        assert texts == [*(t for t in ("rules", "keep me") if t in kept), "m2", "m3"], pin


def test_counters_records_and_paging(api: Api) -> None:
    context_id = new_id("records")
    api.create(
        context_id, token_budget=10_000, policy={"strategy": "last_n", "config": {"limit": 3}}
    )
    for n in range(10):
        api.append(context_id, text_message(f"m{n}"))
    context = api.context(context_id)
    assert context["window_messages"] == 3
    assert context["compactions"] == 7
    assert context["last_compaction"]["policy"] == "last_n"
    page = _records(api, context_id)
    # last_n at its limit drops the next message on every append: one record, seven runs.
    assert page["compactions"] == 7 and page["has_more"] is False
    [record] = page["records"]
    assert (record["runs"], record["actions"][0]["removed"]) == (7, [[1, 7]])
    assert record["actions"][0]["reason"] == "over_message_limit"
    # A config change that trims is a record of its own; `after` pages past the first.
    api.create(
        context_id, token_budget=10_000, policy={"strategy": "last_n", "config": {"limit": 1}}
    )
    first = _records(api, context_id, limit=1)
    assert first["has_more"] is True and first["records"][0]["number"] == 1
    rest = _records(api, context_id, after=1)
    assert [r["cause"] for r in rest["records"]] == ["config"]
    assert rest["records"][0]["actions"][0]["removed"] == [[8, 9]]
    assert api.context(context_id)["compactions"] == 8


def test_changing_the_policy_applies_from_the_next_compaction_and_never_touches_the_log(
    api: Api,
) -> None:
    context_id = new_id("change")
    api.create(context_id, token_budget=10_000, policy={"strategy": "manual"})
    for n in range(6):
        api.append(context_id, text_message(f"m{n}"))
    log_before = api.log(context_id)
    api.create(
        context_id, token_budget=10_000, policy={"strategy": "last_n", "config": {"limit": 50}}
    )
    assert len(api.window(context_id)["messages"]) == 6  # under the new limit: nothing to do
    api.create(
        context_id, token_budget=10_000, policy={"strategy": "last_n", "config": {"limit": 2}}
    )
    assert [m["seq"] for m in api.window(context_id)["messages"]] == [5, 6]
    assert api.log(context_id) == log_before


def test_preview_changes_nothing_and_shows_what_would_be_dropped(api: Api) -> None:
    context_id = new_id("preview")
    api.create(
        context_id, token_budget=10_000, policy={"strategy": "last_n", "config": {"limit": 4}}
    )
    for n in range(6):
        api.append(context_id, text_message(f"m{n}"))
    before = api.context(context_id)
    response = api.post(
        f"/v1/contexts/{context_id}/preview",
        json={"policy": {"strategy": "last_n", "config": {"limit": 2}}, "tokenizer": "cl100k_base"},
    )
    assert response.status_code == 200, response.text
    preview = response.json()
    assert [m["seq"] for m in preview["messages"]] == [5, 6]
    assert preview["dropped"] == [{"from_seq": 1, "to_seq": 4, "count": 4}]
    assert preview["config"]["tokenizer"] == "cl100k_base"
    assert [b["seq"] for b in preview["breakdown"]] == [5, 6]
    assert preview["used_tokens"] == sum(b["token_count"] for b in preview["breakdown"])
    assert api.context(context_id) == before
    bigger = api.post(
        f"/v1/contexts/{context_id}/preview", json={"policy": {"strategy": "manual"}}
    ).json()
    assert len(bigger["messages"]) == 6 and bigger["dropped"] == []
    tiny = api.post(f"/v1/contexts/{context_id}/preview", json={"token_budget": 3}).json()
    assert {r["code"] for r in tiny["refused"]} == {"message_exceeds_budget"}


def test_bad_policies_are_refused_and_change_nothing(api: Api) -> None:
    context_id = new_id("bad-policy")
    api.create(context_id, token_budget=1000)
    before = api.context(context_id)
    bad: list[dict[str, Any]] = [
        {"strategy": "nope"},
        {"strategy": "pipeline", "config": {"steps": [{"strategy": "manual"}]}},
        {"strategy": "pipeline", "config": {"steps": [{"strategy": "pipeline"}]}},
        {"strategy": "pipeline", "config": {"steps": [{"strategy": "budget"}] * 17}},
        {
            "strategy": "pipeline",
            "config": {"steps": [{"strategy": "budget", "config": {"pin": "none"}}]},
        },
        {"strategy": "last_n", "config": {"pin": "always"}},
        {"strategy": "strip_tool_results", "config": {"keep": -1}},
        {"strategy": "strip_tool_results", "config": {"placeholder": ""}},
        {"strategy": "strip_tool_results", "config": {"placeholder": "x" * 1001}},
        {"strategy": "strip_tool_results", "config": {"exclude_tools": "search"}},
        {"strategy": "strip_tool_results", "config": {"frames": {"tool_result": 0}}},
        {"strategy": "summarize", "config": {"target_ratio": 2}},
    ]
    for policy in bad:
        response = api.put(
            f"/v1/contexts/{context_id}", json={"token_budget": 1000, "policy": policy}
        )
        assert response.status_code == 400, (policy, response.text)
        assert response.json()["error"] in ("invalid_request", "unknown_field"), policy
    assert_error(
        api.put(
            f"/v1/contexts/{context_id}",
            json={"token_budget": 1000, "policy": {"strategy": "summarize"}},
        ),
        400,
        "summarizer_not_configured",
    )
    assert api.context(context_id) == before


def test_compaction_records_survive_a_restart(fresh_server: Any) -> None:
    from tests.server._api import connect

    fresh_server.start()
    api = connect(fresh_server)
    context_id = new_id("records-restart")
    api.create(
        context_id, token_budget=10_000, policy={"strategy": "last_n", "config": {"limit": 2}}
    )
    for n in range(5):
        api.append(context_id, text_message(f"m{n}"))
    before = (_records(api, context_id), api.context(context_id))
    api.close()
    fresh_server.kill9()
    fresh_server.start()
    api = connect(fresh_server)
    assert (_records(api, context_id), api.context(context_id)) == before
    api.close()


def test_cleared_token_bound_is_never_below_tiktoken() -> None:
    """The state machine counts a cleared output without a tokenizer: frame + ids' bytes."""
    import random

    rng = random.Random(7)
    alphabet = 'abcXYZ0123456789_-:/ "\\é漢🙂'
    for tokenizer in ("o200k_base", "cl100k_base"):
        for placeholder in ("[tool output cleared]", "x", "日本語のプレースホルダー"):
            frames = {
                kind: count_part(windows.frame_part(kind, placeholder), tokenizer)
                for kind in windows.FRAME_KINDS
            }
            for _ in range(150):
                ident = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
                name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
                for part in (
                    {"type": "tool_result", "tool_call_id": ident, "output": BIG},
                    {"type": f"tool-{name}", "toolCallId": ident, "state": "output-available"},
                    {
                        "type": "dynamic-tool",
                        "toolName": name,
                        "toolCallId": ident,
                        "state": "output-error",
                    },
                ):
                    cleared = windows.cleared_part(part, placeholder)
                    bound = windows.cleared_tokens(part, frames, placeholder)
                    exact = count_part(cleared, tokenizer)
                    assert exact <= bound, (json.dumps(cleared), exact, bound)
