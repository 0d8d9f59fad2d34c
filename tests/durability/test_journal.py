"""DurableJournal on its own: records, torn tails, atomic compaction, meta, flushing.

No processes: a "crash" is simulated by copying what the operating system holds
for the journal file at a chosen moment (what survives kill -9; Python's write
buffer does not) and raising before the operation runs. Every behaviour that is
a durability fix also has a test that switches the fix off (tests.durability.
mutations) and shows that the same check then fails.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastpaca_server.replication import journal as journal_module
from fastpaca_server.replication.journal import (
    MAGIC,
    DurableJournal,
    Entry,
    JournalCorrupted,
    _encode,
    read_entries,
    repair_journal_file,
    scan_journal,
)

from tests.durability import mutations


def make_entries(count: int, *, first: int = 1, term: int = 1) -> list[Entry]:
    """Entries with varied payloads: empty, binary, large, non-ASCII."""
    entries: list[Entry] = []
    for index in range(first, first + count):
        if index % 7 == 0:
            payload = b""
        elif index % 5 == 0:
            payload = bytes(range(256)) * 40  # 10 KB, larger than Python's write buffer
        else:
            payload = f"command {index} — ünïcode".encode()
        entries.append((payload, index, term))
    return entries


def open_journal(path: Path, entries: list[Entry]) -> DurableJournal:
    journal = DurableJournal(str(path))
    for entry in entries:
        journal.add(*entry)
    journal.flush()
    return journal


def entries_of(journal: DurableJournal) -> list[Entry]:
    return [journal[i] for i in range(len(journal))]


def reopened(path: Path) -> list[Entry]:
    """What a restarted process reads (the open journal object is not touched)."""
    return entries_of(DurableJournal(str(path)))


# --- round trip ----------------------------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    entries = make_entries(40)
    journal = open_journal(path, entries)
    assert entries_of(journal) == entries
    assert journal[1:3] == entries[1:3]
    assert journal[-1] == entries[-1]

    assert reopened(path) == entries  # without a clean shutdown

    again = DurableJournal(str(path))
    more = make_entries(5, first=41, term=2)
    for entry in more:
        again.add(*entry)
    again._destroy()
    assert reopened(path) == entries + more


def test_new_journal_is_empty_and_durable(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    journal = DurableJournal(str(path))
    assert len(journal) == 0
    assert path.read_bytes() == MAGIC
    assert journal.getCurrentTerm() == 0
    assert journal.getVotedForNodeId() is None
    assert journal.getRaftCommitIndex() == 1


# --- torn tail -----------------------------------------------------------------


def _cut(cut_bytes: int) -> Callable[[Path, int], None]:
    def damage(path: Path, last_offset: int) -> None:
        size = path.stat().st_size
        os.truncate(path, size - cut_bytes)

    return damage


def _cut_inside_header(path: Path, last_offset: int) -> None:
    os.truncate(path, last_offset + 7)


def _flip_payload_byte(path: Path, last_offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))


def _flip_crc_byte(path: Path, last_offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[last_offset + 4] ^= 0x01
    path.write_bytes(bytes(data))


def _huge_length(path: Path, last_offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[last_offset : last_offset + 4] = (2**31).to_bytes(4, "little")
    path.write_bytes(bytes(data))


def _append(garbage: bytes) -> Callable[[Path, int], None]:
    def damage(path: Path, last_offset: int) -> None:
        path.write_bytes(path.read_bytes() + garbage)

    return damage


DAMAGES: dict[str, tuple[Callable[[Path, int], None], bool]] = {
    # name: (damage to the file, whether the last record survives)
    "cut-one-byte": (_cut(1), False),
    "cut-mid-payload": (_cut(9), False),
    "cut-inside-header": (_cut_inside_header, False),
    "flipped-payload-byte": (_flip_payload_byte, False),
    "flipped-crc": (_flip_crc_byte, False),
    "huge-length": (_huge_length, False),
    "zeros-after-last": (_append(b"\0" * 30), True),
    "half-header-after-last": (_append(b"\x05\0\0"), True),
}


def check_torn_tail(tmp_path: Path, damage_name: str) -> None:
    path = tmp_path / "raft.journal"
    entries = make_entries(12)
    journal = open_journal(path, entries)
    last_offset = journal._offsets[-1]
    journal._destroy()
    damage, last_survives = DAMAGES[damage_name]
    damage(path, last_offset)
    valid = entries if last_survives else entries[:-1]

    loaded = DurableJournal(str(path))
    assert entries_of(loaded) == valid
    more = make_entries(6, first=len(valid) + 1, term=3)
    for entry in more:
        loaded.add(*entry)
    loaded.flush()
    assert reopened(path) == valid + more, "entries appended after a torn tail were lost"
    again = DurableJournal(str(path))
    again.add(b"one more", len(valid) + 7, 3)
    again.flush()
    assert reopened(path) == [*valid, *more, (b"one more", len(valid) + 7, 3)]


@pytest.mark.parametrize("damage_name", sorted(DAMAGES))
def test_torn_tail_keeps_valid_prefix_and_appends_work(tmp_path: Path, damage_name: str) -> None:
    check_torn_tail(tmp_path, damage_name)


@pytest.mark.parametrize("damage_name", ["cut-mid-payload", "flipped-payload-byte"])
def test_without_tail_repair_entries_after_a_torn_tail_are_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage_name: str
) -> None:
    mutations.apply_with(monkeypatch, "no-torn-tail-repair")
    # The torn record is no longer last once entries follow it: the next load
    # refuses the journal instead of silently dropping those entries.
    with pytest.raises(JournalCorrupted, match="not a torn last write"):
        check_torn_tail(tmp_path, damage_name)


# --- corruption: damage with valid records after it ------------------------------------


def _flip_byte_at(position: Callable[[int, int], int]) -> Callable[[bytearray, int, int], None]:
    def damage(data: bytearray, offset: int, size: int) -> None:
        data[position(offset, size)] ^= 0x01

    return damage


def _zero_block(data: bytearray, offset: int, size: int) -> None:
    # A lost write-back: 4 KiB of zeros from inside this record over several more.
    data[offset + 5 : offset + 5 + 4096] = bytes(4096)


MIDDLE_DAMAGES: dict[str, Callable[[bytearray, int, int], None]] = {
    "payload-byte": _flip_byte_at(lambda offset, size: offset + size - 3),
    "crc-byte": _flip_byte_at(lambda offset, size: offset + 4),
    "length-byte": _flip_byte_at(lambda offset, size: offset + 1),
    "index-byte": _flip_byte_at(lambda offset, size: offset + 8),
    "zeroed-block": _zero_block,
}


@pytest.mark.parametrize("damage_name", sorted(MIDDLE_DAMAGES))
@pytest.mark.parametrize("where", [0, 9, 20])
def test_damage_before_valid_records_is_corruption(
    tmp_path: Path, damage_name: str, where: int
) -> None:
    path = tmp_path / "raft.journal"
    entries = make_entries(40)
    journal = open_journal(path, entries)
    offsets = list(journal._offsets)
    journal._destroy()
    data = bytearray(path.read_bytes())
    size = offsets[where + 1] - offsets[where]
    MIDDLE_DAMAGES[damage_name](data, offsets[where], size)
    path.write_bytes(bytes(data))

    with pytest.raises(JournalCorrupted) as raised:
        DurableJournal(str(path))
    assert raised.value.path == str(path)
    assert raised.value.offset == offsets[where]
    assert f"{path} is corrupted at byte {offsets[where]}" in str(raised.value)
    assert path.read_bytes() == bytes(data), "a refused load changed the file"


def test_corruption_of_the_first_record_after_compaction_is_found(tmp_path: Path) -> None:
    # No good record before the damage tells the index to expect after it.
    path = tmp_path / "raft.journal"
    journal = open_journal(path, make_entries(30, first=1_000_000, term=9))
    journal._destroy()
    data = bytearray(path.read_bytes())
    data[len(MAGIC) + 2] ^= 0x40  # the first record's length
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupted) as raised:
        read_entries(str(path))
    assert raised.value.offset == len(MAGIC)


def test_a_file_that_is_not_a_journal_is_corruption(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    path.write_bytes(b"something else entirely")
    with pytest.raises(JournalCorrupted, match="byte 0"):
        DurableJournal(str(path))


@pytest.mark.parametrize("filler", ["command", "text", "zeros", "random", "far-away-records"])
def test_scanning_a_multi_megabyte_torn_record_is_cheap(
    monkeypatch: pytest.MonkeyPatch, filler: str
) -> None:
    """Looking for valid records after a torn one costs no CRC per byte of it."""
    entries = make_entries(50)
    text = "lorem ipsum dolor sit amet, ünïcode ✓ " * 200_000
    body = {
        # what a journal entry holds: a pickled call with canonical JSON
        "command": b"\x01" + pickle.dumps((0, (json.dumps({"text": text}),))),
        "text": text.encode(),
        "zeros": bytes(8_000_000),
        "random": os.urandom(8_000_000),
        # valid records, but of indexes that cannot follow entry 50 at their place
        "far-away-records": b"".join(_encode(e) for e in make_entries(900, first=10**6)),
    }[filler]
    torn = _encode((body, 51, 1))[:-1]
    data = MAGIC + b"".join(_encode(entry) for entry in entries) + torn
    crcs: list[int] = []
    real_crc32 = journal_module.zlib.crc32

    def counting_crc32(data: bytes, value: int = 0) -> int:
        crcs.append(len(data))
        return real_crc32(data, value)

    monkeypatch.setattr(journal_module.zlib, "crc32", counting_crc32)
    scan = scan_journal(data)
    assert scan.torn and scan.entries == entries
    after_damage = crcs[len(entries) :]  # the torn record's own check, then the scan
    assert len(after_damage) <= 3, f"{len(after_damage)} CRCs for one torn record"


# --- --repair-journal -------------------------------------------------------------------


def test_repair_keeps_an_identical_copy_then_truncates_at_the_damage(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    entries = make_entries(30)
    journal = open_journal(path, entries)
    journal.setRaftCommitIndex(30)
    offset = journal._offsets[12]
    journal._destroy()
    data = bytearray(path.read_bytes())
    data[offset + 30] ^= 0x01
    path.write_bytes(bytes(data))

    repair = repair_journal_file(str(path))
    assert repair is not None
    assert (repair.offset, repair.dropped_bytes) == (offset, len(data) - offset)
    copies = list(tmp_path.glob("raft.journal.corrupt-*"))
    assert [str(copy) for copy in copies] == [repair.quarantine]
    assert copies[0].read_bytes() == bytes(data)
    assert path.read_bytes() == bytes(data[:offset])
    repaired = DurableJournal(str(path))
    assert entries_of(repaired) == entries[:12]
    # the stored commit index (30) pointed into what was cut
    assert repaired.getRaftCommitIndex() == 12

    assert repair_journal_file(str(path)) is None, "an intact journal needs no repair"
    assert len(list(tmp_path.glob("raft.journal.corrupt-*"))) == 1


def test_repair_leaves_a_torn_tail_to_the_normal_load(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    open_journal(path, make_entries(10))._destroy()
    os.truncate(path, path.stat().st_size - 4)
    assert repair_journal_file(str(path)) is None
    assert not list(tmp_path.glob("*.corrupt-*"))
    assert entries_of(DurableJournal(str(path))) == make_entries(9)


# --- atomic compaction (deleteEntriesTo) -----------------------------------------


class SimulatedCrash(Exception):
    """The process 'died' just before a disk operation."""


class CrashInjector:
    """Counts the journal's disk operations; at number ``crash_at`` it crashes.

    Counted: writes, flushes and truncations of files the journal module opens,
    ``os.fsync``, ``os.fdatasync`` and ``os.replace``. At the crash point the
    journal file is copied as the OS holds it (kill -9 keeps the page cache and
    loses Python's buffers), then :class:`SimulatedCrash` is raised.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.journal_path = Path()
        self.crash_at: int | None = None
        self.count = 0
        self.on_disk: bytes | None = None
        self.operations: list[str] = []
        real_open = open
        injector = self

        class File:
            def __init__(self, handle: Any) -> None:
                self._handle = handle

            def write(self, data: bytes) -> int:
                injector.step("write")
                return int(self._handle.write(data))

            def flush(self) -> None:
                injector.step("flush")
                self._handle.flush()

            def truncate(self, size: int | None = None) -> int:
                injector.step("truncate")
                return int(self._handle.truncate(size))

            def __enter__(self) -> File:
                return self

            def __exit__(self, *exc: object) -> None:
                self._handle.close()

            def __getattr__(self, name: str) -> Any:
                return getattr(self._handle, name)

        def fake_open(path: str, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            handle = real_open(path, mode, *args, **kwargs)
            return File(handle) if any(flag in mode for flag in "wa+") else handle

        def counted(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
            def call(*args: Any) -> Any:
                self.step(name)
                return real(*args)

            return call

        monkeypatch.setattr(journal_module, "open", fake_open, raising=False)
        for name in ("fsync", "fdatasync", "replace"):
            monkeypatch.setattr(os, name, counted(name, getattr(os, name)))

    def arm(self, journal_path: Path, crash_at: int) -> None:
        self.journal_path = journal_path
        self.crash_at, self.count, self.on_disk, self.operations = crash_at, 0, None, []

    def step(self, name: str) -> None:
        if self.crash_at is None:
            return
        self.count += 1
        self.operations.append(name)
        if self.count == self.crash_at:
            self.on_disk = self.journal_path.read_bytes()
            self.crash_at = None
            raise SimulatedCrash(name)


def entries_after_crash(tmp_path: Path, on_disk: bytes) -> list[Entry]:
    restart = tmp_path / "restart"
    shutil.rmtree(restart, ignore_errors=True)
    restart.mkdir()
    (restart / "raft.journal").write_bytes(on_disk)
    return reopened(restart / "raft.journal")


def compaction_crash_outcomes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Crash deleteEntriesTo before each of its disk operations in turn.

    Yields, per crash point, "old" or "new" (the journal a restart reads), and
    fails if a restart would read anything else.
    """
    entries = make_entries(30)
    kept_from = 17
    injector = CrashInjector(monkeypatch)
    for crash_at in range(1, 200):
        directory = tmp_path / f"crash-{crash_at}"
        directory.mkdir()
        path = directory / "raft.journal"
        journal = open_journal(path, entries[:-3])
        for entry in entries[-3:]:
            journal.add(*entry)  # not flushed yet: still in Python's buffer
        injector.arm(path, crash_at)
        try:
            journal.deleteEntriesTo(kept_from)
        except SimulatedCrash:
            assert injector.on_disk is not None
            after = entries_after_crash(directory, injector.on_disk)
            # unflushed entries may be lost by a crash, but nothing that was flushed
            assert after in (entries[:-3], entries, entries[kept_from:]), (
                f"crash before operation {crash_at} ({injector.operations}) "
                f"left {len(after)} entries: neither the old nor the new journal"
            )
            yield "new" if after == entries[kept_from:] else "old"
            continue
        injector.crash_at = None  # it finished: no crash point left
        assert entries_of(journal) == entries[kept_from:]
        assert reopened(path) == entries[kept_from:]
        return
    raise AssertionError("deleteEntriesTo never finished")


def test_delete_entries_to_is_atomic_at_every_crash_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcomes = list(compaction_crash_outcomes(tmp_path, monkeypatch))
    assert "old" in outcomes and "new" in outcomes, outcomes
    # once the new file is renamed in, every later crash keeps the new journal
    assert outcomes == sorted(outcomes, key=lambda outcome: outcome == "new")


def test_without_atomic_compaction_a_crash_loses_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mutations.apply_with(monkeypatch, "no-atomic-compaction")
    with pytest.raises(AssertionError, match="neither the old nor the new journal"):
        list(compaction_crash_outcomes(tmp_path, monkeypatch))


def test_delete_entries_to_leaves_old_file_until_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "raft.journal"
    entries = make_entries(20)
    journal = open_journal(path, entries)
    seen: list[tuple[list[Entry], list[Entry]]] = []

    def failing_replace(source: str, target: str) -> None:
        seen.append((read_entries(target)[0], read_entries(source)[0]))
        raise OSError(28, "No space left on device (injected)")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="injected"):
        journal.deleteEntriesTo(12)
    monkeypatch.undo()
    assert seen == [(entries, entries[12:])]  # old file intact, new one complete and synced
    assert reopened(path) == entries


def test_delete_entries_to_then_append_and_truncate(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    entries = make_entries(25)
    journal = open_journal(path, entries)
    journal.deleteEntriesTo(10)
    assert entries_of(journal) == entries[10:]
    assert reopened(path) == entries[10:]
    more = make_entries(5, first=26, term=2)
    for entry in more:
        journal.add(*entry)
    journal.flush()
    assert reopened(path) == entries[10:] + more
    journal.deleteEntriesFrom(len(journal) - 2)  # offsets are right after a rewrite
    assert reopened(path) == entries[10:] + more[:-2]
    journal.deleteEntriesTo(0)
    assert reopened(path) == entries[10:] + more[:-2]
    journal.clear()
    assert len(journal) == 0
    assert reopened(path) == []


# --- deleteEntriesFrom --------------------------------------------------------------


def test_delete_entries_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "raft.journal"
    entries = make_entries(10)
    journal = open_journal(path, entries[:8])
    for entry in entries[8:]:
        journal.add(*entry)  # two unflushed entries

    journal.deleteEntriesFrom(10)  # nothing to delete
    journal.deleteEntriesFrom(25)
    assert entries_of(journal) == entries

    synced: list[int] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    journal.deleteEntriesFrom(6)
    assert entries_of(journal) == entries[:6]
    assert synced == [journal._handle.fileno()]  # the truncation is durable before returning
    assert reopened(path) == entries[:6]

    replacement = make_entries(4, first=7, term=2)
    for entry in replacement:
        journal.add(*entry)
    journal.flush()
    assert reopened(path) == entries[:6] + replacement
    assert os.path.getsize(path) == journal._end

    journal.deleteEntriesFrom(0)
    assert len(journal) == 0
    assert reopened(path) == []
    journal.add(b"fresh", 1, 5)
    journal.flush()
    assert reopened(path) == [(b"fresh", 1, 5)]


# --- meta: term, vote, commit index ----------------------------------------------------


def check_term_and_vote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "raft.journal"
    journal = DurableJournal(str(path))
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", recording_fsync)
        journal.setCurrentTerm(7, "node-b")
    # the new file, then the directory holding the rename, before returning
    assert synced == [os.path.realpath(f"{path}.meta.tmp"), os.path.realpath(tmp_path)], (
        "term and vote were not made durable"
    )

    restarted = DurableJournal(str(path))  # no clean shutdown of ``journal``
    assert restarted.getCurrentTerm() == 7
    assert restarted.getVotedForNodeId() == "node-b"

    restarted.setCurrentTerm(8, None)
    assert DurableJournal(str(path)).getCurrentTerm() == 8
    assert DurableJournal(str(path)).getVotedForNodeId() is None


def test_term_and_vote_are_durable_before_returning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_term_and_vote(tmp_path, monkeypatch)


def test_without_meta_fsync_the_term_check_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mutations.apply_with(monkeypatch, "no-meta-fsync")
    with pytest.raises(AssertionError, match="not made durable"):
        check_term_and_vote(tmp_path, monkeypatch)


def test_commit_index_is_stored(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    journal = open_journal(path, make_entries(5))
    journal.setRaftCommitIndex(4)
    assert journal.getRaftCommitIndex() == 4
    journal.onOneSecondTimer()
    assert DurableJournal(str(path)).getRaftCommitIndex() == 4
    journal.setRaftCommitIndex(5)
    journal._destroy()
    assert DurableJournal(str(path)).getRaftCommitIndex() == 5


# --- flush / setRaftCommitIndex ----------------------------------------------------------


def check_flushing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "raft.journal"
    journal = DurableJournal(str(path))
    calls: list[dict[str, int]] = []
    real_fdatasync = os.fdatasync

    def recording_fdatasync(fd: int) -> None:
        calls.append(
            {
                "bytes_in_file": os.fstat(fd).st_size,
                "journal_end": journal._end,
                "commit_index": journal.getRaftCommitIndex(),
            }
        )
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", recording_fdatasync)

    journal.flush()
    assert calls == [], "flush() synced a clean journal"
    journal.add(b"a", 1, 1)
    journal.flush()
    assert len(calls) == 1
    journal.flush()
    assert len(calls) == 1, "flush() synced a clean journal"
    for index in (2, 3, 4):
        journal.add(b"b" * 100, index, 1)
    journal.flush()
    assert len(calls) == 2, "one fdatasync covers every entry added since the last one"

    journal.setRaftCommitIndex(4)
    assert len(calls) == 2, "setRaftCommitIndex synced a clean journal"

    journal.add(b"c" * 3000, 5, 1)
    journal.setRaftCommitIndex(5)
    assert len(calls) == 3, "setRaftCommitIndex did not flush new entries"
    assert calls[-1]["commit_index"] == 4, "the commit index moved before the flush"
    assert journal.getRaftCommitIndex() == 5
    for call in calls:
        assert call["bytes_in_file"] == call["journal_end"], (
            "fdatasync ran while records were still in Python's buffer"
        )
    assert journal.flush_count == 3


def test_flush_syncs_only_when_dirty_and_commit_index_flushes_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_flushing(tmp_path, monkeypatch)


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        ("no-flush-before-ack", "setRaftCommitIndex did not flush"),
        ("no-buffer-flush", "still in Python's buffer"),
    ],
)
def test_flushing_checks_catch_a_missing_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mutation: str, message: str
) -> None:
    mutations.apply_with(monkeypatch, mutation)
    with pytest.raises(AssertionError, match=message):
        check_flushing(tmp_path, monkeypatch)


def test_payloads_of_older_entries_are_read_back_from_the_file(tmp_path: Path) -> None:
    """Memory holds the newest payloads only; older ones come from the file, unchanged."""
    path = str(tmp_path / "journal")
    journal = DurableJournal(path)
    total = journal_module.RECENT_PAYLOADS + 500
    entries = [(f"payload {n} ".encode() * (n % 7 + 1), n + 1, 1 + n // 1000) for n in range(total)]
    for entry in entries[:-3]:
        journal.add(*entry)
    journal.flush()
    for entry in entries[-3:]:  # the newest ones only in Python's write buffer
        journal.add(*entry)
    assert len(journal._recent) == journal_module.RECENT_PAYLOADS
    assert journal[0] == entries[0] and journal[-1] == entries[-1]
    assert journal[:] == entries
    assert journal[total - 5 : total + 3] == entries[-5:]
    journal.deleteEntriesTo(100)
    assert journal[:] == entries[100:]
    assert len(journal._recent) <= journal_module.RECENT_PAYLOADS
    journal.deleteEntriesFrom(len(journal) - 10)
    assert journal[:] == entries[100:-10]
    journal._destroy()
    reopened = DurableJournal(path)
    assert reopened[:] == entries[100:-10]
    reopened._destroy()


def test_payloads_in_memory_are_bounded_in_bytes(tmp_path: Path) -> None:
    """Large entries (groups of big appends) are bounded by bytes, not only by count."""
    path = str(tmp_path / "journal")
    journal = DurableJournal(path)
    size = 300_000
    entries = [(bytes([n % 251]) * size, n + 1, 1) for n in range(60)]
    for entry in entries:
        journal.add(*entry)
    kept = sum(len(payload) for payload in journal._recent.values())
    assert kept <= journal_module.RECENT_PAYLOAD_BYTES
    assert kept == journal._recent_bytes
    assert 1 <= len(journal._recent) < len(entries)
    assert journal[:] == entries  # the rest is read back from the file
    big = (b"x" * (journal_module.RECENT_PAYLOAD_BYTES + 1), 61, 1)
    journal.add(*big)  # the newest entry stays in memory even when it alone is over
    assert list(journal._recent) == [61] and journal[-1] == big
    journal.deleteEntriesFrom(len(journal) - 1)
    assert journal._recent_bytes == 0 and journal[:] == entries
    journal._destroy()


def test_a_follower_keeps_entries_it_already_holds(tmp_path: Path) -> None:
    """Raft §5.3: a follower given entries it holds keeps them, and what follows them;
    it deletes only from the first entry whose term conflicts."""
    path = str(tmp_path / "journal")
    journal = DurableJournal(path)
    held = [(f"e{n}".encode(), n, 1) for n in range(1, 8)]
    for entry in held:
        journal.add(*entry)
    journal.flush()
    # The leader resends 3 and 4 after prevLogIdx 2: nothing changes, 5-7 stay.
    journal.truncate_on_conflict_from(2)
    journal.add(*held[2])
    journal.add(*held[3])
    assert journal[:] == held
    # A heartbeat with an older prevLogIdx and no entries deletes nothing either.
    journal.truncate_on_conflict_from(4)
    assert journal[:] == held
    # This node becomes leader and appends: the armed check must not delete 5-7.
    journal.add(b"mine", 8, 2)
    assert journal[:] == [*held, (b"mine", 8, 2)]
    # A real conflict at 6: 6 and everything after it go, the leader's entries follow.
    journal.truncate_on_conflict_from(4)
    journal.add(*held[4])
    journal.add(b"new 6", 6, 3)
    journal.add(b"new 7", 7, 3)
    expected = [*held[:5], (b"new 6", 6, 3), (b"new 7", 7, 3)]
    assert journal[:] == expected
    journal._destroy()
    assert DurableJournal(path)[:] == expected
