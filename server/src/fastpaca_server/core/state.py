"""The per-context state machine: ``apply(command) -> result`` (pure, deterministic).

Applying the same commands in the same order gives byte-identical state
(:meth:`StateMachine.to_bytes`). A command that is refused raises a
:class:`~fastpaca_server.core.errors.DomainError` before anything changes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from typing import Any, Literal

import attrs

from . import window as windows
from .errors import Conflict, InvalidInput, NotFound
from .idempotency import IdempotencyTable, Remembered, fingerprint_digest
from .live_window import LiveWindow
from .models import (
    COMPACTION_RECORDS_PER_CONTEXT,
    IDEMPOTENCY_KEYS_PER_CONTEXT,
    MAX_METADATA_BYTES,
    AppendedMessage,
    AppendMessages,
    AppendResult,
    Command,
    Compact,
    CompactResult,
    ContextConfig,
    ContextStatus,
    JSONObject,
    KeptMessage,
    MarkArchived,
    Message,
    MessageInput,
    PatchMetadata,
    Purge,
    PutContext,
    PutMember,
    Redact,
    Summarize,
    SummarizeResult,
    Tombstone,
    canonical_json,
    content_digest,
    converter,
    ordered_json,
    timestamp,
)

CUSTOM_POLICIES: dict[str, windows.CustomPolicy] = {}
"""Custom policies by strategy name (filled at start-up from the ``fastpaca.policies``
entry points; every node of a cluster must have the same)."""


def custom_policy(name: str) -> windows.CustomPolicy | None:
    return CUSTOM_POLICIES.get(name)


def live_window(config: ContextConfig, messages: Sequence[Message] = ()) -> LiveWindow:
    """A live window of ``messages`` indexed for ``config`` (its pins and steps)."""
    return LiveWindow.of(messages, windows.pin_mask(config), windows.tracks_outputs(config))


def namespace_of(context_id: str) -> str:
    """A context's namespace (a tenant's, with API keys): the id's part before its
    first ``:``, or ``""`` for an id without one."""
    head, colon, _ = context_id.partition(":")
    return head if colon else ""


@attrs.define
class Usage:
    """What the contexts of one namespace hold: contexts (tombstoned ones too) and
    the tokens of their logs."""

    contexts: int = 0
    tokens: int = 0


@attrs.define
class Context:
    """One conversation: config, metadata, the message log and the LLM window."""

    id: str
    config: ContextConfig
    metadata: JSONObject
    created_at: int
    updated_at: int
    status: ContextStatus = "active"
    version: int = 1
    log: list[Message] = attrs.field(factory=list)
    """The hot tail of the message log: seqs ``log_offset + 1`` … ``last_seq``."""
    live: LiveWindow = attrs.field(factory=LiveWindow)
    """The LLM window with its index (snapshots store it as ``window``)."""
    used_tokens: int = 0
    needs_compaction: bool = False
    idempotency: IdempotencyTable = attrs.field(factory=IdempotencyTable)
    last_user_seq: int | None = None
    """Seq of the newest user message in the log: where the current turn begins."""
    segment_cache: tuple[int, list[dict[str, int | str | None]]] | None = attrs.field(
        default=None, eq=False
    )
    """The window's segments at one version (reads of an unchanged window reuse them)."""
    compactions: int = 0
    """Compactions so far: policy runs that changed the window, compactions sent
    by the client, summaries."""
    last_compaction: tuple[int, str] | None = None
    """Time (ms) and policy of the newest compaction."""
    records: list[bytes] = attrs.field(factory=list)
    """Compaction records before the newest, as JSON (see :meth:`StateMachine._record`)."""
    log_offset: int = 0
    """Messages dropped from the front of ``log`` (they are in the archive)."""
    archived_seq: int = 0
    """Every message up to this seq is in the archive (the leader's watermark)."""
    newest_record: JSONObject | None = None
    """The newest record, as a dict: a run that continues it makes a new dict from it
    (never changes it: an event may still hold it), so no JSON per merged run."""
    record_count: int = 0
    """Records numbered so far (a record's ``number``; merged runs share one)."""
    summaries: int = 0
    summary_failures: int = 0
    last_summary_error: str | None = None
    log_tokens: int = 0
    """Tokens of every message of the log (the archived ones too): what it stores."""
    tombstoned_at: int | None = None
    """When the context was tombstoned (ms; ``--tombstone-retention`` counts from it)."""
    purge: tuple[int, str | None] | None = None
    """``(purged_at, purged_by)`` of a purged context."""
    redactions: list[int] = attrs.field(factory=list)
    """Seqs redacted so far, ascending (the archive writer rewrites their rows)."""
    summary_rebuild: bool = False
    """A redacted message is covered by the window's summary: the next summary job
    rebuilds it from the log instead of folding the old summary in."""

    @property
    def last_seq(self) -> int:
        return self.log_offset + len(self.log)

    def hot(self, seq: int) -> Message | None:
        """Log message ``seq`` if it is in the hot tail (in memory)."""
        index = seq - self.log_offset - 1
        return self.log[index] if 0 <= index < len(self.log) else None

    @property
    def window(self) -> list[Message]:
        """The window's messages, in order (a new list: O(window))."""
        return self.live.messages()

    def view(self) -> ContextView:
        """A frozen copy of everything but the messages: what a write answers with."""
        return ContextView(
            id=self.id,
            config=self.config,
            metadata=self.metadata,
            status=self.status,
            version=self.version,
            last_seq=self.last_seq,
            used_tokens=self.used_tokens,
            needs_compaction=self.needs_compaction,
            created_at=self.created_at,
            updated_at=self.updated_at,
            window_messages=len(self.live),
            archived_seq=self.archived_seq,
            compactions=self.compactions,
            last_compaction=self.last_compaction,
            summary_failures=self.summary_failures,
            last_summary_error=self.last_summary_error,
            purge=self.purge,
        )

    @property
    def holds_history(self) -> bool:
        """Whether messages of the context are in memory (the hot tail or the window)."""
        return bool(self.log) or len(self.live) > 0

    def all_records(self) -> list[bytes]:
        """Every kept compaction record as JSON, oldest first."""
        newest = [] if self.newest_record is None else [ordered_json(self.newest_record)]
        return [*self.records, *newest]

    def compaction_records(self, after: int, limit: int) -> list[bytes]:
        """Kept records numbered above ``after``, oldest first, at most ``limit``."""
        found = [r for r in self.all_records() if json.loads(r)["number"] > after]
        return found[:limit]

    def messages_between(self, after_seq: int, before_seq: int | None, limit: int) -> list[Message]:
        """Hot log messages with ``after_seq < seq < before_seq``, oldest first, at most
        ``limit`` (seqs at or below ``log_offset`` are the archive's to answer)."""
        end = self.last_seq if before_seq is None else min(before_seq - 1, self.last_seq)
        start = max(after_seq, self.log_offset)
        offset = self.log_offset
        return self.log[start - offset : min(end, start + limit) - offset] if end > start else []

    def cached_segments(self) -> list[dict[str, int | str | None]] | None:
        """The window's :func:`~.window.segments` if a read at this version computed them."""
        cache = self.segment_cache
        return cache[1] if cache is not None and cache[0] == self.version else None

    def cache_segments(self, version: int, segments: list[dict[str, int | str | None]]) -> None:
        """Remember the segments of the window at ``version`` (callers never mutate them)."""
        self.segment_cache = (version, segments)

    def window_within(self, budget: int) -> list[Message]:
        """The window, trimmed (oldest unpinned units first) to fit ``budget`` tokens."""
        return window_within(self.window, budget, self.live.mask)

    def tail(self, offset: int, limit: int) -> list[Message]:
        """The hot part of the ``limit`` messages before the newest ``offset``, oldest
        first (the seqs before them, down to ``end - limit``, are the archive's)."""
        end = max(self.last_seq - offset, self.log_offset)
        start = max(end - limit, self.log_offset)
        return self.log[start - self.log_offset : end - self.log_offset]


@attrs.frozen
class ContextView:
    """A context as one command left it (metadata is never mutated in place, only replaced).

    Writes answer with the view their own command produced, not with the live
    context, which a concurrent write may already have changed.
    """

    id: str
    config: ContextConfig
    metadata: JSONObject
    status: ContextStatus
    version: int
    last_seq: int
    used_tokens: int
    needs_compaction: bool
    created_at: int
    updated_at: int
    window_messages: int = 0
    archived_seq: int = 0
    compactions: int = 0
    last_compaction: tuple[int, str] | None = None
    summary_failures: int = 0
    last_summary_error: str | None = None
    purge: tuple[int, str | None] | None = None
    compaction: JSONObject | None = attrs.field(default=None, eq=False)
    """The record of a compaction this command set off (for events)."""


def window_within(window: list[Message], budget: int, mask: int = windows.PIN_ALL) -> list[Message]:
    """``window`` trimmed (oldest unpinned units first) to fit ``budget`` tokens.

    Raises ``budget_too_small`` when the pinned messages alone do not fit.
    """
    if windows.window_tokens(window) <= budget:
        return window
    pinned = windows.pinned_tokens(window, mask)
    if pinned > budget:
        raise InvalidInput(
            f"Pinned messages use {pinned} tokens, more than budget_tokens={budget}.",
            "budget_too_small",
        )
    return windows.trim(window, max_tokens=budget, max_messages=None, mask=mask)


def merge_patch(target: JSONObject, patch: JSONObject) -> JSONObject:
    """RFC 7396 JSON merge patch, returning a new object."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            base = result.get(key)
            result[key] = merge_patch(base if isinstance(base, dict) else {}, value)
        else:
            result[key] = value
    return result


class StateMachine:
    """All contexts of one replication group."""

    def __init__(self) -> None:
        self.contexts: dict[str, Context] = {}
        self.members: dict[str, PutMember] = {}
        """Cluster members by node id, as each recorded itself (empty on a single node)."""
        self.usage: dict[str, Usage] = {}
        """By namespace (:func:`namespace_of`), derived from the contexts (not snapshotted)."""

    def usage_of(self, namespace: str) -> Usage:
        """What the namespace's contexts in this group hold (a copy)."""
        found = self.usage.get(namespace)
        return Usage() if found is None else attrs.evolve(found)

    def _count(self, context_id: str, contexts: int, tokens: int) -> None:
        usage = self.usage.setdefault(namespace_of(context_id), Usage())
        usage.contexts += contexts
        usage.tokens += tokens

    # --- reads -------------------------------------------------------------

    def get(self, context_id: str) -> Context:
        context = self.contexts.get(context_id)
        if context is None:
            raise NotFound(f"Context '{context_id}' does not exist.")
        return context

    def admission_check(
        self, context_id: str, key: str | None, fingerprint: str | None, if_version: int | None
    ) -> Context:
        """Refusals no later command can undo, checked before proposing a write.

        A write that would be refused anyway then costs no journal entry. An
        idempotency key that matches skips the check: the replay must answer.
        Returns the context.
        """
        context = self.get(context_id)
        if _replay(context, key, fingerprint) is None:
            _require_active(context)
            check_version(context, if_version)
        return context

    # --- writes ------------------------------------------------------------

    def apply(self, command: Command) -> Any:
        """Apply one command; raise a DomainError (state unchanged) or return its result."""
        if isinstance(command, PutContext):
            return self._put_context(command)
        if isinstance(command, AppendMessages):
            return self._append(command)
        if isinstance(command, Compact):
            return self._compact(command)
        if isinstance(command, PatchMetadata):
            return self._patch_metadata(command)
        if isinstance(command, Summarize):
            return self._summarize(command)
        if isinstance(command, MarkArchived):
            return self._mark_archived(command)
        if isinstance(command, Purge):
            return self._purge(command)
        if isinstance(command, Redact):
            return self._redact(command)
        return self._tombstone(command)

    def put_member(self, command: PutMember) -> bool:
        """Record a member's addresses; returns whether anything changed."""
        if self.members.get(command.node_id) == command:
            return False
        for node_id, member in list(self.members.items()):
            if member.raft_address == command.raft_address and node_id != command.node_id:
                del self.members[node_id]  # the address was renamed: one record per address
        self.members[command.node_id] = command
        return True

    def _put_context(self, command: PutContext) -> ContextView:
        config = command.config
        context = self.contexts.get(command.context_id)
        if context is None:
            context = Context(
                id=command.context_id,
                config=config,
                metadata=dict(command.metadata or {}),
                created_at=command.at,
                updated_at=command.at,
                live=live_window(config),
            )
            self.contexts[context.id] = context
            self._count(context.id, 1, 0)
            return context.view()
        _require_active(context)
        metadata = context.metadata if command.metadata is None else dict(command.metadata)
        if config == context.config and metadata == context.metadata:
            return context.view()
        if config.tokenizer != context.config.tokenizer and (context.last_seq or len(context.live)):
            raise Conflict(
                "The tokenizer of a context with messages cannot change: "
                "its counts would be wrong.",
                "tokenizer_immutable",
            )
        pinned = windows.pinned_tokens(context.window, windows.pin_mask(config))
        if config.policy.strategy != "manual" and pinned > config.token_budget:
            raise Conflict(
                f"Pinned messages use {pinned} tokens, more than the new budget "
                f"of {config.token_budget}.",
                "budget_below_pinned",
            )
        context.config = config
        context.metadata = metadata
        context.live = live_window(config, context.live.messages())  # new rules: index afresh
        record = self._maintain_window(context, force=True, at=command.at, cause="config")
        self._touch(context, command.at)
        return attrs.evolve(context.view(), compaction=record)

    def _append(self, command: AppendMessages) -> AppendResult:
        context = self.get(command.context_id)
        replay = _replay(context, command.idempotency_key, command.fingerprint)
        if replay is not None:
            assert isinstance(replay, AppendResult)
            return attrs.evolve(replay, replayed=True)
        _require_active(context)
        check_version(context, command.if_version)
        _check_tokenizer(context, command.tokenizer)
        first_seq = context.last_seq + 1
        stored = [
            message.stored(first_seq + offset, command.at)
            for offset, message in enumerate(command.messages)
        ]
        if context.config.policy.strategy != "manual":
            _check_fits(context, stored)
        appended: list[AppendedMessage] = []
        strip_orphans = context.config.policy.strategy != "manual"
        added_tokens = sum(message.token_count for message in stored)
        context.log_tokens += added_tokens
        self._count(context.id, 0, added_tokens)
        for message in stored:
            context.log.append(message)
            context.live.add(message, strip_orphans=strip_orphans)
            if message.role == "user":
                context.last_user_seq = message.seq
            appended.append(
                AppendedMessage(
                    seq=first_seq + len(appended),
                    id=message.id,
                    token_count=message.token_count,
                    created_at=command.at,
                )
            )
        has_results = any(windows.tool_result_ids(m) for m in stored)
        record = self._maintain_window(context, force=has_results, at=command.at, cause="append")
        self._touch(context, command.at)
        result = AppendResult(
            version=context.version,
            last_seq=context.last_seq,
            messages=appended,
            used_tokens=context.used_tokens,
            needs_compaction=context.needs_compaction,
            window_messages=len(context.live),
            compaction=record,
        )
        _remember(context, command.idempotency_key, command.fingerprint, result)
        return result

    def _compact(self, command: Compact) -> CompactResult:
        context = self.get(command.context_id)
        replay = _replay(context, command.idempotency_key, command.fingerprint)
        if replay is not None:
            assert isinstance(replay, CompactResult)
            return attrs.evolve(replay, replayed=True)
        _require_active(context)
        check_version(context, command.if_version)
        _check_tokenizer(context, command.tokenizer)
        replacement = _resolve_replacement(context, command.replacement, command.at)
        total = windows.window_tokens(replacement)
        config = context.config
        if config.policy.strategy != "manual" and total > config.token_budget:
            raise InvalidInput(
                f"The replacement has {total} tokens, more than the token budget of "
                f"{config.token_budget}.",
                "replacement_exceeds_budget",
            )
        before = context.window
        kept = {id(message) for message in replacement}
        removed = [m.seq for m in before if id(m) not in kept]
        action = windows.make_action(
            None,
            "client",
            "replaced",
            context.used_tokens,
            total,
            removed,
            [],
            f"the window was replaced by a compaction of {len(replacement)} messages",
        )
        context.live = live_window(config, replacement)
        context.summary_rebuild = False
        context.used_tokens = total
        context.needs_compaction = config.policy.strategy in (
            "manual",
            "summarize",
        ) and total > windows.trigger_tokens(config)
        record = self._record(context, command.at, "compact", [action])
        self._touch(context, command.at)
        result = CompactResult(
            version=context.version,
            used_tokens=context.used_tokens,
            needs_compaction=context.needs_compaction,
            message_count=len(replacement),
            compaction=record,
        )
        _remember(context, command.idempotency_key, command.fingerprint, result)
        return result

    def _patch_metadata(self, command: PatchMetadata) -> ContextView:
        context = self.get(command.context_id)
        _require_active(context)
        check_version(context, command.if_version)
        merged = merge_patch(context.metadata, command.patch)
        _check_metadata_size(merged)
        if merged != context.metadata:
            context.metadata = merged
            self._touch(context, command.at)
        return context.view()

    def _tombstone(self, command: Tombstone) -> ContextView:
        context = self.get(command.context_id)
        if context.status == "active":
            context.status = "tombstoned"
            context.tombstoned_at = command.at
            self._touch(context, command.at)
        return context.view()

    def _purge(self, command: Purge) -> ContextView:
        """Tombstone and erase the context (see :class:`~.models.Purge`); a purged
        context is left as it is."""
        context = self.get(command.context_id)
        if context.status == "purged":
            return context.view()
        self._count(context.id, 0, -context.log_tokens)
        if context.tombstoned_at is None:
            context.tombstoned_at = command.at
        context.status = "purged"
        context.purge = (command.at, command.by)
        context.metadata = {}
        _release_history(context)
        context.archived_seq = context.last_seq
        context.log_tokens = 0
        context.last_user_seq = None
        context.records = []
        context.newest_record = None
        context.last_summary_error = None
        context.redactions = []
        context.summary_rebuild = False
        self._touch(context, command.at)
        return context.view()

    def _redact(self, command: Redact) -> ContextView:
        """Replace message ``seq``'s parts by the redaction marker, in the log and in
        the window; a message already redacted is left as it is (no new version)."""
        context = self.get(command.context_id)
        if context.status == "purged":
            raise Conflict(
                f"Context '{context.id}' is purged: its messages are already erased.",
                "context_purged",
            )
        seq = command.seq
        if not 1 <= seq <= context.last_seq:
            raise NotFound(
                f"Context '{context.id}' has no message {seq} (its log holds seqs "
                f"1-{context.last_seq})."
            )
        hot = context.hot(seq)
        if hot is not None:
            if hot.is_redacted:
                return context.view()
            old_tokens = hot.token_count
            marker = hot.redacted(command.token_count, command.part_tokens)
            context.log[seq - context.log_offset - 1] = marker
        else:
            if seq in context.redactions:
                return context.view()
            old_tokens = (
                command.token_count if command.archived_tokens is None else command.archived_tokens
            )
            marker = None
        delta = command.token_count - old_tokens
        context.log_tokens += delta
        self._count(context.id, 0, delta)
        if seq not in context.redactions:
            context.redactions.append(seq)
            context.redactions.sort()
        window = context.window
        changed = False
        covered = False
        for index, message in enumerate(window):
            if message.seq == seq:
                if marker is None:
                    marker = message.redacted(command.token_count, command.part_tokens)
                window[index] = marker
                changed = True
            elif windows.is_summary(message):
                summary = (message.metadata or {})["summary"]
                covered = covered or int(summary["from_seq"]) <= seq <= int(summary["to_seq"])
        config = context.config
        record = None
        if changed:
            if config.policy.strategy != "manual":
                window = windows.strip_orphan_results(window)
            context.live = live_window(config, window)
            # The marker can cost more than a short message: the policy runs as after an
            # append, so the window never goes over its budget.
            record = self._maintain_window(context, force=False, at=command.at, cause="redact")
            if config.policy.strategy != "manual" and context.used_tokens > config.token_budget:
                # Only a tiny budget: the marker alone does not fit, and it holds nothing.
                kept = [m for m in context.window if m.seq != seq]
                context.live = live_window(config, windows.strip_orphan_results(kept))
                context.used_tokens = context.live.tokens
        if covered and config.policy.strategy == "summarize":
            context.summary_rebuild = True
            context.needs_compaction = True
        self._touch(context, command.at)
        return attrs.evolve(context.view(), compaction=record)

    # --- helpers -----------------------------------------------------------

    @staticmethod
    def _touch(context: Context, at: int) -> None:
        context.version += 1
        context.updated_at = max(context.updated_at, at)

    @staticmethod
    def _maintain_window(
        context: Context, *, force: bool, at: int, cause: str
    ) -> JSONObject | None:
        """Run the policy when the window crossed the trigger, a step's limit, or
        (time_window) holds an expired unit. Returns the compaction record, if
        the window changed.

        ``force`` (results were appended, or the config changed) also strips
        orphan results under non-manual policies. Amortised O(1) per appended
        message: see :mod:`.live_window`.
        """
        config = context.config
        manual = config.policy.strategy == "manual"
        live = context.live
        runs = windows.should_run(live, config, at)
        if not manual and live.may_hold_orphans and (runs or force):
            context.live = live = live.rebuilt(windows.strip_orphan_results(live.messages()))
            runs = windows.should_run(live, config, at)
        record = None
        if runs:
            needs, actions = windows.run_policy(
                live, config, context.last_user_seq, at, custom_policy
            )
            context.needs_compaction = needs
            if actions:
                record = StateMachine._record(context, at, cause, actions)
        else:
            context.needs_compaction = False
        if context.summary_rebuild and config.policy.strategy == "summarize":
            context.needs_compaction = True  # until the summary is rebuilt
        context.used_tokens = live.tokens
        return record

    @staticmethod
    def _record(
        context: Context,
        at: int,
        cause: str,
        actions: list[JSONObject],
        *,
        outcome: str = "applied",
        extra: JSONObject | None = None,
    ) -> JSONObject:
        """Keep the record of a compaction (``outcome`` ``applied``) or of a failed
        summary (``failed``, not counted as a compaction); return it.

        A policy run that only dropped the messages right after those the
        previous record dropped, for the same reason (``last_n`` at its limit
        drops one message per append), extends that record (``runs`` counts
        them) instead of pushing the older records out.
        """
        version = context.version + 1  # the version the command is about to make
        policy = actions[0]["policy"] if cause == "compact" else context.config.policy.strategy
        if outcome == "applied":
            context.compactions += 1
            context.last_compaction = (at, policy)
        merged = (
            _merge_record(context, at, version, cause, actions) if outcome == "applied" else None
        )
        if merged is not None:
            return merged
        context.record_count += 1
        record: JSONObject = {
            "number": context.record_count,
            "version": version,
            "at": timestamp(at),
            "cause": cause,
            "policy": policy,
            "outcome": outcome,
            "runs": 1,
            "first_version": version,
            "tokens_before": actions[0]["tokens_before"] if actions else context.used_tokens,
            "tokens_after": actions[-1]["tokens_after"] if actions else context.used_tokens,
            "actions": actions,
            **(extra or {}),
        }
        if context.newest_record is not None:
            context.records.append(ordered_json(context.newest_record))
            excess = len(context.records) - (COMPACTION_RECORDS_PER_CONTEXT - 1)
            if excess > 0:
                del context.records[:excess]
        context.newest_record = record
        return record

    def _mark_archived(self, command: MarkArchived) -> int:
        """Raise the archive watermark and trim the hot tail (see :class:`MarkArchived`).
        Returns the watermark."""
        context = self.get(command.context_id)
        context.archived_seq = min(
            max(context.archived_seq, command.archived_seq), context.last_seq
        )
        keep_from = min(context.archived_seq, context.last_seq - max(command.tail_keep, 0))
        if keep_from > context.log_offset:
            del context.log[: keep_from - context.log_offset]
            context.log_offset = keep_from
        if context.status == "tombstoned" and context.archived_seq == context.last_seq:
            # Every message is in the archive and nothing can be appended: the history
            # is the archive's to answer, and the context costs its config and counters.
            _release_history(context)
        return context.archived_seq

    def _summarize(self, command: Summarize) -> SummarizeResult:
        """Apply a summary job's outcome (see :class:`~.models.Summarize`)."""
        context = self.get(command.context_id)
        _require_active(context)
        if command.summary is None:
            error = (command.error or "the summary failed")[:500]
            context.summary_failures += 1
            context.last_summary_error = error
            record = self._record(
                context, command.at, "summary", [], outcome="failed", extra={"error": error}
            )
            self._touch(context, command.at)
            return _summary_result(context, "failed", record)
        if command.base != context.compactions or context.config.policy.strategy != "summarize":
            return _summary_result(context, "stale")
        window = context.window
        mask = context.live.mask
        units = windows.build_units(window, mask)
        folded: set[int] = set()
        for unit in units:
            first = window[unit.indices[0]]
            if first.seq is not None and first.seq > command.to_seq:
                break
            if not unit.pinned or any(windows.is_summary(window[i]) for i in unit.indices):
                folded.update(unit.indices)
        if not folded:
            return _summary_result(context, "stale")
        previous = [window[i] for i in sorted(folded) if windows.is_summary(window[i])]
        seqs = [window[i].seq for i in sorted(folded) if window[i].seq is not None]
        from_seq = min(
            [int((m.metadata or {})["summary"]["from_seq"]) for m in previous]
            + [s for s in seqs if s is not None]
            or [command.to_seq]
        )
        number = context.summaries + 1
        metadata = {"summary": {"number": number, "from_seq": from_seq, "to_seq": command.to_seq}}
        summary = attrs.evolve(command.summary, metadata=metadata).stored(None, command.at)
        last_folded = max(folded)
        new_window: list[Message] = []
        for index, message in enumerate(window):
            if index not in folded:
                new_window.append(message)
            if index == last_folded:
                new_window.append(summary)
        pinned = windows.pinned_tokens(new_window, mask)
        if pinned > context.config.token_budget:
            error = (
                f"the summary has {summary.token_count} tokens: with the pinned messages "
                f"({pinned} tokens) it would not fit the budget of {context.config.token_budget}"
            )
            return self._summarize(attrs.evolve(command, summary=None, error=error))
        context.summaries = number
        context.summary_rebuild = False
        before = context.used_tokens
        removed = [window[i].seq for i in sorted(folded)]
        context.live = live_window(context.config, new_window)
        action = windows.make_action(
            None,
            "summarize",
            "summarized",
            before,
            context.live.tokens,
            removed,
            [],
            f"folded into summary {context.summaries}",
        )
        action["summary"] = context.summaries
        record = self._record(context, command.at, "summary", [action])
        fallback = self._maintain_window(context, force=False, at=command.at, cause="summary")
        self._touch(context, command.at)
        return _summary_result(context, "applied", fallback if fallback is not None else record)

    # --- snapshots ---------------------------------------------------------

    def to_json(self) -> JSONObject:
        return {
            "contexts": [_context_to_json(self.contexts[key]) for key in sorted(self.contexts)],
            "members": [converter.unstructure(self.members[key]) for key in sorted(self.members)],
        }

    def to_bytes(self) -> bytes:
        """Bytes of the whole state (used for snapshots and determinism checks).

        Contexts are in id order; every object inside keeps its key order, so
        messages come back from a snapshot byte for byte as they were sent.
        The same commands in the same order give the same bytes.
        """
        return ordered_json(self.to_json())

    @classmethod
    def from_bytes(cls, data: bytes) -> StateMachine:
        machine = cls()
        state = json.loads(data)
        for raw in state["contexts"]:
            context = _context_from_json(raw)
            machine.contexts[context.id] = context
            machine._count(context.id, 1, context.log_tokens)
        for raw in state.get("members", []):  # snapshots of older versions have none
            member = converter.structure(raw, PutMember)
            machine.members[member.node_id] = member
        return machine


def _summary_result(
    context: Context,
    outcome: Literal["applied", "stale", "failed"],
    record: JSONObject | None = None,
) -> SummarizeResult:
    return SummarizeResult(
        context.version,
        outcome,
        context.used_tokens,
        context.needs_compaction,
        context.last_seq,
        record,
    )


def _merge_record(
    context: Context, at: int, version: int, cause: str, actions: list[JSONObject]
) -> JSONObject | None:
    """Extend the newest record with this run if it continues it (see ``_record``)."""
    previous = context.newest_record
    if cause != "append" or len(actions) != 1 or previous is None:
        return None
    action = actions[0]
    removed = action["removed"]
    if len(removed) != 1 or action["changed"] or "removed_unlogged" in action:
        return None
    if previous["cause"] != "append" or previous["outcome"] != "applied":
        return None
    if len(previous["actions"]) != 1:
        return None
    last = previous["actions"][0]
    same = all(last[key] == action[key] for key in ("step", "policy", "reason"))
    if not same or len(last["removed"]) != 1 or last["changed"] or "removed_unlogged" in last:
        return None
    if last["removed"][0][1] + 1 != removed[0][0]:
        return None
    extended = {
        **last,
        "removed": [[last["removed"][0][0], removed[0][1]]],
        "tokens_after": action["tokens_after"],
        "detail": action["detail"],
    }
    merged: JSONObject = {
        **previous,
        "version": version,
        "at": timestamp(at),
        "runs": previous["runs"] + 1,
        "tokens_after": action["tokens_after"],
        "actions": [extended],
    }
    context.newest_record = merged
    return merged


def _context_to_json(context: Context) -> JSONObject:
    """A context as snapshot JSON. A window message that is the log's own message
    is stored as ``{"ref": seq}``, so a restored window shares the log's objects
    (as it did before the restart) instead of holding copies."""
    log = context.log
    window: list[JSONObject | list[Any]] = []
    for message in context.live.messages():
        seq = message.seq
        if seq is not None and context.hot(seq) is message:
            window.append({"ref": seq})
        else:
            window.append(_message_to_json(message))
    return {
        "id": context.id,
        "config": converter.unstructure(context.config, ContextConfig),
        "metadata": context.metadata,
        "created_at": context.created_at,
        "updated_at": context.updated_at,
        "status": context.status,
        "version": context.version,
        "log": [_message_to_json(message) for message in log],
        "log_offset": context.log_offset,
        "archived_seq": context.archived_seq,
        "window": window,
        "used_tokens": context.used_tokens,
        "needs_compaction": context.needs_compaction,
        "idempotency": context.idempotency.to_text(),
        "last_user_seq": context.last_user_seq,
        "compactions": context.compactions,
        "last_compaction": list(context.last_compaction) if context.last_compaction else None,
        "records": [record.decode() for record in context.all_records()],
        "record_count": context.record_count,
        "summaries": context.summaries,
        "summary_failures": context.summary_failures,
        "last_summary_error": context.last_summary_error,
        "log_tokens": context.log_tokens,
        "tombstoned_at": context.tombstoned_at,
        "purge": list(context.purge) if context.purge is not None else None,
        "redactions": context.redactions,
        "summary_rebuild": context.summary_rebuild,
    }


def _message_to_json(message: Message) -> list[Any]:
    """A message in a snapshot: its rendered JSON (as a string, so it comes back
    byte for byte), its per-part token counts and its time in milliseconds."""
    return [message.raw.decode(), message.part_tokens, message.created_at]


def _message_from_json(entry: list[Any]) -> Message:
    raw, part_tokens, created_at = entry
    return Message.from_raw(raw.encode(), part_tokens, created_at)


def _context_from_json(raw: JSONObject) -> Context:
    log = [_message_from_json(entry) for entry in raw["log"]]
    offset = raw.get("log_offset", 0)  # snapshots of older versions kept the whole log
    window = [
        log[entry["ref"] - 1 - offset] if isinstance(entry, dict) else _message_from_json(entry)
        for entry in raw["window"]
    ]
    config = converter.structure(raw["config"], ContextConfig)
    last_compaction = raw.get("last_compaction")
    return Context(
        id=raw["id"],
        config=config,
        metadata=raw["metadata"],
        created_at=raw["created_at"],
        updated_at=raw["updated_at"],
        status=raw["status"],
        version=raw["version"],
        log=log,
        log_offset=offset,
        archived_seq=raw.get("archived_seq", 0),
        live=live_window(config, window),
        used_tokens=raw["used_tokens"],
        needs_compaction=raw["needs_compaction"],
        idempotency=IdempotencyTable.from_text(raw["idempotency"]),
        last_user_seq=raw["last_user_seq"],
        # Snapshots of older versions have no records.
        compactions=raw.get("compactions", 0),
        last_compaction=(last_compaction[0], last_compaction[1]) if last_compaction else None,
        records=[record.encode() for record in raw.get("records", [])[:-1]],
        newest_record=json.loads(raw["records"][-1]) if raw.get("records") else None,
        record_count=raw.get("record_count", 0),
        summaries=raw.get("summaries", 0),
        summary_failures=raw.get("summary_failures", 0),
        last_summary_error=raw.get("last_summary_error"),
        # Snapshots of older versions: the hot log is the whole log unless it was archived.
        log_tokens=raw.get("log_tokens", sum(message.token_count for message in log)),
        # Snapshots of older versions: a tombstone's time was its last update.
        tombstoned_at=raw.get(
            "tombstoned_at", raw["updated_at"] if raw["status"] != "active" else None
        ),
        purge=(purge[0], purge[1]) if (purge := raw.get("purge")) else None,
        redactions=list(raw.get("redactions", [])),
        summary_rebuild=raw.get("summary_rebuild", False),
    )


def _check_fits(context: Context, new: Sequence[Message]) -> None:
    """Refuse new messages that a non-manual policy could only keep by breaking the budget.

    Each new message's unit (the message, or a tool call with its results)
    must fit beside the pinned units; otherwise the policy would have to drop
    the very message just appended, or the window would overrun the budget.
    """
    budget = context.config.token_budget
    for index, message in enumerate(new):
        if message.token_count > budget:
            raise InvalidInput(
                f"messages[{index}] has {message.token_count} tokens, more than the context's "
                f"token budget of {budget}; it could never be sent to the model.",
                "message_exceeds_budget",
            )
    if context.used_tokens + sum(m.token_count for m in new) <= budget:
        return  # everything fits, so every unit does (the common case: no scan)
    combined = windows.strip_orphan_results([*context.window, *new])
    units = windows.build_units(combined, context.live.mask)
    pinned = sum(unit.tokens for unit in units if unit.pinned)
    if pinned > budget:
        raise InvalidInput(
            f"Pinned messages (and the tool messages bound to them) would use {pinned} tokens, "
            f"more than the token budget of {budget}.",
            "pinned_exceeds_budget",
        )
    first_new_seq = min(m.seq or 0 for m in new)
    for unit in units:
        if unit.pinned or all((combined[i].seq or 0) < first_new_seq for i in unit.indices):
            continue
        if unit.tokens + pinned > budget:
            what = "The message" if len(unit.indices) == 1 else "The tool call with its results"
            raise InvalidInput(
                f"{what} ({unit.tokens} tokens) does not fit the token budget of {budget} "
                f"beside {pinned} tokens of pinned messages.",
                "message_exceeds_budget" if len(unit.indices) == 1 else "unit_exceeds_budget",
            )


def _resolve_replacement(
    context: Context, replacement: Sequence[MessageInput | KeptMessage], at: int
) -> list[Message]:
    """The new window: new messages stored without a seq, kept ones looked up by seq.

    A kept message is the window's version of that seq when the client sent
    that content (a policy may have stripped parts from it), otherwise the
    log's; content that matches neither is refused, so a kept message is never
    silently something other than what the client read.
    """
    in_window = {m.seq: m for m in context.window if m.seq is not None}
    result: list[Message] = []
    for index, item in enumerate(replacement):
        if isinstance(item, MessageInput):
            result.append(item.stored(None, at))
            continue
        if not 1 <= item.seq <= context.last_seq:
            raise InvalidInput(
                f"replacement[{index}] keeps seq {item.seq}, but the log of '{context.id}' "
                f"holds seqs 1-{context.last_seq}. Leave 'seq' out to add a new message.",
                "unknown_seq",
            )
        candidates = [in_window.get(item.seq), context.hot(item.seq)]
        kept = next((m for m in candidates if m is not None and _keeps(m, item)), None)
        if kept is None:
            raise InvalidInput(
                f"replacement[{index}] keeps seq {item.seq}, but its id, role, parts or "
                f"metadata differ from message {item.seq} as the window and the log hold it. "
                "Send the message as read from GET /context, or leave 'seq' out to add it "
                "as a new message.",
                "kept_message_mismatch",
            )
        result.append(kept)
    return result


def _keeps(message: Message, item: KeptMessage) -> bool:
    """Whether ``item`` (what the client sent back with a seq) is ``message``."""
    data = message.to_json()
    digest = content_digest(data["role"], data["parts"], data["metadata"])
    return digest == item.digest and item.id in (None, data["id"])


def _check_metadata_size(metadata: JSONObject) -> None:
    size = len(canonical_json(metadata))
    if size > MAX_METADATA_BYTES:
        raise InvalidInput(
            f"The merged metadata would be {size} bytes of JSON, more than {MAX_METADATA_BYTES}.",
            "metadata_too_large",
        )


def _require_active(context: Context) -> None:
    if context.status != "active":
        raise Conflict(f"Context '{context.id}' is {context.status}.", "context_tombstoned")


def _release_history(context: Context) -> None:
    """Drop the hot tail, the window and the idempotency table of a context that
    takes no more writes (tombstoned and archived, or purged)."""
    context.log_offset = context.last_seq
    context.log = []
    context.live = live_window(context.config)
    context.used_tokens = 0
    context.needs_compaction = False
    context.idempotency = IdempotencyTable()
    context.segment_cache = None


def check_version(context: Context, if_version: int | None) -> None:
    if if_version is not None and if_version != context.version:
        raise Conflict(
            f"Context '{context.id}' is at version {context.version}, not {if_version}.",
            "version_conflict",
        )


def _check_tokenizer(context: Context, tokenizer: str) -> None:
    if tokenizer != context.config.tokenizer:
        raise Conflict(
            f"Tokens were counted with {tokenizer} but the context uses "
            f"{context.config.tokenizer}; retry the request.",
            "tokenizer_changed",
        )


def _replay(
    context: Context, key: str | None, fingerprint: str | None
) -> AppendResult | CompactResult | None:
    """The first answer to ``key``, rebuilt from its record and the log (``None``: new key)."""
    if key is None:
        return None
    remembered = context.idempotency.get(key)
    if remembered is None:
        return None
    if remembered.fingerprint != fingerprint_digest(fingerprint):
        raise Conflict(
            f"Idempotency key '{key}' was already used for a different request.",
            "idempotency_key_reused",
        )
    if remembered.compaction:
        return CompactResult(
            version=remembered.version,
            used_tokens=remembered.used_tokens,
            needs_compaction=remembered.needs_compaction,
            message_count=remembered.count,
        )
    first = remembered.first_seq
    seqs = range(first, first + remembered.count)
    hot = [m for seq in seqs if (m := context.hot(seq)) is not None]
    appended = [
        AppendedMessage(seq=m.seq or 0, id=m.id, token_count=m.token_count, created_at=m.created_at)
        for m in hot
    ]
    return AppendResult(
        version=remembered.version,
        last_seq=first + remembered.count - 1,
        messages=appended,
        archived=remembered.count - len(hot),
        used_tokens=remembered.used_tokens,
        needs_compaction=remembered.needs_compaction,
    )


def _remember(
    context: Context,
    key: str | None,
    fingerprint: str | None,
    result: AppendResult | CompactResult,
) -> None:
    if key is None:
        return
    compaction = isinstance(result, CompactResult)
    remembered = Remembered(
        fingerprint=fingerprint_digest(fingerprint),
        version=result.version,
        first_seq=0 if isinstance(result, CompactResult) else result.messages[0].seq,
        used_tokens=result.used_tokens,
        count=result.message_count if isinstance(result, CompactResult) else len(result.messages),
        compaction=compaction,
        needs_compaction=result.needs_compaction,
    )
    context.idempotency.add(key, remembered, IDEMPOTENCY_KEYS_PER_CONTEXT)


def replay_commands(commands: Sequence[Command]) -> StateMachine:
    """Apply commands to a fresh machine, ignoring refusals (for tests and recovery checks)."""
    machine = StateMachine()
    for command in commands:
        with contextlib.suppress(InvalidInput, NotFound, Conflict):
            machine.apply(command)
    return machine
