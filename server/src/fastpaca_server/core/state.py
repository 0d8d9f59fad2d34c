"""The per-context state machine: ``apply(command) -> result`` (pure, deterministic).

Applying the same commands in the same order gives byte-identical state
(:meth:`StateMachine.to_bytes`). A command that is refused raises a
:class:`~fastpaca_server.core.errors.DomainError` before anything changes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from typing import Any

import attrs

from . import window as windows
from .errors import Conflict, InvalidInput, NotFound
from .idempotency import IdempotencyTable, Remembered, fingerprint_digest
from .live_window import LiveWindow
from .live_window import apply_policy as apply_live_policy
from .models import (
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
    Message,
    MessageInput,
    PatchMetadata,
    PutContext,
    PutMember,
    Tombstone,
    canonical_json,
    content_digest,
    converter,
    ordered_json,
)


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

    @property
    def last_seq(self) -> int:
        return len(self.log)

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
        )

    def messages_between(self, after_seq: int, before_seq: int | None, limit: int) -> list[Message]:
        """Log messages with ``after_seq < seq < before_seq``, oldest first, at most ``limit``."""
        end = self.last_seq if before_seq is None else min(before_seq - 1, self.last_seq)
        start = max(after_seq, 0)
        return self.log[start : min(end, start + limit)] if end > start else []

    def cached_segments(self) -> list[dict[str, int | str | None]] | None:
        """The window's :func:`~.window.segments` if a read at this version computed them."""
        cache = self.segment_cache
        return cache[1] if cache is not None and cache[0] == self.version else None

    def cache_segments(self, version: int, segments: list[dict[str, int | str | None]]) -> None:
        """Remember the segments of the window at ``version`` (callers never mutate them)."""
        self.segment_cache = (version, segments)

    def window_within(self, budget: int) -> list[Message]:
        """The window, trimmed (oldest unpinned units first) to fit ``budget`` tokens."""
        return window_within(self.window, budget)

    def tail(self, offset: int, limit: int) -> list[Message]:
        """The ``limit`` messages before the newest ``offset``, oldest first."""
        end = max(self.last_seq - offset, 0)
        return self.log[max(end - limit, 0) : end]


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


def window_within(window: list[Message], budget: int) -> list[Message]:
    """``window`` trimmed (oldest unpinned units first) to fit ``budget`` tokens.

    Raises ``budget_too_small`` when the pinned messages alone do not fit.
    """
    if windows.window_tokens(window) <= budget:
        return window
    pinned = windows.pinned_tokens(window)
    if pinned > budget:
        raise InvalidInput(
            f"Pinned messages use {pinned} tokens, more than budget_tokens={budget}.",
            "budget_too_small",
        )
    return windows.trim(window, max_tokens=budget, max_messages=None)


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
            )
            self.contexts[context.id] = context
            return context.view()
        _require_active(context)
        metadata = context.metadata if command.metadata is None else dict(command.metadata)
        if config == context.config and metadata == context.metadata:
            return context.view()
        if config.tokenizer != context.config.tokenizer and (context.log or len(context.live)):
            raise Conflict(
                "The tokenizer of a context with messages cannot change: "
                "its counts would be wrong.",
                "tokenizer_immutable",
            )
        pinned = context.live.pinned_tokens
        if config.policy.strategy != "manual" and pinned > config.token_budget:
            raise Conflict(
                f"Pinned messages use {pinned} tokens, more than the new budget "
                f"of {config.token_budget}.",
                "budget_below_pinned",
            )
        context.config = config
        context.metadata = metadata
        context.live = LiveWindow.of(context.live.messages())  # new rules: index afresh
        self._maintain_window(context, force=True, at=command.at)
        self._touch(context, command.at)
        return context.view()

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
        self._maintain_window(context, force=has_results, at=command.at)
        self._touch(context, command.at)
        result = AppendResult(
            version=context.version,
            last_seq=context.last_seq,
            messages=appended,
            used_tokens=context.used_tokens,
            needs_compaction=context.needs_compaction,
            window_messages=len(context.live),
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
        context.live = LiveWindow.of(replacement)
        context.used_tokens = total
        context.needs_compaction = (
            config.policy.strategy == "manual" and total > windows.trigger_tokens(config)
        )
        self._touch(context, command.at)
        result = CompactResult(
            version=context.version,
            used_tokens=context.used_tokens,
            needs_compaction=context.needs_compaction,
            message_count=len(replacement),
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
        if context.status != "tombstoned":
            context.status = "tombstoned"
            self._touch(context, command.at)
        return context.view()

    # --- helpers -----------------------------------------------------------

    @staticmethod
    def _touch(context: Context, at: int) -> None:
        context.version += 1
        context.updated_at = max(context.updated_at, at)

    @staticmethod
    def _maintain_window(context: Context, *, force: bool, at: int) -> None:
        """Re-apply the policy when the window crossed the trigger or its limit.

        ``force`` (results were appended, or the config changed) also strips
        orphan results under non-manual policies. Amortised O(1) per appended
        message: see :mod:`.live_window`.
        """
        config = context.config
        manual = config.policy.strategy == "manual"
        live = context.live
        limit = windows.message_limit(config)
        over_limit = limit is not None and live.unpinned_count > limit
        cutoff = windows.expiry_cutoff(config, at)
        runs = live.tokens > windows.trigger_tokens(config) or over_limit
        runs = runs or (cutoff is not None and live.has_expired(cutoff))
        if not manual and live.may_hold_orphans and (runs or force):
            context.live = live = LiveWindow.of(windows.strip_orphan_results(live.messages()))
            over_limit = limit is not None and live.unpinned_count > limit
            runs = live.tokens > windows.trigger_tokens(config) or over_limit
            runs = runs or (cutoff is not None and live.has_expired(cutoff))
        if runs:
            context.needs_compaction = apply_live_policy(live, config, context.last_user_seq, at)
        else:
            context.needs_compaction = False
        context.used_tokens = live.tokens

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
        for raw in state.get("members", []):  # snapshots of older versions have none
            member = converter.structure(raw, PutMember)
            machine.members[member.node_id] = member
        return machine


def _context_to_json(context: Context) -> JSONObject:
    """A context as snapshot JSON. A window message that is the log's own message
    is stored as ``{"ref": seq}``, so a restored window shares the log's objects
    (as it did before the restart) instead of holding copies."""
    log = context.log
    window: list[JSONObject | list[Any]] = []
    for message in context.live.messages():
        seq = message.seq
        if seq is not None and 0 < seq <= len(log) and log[seq - 1] is message:
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
        "window": window,
        "used_tokens": context.used_tokens,
        "needs_compaction": context.needs_compaction,
        "idempotency": context.idempotency.to_text(),
        "last_user_seq": context.last_user_seq,
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
    window = [
        log[entry["ref"] - 1] if isinstance(entry, dict) else _message_from_json(entry)
        for entry in raw["window"]
    ]
    return Context(
        id=raw["id"],
        config=converter.structure(raw["config"], ContextConfig),
        metadata=raw["metadata"],
        created_at=raw["created_at"],
        updated_at=raw["updated_at"],
        status=raw["status"],
        version=raw["version"],
        log=log,
        live=LiveWindow.of(window),
        used_tokens=raw["used_tokens"],
        needs_compaction=raw["needs_compaction"],
        idempotency=IdempotencyTable.from_text(raw["idempotency"]),
        last_user_seq=raw["last_user_seq"],
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
    units = windows.build_units(combined)
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
        candidates = [in_window.get(item.seq), context.log[item.seq - 1]]
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
    if context.status == "tombstoned":
        raise Conflict(f"Context '{context.id}' is tombstoned.", "context_tombstoned")


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
    appended = [
        AppendedMessage(seq=m.seq or 0, id=m.id, token_count=m.token_count, created_at=m.created_at)
        for m in context.log[first - 1 : first - 1 + remembered.count]
    ]
    return AppendResult(
        version=remembered.version,
        last_seq=first + remembered.count - 1,
        messages=appended,
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
