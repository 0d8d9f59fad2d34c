"""The idempotency keys a context remembers, in about 80 bytes a key.

A retried append must get its first answer back; a context remembers its
newest 10,000 keys for that. Kept as Python objects (the key, the request's
fingerprint, the whole result) a key cost about 450 bytes of memory and 336
of snapshot, so a thousand busy contexts held gigabytes of keys. Here a key
is one fixed-size record in a ``bytearray`` hash table (open addressing,
linear probing, backward-shift deletion) plus its 16-byte digest in a ring
that says which key is the oldest:

=============  =====  =================================================
field          bytes  what
=============  =====  =================================================
key digest        16  SHA-256 of the key (its first 16 bytes)
fingerprint        8  SHA-256 of the request's fingerprint (first 8)
version            8  the context's version after the write
first seq          8  the first seq it appended (0 for a compaction)
used tokens        4  the window's tokens after the write
count              2  messages appended, or in the replacement
flags              1  occupied, compaction, needs_compaction
=============  =====  =================================================

The answer is not stored: :meth:`IdempotencyTable.get` returns the record,
and the state machine rebuilds the answer from it and the log (the appended
messages' ids, counts and times are in the log, unchanged). Records leave in
the order they came (the ring), so the table behaves like the ordered dict it
replaces, and a snapshot stores the records oldest first.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Iterator

import attrs

_RECORD = struct.Struct("<16s8sQQIHB")
_OCCUPIED = 1
_COMPACT = 2
_NEEDS_COMPACTION = 4
_DIGEST = 16
_MIN_CAPACITY = 8
_MAX_LOAD = 0.8


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:_DIGEST]


def fingerprint_digest(fingerprint: str | None) -> bytes:
    return hashlib.sha256((fingerprint or "").encode()).digest()[:8]


@attrs.frozen
class Remembered:
    """What a key maps to: enough to check the request and rebuild its answer."""

    fingerprint: bytes
    version: int
    first_seq: int
    used_tokens: int
    count: int
    compaction: bool
    needs_compaction: bool


class IdempotencyTable:
    """An insertion-ordered map from key digest to :class:`Remembered` (see the module)."""

    __slots__ = ("_capacity", "_ring", "_ring_head", "_size", "_slots")

    def __init__(self) -> None:
        self._capacity = 0
        self._slots = bytearray()
        self._size = 0
        self._ring = bytearray()  # digests, oldest at _ring_head, wrapping around
        self._ring_head = 0

    def __len__(self) -> int:
        return self._size

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdempotencyTable) and self.to_text() == other.to_text()

    __hash__ = None  # type: ignore[assignment]

    def __iter__(self) -> Iterator[bytes]:
        return self.digests()

    def __contains__(self, key: str) -> bool:
        return self._find(key_digest(key))[1]

    def get(self, key: str) -> Remembered | None:
        slot, found = self._find(key_digest(key))
        return self._read(slot) if found else None

    def add(self, key: str, remembered: Remembered, limit: int) -> None:
        """Remember ``key`` as the newest; forget the oldest keys beyond ``limit``."""
        digest = key_digest(key)
        slot, found = self._find(digest)
        if found:
            self._delete_slot(slot)
            self._ring_remove(digest)
        elif (self._size + 1) > self._capacity * _MAX_LOAD:
            self._grow()
        self._insert(digest, remembered)
        self._ring_append(digest)
        while self._size > limit:
            self.remove_oldest()

    def remove_oldest(self) -> None:
        digest = self._ring_pop_oldest()
        slot, found = self._find(digest)
        if found:
            self._delete_slot(slot)

    def digests(self) -> Iterator[bytes]:
        """Key digests, oldest first."""
        return self._ring_digests(self._size)

    # --- snapshots -------------------------------------------------------------------

    def to_text(self) -> str:
        """The records, oldest first, as base64 (about 64 characters a key)."""
        records = []
        for digest in self.digests():
            slot, _ = self._find(digest)
            start = slot * _RECORD.size
            records.append(bytes(self._slots[start : start + _RECORD.size]))
        return base64.b64encode(b"".join(records)).decode()

    @classmethod
    def from_text(cls, text: str) -> IdempotencyTable:
        table = cls()
        data = base64.b64decode(text)
        for start in range(0, len(data), _RECORD.size):
            fields = _RECORD.unpack_from(data, start)
            if (table._size + 1) > table._capacity * _MAX_LOAD:
                table._grow()
            table._insert(fields[0], _remembered(fields))
            table._ring_append(fields[0])
        return table

    # --- the hash table ------------------------------------------------------------

    def _home(self, digest: bytes) -> int:
        return int.from_bytes(digest[:8], "little") % self._capacity

    def _find(self, digest: bytes) -> tuple[int, bool]:
        """The slot holding ``digest`` (found) or the empty slot where it would go."""
        if self._capacity == 0:
            return 0, False
        slots, size, capacity = self._slots, _RECORD.size, self._capacity
        slot = self._home(digest)
        while True:
            start = slot * size
            if not slots[start + size - 1] & _OCCUPIED:
                return slot, False
            if slots[start : start + _DIGEST] == digest:
                return slot, True
            slot = (slot + 1) % capacity

    def _read(self, slot: int) -> Remembered:
        return _remembered(_RECORD.unpack_from(self._slots, slot * _RECORD.size))

    def _insert(self, digest: bytes, remembered: Remembered) -> None:
        slot, found = self._find(digest)
        assert not found
        flags = _OCCUPIED
        if remembered.compaction:
            flags |= _COMPACT
        if remembered.needs_compaction:
            flags |= _NEEDS_COMPACTION
        _RECORD.pack_into(
            self._slots,
            slot * _RECORD.size,
            digest,
            remembered.fingerprint,
            remembered.version,
            remembered.first_seq,
            min(remembered.used_tokens, 2**32 - 1),
            remembered.count,
            flags,
        )
        self._size += 1

    def _delete_slot(self, slot: int) -> None:
        """Empty ``slot`` and shift later records of its probe run back (no tombstones)."""
        slots, size, capacity = self._slots, _RECORD.size, self._capacity
        hole = slot
        probe = (slot + 1) % capacity
        while True:
            start = probe * size
            if not slots[start + size - 1] & _OCCUPIED:
                break
            home = self._home(bytes(slots[start : start + _DIGEST]))
            # Move the record into the hole unless its home lies cyclically in (hole, probe].
            if (probe > hole and (home <= hole or home > probe)) or (
                probe < hole and home <= hole and home > probe
            ):
                slots[hole * size : hole * size + size] = slots[start : start + size]
                hole = probe
            probe = (probe + 1) % capacity
        slots[hole * size : hole * size + size] = bytes(size)
        self._size -= 1

    def _grow(self) -> None:
        old_slots, old_capacity = self._slots, self._capacity
        capacity = max(_MIN_CAPACITY, old_capacity + old_capacity // 2 + 1)
        self._capacity = capacity
        self._slots = bytearray(capacity * _RECORD.size)
        self._size = 0
        size = _RECORD.size
        for slot in range(old_capacity):
            start = slot * size
            if old_slots[start + size - 1] & _OCCUPIED:
                fields = _RECORD.unpack_from(old_slots, start)
                self._insert(fields[0], _remembered(fields))

    # --- the ring of digests, oldest first -------------------------------------------

    def _ring_append(self, digest: bytes) -> None:
        capacity = len(self._ring) // _DIGEST
        count = self._size  # already counts the record just inserted
        if count > capacity:
            ordered = b"".join(self._ring_digests(count - 1))
            new_capacity = max(_MIN_CAPACITY, capacity * 2)
            self._ring = bytearray(ordered) + bytearray((new_capacity - (count - 1)) * _DIGEST)
            self._ring_head = 0
            capacity = new_capacity
        at = ((self._ring_head + count - 1) % capacity) * _DIGEST
        self._ring[at : at + _DIGEST] = digest

    def _ring_digests(self, count: int) -> Iterator[bytes]:
        """The ``count`` oldest digests of the ring, oldest first."""
        ring = self._ring
        capacity = len(ring) // _DIGEST
        for offset in range(count):
            at = ((self._ring_head + offset) % capacity) * _DIGEST
            yield bytes(ring[at : at + _DIGEST])

    def _ring_pop_oldest(self) -> bytes:
        """The oldest digest, taken off the ring (called before the record is deleted)."""
        capacity = len(self._ring) // _DIGEST
        at = self._ring_head * _DIGEST
        digest = bytes(self._ring[at : at + _DIGEST])
        self._ring_head = (self._ring_head + 1) % capacity
        return digest

    def _ring_remove(self, digest: bytes) -> None:
        """Take ``digest`` out of the middle of the ring (a key used again: rare)."""
        kept = [d for d in self._ring_digests(self._size + 1) if d != digest]
        capacity = len(self._ring) // _DIGEST
        self._ring = bytearray(b"".join(kept)) + bytearray((capacity - len(kept)) * _DIGEST)
        self._ring_head = 0


def _remembered(fields: tuple[bytes, bytes, int, int, int, int, int]) -> Remembered:
    _, fingerprint, version, first_seq, used_tokens, count, flags = fields
    return Remembered(
        fingerprint=fingerprint,
        version=version,
        first_seq=first_seq,
        used_tokens=used_tokens,
        count=count,
        compaction=bool(flags & _COMPACT),
        needs_compaction=bool(flags & _NEEDS_COMPACTION),
    )
