"""The data directory: one owner process, and the errors that stop a node at start.

A data directory holds one node's journal and snapshot. Two processes on
the same directory would both acknowledge writes into the same files and
lose each other's appends on the next restart, so the first process takes an
exclusive ``flock`` on ``<data-dir>/LOCK`` and holds it for its whole life;
the kernel releases it when the process ends, however it ends (kill -9
included). The owner's pid is written into the file so that a refused
process can say who holds it.

Exceptions (all :class:`DataDirectoryError`, each a one-line message)::

    DataDirectoryError
    ├── DataDirectoryInUse    another process holds the lock
    ├── JournalCorrupted      (journal.py) a damaged record with valid records after it
    └── SnapshotCorrupted     (snapshot.py) the snapshot does not check out
"""

from __future__ import annotations

import contextlib
import fcntl
import os

LOCK_FILE = "LOCK"


class DataDirectoryError(Exception):
    """The node cannot start on this data directory; the message is one line."""


class DataDirectoryInUse(DataDirectoryError):
    """Another process holds the data directory's lock."""

    def __init__(self, data_dir: str, pid: int | None) -> None:
        owner = f"another process (pid {pid})" if pid is not None else "another process"
        super().__init__(f"data directory {data_dir} is in use by {owner}")
        self.data_dir = data_dir
        self.pid = pid


class DataDirectoryLock:
    """An exclusive lock on a data directory, held until :meth:`release` or process exit."""

    def __init__(self, data_dir: str, fd: int) -> None:
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, LOCK_FILE)
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: str) -> DataDirectoryLock:
        """Lock ``data_dir`` (created if missing) or raise :class:`DataDirectoryInUse`."""
        os.makedirs(data_dir, exist_ok=True)
        fd = os.open(os.path.join(data_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise DataDirectoryInUse(data_dir, pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(data_dir, fd)

    def release(self) -> None:
        """Give the directory up (the file stays: deleting it would race a new owner)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the only descriptor drops the flock


def _read_pid(fd: int) -> int | None:
    # The owner may be between truncating and writing its pid: then it is unknown.
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
        return int(text) if text else None
    except (OSError, UnicodeDecodeError, ValueError):
        return None
