"""The cluster transport flushes the journal before any Raft message leaves.

A follower's acknowledgement, a vote and the entries a leader replicates all
vouch for journal entries; sent before those entries reach the disk, a crash
of the sender could take back what another node already counted on. The
kill -9 window for that is microseconds wide, too narrow for a process test
to hit reliably, so this checks the order directly: at the moment
pysyncobj's own ``TCPTransport.send`` is called, the journal holds nothing
unflushed, and with the fix switched off it still does.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastpaca_server.replication.cluster import DurableTCPTransport
from fastpaca_server.replication.journal import DurableJournal
from pysyncobj.transport import TCPTransport

from tests.durability import mutations


def _send_with_unflushed_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    journal = DurableJournal(str(tmp_path / "journal"))
    journal.add(b"entry", 1, 1)  # in Python's buffer, not yet fsync'd
    seen: list[Any] = []

    def library_send(self: Any, node: Any, message: Any) -> bool:
        seen.append((journal._dirty, journal._buffered, message))
        return True

    monkeypatch.setattr(TCPTransport, "send", library_send)
    transport = DurableTCPTransport.__new__(DurableTCPTransport)
    transport._syncObj = SimpleNamespace(_SyncObj__raftLog=journal)
    assert transport.send("node", {"type": "next_node_idx", "success": True}) is True
    journal._destroy()
    return seen


def test_the_journal_is_flushed_before_a_message_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _send_with_unflushed_entries(tmp_path, monkeypatch)
    assert seen == [(False, False, {"type": "next_node_idx", "success": True})]


def test_without_the_fix_the_message_leaves_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mutations.apply_with(monkeypatch, "no-transport-flush")
    seen = _send_with_unflushed_entries(tmp_path, monkeypatch)
    assert seen[0][:2] == (True, True)
