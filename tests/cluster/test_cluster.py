"""A three-node Raft cluster of real processes on loopback.

Any node serves every route, writes reach the leader from wherever they
land, a read after an acknowledged write sees it on every node, and killing
the leader (kill -9, under load, with log compactions going on) loses no
acknowledged write: after the cluster heals every node holds each
acknowledged append exactly once, at its acknowledged seq, with the same
state as every other node.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.durability.helpers import AppendWorkload, VariantServer, capture_state, check_history
from tests.durability.mutations import PAUSE_MARK
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

    def complete() -> list[dict[str, Any]] | None:
        """Every node's view, once each names every member, sees each one and agrees
        on the leader (under load a connection or an election can be in progress)."""
        views = [cluster.view(node) for node in cluster.nodes]
        if any(view is None for view in views):
            return None
        found = [view for view in views if view is not None]
        members = [m for view in found for m in view["members"]]
        if any(m["id"] is None or not m["reachable"] for m in members):
            return None
        if len({view["leader"] for view in found}) != 1 or found[0]["leader"] is None:
            return None
        return found

    views = wait_for(complete, 60, "every node to know and see every member")
    leader = cluster.node(views[0]["leader"])
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


def _load(
    cluster: Cluster, prefix: str, count: int, *, threads: int
) -> tuple[list[str], AppendWorkload]:
    """``count`` contexts created through the first node, and writers appending to
    them through every node (each retrying with its key, moving on after a failure)."""
    contexts = [f"{prefix}-{n}" for n in range(count)]
    for context_id in contexts:
        created = httpx.put(
            f"{cluster.nodes[0].url}/v1/contexts/{context_id}", json={"token_budget": 100_000}
        )
        assert created.status_code == 200, created.text
    return contexts, AppendWorkload(list(cluster.nodes), contexts, threads=threads).start()


def _verify(cluster: Cluster, workload: AppendWorkload, contexts: list[str]) -> None:
    """Every acknowledged append on every node exactly once, and the same state everywhere.

    Once healed, a node that was cut off can still force one more election
    (pysyncobj has no pre-vote), so the nodes are first given time to settle,
    and a check that meets a 503 of such an election is run again.
    """
    for attempt in range(5):
        cluster.settled()
        try:
            states = []
            for node in cluster.nodes:
                with httpx.Client(base_url=node.url, timeout=30) as client:
                    assert check_history(client, workload) == [], cluster.name(node)
                    states.append(capture_state(client, contexts))
        except AssertionError as error:
            if attempt < 4 and ("not_ready" in str(error) or "unavailable" in str(error)):
                continue
            raise
        assert all(state == states[0] for state in states)
        return


def _ok(response: httpx.Response) -> bool | None:
    return True if response.status_code == 200 else None


@pytest.mark.parametrize("round_", range(2))
def test_kill9_of_the_leader_under_load_loses_no_acknowledged_write(
    cluster: Cluster, round_: int
) -> None:
    contexts, workload = _load(cluster, "ctx", 4, threads=6)
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
    _verify(cluster, workload, contexts)


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


@pytest.fixture
def pausing_compactions(tmp_path: Path) -> Iterator[Cluster]:
    """Nodes that announce each log compaction and pause 0.5 s inside it (the
    snapshot written, the journal not yet compacted), so a kill can land there."""
    nodes = Cluster(
        tmp_path,
        3,
        "--log-compaction-entries",
        "50",
        "--submit-timeout",
        "3",
        node_class=functools.partial(VariantServer, patches=["slow-compaction"]),
    ).start()
    yield nodes
    nodes.stop()


def test_pause_a_follower_kill_the_leader_swap_the_paused_one(
    pausing_compactions: Cluster,
) -> None:
    """The sequence that lost acknowledged writes with pysyncobj as shipped: a
    follower paused (SIGSTOP), the leader killed while it compacts its log,
    then the other follower paused instead and the old leader restarted; at
    the end every node holds every acknowledged append once."""
    cluster = pausing_compactions
    contexts, workload = _load(cluster, "swap", 3, threads=6)
    try:
        wait_for(lambda: workload.acknowledged() > 80 or None, 60, "appends before the pause")
        leader = cluster.leader()
        first, second = [node for node in cluster.nodes if node is not leader]
        cluster.pause(first)
        before = workload.acknowledged()
        wait_for(lambda: workload.acknowledged() > before + 60 or None, 60, "appends, one paused")
        compactions = leader.output().count(PAUSE_MARK)
        wait_for(
            lambda: leader.output().count(PAUSE_MARK) > compactions or None,
            60,
            "the leader to start compacting its log",
        )
        cluster.kill9(leader)  # inside the compaction's pause
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
    _verify(cluster, workload, contexts)


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[Cluster]:
    """Three nodes whose Raft links go through proxies. A node then knows some peers
    by a proxy's address, which a snapshot's member list (the sender's view) cannot
    carry, so this cluster never compacts its log (no snapshot is sent)."""
    nodes = Cluster(
        tmp_path, 3, "--log-compaction-entries", "1000000", "--submit-timeout", "3", proxied=True
    ).start()
    yield nodes
    nodes.stop()


def test_a_leader_cut_off_into_a_minority_stops_acknowledging(proxied: Cluster) -> None:
    """Cut every Raft link of the leader (a TCP proxy sits on each link): it
    acknowledges nothing more, the other two elect a leader and go on, and
    after healing every node holds every acknowledged append exactly once."""
    cluster = proxied
    contexts, workload = _load(cluster, "part", 3, threads=6)
    try:
        wait_for(lambda: workload.acknowledged() > 60 or None, 60, "appends before the cut")
        old = cluster.leader()
        cluster.isolate(old)
        cut_at = time.monotonic()
        refused = httpx.post(
            f"{old.url}/v1/contexts/part-0/messages", json={"message": _text("x")}, timeout=30
        )
        assert refused.status_code == 503, refused.text
        read = httpx.get(f"{old.url}/v1/contexts/part-0/tail", timeout=30)
        assert read.status_code == 503, read.text  # no stale reads from a deposed leader

        def new_leader() -> ServerProcess | None:
            others = [node for node in cluster.nodes if node is not old]
            views = [cluster.view(node) for node in others]
            leaders = {v["leader"] for v in views if v is not None and v["leader"] is not None}
            return cluster.node(leaders.pop()) if len(leaders) == 1 else None

        try:
            elected = wait_for(new_leader, 30, "the majority to elect a leader")
        except TimeoutError:
            views = {cluster.name(n): cluster.view(n) for n in cluster.nodes if n is not old}
            raise AssertionError(f"no leader elected; views: {views}") from None
        assert elected is not old
        failover = time.monotonic() - cut_at
        before = workload.acknowledged()
        wait_for(lambda: workload.acknowledged() > before + 60 or None, 60, "appends, cut off")
        # Without a majority the old leader steps down: no known leader, not ready.
        wait_for(
            lambda: httpx.get(f"{old.url}/health/ready", timeout=5).status_code == 503 or None,
            30,
            "the cut-off node to report itself not ready",
        )
        cluster.heal()
        before = workload.acknowledged()
        wait_for(lambda: workload.acknowledged() > before + 30 or None, 60, "appends, healed")
    finally:
        workload.stop()
        cluster.heal()
    assert workload.errors == []
    assert failover < 10
    _verify(cluster, workload, contexts)


def test_contexts_spread_over_raft_groups_each_with_its_own_leader(tmp_path: Path) -> None:
    """With --groups 3 every context lives in one of three Raft groups (its own
    journal, port and leader); all of them keep serving through a kill -9 of a
    node, and a node refuses to restart with another number of groups."""
    from fastpaca_server.replication.shards import group_of

    cluster = Cluster(tmp_path, 3, "--submit-timeout", "3", groups=3).start()
    try:
        ids: dict[int, str] = {}
        number = 0
        while len(ids) < 3:
            ids.setdefault(group_of(f"g-{number}", 3), f"g-{number}")
            number += 1
        for context_id in ids.values():
            assert (
                httpx.put(
                    f"{cluster.nodes[0].url}/v1/contexts/{context_id}",
                    json={"token_budget": 100_000},
                ).status_code
                == 200
            )

        def views() -> list[dict[str, Any]] | None:
            found = [cluster.view(node) for node in cluster.alive()]
            if any(v is None or any(g["leader"] is None for g in v["groups"]) for v in found):
                return None
            return [v for v in found if v is not None]

        for view in wait_for(views, 60, "every group to have a leader"):
            assert [group["id"] for group in view["groups"]] == [0, 1, 2]
        for node in cluster.nodes:
            for context_id in ids.values():
                answer = httpx.post(
                    f"{node.url}/v1/contexts/{context_id}/messages",
                    json={"message": _text(f"from {cluster.name(node)}")},
                )
                assert answer.status_code == 201, answer.text
        for context_id in ids.values():
            for node in cluster.nodes:
                tail = httpx.get(f"{node.url}/v1/contexts/{context_id}/tail").json()
                assert [m["seq"] for m in tail["messages"]] == [1, 2, 3]
        for group in range(3):
            assert (tmp_path / "n1" / (f"group-{group}" if group else "") / "raft.journal").exists()

        victim = cluster.leader()
        cluster.kill9(victim)
        survivor = next(node for node in cluster.nodes if node is not victim)
        for context_id in ids.values():
            answer = httpx.post(
                f"{survivor.url}/v1/contexts/{context_id}/messages",
                json={"message": _text("after the kill"), "idempotency_key": f"k-{context_id}"},
                timeout=30,
            )
            if answer.status_code == 503:  # the group was electing: retry with the same key
                time.sleep(2)
                answer = httpx.post(
                    f"{survivor.url}/v1/contexts/{context_id}/messages",
                    json={"message": _text("after the kill"), "idempotency_key": f"k-{context_id}"},
                    timeout=30,
                )
            assert answer.status_code == 201, answer.text
            assert answer.json()["seq"] == 4

        changed = ServerProcess(victim.data_dir, *victim.args, "--groups", "2")
        status, output = changed.run_to_exit()
        assert status == 1 and "--groups 3, not 2" in output, output
        victim.start(60)
        cluster.wait_ready(victim)
        tail = httpx.get(f"{victim.url}/v1/contexts/{ids[0]}/tail").json()["messages"]
        assert [m["parts"][0]["text"] for m in tail][-1] == "after the kill"
    finally:
        cluster.stop()


def test_a_node_joins_and_a_member_leaves_without_downtime(cluster: Cluster) -> None:
    """Membership changes through the log while appends go on: a fourth node is
    added (it catches up and serves), then a follower is removed and stopped;
    no acknowledged append is lost and the remaining nodes agree."""
    first = cluster.nodes[0]
    contexts, workload = _load(cluster, "member", 3, threads=4)
    try:
        wait_for(lambda: workload.acknowledged() > 60 or None, 60, "appends before the change")
        newcomer = cluster.add_node()
        added = httpx.post(
            f"{first.url}/v1/cluster/members",
            json={"raft_address": cluster.raft_address(newcomer)},
            timeout=30,
        )
        assert added.status_code == 200, added.text
        assert len(added.json()["members"]) == 4
        cluster.wait_ready(newcomer)
        again = httpx.post(
            f"{newcomer.url}/v1/cluster/members",
            json={"raft_address": cluster.raft_address(newcomer)},
            timeout=30,
        )
        assert again.status_code == 409, again.text
        assert again.json()["error"] == "membership_change_refused"
        before = workload.acknowledged()
        wait_for(lambda: workload.acknowledged() > before + 40 or None, 60, "appends, 4 nodes")

        leaving = next(node for node in cluster.followers() if node is not newcomer)
        address = cluster.raft_address(leaving)
        removed = httpx.delete(f"{newcomer.url}/v1/cluster/members/{address}", timeout=30)
        assert removed.status_code == 200, removed.text
        assert address not in [m["raft_address"] for m in removed.json()["members"]]
        cluster.forget(leaving)
        before = workload.acknowledged()
        wait_for(lambda: workload.acknowledged() > before + 40 or None, 60, "appends, after")
    finally:
        workload.stop()
    assert workload.errors == []
    _verify(cluster, workload, contexts)
    # After the runbook's last step (every node's --peers updated), restarts work.
    original = next(node for node in cluster.nodes if node is not newcomer)
    for node in [newcomer, original]:
        cluster.update_peers(node)
        cluster.restart(node)
    cluster.settled()
    for node in cluster.nodes:
        view = cluster.view(node)
        assert view is not None and len(view["members"]) == 3, view
        assert address not in [m["raft_address"] for m in view["members"]]
    _verify(cluster, workload, contexts)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"raft_address": "no-port"}, "invalid_request"),
        ({"raft_address": "127.0.0.1:99999"}, "invalid_request"),
        ({"raft_address": 7}, "invalid_request"),
        ({}, "invalid_request"),
        ({"raft_address": "127.0.0.1:7000", "x": 1}, "unknown_field"),
    ],
)
def test_bad_membership_requests_are_refused(server: ServerProcess, body: Any, code: str) -> None:
    answer = httpx.post(f"{server.url}/v1/cluster/members", json=body)
    assert answer.status_code == 400 and answer.json()["error"] == code, answer.text


def test_a_single_node_has_no_members_to_change(server: ServerProcess) -> None:
    answer = httpx.post(f"{server.url}/v1/cluster/members", json={"raft_address": "127.0.0.1:7"})
    assert answer.status_code == 409 and answer.json()["error"] == "membership_change_refused"
    answer = httpx.delete(f"{server.url}/v1/cluster/members/127.0.0.1:7")
    assert answer.status_code == 409, answer.text


def test_a_follower_serves_the_live_feed_of_writes_made_elsewhere(cluster: Cluster) -> None:
    """Followers apply the same commands in the same order, so their event feed
    carries the same versions as the leader's; a tombstone ends it everywhere."""
    leader = cluster.leader()
    follower = next(node for node in cluster.nodes if node is not leader)
    base = "/v1/contexts/feed"
    assert httpx.put(f"{leader.url}{base}", json={"token_budget": 1000}).status_code == 200
    for number in range(3):
        answer = httpx.post(f"{leader.url}{base}/messages", json={"message": _text(f"e{number}")})
        assert answer.status_code == 201, answer.text
    assert httpx.delete(f"{leader.url}{base}").status_code == 200
    feeds = []
    for node in (follower, leader):
        response = httpx.get(f"{node.url}{base}/events", params={"cursor": 0}, timeout=30)
        assert response.status_code == 200, response.text
        events = []
        for block in response.text.split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.splitlines() if line[:1] != ":")
            if "data" in fields:
                events.append(json.loads(fields["data"]))
        feeds.append([(e["type"], e["version"], e.get("seq")) for e in events])
    assert feeds[0] == feeds[1]
    assert [seq for kind, _, seq in feeds[0] if kind == "message"] == [1, 2, 3]
    assert feeds[0][-1][0] == "tombstoned"
