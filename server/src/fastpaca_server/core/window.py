"""The LLM window: tool-call units, policies and budget trimming (pure).

A window is a list of :class:`Message`. Trimming never looks at single
messages but at *units*: a message together with every later message whose
``tool_result`` parts answer its ``tool_call`` parts. A unit with a pinned
member is pinned. Units are kept or dropped whole, so a tool call is
never split from its result. A tool result whose call is not in the window is
an orphan: every non-manual policy strips it from its message (a message left
without parts leaves the window), so a window never begins with one and never
holds a result without its call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import attrs

from .models import (
    DEFAULT_LAST_N_LIMIT,
    DEFAULT_SKIP_KINDS,
    DEFAULT_TARGET_RATIO,
    ContextConfig,
    JSONObject,
    Message,
)

TOOL_CALL = "tool_call"
TOOL_RESULT = "tool_result"


def is_pinned(message: Message) -> bool:
    """System messages and messages with ``metadata.pinned == true`` always stay."""
    return message.pinned


def tool_call_ids(message: Message) -> tuple[str, ...]:
    return message.calls or ()


def tool_result_ids(message: Message) -> tuple[str, ...]:
    return message.results or ()


@attrs.frozen
class Unit:
    """Indices (into the window) of messages that stay or go together."""

    indices: tuple[int, ...]
    pinned: bool
    tokens: int


def build_units(window: Sequence[Message]) -> list[Unit]:
    """Group a window into units, ordered by their first message.

    A message that answers calls of several units joins them into one. Tool
    results whose call is not earlier in the window do not bind anything
    (non-manual windows have them stripped by :func:`strip_orphan_results`).
    """
    members: list[list[int]] = []
    unit_of_call: dict[str, int] = {}
    for index, message in enumerate(window):
        answered = {unit_of_call[c] for c in tool_result_ids(message) if c in unit_of_call}
        if answered:
            unit = min(answered)
            for other in sorted(answered - {unit}, reverse=True):
                members[unit].extend(members[other])
                members[other] = []
                for call, owner in unit_of_call.items():
                    if owner == other:
                        unit_of_call[call] = unit
            members[unit].append(index)
        else:
            members.append([index])
            unit = len(members) - 1
        for call in tool_call_ids(message):
            unit_of_call[call] = unit
    units = []
    for indices in members:
        if not indices:
            continue
        ordered = tuple(sorted(indices))
        units.append(
            Unit(
                indices=ordered,
                pinned=any(is_pinned(window[i]) for i in ordered),
                tokens=sum(window[i].token_count for i in ordered),
            )
        )
    return units


def strip_orphan_results(window: Sequence[Message]) -> list[Message]:
    """Remove ``tool_result`` parts whose call is not earlier in the window.

    A call in the same message counts as earlier (a message may carry a call
    and its own result). A message left without content parts leaves the
    window. What remains can be cut into units without ever splitting a call
    from its result, and never begins with an orphan result.
    """
    calls: set[str] = set()
    result: list[Message] = []
    for message in window:
        kept = without_orphan_results(message, calls.__contains__)
        if kept is None:
            continue
        calls.update(tool_call_ids(kept))
        result.append(kept)
    return result


def without_orphan_results(message: Message, known: Callable[[str], bool]) -> Message | None:
    """``message`` without the ``tool_result`` parts whose call is neither ``known``
    nor in the message itself (``message`` itself when there are none; ``None``
    when nothing with content is left)."""
    results = tool_result_ids(message)
    if not results:
        return message
    own_calls = tool_call_ids(message)

    def answered(call: str) -> bool:
        return call in own_calls or known(call)

    if all(answered(call) for call in results):
        return message
    parts = message.parts
    keep = [
        i
        for i, part in enumerate(parts)
        if not (part.get("type") == TOOL_RESULT and not answered(str(part.get("tool_call_id"))))
    ]
    return _only_parts(message, parts, keep)


def _keep(window: Sequence[Message], units: Iterable[Unit]) -> list[Message]:
    kept = sorted(i for unit in units for i in unit.indices)
    return [window[i] for i in kept]


def pinned_tokens(window: Sequence[Message]) -> int:
    """Tokens of pinned units (a pinned message and the tool messages bound to it)."""
    return sum(u.tokens for u in build_units(window) if u.pinned)


def unpinned_count(window: Sequence[Message]) -> int:
    return sum(len(u.indices) for u in build_units(window) if not u.pinned)


def trim(
    window: Sequence[Message],
    *,
    max_tokens: int,
    max_messages: int | None,
    keep_newest: bool = False,
) -> list[Message]:
    """Strip orphan results, then drop the oldest unpinned units until both limits hold.

    Pinned units are never dropped; the caller makes sure they fit. With
    ``keep_newest`` the unit of the newest message stays even if the limits
    are not reached (the message just appended must reach the model).
    """
    window = strip_orphan_results(window)
    units = build_units(window)
    last = len(window) - 1
    tokens = sum(u.tokens for u in units)
    count = sum(len(u.indices) for u in units if not u.pinned)
    kept: list[Unit] = []
    for unit in units:
        over = tokens > max_tokens or (max_messages is not None and count > max_messages)
        if over and not unit.pinned and not (keep_newest and last in unit.indices):
            tokens -= unit.tokens
            count -= len(unit.indices)
            continue
        kept.append(unit)
    return _keep(window, kept)


def strip_parts(
    window: Sequence[Message], skip_kinds: Sequence[str], keep_from: int
) -> list[Message]:
    """Remove parts whose type starts with one of ``skip_kinds`` from older units.

    Units that begin at or after ``keep_from`` (the current turn) stay intact,
    so an agent loop in progress keeps its tool calls. A tool call and its
    results are removed together whichever of the two the kinds name, so a
    call never loses its result (and a result never outlives its call). A
    message left without content parts is dropped.
    """
    prefixes = tuple(skip_kinds)
    if not prefixes:
        return list(window)
    result: list[Message | None] = list(window)
    for unit in build_units(window):
        if unit.pinned or unit.indices[0] >= keep_from:
            continue
        stripped = strip_unit([window[i] for i in unit.indices], prefixes)
        for index, message in zip(unit.indices, stripped, strict=True):
            result[index] = message
    return [m for m in result if m is not None]


def strip_unit(members: Sequence[Message], prefixes: tuple[str, ...]) -> list[Message | None]:
    """The members of one unit with the parts ``prefixes`` name removed, call and
    result together; ``None`` for a member left without content."""
    all_parts = [message.parts for message in members]
    paired: set[str] = set()
    for parts in all_parts:
        for part in parts:
            if str(part["type"]).startswith(prefixes):
                paired.update(_pair_ids(part))
    result: list[Message | None] = []
    for message, parts in zip(members, all_parts, strict=True):
        keep = [
            i
            for i, part in enumerate(parts)
            if not str(part["type"]).startswith(prefixes) and not paired & _pair_ids(part)
        ]
        result.append(_only_parts(message, parts, keep))
    return result


def _pair_ids(part: JSONObject) -> set[str]:
    """The tool call id that binds ``part`` to its partner (empty for other parts)."""
    if part.get("type") == TOOL_CALL and "id" in part:
        return {str(part["id"])}
    if part.get("type") == TOOL_RESULT and "tool_call_id" in part:
        return {str(part["tool_call_id"])}
    return set()


NON_CONTENT_PARTS = frozenset({"step-start"})
"""Part types that carry nothing for the model (ai-sdk's step boundaries)."""


def _only_parts(message: Message, parts: list[JSONObject], keep: list[int]) -> Message | None:
    """The message with only the parts at ``keep``.

    ``None`` when nothing but non-content parts (``step-start``) would be
    left: a husk of step markers must not stay in the window and cost tokens.
    """
    if len(keep) == len(parts):
        return message
    if all(parts[i].get("type") in NON_CONTENT_PARTS for i in keep):
        return None
    return message.with_parts(keep)


def current_turn_start(window: Sequence[Message], turn_seq: int | None = None) -> int:
    """Index where the current turn begins in the window.

    The turn begins at the last user message; ``turn_seq`` is that message's
    seq in the log, so the turn is found even when its user message was
    trimmed out of the window. Without a user message at all, the unit of the
    newest message is the current turn.
    """
    if turn_seq is not None:
        for index, message in enumerate(window):
            if message.seq is not None and message.seq >= turn_seq:
                return index
        return len(window)
    for index in range(len(window) - 1, -1, -1):
        if window[index].role == "user":
            return index
    newest = len(window) - 1
    for unit in build_units(window):
        if newest in unit.indices:
            return unit.indices[0]
    return len(window)


def message_limit(config: ContextConfig) -> int | None:
    """The most messages a window may hold (``None``: no limit, for manual and budget)."""
    if config.policy.strategy in ("manual", "budget", "time_window"):
        return None
    return int(config.policy.config.get("limit", DEFAULT_LAST_N_LIMIT))


def trigger_tokens(config: ContextConfig) -> int:
    """Window size at which the policy runs."""
    return int(config.trigger_ratio * config.token_budget)


def expiry_cutoff(config: ContextConfig, at: int) -> int | None:
    """``time_window``: messages created before this time (ms) have expired at ``at``."""
    if config.policy.strategy != "time_window":
        return None
    return at - int(config.policy.config["max_age_seconds"]) * 1000


def drop_expired(window: Sequence[Message], cutoff: int) -> list[Message]:
    """Drop the oldest unpinned units while they began before ``cutoff``.

    Units are looked at oldest first; pinned units are passed over (never
    dropped); the first unit that has not expired ends the scan, and so does
    the newest unit, which always stays. Messages are in append order, so
    what is left has not expired, up to clock differences between the nodes
    that stamped the times.
    """
    units = build_units(window)
    last = len(window) - 1
    dropped: set[int] = set()
    for unit in units:
        if unit.pinned:
            continue
        if last in unit.indices or window[unit.indices[0]].created_at >= cutoff:
            break
        dropped.update(unit.indices)
    return [message for index, message in enumerate(window) if index not in dropped]


def target_tokens(config: ContextConfig) -> int:
    """Window size a triggered policy trims down to: ``target_ratio`` of the budget
    for ``budget``, the trigger for the others."""
    if config.policy.strategy == "budget":
        ratio = float(config.policy.config.get("target_ratio", DEFAULT_TARGET_RATIO))
        return int(ratio * config.token_budget)
    return trigger_tokens(config)


def apply_policy(
    window: Sequence[Message],
    config: ContextConfig,
    turn_seq: int | None = None,
    at: int | None = None,
) -> tuple[list[Message], bool]:
    """Rewrite a window that crossed the trigger. Returns ``(window, needs_compaction)``.

    Non-manual policies trim to the trigger (``trigger_ratio * token_budget``),
    which leaves headroom for the model's answer and means the policy runs
    again only after the window has grown past the trigger once more; a
    window that is over its message limit only is trimmed to the limit.
    ``budget`` has no message limit and trims to ``target_ratio *
    token_budget`` instead (default 0.5: fewer, larger compactions, so the
    prompt prefix stays the same, and cached, for longer).
    """
    strategy, options = config.policy.strategy, config.policy.config
    if strategy == "manual":
        return list(window), True
    if strategy == "skip_parts":
        kinds = options.get("skip_kinds", list(DEFAULT_SKIP_KINDS))
        window = strip_parts(window, kinds, current_turn_start(window, turn_seq))
    cutoff = expiry_cutoff(config, at) if at is not None else None
    if cutoff is not None:
        window = drop_expired(strip_orphan_results(window), cutoff)
        if window_tokens(window) <= trigger_tokens(config):
            return list(window), False  # only expired messages had to go
    limit = message_limit(config)
    target = target_tokens(config)  # both ratios are <= 1, so never above the budget
    if window_tokens(window) <= target:
        target = config.token_budget  # only over the message limit
    trimmed = trim(window, max_tokens=target, max_messages=limit, keep_newest=True)
    if window_tokens(trimmed) > config.token_budget:
        trimmed = trim(trimmed, max_tokens=config.token_budget, max_messages=limit)
    return trimmed, False


def window_tokens(window: Sequence[Message]) -> int:
    return sum(m.token_count for m in window)


def segments(window: Sequence[Message]) -> list[dict[str, int | str | None]]:
    """Describe the window as runs: contiguous log ranges and replacement messages."""
    runs: list[dict[str, int | str | None]] = []
    for message in window:
        last = runs[-1] if runs else None
        if message.seq is None:
            if last is not None and last["type"] == "replacement":
                last["count"] = int(last["count"] or 0) + 1
                last["tokens"] = int(last["tokens"] or 0) + message.token_count
                continue
            runs.append({"type": "replacement", "count": 1, "tokens": message.token_count})
            continue
        if last is not None and last["type"] == "log" and last["to_seq"] == message.seq - 1:
            last["to_seq"] = message.seq
            last["count"] = int(last["count"] or 0) + 1
            last["tokens"] = int(last["tokens"] or 0) + message.token_count
            continue
        runs.append(
            {
                "type": "log",
                "from_seq": message.seq,
                "to_seq": message.seq,
                "count": 1,
                "tokens": message.token_count,
            }
        )
    return runs
