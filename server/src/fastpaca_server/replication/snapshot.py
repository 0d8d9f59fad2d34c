"""Snapshots of the state machine for pysyncobj's log compaction.

pysyncobj is given our own ``serializer``/``deserializer``/``serializeChecker``
(no pickle of the whole ``SyncObj``): a snapshot holds the core's state bytes
plus the two Raft entries pysyncobj needs to resume.

**Snapshots never stop the world.** pysyncobj calls the serializer on its
Raft thread. Serialising a large state there would block every write (and
every read, which shares the state's lock) for as long as it takes, so the
serializer ``fork()``s instead, as Redis does: the child process gets a
copy-on-write image of the state exactly as it is at this point of the log,
writes it to ``<snapshot>.writing``, fsyncs it, renames it over the snapshot
and fsyncs the directory, then exits. The Raft thread pays only for the fork
(page tables, not data) and goes on applying. The checker polls the child
(``waitpid``, non-blocking) and reports success only once the child exited
cleanly, so pysyncobj deletes journal entries only when the snapshot that
covers them is on stable storage. pysyncobj's own rename of its temp path
finds nothing to rename (the child never writes there) and is ignored.

On start, :meth:`SnapshotStore.load` reads and checks the snapshot before
pysyncobj runs (a damaged one raises :class:`SnapshotCorrupted`, a one-line
error, instead of failing on pysyncobj's thread); pysyncobj's first call to
``deserialize`` then gets the state already decoded.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import struct
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

from pysyncobj.config import SERIALIZER_STATE

from ..core import StateMachine
from .data_dir import DataDirectoryError
from .journal import fsync_directory

logger = logging.getLogger(__name__)

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
        self._child: int | None = None
        self._lock = threading.Lock()
        self._loaded: Decoded | None = None
        self.snapshots_written = 0
        self.fork_snapshots = hasattr(os, "fork")
        self.last_fork_seconds = 0.0

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
        """pysyncobj ``serializer``: runs on the Raft thread, which is the only writer.

        Forks a child that writes the snapshot (see the module docstring);
        with ``fork_snapshots`` off, writes it here, blocking the Raft thread.
        """
        raft_part = pickle.dumps(tuple(raft_data), protocol=4)
        machine = self._current_state()
        if not self.fork_snapshots:
            try:
                write_snapshot(self.path, raft_part, machine)
            except BaseException:
                with self._lock:
                    self._status = SERIALIZER_STATE.FAILED
                raise
            with self._lock:
                self._status = SERIALIZER_STATE.SUCCESS
            return
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the child: only this thread exists; no logging, no locks
            gc.disable()  # a collection would touch (and so copy) every page of the state
            code = 0
            try:
                write_snapshot(self.path, raft_part, machine)
            except BaseException:
                code = 1
            os._exit(code)
        self.last_fork_seconds = time.monotonic() - started
        with self._lock:
            self._child = pid
            self._status = SERIALIZER_STATE.SERIALIZING

    def check(self) -> int:
        """pysyncobj ``serializeChecker``: polled on every tick while a snapshot is written.

        Success only once the snapshot is renamed into place and its
        directory fsync'd: the journal entries it covers are deleted right
        after this reports success.
        """
        with self._lock:
            status, child = self._status, self._child
            if child is not None:
                finished, code = os.waitpid(child, os.WNOHANG)
                if finished == 0:
                    return int(SERIALIZER_STATE.SERIALIZING)
                self._child = None
                status = SERIALIZER_STATE.SUCCESS if code == 0 else SERIALIZER_STATE.FAILED
            self._status = SERIALIZER_STATE.NOT_SERIALIZING
        if status == SERIALIZER_STATE.SUCCESS:
            self.snapshots_written += 1
        elif status == SERIALIZER_STATE.FAILED:
            logger.error("writing the snapshot %s failed; the journal is kept", self.path)
        return int(status)

    def close(self) -> None:
        """Wait for a snapshot still being written (a clean shutdown leaves no child)."""
        with self._lock:
            child, self._child = self._child, None
        if child is not None:
            os.waitpid(child, 0)

    def deserialize(self, path: str) -> tuple[Any, ...]:
        """pysyncobj ``deserializer``: install the state, return the Raft entries."""
        decoded, self._loaded = self._loaded, None
        if decoded is None or path != self.path:
            decoded = _decode(path)
        raft_data, machine = decoded
        self._install(machine)
        return raft_data


def write_snapshot(path: str, raft_part: bytes, machine: StateMachine) -> None:
    """Write a snapshot durably: ``<path>.writing``, fsync, rename, fsync of the directory."""
    state_part = machine.to_bytes()
    crc = zlib.crc32(raft_part + state_part)
    writing = f"{path}.writing"
    try:
        write_file(
            writing,
            [MAGIC + _LENGTHS.pack(len(raft_part), len(state_part), crc), raft_part, state_part],
        )
    except BaseException:
        # A full disk: the partial file would hold the space the journal needs.
        with contextlib.suppress(OSError):
            os.unlink(writing)
        raise
    os.replace(writing, path)
    fsync_directory(os.path.dirname(path))


def write_file(path: str, chunks: list[bytes]) -> None:
    """Write ``chunks`` to ``path`` and fsync it."""
    with open(path, "wb") as handle:
        for chunk in chunks:
            handle.write(chunk)
        handle.flush()
        os.fsync(handle.fileno())


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
