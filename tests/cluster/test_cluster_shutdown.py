"""SIGTERM to the leader of a cluster: it drains and leaves, the others take over.

pysyncobj has no leadership transfer: the stopping leader finishes what is in
flight (``--shutdown-grace``), closes its Raft connections and exits 0; the
other nodes notice within an election timeout and elect a new leader. Writers
spread over every node, each append retried with its idempotency key, see only
retryable failures (503 with ``Retry-After``, connection errors), and when
the node is back every acknowledged append is on every node exactly once.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.durability.helpers import (
    RETRYABLE,
    RetryingWriters,
    check_history,
    drained,
    sigterm,
    wait_exit,
    wait_for_acknowledgements,
)
from tests.support.cluster import Cluster

CONTEXTS = ["leave-a", "leave-b", "leave-c"]
GRACE_AND_SLACK = 10.0 + 4.0


def test_a_leader_that_stops_hands_over(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 3, "--submit-timeout", "3").start()
    try:
        leader = cluster.settled()
        for context_id in CONTEXTS:
            created = httpx.put(
                f"{cluster.nodes[0].url}/v1/contexts/{context_id}", json={"token_budget": 100_000}
            )
            assert created.status_code == 200, created.text
        workload = RetryingWriters(list(cluster.nodes), CONTEXTS, threads=6).start()
        try:
            wait_for_acknowledgements(workload, 60)
            status, _ = wait_exit(leader, sigterm(leader), GRACE_AND_SLACK)
            assert status == 0, leader.output()
            drained(leader)
            assert cluster.leader(30) is not leader
            wait_for_acknowledgements(workload, workload.acknowledged() + 60)
            leader.start(60)
            cluster.wait_ready(leader)
            wait_for_acknowledgements(workload, workload.acknowledged() + 30)
        finally:
            workload.stop()
        assert not workload.errors, workload.errors[:10]
        assert set(workload.seen) <= RETRYABLE, workload.seen
        cluster.settled()
        for node in cluster.nodes:
            with httpx.Client(base_url=node.url, timeout=30) as client:
                problems = check_history(client, workload)
            assert not problems, (cluster.name(node), problems[:20])
    finally:
        cluster.stop()
