"""The replicated store: pysyncobj Raft in front of the core state machine.

``ReplicatedStore.submit(command)`` proposes a command (as canonical JSON) to
the Raft log and resolves once it is committed and applied, with the core's
result or its :class:`~fastpaca_server.core.DomainError`. Reads go to the
local state machine under a lock. A single node is a one-member cluster on
the same code path.

What we add to pysyncobj (docs/architecture.md lists the gaps they close):

* :class:`DurableJournal` installed as ``pysyncobj.syncobj.createJournal``
  (flush before acknowledging, atomic compaction, torn-tail repair, and a
  :class:`~.journal.JournalCorrupted` stop for any other damage);
* our own snapshot serializer (:mod:`.snapshot`), always with a journal; the
  snapshot is read and checked before pysyncobj starts, so a damaged one
  stops the constructor with :class:`~.snapshot.SnapshotCorrupted`;
* ``_SyncObj__loadDumpFile`` overridden so a restart with a snapshot newer
  than the journal start keeps every journal entry after the snapshot point
  (Raft §7) instead of only two;
* a log compaction forced on every node after a purge or redact
  (``_RaftNode._compact_after_erasure``), so the erased content leaves the
  journal and the snapshot at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, Literal, Protocol

import attrs
import pysyncobj.syncobj
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.node import Node, TCPNode
from pysyncobj.transport import Transport

from ..core import (
    Command,
    DomainError,
    Purge,
    PutMember,
    Redact,
    StateMachine,
    command_from_json,
    command_to_json,
)
from ..core.models import converter
from .bridge import settle_all_from_thread
from .cluster import ClusterConfig, DurableTCPTransport
from .journal import DurableJournal, repair_journal_file
from .snapshot import SnapshotStore

logger = logging.getLogger(__name__)

JOURNAL_FILE = "raft.journal"
MAX_GROUP = 256
"""Most commands proposed in one Raft entry."""
MAX_GROUP_CHARS = 4 * 1024 * 1024
"""A group stops growing at about this many characters of JSON (one command
may be larger on its own: up to the largest request body)."""
LEADER_FALLBACK_SECONDS = 5.0
APPEND_ENTRIES_BYTES = 64 * 1024 * 1024
MEMBERSHIP_TIMEOUT_SECONDS = 30.0
"""A membership change waits at least this long (it may wait for a pending one)."""
CLOSE_TIMEOUT_SECONDS = 10.0
"""How long :meth:`ReplicatedStore.close` waits for the Raft thread to stop."""
_UNKNOWN_WRITE = (
    "The write was not confirmed: retry it with the same idempotency key, which is safe "
    "whether or not it was stored"
)
_NO_BARRIER = (
    "The node could not confirm that it is up to date with the cluster (no leader, or no "
    "majority reachable); retry"
)
_UNKNOWN_CHANGE = (
    "The membership change was not confirmed; GET /v1/cluster shows whether it happened"
)
_FAIL_REASONS = {
    FAIL_REASON.QUEUE_FULL: "the Raft queue is full",
    FAIL_REASON.MISSING_LEADER: "no leader is known",
    FAIL_REASON.DISCARDED: "the entry was discarded",
    FAIL_REASON.NOT_LEADER: "this node is not the leader",
    FAIL_REASON.LEADER_CHANGED: "the leader changed",
    FAIL_REASON.REQUEST_DENIED: "the leader denied the request",
    FAIL_REASON.UNKNOWN_OUTCOME: "the outcome could not be tracked",
}
SNAPSHOT_FILE = "raft.snapshot"


def _create_journal(journal_file: str | None = None) -> Any:
    if journal_file is None:
        raise ValueError("Fastpaca always runs pysyncobj with a journal on disk")
    return DurableJournal(journal_file)


pysyncobj.syncobj.createJournal = _create_journal


class _NoFalseTruncationAlarm(logging.Filter):
    """pysyncobj logs CRITICAL "truncating already-applied log entries" before
    every follower truncation; ours keeps matching entries (see
    ``_RaftNode._SyncObj__deleteEntriesFrom``), so the alarm is false, and the
    journal logs a real conflict itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("truncating already-applied log entries")


logging.getLogger("pysyncobj.syncobj").addFilter(_NoFalseTruncationAlarm())


class MembershipRefused(Exception):
    """The leader refused a membership change (HTTP 409 ``membership_change_refused``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ReplicationError(Exception):
    """The command is not known to be committed (HTTP 503); the message says whether
    its outcome is unknown. Either way a retry with the same idempotency key is safe."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LocalTransport(Transport):  # type: ignore[misc]
    """Transport of a one-member cluster: no sockets, always ready."""

    def tryGetReady(self) -> None:
        pass

    @property
    def ready(self) -> bool:
        return True

    def send(self, node: Any, message: Any) -> bool:
        return False


class _RaftNode(SyncObj):  # type: ignore[misc]
    """pysyncobj object whose one replicated method hands commands to the core."""

    # pysyncobj's private state, read and written by the fixed dump loading below.
    _SyncObj__raftCommitIndex: int
    _SyncObj__raftLastApplied: int

    def __init__(
        self, store: ReplicatedStore, conf: SyncObjConf, cluster: ClusterConfig | None
    ) -> None:
        self._store = store
        self._pad_after = 0.0
        if cluster is None:
            super().__init__(Node("local"), [], conf, transportClass=LocalTransport)
        else:
            super().__init__(
                cluster.raft_bind, list(cluster.peers), conf, transportClass=DurableTCPTransport
            )
        self.addOnTickCallback(self._commit_without_waiting)
        self.addOnTickCallback(self._compact_after_erasure)

    @replicated  # type: ignore[untyped-decorator]
    def apply_command(self, payload: str) -> list[tuple[Any, DomainError | None]]:
        # pysyncobj applies entry ``last applied + 1`` (it counts it applied afterwards).
        return self._store._apply(payload, self._SyncObj__raftLastApplied + 1)

    def _commit_without_waiting(self) -> None:
        # A leader commits entries on the tick after it adds them; wake the
        # poller so that tick runs now instead of after autoTickPeriod.
        log_end: int = self._SyncObj__getCurrentLogIndex()
        commit_index = self._SyncObj__raftCommitIndex
        if log_end > commit_index and self._isLeader():
            notifier = getattr(self, "_SyncObj__pipeNotifier", None)
            if notifier is not None:
                notifier.notify()

    def _compact_after_erasure(self) -> None:
        """Force a log compaction once the entries after an erasure are applied.

        A purge or redact applied from entry P (:meth:`ReplicatedStore._apply`)
        asks for index P + 2: pysyncobj's snapshot keeps the two newest applied
        entries (pickled) and the journal keeps them too, so only a snapshot
        taken once P + 2 is applied holds nothing from before the erasure, and
        the journal rewrite after it (:meth:`.journal.DurableJournal.deleteEntriesTo`:
        a new file renamed over the old one) drops every entry up to P. Every
        node does this for its own journal; the leader proposes empty entries
        when nothing else would reach P + 2.
        """
        store = self._store
        target = store._erasure_index
        if target is None:
            return
        if self._SyncObj__raftLastApplied >= target:
            store._erasure_index = None
            self.forceLogCompaction()
            return
        if not self._isLeader():
            return
        log_end: int = self._SyncObj__getCurrentLogIndex()
        now = time.monotonic()
        if log_end < target and now >= self._pad_after:
            self._pad_after = now + 1.0  # again after a second, if they were lost
            for _ in range(target - log_end):
                self.apply_command("[null]")

    def _SyncObj__deleteEntriesFrom(self, fromIDx: int) -> None:
        """A follower given entries after ``fromIDx - 1``: delete only from the
        first conflicting one (Raft §5.3), not everything after (see
        :meth:`.journal.DurableJournal.truncate_on_conflict_from`).

        With dynamic membership, pysyncobj has just undone the membership
        changes of every entry from ``fromIDx`` on, expecting to delete them
        all. Entries that stay keep their changes, so they are applied again
        here, and the journal undoes the changes of the entries a conflict
        really deletes.
        """
        journal = self._SyncObj__raftLog
        position = fromIDx - journal[0][1]
        if position < 0:
            return
        if not self._SyncObj__conf.dynamicMembershipChange:
            journal.truncate_on_conflict_from(position)
            return
        for entry in journal[position:]:
            self._change_membership(entry, reverse=False)
        journal.truncate_on_conflict_from(position, on_drop=self._undo_membership)

    def _change_membership(self, entry: tuple[bytes, int, int], *, reverse: bool) -> None:
        request = self._SyncObj__parseChangeClusterRequest(entry[0])
        if request is not None:
            self._SyncObj__doChangeCluster(request, reverse=reverse)

    def _undo_membership(self, dropped: list[tuple[bytes, int, int]]) -> None:
        for entry in reversed(dropped):
            self._change_membership(entry, reverse=True)

    def members(self) -> list[str]:
        """Raft addresses of the other members, as this node knows them now."""
        for _ in range(10):  # the Raft thread may change the set while it is copied
            try:
                return sorted(node.address for node in self._SyncObj__otherNodes)
            except RuntimeError:
                continue
        return []

    def _SyncObj__loadDumpFile(self, clearJournal: bool) -> None:
        """pysyncobj's dump loading, fixed to keep entries after the snapshot point."""
        try:
            data = self._SyncObj__serializer.deserialize()
            last_entry, previous_entry = data[1], data[2]
            journal = self._SyncObj__raftLog
            position = _find_entry(journal, previous_entry)
            if position is None or _find_entry(journal, last_entry) != position + 1:
                journal.clear()
                journal.add(*previous_entry)
                journal.add(*last_entry)
            elif position > 0:
                journal.deleteEntriesTo(position)
            if self._SyncObj__conf.dynamicMembershipChange and len(data) > 3:
                own = self._SyncObj__selfNode
                self._SyncObj__updateClusterConfiguration([n for n in data[3] if n != own])
            self._SyncObj__raftLastApplied = last_entry[1]
            if self._SyncObj__raftCommitIndex < last_entry[1]:
                self._SyncObj__raftCommitIndex = last_entry[1]
            log_end = self._SyncObj__getCurrentLogIndex()
            if self._SyncObj__raftCommitIndex > log_end:
                self._SyncObj__raftCommitIndex = log_end
            journal.setRaftCommitIndex(self._SyncObj__raftCommitIndex)
            self._SyncObj__onSetCodeVersion(0)
        except Exception as error:
            # The snapshot was checked before the node started, so this is a
            # bug or a disk failure since. Stop instead of running without
            # the state (the tick would otherwise retry this forever).
            logger.exception("failed to load the snapshot")
            self._store._fail(error)
            self.destroy()
            raise


def _find_entry(journal: Any, entry: tuple[bytes, int, int]) -> int | None:
    """Position of the entry with ``entry``'s index and term in the journal, if any."""
    if len(journal) == 0:
        return None
    position: int = entry[1] - journal[0][1]
    if 0 <= position < len(journal) and journal[position][2] == entry[2]:
        return position
    return None


@attrs.frozen
class RaftView:
    """One group's Raft state as this node sees it: the leader's Raft address
    (``"local"`` on a single node; ``None`` while none is known), whether each
    peer is connected, the commit and applied indexes, the member records."""

    leader_address: str | None
    connected: dict[str, bool]
    commit_index: int
    applied_index: int
    members: dict[str, PutMember]


class ApplyListener(Protocol):
    """Told of every change of the local state, on the Raft thread, under the store's lock.

    ``state_installed`` gets a whole state (the empty one or the current one
    at registration, a snapshot at start-up, one sent by a leader);
    ``command_applied`` gets each command applied after it, with its result
    (which carries the new ``version``), before the next command is applied,
    so the state machine is exactly as that command left it. Refused
    commands are not reported. Neither may block: they hold up every write.
    """

    def state_installed(self, machine: StateMachine) -> None: ...

    def command_applied(self, command: Command, result: Any) -> None: ...


class ReplicatedStore:
    """The state machine of one Raft group, replicated through pysyncobj."""

    def __init__(
        self,
        data_dir: str,
        *,
        log_compaction_entries: int = 100_000,
        log_compaction_seconds: float = 3600.0,
        submit_timeout: float = 10.0,
        repair_journal: bool = False,
        apply_listeners: Sequence[ApplyListener] = (),
        cluster: ClusterConfig | None = None,
    ) -> None:
        """Open the journal and snapshot of ``data_dir`` and start the Raft thread.

        Replaying the journal happens on the Raft thread afterwards: see
        :attr:`ready` and :meth:`wait_ready`. Raises
        :class:`~.journal.JournalCorrupted` or :class:`~.snapshot.SnapshotCorrupted`
        (nothing on disk changed) unless the node can start. With
        ``repair_journal``, a corrupted journal is first copied to a
        quarantine file beside it and truncated at the damage.
        ``apply_listeners`` are registered before the Raft thread starts, so
        they see the journal replayed (see :meth:`add_apply_listener`).
        With ``cluster``, the node is one member of a Raft cluster over TCP
        (see :mod:`.cluster`); without, a one-member cluster with no sockets.
        """
        os.makedirs(data_dir, exist_ok=True)
        self.data_dir = data_dir
        self.submit_timeout = submit_timeout
        self.cluster = cluster
        self._machine = StateMachine()
        self._lock = threading.RLock()
        self._ready = threading.Event()
        self._waiters_lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = []
        self._settled = False
        self._failure: BaseException | None = None
        self._listeners: list[ApplyListener] = []
        self._pending: list[tuple[str, asyncio.Future[Any]]] = []
        self._pending_bytes = 0
        self._proposal_scheduled = False
        self._erasure_index: int | None = None
        """The Raft index that must be applied before the log compaction that erases
        a purge's or redact's content from disk (see ``_RaftNode._compact_after_erasure``)."""
        for listener in apply_listeners:
            self.add_apply_listener(listener)
        journal_path = os.path.join(data_dir, JOURNAL_FILE)
        if repair_journal and os.path.exists(journal_path):
            repair_journal_file(journal_path)
        self.snapshots = SnapshotStore(
            os.path.join(data_dir, SNAPSHOT_FILE), self._current_state, self._install_state
        )
        self.snapshots.load()
        conf = SyncObjConf(
            journalFile=journal_path,
            fullDumpFile=self.snapshots.path,
            serializer=self.snapshots.serialize,
            deserializer=self.snapshots.deserialize,
            serializeChecker=self.snapshots.check,
            logCompactionMinEntries=log_compaction_entries,
            logCompactionMinTime=log_compaction_seconds,
            logCompactionSplit=False,
            appendEntriesUseBatch=False,
            # Members can be added and removed while the cluster runs (never on
            # a single node, whose one-member group has no transport).
            dynamicMembershipChange=cluster is not None,
            onReady=self._on_ready,
            password=cluster.secret if cluster is not None else None,
            # A leader cut off from its followers stops acting as leader after
            # this long (pysyncobj's default is 30 s; reads never trust it:
            # see sync()).
            leaderFallbackTimeout=LEADER_FALLBACK_SECONDS,
            # pysyncobj sends an entry larger than this in chunks, and its last
            # chunk is cut by the command's length, not the pickled entry's: an
            # entry just under a multiple of the size arrives short (EOFError on
            # the follower). Above the largest entry a request can make, no entry
            # is chunked; a lagging follower gets at most this much per message.
            appendEntriesBatchSizeBytes=APPEND_ENTRIES_BYTES,
        )
        self._node = _RaftNode(self, conf, cluster)

    # --- lifecycle -----------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True once the node leads and has applied everything it committed.

        pysyncobj's ``onReady`` fires on the Raft thread, once, at the end of
        the first tick in which the node's last applied index equals the
        leader's commit index. Only a leader (or a follower that heard from
        one) knows that index, and a new leader commits a no-op of its own
        term first, so for our one-member group it means: leader, and every
        journal entry replayed.
        """
        if not self._ready.is_set():
            return False
        if self.cluster is None:
            return bool(self._node._isLeader())
        return self._node._getLeader() is not None

    @property
    def is_leader(self) -> bool:
        """Whether this node leads its group now (background jobs run on the leader)."""
        return self.ready and bool(self._node._isLeader())

    async def wait_ready(self, timeout: float | None = 30.0) -> None:
        """Wait until :attr:`ready` (no time limit with ``None``).

        Raises :class:`TimeoutError` if that takes longer than ``timeout``, and
        the error that stopped the node if it could not start.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._waiters_lock:
            if self._settled:
                future.set_result((None, self._failure))
            else:
                self._waiters.append((loop, future))
        _, failure = await asyncio.wait_for(future, timeout)
        if failure is not None:
            raise failure

    def _on_ready(self) -> None:
        self._ready.set()
        self._settle(None)

    def _fail(self, error: BaseException) -> None:
        self._settle(error)

    def _settle(self, failure: BaseException | None) -> None:
        with self._waiters_lock:
            if self._settled:
                return
            self._settled = True
            self._failure = failure
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            settle_all_from_thread(loop, [(future, None, failure)])

    def close(self) -> None:
        """Stop the Raft thread, which closes this node's Raft connections and the
        journal (flushed, its meta written, the file closed); then wait for a
        snapshot still being written.

        pysyncobj stops at its next tick. A thread still running after
        :data:`CLOSE_TIMEOUT_SECONDS` is logged and left: every acknowledged
        entry was fsynced before its acknowledgement, so none depends on it.
        """
        thread = self._node._SyncObj__thread
        self._node.destroy()
        thread.join(timeout=CLOSE_TIMEOUT_SECONDS)
        if thread.is_alive():
            logger.warning(
                "the Raft thread of %s did not stop within %g s",
                self.data_dir,
                CLOSE_TIMEOUT_SECONDS,
            )
        self.snapshots.close()

    @property
    def journal(self) -> DurableJournal:
        journal: DurableJournal = self._node._SyncObj__raftLog
        return journal

    def add_apply_listener(self, listener: ApplyListener) -> None:
        """Report every later change of the state to ``listener`` (see :class:`ApplyListener`).

        It is first given the current state, under the lock, so nothing
        applied around its registration is missed or reported twice.
        """
        with self._lock:
            listener.state_installed(self._machine)
            self._listeners.append(listener)

    # --- reads and writes ----------------------------------------------------

    @contextlib.contextmanager
    def read(self) -> Iterator[StateMachine]:
        """The local state machine, locked against the Raft thread while in use."""
        with self._lock:
            yield self._machine

    async def submit(self, command: Command) -> Any:
        """Propose ``command``; return the core's result or raise its DomainError.

        Commands submitted together (in the same turn of the event loop) are
        proposed as one Raft entry: one journal record, one fsync, one apply
        pass, one wake-up of the loop; each still gets its own outcome (a 409
        for one does not fail the others). On a follower, pysyncobj forwards
        the entry to the leader, and the result comes once this node has
        applied it. Raises :class:`ReplicationError` when the command was not
        committed, or when its outcome is unknown (timeout, leader change):
        retry with the same idempotency key.
        """
        value, domain_error = await self._propose(command_to_json(command), _UNKNOWN_WRITE)
        if domain_error is not None:
            raise domain_error
        return value

    async def sync(self) -> None:
        """Wait until this node has applied every write acknowledged before the call.

        A read after ``sync()`` sees every write acknowledged before it, on
        any node. On a single node that is already so (a write is
        acknowledged once applied here): nothing to wait for. In a cluster a
        no-op entry goes through the Raft log (a read barrier): once this
        node has applied it, it has applied everything committed before it;
        a leader cut off from the majority cannot commit it, so a read never
        answers from a deposed leader's state. Reads that arrive together
        share one entry. Raises :class:`ReplicationError` without a quorum.
        """
        if self.cluster is not None:
            await self._propose(None, _NO_BARRIER)

    async def record_member(self, member: PutMember) -> None:
        """Replicate this node's id and addresses (see :class:`~..core.PutMember`)."""
        await self._propose(converter.unstructure(member), _UNKNOWN_WRITE)

    async def change_member(self, action: Literal["add", "remove"], address: str) -> None:
        """Add or remove the member at Raft ``address`` through the log (any node may
        ask; the leader commits it). Raises :class:`MembershipRefused` when the
        leader refuses (already a member, not one, or another change still
        pending) and :class:`ReplicationError` when it is not confirmed.

        pysyncobj's callback for a change asked on a follower does not always
        fire, so the change also counts as done once this node's member set
        shows it and a read barrier committed after it (log matching: the
        change, earlier in the same log, is then committed too) still finds it
        there.
        """
        if self.cluster is None:
            raise MembershipRefused(
                "A single node has no members to change: start it with --peers."
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def on_done(result: Any, error: Any) -> None:
            settle_all_from_thread(loop, [(future, result, error)])

        def visible() -> bool:
            return (address in self.members()) == (action == "add")

        own = address == self.cluster.raft_bind
        unchanged = (own or visible()) if action == "add" else (not own and visible())
        if unchanged:
            raise MembershipRefused(
                f"{address} is {'already' if action == 'add' else 'not'} a member of the cluster."
            )
        node = self._node
        change = node.addNodeToCluster if action == "add" else node.removeNodeFromCluster
        change(address, callback=on_done)
        deadline = loop.time() + max(self.submit_timeout, MEMBERSHIP_TIMEOUT_SECONDS)
        while loop.time() < deadline:
            if future.done():
                _, error = future.result()
                if error == FAIL_REASON.SUCCESS:
                    return
                if error == FAIL_REASON.REQUEST_DENIED:
                    raise MembershipRefused(
                        f"The leader refused to {action} {address}: it is "
                        f"{'already' if action == 'add' else 'not'} a member, or another "
                        "membership change is still being committed."
                    )
                reason = _FAIL_REASONS.get(error, f"raft failure {error}")
                raise ReplicationError(f"{_UNKNOWN_CHANGE} ({reason}).")
            if visible():
                with contextlib.suppress(ReplicationError):  # a slow barrier: try again
                    await self.sync()
                    if visible():
                        return
            await asyncio.sleep(0.05)
        raise ReplicationError(f"{_UNKNOWN_CHANGE} (not confirmed in time).")

    async def _propose(self, item: Any, failure: str) -> tuple[Any, DomainError | None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        text = json.dumps(item, separators=(",", ":"), ensure_ascii=False)
        if self._pending and self._pending_bytes + len(text) > MAX_GROUP_CHARS:
            self._propose_pending(loop)  # keep each Raft entry bounded in size
        self._pending.append((text, future))
        self._pending_bytes += len(text)
        if len(self._pending) >= MAX_GROUP:
            self._propose_pending(loop)
        elif not self._proposal_scheduled:
            self._proposal_scheduled = True
            loop.call_soon(self._propose_pending, loop)
        try:
            result, error = await asyncio.wait_for(future, self.submit_timeout)
        except TimeoutError:
            raise ReplicationError(f"{failure} (not confirmed in time).") from None
        if error != FAIL_REASON.SUCCESS:
            unknown = error in (FAIL_REASON.LEADER_CHANGED, FAIL_REASON.UNKNOWN_OUTCOME)
            outcome = "its outcome is unknown" if unknown else "it was not committed"
            reason = _FAIL_REASONS.get(error, f"raft failure {error}")
            raise ReplicationError(f"{failure} ({reason}; {outcome}).")
        answer: tuple[Any, DomainError | None] = result
        return answer

    def _propose_pending(self, loop: asyncio.AbstractEventLoop) -> None:
        """Propose every command waiting to be proposed as one Raft entry."""
        self._proposal_scheduled = False
        group, self._pending = self._pending, []
        self._pending_bytes = 0
        if not group:
            return
        payload = "[" + ",".join(text for text, _ in group) + "]"
        futures = [future for _, future in group]

        def on_done(results: Any, error: Any) -> None:
            if error == FAIL_REASON.SUCCESS:
                outcomes = [(f, r, error) for f, r in zip(futures, results, strict=True)]
            else:
                outcomes = [(future, None, error) for future in futures]
            settle_all_from_thread(loop, outcomes)

        self._node.apply_command(payload, callback=on_done)

    # --- the cluster ---------------------------------------------------------

    def members(self) -> list[str]:
        """Raft addresses of the other members of this group now (``[]`` on a single node)."""
        return self._node.members() if self.cluster is not None else []

    def raft_view(self) -> RaftView:
        """What this node's Raft engine knows right now (for ``GET /v1/cluster``)."""
        node = self._node
        cluster = self.cluster
        if cluster is None:
            leader_address = "local" if node._isLeader() else None
            connected: dict[str, bool] = {}
        else:
            leader = node._getLeader()
            leader_address = getattr(leader, "address", None) if leader is not None else None
            connected = {peer: bool(node.isNodeConnected(TCPNode(peer))) for peer in node.members()}
        with self._lock:
            members = dict(self._machine.members)
        return RaftView(
            leader_address=leader_address,
            connected=connected,
            commit_index=int(node.raftCommitIndex),
            applied_index=int(node.raftLastApplied),
            members=members,
        )

    # --- called on the Raft thread -------------------------------------------

    def _apply(self, payload: str, index: int = 0) -> list[tuple[Any, DomainError | None]]:
        """Apply Raft entry ``index``: a list of commands (a single command in older
        journals), each in turn, each with its own outcome."""
        data = json.loads(payload)
        commands = data if isinstance(data, list) else [data]
        outcomes: list[tuple[Any, DomainError | None]] = []
        with self._lock:
            for item in commands:
                if item is None:  # a read barrier (sync())
                    outcomes.append((None, None))
                    continue
                if item.get("kind") == "put_member":
                    self._machine.put_member(converter.structure(item, PutMember))
                    outcomes.append((None, None))
                    continue
                command = command_from_json(item)
                erasing = isinstance(command, Purge | Redact)
                if erasing:
                    found = self._machine.contexts.get(command.context_id)
                    version = found.version if found is not None else None
                try:
                    result = self._machine.apply(command)
                except DomainError as error:
                    outcomes.append((None, error))
                    continue
                if erasing and result.version != version:
                    self._erasure_applied(index)
                self._tell_listeners("command_applied", command, result)
                outcomes.append((result, None))
        return outcomes

    def _erasure_applied(self, index: int) -> None:
        """A purge or redact of entry ``index`` changed the state: compact the log once
        the two entries after it are applied."""
        self._erasure_index = max(self._erasure_index or 0, index + 2)

    def _current_state(self) -> StateMachine:
        return self._machine

    def _install_state(self, machine: StateMachine) -> None:
        with self._lock:
            self._machine = machine
            self._tell_listeners("state_installed", machine)

    def _tell_listeners(self, method: str, *args: Any) -> None:
        for listener in self._listeners:
            try:
                getattr(listener, method)(*args)
            except Exception:  # a listener's bug must not fail the command or stop the thread
                logger.exception("apply listener %r failed", listener)
