"""A three-node Raft cluster of real processes on loopback.

Any node serves every route, writes reach the leader from wherever they
land, a read after an acknowledged write sees it on every node, and killing
the leader (kill -9, under load, with log compactions going on) loses no
acknowledged write: after the cluster heals every node holds each
acknowledged append exactly once, at its acknowledged seq, with the same
state as every other node.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.durability.helpers import AppendWorkload, capture_state, check_history
from tests.support.cluster import Cluster, wait_for
from tests.support.server import ServerProcess, free_port


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    nodes = Cluster(tmp_path, 3, "--log-compaction-entries", "50", "--submit-timeout", "3").start()
    yield nodes
    nodes.stop()


def _text(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"type": "text", "text": text}]}


def test_every_node_serves_writes_and_reads_its_own_and_others_writes(cluster: Cluster) -> None:
    first, second, third = cluster.nodes
    created = httpx.put(f"{first.url}/v1/contexts/chat", json={"token_budget": 1000})
    assert created.status_code == 200, created.text
    for number, node in enumerate([first, second, third, second, first, third]):
        answer = httpx.post(
            f"{node.url}/v1/contexts/chat/messages", json={"message": _text(f"m{number}")}
        )
        assert answer.status_code == 201, answer.text
        assert answer.json()["seq"] == number + 1
        for reader in cluster.nodes:  # a read after an acknowledged write sees it, anywhere
            tail = httpx.get(f"{reader.url}/v1/contexts/chat/tail").json()["messages"]
            assert [m["parts"][0]["text"] for m in tail][-1] == f"m{number}", reader.url
    # Admission on a node that has not applied a fresh context yet waits for it.
    for node in cluster.nodes:
        context_id = f"fresh-{cluster.name(node)}"
        assert httpx.put(
            f"{node.url}/v1/contexts/{context_id}", json={"token_budget": 500}
        ).is_success
        for other in cluster.nodes:
            append = httpx.post(
                f"{other.url}/v1/contexts/{context_id}/messages",
                json={"message": _text("hi")},
            )
            assert append.status_code == 201, append.text
    windows = {httpx.get(f"{n.url}/v1/contexts/chat/context").content for n in cluster.nodes}
    assert len(windows) == 1  # byte for byte the same window on every node


def test_the_cluster_view_names_every_member_and_the_leader(cluster: Cluster) -> None:
    leader = cluster.leader()

    def complete() -> list[dict[str, Any]] | None:
        views = [cluster.view(node) for node in cluster.nodes]
        if any(view is None or None in [m["id"] for m in view["members"]] for view in views):
            return None
        return [view for view in views if view is not None]

    views = wait_for(complete, 30, "every node to know every member")
    for node, view in zip(cluster.nodes, views, strict=True):
        assert view["node_id"] == cluster.name(node)
        assert view["leader"] == cluster.name(leader)
        assert view["ready"] is True
        members = {m["id"]: m for m in view["members"]}
        assert set(members) == {"n1", "n2", "n3"}
        for other in cluster.nodes:
            member = members[cluster.name(other)]
            assert member["http_url"] == other.url
            assert member["raft_address"] == cluster.raft_addresses[cluster.nodes.index(other)]
            assert member["reachable"] is True
            assert member["leader"] is (other is leader)
        assert view["groups"][0]["leader"] == cluster.name(leader)
        assert view["applied_index"] <= view["commit_index"]


def test_a_follower_cut_off_from_the_majority_stops_answering(cluster: Cluster) -> None:
    """Reads go through the log: a node without a majority answers 503, not stale data."""
    leader = cluster.leader()
    assert httpx.put(f"{leader.url}/v1/contexts/c", json={"token_budget": 500}).is_success
    followers = [node for node in cluster.nodes if node is not leader]
    for node in followers:
        cluster.pause(node)
    try:
        started = time.monotonic()
        answer = httpx.get(f"{leader.url}/v1/contexts/c", timeout=30)
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] in {"unavailable", "not_ready"}
        assert answer.headers["Retry-After"] == "1"
        write = httpx.post(
            f"{leader.url}/v1/contexts/c/messages", json={"message": _text("x")}, timeout=30
        )
        assert write.status_code == 503, write.text
        assert time.monotonic() - started < 30
    finally:
        for node in followers:
            cluster.resume(node)
    cluster.leader()
    wait_for(lambda: _ok(httpx.get(f"{leader.url}/v1/contexts/c")), 30, "the cluster to heal")


def _ok(response: httpx.Response) -> bool | None:
    return True if response.status_code == 200 else None


@pytest.mark.parametrize("round_", range(2))
def test_kill9_of_the_leader_under_load_loses_no_acknowledged_write(
    cluster: Cluster, round_: int
) -> None:
    contexts = [f"ctx-{n}" for n in range(4)]
    for context_id in contexts:
        created = httpx.put(
            f"{cluster.nodes[0].url}/v1/contexts/{context_id}", json={"token_budget": 100_000}
        )
        assert created.status_code == 200, created.text
    workload = AppendWorkload(list(cluster.nodes), contexts, threads=6).start()
    try:
        for _ in range(2):
            wait_for(lambda: workload.acknowledged() > 60 or None, 60, "appends before the kill")
            leader = cluster.leader()
            before = workload.acknowledged()
            cluster.kill9(leader)
            wait_for(
                lambda before=before: workload.acknowledged() > before + 30 or None,
                60,
                "appends to go on without the old leader",
            )
            leader.start(60)
            cluster.wait_ready(leader)
        wait_for(lambda: workload.acknowledged() > 250 or None, 60, "more appends")
    finally:
        workload.stop()
    assert workload.errors == []
    cluster.leader()
    states = []
    for node in cluster.nodes:
        with httpx.Client(base_url=node.url, timeout=30) as client:
            assert check_history(client, workload) == [], cluster.name(node)
            states.append(capture_state(client, contexts))
    assert states[0] == states[1] == states[2]


def test_a_cluster_needs_a_secret_off_loopback(tmp_path: Path) -> None:
    node = ServerProcess(
        tmp_path / "data",
        "--raft-bind",
        f"10.1.2.3:{free_port()}",
        "--peers",
        "10.1.2.4:7000,10.1.2.5:7000",
    )
    status, output = node.run_to_exit()
    assert status == 2
    assert "--raft-secret" in output and "pickles" in output
    lonely = ServerProcess(tmp_path / "data2", "--peers", "127.0.0.1:7000")
    status, output = lonely.run_to_exit()
    assert status == 2 and "--raft-bind and --peers" in output


def test_large_messages_replicate_through_a_follower(cluster: Cluster) -> None:
    """Entries over pysyncobj's 64 KB chunk size (a long paste, a group of appends)
    reach every node whole."""
    follower = cluster.followers()[0]
    base = f"{follower.url}/v1/contexts/big"
    assert httpx.put(base, json={"token_budget": 2_000_000}).status_code == 200
    text = "ünïcødé ✓ long paste " * 30_000  # about 700 KB of UTF-8
    answer = httpx.post(f"{base}/messages", json={"message": _text(text)}, timeout=60)
    assert answer.status_code == 201, answer.text
    for node in cluster.nodes:
        tail = httpx.get(f"{node.url}/v1/contexts/big/tail", timeout=30).json()["messages"]
        assert tail[-1]["parts"][0]["text"] == text, cluster.name(node)


def test_pause_a_follower_kill_the_leader_swap_the_paused_one(cluster: Cluster) -> None:
    """The sequence that lost acknowledged writes with pysyncobj as shipped: a
    follower paused (SIGSTOP), the leader killed while it compacts its log
    (every 50 entries here), then the other follower paused instead and the
    old leader restarted; at the end every node holds every acknowledged
    append once."""
    contexts = [f"swap-{n}" for n in range(3)]
    for context_id in contexts:
        created = httpx.put(
            f"{cluster.nodes[0].url}/v1/contexts/{context_id}", json={"token_budget": 100_000}
        )
        assert created.status_code == 200, created.text
    workload = AppendWorkload(list(cluster.nodes), contexts, threads=6).start()
    try:
        wait_for(lambda: workload.acknowledged() > 80 or None, 60, "appends before the pause")
        leader = cluster.leader()
        first, second = [node for node in cluster.nodes if node is not leader]
        cluster.pause(first)
        before = workload.acknowledged()
        wait_for(lambda: workload.acknowledged() > before + 60 or None, 60, "appends, one paused")
        cluster.kill9(leader)
        cluster.resume(first)
        cluster.pause(second)
        leader.start(60)  # the old leader and the first follower: a majority again
        cluster.wait_ready(leader)
        before = workload.acknowledged()
        wait_for(lambda: workload.acknowledged() > before + 60 or None, 60, "appends, swapped")
        cluster.resume(second)
        cluster.leader()
        before = workload.acknowledged()
        wait_for(lambda: workload.acknowledged() > before + 30 or None, 60, "appends, healed")
    finally:
        workload.stop()
        for node in cluster.nodes:
            if cluster.name(node) in cluster.paused:
                cluster.resume(node)
    assert workload.errors == []
    cluster.leader()
    states = []
    for node in cluster.nodes:
        with httpx.Client(base_url=node.url, timeout=30) as client:
            assert check_history(client, workload) == [], cluster.name(node)
            states.append(capture_state(client, contexts))
    assert states[0] == states[1] == states[2]
