"""The event hub: applied commands become events, kept in a bounded hot tail and fanned out.

How events flow (docs/architecture.md, "Live events")::

    Raft thread                      │ event loop
    ─────────────────────────────────┼──────────────────────────────────────────
    apply(command) → result          │
    HubListener.command_applied ─────┼─▶ EventHub.publish(command, result, …)
      (ThreadToLoopQueue.put: never  │     no-op? (version not new) → dropped
       blocks on a subscriber)       │     VersionEvents → the context's ring
                                     │     → every Subscription of the context

Everything the hub holds lives on the event loop's thread, so reading a
context's ring and registering a subscription (:meth:`EventHub.subscribe`)
happen in one step that no publish can interleave with. That is the whole
replay/live boundary argument: a version is either in the ring when the
subscription reads it (replayed) or published after the subscription is
registered (delivered live), never both and never neither; and each
subscription also drops any version at or below the last one it has, which
covers versions a client read over REST before the hub published them.

A version is one unit: all its events (one ``message`` per appended message,
then the version's closing ``context``, ``compaction`` or ``tombstoned``
event) are replayed, queued, evicted and written together. ``cursor = V``
therefore means "after everything at version V".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from typing import Any

from ..core import (
    AppendMessages,
    AppendResult,
    Command,
    Compact,
    CompactResult,
    MarkArchived,
    PatchMetadata,
    Purge,
    PutContext,
    Redact,
    StateMachine,
    Summarize,
    SummarizeResult,
    Tombstone,
)
from ..core import window as windows
from ..core.models import JSONObject
from ..core.state import ContextView
from ..replication.bridge import ThreadToLoopQueue
from . import render

logger = logging.getLogger(__name__)

EVENT_TYPES = ("message", "compaction_record", "context", "compaction", "tombstoned", "gap")
"""The ``type`` of every event a feed carries (``ping`` and ``error`` are not events)."""


def _json(value: JSONObject) -> str:
    # ASCII only: no raw U+2028 or other characters that line splitters
    # (httpx's iter_lines, str.splitlines) take for line ends inside SSE data.
    return json.dumps(value, separators=(",", ":"))


class VersionEvents:
    """Every event of one version of one context, built (and serialised) on first use.

    Built from the applied ``(command, result)`` only when a subscriber
    needs it, so a node without subscribers pays for a reference, not for
    rendering messages.
    """

    __slots__ = (
        "_fixed",
        "_source",
        "_texts",
        "closes",
        "context_id",
        "retained",
        "size",
        "version",
    )

    def __init__(
        self,
        context_id: str,
        version: int,
        *,
        source: tuple[Command, Any, list[Any] | None] | None = None,
        fixed: list[JSONObject] | None = None,
    ) -> None:
        self.context_id = context_id
        self.version = version
        self._source = source
        self._fixed = fixed
        self._texts: dict[bool, list[tuple[str, str]]] | None = None
        self.retained = False
        """In its context's ring (the hub's bookkeeping)."""
        command = source[0] if source is not None else None
        self.closes = isinstance(command, Tombstone | Purge) or bool(
            fixed and fixed[-1]["type"] == "tombstoned"
        )
        self.size = len(command.messages) + 1 if isinstance(command, AppendMessages) else 1

    def events(self, include_messages: bool = True) -> list[JSONObject]:
        """The events of this version, oldest first."""
        if self._fixed is not None:
            return self._fixed
        assert self._source is not None
        command, result, segments = self._source
        return _build(command, result, segments, include_messages)

    def texts(self, include_messages: bool) -> list[tuple[str, str]]:
        """``(type, JSON text)`` of each event, serialised once for every subscriber."""
        if self._texts is None:
            self._texts = {}
        texts = self._texts.get(include_messages)
        if texts is None:
            texts = [(event["type"], _json(event)) for event in self.events(include_messages)]
            self._texts[include_messages] = texts
        return texts


def _build(
    command: Command, result: Any, segments: list[Any] | None, include_messages: bool
) -> list[JSONObject]:
    version: int = result.version
    if isinstance(command, AppendMessages):
        assert isinstance(result, AppendResult)
        events: list[JSONObject] = []
        for message, appended in zip(command.messages, result.messages, strict=True):
            event: JSONObject = {"type": "message", "version": version, "seq": appended.seq}
            if include_messages:
                event["message"] = render.message(message.stored(appended.seq, command.at))
            events.append(event)
        events.extend(_record_event(version, result.compaction))
        events.append(
            _context_event(
                version, "appended", result.last_seq, result.used_tokens, result.needs_compaction
            )
        )
        return events
    if isinstance(command, Compact):
        assert isinstance(result, CompactResult)
        return [
            *_record_event(version, result.compaction),
            {
                "type": "compaction",
                "version": version,
                "used_tokens": result.used_tokens,
                "needs_compaction": result.needs_compaction,
                "message_count": result.message_count,
                "segments": segments or [],
            },
        ]
    if isinstance(command, Tombstone | Purge):
        return [tombstoned_event(version)]
    if isinstance(command, Summarize):
        assert isinstance(result, SummarizeResult)
        last_seq = int(result.last_seq)
        return [
            *_record_event(version, result.compaction),
            _context_event(
                version, "summary", last_seq, result.used_tokens, result.needs_compaction
            ),
        ]
    assert isinstance(result, ContextView)
    cause = "metadata" if isinstance(command, PatchMetadata) else "config"
    if isinstance(command, Redact):
        cause = "redacted"
    if isinstance(command, PutContext) and version == 1:
        cause = "created"
    return [
        *_record_event(version, result.compaction),
        _context_event(
            version, cause, result.last_seq, result.used_tokens, result.needs_compaction
        ),
    ]


def _record_event(version: int, record: JSONObject | None) -> list[JSONObject]:
    """The ``compaction_record`` event of a version that compacted the window (or
    recorded a failed summary): why messages left the window."""
    if record is None:
        return []
    return [{"type": "compaction_record", "version": version, "record": record}]


def _context_event(
    version: int, cause: str, last_seq: int, used_tokens: int, needs_compaction: bool
) -> JSONObject:
    return {
        "type": "context",
        "version": version,
        "cause": cause,
        "last_seq": last_seq,
        "used_tokens": used_tokens,
        "needs_compaction": needs_compaction,
    }


def tombstoned_event(version: int) -> JSONObject:
    return {"type": "tombstoned", "version": version}


def gap_event(expected: int, actual: int) -> JSONObject:
    """Versions ``expected`` … ``actual - 1`` are not retained: re-read them over REST."""
    return {"type": "gap", "version": actual - 1, "expected": expected, "actual": actual}


class Subscription:
    """One client's feed of one context: the replay, then live versions, in order.

    Replayed versions are not bounded (they are references into the ring);
    live versions are, by ``limit``: a subscriber that falls that far behind
    is ended with ``slow_consumer`` instead of holding anything up.
    """

    def __init__(self, hub: EventHub, context_id: str, cursor: int, limit: int) -> None:
        self._hub = hub
        self.context_id = context_id
        self.limit = limit
        self.last_version = cursor
        """The newest version this subscription has queued (or the cursor)."""
        self._replay: deque[VersionEvents] = deque()
        self._live: deque[VersionEvents] = deque()
        self._wakeup = asyncio.Event()
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        """Set to a reason (``slow_consumer``, ``shutting_down``) when the hub ends the feed."""

    def _queue_replay(self, entry: VersionEvents) -> None:
        self._replay.append(entry)
        self.last_version = max(self.last_version, entry.version)
        self._wakeup.set()

    def _deliver(self, entry: VersionEvents) -> None:
        if self.ended.done() or entry.version <= self.last_version:
            return
        if len(self._live) >= self.limit:
            self.end("slow_consumer")
            return
        self._live.append(entry)
        self.last_version = entry.version
        self._wakeup.set()

    def _drop_queued(self) -> int | None:
        """Forget every queued version (an erasure); the oldest one dropped, if any.
        The subscription then takes versions after the one before it again."""
        queued = [*self._replay, *self._live]
        self._replay.clear()
        self._live.clear()
        if not queued:
            return None
        oldest = min(entry.version for entry in queued)
        self.last_version = min(self.last_version, oldest - 1)
        return oldest

    def end(self, reason: str) -> None:
        """Stop the feed (the stream handler closes the connection with ``reason``)."""
        if not self.ended.done():
            self.ended.set_result(reason)
        self._hub._unsubscribe(self)
        self._wakeup.set()

    def pop(self) -> VersionEvents | None:
        """The next version to write, or ``None`` when none is queued."""
        if self._replay:
            return self._replay.popleft()
        if self._live:
            return self._live.popleft()
        self._wakeup.clear()
        return None

    async def wait(self, timeout: float) -> None:
        """Until a version is queued, the feed ends, or ``timeout`` seconds pass."""
        if self._replay or self._live or self.ended.done():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)


class EventHub:
    """Retention and fan-out of every context's events, on the event loop's thread.

    ``retain`` bounds the versions kept per context, ``retain_total`` the
    events kept on the node (the oldest versions node-wide go first).
    ``max_connections`` is checked by the stream handlers through
    :meth:`open_connection`.
    """

    def __init__(
        self,
        *,
        retain: int = 1000,
        retain_total: int = 100_000,
        queue_limit: int = 1024,
        max_connections: int = 512,
    ) -> None:
        self.retain = retain
        self.retain_total = retain_total
        self.queue_limit = queue_limit
        self.max_connections = max_connections
        self.connections = 0
        self._versions: dict[str, int] = {}
        """The newest version published (or installed) of every context."""
        self._rings: dict[str, deque[VersionEvents]] = {}
        """The retained versions of each context that has any: a contiguous run up to the newest."""
        self._subscribers: dict[str, set[Subscription]] = {}
        self._order: deque[VersionEvents] = deque()
        """Every retained version, oldest first (and some evicted ones, skipped when met)."""
        self._retained_events = 0
        self._retained_versions = 0

    # --- the Raft side ---------------------------------------------------------

    def listener(self, loop: asyncio.AbstractEventLoop) -> HubListener:
        """The :class:`~fastpaca_server.replication.node.ApplyListener` that feeds this hub."""
        return HubListener(self, loop)

    def _take(self, items: list[tuple[str, Any]]) -> None:
        for kind, payload in items:
            try:
                if kind == "installed":
                    self.installed(payload)
                else:
                    self.publish(*payload)
            except Exception:  # a bug here must not stop the hand-over of later items
                logger.exception("the event hub failed to take an applied command")

    # --- the event loop side ---------------------------------------------------

    def installed(self, versions: dict[str, int]) -> None:
        """A whole state was installed (start-up snapshot, or one sent by a leader).

        The versions it holds become each context's newest; what was
        retained for a context whose version moved is dropped (it is no
        longer a contiguous run up to the newest), and its subscribers are
        told of the gap.
        """
        for context_id, version in versions.items():
            known = self._versions.get(context_id)
            if known is None:
                self._versions[context_id] = version
            elif version != known:
                self._restart(context_id, version)

    def publish(self, command: Command, result: Any, segments: list[Any] | None) -> None:
        """One applied command; a result whose version is not new (a no-op or a replay) is none."""
        context_id = command.context_id
        version: int = result.version
        known = self._versions.get(context_id, 0)
        if version <= known:
            return
        if version != known + 1:
            logger.warning("events of %s jump from version %d to %d", context_id, known, version)
            self._restart(context_id, version - 1)
        if isinstance(command, Purge | Redact):
            self._erase(context_id, version)
        entry = VersionEvents(context_id, version, source=(command, result, segments))
        self._versions[context_id] = version
        self._retain(entry)
        for subscription in list(self._subscribers.get(context_id, ())):
            subscription._deliver(entry)

    def _restart(self, context_id: str, version: int) -> None:
        """Forget what was retained: ``version`` is now the newest, and nothing before it."""
        for entry in self._rings.pop(context_id, ()):
            self._forget(entry)
        self._versions[context_id] = version
        for subscription in list(self._subscribers.get(context_id, ())):
            if subscription.last_version < version:
                gap = gap_event(subscription.last_version + 1, version + 1)
                subscription._deliver(VersionEvents(context_id, version, fixed=[gap]))

    def _erase(self, context_id: str, version: int) -> None:
        """A purge or redact at ``version``: drop every retained and queued event of
        the context (they may hold the erased content). A subscriber that had
        versions queued is told of the gap (re-read over REST) before ``version``."""
        for entry in self._rings.pop(context_id, ()):
            self._forget(entry)
        self._order = deque(entry for entry in self._order if entry.context_id != context_id)
        for subscription in list(self._subscribers.get(context_id, ())):
            dropped = subscription._drop_queued()
            if dropped is not None and dropped < version:
                gap = gap_event(dropped, version)
                subscription._deliver(VersionEvents(context_id, version - 1, fixed=[gap]))

    def _retain(self, entry: VersionEvents) -> None:
        ring = self._rings.get(entry.context_id)
        if ring is None:
            ring = self._rings[entry.context_id] = deque()
        ring.append(entry)
        self._order.append(entry)
        entry.retained = True
        self._retained_events += entry.size
        self._retained_versions += 1
        if len(ring) > self.retain:
            self._forget(ring.popleft())
        while self._retained_events > self.retain_total and self._order:
            oldest = self._order.popleft()
            if oldest.retained:  # then it is the oldest of its ring too
                oldest_ring = self._rings[oldest.context_id]
                self._forget(oldest_ring.popleft())
                if not oldest_ring:
                    del self._rings[oldest.context_id]
        # Versions evicted per context stay in _order until they reach its front;
        # drop them when they are most of it, so it stays proportional to what is kept.
        if len(self._order) > 2 * self._retained_versions + 1024:
            self._order = deque(kept for kept in self._order if kept.retained)

    def _forget(self, entry: VersionEvents) -> None:
        entry.retained = False
        self._retained_events -= entry.size
        self._retained_versions -= 1

    def subscribe(
        self, context_id: str, cursor: int, *, tombstoned_at: int | None = None
    ) -> Subscription:
        """Register a feed of ``context_id`` after ``cursor``, its replay already queued.

        Queued first: a ``gap`` when versions after ``cursor`` are no longer
        retained, then every retained version after ``cursor``. Live
        versions follow as they are published. ``tombstoned_at`` is the
        context's version when the caller found it tombstoned: the feed then
        ends with a ``tombstoned`` event even if the cursor is already past
        it or it is no longer retained.
        """
        subscription = Subscription(self, context_id, cursor, self.queue_limit)
        last_version = self._versions.get(context_id, 0)
        ring = self._rings.get(context_id)
        retained_from = ring[0].version if ring else last_version + 1
        if cursor + 1 < retained_from:
            gap = gap_event(cursor + 1, retained_from)
            subscription._queue_replay(VersionEvents(context_id, retained_from - 1, fixed=[gap]))
        replayed_tombstone = False
        for entry in ring or ():
            if entry.version > cursor:
                subscription._queue_replay(entry)
                replayed_tombstone = replayed_tombstone or entry.closes
        # A tombstone that neither the replay nor a live version will bring: say it now.
        if (
            tombstoned_at is not None
            and not replayed_tombstone
            and (tombstoned_at <= cursor or tombstoned_at <= last_version)
        ):
            fixed = [tombstoned_event(tombstoned_at)]
            subscription._queue_replay(VersionEvents(context_id, tombstoned_at, fixed=fixed))
        self._subscribers.setdefault(context_id, set()).add(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._subscribers.get(subscription.context_id)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscribers[subscription.context_id]

    def end_all(self, reason: str) -> None:
        """End every subscription (the server is shutting down)."""
        for subscribers in list(self._subscribers.values()):
            for subscription in list(subscribers):
                subscription.end(reason)

    def open_connection(self) -> bool:
        """Take one of the node's stream connections; ``False`` when all are taken."""
        if self.connections >= self.max_connections:
            return False
        self.connections += 1
        return True

    def close_connection(self) -> None:
        self.connections -= 1


class HubListener:
    """Runs on the Raft thread, after every applied command and state install.

    It does as little as it can there: it skips idempotent replays, reads
    the window a compaction left (the only thing a result does not carry),
    and hands the rest to the event loop through one
    :class:`~fastpaca_server.replication.bridge.ThreadToLoopQueue`. It never
    waits for a subscriber.
    """

    def __init__(self, hub: EventHub, loop: asyncio.AbstractEventLoop) -> None:
        self._queue: ThreadToLoopQueue[tuple[str, Any]] = ThreadToLoopQueue(loop, hub._take)
        self._machine: StateMachine | None = None

    def state_installed(self, machine: StateMachine) -> None:
        self._machine = machine
        versions = {context.id: context.version for context in machine.contexts.values()}
        self._queue.put(("installed", versions))

    def command_applied(self, command: Command, result: Any) -> None:
        if isinstance(result, AppendResult | CompactResult) and result.replayed:
            return
        if isinstance(command, MarkArchived):
            return  # no version: the watermark is not an event
        segments = None
        if isinstance(command, Compact) and self._machine is not None:
            context = self._machine.contexts.get(command.context_id)
            segments = windows.segments(context.window) if context is not None else []
        self._queue.put(("applied", (command, result, segments)))
