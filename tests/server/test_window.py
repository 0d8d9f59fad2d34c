"""The LLM window: policies, the hard budget, tool-call units, pinning and compaction."""

from __future__ import annotations

import itertools
import random

import pytest

from tests.server._api import (
    JSON,
    Api,
    assert_error,
    state,
    text_message,
    tool_call_message,
    tool_result_message,
)


def window_seqs(window: JSON) -> list[int | None]:
    return [m["seq"] for m in window["messages"]]


def call_ids(message: JSON) -> list[str]:
    return [p["id"] for p in message["parts"] if p["type"] == "tool_call"]


def result_ids(message: JSON) -> list[str]:
    return [p["tool_call_id"] for p in message["parts"] if p["type"] == "tool_result"]


def assert_window_invariants(api: Api, context_id: str, *, budget: int | None) -> JSON:
    """Guarantee 4 on the current window; returns it."""
    window = api.window(context_id)
    messages = window["messages"]
    assert window["used_tokens"] == sum(m["token_count"] for m in messages)
    if budget is not None:
        assert window["used_tokens"] <= budget, window["segments"]
        assert api.context(context_id)["used_tokens"] <= budget
    # Tool results only after their call; never an orphan (so never one first).
    seen_calls: set[str] = set()
    for message in messages:
        known = seen_calls | set(call_ids(message))  # a call may carry its own result
        for call_id in result_ids(message):
            assert call_id in known, f"orphan tool_result {call_id} in {window_seqs(window)}"
        seen_calls.update(call_ids(message))
    # A call in the window brings every logged result for it.
    in_window = {m["seq"] for m in messages}
    for message in api.log(context_id):
        for call_id in result_ids(message):
            if call_id in seen_calls:
                assert message["seq"] in in_window, f"result of {call_id} split from its call"
    # Pinned messages stay.
    for message in api.log(context_id):
        pinned = message["role"] == "system" or (message["metadata"] or {}).get("pinned") is True
        if pinned:
            assert message["seq"] in in_window, f"pinned message {message['seq']} left the window"
    return window


# --- last_n -----------------------------------------------------------------


def test_last_n_keeps_the_newest_messages_when_the_trigger_is_crossed(api: Api) -> None:
    policy = {"strategy": "last_n", "config": {"limit": 5}}
    context_id = api.create(token_budget=1000, trigger_ratio=0.1, policy=policy)["id"]
    trims = 0
    for n in range(1, 21):
        before = api.context(context_id)["used_tokens"]
        result = api.append(context_id, text_message(f"m{n}", token_count=30))
        window = api.window(context_id)
        if before + 30 > 100:  # crossed trigger_ratio * token_budget: trimmed to the trigger
            trims += 1
            assert window_seqs(window) == list(range(n - 2, n + 1))
            assert window["used_tokens"] <= 100
        assert window_seqs(window)[-1] == n
        assert window_seqs(window) == sorted(window_seqs(window))
        assert result["used_tokens"] == window["used_tokens"]
        assert window["needs_compaction"] is False
    assert trims >= 3
    assert len(api.log(context_id)) == 20


def test_last_n_never_holds_more_than_limit_messages(api: Api) -> None:
    policy = {"strategy": "last_n", "config": {"limit": 3}}
    context_id = api.create(token_budget=10_000, policy=policy)["id"]
    for n in range(1, 11):
        api.append(context_id, text_message(f"m{n}"))
        assert len(api.window(context_id)["messages"]) <= 3


# --- the hard budget ------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["last_n", "skip_parts", "budget"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_appends_never_exceed_the_budget(api: Api, strategy: str, seed: int) -> None:
    rng = random.Random(seed)
    budget = rng.choice([60, 150, 400])
    policy: dict[str, object] = {"strategy": strategy, "config": {"limit": rng.choice([5, 50])}}
    if strategy == "budget":
        policy = {"strategy": "budget", "config": {"target_ratio": rng.choice([0.2, 0.5, 1.0])}}
    ratio = rng.choice([0.3, 0.7, 1.0])
    context_id = api.create(token_budget=budget, trigger_ratio=ratio, policy=policy)["id"]
    api.append(context_id, text_message("You are terse.", "system"))
    open_calls: list[str] = []
    for step in range(40):
        kind = rng.random()
        if kind < 0.2:
            call_id = f"call-{step}"
            open_calls.append(call_id)
            message = tool_call_message(call_id, "x" * rng.randint(0, 80))
        elif kind < 0.4 and open_calls:
            message = tool_result_message(rng.choice(open_calls), "y " * rng.randint(0, 40))
        elif kind < 0.5:
            message = text_message("z", token_count=rng.randint(1, budget - 20))
        else:
            message = text_message("word " * rng.randint(1, 30), rng.choice(["user", "assistant"]))
        response = api.post(f"/v1/contexts/{context_id}/messages", json={"message": message})
        if response.status_code != 201:
            assert_error(response, 400, "message_exceeds_budget")
            continue
        assert response.json()["used_tokens"] <= budget
        assert_window_invariants(api, context_id, budget=budget)


def test_results_of_a_pinned_tool_call_cannot_break_the_budget(api: Api) -> None:
    context_id = api.create(token_budget=100)["id"]
    api.append(context_id, tool_call_message("pinned-call", metadata={"pinned": True}))
    for _ in range(4):
        response = api.post(
            f"/v1/contexts/{context_id}/messages",
            json={"message": tool_result_message("pinned-call", "word " * 40)},
        )
        assert response.status_code in (201, 400), response.text
        assert api.window(context_id)["used_tokens"] <= 100
        assert api.context(context_id)["used_tokens"] <= 100


def test_lowering_the_budget_trims_the_window(api: Api) -> None:
    context_id = api.create(token_budget=1000)["id"]
    for n in range(10):
        api.append(context_id, text_message(f"m{n}", token_count=50))
    assert api.window(context_id)["used_tokens"] == 500
    api.put(f"/v1/contexts/{context_id}", json={"token_budget": 120})
    window = assert_window_invariants(api, context_id, budget=120)
    assert window_seqs(window) == [10]  # trimmed to trigger_ratio * 120 = 84 tokens
    assert len(api.log(context_id)) == 10


def test_budget_below_pinned_tokens_is_refused(api: Api) -> None:
    context_id = api.create(token_budget=1000)["id"]
    api.append(context_id, text_message("system prompt", "system", token_count=300))
    before = state(api, context_id)
    response = api.put(f"/v1/contexts/{context_id}", json={"token_budget": 200})
    assert_error(response, 409, "budget_below_pinned")
    assert state(api, context_id) == before
    assert api.context(context_id)["token_budget"] == 1000

    too_much = api.post(
        f"/v1/contexts/{context_id}/messages",
        json={"message": text_message("more rules", "system", token_count=800)},
    )
    assert_error(too_much, 400, "pinned_exceeds_budget")
    assert state(api, context_id) == before


# --- pinned messages ------------------------------------------------------------


def test_pinned_messages_always_stay(api: Api) -> None:
    policy = {"strategy": "last_n", "config": {"limit": 4}}
    context_id = api.create(token_budget=200, policy=policy)["id"]
    api.append(context_id, text_message("You are a helpful assistant.", "system"))
    api.append(context_id, text_message("user profile", metadata={"pinned": True}))
    for n in range(60):
        api.append(context_id, text_message(f"turn {n} " + "word " * (n % 15)))
        window = assert_window_invariants(api, context_id, budget=200)
        assert window["messages"][0]["role"] == "system"
        assert window["messages"][1]["metadata"] == {"pinned": True}
    assert window_seqs(window)[:2] == [1, 2]
    assert window_seqs(window)[-1] == 62


# --- tool calls -------------------------------------------------------------------


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_tool_calls_and_results_stay_together(api: Api, seed: int) -> None:
    rng = random.Random(seed)
    policy = {"strategy": "last_n", "config": {"limit": rng.choice([3, 6, 200])}}
    context_id = api.create(token_budget=250, trigger_ratio=0.5, policy=policy)["id"]
    # Open calls, grouped by the assistant message that made them. A result message
    # answers calls of one group only (mixing groups: see the test after this one).
    pending: list[list[str]] = []
    for step in range(50):
        choice = rng.random()
        if choice < 0.3 or not pending:
            calls = [f"c{step}-{k}" for k in range(rng.choice([1, 1, 2, 3]))]
            parts = [{"type": "tool_call", "id": c, "name": "f", "input": {}} for c in calls]
            message = {"role": "assistant", "parts": [{"type": "text", "text": "calling"}, *parts]}
            pending.append(calls)
        elif choice < 0.7:
            group = rng.choice(pending)
            answered = rng.sample(group, rng.randint(1, len(group)))
            parts = [
                {"type": "tool_result", "tool_call_id": c, "output": "r " * rng.randint(1, 30)}
                for c in answered
            ]
            message = {"role": "tool", "parts": parts}
            if rng.random() < 0.7:
                group[:] = [c for c in group if c not in answered]
                pending = [g for g in pending if g]
        else:
            message = text_message("chat " * rng.randint(1, 20), rng.choice(["user", "assistant"]))
        response = api.post(f"/v1/contexts/{context_id}/messages", json={"message": message})
        if response.status_code == 400:
            # Results piling up on one call: the unit can no longer fit the budget.
            assert response.json()["error"] == "unit_exceeds_budget", response.text
        else:
            assert response.status_code == 201, response.text
        window = assert_window_invariants(api, context_id, budget=250)
        if window["messages"]:
            assert not result_ids(window["messages"][0])


def test_a_result_for_a_trimmed_call_never_stays_in_the_window(api: Api) -> None:
    policy = {"strategy": "last_n", "config": {"limit": 3}}
    context_id = api.create(token_budget=1000, trigger_ratio=0.1, policy=policy)["id"]
    api.append(context_id, tool_call_message("gone"))
    for n in range(6):
        api.append(context_id, text_message(f"filler {n}", token_count=30))
    api.append(context_id, tool_call_message("kept"))
    both = {
        "role": "tool",
        "parts": [
            {"type": "tool_result", "tool_call_id": "gone", "output": "late"},
            {"type": "tool_result", "tool_call_id": "kept", "output": "fresh"},
        ],
    }
    api.append(context_id, both)
    assert_window_invariants(api, context_id, budget=1000)


def test_a_result_whose_call_was_trimmed_does_not_enter_the_window(api: Api) -> None:
    policy = {"strategy": "last_n", "config": {"limit": 2}}
    context_id = api.create(token_budget=1000, trigger_ratio=0.1, policy=policy)["id"]
    api.append(context_id, tool_call_message("early"))
    for n in range(6):
        api.append(context_id, text_message(f"filler {n}", token_count=30))
    assert all(not call_ids(m) for m in api.window(context_id)["messages"])
    api.append(context_id, tool_result_message("early", "late answer"))
    window = assert_window_invariants(api, context_id, budget=1000)
    assert all(not result_ids(m) for m in window["messages"])
    assert result_ids(api.log(context_id)[-1]) == ["early"]


def test_budget_tokens_keeps_tool_units_whole(api: Api) -> None:
    context_id = api.create(token_budget=10_000)["id"]
    api.append(context_id, text_message("question", token_count=10))
    api.append(context_id, tool_call_message("c1", "q"), tool_result_message("c1", "r"))
    call_tokens = sum(m["token_count"] for m in api.window(context_id)["messages"][1:])
    trimmed = api.window(context_id, budget_tokens=call_tokens)
    assert window_seqs(trimmed) == [2, 3]
    smaller = api.window(context_id, budget_tokens=call_tokens - 1)
    assert smaller["messages"] == []
    assert smaller["used_tokens"] == 0


# --- skip_parts ---------------------------------------------------------------------


def test_skip_parts_strips_tool_and_reasoning_parts_from_older_turns(api: Api) -> None:
    policy = {"strategy": "skip_parts", "config": {"limit": 100}}
    context_id = api.create(token_budget=2000, trigger_ratio=0.1, policy=policy)["id"]

    def agent_turn(n: int) -> list[JSON]:
        return [
            text_message(f"question {n}"),
            {
                "role": "assistant",
                "parts": [
                    {"type": "reasoning", "text": "thinking hard " * 5},
                    {"type": "text", "text": f"looking up {n}"},
                    {"type": "tool_call", "id": f"call-{n}", "name": "search", "input": {"n": n}},
                ],
            },
            tool_result_message(f"call-{n}", "result " * 10),
            {
                "role": "assistant",
                "parts": [
                    {"type": "dynamic-tool", "toolName": "x", "state": "done"},
                    {"type": "text", "text": f"answer {n}"},
                ],
            },
        ]

    api.append(context_id, *agent_turn(1))
    assert api.context(context_id)["used_tokens"] < 200  # not yet over the trigger
    api.append(context_id, *agent_turn(2))
    assert api.context(context_id)["used_tokens"] > 0

    window = assert_window_invariants(api, context_id, budget=2000)
    messages = window["messages"]
    # The older turn keeps only its text; the tool-only message is gone.
    assert [[p["type"] for p in m["parts"]] for m in messages[:3]] == [["text"], ["text"], ["text"]]
    assert [m["parts"][0]["text"] for m in messages[:3]] == [
        "question 1",
        "looking up 1",
        "answer 1",
    ]
    # The current turn (from the last user message) is intact.
    assert [m["parts"] for m in messages[3:]] == [m["parts"] for m in agent_turn(2)]
    # Stripped messages count only what is left.
    for message in messages[:3]:
        assert message["token_count"] < 200
    assert window["used_tokens"] == sum(m["token_count"] for m in messages)
    # The log keeps every part.
    log = api.log(context_id)
    assert [m["parts"] for m in log] == [m["parts"] for m in agent_turn(1) + agent_turn(2)]


# --- manual policy and compaction ------------------------------------------------------


def test_manual_raises_needs_compaction_and_compact_replaces_the_window(api: Api) -> None:
    context_id = api.create(token_budget=100, trigger_ratio=0.5, policy={"strategy": "manual"})[
        "id"
    ]
    for n in range(5):
        result = api.append(context_id, text_message(f"m{n}", token_count=20))
        assert result["needs_compaction"] is (result["used_tokens"] > 50)
    window = api.window(context_id)
    # manual never rewrites: everything is still there, even over the budget.
    assert window_seqs(window) == [1, 2, 3, 4, 5]
    assert window["needs_compaction"] is True
    assert api.context(context_id)["needs_compaction"] is True
    version = window["version"]

    replacement = [
        text_message("Summary of m0-m3.", "system", id="summary"),
        text_message("m4 kept verbatim", "user", token_count=5),
    ]
    response = api.post(
        f"/v1/contexts/{context_id}/compact",
        json={"replacement": replacement, "if_version": version},
    )
    assert response.status_code == 200
    compacted = response.json()
    assert compacted["message_count"] == 2
    assert compacted["needs_compaction"] is False
    assert compacted["version"] > version

    window = api.window(context_id)
    assert window_seqs(window) == [None, None]
    assert [m["parts"] for m in window["messages"]] == [m["parts"] for m in replacement]
    assert window["messages"][0]["id"] == "summary"
    assert window["used_tokens"] == compacted["used_tokens"]
    assert window["segments"] == [
        {"type": "replacement", "count": 2, "tokens": compacted["used_tokens"]}
    ]
    assert window["needs_compaction"] is False

    # The log is untouched.
    assert [m["parts"][0]["text"] for m in api.log(context_id)] == [f"m{n}" for n in range(5)]
    assert api.context(context_id)["last_seq"] == 5

    # New messages follow the replacement.
    api.append(context_id, text_message("after", token_count=3))
    window = api.window(context_id)
    assert window_seqs(window) == [None, None, 6]
    assert window["segments"][1] == {
        "type": "log",
        "from_seq": 6,
        "to_seq": 6,
        "count": 1,
        "tokens": 3,
    }


def test_compact_with_a_stale_version_is_refused(api: Api) -> None:
    context_id = api.create(policy={"strategy": "manual"})["id"]
    api.append(context_id, text_message("one"))
    version, last_seq = state(api, context_id)
    before = api.window(context_id)
    response = api.post(
        f"/v1/contexts/{context_id}/compact",
        json={"replacement": [text_message("summary")], "if_version": version - 1},
    )
    assert_error(response, 409, "version_conflict")
    assert state(api, context_id) == (version, last_seq)
    assert api.window(context_id) == before


def test_compact_over_budget_is_refused_for_non_manual_policies(api: Api) -> None:
    context_id = api.create(token_budget=50)["id"]
    api.append(context_id, text_message("one"))
    before = api.window(context_id)
    response = api.post(
        f"/v1/contexts/{context_id}/compact",
        json={"replacement": [text_message("long summary", token_count=51)]},
    )
    assert_error(response, 400, "replacement_exceeds_budget")
    assert api.window(context_id) == before


def test_compact_with_an_empty_replacement_empties_the_window(api: Api) -> None:
    context_id = api.create()["id"]
    api.append(context_id, text_message("one"), text_message("two"))
    result = api.post(f"/v1/contexts/{context_id}/compact", json={"replacement": []}).json()
    assert result["message_count"] == 0
    assert result["used_tokens"] == 0
    window = api.window(context_id)
    assert window["messages"] == []
    assert window["segments"] == []
    assert len(api.log(context_id)) == 2


# --- budget_tokens ------------------------------------------------------------------------


def test_budget_tokens_trims_only_the_returned_window(api: Api) -> None:
    context_id = api.create(token_budget=10_000)["id"]
    api.append(context_id, text_message("rules", "system", token_count=30))
    for n in range(10):
        api.append(context_id, text_message(f"m{n}", token_count=10))
    full = api.window(context_id)
    assert full["used_tokens"] == 130
    assert full["budget_tokens"] == 10_000

    trimmed = api.window(context_id, budget_tokens=75)
    assert trimmed["budget_tokens"] == 75
    assert trimmed["used_tokens"] <= 75
    assert trimmed["used_tokens"] == sum(m["token_count"] for m in trimmed["messages"])
    # The system prompt plus the newest messages that fit.
    assert window_seqs(trimmed) == [1, 8, 9, 10, 11]
    assert trimmed["segments"][0] == {
        "type": "log",
        "from_seq": 1,
        "to_seq": 1,
        "count": 1,
        "tokens": 30,
    }

    roomy = api.window(context_id, budget_tokens=1000)
    assert roomy["messages"] == full["messages"]
    assert roomy["budget_tokens"] == 1000
    # The stored window did not change.
    assert api.window(context_id) == full

    response = api.get(f"/v1/contexts/{context_id}/context", params={"budget_tokens": 29})
    assert_error(response, 400, "budget_too_small")


def test_the_budget_policy_trims_to_its_target_ratio(api: Api) -> None:
    policy = {"strategy": "budget", "config": {"target_ratio": 0.4}}
    context = api.create(token_budget=300, trigger_ratio=0.8, policy=policy)
    assert context["policy"] == {"strategy": "budget", "config": {"target_ratio": 0.4}}
    defaulted = api.create(token_budget=300, policy={"strategy": "budget"})
    assert defaulted["policy"]["config"] == {"target_ratio": 0.5}
    context_id = context["id"]
    used = []
    for step in range(60):
        answer = api.append(context_id, text_message(f"message number {step} " * 3))
        used.append(answer["used_tokens"])
        assert answer["used_tokens"] <= 300
    crossings = [b for a, b in itertools.pairwise(used) if b < a]
    assert crossings and all(tokens <= 120 for tokens in crossings)  # 0.4 of 300
    assert max(used) <= 240  # never past the trigger (0.8 of 300) after an append
    for bad in ({"target_ratio": 0}, {"target_ratio": 1.5}, {"target_ratio": "x"}, {"limit": 3}):
        response = api.put(
            f"/v1/contexts/{context_id}",
            json={"token_budget": 300, "policy": {"strategy": "budget", "config": bad}},
        )
        assert response.status_code == 400, response.text


def test_the_time_window_policy_is_validated_and_stored(api: Api) -> None:
    policy = {"strategy": "time_window", "config": {"max_age_seconds": 3600}}
    context = api.create(token_budget=500, policy=policy)
    assert context["policy"] == policy
    answer = api.append(context["id"], text_message("fresh"))
    assert answer["used_tokens"] > 0
    window = api.get(f"/v1/contexts/{context['id']}/context").json()
    assert [m["parts"][0]["text"] for m in window["messages"]] == ["fresh"]
    for bad in ({}, {"max_age_seconds": 0}, {"max_age_seconds": 1.5}, {"limit": 3}):
        response = api.put(
            f"/v1/contexts/{context['id']}",
            json={"token_budget": 500, "policy": {"strategy": "time_window", "config": bad}},
        )
        assert response.status_code == 400, response.text
