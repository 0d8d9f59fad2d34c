"""Write-behind to the archive, run by the leader of each Raft group.

How a message reaches Postgres::

    Raft thread                          │ event loop
    ─────────────────────────────────────┼──────────────────────────────────────────
    apply(append / put / patch / delete) │
    ArchiveListener.command_applied ─────┼─▶ ArchiveWriter: the context is dirty
                                         │   every tick, on the leader of its group:
                                         │     read (archived_seq, last_seq] from the
                                         │     hot tail (never trimmed above it)
                                         │     INSERT … ON CONFLICT DO NOTHING (one
                                         │     transaction, with the contexts row)
    apply(MarkArchived) ◀────────────────┼──   submit MarkArchived(up to that seq)
      watermark up, hot tail trimmed     │   Postgres down? keep the backlog, back off

Delivery is at least once (a leader that dies between the insert and the
``MarkArchived`` leaves the watermark behind; its successor inserts those
rows again) and the primary key ``(context_id, seq)`` with ``ON CONFLICT DO
NOTHING`` makes it exactly once in the table. Appends never wait for the
archive: while Postgres is down the backlog stays in memory (the hot tail
is never trimmed above the watermark), and lands when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import attrs

from ..core import (
    AppendResult,
    Command,
    Context,
    MarkArchived,
    StateMachine,
)
from ..core.errors import DomainError
from ..core.models import REDACTED_PART, converter
from ..replication import ReplicatedStore
from ..replication.bridge import ThreadToLoopQueue
from ..replication.shards import Shards
from ..tokens import count_parts
from .store import ArchivedContext, ArchivedMessage, ArchiveStore, ArchiveUnavailable

logger = logging.getLogger(__name__)
# asyncpg's pool logs a traceback at every reconnect attempt while Postgres is down;
# the writer says it once, with the backlog (see ArchiveWriter._failed).
logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)

TICK_SECONDS = 0.1
"""How often the writer looks at dirty contexts (and the longest an idle one waits)."""
BACKOFF_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)
"""Waits after 1, 2, … failures in a row (Postgres down or slow)."""


@attrs.define
class ArchiveStatus:
    """What ``/metrics`` and the logs say about the archive on this node."""

    backlog: int = 0
    """Messages of contexts this node leads that are not in the archive yet."""
    lag_seconds: float = 0.0
    """Age of the oldest of them."""
    rows: int = 0
    failures: int = 0
    connected: bool = False
    last_error: str | None = None


class ArchiveListener:
    """Runs on the Raft thread: marks contexts whose archive rows are out of date."""

    def __init__(self, writer: ArchiveWriter, loop: asyncio.AbstractEventLoop) -> None:
        self._queue: ThreadToLoopQueue[str] = ThreadToLoopQueue(loop, writer.mark_dirty)

    def state_installed(self, machine: StateMachine) -> None:
        for context in machine.contexts.values():
            self._queue.put(context.id)

    def command_applied(self, command: Command, result: Any) -> None:
        if isinstance(command, MarkArchived):
            return
        if isinstance(result, AppendResult) and result.replayed:
            return
        self._queue.put(command.context_id)


class ArchiveWriter:
    """The write-behind loop of one node (it writes only for groups it leads)."""

    def __init__(
        self,
        dsn: str,
        shards: Callable[[], Shards | None],
        *,
        tail_keep: int,
        batch: int = 1000,
        on_written: Callable[[int], None] = lambda rows: None,
        on_failed: Callable[[], None] = lambda: None,
    ) -> None:
        self._dsn = dsn
        self._shards = shards
        self.tail_keep = tail_keep
        self.batch = batch
        self.store: ArchiveStore | None = None
        self.status = ArchiveStatus()
        self._dirty: dict[str, int] = {}
        """Contexts whose rows may be out of date, with the mark of their latest change
        (a context changed while its batch was being written stays dirty)."""
        self._marks = 0
        self._wake = asyncio.Event()
        self._on_written = on_written
        self._on_failed = on_failed
        self._failures_in_a_row = 0
        self._leading: set[int] = set()
        self._catch_up: set[str] = set()
        """Contexts whose next batch is logged (after a failure or a change of leader)."""
        self._erased: set[tuple[str, int]] = set()
        """Erasures written while this node leads: ``(context, 0)`` a purge's delete,
        ``(context, seq)`` a redacted row (a new leader writes them all again)."""

    def listener(self, loop: asyncio.AbstractEventLoop) -> ArchiveListener:
        return ArchiveListener(self, loop)

    def mark_dirty(self, context_ids: list[str]) -> None:
        for context_id in context_ids:
            self._marks += 1
            self._dirty[context_id] = self._marks
        self._wake.set()

    def _clean(self, context_id: str, mark: int | None) -> None:
        """Forget ``context_id`` unless it changed again since ``mark`` was read."""
        if self._dirty.get(context_id) == mark:
            del self._dirty[context_id]

    async def open(self) -> ArchiveStore | None:
        """Connect and migrate if not connected yet; ``None`` while Postgres is unreachable."""
        if self.store is not None:
            return self.store
        try:
            store = await ArchiveStore.open(self._dsn)
            await store.migrate()
        except ArchiveUnavailable as error:
            self._failed(error)
            return None
        self.store = store
        self.status.connected = True
        logger.info("archive: connected, schema up to date")
        return store

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()
            self.store = None

    async def run(self) -> None:
        """Until cancelled: flush dirty contexts of the groups this node leads.
        Connects (and migrates the schema) at once, so a node that boots with
        Postgres up has its schema ready before the first write."""
        await self.open()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_SECONDS)
            self._wake.clear()
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("archive: the writer failed; it goes on")
            if self._failures_in_a_row:
                index = min(self._failures_in_a_row, len(BACKOFF_SECONDS)) - 1
                await asyncio.sleep(BACKOFF_SECONDS[index])

    async def _tick(self) -> None:
        shards = self._shards()
        if shards is None or not shards.ready:
            return
        self._notice_leadership(shards)
        self.refresh()
        if not self._dirty:
            return
        store = await self.open()
        if store is None:
            return
        for context_id, mark in list(self._dirty.items()):
            group = shards.for_context(context_id)
            if not group.is_leader:
                self._clean(context_id, mark)  # its leader archives it (we rescan on leading)
                continue
            batch = self._batch(group, context_id)
            if batch is None:
                self._clean(context_id, mark)
                continue
            messages, row, up_to, more, release = batch
            try:
                written = await store.write(messages, [row])
                # After the write: a redact applied while the batch was read is rewritten.
                await self._erase(store, group, context_id)
            except ArchiveUnavailable as error:
                self._failed(error)
                return
            catching_up = self._failures_in_a_row > 0 or context_id in self._catch_up
            self._catch_up.discard(context_id)
            self._succeeded(written)
            (logger.info if catching_up else logger.debug)(
                "archive: %s: %d new rows of %d, up to seq %d",
                context_id,
                written,
                len(messages),
                up_to,
            )
            if messages or release:
                with contextlib.suppress(DomainError):
                    await group.submit(MarkArchived(context_id, up_to, self.tail_keep))
            if not more:
                self._clean(context_id, mark)

    async def _erase(self, store: ArchiveStore, group: ReplicatedStore, context_id: str) -> None:
        """Delete a purged context's rows, rewrite redacted ones (idempotent; a failure
        leaves the context dirty, so it is retried with the write-behind)."""
        with group.read() as machine:
            context = machine.contexts.get(context_id)
            if context is None:
                return
            purged = context.status == "purged"
            pending = [seq for seq in context.redactions if (context_id, seq) not in self._erased]
            tokenizer = context.config.tokenizer
        if purged:
            if (context_id, 0) not in self._erased:
                deleted = await store.purge(context_id)
                self._erased.add((context_id, 0))
                logger.info("archive: %s purged: %d rows deleted", context_id, deleted)
            return
        if pending:
            tokens, per_part = count_parts([dict(REDACTED_PART)], tokenizer)
            changed = await store.redact(context_id, pending, tokens, per_part)
            self._erased.update((context_id, seq) for seq in pending)
            logger.info("archive: %s: %d rows redacted", context_id, changed)

    def refresh(self) -> ArchiveStatus:
        """Measure the backlog and lag now (``/metrics`` calls this at each scrape)."""
        shards = self._shards()
        if shards is not None and shards.ready:
            backlog, oldest = self._measure(shards)
            self.status.backlog = backlog
            self.status.lag_seconds = max(time.time() - oldest / 1000, 0.0) if oldest else 0.0
        return self.status

    def _notice_leadership(self, shards: Shards) -> None:
        """A group this node just came to lead: every context of it may have a backlog
        its former leader did not archive."""
        for index, group in enumerate(shards.stores):
            leading = group.is_leader
            if leading and index not in self._leading:
                with group.read() as machine:
                    stale = [c.id for c in machine.contexts.values() if _behind(c)]
                    erasing = [
                        c.id
                        for c in machine.contexts.values()
                        if c.status == "purged" or c.redactions or _releasable(c)
                    ]
                self._erased.clear()  # the former leader may not have written them
                self.mark_dirty(erasing)
                self.mark_dirty(stale)
                self._catch_up.update(stale)
                logger.info("archive: leading group %d, %d contexts to catch up", index, len(stale))
            if leading:
                self._leading.add(index)
            else:
                self._leading.discard(index)

    def _measure(self, shards: Shards) -> tuple[int, int]:
        """Backlog (messages) and the oldest unarchived message's time, over the
        dirty contexts this node leads (the others have none)."""
        backlog, oldest = 0, 0
        for context_id in list(self._dirty):
            group = shards.for_context(context_id)
            if not group.is_leader:
                continue
            with group.read() as machine:
                context = machine.contexts.get(context_id)
                if context is None:
                    continue
                backlog += context.last_seq - context.archived_seq
                first = context.hot(context.archived_seq + 1)
                if first is not None and (not oldest or first.created_at < oldest):
                    oldest = first.created_at
        return backlog, oldest

    def _batch(
        self, group: ReplicatedStore, context_id: str
    ) -> tuple[list[ArchivedMessage], ArchivedContext, int, bool, bool] | None:
        """The next rows of ``context_id``: up to ``batch`` messages after the watermark,
        the context's row, the last seq included, whether more remain, and whether a
        tombstone can drop its history from memory once these rows are written (a
        purged context's row keeps only its id, status, counters and times)."""
        with group.read() as machine:
            context = machine.contexts.get(context_id)
            if context is None:
                return None
            start = context.archived_seq + 1
            end = min(context.last_seq, context.archived_seq + self.batch)
            messages = []
            for seq in range(start, end + 1):
                message = context.hot(seq)
                if message is None:  # cannot happen: nothing above the watermark is trimmed
                    break
                messages.append(
                    ArchivedMessage(
                        context_id=context_id,
                        seq=seq,
                        raw=message.raw,
                        part_tokens=message.part_tokens,
                        created_at=message.created_at,
                    )
                )
            purged = context.status == "purged"
            row = ArchivedContext(
                context_id=context_id,
                config={} if purged else converter.unstructure(context.config),
                metadata={} if purged else context.metadata,
                status=context.status,
                version=context.version,
                last_seq=context.last_seq,
                archived_seq=max(context.archived_seq, end if messages else 0),
                created_at=context.created_at,
                updated_at=context.updated_at,
            )
            more = end < context.last_seq
            release = _releasable(context) and not more
        up_to = messages[-1].seq if messages else context.archived_seq
        return messages, row, up_to, more, release

    def _failed(self, error: ArchiveUnavailable) -> None:
        self._failures_in_a_row += 1
        self.status.failures += 1
        self._on_failed()
        self.status.last_error = str(error)
        self.status.connected = False
        if self._failures_in_a_row in (1, 10) or self._failures_in_a_row % 100 == 0:
            logger.warning(
                "archive: %s (%d failures in a row; backlog %d messages, retrying with backoff)",
                error,
                self._failures_in_a_row,
                self.status.backlog,
            )

    def _succeeded(self, written: int) -> None:
        if self._failures_in_a_row:
            logger.info(
                "archive: Postgres answers again after %d failures", self._failures_in_a_row
            )
        self._failures_in_a_row = 0
        self.status.connected = True
        self.status.last_error = None
        self.status.rows += written
        self._on_written(written)


def _behind(context: Context) -> bool:
    return context.last_seq > context.archived_seq


def _releasable(context: Context) -> bool:
    """A tombstone still holding messages in memory (all of which can be archived)."""
    return context.status == "tombstoned" and context.holds_history
