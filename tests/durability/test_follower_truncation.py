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

import functools
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
    follower = SimpleNamespace(
        _SyncObj__raftLog=journal, _SyncObj__conf=SimpleNamespace(dynamicMembershipChange=False)
    )
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


def _membership_follower(tmp_path: Path) -> tuple[DurableJournal, SimpleNamespace, list[Any]]:
    """A follower with dynamic membership whose entry 7 adds a member; the changes
    it applies (and undoes) are recorded."""
    journal = DurableJournal(str(tmp_path / "journal"))
    for payload, index, term in HELD:
        journal.add(b"M:add n9" if index == 7 else payload, index, term)
    changes: list[Any] = []
    follower = SimpleNamespace(
        _SyncObj__raftLog=journal,
        _SyncObj__conf=SimpleNamespace(dynamicMembershipChange=True),
        _SyncObj__parseChangeClusterRequest=lambda command: (
            command.decode()[2:] if command.startswith(b"M:") else None
        ),
        _SyncObj__doChangeCluster=lambda request, reverse=False: changes.append((request, reverse)),
    )
    follower._change_membership = functools.partial(_RaftNode._change_membership, follower)
    follower._undo_membership = functools.partial(_RaftNode._undo_membership, follower)
    return journal, follower, changes


def test_kept_entries_keep_their_membership_changes(tmp_path: Path) -> None:
    """pysyncobj undoes the changes of every entry after prevLogIdx before it
    truncates; the entries that stay get theirs back, and only a real conflict
    undoes them."""
    journal, follower, changes = _membership_follower(tmp_path)
    _RaftNode._SyncObj__deleteEntriesFrom(follower, 6)  # type: ignore[attr-defined]
    journal.add(*HELD[5])  # entry 6 again: nothing conflicts
    assert changes == [("add n9", False)]  # 7 stays: its change is applied again
    assert len(journal) == 10
    changes.clear()
    _RaftNode._SyncObj__deleteEntriesFrom(follower, 6)  # type: ignore[attr-defined]
    journal.add(*HELD[5])
    journal.add(b"other 7", 7, 2)  # a conflict at 7: 7-10 go, and so does their change
    assert changes == [("add n9", False), ("add n9", True)]
    assert [entry[1] for entry in journal[:]] == [1, 2, 3, 4, 5, 6, 7]
    journal._destroy()
