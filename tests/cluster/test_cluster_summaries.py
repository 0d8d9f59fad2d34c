"""The summarize policy in a three-node cluster: only the leader calls the
summarizer, every node serves the same summarized window, and after the leader
is killed the new leader carries on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.cluster import Cluster, wait_for
from tests.support.fake_openai import FakeOpenAI
from tests.support.server import ServerProcess

POLICY = {"strategy": "summarize", "config": {"target_ratio": 0.4}}


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def cluster(tmp_path: Path, fake: FakeOpenAI) -> Iterator[Cluster]:
    nodes = Cluster(
        tmp_path,
        3,
        "--summarizer-base-url",
        fake.base_url,
        "--summarizer-model",
        "fake",
        "--submit-timeout",
        "3",
    ).start()
    yield nodes
    nodes.stop()


def _turn(node: ServerProcess, context_id: str, n: int) -> None:
    body = {
        "messages": [
            {"role": "user", "parts": [{"type": "text", "text": f"question {n} about topic {n}"}]},
            {"role": "assistant", "parts": [{"type": "text", "text": f"answer {n}: chapter {n}"}]},
        ]
    }
    response = httpx.post(f"{node.url}/v1/contexts/{context_id}/messages", json=body, timeout=10)
    assert response.status_code == 201, response.text


def _window(node: ServerProcess, context_id: str) -> dict[str, Any]:
    response = httpx.get(f"{node.url}/v1/contexts/{context_id}/context", timeout=10)
    assert response.status_code == 200, response.text
    window: dict[str, Any] = response.json()
    return window


def _summary(node: ServerProcess, context_id: str) -> dict[str, Any] | None:
    segments = _window(node, context_id)["segments"]
    return next((s for s in segments if s["type"] == "summary"), None)


def _talk_until_summarized(node: ServerProcess, context_id: str, start: int, after: int = 0) -> int:
    for n in range(start, start + 60):
        _turn(node, context_id, n)
        segment = _summary(node, context_id)
        if segment is not None and segment["to_seq"] > after:
            return n + 1
        time.sleep(0.1)
    raise AssertionError("no summary after 60 turns")


def _jobs(node: ServerProcess) -> float:
    """Summary jobs this node finished (any outcome), from its /metrics."""
    text = httpx.get(f"{node.url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("fastpaca_summaries_total{")
    )


def test_the_leader_summarizes_and_every_node_serves_the_same_window(
    cluster: Cluster, fake: FakeOpenAI
) -> None:
    leader = cluster.settled()
    follower = next(node for node in cluster.nodes if node is not leader)
    context_id = "summaries-in-a-cluster"
    put = {"token_budget": 500, "trigger_ratio": 0.6, "policy": POLICY}
    response = httpx.put(f"{follower.url}/v1/contexts/{context_id}", json=put, timeout=10)
    assert response.status_code == 200, response.text
    turns = _talk_until_summarized(follower, context_id, 0)
    first = wait_for(
        lambda: (w := _window(leader, context_id)) and not w["needs_compaction"] and w,
        15,
        "the summary job to finish",
    )
    windows = [_window(node, context_id) for node in cluster.nodes]
    assert all(w["messages"] == first["messages"] for w in windows)
    calls = len(fake.requests)
    assert calls >= 1
    # Only the leader ran jobs: the followers never called the summarizer.
    jobs = {cluster.name(node): _jobs(node) for node in cluster.nodes}
    assert jobs[cluster.name(leader)] >= 1
    assert all(count == 0 for name, count in jobs.items() if name != cluster.name(leader)), jobs

    # The leader dies; the new one summarizes from where the log is.
    covered = next(s for s in first["segments"] if s["type"] == "summary")["to_seq"]
    cluster.kill9(leader)
    new_leader = cluster.leader()
    assert new_leader is not leader
    _talk_until_summarized(new_leader, context_id, turns, after=covered)
    segment = _summary(new_leader, context_id)
    assert segment is not None and segment["from_seq"] == 1 and segment["to_seq"] > covered
    assert len(fake.requests) > calls
    survivors = [node for node in cluster.nodes if node is not leader]
    wait_for(
        lambda: len({str(_window(node, context_id)["messages"]) for node in survivors}) == 1,
        15,
        "the survivors to agree",
    )
