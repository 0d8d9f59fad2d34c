"""A durable Raft journal for pysyncobj (closes gaps 1-4 of PYSYNCOBJ.md).

pysyncobj's ``FileJournal`` writes into an mmap that is never flushed before
an acknowledgement and compacts by rewriting the file in place. This journal:

* appends length-prefixed, CRC-checked records to an ordinary file and
  ``fsync``s them in :meth:`flush`; pysyncobj calls
  :meth:`setRaftCommitIndex` before it applies entries and fires callbacks,
  so every acknowledged entry is on stable storage first (group commit: one
  fsync covers every entry added since the last one);
* compacts (:meth:`deleteEntriesTo`) by writing the kept entries to a new
  file, ``fsync``, ``rename`` over the old one and ``fsync`` of the directory,
  so a kill -9 at any moment leaves either the old or the new journal;
* truncates a torn tail record on load (a crash in the middle of a write);
* stores term and vote with fsync + rename + directory fsync before returning.

It is installed as ``pysyncobj.syncobj.createJournal`` by
:mod:`fastpaca_server.replication.node`.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from typing import Any

from pysyncobj.journal import Journal

MAGIC = b"FPJOURNAL1\n"
_HEADER = struct.Struct("<IIQQ")  # payload length, crc32, index, term

Entry = tuple[bytes, int, int]


def fsync_directory(path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_durably(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file, fsync, rename, fsync directory."""
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_directory(os.path.dirname(path))


def _encode(entry: Entry) -> bytes:
    command, index, term = entry
    payload = bytes(command)
    crc = zlib.crc32(struct.pack("<QQ", index, term) + payload)
    return _HEADER.pack(len(payload), crc, index, term) + payload


def read_entries(path: str) -> tuple[list[Entry], list[int], int]:
    """Entries of a journal file, their offsets, and the end of the last valid record."""
    with open(path, "rb") as handle:
        data = handle.read()
    if not data.startswith(MAGIC):
        raise ValueError(f"{path} is not a Fastpaca journal")
    entries: list[Entry] = []
    offsets: list[int] = []
    offset = len(MAGIC)
    while offset + _HEADER.size <= len(data):
        length, crc, index, term = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        payload = data[start : start + length]
        if len(payload) < length or zlib.crc32(struct.pack("<QQ", index, term) + payload) != crc:
            break  # a torn tail: the record was being written when the process died
        entries.append((payload, index, term))
        offsets.append(offset)
        offset = start + length
    return entries, offsets, offset


class DurableJournal(Journal):  # type: ignore[misc]
    """pysyncobj ``Journal`` backed by an append-only, fsync'd file."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._meta_path = f"{path}.meta"
        if not os.path.exists(path):
            write_file_durably(path, MAGIC)
        self._entries, self._offsets, end = read_entries(path)
        self._handle = open(path, "r+b")  # noqa: SIM115 - kept open for the journal's life
        self._handle.truncate(end)
        self._handle.seek(end)
        self._end = end
        self._dirty = False
        self.flush_count = 0
        self._meta: dict[str, Any] = self._read_meta()
        self._meta_dirty = False

    # --- pysyncobj Journal interface --------------------------------------

    def add(self, command: bytes, idx: int, term: int) -> None:
        record = _encode((command, idx, term))
        self._handle.write(record)
        self._entries.append((command, idx, term))
        self._offsets.append(self._end)
        self._end += len(record)
        self._dirty = True

    def clear(self) -> None:
        self._rewrite([])

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        if entryFrom >= len(self._entries):
            return
        self._handle.flush()
        end = self._offsets[entryFrom]
        del self._entries[entryFrom:]
        del self._offsets[entryFrom:]
        self._handle.truncate(end)
        self._handle.seek(end)
        self._end = end
        os.fsync(self._handle.fileno())
        self._dirty = False

    def deleteEntriesTo(self, entryTo: int) -> None:
        self._rewrite(self._entries[entryTo:])

    def __getitem__(self, item: Any) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        self.flush()
        self._store_meta()
        self._handle.close()

    def flush(self) -> None:
        """Make every added entry durable (one fsync for all of them)."""
        if self._dirty:
            self._handle.flush()
            os.fdatasync(self._handle.fileno())
            self._dirty = False
            self.flush_count += 1

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        # pysyncobj calls this before applying entries and firing callbacks.
        self.flush()
        self._meta["raftCommitIndex"] = raftCommitIndex
        self._meta_dirty = True

    def getRaftCommitIndex(self) -> int:
        return int(self._meta.get("raftCommitIndex", 1))

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        self._meta["currentTerm"] = term
        self._meta["votedForNodeId"] = votedForNodeId
        self._store_meta()

    def getCurrentTerm(self) -> int:
        return int(self._meta.get("currentTerm", 0))

    def getVotedForNodeId(self) -> Any:
        return self._meta.get("votedForNodeId")

    def onOneSecondTimer(self) -> None:
        if self._meta_dirty:
            self._store_meta()

    # --- internals -----------------------------------------------------------

    def _rewrite(self, entries: list[Entry]) -> None:
        """Atomically replace the journal with ``entries`` (new file + rename)."""
        self._handle.close()
        records = [_encode(entry) for entry in entries]
        write_file_durably(self._path, MAGIC + b"".join(records))
        self._entries = list(entries)
        self._offsets = []
        offset = len(MAGIC)
        for record in records:
            self._offsets.append(offset)
            offset += len(record)
        self._end = offset
        self._handle = open(self._path, "r+b")  # noqa: SIM115
        self._handle.seek(self._end)
        self._dirty = False

    def _read_meta(self) -> dict[str, Any]:
        try:
            with open(self._meta_path, "rb") as handle:
                meta: dict[str, Any] = json.loads(handle.read())
                return meta
        except FileNotFoundError:
            return {}

    def _store_meta(self) -> None:
        write_file_durably(self._meta_path, json.dumps(self._meta).encode())
        self._meta_dirty = False
