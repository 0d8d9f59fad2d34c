"""Snapshots of the state machine for pysyncobj's log compaction.

pysyncobj is given our own ``serializer``/``deserializer``/``serializeChecker``
(no fork, no pickle of the whole ``SyncObj``): a snapshot holds the core's
canonical state bytes plus the two Raft entries pysyncobj needs to resume.
The file is fsync'd; the checker reports success only after the directory
holding the renamed file is fsync'd too, so pysyncobj deletes journal entries
only once the snapshot that covers them is on stable storage.

On start, :meth:`SnapshotStore.load` reads and checks the snapshot before
pysyncobj runs (a damaged one raises :class:`SnapshotCorrupted`, a one-line
error, instead of failing on pysyncobj's thread); pysyncobj's first call to
``deserialize`` then gets the state already decoded.
"""

from __future__ import annotations

import os
import pickle
import struct
import threading
import zlib
from collections.abc import Callable
from typing import Any

from pysyncobj.config import SERIALIZER_STATE

from ..core import StateMachine
from .data_dir import DataDirectoryError
from .journal import fsync_directory

MAGIC = b"FPSNAP1\n"
_LENGTHS = struct.Struct("<QQI")  # raft part length, state length, crc32 of both


class SnapshotCorrupted(DataDirectoryError, ValueError):
    """The snapshot file does not check out (header, lengths, checksum or contents)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"snapshot {path} is damaged ({reason})")
        self.path = path
        self.reason = reason


Decoded = tuple[tuple[Any, ...], StateMachine]


class SnapshotStore:
    """Writes and reads snapshots; restores the state through ``install``."""

    def __init__(
        self,
        path: str,
        current_state: Callable[[], StateMachine],
        install: Callable[[StateMachine], None],
    ) -> None:
        self.path = path
        self._current_state = current_state
        self._install = install
        self._status = SERIALIZER_STATE.NOT_SERIALIZING
        self._tmp_path: str | None = None
        self._lock = threading.Lock()
        self._loaded: Decoded | None = None
        self.snapshots_written = 0

    def load(self) -> bool:
        """Read and check the snapshot, if there is one, for pysyncobj to install.

        Raises :class:`SnapshotCorrupted` if it is damaged. Returns whether
        there is a snapshot.
        """
        if not os.path.exists(self.path):
            return False
        self._loaded = _decode(self.path)
        return True

    def serialize(self, tmp_path: str, raft_data: Any) -> None:
        """pysyncobj ``serializer``: runs on the Raft thread, which is the only writer."""
        try:
            raft_part = pickle.dumps(tuple(raft_data), protocol=4)
            state_part = self._current_state().to_bytes()
            crc = zlib.crc32(raft_part + state_part)
            with open(tmp_path, "wb") as handle:
                handle.write(MAGIC + _LENGTHS.pack(len(raft_part), len(state_part), crc))
                handle.write(raft_part)
                handle.write(state_part)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            with self._lock:
                self._status = SERIALIZER_STATE.FAILED
            raise
        with self._lock:
            self._status = SERIALIZER_STATE.SUCCESS
            self._tmp_path = tmp_path

    def check(self) -> int:
        """pysyncobj ``serializeChecker``: called on the next tick, after the rename.

        Success only if pysyncobj's rename of the temp file really happened (a
        failed rename leaves it behind): the journal entries the snapshot
        covers are deleted right after this reports success.
        """
        with self._lock:
            status, self._status = self._status, SERIALIZER_STATE.NOT_SERIALIZING
            tmp_path, self._tmp_path = self._tmp_path, None
        if status == SERIALIZER_STATE.SUCCESS:
            if tmp_path is not None and os.path.exists(tmp_path):
                return int(SERIALIZER_STATE.FAILED)
            fsync_directory(os.path.dirname(self.path))
            self.snapshots_written += 1
        return int(status)

    def deserialize(self, path: str) -> tuple[Any, ...]:
        """pysyncobj ``deserializer``: install the state, return the Raft entries."""
        decoded, self._loaded = self._loaded, None
        if decoded is None or path != self.path:
            decoded = _decode(path)
        raft_data, machine = decoded
        self._install(machine)
        return raft_data


def _decode(path: str) -> Decoded:
    """The Raft entries and the state machine of a snapshot file."""
    with open(path, "rb") as handle:
        data = handle.read()
    if not data.startswith(MAGIC):
        raise SnapshotCorrupted(path, "not a Fastpaca snapshot header")
    if len(data) < len(MAGIC) + _LENGTHS.size:
        raise SnapshotCorrupted(path, "cut short")
    raft_length, state_length, crc = _LENGTHS.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + _LENGTHS.size
    raft_part = data[start : start + raft_length]
    state_part = data[start + raft_length : start + raft_length + state_length]
    if len(raft_part) != raft_length or len(state_part) != state_length:
        raise SnapshotCorrupted(path, "cut short")
    if zlib.crc32(raft_part + state_part) != crc:
        raise SnapshotCorrupted(path, "checksum mismatch")
    try:
        raft_data: tuple[Any, ...] = pickle.loads(raft_part)
        machine = StateMachine.from_bytes(state_part)
    except Exception as error:  # a checksum-valid file this version cannot read
        raise SnapshotCorrupted(path, f"unreadable: {type(error).__name__}: {error}") from error
    return raft_data, machine
