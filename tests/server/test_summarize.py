"""The summarize policy end to end: a real server calls a fake OpenAI-compatible
endpoint over HTTP (tests/support/fake_openai.py), commits the summary through
Raft, and falls back to the budget when the summarizer fails or is slow."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server._api import Api, connect, metric_value, new_id, text_message
from tests.support.fake_openai import FakeOpenAI
from tests.support.polling import until
from tests.support.server import ServerProcess

BUDGET = 600
POLICY = {"strategy": "summarize", "config": {"target_ratio": 0.4}}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="module")
def summarizing(tmp_path_factory: pytest.TempPathFactory, fake: FakeOpenAI) -> Iterator[Api]:
    data = tmp_path_factory.mktemp("summarize") / "data"
    process = ServerProcess(
        data,
        "--summarizer-base-url",
        fake.base_url,
        "--summarizer-model",
        "fake-summarizer",
        "--summarizer-timeout",
        "2",
        env={"FASTPACA_SUMMARIZER_API_KEY": "sk-test-secret"},
    ).start()
    api = connect(process)
    yield api
    api.close()
    process.stop()


@pytest.fixture(autouse=True)
def healthy(fake: FakeOpenAI) -> Iterator[None]:
    fake.status, fake.delay = 200, 0.0
    fake.clear()
    yield
    fake.status, fake.delay = 200, 0.0


def _talk(api: Api, context_id: str, turns: int, start: int = 0) -> list[float]:
    """Append ``turns`` user/assistant pairs (about 30 tokens each); their latencies."""
    latencies = []
    for n in range(start, start + turns):
        began = time.monotonic()
        api.append(
            context_id,
            text_message(f"question {n}: what about topic number {n}, in some detail?"),
            text_message(f"answer {n}: topic {n} is covered in chapter {n}.", role="assistant"),
        )
        latencies.append(time.monotonic() - began)
    return latencies


def _talk_until_summarized(api: Api, context_id: str, start: int = 0, after: int = 0) -> int:
    """Talk one turn at a time until a summary covers more than seq ``after``, then
    wait for any job still running to finish; returns the next turn number."""
    for n in range(start, start + 60):
        _talk(api, context_id, 1, start=n)
        segment = _summary_segment(api, context_id)
        if segment is not None and segment["to_seq"] > after:
            until(lambda: not api.context(context_id)["needs_compaction"])
            return n + 1
        time.sleep(0.1)
    raise AssertionError("no summary after 60 turns")


def _summary_segment(api: Api, context_id: str) -> dict[str, Any] | None:
    window = api.window(context_id)
    return next((s for s in window["segments"] if s["type"] == "summary"), None)


def test_the_leader_folds_the_oldest_part_into_a_summary(
    summarizing: Api, fake: FakeOpenAI
) -> None:
    api = summarizing
    context_id = new_id("summarize")
    api.create(context_id, token_budget=BUDGET, trigger_ratio=0.6, policy=POLICY)
    api.append(context_id, text_message("You are a helpful librarian.", role="system"))
    turns = _talk_until_summarized(api, context_id)
    window = api.window(context_id)
    segment = next(s for s in window["segments"] if s["type"] == "summary")
    first, summary = window["messages"][0], window["messages"][1]
    assert first["parts"][0]["text"] == "You are a helpful librarian."  # pinned: stays first
    assert summary["role"] == "system" and summary["seq"] is None
    assert summary["parts"][0]["text"].startswith("Summary of ")
    assert summary["metadata"]["summary"] == {
        "number": 1,
        "from_seq": 2,
        "to_seq": segment["to_seq"],
    }
    assert segment["from_seq"] == 2
    assert window["messages"][2]["seq"] == segment["to_seq"] + 1  # the live tail follows
    assert window["used_tokens"] <= BUDGET
    request = fake.requests[0]
    assert request["model"] == "fake-summarizer"
    transcript = request["messages"][-1]["content"]
    assert "question 0" in transcript and "librarian" not in transcript
    assert fake.authorizations[0] == "Bearer sk-test-secret"
    records = api.get(f"/v1/contexts/{context_id}/compactions").json()["records"]
    folded = next(r for r in records if r["cause"] == "summary")
    assert folded["actions"][0]["reason"] == "summarized"
    assert folded["actions"][0]["removed"][0][0] == 2
    assert folded["actions"][0]["summary"] == 1
    context = api.context(context_id)
    assert context["compactions"] >= 1 and context["last_compaction"]["policy"] == "summarize"
    assert api.log(context_id)[1]["parts"][0]["text"].startswith("question 0")  # log intact

    # The next summary folds the previous one with the messages after it.
    _talk_until_summarized(api, context_id, start=turns, after=segment["to_seq"])
    second = _summary_segment(api, context_id)
    assert second is not None and second["to_seq"] > segment["to_seq"]
    assert second["from_seq"] == 2
    prompts = [r["messages"][-1]["content"] for r in fake.requests]
    assert any(summary["parts"][0]["text"] in prompt for prompt in prompts[1:])
    texts = [m["parts"][0]["text"] for m in api.window(context_id)["messages"]]
    assert sum(t.startswith("Summary of ") for t in texts) == 1


def test_a_failing_summarizer_never_breaks_the_budget_and_shows_in_metrics(
    summarizing: Api, fake: FakeOpenAI
) -> None:
    api = summarizing
    fake.status = 500
    context_id = new_id("summarize-down")
    api.create(context_id, token_budget=BUDGET, trigger_ratio=0.5, policy=POLICY)
    for n in range(30):
        result = api.append(context_id, text_message(f"message {n} " + "word " * 20))
        assert result["used_tokens"] <= BUDGET
    context = until(lambda: (c := api.context(context_id))["summary_failures"] >= 1 and c)
    assert "HTTP 500" in context["last_summary_error"]
    assert "sk-test-secret" not in context["last_summary_error"]
    records = api.get(f"/v1/contexts/{context_id}/compactions").json()["records"]
    assert any(r["outcome"] == "failed" and "HTTP 500" in r["error"] for r in records)
    assert any(a["reason"] == "over_budget" for r in records for a in r["actions"])
    assert _summary_segment(api, context_id) is None
    metrics = api.raw.get("/metrics").text
    assert metric_value(metrics, "fastpaca_summaries_total", outcome="failed") >= 1


def test_appends_never_wait_for_a_slow_summarizer(summarizing: Api, fake: FakeOpenAI) -> None:
    api = summarizing
    fake.delay = 1.5  # under the 2 s timeout: the summary lands, late
    context_id = new_id("summarize-slow")
    api.create(context_id, token_budget=BUDGET, trigger_ratio=0.6, policy=POLICY)
    latencies = _talk(api, context_id, 16)
    assert max(latencies) < 1.0, latencies
    assert sorted(latencies)[len(latencies) // 2] < 0.2
    until(lambda: _summary_segment(api, context_id))


def test_a_summary_that_comes_back_after_a_compaction_is_refused(
    summarizing: Api, fake: FakeOpenAI
) -> None:
    """The job guards its commit with the compaction count it read: if the budget
    fallback (or anything else) compacted meanwhile, the stale summary is dropped."""
    api = summarizing
    fake.delay = 1.0
    context_id = new_id("summarize-stale")
    api.create(context_id, token_budget=BUDGET, trigger_ratio=0.5, policy=POLICY)
    _talk(api, context_id, 11)  # over the trigger: a job starts and waits a second
    api.post(f"/v1/contexts/{context_id}/compact", json={"replacement": []})
    time.sleep(1.5)
    metrics = api.raw.get("/metrics").text
    assert metric_value(metrics, "fastpaca_summaries_total", outcome="stale") >= 1
    assert api.window(context_id)["messages"] == []


def test_summarize_needs_a_configured_summarizer(tmp_path: Path) -> None:
    process = ServerProcess(tmp_path / "data", "--summarizer-model", "m")
    status, output = process.run_to_exit()
    assert status == 2 and "--summarizer-base-url" in output  # the PUT refusal: test_policies.py
