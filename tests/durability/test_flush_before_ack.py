"""Every acknowledged command is on stable storage before its acknowledgement.

A real :class:`ReplicatedStore` runs in this process. Two probes watch it:

* every ``os.fdatasync``/``os.fsync`` of the journal (or of the new journal
  file a compaction renames in) reads the file as the OS holds it at that
  moment and records the highest Raft index it contains: the durable index;
* the submit callback path (``settle_all_from_thread``, where pysyncobj's callback
  hands the result to the event loop) records, for every acknowledgement, the
  durable index at that moment.

Each acknowledged message is then looked up in the journal (by its unique id)
and its index must not exceed the durable index seen when it was acknowledged.
With ``DurableJournal.setRaftCommitIndex`` no longer flushing (or flushing
without draining Python's write buffer) the same check fails.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from fastpaca_server.core.models import AppendResult
from fastpaca_server.replication import ReplicatedStore
from fastpaca_server.replication import node as node_module
from fastpaca_server.replication.journal import DurableJournal, read_entries
from fastpaca_server.replication.node import JOURNAL_FILE

from tests.durability import mutations
from tests.durability.helpers import append_command, manual_context

APPENDS = 240
CONCURRENCY = 24


class DurabilityProbe:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
        self.journal_path = os.path.realpath(data_dir / JOURNAL_FILE)
        self.lock = threading.Lock()
        self.durable_index = 0
        self.syncs = 0
        self.added: list[tuple[int, bytes]] = []
        self.acks: list[tuple[list[str], int]] = []

        def synced(real: Any) -> Any:
            def sync(fd: int) -> None:
                path = os.readlink(f"/proc/self/fd/{fd}")
                if path not in (self.journal_path, f"{self.journal_path}.tmp"):
                    real(fd)
                    return
                entries, _, _ = read_entries(path)  # what this sync makes durable
                real(fd)
                with self.lock:
                    self.syncs += 1
                    if entries:
                        self.durable_index = max(self.durable_index, entries[-1][1])

            return sync

        monkeypatch.setattr(os, "fdatasync", synced(os.fdatasync))
        monkeypatch.setattr(os, "fsync", synced(os.fsync))

        real_add = DurableJournal.add

        def add(journal: DurableJournal, command: bytes, idx: int, term: int) -> None:
            self.added.append((idx, bytes(command)))
            real_add(journal, command, idx, term)

        monkeypatch.setattr(DurableJournal, "add", add)

        real_settle = node_module.settle_all_from_thread

        def settle(loop: Any, outcomes: list[tuple[Any, Any, Any]]) -> None:
            with self.lock:
                for _, result, _ in outcomes:
                    if result is not None and isinstance(result[0], AppendResult):
                        ids = [message.id for message in result[0].messages]
                        self.acks.append((ids, self.durable_index))
            real_settle(loop, outcomes)

        monkeypatch.setattr(node_module, "settle_all_from_thread", settle)

    def index_of(self, message_id: str) -> int:
        needle = message_id.encode()
        found = [idx for idx, command in self.added if needle in command]
        assert len(found) == 1, f"{message_id} is in journal entries {found}"
        return found[0]

    def violations(self) -> list[str]:
        problems = []
        for ids, durable in self.acks:
            for message_id in ids:
                index = self.index_of(message_id)
                if index > durable:
                    problems.append(
                        f"{message_id} (entry {index}) acknowledged while entries up to "
                        f"{durable} were durable"
                    )
        return problems


def run_appends(
    data_dir: Path, compaction_entries: int, concurrency: int = CONCURRENCY
) -> list[str]:
    """Append APPENDS messages, ``concurrency`` at a time; return the acknowledged ids.

    Appends submitted together become one Raft entry, so ``concurrency`` also
    sets the size of the journal records."""

    async def scenario() -> list[str]:
        store = ReplicatedStore(str(data_dir), log_compaction_entries=compaction_entries)
        try:
            await store.wait_ready()
            await store.submit(manual_context("flush"))
            acknowledged: list[str] = []
            for start in range(0, APPENDS, concurrency):
                ids = [f"fba-{n:06d}" for n in range(start, start + concurrency)]
                results = await asyncio.gather(
                    *(store.submit(append_command("flush", message_id)) for message_id in ids)
                )
                for message_id, result in zip(ids, results, strict=True):
                    assert result.messages[0].id == message_id
                    acknowledged.append(message_id)
            return acknowledged
        finally:
            store.close()

    return asyncio.run(scenario())


@pytest.mark.parametrize("compaction_entries", [100_000, 40], ids=["no-compaction", "compaction"])
def test_every_ack_follows_a_sync_of_its_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compaction_entries: int
) -> None:
    probe = DurabilityProbe(monkeypatch, tmp_path)
    acknowledged = run_appends(tmp_path, compaction_entries)
    assert len(acknowledged) == APPENDS
    assert sorted(i for ids, _ in probe.acks for i in ids) == sorted(acknowledged)
    assert probe.violations() == []
    # group commit: concurrent appends share fsyncs
    assert probe.syncs < APPENDS


@pytest.mark.parametrize("mutation", ["no-flush-before-ack", "no-buffer-flush"])
def test_without_flush_before_ack_the_probe_reports_violations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mutation: str
) -> None:
    mutations.apply_with(monkeypatch, mutation)
    probe = DurabilityProbe(monkeypatch, tmp_path)
    # Small groups: records that fit Python's write buffer (a record larger than
    # the buffer goes straight to the OS, which hides the missing buffer flush).
    run_appends(tmp_path, 100_000, concurrency=4)
    violations = probe.violations()
    assert violations, "the probe missed acknowledgements of unsynced entries"
