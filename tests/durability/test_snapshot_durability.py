"""Snapshots: durable before the journal entries they cover are deleted.

pysyncobj calls our ``serializer`` on its Raft thread; it forks, and the child
writes ``<snapshot>.writing``, fsyncs it, renames it over the snapshot and
fsyncs the directory before it exits. On a later tick pysyncobj asks our
``serializeChecker`` and, on SUCCESS (the child exited cleanly), deletes the
journal entries the snapshot covers (``DurableJournal.deleteEntriesTo``). So,
in this order: the snapshot file is fsync'd, renamed in, the directory
fsync'd, and only then the journal compacted; and SUCCESS only if the new
snapshot is in place.

A real :class:`ReplicatedStore` runs in this process; ``os.fsync``,
``os.replace`` and ``deleteEntriesTo`` are recorded in the order they happen,
in the child of the fork as in this process (each event is appended to a
file, which both share).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from fastpaca_server.replication import ReplicatedStore
from fastpaca_server.replication.journal import DurableJournal
from fastpaca_server.replication.node import SNAPSHOT_FILE

from tests.durability import mutations
from tests.durability.helpers import append_command, manual_context

COMPACTION_ENTRIES = 50
APPENDS = 130


class DiskEvents:
    """``("fsync", path)``, ``("rename", source, target)`` and ``("compact",)`` in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, log: Path, fail_rename: int | None) -> None:
        self.log = log
        real_fsync = os.fsync
        real_replace = os.replace
        real_delete_entries_to = DurableJournal.deleteEntriesTo

        def record(*event: str) -> None:
            with open(log, "a") as handle:  # O_APPEND: one line per write, child or parent
                handle.write(json.dumps(event) + "\n")

        def fsync(fd: int) -> None:
            record("fsync", os.readlink(f"/proc/self/fd/{fd}"))
            real_fsync(fd)

        def replace(source: Any, target: Any) -> None:
            if str(source).endswith(f"{SNAPSHOT_FILE}.writing"):
                if self.renames + 1 == fail_rename:
                    record("failed rename", str(source))
                    raise OSError(5, "Input/output error (injected)")
                record("rename", os.path.realpath(source), os.path.realpath(target))
            real_replace(source, target)

        def delete_entries_to(journal: DurableJournal, entryTo: int) -> None:
            record("compact")
            real_delete_entries_to(journal, entryTo)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(DurableJournal, "deleteEntriesTo", delete_entries_to)

    @property
    def events(self) -> list[tuple[str, ...]]:
        if not self.log.exists():
            return []
        return [tuple(json.loads(line)) for line in self.log.read_text().splitlines()]

    @property
    def renames(self) -> int:
        return sum(1 for event in self.events if event[0] in ("rename", "failed rename"))

    def ordering_problems(self, data_dir: Path) -> list[str]:
        snapshot = os.path.realpath(data_dir / SNAPSHOT_FILE)
        directory = os.path.realpath(data_dir)
        events = self.events
        compactions = [i for i, event in enumerate(events) if event == ("compact",)]
        problems = [] if compactions else ["no compaction happened"]
        for number, at in enumerate(compactions):
            renames = [i for i in range(at) if events[i][0] == "rename"]
            if not renames or events[renames[-1]][1:] != (f"{snapshot}.writing", snapshot):
                problems.append(f"compaction {number}: no snapshot was renamed in before it")
                continue
            rename = renames[-1]
            since = max((i for i in range(rename) if events[i][0] != "fsync"), default=-1)
            if ("fsync", f"{snapshot}.writing") not in events[since + 1 : rename]:
                problems.append(f"compaction {number}: snapshot file not fsync'd before its rename")
            if ("fsync", directory) not in events[rename + 1 : at]:
                problems.append(f"compaction {number}: directory not fsync'd after the rename")
        return problems


def run(data_dir: Path, events: DiskEvents) -> list[str]:
    """Append APPENDS messages, restart; return the acknowledged appends that were lost."""

    async def scenario() -> list[str]:
        store = ReplicatedStore(str(data_dir), log_compaction_entries=COMPACTION_ENTRIES)
        acknowledged: dict[int, str] = {}
        try:
            await store.wait_ready()
            await store.submit(manual_context("snapfail"))
            for n in range(APPENDS):
                result = await store.submit(append_command("snapfail", f"m{n:04d}"))
                acknowledged[result.messages[0].seq] = f"m{n:04d}"
        finally:
            store.close()
        assert events.renames >= 2

        store = ReplicatedStore(str(data_dir), log_compaction_entries=COMPACTION_ENTRIES)
        try:
            await store.wait_ready()
            with store.read() as machine:
                log = {m.seq: m.id for m in machine.get("snapfail").log}
        finally:
            store.close()
        return [f"seq {s} ({i})" for s, i in sorted(acknowledged.items()) if log.get(s) != i]

    return asyncio.run(scenario())


def test_snapshot_is_durable_before_the_journal_is_compacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = DiskEvents(monkeypatch, tmp_path / "events.log", fail_rename=None)
    assert run(tmp_path / "data", events) == []
    assert events.events.count(("compact",)) >= 2
    assert events.ordering_problems(tmp_path / "data") == []


@pytest.mark.parametrize("fix", ["no-snapshot-file-fsync", "no-snapshot-dir-fsync"])
def test_ordering_check_catches_a_missing_snapshot_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fix: str
) -> None:
    mutations.apply_with(monkeypatch, fix)
    events = DiskEvents(monkeypatch, tmp_path / "events.log", fail_rename=None)
    run(tmp_path / "data", events)
    assert events.ordering_problems(tmp_path / "data") != []


def test_failed_snapshot_rename_does_not_lose_acknowledged_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = DiskEvents(monkeypatch, tmp_path / "events.log", fail_rename=2)
    lost = run(tmp_path / "data", events)
    assert lost == [], f"{len(lost)} acknowledged appends lost: {lost[:5]} ..."
    assert ("failed rename",) in [event[:1] for event in events.events]
