"""Hypothesis properties of the state machine: the guarantees 2-4 of the README and determinism.

Lists of generated commands are applied to a fresh :class:`StateMachine`;
after every command the invariants are checked against the machine and
against a small model that knows which messages were accepted. Messages carry
made-up token counts (``4 + sum(part_tokens)``), so no tokenizer is involved.

Compaction replacements hold no tool results: the core stores a replacement
as given (docs/api.md), so an orphan result in one is the client's choice, not
a policy's. Tool results are never pinned. The known core bug left (the xfail
test in test_core_window.py) breaks none of the invariants checked here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from core_builders import message_input, stored
from fastpaca_server.core import (
    AppendMessages,
    AppendResult,
    Command,
    Compact,
    CompactResult,
    ContextConfig,
    DomainError,
    MarkArchived,
    Message,
    MessageInput,
    PatchMetadata,
    Policy,
    Purge,
    PutContext,
    Redact,
    StateMachine,
    Summarize,
    Tombstone,
    command_from_json,
    command_to_json,
    replay_commands,
)
from fastpaca_server.core import window as windows
from fastpaca_server.core.models import PIN_FLAG, converter
from fastpaca_server.core.state import _context_to_json as context_to_json
from fastpaca_server.core.state import namespace_of
from fastpaca_server.tokens import MESSAGE_OVERHEAD
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CALL_IDS = ("t0", "t1", "t2")
KEYS = ("k0", "k1", "k2")
MAIN = "c"
OTHER = "t:d"  # in a namespace of its own (``t``), MAIN in the one without
CONTEXT_IDS = (MAIN,) * 12 + (OTHER, OTHER, "missing")
MOSTLY_O200K = ("o200k_base",) * 15 + ("cl100k_base",)
PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# --- strategies ---------------------------------------------------------------------

part_tokens = st.integers(min_value=0, max_value=14)


def weighted(*choices: tuple[st.SearchStrategy, int]) -> st.SearchStrategy:
    """Draw from one of the strategies, each as often as its weight says."""
    pool = [strategy for strategy, weight in choices for _ in range(weight)]
    return st.sampled_from(pool).flatmap(lambda strategy: strategy)


def _text(kind: str, role: str, metadata: dict[str, Any] | None = None) -> st.SearchStrategy:
    return st.builds(
        lambda n, t: message_input(
            f"{kind}-{n}", role, [{"type": "text", "text": f"{kind} {n}"}], [t], metadata
        ),
        st.integers(0, 999),
        part_tokens,
    )


def _tool_calls() -> st.SearchStrategy:
    def build(
        n: int, calls: list[str], tokens: list[int], with_text: bool, pinned: int
    ) -> MessageInput:
        parts: list[dict[str, Any]] = (
            [{"type": "text", "text": "let me check"}] if with_text else []
        )
        parts += [
            {"type": "tool_call", "id": call, "name": "weather", "payload": {"city": n}}
            for call in calls
        ]
        return message_input(
            f"call-{n}",
            "assistant",
            parts,
            (tokens * len(parts))[: len(parts)],
            {"pinned": True} if pinned == 0 else None,
        )

    return st.builds(
        build,
        st.integers(0, 999),
        st.lists(st.sampled_from(CALL_IDS), min_size=1, max_size=2, unique=True),
        st.lists(part_tokens, min_size=1, max_size=3),
        st.booleans(),
        st.integers(0, 5),  # one call message in six is pinned
    )


def _tool_result() -> st.SearchStrategy:
    """A tool message answering one or two calls; "gone" never has a call (an orphan)."""
    return st.builds(
        lambda n, calls, t: message_input(
            f"result-{n}",
            "tool",
            [{"type": "tool_result", "tool_call_id": call, "output": {"n": n}} for call in calls],
            [t] * len(calls),
        ),
        st.integers(0, 999),
        st.lists(st.sampled_from((*CALL_IDS, "gone")), min_size=1, max_size=2, unique=True),
        part_tokens,
    )


def _mixed_parts() -> st.SearchStrategy:
    """Reasoning, ai-sdk ``tool-*`` and ``dynamic-tool`` parts next to text."""
    kinds = st.sampled_from(
        [
            {"type": "reasoning", "text": "thinking"},
            {"type": "tool-weather", "toolCallId": "x", "state": "output-available"},
            {"type": "dynamic-tool", "toolName": "search", "state": "input-available"},
            {"type": "text", "text": "answer"},
        ]
    )
    return st.builds(
        lambda n, parts, tokens: message_input(
            f"mixed-{n}", "assistant", parts, [tokens[i % len(tokens)] for i in range(len(parts))]
        ),
        st.integers(0, 999),
        st.lists(kinds, min_size=1, max_size=3),
        st.lists(part_tokens, min_size=1, max_size=3),
    )


def message_inputs(*, with_results: bool = True) -> st.SearchStrategy:
    return weighted(
        (_text("user", "user"), 3),
        (_text("assistant", "assistant"), 2),
        (_text("system", "system"), 1),
        (_text("pinned", "user", {"pinned": True}), 1),
        (_tool_calls(), 3),
        (_mixed_parts(), 2),
        (_tool_result(), 3 if with_results else 0),
    )


_FRAMES = {"tool_result": 3, "tool": 3, "dynamic-tool": 3}
"""Made-up token counts of the cleared-output frames (the API stamps real ones)."""

step_policies = st.one_of(
    st.builds(lambda limit: Policy("last_n", {"limit": limit}), st.integers(1, 8)),
    st.builds(
        lambda limit, kinds: Policy("skip_parts", {"limit": limit, "skip_kinds": kinds}),
        st.integers(1, 8),
        st.lists(
            st.sampled_from(["tool", "reasoning", "dynamic-tool", "tool_call", "tool_result"]),
            max_size=3,
            unique=True,
        ),
    ),
    st.builds(lambda age: Policy("time_window", {"max_age_seconds": age}), st.integers(1, 12)),
    st.builds(
        lambda ratio: Policy("budget", {"target_ratio": ratio}),
        st.sampled_from([0.1, 0.3, 0.5, 0.9, 1.0]),
    ),
    st.builds(
        lambda keep, exclude, least, ratio: Policy(
            "strip_tool_results",
            {
                "keep": keep,
                "placeholder": "[cleared]",
                "exclude_tools": exclude,
                "clear_at_least": least,
                "target_ratio": ratio,
                "frames": _FRAMES,
            },
        ),
        st.integers(0, 3),
        st.sampled_from([[], [], ["weather"], ["search"]]),
        st.sampled_from([0, 0, 5, 30]),
        st.sampled_from([0.3, 0.5, 1.0]),
    ),
)


def _pinned(policy: Policy, pin: bool) -> Policy:
    """``pin: "none"`` on one policy in four: system messages may be dropped too."""
    return policy if pin else Policy(policy.strategy, {**policy.config, "pin": "none"})


policies = st.builds(
    _pinned,
    st.one_of(
        step_policies,
        st.lists(step_policies, min_size=1, max_size=3).map(
            lambda steps: Policy(
                "pipeline",
                {"steps": [{"strategy": p.strategy, "config": p.config} for p in steps]},
            )
        ),
        st.just(Policy("manual", {})),
        st.builds(
            lambda ratio: Policy("summarize", {"target_ratio": ratio}),
            st.sampled_from([0.2, 0.5, 0.9]),
        ),
    ),
    st.integers(0, 3).map(bool),
)

configs = st.builds(
    ContextConfig,
    token_budget=st.integers(15, 200),
    trigger_ratio=st.sampled_from([0.2, 0.5, 0.7, 0.9, 1.0]),
    policy=policies,
    tokenizer=st.sampled_from(MOSTLY_O200K),
)

context_ids = st.sampled_from(CONTEXT_IDS)
if_versions = st.integers(0, 60).map(lambda n: n if 1 <= n <= 12 else None)
keys = st.integers(0, 9).map(lambda n: KEYS[n] if n < len(KEYS) else None)


def fingerprint(kind: str, messages: list[MessageInput], if_version: int | None) -> str:
    """Like the API's: a digest of the request body without its key."""
    body = json.dumps(
        [kind, converter.unstructure(messages), if_version], sort_keys=True, ensure_ascii=True
    )
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def _keyed(command: AppendMessages | Compact) -> AppendMessages | Compact:
    if command.idempotency_key is None:
        return command
    messages = command.messages if isinstance(command, AppendMessages) else command.replacement
    return attrs.evolve(
        command, fingerprint=fingerprint(command.kind, messages, command.if_version)
    )


appends = st.builds(
    lambda context_id, messages, tokenizer, key, if_version: _keyed(
        AppendMessages(context_id, 0, messages, tokenizer, key, None, if_version)
    ),
    context_ids,
    st.lists(message_inputs(), min_size=1, max_size=3),
    st.sampled_from(MOSTLY_O200K),
    keys,
    if_versions,
)

compacts = st.builds(
    lambda context_id, replacement, tokenizer, key, if_version: _keyed(
        Compact(context_id, 0, replacement, tokenizer, key, None, if_version)
    ),
    context_ids,
    st.lists(message_inputs(with_results=False), max_size=3),
    st.sampled_from(MOSTLY_O200K),
    keys,
    if_versions,
)

metadata_values = st.one_of(
    st.none(),
    st.integers(0, 3),
    st.dictionaries(
        st.sampled_from(["x", "y"]), st.one_of(st.none(), st.integers(0, 3)), max_size=2
    ),
)
patches = st.builds(
    PatchMetadata,
    context_ids,
    st.just(0),
    st.dictionaries(st.sampled_from(["a", "b", "pinned"]), metadata_values, max_size=3),
    if_versions,
)
puts = st.builds(
    PutContext,
    st.sampled_from([MAIN, MAIN, OTHER]),
    st.just(0),
    configs,
    st.one_of(st.none(), st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 3))),
)
tombstones = st.builds(Tombstone, st.sampled_from([OTHER] * 8 + [MAIN, "missing"]), st.just(0))
purges = st.builds(
    Purge,
    st.sampled_from([OTHER] * 8 + [MAIN, "missing"]),
    st.just(0),
    st.sampled_from([None, "admin", "retention"]),
)
redacts = st.builds(
    lambda context_id, seq, archived, marker: Redact(
        context_id, 0, seq, MESSAGE_OVERHEAD + marker, [marker], archived
    ),
    context_ids,
    st.integers(0, 12),
    st.one_of(st.none(), st.integers(0, 20)),  # the run stamps the archive's count
    # The marker's per-part count (the API counts it): sometimes more than the message
    # it replaces, which must not put the window over its budget.
    st.integers(1, 60),
)
CURRENT = -1
"""A summary job's ``base`` that :func:`current` sets to the context's compaction
count when the command is applied (a job that nothing raced)."""


def current(machine: StateMachine, command: Command) -> Command:
    if isinstance(command, Summarize) and command.base == CURRENT:
        context = machine.contexts.get(command.context_id)
        return attrs.evolve(command, base=context.compactions if context is not None else 0)
    return command


def _summary_input(n: int, tokens: int) -> MessageInput:
    return message_input(f"summary-{n}", "system", [{"type": "text", "text": "gist"}], [tokens])


archivings = st.builds(
    MarkArchived, context_ids, st.integers(0, 40), st.sampled_from([0, 1, 3, 1000])
)
summarizes = st.builds(
    lambda context_id, base, to_seq, tokens, n, ok: Summarize(
        context_id,
        0,
        base,
        to_seq,
        summary=message_input(
            f"summary-{n}", "system", [{"type": "text", "text": "gist"}], [tokens]
        )
        if ok
        else None,
        error=None if ok else "the summarizer answered HTTP 500",
    ),
    context_ids,
    st.sampled_from([CURRENT, CURRENT, CURRENT, 0, 2]),  # the compaction count the job read
    st.integers(1, 30),
    part_tokens,
    st.integers(0, 999),
    st.integers(0, 4).map(bool),
)


@attrs.frozen
class Retry:
    """Placeholder: send an earlier keyed append or compact again (a client retry)."""

    pick: int


one_command = weighted(
    (appends, 24),
    (compacts, 3),
    (puts, 3),
    (patches, 2),
    (tombstones, 1),
    (purges, 1),
    (redacts, 3),
    (summarizes, 3),
    (archivings, 3),
    (st.builds(Retry, st.integers(0, 50)), 3),
)


def _resolve(first: PutContext, drawn: list[Command | Retry]) -> list[Command]:
    """Time the commands (``at`` = one second per position, so that time_window's
    ages of seconds expire messages) and turn retries into real commands."""
    commands: list[Command] = [first]
    keyed: list[AppendMessages | Compact] = []
    for item in drawn:
        at = len(commands) * 1000
        if isinstance(item, Retry):
            if not keyed:
                continue
            command: Command = attrs.evolve(keyed[item.pick % len(keyed)], at=at)
        else:
            command = attrs.evolve(item, at=at) if hasattr(item, "at") else item
        if isinstance(command, AppendMessages | Compact) and command.idempotency_key:
            keyed.append(command)
        commands.append(command)
    return commands


command_lists = st.builds(
    _resolve,
    puts.map(lambda p: attrs.evolve(p, context_id=MAIN)),
    st.lists(one_command, min_size=10, max_size=50),
)


# --- the model and the runner -------------------------------------------------------


@attrs.define
class ContextModel:
    """What the test itself knows about one context."""

    log: list[Message] = attrs.field(factory=list)
    keys: dict[str, tuple[str | None, Any]] = attrs.field(factory=dict)
    floor_seq: int = 0  # the last seq before the latest accepted compact
    system_floor_seq: int = 0
    """The newest seq appended while ``pin: "none"`` was in force (system messages
    up to it may have been dropped; flagged ones never)."""
    version: int = 1
    snapshot: Any = None
    purged: bool = False


def _context_json(machine: StateMachine, context_id: str) -> Any:
    return context_to_json(machine.contexts[context_id])


BUDGET_CODES = {"message_exceeds_budget", "unit_exceeds_budget", "pinned_exceeds_budget"}


def _expected_append_refusal(
    machine: StateMachine, command: AppendMessages
) -> str | set[str] | None:
    """The error code(s) the core may give ``command`` (not a replay); None: must accept."""
    context = machine.contexts[command.context_id]
    if context.status != "active":
        return "context_tombstoned"
    if command.if_version is not None and command.if_version != context.version:
        return "version_conflict"
    if command.tokenizer != context.config.tokenizer:
        return "tokenizer_changed"
    budget = context.config.token_budget
    if context.config.policy.strategy == "manual":
        return None  # no budget checks under manual
    if any(m.token_count > budget for m in command.messages):
        return "message_exceeds_budget"
    mask = windows.pin_mask(context.config)
    new_pinned = sum(
        m.token_count for m in command.messages if windows.is_pinned(stored(m, 0), mask)
    )
    if windows.pinned_tokens(context.window, mask) + new_pinned > budget:
        return "pinned_exceeds_budget"
    # The unit checks (a unit beside the pinned ones) are not modelled here.
    return BUDGET_CODES


OTHER_REFUSALS = {
    "put_context": {"context_tombstoned", "tokenizer_immutable", "budget_below_pinned"},
    "compact": {
        "context_tombstoned",
        "version_conflict",
        "tokenizer_changed",
        "replacement_exceeds_budget",
    },
    "patch_metadata": {"context_tombstoned", "version_conflict", "metadata_too_large"},
    "tombstone": set(),
    "summarize": {"context_tombstoned"},
    "mark_archived": set(),
    "purge": set(),
    "redact": {"not_found", "context_purged"},
}


def apply_and_track(
    machine: StateMachine, models: dict[str, ContextModel], command: Command
) -> None:
    """Apply one command, checking its outcome against the model, and update the model."""
    before = machine.to_bytes()
    context_id = command.context_id
    exists = context_id in machine.contexts
    key = getattr(command, "idempotency_key", None)
    model = models.get(context_id)
    replay = model.keys.get(key) if (model is not None and key is not None) else None
    expected_code: str | set[str] | None = None
    if not exists and not isinstance(command, PutContext):
        expected_code = "not_found"
    elif replay is not None and replay[0] != command.fingerprint:  # type: ignore[union-attr]
        expected_code = "idempotency_key_reused"
    elif replay is None and isinstance(command, AppendMessages):
        expected_code = _expected_append_refusal(machine, command)

    try:
        result = machine.apply(command)
    except DomainError as error:
        assert machine.to_bytes() == before, f"refused {command!r} changed the state"
        if isinstance(expected_code, set):
            assert error.code in expected_code, (error.code, expected_code)
        elif expected_code is not None:
            assert error.code == expected_code, (error.code, expected_code)
        else:
            assert not isinstance(command, AppendMessages), f"refused a valid append: {error!r}"
            assert replay is None, "a replay was refused"
            assert error.code in OTHER_REFUSALS[command.kind], (command.kind, error.code)
        return
    assert not isinstance(expected_code, str), f"{command!r} accepted, expected {expected_code}"

    if replay is not None:
        assert result.replayed is True
        first = replay[1]
        if isinstance(result, AppendResult) and result.archived:
            # Messages that left the hot tail are the archive's to answer (the API reads
            # them): the replay holds the rest, and says how many are missing.
            first = attrs.evolve(first, messages=first.messages[result.archived :])
        assert attrs.evolve(result, replayed=False) == first, "not the first result"
        assert machine.to_bytes() == before, "a replay must store nothing"
        return

    if isinstance(command, PutContext) and not exists:
        models[context_id] = ContextModel(snapshot=_context_json(machine, context_id))
        return
    assert model is not None
    context = machine.get(context_id)
    if isinstance(command, MarkArchived):
        # The watermark is not a version: nothing the version covers may change.
        assert context.version == model.version
        assert result == context.archived_seq >= min(command.archived_seq, context.last_seq)
        hot = context.last_seq - context.log_offset
        assert hot >= min(command.tail_keep, context.last_seq - context.archived_seq) or (
            context.log_offset == 0
        )
        if context.status == "tombstoned" and context.archived_seq == context.last_seq:
            # An archived tombstone keeps nothing in memory: no window, no hot tail,
            # no idempotency keys (it takes no more writes).
            assert not context.log and not context.window and context.used_tokens == 0
            model.keys.clear()
        model.snapshot = _context_json(machine, context_id)
        return
    if isinstance(command, Purge):
        assert context.status == "purged" and context.purge is not None
        assert (context.metadata, context.log, context.window) == ({}, [], [])
        assert context.last_seq == len(model.log) and context.log_tokens == 0
        model.purged = True
        model.keys.clear()
        return
    if isinstance(command, Redact):
        original = model.log[command.seq - 1]
        # A second redaction of a message changes nothing (the first marker stays).
        redacted = (
            original
            if original.is_redacted
            else original.redacted(command.token_count, command.part_tokens)
        )
        assert context.hot(command.seq) in (None, redacted)
        assert all(m == redacted for m in context.window if m.seq == command.seq)
        model.log[command.seq - 1] = redacted
        for _, first in model.keys.values():  # replays read the log
            if isinstance(first, AppendResult):
                first.messages[:] = [
                    attrs.evolve(m, token_count=redacted.token_count) if m.seq == command.seq else m
                    for m in first.messages
                ]
        return
    if windows.pin_mask(context.config) != windows.PIN_ALL:
        model.system_floor_seq = len(model.log) + (
            len(command.messages) if isinstance(command, AppendMessages) else 0
        )
    if isinstance(command, AppendMessages):
        assert isinstance(result, AppendResult)
        first_seq = len(model.log) + 1
        model.log += [
            stored(message, seq, command.at)
            for seq, message in enumerate(command.messages, start=first_seq)
        ]
        assert [m.seq for m in result.messages] == list(range(first_seq, len(model.log) + 1))
        assert [m.id for m in result.messages] == [m.id for m in command.messages]
        assert result.last_seq == len(model.log)
        assert (result.version, result.used_tokens, result.needs_compaction) == (
            context.version,
            context.used_tokens,
            context.needs_compaction,
        )
        assert result.replayed is False
        newest = model.log[-1]
        manual = context.config.policy.strategy == "manual"
        if not manual and not windows.tool_result_ids(newest):
            # docs/api.md: the newest unit always stays, and the current turn is never
            # stripped, so the message just appended reaches the model unchanged.
            assert newest in context.window, f"the message just appended, {newest.id}, is gone"
    if isinstance(command, Compact):
        assert isinstance(result, CompactResult)
        model.floor_seq = len(model.log)
        assert result.message_count == len(command.replacement)
        assert (result.version, result.used_tokens) == (context.version, context.used_tokens)
    if key is not None and isinstance(command, AppendMessages | Compact):
        model.keys[key] = (command.fingerprint, result)


# --- invariants -----------------------------------------------------------------------

Invariant = Callable[[StateMachine, dict[str, ContextModel]], None]


def non_manual(machine: StateMachine) -> list:
    return [c for c in machine.contexts.values() if c.config.policy.strategy != "manual"]


def budget_holds(machine: StateMachine, models: dict[str, ContextModel]) -> None:
    """Guarantee 4: a non-manual window fits the budget; used_tokens is the window's sum."""
    for context in machine.contexts.values():
        assert context.used_tokens == sum(m.token_count for m in context.window)
        for message in context.window:
            assert message.token_count == MESSAGE_OVERHEAD + sum(message.part_tokens)
            assert len(message.part_tokens) == len(message.parts)
    for context in non_manual(machine):
        assert context.used_tokens <= context.config.token_budget, (
            context.used_tokens,
            context.config,
        )
        if context.config.policy.strategy == "summarize":  # a summary is due past the trigger
            due = context.used_tokens > windows.trigger_tokens(context.config)
            # …or a redacted message is covered by the summary, which must be rebuilt.
            assert context.needs_compaction is (due or context.summary_rebuild)
        else:
            assert context.needs_compaction is False


def seqs_are_gap_free(machine: StateMachine, models: dict[str, ContextModel]) -> None:
    """Guarantee 2: seq is 1, 2, 3 … and versions only go up, by one per change."""
    for context_id, context in machine.contexts.items():
        first = context.log_offset + 1
        assert [m.seq for m in context.log] == list(range(first, first + len(context.log)))
        assert context.last_seq == context.log_offset + len(context.log)
        model = models[context_id]
        now = _context_json(machine, context_id)
        if now != model.snapshot:
            assert context.version == model.version + 1, "every change bumps the version once"
        else:
            assert context.version == model.version
        model.version, model.snapshot = context.version, now


def log_keeps_every_message(machine: StateMachine, models: dict[str, ContextModel]) -> None:
    """Every accepted message is in the log, unchanged, in order; nothing else is."""
    for context_id, context in machine.contexts.items():
        model = models[context_id].log
        assert context.log == model[context.log_offset :]
        assert context.log_offset <= context.archived_seq <= context.last_seq == len(model)


def window_is_made_of_the_log(machine: StateMachine, models: dict[str, ContextModel]) -> None:
    """Window messages are replacements first, then log messages in order (maybe stripped)."""
    for context_id, context in machine.contexts.items():
        floor = models[context_id].floor_seq
        seqs = [m.seq for m in context.window if not windows.is_summary(m)]
        replaced = [s for s in seqs if s is None]
        assert seqs[: len(replaced)] == replaced, "replacement messages come first"
        summaries = [m for m in context.window if windows.is_summary(m)]
        assert len(summaries) <= 1, "a new summary folds the previous one"
        logged = [s for s in seqs if s is not None]
        assert logged == sorted(set(logged)), "log messages keep their order, once each"
        assert all(s > floor for s in logged), "nothing from before the last compact"
        for message in context.window:
            if message.seq is None:
                continue
            original = models[context_id].log[message.seq - 1]
            assert (message.id, message.role, message.metadata) == (
                original.id,
                original.role,
                original.metadata,
            )
            cleared = [p for p in message.parts if p.get(windows.CLEARED) is True]
            for part in cleared:  # strip_tool_results: an output of the original, cleared
                assert any(
                    windows.output_kind(o) and windows.cleared_part(o, "[cleared]") == part
                    for o in original.parts
                )
            assert all(part in original.parts for part in message.parts if part not in cleared)


def tool_pairs_stay_together(machine: StateMachine, models: dict[str, ContextModel]) -> None:
    """Guarantee 4: no orphan tool results, and no window starting with a result."""
    for context in non_manual(machine):
        seen_calls: set[str] = set()
        mask = windows.pin_mask(context.config)
        pinned_units = [u for u in windows.build_units(context.window, mask) if u.pinned]
        in_pinned_unit = {i for u in pinned_units for i in u.indices}
        rest = [m for i, m in enumerate(context.window) if i not in in_pinned_unit]
        if rest:
            assert not windows.tool_result_ids(rest[0]), "window starts with a tool result"
        for message in context.window:
            for call_id in windows.tool_result_ids(message):
                assert call_id in seen_calls, f"orphan result for {call_id}: {context.window}"
            seen_calls.update(windows.tool_call_ids(message))


def pinned_messages_stay(machine: StateMachine, models: dict[str, ContextModel]) -> None:
    """Guarantee 4: pinned log messages since the last compact are in the window, whole."""
    for context_id, context in machine.contexts.items():
        if context.status != "active" and context.archived_seq == context.last_seq:
            continue  # purged, or tombstoned and archived: nothing stays in memory
        floor = models[context_id].floor_seq
        window_by_seq = {m.seq: m for m in context.window if m.seq is not None}
        system_floor = max(floor, models[context_id].system_floor_seq)
        for message in models[context_id].log[floor:]:
            flagged = windows.is_pinned(message, PIN_FLAG)
            if not flagged and (message.seq or 0) <= system_floor:
                continue  # a system message from while pin: "none" was in force
            if windows.is_pinned(message, windows.pin_mask(context.config)):
                assert window_by_seq.get(message.seq) == message, f"pinned {message.id} lost"


def usage_adds_up(machine: StateMachine, models: dict[str, ContextModel]) -> None:
    """Per namespace: the contexts (tombstoned too) and the tokens of every message
    ever appended, whatever was archived, and the same after a snapshot."""
    expected: dict[str, tuple[int, int]] = {}
    for context_id in machine.contexts:
        namespace = namespace_of(context_id)
        contexts, tokens = expected.get(namespace, (0, 0))
        model = models[context_id]
        logged = 0 if model.purged else sum(m.token_count for m in model.log)
        expected[namespace] = (contexts + 1, tokens + logged)
    found = {name: (u.contexts, u.tokens) for name, u in machine.usage.items() if u.contexts}
    assert found == expected
    restored = StateMachine.from_bytes(machine.to_bytes())
    assert {n: (u.contexts, u.tokens) for n, u in restored.usage.items()} == expected


INVARIANTS: list[Invariant] = [
    budget_holds,
    usage_adds_up,
    seqs_are_gap_free,
    log_keeps_every_message,
    window_is_made_of_the_log,
    tool_pairs_stay_together,
    pinned_messages_stay,
]


def archive_count(models: dict[str, ContextModel], command: Command) -> Command:
    """A redact carries the archived message's token count (the API reads it from the
    archive): the count of the message as the model knows it."""
    model = models.get(command.context_id)
    if isinstance(command, Redact) and model is not None and 1 <= command.seq <= len(model.log):
        return attrs.evolve(command, archived_tokens=model.log[command.seq - 1].token_count)
    return command


def run(commands: list[Command], invariants: list[Invariant]) -> StateMachine:
    machine = StateMachine()
    models: dict[str, ContextModel] = {}
    for command in commands:
        apply_and_track(machine, models, archive_count(models, current(machine, command)))
        for invariant in invariants:
            invariant(machine, models)
    return machine


# --- properties ------------------------------------------------------------------------


@pytest.mark.parametrize("invariant", INVARIANTS, ids=lambda f: f.__name__)
@PROPERTY_SETTINGS
@given(commands=command_lists)
def test_invariant_holds_after_every_command(invariant: Invariant, commands: list[Command]) -> None:
    # seqs_are_gap_free tracks versions in the model, so it always runs.
    run(
        commands,
        [seqs_are_gap_free, invariant] if invariant is not seqs_are_gap_free else [invariant],
    )


@PROPERTY_SETTINGS
@given(commands=command_lists)
def test_applying_the_same_commands_gives_the_same_bytes(commands: list[Command]) -> None:
    first = replay_commands(commands)
    second = replay_commands(commands)
    assert first.to_bytes() == second.to_bytes()
    data = first.to_bytes()
    assert StateMachine.from_bytes(data).to_bytes() == data


@PROPERTY_SETTINGS
@given(commands=command_lists, cut=st.integers(0, 40))
def test_a_restored_snapshot_continues_like_the_original(commands: list[Command], cut: int) -> None:
    uninterrupted = replay_commands(commands)
    restored = StateMachine.from_bytes(replay_commands(commands[:cut]).to_bytes())
    for command in commands[cut:]:
        with contextlib.suppress(DomainError):
            restored.apply(command)
    assert restored.to_bytes() == uninterrupted.to_bytes()


@PROPERTY_SETTINGS
@given(commands=command_lists)
def test_commands_survive_json(commands: list[Command]) -> None:
    for command in commands:
        data = command_to_json(command)
        assert command_from_json(data) == command
        wire = json.loads(json.dumps(data, ensure_ascii=False))
        assert command_from_json(wire) == command


# --- the live window computes what the rules compute from scratch ----------------------


class BatchWindow:
    """The window rules applied from scratch over the whole list after every command:
    the reference :class:`LiveWindow` must agree with (O(window) per append)."""

    def __init__(self, config: ContextConfig) -> None:
        self.config = config
        self.window: list[Message] = []
        self.last_user_seq: int | None = None
        self.needs_compaction = False
        self.rebuild = False
        """A redact left the window's summary to be rebuilt (needs_compaction stays)."""

    def add(self, message: Message) -> None:
        """Under a non-manual policy an orphan result never enters the window (so it
        does not count towards the trigger either)."""
        if self.config.policy.strategy != "manual":
            calls = {c for m in self.window for c in windows.tool_call_ids(m)}
            stripped = windows.without_orphan_results(message, calls.__contains__)
            if stripped is None:
                return
            message = stripped
        self.window.append(message)

    def maintain(self, *, force: bool, at: int) -> list[dict[str, Any]]:
        """Orphans go first (they never count towards the trigger), then the policy
        runs if the window is over its trigger or a step's message limit, or
        (time_window) holds an expired unit. Returns what the policy did."""
        config = self.config
        manual = config.policy.strategy == "manual"
        if not manual and (force or self._over(config, at)):
            self.window = windows.strip_orphan_results(self.window)
        rebuild = self.rebuild and config.policy.strategy == "summarize"
        if not self._over(config, at):
            self.needs_compaction = rebuild
            return []
        ops = windows.ListWindow(self.window, windows.pin_mask(config))
        needs, actions = windows.run_policy(ops, config, self.last_user_seq, at)
        self.needs_compaction = needs or rebuild
        self.window = ops.window
        return actions

    def _over(self, config: ContextConfig, at: int) -> bool:
        return windows.should_run(
            windows.ListWindow(self.window, windows.pin_mask(config)), config, at
        )


@PROPERTY_SETTINGS
@given(commands=command_lists)
def test_the_live_window_is_the_window_the_rules_compute(commands: list[Command]) -> None:
    machine = StateMachine()
    batches: dict[str, BatchWindow] = {}
    for command in commands:
        command = current(machine, command)
        context = machine.contexts.get(command.context_id)
        before = context.version if context is not None else None
        try:
            result = machine.apply(command)
        except DomainError:
            continue
        context = machine.contexts[command.context_id]
        if getattr(result, "replayed", False) or context.version == before:
            continue
        batch = batches.get(command.context_id)
        if isinstance(command, PutContext):
            if batch is None:
                batches[command.context_id] = BatchWindow(command.config)
                continue
            batch.config = command.config
            actions = batch.maintain(force=True, at=command.at)
            _same_actions(result.compaction, actions)
        elif isinstance(command, AppendMessages):
            assert batch is not None
            appended = context.log[-len(command.messages) :]
            for message in appended:
                batch.add(message)
                if message.role == "user":
                    batch.last_user_seq = message.seq
            actions = batch.maintain(
                force=any(windows.tool_result_ids(m) for m in appended), at=command.at
            )
            _same_actions(result.compaction, actions)
        elif isinstance(command, Compact | Summarize | Purge | Redact):
            assert batch is not None
            batch.window = list(context.window)
            batch.needs_compaction = context.needs_compaction
            batch.rebuild = context.summary_rebuild
        if batch is None:
            continue
        assert context.window == batch.window, command
        assert context.used_tokens == windows.window_tokens(batch.window)
        assert context.needs_compaction == batch.needs_compaction


def _same_actions(record: dict[str, Any] | None, actions: list[dict[str, Any]]) -> None:
    """The live run's record says what the reference run did (a record that several
    runs extended ends where this run's removal ends)."""
    if record is None:
        assert actions == []
        return
    if record["runs"] == 1:
        assert record["actions"] == actions
        return
    [merged] = record["actions"]
    [action] = actions
    assert merged["removed"][0][1] == action["removed"][0][1]
    for key in ("step", "policy", "reason", "changed", "tokens_after", "detail"):
        assert merged[key] == action[key], key


def test_the_live_window_trims_a_large_window_in_constant_work() -> None:
    """At last_n's limit every append drops one message: no re-scan of the window."""
    from core_builders import append, config, machine_with, text

    machine = machine_with(config(token_budget=10_000_000, limit=20_000))
    append(machine, *[text(f"m{n}") for n in range(20_000)])
    live = machine.get("c").live
    assert len(live) == 20_000
    calls = 0
    real_build_units = windows.build_units

    def counting(window: Any) -> Any:
        nonlocal calls
        calls += 1
        return real_build_units(window)

    windows.build_units = counting
    try:
        for n in range(200):
            append(machine, text(f"new{n}"), at=2 + n)
    finally:
        windows.build_units = real_build_units
    assert calls == 0, "the policy re-built the units of the whole window"
    assert len(machine.get("c").live) == 20_000
    assert machine.get("c").window[-1].id == "new199"
    assert machine.get("c").window[0].id == "m200"
