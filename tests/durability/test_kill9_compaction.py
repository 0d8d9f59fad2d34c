"""kill -9 while threads append and the journal compacts every 50 entries.

A real server process (``--log-compaction-entries 50``: a snapshot and an
atomic journal rewrite every ~50 commands) takes appends from several threads,
each with a unique idempotency key and retried with that key until it is
acknowledged. The server is killed with SIGKILL and restarted, repeatedly.
Afterwards every acknowledged append must be stored exactly once, at its
acknowledged seq, with identical content, seqs gap-free
(:func:`~tests.durability.helpers.check_history`); and retrying every append
(acknowledged or not) with its key stores nothing for acknowledged ones: the
answer is the original acknowledgement and ``last_seq`` grows only by the
appends that were never stored.

Random kills rarely land in the short window between "snapshot written" and
"journal compacted", so a second test makes the server pause (and say so in
its log) at the start of every compaction and kills it exactly there. The
same runs against servers with one fix switched off (``variant_server.py``)
lose acknowledged appends, which the same checker reports:

* ``no-flush-before-ack``: entries acknowledged from Python's write buffer;
* ``no-load-dump-override``: pysyncobj's own dump loading keeps two entries;
* ``no-atomic-compaction``: the journal is emptied, then rewritten in place.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastpaca_server.replication.node import SNAPSHOT_FILE

from tests.durability.helpers import (
    AppendWorkload,
    Attempt,
    VariantServer,
    check_history,
    journal_entries,
    read_log,
)
from tests.durability.mutations import PAUSE_MARK
from tests.support.server import ServerProcess

CONTEXTS = ["kill-a", "kill-b", "kill-c"]
COMPACTION = ("--log-compaction-entries", "50")
THREADS = 4


def create_contexts(server: ServerProcess) -> None:
    with server.client() as client:
        for context_id in CONTEXTS:
            response = client.put(
                f"/v1/contexts/{context_id}",
                json={
                    "token_budget": 4000,
                    "policy": {"strategy": "last_n", "config": {"limit": 40}},
                },
            )
            assert response.status_code == 200, response.text


def wait_for_acknowledgements(workload: AppendWorkload, count: int) -> None:
    deadline = time.monotonic() + 30
    while workload.acknowledged() < count:
        assert time.monotonic() < deadline, f"fewer than {count} appends acknowledged"
        time.sleep(0.01)


def kill_at_random(server: ServerProcess, workload: AppendWorkload, rounds: int, seed: int) -> None:
    """Kill -9 and restart ``rounds`` times, each time while appends are being acknowledged."""
    chooser = random.Random(seed)
    for _ in range(rounds):
        wait_for_acknowledgements(workload, workload.acknowledged() + 1)
        time.sleep(chooser.uniform(0.15, 0.7))
        server.kill9()
        server.start()
    wait_for_acknowledgements(workload, workload.acknowledged() + 1)
    time.sleep(chooser.uniform(0.25, 0.6))
    server.kill9()  # the last kill lands while appends are in flight too
    workload.stop()
    server.start()


def kill_in_compaction_windows(server: ServerProcess, workload: AppendWorkload, kills: int) -> None:
    """Kill -9 while the server pauses inside a compaction (see mutations.PAUSE_MARK)."""
    for _ in range(kills):
        seen = server.log_path.read_text().count(PAUSE_MARK)
        deadline = time.monotonic() + 20
        while server.log_path.read_text().count(PAUSE_MARK) == seen:
            assert time.monotonic() < deadline, "no compaction started"
            time.sleep(0.01)
        time.sleep(0.25)  # inside the 0.5 s pause: acknowledgements already went out
        server.kill9()
        server.start()
    workload.stop()


_clients = threading.local()


def retry(server: ServerProcess, attempt: Attempt) -> dict[str, Any]:
    client = getattr(_clients, "client", None)
    if client is None or client.base_url != server.url:
        client = _clients.client = server.client()
    response = client.post(f"/v1/contexts/{attempt.context_id}/messages", json=attempt.body)
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


def check_retries(server: ServerProcess, workload: AppendWorkload) -> None:
    """Retry every append with its key: replays for the acknowledged, once for the rest."""
    with server.client() as client:
        stored_before = {m["id"]: m["seq"] for c in CONTEXTS for m in read_log(client, c)}
        last_seq_before = sum(client.get(f"/v1/contexts/{c}").json()["last_seq"] for c in CONTEXTS)
    with ThreadPoolExecutor(THREADS) as pool:
        answers = list(pool.map(lambda attempt: retry(server, attempt), workload.attempts))
    for attempt, answer in zip(workload.attempts, answers, strict=True):
        if attempt.ack is not None:
            assert answer == attempt.ack, f"retry of {attempt.key} was not a replay"
        elif attempt.message_id in stored_before:  # stored, but the answer was lost
            seq = answer["messages"][0]["seq"]
            assert seq == stored_before[attempt.message_id], f"retry of {attempt.key}: {seq}"
    never_stored = sum(1 for a in workload.attempts if a.message_id not in stored_before)
    with server.client() as client:
        last_seq_after = sum(client.get(f"/v1/contexts/{c}").json()["last_seq"] for c in CONTEXTS)
        stored_after = [m["id"] for c in CONTEXTS for m in read_log(client, c)]
    assert last_seq_after - last_seq_before == never_stored
    assert sorted(stored_after) == sorted(a.message_id for a in workload.attempts)


def test_acknowledged_appends_survive_random_kill9_during_compactions(
    tmp_path: Path, cleanup: list[ServerProcess]
) -> None:
    started = time.monotonic()
    server = ServerProcess(tmp_path / "data", *COMPACTION).start()
    cleanup.append(server)
    create_contexts(server)
    workload = AppendWorkload(server, CONTEXTS, THREADS).start()
    kill_at_random(server, workload, rounds=8, seed=20240611)

    assert workload.errors == []
    acked = [attempt for attempt in workload.attempts if attempt.ack is not None]
    assert len(acked) > 400, f"only {len(acked)} appends acknowledged: too few to mean much"
    # many compactions happened: most commands live only in the snapshot now
    assert (tmp_path / "data" / SNAPSHOT_FILE).exists()
    assert len(journal_entries(tmp_path / "data")) < len(acked) // 4

    with server.client() as client:
        assert check_history(client, workload) == []
    check_retries(server, workload)
    assert time.monotonic() - started < 90


def test_acknowledged_appends_survive_kill9_inside_compactions(
    tmp_path: Path, cleanup: list[ServerProcess]
) -> None:
    server = VariantServer(tmp_path / "data", *COMPACTION, patches=["slow-compaction"]).start()
    cleanup.append(server)
    create_contexts(server)
    workload = AppendWorkload(server, CONTEXTS, 8).start()
    kill_in_compaction_windows(server, workload, kills=3)
    assert workload.errors == []
    assert workload.acknowledged() > 100
    with server.client() as client:
        assert check_history(client, workload) == []
    check_retries(server, workload)


@pytest.mark.parametrize("fix", ["no-load-dump-override", "no-atomic-compaction"])
def test_without_fix_kill9_inside_compactions_loses_acknowledged_appends(
    tmp_path: Path, cleanup: list[ServerProcess], monkeypatch: pytest.MonkeyPatch, fix: str
) -> None:
    if fix == "no-atomic-compaction":
        monkeypatch.setenv("DURABILITY_TEST_REWRITE_PAUSE", "0.5")  # pause inside the rewrite
        patches = [fix]
    else:
        patches = [fix, "slow-compaction"]
    server = VariantServer(tmp_path / "data", *COMPACTION, patches=patches).start()
    cleanup.append(server)
    create_contexts(server)
    workload = AppendWorkload(server, CONTEXTS, 8).start()
    kill_in_compaction_windows(server, workload, kills=3)
    with server.client() as client:
        problems = check_history(client, workload)
    assert any("is lost" in problem for problem in problems), problems


def test_without_flush_before_ack_random_kill9_loses_acknowledged_appends(
    tmp_path: Path, cleanup: list[ServerProcess]
) -> None:
    server = VariantServer(tmp_path / "data", *COMPACTION, patches=["no-flush-before-ack"]).start()
    cleanup.append(server)
    create_contexts(server)
    workload = AppendWorkload(server, CONTEXTS, THREADS).start()
    # (A kill before the first snapshot can leave this variant unable to become
    # ready at all: its stored commit index points past the journal it kept.)
    wait_for_acknowledgements(workload, 150)
    kill_at_random(server, workload, rounds=4, seed=7)  # more chances to catch unflushed acks
    with server.client() as client:
        problems = check_history(client, workload)
    assert any("is lost" in problem or "is stored as" in problem for problem in problems), problems
