"""Replication: pysyncobj Raft made durable, in front of the core state machine."""

from .journal import DurableJournal
from .node import ReplicatedStore, ReplicationError

__all__ = ["DurableJournal", "ReplicatedStore", "ReplicationError"]
