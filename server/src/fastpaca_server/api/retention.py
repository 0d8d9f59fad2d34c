"""``--tombstone-retention``: the leader of each Raft group purges old tombstones.

At start and then every :func:`interval` seconds, for every group this node
leads, each context tombstoned more than ``--tombstone-retention`` seconds ago
is purged (a :class:`~fastpaca_server.core.Purge` with ``by="retention"``),
exactly as ``DELETE /v1/contexts/{id}?purge=true`` would. A purge is a command
like any other, so followers apply it too; a new leader picks up what its
predecessor did not get to on its next pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from ..core import DomainError, Purge
from ..replication import ReplicatedStore, ReplicationError
from .keys import CONFIG, STORE
from .startup import StoreStartup

logger = logging.getLogger(__name__)

RETENTION_BY = "retention"
"""``purged_by`` of a purge made by the retention."""
MAX_INTERVAL_SECONDS = 60.0
BATCH = 100
"""Purges proposed at once (one Raft entry, as concurrent submits are grouped)."""


def interval(retention: float) -> float:
    """Seconds between two passes: the retention itself, between 1 s and a minute."""
    return min(MAX_INTERVAL_SECONDS, max(1.0, retention))


def expired(store: ReplicatedStore, retention: float, now_ms: int) -> list[str]:
    """Ids of the group's contexts tombstoned at least ``retention`` seconds before now."""
    cutoff = now_ms - int(retention * 1000)
    with store.read() as machine:
        return [
            context.id
            for context in machine.contexts.values()
            if context.status == "tombstoned"
            and (context.tombstoned_at if context.tombstoned_at is not None else 0) <= cutoff
        ]


async def purge_expired(startup: StoreStartup, retention: float) -> int:
    """One pass over the groups this node leads; returns how many contexts it purged."""
    if not startup.ready:
        return 0
    purged = 0
    for store in startup.get().stores:
        if not store.is_leader:
            continue
        found = expired(store, retention, int(time.time() * 1000))
        for start in range(0, len(found), BATCH):
            now = int(time.time() * 1000)
            chunk = found[start : start + BATCH]
            commands = [Purge(context_id, now, RETENTION_BY) for context_id in chunk]
            results = await asyncio.gather(
                *(store.submit(command) for command in commands), return_exceptions=True
            )
            for command, result in zip(commands, results, strict=True):
                if isinstance(result, DomainError | ReplicationError):
                    logger.warning("retention: could not purge %s: %s", command.context_id, result)
                elif isinstance(result, BaseException):
                    raise result
                else:
                    purged += 1
    if purged:
        logger.info("retention: purged %d tombstoned contexts", purged)
    return purged


async def run(startup: StoreStartup, retention: float) -> None:
    """Until cancelled: a pass once the store is ready, then one every :func:`interval`."""
    while True:
        try:
            await purge_expired(startup, retention)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("retention: the pass failed; it goes on")
        await asyncio.sleep(interval(retention) if startup.ready else 0.2)


async def retention_context(app: web.Application) -> AsyncIterator[None]:
    """The retention task for the app's life (none with ``--tombstone-retention 0``)."""
    retention = app[CONFIG].tombstone_retention
    task = asyncio.create_task(run(app[STORE], retention)) if retention > 0 else None
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
