"""The optional PostgreSQL archive of every message (see :mod:`.store`)."""

from .store import (
    SCHEMA_VERSION,
    ArchivedContext,
    ArchivedMessage,
    ArchiveStore,
    ArchiveUnavailable,
)

__all__ = [
    "SCHEMA_VERSION",
    "ArchiveStore",
    "ArchiveUnavailable",
    "ArchivedContext",
    "ArchivedMessage",
]
