"""Gap 3: a restart with a snapshot newer than the start of the journal.

``snapshot_crash.py`` runs a store that dies (``os._exit(9)``) exactly after a
snapshot was written and reported durable, before the journal entries it
covers were deleted; it prints every acknowledged append until then. Some of
those appends were applied *after* the snapshot point, so they exist only in
the journal. A restart with our ``_SyncObj__loadDumpFile`` keeps every one of
them; pysyncobj's original (restored by deleting the override) keeps only the
two entries of the snapshot point and loses them.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastpaca_server.core import StateMachine
from fastpaca_server.replication import ReplicatedStore
from fastpaca_server.replication.node import SNAPSHOT_FILE, _RaftNode
from fastpaca_server.replication.snapshot import SnapshotStore

from tests.durability.helpers import HERE, journal_entries, script_env

CONTEXT = "snap"
COMPACTION_ENTRIES = 200


class Crash:
    def __init__(self, data_dir: Path, acks: dict[int, str], output: str) -> None:
        self.data_dir = data_dir
        self.acks = acks
        self.output = output

    def copy(self, target: Path) -> Path:
        shutil.copytree(self.data_dir, target)
        return target


@pytest.fixture(scope="module")
def crash(tmp_path_factory: pytest.TempPathFactory) -> Crash:
    data_dir = tmp_path_factory.mktemp("snapshot-crash") / "data"
    result = subprocess.run(
        [sys.executable, str(HERE / "snapshot_crash.py"), str(data_dir), str(COMPACTION_ENTRIES)],
        capture_output=True,
        text=True,
        timeout=120,
        env=script_env(),
    )
    assert result.returncode == 9, result.stdout[-2000:] + result.stderr[-4000:]
    assert "dying before deleteEntriesTo" in result.stdout
    acks: dict[int, str] = {}
    for seq, message_id in re.findall(r"^ack (\d+) (w\d\d-\d{6})$", result.stdout, re.MULTILINE):
        assert int(seq) not in acks, f"seq {seq} acknowledged twice"
        acks[int(seq)] = message_id
    return Crash(data_dir, acks, result.stdout)


def snapshot_on_disk(data_dir: Path) -> tuple[int, int]:
    """(Raft index of the snapshot point, last seq of the context in the snapshot)."""
    states: list[StateMachine] = []
    path = str(data_dir / SNAPSHOT_FILE)
    raft_data = SnapshotStore(path, StateMachine, states.append).deserialize(path)
    last_entry = raft_data[0]
    return last_entry[1], states[0].get(CONTEXT).last_seq


def recovered_log(data_dir: Path) -> list[tuple[int | None, str, Any]]:
    async def read() -> list[tuple[int | None, str, Any]]:
        store = ReplicatedStore(str(data_dir))
        try:
            await store.wait_ready(timeout=30)
            assert store.ready
            with store.read() as machine:
                return [(m.seq, m.id, m.parts) for m in machine.get(CONTEXT).log]
        finally:
            store.close()

    return asyncio.run(read())


def lost_acks(crash: Crash, log: list[tuple[int | None, str, Any]]) -> list[str]:
    by_seq = {seq: (message_id, parts) for seq, message_id, parts in log}
    lost = []
    for seq, message_id in sorted(crash.acks.items()):
        expected = (message_id, [{"type": "text", "text": f"payload of {message_id}"}])
        if by_seq.get(seq) != expected:
            lost.append(f"seq {seq} ({message_id}): found {by_seq.get(seq)}")
    return lost


def test_crash_left_a_snapshot_newer_than_the_journal_start(crash: Crash) -> None:
    snapshot_index, snapshot_seq = snapshot_on_disk(crash.data_dir)
    entries = journal_entries(crash.data_dir)
    assert entries[0][1] < snapshot_index - 1 < entries[-1][1]  # not compacted
    after_snapshot = [seq for seq in crash.acks if seq > snapshot_seq]
    assert after_snapshot, "no acknowledged append lies after the snapshot point"
    assert len(crash.acks) > COMPACTION_ENTRIES // 2


def test_restart_keeps_every_acknowledged_append(crash: Crash, tmp_path: Path) -> None:
    log = recovered_log(crash.copy(tmp_path / "data"))
    assert lost_acks(crash, log) == []
    assert [seq for seq, _, _ in log] == list(range(1, len(log) + 1))
    assert len({message_id for _, message_id, _ in log}) == len(log)


def test_pysyncobj_original_load_loses_acknowledged_appends(
    crash: Crash, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(_RaftNode, "_SyncObj__loadDumpFile")  # pysyncobj's own takes over
    log = recovered_log(crash.copy(tmp_path / "data"))
    _, snapshot_seq = snapshot_on_disk(crash.data_dir)
    lost = lost_acks(crash, log)
    assert len(lost) > 0
    assert len(log) == snapshot_seq  # everything after the snapshot point is gone
    assert len(lost) == sum(1 for seq in crash.acks if seq > snapshot_seq)
