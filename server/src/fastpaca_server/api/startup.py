"""The app's store, opened in the background while the server already listens.

Opening a data directory reads the journal and snapshot; replaying the
journal then runs on pysyncobj's thread and can take minutes for a large
journal. :class:`StoreStartup` starts both without holding up the listening
socket, and is what the rest of the app asks: the readiness middleware and
``/health/ready`` read :attr:`~StoreStartup.ready`, handlers call
:meth:`~StoreStartup.get`, and the CLI watches :attr:`~StoreStartup.task`
so that a store that cannot open (a corrupted journal, a damaged snapshot)
ends the process instead of leaving it answering 503 forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Sequence

from .. import tokens
from ..config import ServerConfig
from ..core import PutMember
from ..core.models import TOKENIZERS
from ..replication import ApplyListener, ReplicatedStore, ReplicationError
from ..replication.shards import Shards, check_groups, group_cluster, group_dir

logger = logging.getLogger(__name__)


class NotReady(Exception):
    """The node has not replayed its state yet (HTTP 503 ``not_ready``)."""

    message = (
        "The node is starting: it is replaying its journal or has not become leader of its "
        "group yet. Retry after the Retry-After seconds."
    )


class StoreStartup:
    """Opens the :class:`ReplicatedStore` of ``config`` in the background and holds it."""

    def __init__(self, config: ServerConfig) -> None:
        self._config = config
        self._store: Shards | None = None
        self._constructing: asyncio.Future[Shards] | None = None
        self._task: asyncio.Task[Shards] | None = None
        self._listeners: Callable[[], Sequence[ApplyListener]] = tuple
        self._heap_task: asyncio.Task[None] | None = None
        self._member_task: asyncio.Task[None] | None = None

    @property
    def task(self) -> asyncio.Task[Shards]:
        """Finishes with the store once it is ready, or with the error that stopped it."""
        if self._task is None:
            raise RuntimeError("the store has not been started")
        return self._task

    @property
    def ready(self) -> bool:
        """The store is open, its journal replayed, and the node leads its group."""
        return self._store is not None and self._store.ready

    @property
    def opened(self) -> Shards | None:
        """The store once its files are open, ready or not (the cluster view)."""
        return self._store

    def get(self) -> Shards:
        """The node's Raft groups, or :class:`NotReady` until :attr:`ready`."""
        if not self.ready or self._store is None:
            raise NotReady()
        return self._store

    def start(self, apply_listeners: Callable[[], Sequence[ApplyListener]] = tuple) -> None:
        """Begin opening the store (returns at once). ``apply_listeners`` is called once
        per Raft group for the listeners of that group; they see its replay."""
        self._listeners = apply_listeners
        self._task = asyncio.create_task(self._open(), name="open the store")

    async def _open(self) -> Shards:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        config = self._config
        listeners = self._listeners
        # Loading an encoding takes about a second: started here, on a worker
        # thread, so the first request that counts tokens does not stall the
        # event loop (requests that come earlier count on a worker thread too).
        loop.run_in_executor(None, _load_tokenizers)
        self._constructing = loop.run_in_executor(None, lambda: _open_groups(config, listeners))
        # Shielded: cancelling startup must not lose a store that is being built.
        store = self._store = await asyncio.shield(self._constructing)
        entries = sum(len(group.journal) for group in store.stores)
        logger.info(
            "opened %s (%d Raft groups, %d journal entries); replaying",
            config.data_dir,
            len(store.stores),
            entries,
        )
        for group in store.stores:
            await group.wait_ready(timeout=None)
        logger.info("ready after %.1f s", time.monotonic() - started)
        gc.freeze()
        self._heap_task = asyncio.create_task(_freeze_the_heap_now_and_then(), name="gc freeze")
        if config.cluster is not None:
            self._member_task = asyncio.create_task(
                _record_membership(store, config), name="record membership"
            )
        return store

    async def close(self) -> None:
        """Stop opening (if still at it) and close the store."""
        for task in (self._heap_task, self._member_task):
            if task is not None:
                task.cancel()
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await self._task
        store = self._store
        if store is None and self._constructing is not None:
            with contextlib.suppress(Exception):
                store = await self._constructing
        if store is not None:
            await asyncio.get_running_loop().run_in_executor(None, store.close)


def _load_tokenizers() -> None:
    for name in TOKENIZERS:
        tokens.encoding(name)


MEMBERSHIP_RETRY_SECONDS = 1.0


def _open_groups(config: ServerConfig, listeners: Callable[[], Sequence[ApplyListener]]) -> Shards:
    """Open every Raft group of the data directory (closing the opened ones if one fails)."""
    check_groups(config.data_dir, config.groups)
    stores: list[ReplicatedStore] = []
    try:
        for group in range(config.groups):
            stores.append(
                ReplicatedStore(
                    group_dir(config.data_dir, group),
                    log_compaction_entries=config.log_compaction_entries,
                    submit_timeout=config.submit_timeout,
                    repair_journal=config.repair_journal,
                    apply_listeners=listeners(),
                    cluster=group_cluster(config.cluster, group),
                )
            )
    except BaseException:
        for store in stores:
            store.close()
        raise
    return Shards(stores)


async def _record_membership(shards: Shards, config: ServerConfig) -> None:
    """Record this node's id and addresses in the replicated member table, and
    again whenever the record is missing or different (a restored snapshot, a
    changed --advertise-url). Retries while the cluster has no leader."""
    assert config.cluster is not None
    store = shards.first
    member = PutMember(config.node_id, config.cluster.raft_bind, config.http_url)
    while True:
        with store.read() as machine:
            recorded = machine.members.get(member.node_id) == member
        if not recorded:
            try:
                await store.record_member(member)
                logger.info("recorded member %s (%s)", member.node_id, member.raft_address)
                continue
            except ReplicationError as error:
                logger.info("recording member %s: %s", member.node_id, error.message)
        await asyncio.sleep(MEMBERSHIP_RETRY_SECONDS)


HEAP_FREEZE_SECONDS = 1.0
"""Measured (``overload`` benchmark, a ``gc.callbacks`` probe): every 30 s, the full
collections under load walked up to 30 s of allocations, 50-68 ms each about every
4 s, and freed nothing; every second they take 2-3 ms. ``gc.freeze()`` itself costs
next to nothing (it moves whole lists)."""


async def _freeze_the_heap_now_and_then() -> None:
    """Keep Python's cyclic garbage collector off the long-lived state.

    The state holds millions of objects (every message of every context). A
    full collection walks all of them, which paused every request for up to
    a second on large states. Nothing in the state forms reference cycles
    (reference counting frees it), so everything that has lived a while is
    moved out of the collector's sight with ``gc.freeze()``: full
    collections then only walk what was allocated since. Freezing also keeps
    the collector from touching (and so copying) the pages a snapshot's
    forked child is reading.

    The price: a reference cycle alive at a freeze (a request in flight that
    makes one) is never collected if it becomes garbage later. The request
    path makes none: the collections under load freed nothing (the probe of
    :data:`HEAP_FREEZE_SECONDS`), and in the overload benchmark the RSS grows
    by what the stored messages take, as it did with a freeze every 30 s.
    """
    while True:
        await asyncio.sleep(HEAP_FREEZE_SECONDS)
        gc.freeze()
