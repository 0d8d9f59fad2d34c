"""A durable Raft journal for pysyncobj (closes the journal gaps listed in docs/architecture.md).

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
* truncates a torn last record on load (a crash in the middle of a write),
  and only that: a damaged record with a valid record anywhere after it is
  corruption, not a torn write, and loading stops with
  :class:`JournalCorrupted` (file and byte offset) instead of dropping the
  records after it. :func:`repair_journal_file` is the explicit way out: it
  keeps a byte-identical copy of the damaged file beside it, then truncates
  at the damage;
* stores term and vote with fsync + rename + directory fsync before returning;
* keeps only each entry's index, term and place in the file in memory (24
  bytes an entry, in arrays), plus the payloads of the most recent entries:
  an older payload is read back from the file when pysyncobj asks for it, so
  memory does not grow with the entries between two snapshots.

It is installed as ``pysyncobj.syncobj.createJournal`` by
:mod:`fastpaca_server.replication.node`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import struct
import time
import zlib
from array import array
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pysyncobj.journal import Journal

from .data_dir import DataDirectoryError

logger = logging.getLogger(__name__)

MAGIC = b"FPJOURNAL1\n"
_HEADER = struct.Struct("<IIQQ")  # payload length, crc32, index, term

Entry = tuple[bytes, int, int]

# Where a record header could start after a damaged record: an index field
# (header offset 8) in 1 .. 2**48 - 1 followed by a term below 2**32. Found by
# the regex engine, so scanning a multi-megabyte torn record costs no Python
# work per byte (text has no zero bytes, zero-filled blocks have no index);
# only the few candidates it finds are checked further, and a CRC is computed
# only for those whose index, term and length are possible at that place.
_CANDIDATE_INDEX = re.compile(rb"(?=(?!\x00{6}).{6}\x00\x00.{4}\x00{4})", re.DOTALL)
_INDEX_FIELD = 8
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
DISK_FULL_RETRY_SECONDS = 0.2
"""How often a flush that found the disk full tries again."""
RECENT_PAYLOADS = 4096
"""Most payloads kept in memory: the entries pysyncobj is about to apply (or send)."""
RECENT_PAYLOAD_BYTES = 4 * 1024 * 1024
"""Most bytes of payloads kept in memory (the newest entry is always kept)."""


class JournalCorrupted(DataDirectoryError):
    """A damaged journal record with a valid record after it: not a torn write.

    ``path`` is the journal file, ``offset`` the byte where the damaged record
    starts. Nothing has been changed on disk.
    """

    def __init__(self, path: str, offset: int, reason: str, valid_after: int | None) -> None:
        after = f"a valid record follows at byte {valid_after}" if valid_after is not None else ""
        super().__init__(
            f"journal {path} is corrupted at byte {offset} ({reason})"
            + (f"; {after}, so this is not a torn last write" if after else "")
        )
        self.path = path
        self.offset = offset
        self.reason = reason
        self.valid_after = valid_after


@dataclass(frozen=True)
class JournalScan:
    """What is in a journal file: the valid records up to the first damage, if any."""

    entries: list[Entry]
    offsets: list[int]
    end: int  # end of the last valid record before the damage (the file size if none)
    size: int
    damage: str | None = None  # why the bytes at ``end`` are bad
    valid_after: int | None = None  # offset of a valid record after the damage
    torn: bool = False  # the damage is a torn last record (no valid record after it)


@dataclass(frozen=True)
class JournalRepair:
    """What :func:`repair_journal_file` did."""

    path: str
    quarantine: str
    offset: int
    dropped_bytes: int
    reason: str


def fsync_directory(path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_durably(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file, fsync, rename, fsync directory.

    If writing fails (a full disk), the temp file is removed and ``path`` is as it was.
    """
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.replace(tmp, path)
    fsync_directory(os.path.dirname(path))


def _encode(entry: Entry) -> bytes:
    command, index, term = entry
    payload = bytes(command)
    crc = zlib.crc32(struct.pack("<QQ", index, term) + payload)
    return _HEADER.pack(len(payload), crc, index, term) + payload


def scan_journal(data: bytes) -> JournalScan:
    """Parse a journal file's bytes up to the first bad record and classify the damage."""
    if not data.startswith(MAGIC):
        return JournalScan([], [], 0, len(data), "not a Fastpaca journal header")
    entries: list[Entry] = []
    offsets: list[int] = []
    offset = len(MAGIC)
    size = len(data)
    while offset < size:
        if offset + _HEADER.size > size:
            damage = "record header cut short"
            break
        length, crc, index, term = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        if start + length > size:
            damage = "record runs past the end of the file"
            break
        payload = data[start : start + length]
        if zlib.crc32(struct.pack("<QQ", index, term) + payload) != crc:
            damage = "checksum mismatch"
            break
        entries.append((payload, index, term))
        offsets.append(offset)
        offset = start + length
    else:
        return JournalScan(entries, offsets, offset, size)
    valid_after = _find_valid_record(data, offset, entries[-1] if entries else None)
    return JournalScan(entries, offsets, offset, size, damage, valid_after, valid_after is None)


def _find_valid_record(data: bytes, bad: int, last: Entry | None) -> int | None:
    """Offset of a valid record after the bad one at ``bad``, if there is one.

    Raft journals hold consecutive indexes with non-decreasing terms, and a
    record takes at least a header's bytes, so a valid record at ``p`` after
    the last good entry ``last`` has an index in ``last + 1 ..
    last + 1 + (p - bad) // header size`` and a term no lower than ``last``'s.
    """
    size = len(data)
    for match in _CANDIDATE_INDEX.finditer(data, bad + 1 + _INDEX_FIELD):
        position = match.start() - _INDEX_FIELD
        length, crc, index, term = _HEADER.unpack_from(data, position)
        if last is not None:
            if not last[1] < index <= last[1] + 1 + (position - bad) // _HEADER.size:
                continue
            if term < last[2]:
                continue
        start = position + _HEADER.size
        if start + length > size:
            continue
        if zlib.crc32(struct.pack("<QQ", index, term) + data[start : start + length]) == crc:
            return position
    return None


def read_entries(path: str) -> tuple[list[Entry], list[int], int]:
    """Entries of a journal file, their offsets, and the end of the last valid record.

    A torn last record is left out (the end is where it starts); any other
    damage raises :class:`JournalCorrupted`.
    """
    with open(path, "rb") as handle:
        scan = scan_journal(handle.read())
    if scan.damage is not None and not scan.torn:
        raise JournalCorrupted(path, scan.end, scan.damage, scan.valid_after)
    return scan.entries, scan.offsets, scan.end


def repair_journal_file(path: str) -> JournalRepair | None:
    """Truncate a corrupted journal at its first damaged record, keeping a copy first.

    The damaged file is copied byte for byte to ``<path>.corrupt-<unix time>``
    (fsync'd, directory fsync'd) before anything is cut. Returns ``None`` when
    there is nothing to repair (a torn last record is repaired on every load).
    """
    with open(path, "rb") as handle:
        data = handle.read()
    scan = scan_journal(data)
    if scan.damage is None or scan.torn:
        return None
    quarantine = f"{path}.corrupt-{int(time.time())}"
    suffix = 1
    while os.path.exists(quarantine):
        quarantine = f"{path}.corrupt-{int(time.time())}-{suffix}"
        suffix += 1
    write_file_durably(quarantine, data)
    if scan.end < len(MAGIC):
        write_file_durably(path, MAGIC)
    else:
        with open(path, "r+b") as handle:
            handle.truncate(scan.end)
            os.fsync(handle.fileno())
    repair = JournalRepair(path, quarantine, scan.end, len(data) - scan.end, scan.damage)
    logger.warning(
        "repaired journal %s: dropped %d bytes from byte %d on (%s; %d valid records kept); "
        "the damaged journal is kept as %s",
        path,
        repair.dropped_bytes,
        repair.offset,
        repair.reason,
        len(scan.entries),
        quarantine,
    )
    return repair


class DurableJournal(Journal):  # type: ignore[misc]
    """pysyncobj ``Journal`` backed by an append-only, fsync'd file."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._meta_path = f"{path}.meta"
        if not os.path.exists(path):
            write_file_durably(path, MAGIC)
        entries, offsets, end = read_entries(path)
        self._reset(entries, offsets, end)
        self._handle = open(path, "r+b")  # noqa: SIM115 - kept open for the journal's life
        size = self._handle.seek(0, os.SEEK_END)
        if size > end:
            logger.info(
                "journal %s: dropped a torn last record (%d bytes at byte %d)",
                path,
                size - end,
                end,
            )
        self._handle.truncate(end)
        self._handle.seek(end)
        self._dirty = False
        self._buffered = False
        self.flush_count = 0
        self.disk_full_waits = 0
        """Tries of :meth:`flush` that found the disk full (each waited a moment)."""
        self._disk_full_logged = 0.0
        self._closing = False
        """Set by :meth:`_destroy`: a full disk then fails the flush instead of waiting."""
        self._meta: dict[str, Any] = self._read_meta()
        self._meta_dirty = False

    def _reset(self, entries: list[Entry], offsets: list[int], end: int) -> None:
        """Index ``entries`` (found at ``offsets``; the file's records end at ``end``)."""
        self._offsets = array("q", offsets)
        self._lengths = array("q", (len(entry[0]) for entry in entries))
        self._indexes = array("q", (entry[1] for entry in entries))
        self._terms = array("q", (entry[2] for entry in entries))
        self._recent: OrderedDict[int, bytes] = OrderedDict()
        self._recent_bytes = 0
        for payload, index, _ in entries[-RECENT_PAYLOADS:]:
            self._remember(index, bytes(payload))
        self._end = end
        self._conflict_check: int | None = None
        self._on_drop: Callable[[list[Entry]], None] | None = None

    # --- pysyncobj Journal interface --------------------------------------

    def add(self, command: bytes, idx: int, term: int) -> None:
        check = self._conflict_check
        if check is not None:
            self._conflict_check = None
            if check < len(self._indexes) and self._indexes[check] == idx:
                if self._terms[check] == term:  # the same entry: keep it, and what follows
                    self._conflict_check = check + 1 if check + 1 < len(self._indexes) else None
                    return
                logger.warning(
                    "journal %s: entry %d of term %d replaces one of term %d; "
                    "dropping it and the %d entries after it",
                    self._path,
                    idx,
                    term,
                    self._terms[check],
                    len(self._indexes) - check - 1,
                )
                on_drop, dropped = self._on_drop, self[check:] if self._on_drop else []
                self.deleteEntriesFrom(check)
                if on_drop is not None:
                    on_drop(dropped)
        record = _encode((command, idx, term))
        self._handle.write(record)
        self._offsets.append(self._end)
        self._lengths.append(len(record) - _HEADER.size)
        self._indexes.append(idx)
        self._terms.append(term)
        self._remember(idx, bytes(command))
        self._end += len(record)
        self._dirty = True
        self._buffered = True

    def clear(self) -> None:
        self._rewrite([])

    def truncate_on_conflict_from(
        self, entryFrom: int, on_drop: Callable[[list[Entry]], None] | None = None
    ) -> None:
        """Raft's rule for a follower given entries after ``entryFrom - 1``.

        pysyncobj deletes every entry from ``entryFrom`` and then adds the
        leader's. Raft (§5.3) deletes only from the first entry whose term
        conflicts: deleting entries the leader sent again, or entries after
        the ones it sent, drops the follower's log below what it already
        acknowledged, and a crash in between loses committed entries. Called
        instead of :meth:`deleteEntriesFrom`, this makes the :meth:`add` calls
        that follow skip entries already held (same index and term) and
        delete only at the first conflict; without a conflict nothing is
        deleted. ``on_drop`` is given the entries a conflict deletes, after
        the deletion (membership changes among them are undone by the caller).
        """
        self._conflict_check = entryFrom if entryFrom < len(self._indexes) else None
        self._on_drop = on_drop

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        self._conflict_check = None
        if entryFrom >= len(self._indexes):
            return
        self._handle.flush()
        end = self._offsets[entryFrom]
        first_dropped = self._indexes[entryFrom]
        for array_ in (self._offsets, self._lengths, self._indexes, self._terms):
            del array_[entryFrom:]
        for index in [i for i in self._recent if i >= first_dropped]:
            self._recent_bytes -= len(self._recent.pop(index))
        self._handle.truncate(end)
        self._handle.seek(end)
        self._end = end
        os.fsync(self._handle.fileno())
        self._dirty = False
        self._buffered = False

    def deleteEntriesTo(self, entryTo: int) -> None:
        self._conflict_check = None
        self._rewrite(self[entryTo:])

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, slice):
            return [self._entry(position) for position in range(*item.indices(len(self)))]
        position = item + len(self) if item < 0 else item
        if not 0 <= position < len(self):
            raise IndexError("journal index out of range")
        return self._entry(position)

    def __len__(self) -> int:
        return len(self._indexes)

    def _entry(self, position: int) -> Entry:
        index = self._indexes[position]
        payload = self._recent.get(index)
        if payload is None:
            if self._buffered:  # records still in Python's buffer are not in the file yet
                self._handle.flush()
                self._buffered = False
            start = self._offsets[position] + _HEADER.size
            payload = os.pread(self._handle.fileno(), self._lengths[position], start)
        return (payload, index, self._terms[position])

    def _remember(self, index: int, payload: bytes) -> None:
        previous = self._recent.pop(index, None)
        if previous is not None:
            self._recent_bytes -= len(previous)
        self._recent[index] = payload
        self._recent_bytes += len(payload)
        while len(self._recent) > 1 and (
            len(self._recent) > RECENT_PAYLOADS or self._recent_bytes > RECENT_PAYLOAD_BYTES
        ):
            self._recent_bytes -= len(self._recent.popitem(last=False)[1])

    def _destroy(self) -> None:
        self._closing = True  # on a full disk, unflushed entries were never acknowledged
        self.flush()
        self._store_meta()
        self._handle.close()

    def flush(self) -> None:
        """Make every added entry durable (one fsync for all of them).

        A full disk (``ENOSPC``, ``EDQUOT``) does not fail the flush: it waits for
        space and tries again, blocking the Raft thread. pysyncobj raises its
        commit index *before* it calls :meth:`setRaftCommitIndex`, so a flush
        that raised would let the next tick apply (and acknowledge) entries
        that are not on disk. Python's buffer keeps what it could not write and
        the next try writes exactly that, so the file never holds half a
        record. Meanwhile the API refuses writes (507) and reads go on.
        """
        if not self._dirty:
            return
        waited_since: float | None = None
        while True:
            try:
                self._handle.flush()
                os.fdatasync(self._handle.fileno())
                break
            except OSError as error:
                if error.errno not in DISK_FULL_ERRNOS or self._closing:
                    raise
                now = time.monotonic()
                if waited_since is None or now - self._disk_full_logged > 10:
                    logger.error(
                        "journal %s: the disk is full (%s); writes wait for space",
                        self._path,
                        error.strerror,
                    )
                    self._disk_full_logged = now
                waited_since = waited_since or now
                self.disk_full_waits += 1
                time.sleep(DISK_FULL_RETRY_SECONDS)
        if waited_since is not None:
            logger.warning(
                "journal %s: space is back after %.1f s; writes go on",
                self._path,
                time.monotonic() - waited_since,
            )
        self._buffered = False
        self._dirty = False
        self.flush_count += 1

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        # pysyncobj calls this before applying entries and firing callbacks.
        self.flush()
        self._meta["raftCommitIndex"] = raftCommitIndex
        self._meta_dirty = True

    def getRaftCommitIndex(self) -> int:
        # Never past the last entry: after a --repair-journal the stored index
        # can point into what was cut, and pysyncobj would then apply (and
        # acknowledge) new entries without committing, so without a flush.
        stored = int(self._meta.get("raftCommitIndex", 1))
        return min(stored, self._indexes[-1]) if len(self._indexes) else stored

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
        offsets = []
        offset = len(MAGIC)
        for record in records:
            offsets.append(offset)
            offset += len(record)
        self._reset(list(entries), offsets, offset)
        self._handle = open(self._path, "r+b")  # noqa: SIM115
        self._handle.seek(self._end)
        self._dirty = False
        self._buffered = False

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
