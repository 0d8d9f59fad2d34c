"""The archive in a three-node cluster: the leader changes in the middle of a
backlog (Postgres down, then the leader killed with kill -9); the new leader
resumes from the replicated watermark and every message lands exactly once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.archive.conftest import Database
from tests.support.cluster import Cluster, wait_for
from tests.support.postgres import ThrowawayPostgres
from tests.support.server import ServerProcess


def _append(node: ServerProcess, context_id: str, first: int, count: int) -> None:
    for start in range(first, first + count, 50):
        body = {
            "messages": [
                {"role": "user", "parts": [{"type": "text", "text": f"message {n}"}]}
                for n in range(start, min(start + 50, first + count))
            ]
        }
        response = httpx.post(
            f"{node.url}/v1/contexts/{context_id}/messages", json=body, timeout=15
        )
        assert response.status_code == 201, response.text


def _context(node: ServerProcess, context_id: str) -> dict[str, Any]:
    response = httpx.get(f"{node.url}/v1/contexts/{context_id}", timeout=10)
    assert response.status_code == 200, response.text
    context: dict[str, Any] = response.json()
    return context


def test_a_new_leader_resumes_the_backlog_from_the_watermark(
    tmp_path: Path, postgres: ThrowawayPostgres, database: Database
) -> None:
    cluster = Cluster(
        tmp_path, 3, "--database-url", database.dsn, "--tail-keep", "100", "--submit-timeout", "3"
    ).start()
    try:
        leader = cluster.settled()
        follower = next(node for node in cluster.nodes if node is not leader)
        context_id = "archive-in-a-cluster"
        response = httpx.put(
            f"{follower.url}/v1/contexts/{context_id}", json={"token_budget": 100_000}, timeout=10
        )
        assert response.status_code == 200, response.text
        _append(follower, context_id, 0, 300)
        wait_for(
            lambda: _context(follower, context_id)["archived_seq"] == 300, 30, "the first flush"
        )
        postgres.pause()
        try:
            _append(follower, context_id, 300, 400)  # the backlog: appends go on
            time.sleep(0.5)
            assert _context(leader, context_id)["archived_seq"] == 300
        finally:
            cluster.kill9(leader)
            postgres.resume()
        survivors = [node for node in cluster.nodes if node is not leader]
        new_leader = cluster.leader(timeout=30)
        assert new_leader is not leader
        wait_for(
            lambda: all(_context(n, context_id)["archived_seq"] == 700 for n in survivors),
            60,
            "the new leader to archive the backlog",
        )
        rows = postgres.query(
            "SELECT seq, count(*) FROM messages WHERE context_id = $1 GROUP BY seq ORDER BY seq",
            context_id,
            database=database.name,
        )
        assert [row[0] for row in rows] == list(range(1, 701))
        assert all(row[1] == 1 for row in rows)
        # Any node reads the oldest messages back through the archive.
        page = httpx.get(
            f"{survivors[-1].url}/v1/contexts/{context_id}/messages",
            params={"after_seq": 0, "limit": 5},
            timeout=10,
        ).json()
        assert [m["seq"] for m in page["messages"]] == [1, 2, 3, 4, 5]
    finally:
        cluster.stop()
