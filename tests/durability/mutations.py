"""Ways to switch off one durability fix, to prove that a test notices.

:data:`MUTATIONS` maps ``no-<fix>`` to the patches that undo that fix, plus
``slow-compaction``, which undoes nothing: it only pauses (and says so on
stdout) where a kill -9 is interesting, and ``slow-preview``, a preview that
keeps its worker thread busy for 30 s. Each entry is a list of
``(owner, attribute, replacement)`` patches; a
replacement of :data:`DELETE` removes the attribute (so an inherited
implementation, e.g. pysyncobj's own, takes over again). Tests apply them with
``monkeypatch``; subprocess scripts and :mod:`variant_server` with
:func:`apply`, for the life of that process only. Nothing here edits a file.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from fastpaca_server.api import routes as routes_module
from fastpaca_server.replication import snapshot as snapshot_module
from fastpaca_server.replication.cluster import DurableTCPTransport
from fastpaca_server.replication.journal import (
    MAGIC,
    DurableJournal,
    Entry,
    _encode,
    read_entries,
    write_file_durably,
)
from fastpaca_server.replication.node import _RaftNode

DELETE = object()

PAUSE_MARK = "DURABILITY-TEST: compaction paused"

Patch = tuple[Any, str, Any]


def _set_raft_commit_index_without_flush(self: DurableJournal, raftCommitIndex: int) -> None:
    self._meta["raftCommitIndex"] = raftCommitIndex
    self._meta_dirty = True


def _flush_without_buffer_flush(self: DurableJournal) -> None:
    # fdatasync the descriptor but leave the records in Python's write buffer.
    if self._dirty:
        os.fdatasync(self._handle.fileno())
        self._dirty = False
        self.flush_count += 1


def _init_appending_after_torn_tail(self: DurableJournal, path: str) -> None:
    # Load the valid prefix but keep writing at the physical end of the file,
    # after the torn record, as a journal without tail repair would.
    self._path = path
    self._meta_path = f"{path}.meta"
    if not os.path.exists(path):
        write_file_durably(path, MAGIC)
    entries, offsets, _ = read_entries(path)
    self._handle = open(path, "r+b")  # noqa: SIM115
    self._reset(entries, offsets, self._handle.seek(0, os.SEEK_END))
    self._dirty = False
    self._buffered = False
    self.flush_count = 0
    self._meta = self._read_meta()
    self._meta_dirty = False


def _rewrite_in_place(self: DurableJournal, entries: list[Entry]) -> None:
    # pysyncobj's FileJournal way: empty the file, then write the kept entries back.
    self._handle.flush()
    self._handle.seek(len(MAGIC))
    self._handle.truncate()
    self._handle.flush()
    pause = float(os.environ.get("DURABILITY_TEST_REWRITE_PAUSE", "0"))
    if pause:
        print(PAUSE_MARK, flush=True)
        time.sleep(pause)  # the journal is empty now: a kill -9 here loses it
    offsets = []
    end = len(MAGIC)
    for entry in entries:
        record = _encode(entry)
        self._handle.write(record)
        offsets.append(end)
        end += len(record)
    self._reset(list(entries), offsets, end)
    self._handle.flush()
    os.fsync(self._handle.fileno())
    self._dirty = False
    self._buffered = False


def _store_meta_without_fsync(self: DurableJournal) -> None:
    # pysyncobj's way: temp file + rename, no fsync of the file or the directory.
    tmp = f"{self._meta_path}.tmp"
    with open(tmp, "w") as handle:
        json.dump(self._meta, handle)
    os.replace(tmp, self._meta_path)
    self._meta_dirty = False


def _write_file_without_fsync(path: str, chunks: list[bytes]) -> None:
    # snapshot.write_file with the file's fsync left out (the child of the fork uses it).
    with open(path, "wb") as handle:
        for chunk in chunks:
            handle.write(chunk)


_real_delete_entries_to = DurableJournal.deleteEntriesTo
_real_preview = routes_module.preview


def _slow_delete_entries_to(self: DurableJournal, entryTo: int) -> None:
    # Not a fix switched off: a pause at the start of every compaction (the
    # snapshot is on disk, the journal not yet compacted), announced on stdout,
    # so that a test can kill -9 the process exactly inside that window.
    print(PAUSE_MARK, flush=True)
    time.sleep(float(os.environ.get("DURABILITY_TEST_COMPACTION_PAUSE", "0.5")))
    _real_delete_entries_to(self, entryTo)


SLOW_PREVIEW_SECONDS = 30.0
SLOW_FSYNC_SECONDS = 0.1
_real_fsync, _real_fdatasync = os.fsync, os.fdatasync


def _slow_fsync(fd: int) -> None:
    # Not a fix switched off: a disk whose every fsync takes 100 ms.
    time.sleep(SLOW_FSYNC_SECONDS)
    _real_fsync(fd)


def _slow_fdatasync(fd: int) -> None:
    time.sleep(SLOW_FSYNC_SECONDS)
    _real_fdatasync(fd)


def _slow_preview(*args: Any, **kwargs: Any) -> Any:
    # Not a fix switched off: a preview whose worker thread is busy far longer
    # than any shutdown grace, to show that a stop does not wait for it.
    time.sleep(SLOW_PREVIEW_SECONDS)
    return _real_preview(*args, **kwargs)


MUTATIONS: dict[str, Callable[[], list[Patch]]] = {
    # gap 1: entries are acknowledged without being flushed first
    "no-flush-before-ack": lambda: [
        (DurableJournal, "setRaftCommitIndex", _set_raft_commit_index_without_flush)
    ],
    # gap 1, subtler: fdatasync without moving Python's buffer to the OS first
    "no-buffer-flush": lambda: [(DurableJournal, "flush", _flush_without_buffer_flush)],
    # gap 2: compaction rewrites the journal in place
    "no-atomic-compaction": lambda: [(DurableJournal, "_rewrite", _rewrite_in_place)],
    # torn tail: keep appending after a damaged last record
    "no-torn-tail-repair": lambda: [(DurableJournal, "__init__", _init_appending_after_torn_tail)],
    # gap 3: pysyncobj's own __loadDumpFile (keeps two entries)
    "no-load-dump-override": lambda: [(_RaftNode, "_SyncObj__loadDumpFile", DELETE)],
    # the term/vote file without fsync
    "no-meta-fsync": lambda: [(DurableJournal, "_store_meta", _store_meta_without_fsync)],
    # the snapshot file is not fsync'd before it is renamed into place
    "no-snapshot-file-fsync": lambda: [(snapshot_module, "write_file", _write_file_without_fsync)],
    # the checker reports success without fsyncing the directory of the rename
    "no-snapshot-dir-fsync": lambda: [(snapshot_module, "fsync_directory", lambda path: None)],
    # a follower deletes everything after prevLogIdx (pysyncobj's own truncation)
    "no-conflict-truncation": lambda: [(_RaftNode, "_SyncObj__deleteEntriesFrom", DELETE)],
    # Raft messages (acknowledgements, votes, entries) leave before the journal is flushed
    "no-transport-flush": lambda: [(DurableTCPTransport, "send", DELETE)],
    # timing only (see _slow_delete_entries_to)
    "slow-compaction": lambda: [(DurableJournal, "deleteEntriesTo", _slow_delete_entries_to)],
    # timing only (see _slow_preview)
    "slow-preview": lambda: [(routes_module, "preview", _slow_preview)],
    # timing only: every fsync and fdatasync of the process takes 100 ms more
    "slow-fsync": lambda: [(os, "fsync", _slow_fsync), (os, "fdatasync", _slow_fdatasync)],
}


def patches(name: str) -> list[Patch]:
    return MUTATIONS[name]()


def apply(name: str) -> None:
    """Apply mutation ``name`` for the rest of this process."""
    for owner, attribute, replacement in patches(name):
        if replacement is DELETE:
            delattr(owner, attribute)
        else:
            setattr(owner, attribute, replacement)


def apply_with(monkeypatch: Any, name: str) -> None:
    """Apply mutation ``name`` until the test ends (pytest ``monkeypatch``)."""
    for owner, attribute, replacement in patches(name):
        if replacement is DELETE:
            monkeypatch.delattr(owner, attribute)
        else:
            monkeypatch.setattr(owner, attribute, replacement)


__all__ = ["DELETE", "MUTATIONS", "PAUSE_MARK", "apply", "apply_with", "patches"]
