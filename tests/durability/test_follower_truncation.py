"""A follower deletes log entries only from the first conflict (Raft §5.3).

pysyncobj, given entries after ``prevLogIdx``, deletes everything after it
and re-adds what the leader sent. When the leader sent fewer entries than
the follower holds (a resend from an older ``nextIndex``), entries the
follower already acknowledged are gone, and if it then wins an election
they are lost for good. ``_RaftNode`` replaces that step: the follower's
log goes through the same calls pysyncobj makes (its
``__deleteEntriesFrom``, then ``add`` for each entry sent) and keeps what
matches. With the fix switched off, the same calls lose the entries.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastpaca_server.replication.journal import DurableJournal
from fastpaca_server.replication.node import _RaftNode

from tests.durability import mutations

HELD = [(f"entry {n}".encode(), n, 1) for n in range(1, 11)]


def _resend(tmp_path: Path, prev_index: int, sent: list[Any]) -> list[Any]:
    """A follower holding 1-10 given ``sent`` after ``prev_index``, as pysyncobj
    handles append_entries; its log afterwards, reopened from disk."""
    path = str(tmp_path / "journal")
    journal = DurableJournal(path)
    for entry in HELD:
        journal.add(*entry)
    journal.flush()
    follower = SimpleNamespace(_SyncObj__raftLog=journal)
    _RaftNode._SyncObj__deleteEntriesFrom(follower, prev_index + 1)  # type: ignore[attr-defined]
    for entry in sent:
        journal.add(*entry)
    journal.flush()
    journal._destroy()
    reopened = DurableJournal(path)
    try:
        entries: list[Any] = reopened[:]
        return entries
    finally:
        reopened._destroy()


def test_a_resend_of_fewer_entries_than_held_keeps_the_rest(tmp_path: Path) -> None:
    assert _resend(tmp_path, 5, [HELD[5]]) == HELD


def test_a_heartbeat_with_an_older_previous_index_keeps_everything(tmp_path: Path) -> None:
    assert _resend(tmp_path, 3, []) == HELD


def test_a_conflicting_entry_replaces_the_tail(tmp_path: Path) -> None:
    new = [HELD[5], (b"other 7", 7, 2), (b"other 8", 8, 2)]
    assert _resend(tmp_path, 5, new) == [*HELD[:6], *new[1:]]


def test_without_the_fix_acknowledged_entries_are_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mutations.apply_with(monkeypatch, "no-conflict-truncation")
    assert _resend(tmp_path, 5, [HELD[5]]) == HELD[:6]  # 7-10, acknowledged, are gone
