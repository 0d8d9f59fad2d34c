"""Replication: pysyncobj Raft made durable, in front of the core state machine."""

from .data_dir import DataDirectoryError, DataDirectoryInUse, DataDirectoryLock
from .journal import DurableJournal, JournalCorrupted
from .node import ApplyListener, MembershipRefused, ReplicatedStore, ReplicationError
from .snapshot import SnapshotCorrupted

__all__ = [
    "ApplyListener",
    "DataDirectoryError",
    "DataDirectoryInUse",
    "DataDirectoryLock",
    "DurableJournal",
    "JournalCorrupted",
    "MembershipRefused",
    "ReplicatedStore",
    "ReplicationError",
    "SnapshotCorrupted",
]
