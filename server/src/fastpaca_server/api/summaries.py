"""Summary jobs of the ``summarize`` policy, run by the leader of each Raft group.

How a summary happens::

    Raft thread                          │ event loop (leader only)
    ─────────────────────────────────────┼──────────────────────────────────────────
    apply(append) → needs_compaction     │
    SummaryListener.command_applied ─────┼─▶ SummaryJobs.poke(context_id)
      (summarize contexts only)          │     one job per context at a time:
                                         │     read the window, plan_summary()
                                         │     summarizer.summarize(…)  (no lock held)
                                         │     count the summary's tokens
                                         │     submit Summarize(base=compactions read)
    apply(Summarize) ◀───────────────────┼──   stale (a compaction ran since)? retry
                                         │     failed? submit Summarize(error=…), back off

Appends never wait for a job: the window is over its trigger, not its
budget, while the job runs; if the window reaches the budget first (the
summarizer is slow or down), the policy's budget fallback trims it in the
state machine, and the summary that comes back later is stale and refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from ..core import (
    AppendResult,
    Command,
    Context,
    Message,
    MessageInput,
    StateMachine,
    Summarize,
    SummarizeResult,
)
from ..core import window as windows
from ..core.errors import DomainError
from ..core.state import ContextView
from ..replication import ReplicatedStore
from ..replication.bridge import ThreadToLoopQueue
from ..summarizer import Summarizer, SummarizerError
from ..tokens import count_parts
from .metrics import Metrics
from .startup import StoreStartup

logger = logging.getLogger(__name__)

ATTEMPTS = 3
"""Summaries tried in a row for one context when each comes back stale."""
BACKOFF_SECONDS = (1.0, 5.0, 30.0, 60.0)
"""Waits before the next job of a context after 1, 2, 3, 4+ failures in a row."""
NOT_CONFIGURED = "no summarizer is configured on the leader (--summarizer-base-url)"


class SummaryListener:
    """Runs on the Raft thread: pokes the jobs for summarize contexts that need one."""

    def __init__(self, jobs: SummaryJobs, loop: asyncio.AbstractEventLoop) -> None:
        self._queue: ThreadToLoopQueue[str] = ThreadToLoopQueue(loop, jobs.poke_all)
        self._machine: StateMachine | None = None

    def state_installed(self, machine: StateMachine) -> None:
        self._machine = machine

    def command_applied(self, command: Command, result: Any) -> None:
        if not isinstance(result, AppendResult | SummarizeResult | ContextView):
            return
        if not result.needs_compaction or self._machine is None:
            return
        context = self._machine.contexts.get(command.context_id)
        if context is not None and context.config.policy.strategy == "summarize":
            self._queue.put(command.context_id)


class SummaryJobs:
    """At most one summary job per context; failures back off per context."""

    def __init__(
        self, startup: StoreStartup, summarizer: Summarizer | None, metrics: Metrics
    ) -> None:
        self._startup = startup
        self._summarizer = summarizer
        self._metrics = metrics
        self._running: dict[str, asyncio.Task[None]] = {}
        self._failures: dict[str, tuple[int, float]] = {}
        """Failures in a row and the monotonic time before which no job starts."""

    def listener(self, loop: asyncio.AbstractEventLoop) -> SummaryListener:
        return SummaryListener(self, loop)

    def poke_all(self, context_ids: list[str]) -> None:
        for context_id in dict.fromkeys(context_ids):
            self.poke(context_id)

    def poke(self, context_id: str) -> None:
        """Start a job for ``context_id`` unless one runs or it is backing off."""
        if context_id in self._running:
            return
        failures = self._failures.get(context_id)
        if failures is not None and time.monotonic() < failures[1]:
            return
        task = asyncio.get_running_loop().create_task(self._run(context_id))
        self._running[context_id] = task
        task.add_done_callback(lambda _: self._running.pop(context_id, None))

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        for task in list(self._running.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._summarizer is not None:
            await self._summarizer.close()

    async def _run(self, context_id: str) -> None:
        try:
            shards = self._startup.get()
            store = shards.for_context(context_id)
            for _ in range(ATTEMPTS):
                if not store.is_leader or not await self._once(store, context_id):
                    return
        except DomainError:
            return  # the context was tombstoned or its policy changed meanwhile
        except Exception:
            logger.exception("summary job for %s failed", context_id)

    async def _once(self, store: ReplicatedStore, context_id: str) -> bool:
        """One summary; returns whether to try again at once (it came back stale)."""
        with store.read() as machine:
            context = machine.contexts.get(context_id)
            if context is None or context.status != "active":
                return False
            config = context.config
            if config.policy.strategy != "summarize" or not context.needs_compaction:
                return False
            window = context.window
            rebuild_from = _covered(context, window) if context.summary_rebuild else None
            plan = windows.plan_summary(window, config, rebuild_from)
            base = context.compactions
        if plan is None:
            return False
        instructions = config.policy.config.get("instructions")
        started = time.monotonic()
        try:
            if self._summarizer is None:
                raise SummarizerError(NOT_CONFIGURED)
            # Ask for at most half of what the policy trims to: the summary must fit
            # beside the pinned messages and leave room for the live tail.
            room = max(windows.ratio_tokens(config, config.policy.config) // 2, 16)
            text = await self._summarizer.summarize(
                plan.previous, plan.messages, instructions, max_tokens=room
            )
        except SummarizerError as error:
            await self._failed(store, context_id, base, plan.to_seq, str(error))
            return False
        self._metrics.summary_seconds.observe(time.monotonic() - started)
        parts = [{"type": "text", "text": text}]
        loop = asyncio.get_running_loop()
        tokens, per_part = await loop.run_in_executor(
            None, lambda: count_parts(parts, config.tokenizer)
        )
        summary = MessageInput(
            id=f"sum_{uuid.uuid4().hex}",
            role="system",
            parts=parts,
            metadata=None,
            token_count=tokens,
            part_tokens=per_part,
        )
        command = Summarize(context_id, _now_ms(), base, plan.to_seq, summary=summary)
        result: SummarizeResult = await store.submit(command)
        self._metrics.summaries.labels(result.outcome).inc()
        if result.outcome == "applied":
            self._failures.pop(context_id, None)
            self._metrics.compactions.labels("summary", "summarize").inc()
        return result.outcome == "stale" or result.needs_compaction

    async def _failed(
        self, store: ReplicatedStore, context_id: str, base: int, to_seq: int, error: str
    ) -> None:
        count = self._failures.get(context_id, (0, 0.0))[0] + 1
        wait = BACKOFF_SECONDS[min(count, len(BACKOFF_SECONDS)) - 1]
        self._failures[context_id] = (count, time.monotonic() + wait)
        self._metrics.summaries.labels("failed").inc()
        logger.warning(
            "summary for %s failed (%d in a row, next try in %.0f s or later): %s",
            context_id,
            count,
            wait,
            error,
        )
        await store.submit(Summarize(context_id, _now_ms(), base, to_seq, error=error))


def _covered(context: Context, window: list[Message]) -> list[Message]:
    """The log messages the window's summaries cover, as the log holds them now (a
    redacted one as its marker): what a summary is rebuilt from after a redact.
    Messages no longer in the hot tail (archived) are left out."""
    covered: list[Message] = []
    for message in window:
        if windows.is_summary(message):
            summary = (message.metadata or {})["summary"]
            first, last = int(summary["from_seq"]), int(summary["to_seq"])
            covered += context.messages_between(first - 1, last + 1, last - first + 1)
    return covered


def _now_ms() -> int:
    return int(time.time() * 1000)
