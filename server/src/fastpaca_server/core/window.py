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

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import attrs

from .models import (
    DEFAULT_KEEP_TOOL_RESULTS,
    DEFAULT_LAST_N_LIMIT,
    DEFAULT_PLACEHOLDER,
    DEFAULT_SKIP_KINDS,
    DEFAULT_TARGET_RATIO,
    PIN_FLAG,
    PIN_SYSTEM,
    ContextConfig,
    JSONObject,
    Message,
    Policy,
)

TOOL_CALL = "tool_call"
TOOL_RESULT = "tool_result"
PIN_ALL = PIN_SYSTEM | PIN_FLAG
"""The default pin mask: system messages and ``metadata.pinned`` messages stay."""


def pin_mask(config: ContextConfig) -> int:
    """Which pins keep a message: ``pin: "none"`` leaves only ``metadata.pinned``."""
    return PIN_FLAG if config.policy.config.get("pin") == "none" else PIN_ALL


def is_pinned(message: Message, mask: int = PIN_ALL) -> bool:
    """System messages (unless the policy says ``pin: "none"``) and messages with
    ``metadata.pinned == true`` are never dropped by a policy."""
    return bool(message.pinned & mask)


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


def build_units(window: Sequence[Message], mask: int = PIN_ALL) -> list[Unit]:
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
                pinned=any(is_pinned(window[i], mask) for i in ordered),
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


def pinned_tokens(window: Sequence[Message], mask: int = PIN_ALL) -> int:
    """Tokens of pinned units (a pinned message and the tool messages bound to it)."""
    return sum(u.tokens for u in build_units(window, mask) if u.pinned)


def unpinned_count(window: Sequence[Message], mask: int = PIN_ALL) -> int:
    return sum(len(u.indices) for u in build_units(window, mask) if not u.pinned)


def trim(
    window: Sequence[Message],
    *,
    max_tokens: int,
    max_messages: int | None,
    keep_newest: bool = False,
    mask: int = PIN_ALL,
) -> list[Message]:
    """Strip orphan results, then drop the oldest unpinned units until both limits hold.

    Pinned units are never dropped; the caller makes sure they fit. With
    ``keep_newest`` the unit of the newest message stays even if the limits
    are not reached (the message just appended must reach the model).
    """
    window = strip_orphan_results(window)
    units = build_units(window, mask)
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
    window: Sequence[Message], skip_kinds: Sequence[str], keep_from: int, mask: int = PIN_ALL
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
    for unit in build_units(window, mask):
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


def policy_steps(config: ContextConfig) -> list[Policy]:
    """The policies a window runs, in order: a ``pipeline``'s steps, else the policy."""
    policy = config.policy
    if policy.strategy != "pipeline":
        return [policy]
    return [Policy(step["strategy"], step.get("config", {})) for step in policy.config["steps"]]


def message_limit(config: ContextConfig) -> int | None:
    """The most messages a window may hold (``None``: no limit): the smallest
    ``limit`` of its ``last_n`` and ``skip_parts`` steps."""
    limits = [
        int(step.config.get("limit", DEFAULT_LAST_N_LIMIT))
        for step in policy_steps(config)
        if step.strategy in ("last_n", "skip_parts")
    ]
    return min(limits) if limits else None


def trigger_tokens(config: ContextConfig) -> int:
    """Window size at which the policy runs."""
    return int(config.trigger_ratio * config.token_budget)


def expiry_cutoff(config: ContextConfig, at: int) -> int | None:
    """Messages created before this time (ms) have expired at ``at`` under one of
    the ``time_window`` steps (the shortest ``max_age_seconds``); ``None``: no step."""
    ages = [
        int(step.config["max_age_seconds"])
        for step in policy_steps(config)
        if step.strategy == "time_window"
    ]
    return at - min(ages) * 1000 if ages else None


def drop_expired(window: Sequence[Message], cutoff: int, mask: int = PIN_ALL) -> list[Message]:
    """Drop the oldest unpinned units while they began before ``cutoff``.

    Units are looked at oldest first; pinned units are passed over (never
    dropped); the first unit that has not expired ends the scan, and so does
    the newest unit, which always stays. Messages are in append order, so
    what is left has not expired, up to clock differences between the nodes
    that stamped the times.
    """
    units = build_units(window, mask)
    last = len(window) - 1
    dropped: set[int] = set()
    for unit in units:
        if unit.pinned:
            continue
        if last in unit.indices or window[unit.indices[0]].created_at >= cutoff:
            break
        dropped.update(unit.indices)
    return [message for index, message in enumerate(window) if index not in dropped]


def ratio_tokens(config: ContextConfig, options: JSONObject) -> int:
    """``target_ratio`` (of ``options``, default 0.5) of the token budget."""
    return int(float(options.get("target_ratio", DEFAULT_TARGET_RATIO)) * config.token_budget)


# --- strip_tool_results: clearing tool output ----------------------------------------

AI_SDK_OUTPUT_STATES = ("output-available", "output-error")
CLEARED = "cleared"
"""Key set to ``true`` in a tool output part whose output a policy replaced."""


def output_kind(part: JSONObject) -> str | None:
    """``tool_result``, ``tool`` (ai-sdk ``tool-<name>``) or ``dynamic-tool`` for a
    part that holds a tool's output, else ``None``."""
    part_type = part.get("type")
    if part_type == TOOL_RESULT:
        return TOOL_RESULT if isinstance(part.get("tool_call_id"), str) else None
    if not isinstance(part_type, str) or not isinstance(part.get("toolCallId"), str):
        return None
    if part.get("state") not in AI_SDK_OUTPUT_STATES:
        return None
    if part_type == "dynamic-tool":
        return part_type if isinstance(part.get("toolName"), str) else None
    return "tool" if part_type.startswith("tool-") else None


def _variables(part: JSONObject, kind: str) -> tuple[JSONObject, list[str]]:
    """The cleared form of ``part`` with its variable strings blanked, and those strings."""
    if kind == TOOL_RESULT:
        return {"type": TOOL_RESULT, "tool_call_id": ""}, [str(part["tool_call_id"])]
    if kind == "dynamic-tool":
        blank = {"type": "dynamic-tool", "toolCallId": "", "toolName": ""}
        return blank, [str(part["toolCallId"]), str(part["toolName"])]
    name = str(part["type"]).removeprefix("tool-")
    return {"type": "tool-", "toolCallId": ""}, [name, str(part["toolCallId"])]


def _finish(blank: JSONObject, kind: str, placeholder: str) -> JSONObject:
    if kind == TOOL_RESULT:
        blank["payload"] = placeholder
    else:
        blank.update({"state": "output-available", "input": {}, "output": placeholder})
    blank[CLEARED] = True
    return blank


def frame_part(kind: str, placeholder: str) -> JSONObject:
    """The cleared form of a ``kind`` part with empty ids and names: what the API
    counts once per placeholder (see :func:`cleared_tokens`)."""
    blank = {
        TOOL_RESULT: {"type": TOOL_RESULT, "tool_call_id": ""},
        "tool": {"type": "tool-", "toolCallId": ""},
        "dynamic-tool": {"type": "dynamic-tool", "toolCallId": "", "toolName": ""},
    }[kind]
    return _finish(dict(blank), kind, placeholder)


FRAME_KINDS = (TOOL_RESULT, "tool", "dynamic-tool")


def cleared_part(part: JSONObject, placeholder: str) -> JSONObject:
    """``part`` (a tool output) with its output replaced by ``placeholder``.

    A ``tool_result`` keeps its ``tool_call_id``; an ai-sdk tool part keeps its
    type, call id and tool name, and its ``input`` becomes ``{}``. Both get
    ``"cleared": true``.
    """
    kind = output_kind(part)
    assert kind is not None
    blank, values = _variables(part, kind)
    if kind == TOOL_RESULT:
        blank["tool_call_id"] = values[0]
    elif kind == "dynamic-tool":
        blank["toolCallId"], blank["toolName"] = values
    else:
        blank["type"], blank["toolCallId"] = part["type"], values[1]
    return _finish(blank, kind, placeholder)


def cleared_tokens(part: JSONObject, frames: JSONObject | None, placeholder: str) -> int:
    """An upper bound on the tokens of :func:`cleared_part` of ``part``, without a tokenizer.

    ``frames`` holds the tokenizer's exact count of each :func:`frame_part`
    (stamped into the policy by the API); each id and name adds its UTF-8 JSON
    length, quotes included (a token is at least one byte, and the two quotes
    are the margin for merges across the joins). Without ``frames`` the
    frame's own UTF-8 length stands in (a cruder upper bound).
    """
    kind = output_kind(part)
    assert kind is not None
    _, values = _variables(part, kind)
    frame = frames.get(kind) if frames else None
    if not isinstance(frame, int):
        frame = len(json.dumps(frame_part(kind, placeholder), ensure_ascii=False).encode())
    return frame + sum(len(json.dumps(value, ensure_ascii=False).encode()) for value in values)


def call_names(window: Sequence[Message]) -> dict[str, str]:
    """Tool name of each call id in the window (the newest call with that id)."""
    names: dict[str, str] = {}
    for message in window:
        if message.calls:
            for part in message.parts:
                if part.get("type") == TOOL_CALL and "id" in part:
                    names[str(part["id"])] = str(part.get("name"))
    return names


def output_name(part: JSONObject, kind: str, names: Callable[[str], str | None]) -> str | None:
    """The tool whose output ``part`` holds (a ``tool_result``'s from its call)."""
    if kind == TOOL_RESULT:
        return names(str(part["tool_call_id"]))
    if kind == "dynamic-tool":
        return str(part["toolName"])
    return str(part["type"]).removeprefix("tool-")


def output_parts(message: Message) -> list[int]:
    """Indices of the parts of ``message`` that hold a tool's output."""
    if not may_hold_output(message):
        return []
    return [i for i, part in enumerate(message.parts) if output_kind(part) is not None]


def may_hold_output(message: Message) -> bool:
    """A cheap test that ``message`` may hold tool output (no false negatives)."""
    return bool(message.results) or b'"state":"output-' in message.raw


def clear_choices(
    candidates: Iterable[tuple[Message, list[int]]],
    options: JSONObject,
    mask: int,
    names: Callable[[str], str | None],
) -> tuple[list[tuple[Message, Message]], int]:
    """Which candidate outputs :func:`clear_tool_results` clears: ``[(message, cleared
    message)]`` and the tokens that saves. An output is cleared unless it is
    cleared already, its message is pinned, its tool is excluded, or the
    placeholder would not be smaller."""
    placeholder = str(options.get("placeholder", DEFAULT_PLACEHOLDER))
    frames = options.get("frames")
    excluded = set(options.get("exclude_tools", ()))
    changes: list[tuple[Message, Message]] = []
    saved = 0
    for message, indices in candidates:
        if not indices or is_pinned(message, mask):
            continue
        parts = message.parts
        counts = message.part_tokens
        replaced: dict[int, tuple[JSONObject, int]] = {}
        for index in indices:
            part = parts[index]
            kind = output_kind(part)
            if kind is None or part.get(CLEARED) is True:
                continue
            if excluded and output_name(part, kind, names) in excluded:
                continue
            tokens = cleared_tokens(part, frames, placeholder)
            if tokens >= counts[index]:
                continue
            replaced[index] = (cleared_part(part, placeholder), tokens)
            saved += counts[index] - tokens
        if replaced:
            changes.append((message, message.with_replaced(replaced)))
    return changes, saved


def clear_tool_results(
    window: Sequence[Message], options: JSONObject, mask: int = PIN_ALL
) -> list[Message]:
    """Replace the output of every tool output but the newest ``keep`` with the
    placeholder, if that saves at least ``clear_at_least`` tokens (else nothing).

    ``keep`` counts every tool output in the window (cleared or not); outputs
    of ``exclude_tools`` and of pinned messages are never cleared.
    """
    keep = int(options.get("keep", DEFAULT_KEEP_TOOL_RESULTS))
    outputs = [(index, part) for index, m in enumerate(window) for part in output_parts(m)]
    candidates = outputs[: max(len(outputs) - keep, 0)]
    by_message: dict[int, list[int]] = {}
    for index, part in candidates:
        by_message.setdefault(index, []).append(part)
    names = call_names(window) if options.get("exclude_tools") else {}
    changes, saved = clear_choices(
        ((window[index], parts) for index, parts in by_message.items()), options, mask, names.get
    )
    if not changes or saved < max(int(options.get("clear_at_least", 0)), 1):
        return list(window)
    new = {id(old): cleared for old, cleared in changes}
    return [new.get(id(message), message) for message in window]


# --- running a policy --------------------------------------------------------------------


class WindowOps(Protocol):
    """What :func:`run_policy` needs of a window: :class:`ListWindow` computes each
    operation from scratch (the reference), the live window incrementally."""

    @property
    def tokens(self) -> int: ...

    @property
    def unpinned_count(self) -> int: ...

    @property
    def mask(self) -> int: ...

    def trim(self, *, max_tokens: int, max_messages: int | None, keep_newest: bool) -> None: ...

    def drop_expired(self, cutoff: int) -> None: ...

    def has_expired(self, cutoff: int) -> bool: ...

    def strip_older_turns(self, kinds: Sequence[str], turn_seq: int | None) -> None: ...

    def clear_tool_results(self, options: JSONObject) -> None: ...

    def messages(self) -> list[Message]: ...

    def keep_only(self, kept: Sequence[Message]) -> None:
        """Keep only ``kept`` (a subsequence of the window)."""

    def take_changes(self) -> tuple[list[int | None], list[int]]:
        """Seqs removed (``None``: a message not from the log) and seqs whose
        message changed since the last call, in window order."""


class ListWindow:
    """A window as a plain list; every operation re-applies the rules above."""

    def __init__(self, window: Sequence[Message], mask: int = PIN_ALL) -> None:
        self.window = list(window)
        self.mask = mask
        self._mark = list(window)

    @property
    def tokens(self) -> int:
        return window_tokens(self.window)

    @property
    def unpinned_count(self) -> int:
        return unpinned_count(self.window, self.mask)

    def trim(self, *, max_tokens: int, max_messages: int | None, keep_newest: bool) -> None:
        self.window = trim(
            self.window,
            max_tokens=max_tokens,
            max_messages=max_messages,
            keep_newest=keep_newest,
            mask=self.mask,
        )

    def drop_expired(self, cutoff: int) -> None:
        self.window = drop_expired(strip_orphan_results(self.window), cutoff, self.mask)

    def has_expired(self, cutoff: int) -> bool:
        return len(drop_expired(self.window, cutoff, self.mask)) < len(self.window)

    def strip_older_turns(self, kinds: Sequence[str], turn_seq: int | None) -> None:
        start = current_turn_start(self.window, turn_seq)
        self.window = strip_parts(self.window, kinds, start, self.mask)

    def clear_tool_results(self, options: JSONObject) -> None:
        self.window = clear_tool_results(self.window, options, self.mask)

    def messages(self) -> list[Message]:
        return list(self.window)

    def keep_only(self, kept: Sequence[Message]) -> None:
        self.window = list(kept)

    def take_changes(self) -> tuple[list[int | None], list[int]]:
        after = {id(m) for m in self.window}
        by_seq = {m.seq: m for m in self.window if m.seq is not None}
        removed: list[int | None] = []
        changed: list[int] = []
        for message in self._mark:
            if id(message) in after or message.seq is None:
                continue
            if message.seq in by_seq:
                changed.append(message.seq)
            else:
                removed.append(message.seq)
        # Messages without a seq are counted: a stripped one is not recorded as changed.
        unlogged = sum(m.seq is None for m in self._mark) - sum(m.seq is None for m in self.window)
        removed.extend([None] * max(unlogged, 0))
        self._mark = list(self.window)
        return removed, changed


CustomPolicy = Callable[[list[Message], JSONObject], Sequence[Message]]
"""A custom policy: ``(window, config) -> window``, a subsequence of its input."""


def run_policy(
    ops: WindowOps,
    config: ContextConfig,
    turn_seq: int | None,
    at: int | None,
    custom: Callable[[str], CustomPolicy | None] = lambda name: None,
    *,
    always: bool = False,
) -> tuple[bool, list[JSONObject]]:
    """Run the context's policy on a window that needs it. Returns
    ``(needs_compaction, actions)``: what each step removed or changed, and why.

    Steps run in turn (a plain policy is a pipeline of one), each only while
    the window still needs it: ``time_window`` drops expired units, then trims
    to the trigger if the window is over it; ``last_n`` and ``skip_parts``
    run when the window is over the trigger or over their ``limit`` (skip_parts
    strips parts of older turns first) and trim to the trigger and the limit;
    ``budget`` runs over the trigger and trims to ``target_ratio * token_budget``;
    ``strip_tool_results`` runs over the trigger, clears old tool output, and
    falls back to ``budget`` if that was not enough. Whatever the steps left,
    a window over the budget is then trimmed to it: the model call never
    overruns. ``manual`` never changes the window; ``summarize`` trims only
    over the budget (its summaries come from the leader, not from here).
    With ``always``, a single policy (not a pipeline) runs its step even if
    the window does not need it (callers that checked :func:`should_run`).
    """
    strategy = config.policy.strategy
    if strategy == "manual":
        return True, []
    trigger = trigger_tokens(config)
    budget = config.token_budget
    actions: list[JSONObject] = []
    ops.take_changes()

    def note(step: int | None, policy: str, reason: str, before: int, detail: str) -> None:
        removed, changed = ops.take_changes()
        if removed or changed:
            actions.append(
                make_action(step, policy, reason, before, ops.tokens, removed, changed, detail)
            )

    def trim(step: int | None, policy: str, target: int, limit: int | None, reason: str) -> None:
        before, count = ops.tokens, ops.unpinned_count
        ops.trim(max_tokens=target, max_messages=limit, keep_newest=True)
        if reason == "over_message_limit":
            detail = f"{count} messages, over the limit of {limit}"
        else:
            detail = f"{before} tokens, over the trigger of {trigger}; trimmed to {target}"
        note(step, policy, reason, before, detail)

    summarize = strategy == "summarize"
    if summarize and ops.tokens > budget:
        trim(None, strategy, ratio_tokens(config, config.policy.config), None, "over_budget")
    steps = [] if summarize else policy_steps(config)
    forced = always and strategy != "pipeline"
    for index, step in enumerate(steps):
        name, options = step.strategy, step.config
        if name == "time_window":
            if at is not None:
                age = int(options["max_age_seconds"])
                before = ops.tokens
                ops.drop_expired(at - age * 1000)
                note(index, name, "expired", before, f"created more than {age} s before")
            if ops.tokens > trigger:
                trim(index, name, trigger, None, "over_trigger")
        elif name in ("last_n", "skip_parts"):
            limit = int(options.get("limit", DEFAULT_LAST_N_LIMIT))
            if ops.tokens <= trigger and ops.unpinned_count <= limit and not forced:
                continue
            if name == "skip_parts":
                kinds = options.get("skip_kinds", list(DEFAULT_SKIP_KINDS))
                before = ops.tokens
                ops.strip_older_turns(kinds, turn_seq)
                note(
                    index, name, "parts_skipped", before, f"{', '.join(kinds)} parts of older turns"
                )
            over = ops.tokens > trigger
            trim(
                index,
                name,
                trigger if over else budget,
                limit,
                "over_trigger" if over else "over_message_limit",
            )
        elif name == "budget":
            if ops.tokens > trigger or forced:
                trim(index, name, ratio_tokens(config, options), None, "over_trigger")
        elif name == "strip_tool_results":
            if ops.tokens <= trigger and not forced:
                continue
            before = ops.tokens
            ops.clear_tool_results(options)
            keep = int(options.get("keep", DEFAULT_KEEP_TOOL_RESULTS))
            note(index, name, "tool_output_cleared", before, f"kept the newest {keep} tool outputs")
            if ops.tokens > trigger:
                trim(index, name, ratio_tokens(config, options), None, "over_trigger")
        else:
            if ops.tokens <= trigger and not forced:
                continue
            _run_custom(ops, name, options, custom(name))
            note(index, name, "custom", ops.tokens, f"custom policy {name}")
            if ops.tokens > trigger:
                trim(index, name, trigger, None, "over_trigger")
    if ops.tokens > budget:
        before = ops.tokens
        ops.trim(max_tokens=budget, max_messages=message_limit(config), keep_newest=False)
        note(None, strategy, "over_budget", before, f"{before} tokens, over the budget of {budget}")
    return summarize and ops.tokens > trigger, actions


def _run_custom(
    ops: WindowOps, name: str, options: JSONObject, policy: CustomPolicy | None
) -> None:
    """Apply a custom policy: what it returns is kept if it was in the window;
    pinned messages it dropped come back (without a policy, nothing changes:
    the trim to the trigger that follows keeps the budget)."""
    if policy is None:
        return
    window = ops.messages()
    try:
        returned = policy(list(window), dict(options))
    except Exception:  # a plugin's bug must not stop the state machine: keep the window
        return
    wanted = {id(message) for message in returned if isinstance(message, Message)}
    kept = [m for m in window if id(m) in wanted or is_pinned(m, ops.mask)]
    ops.keep_only(strip_orphan_results(kept))


def _ranges(seqs: Iterable[int]) -> list[list[int]]:
    """Sorted seqs as ``[from, to]`` runs of consecutive numbers."""
    runs: list[list[int]] = []
    for seq in sorted(seqs):
        if runs and runs[-1][1] == seq - 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    return runs


def make_action(
    step: int | None,
    policy: str,
    reason: str,
    before: int,
    after: int,
    removed: list[int | None],
    changed: list[int],
    detail: str,
) -> JSONObject:
    action: JSONObject = {"step": step, "policy": policy, "reason": reason}
    logged = [seq for seq in removed if seq is not None]
    action["removed"] = _ranges(logged)
    others = len(removed) - len(logged)
    if others:
        action["removed_unlogged"] = others
    gone = set(logged)
    action["changed"] = _ranges(seq for seq in changed if seq not in gone)
    action["tokens_before"] = before
    action["tokens_after"] = after
    action["detail"] = detail
    return action


def apply_policy(
    window: Sequence[Message],
    config: ContextConfig,
    turn_seq: int | None = None,
    at: int | None = None,
    custom: Callable[[str], CustomPolicy | None] = lambda name: None,
) -> tuple[list[Message], bool]:
    """:func:`run_policy` on a plain list. Returns ``(window, needs_compaction)``."""
    ops = ListWindow(window, pin_mask(config))
    needs, _ = run_policy(ops, config, turn_seq, at, custom, always=True)
    return ops.window, needs


def window_tokens(window: Sequence[Message]) -> int:
    return sum(m.token_count for m in window)


def segments(window: Sequence[Message]) -> list[dict[str, int | str | None]]:
    """Describe the window as runs: contiguous log ranges and replacement messages."""
    runs: list[dict[str, int | str | None]] = []
    for message in window:
        last = runs[-1] if runs else None
        if message.seq is None and is_summary(message):
            covered = (message.metadata or {})["summary"]
            runs.append(
                {
                    "type": "summary",
                    "from_seq": covered.get("from_seq"),
                    "to_seq": covered.get("to_seq"),
                    "count": 1,
                    "tokens": message.token_count,
                }
            )
            continue
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


def tracks_outputs(config: ContextConfig) -> bool:
    """Whether the window should keep its tool outputs in order (``strip_tool_results``)."""
    return any(step.strategy == "strip_tool_results" for step in policy_steps(config))


def should_run(ops: WindowOps, config: ContextConfig, at: int | None) -> bool:
    """Whether the policy has work: the window is over the trigger, over a step's
    message limit, or (``time_window``) holds an expired unit."""
    if config.policy.strategy == "manual" or ops.tokens > trigger_tokens(config):
        return ops.tokens > trigger_tokens(config)
    if config.policy.strategy == "summarize":
        return False
    limit = message_limit(config)
    if limit is not None and ops.unpinned_count > limit:
        return True
    cutoff = expiry_cutoff(config, at) if at is not None else None
    return cutoff is not None and ops.has_expired(cutoff)


def is_summary(message: Message) -> bool:
    """Whether ``message`` is a summary the ``summarize`` policy put in the window."""
    if message.seq is not None or b'"summary":{' not in message.raw:
        return False
    metadata = message.metadata
    return isinstance(metadata, dict) and isinstance(metadata.get("summary"), dict)


@attrs.frozen
class SummaryPlan:
    """What a summary job folds: log messages up to ``to_seq`` (and what came
    before them in the window, a previous summary included)."""

    to_seq: int
    previous: str | None
    """The text of the previous summary being folded, if any."""
    messages: list[JSONObject]
    """The folded messages other than the previous summary, as the API renders them."""


def plan_summary(
    window: Sequence[Message],
    config: ContextConfig,
    rebuild_from: Sequence[Message] | None = None,
) -> SummaryPlan | None:
    """The oldest part of ``window`` to fold into a summary, so that what stays
    (pinned units, the newest units) is at most ``target_ratio * token_budget``
    (default 0.5). ``None`` when there is nothing from the log to fold.

    The state machine folds the same units when the summary comes back (every
    unpinned unit, or summary, that begins at or before ``to_seq``).

    ``rebuild_from`` (a redacted message is covered by the window's summary:
    ``Context.summary_rebuild``) holds the log messages the summary covers, as
    the log holds them now: the summary is then always folded, and rebuilt from
    those messages instead of from its own text.
    """
    mask = pin_mask(config)
    units = build_units(window, mask)
    target = ratio_tokens(config, config.policy.config)
    remaining = window_tokens(window)
    last = len(window) - 1
    folded: list[int] = []
    covered_to: list[int] = []
    if rebuild_from is not None:
        for unit in units:
            summaries = [window[i] for i in unit.indices if is_summary(window[i])]
            if summaries:
                folded.extend(unit.indices)
                remaining -= unit.tokens
                covered_to += [int((m.metadata or {})["summary"]["to_seq"]) for m in summaries]
    for unit in units:
        if remaining <= target or last in unit.indices:
            break
        summary = any(is_summary(window[i]) for i in unit.indices)
        if summary and rebuild_from is not None:
            continue  # folded above
        if unit.pinned and not summary:
            continue
        folded.extend(unit.indices)
        remaining -= unit.tokens
    folded.sort()
    seqs = [window[i].seq for i in folded if window[i].seq is not None]
    if not seqs and not covered_to:
        return None
    to_seq = max([s for s in seqs if s is not None] + covered_to)
    if rebuild_from is not None:
        rebuilt = [m.to_json() for m in rebuild_from]
        rest = [window[i].to_json() for i in folded if not is_summary(window[i])]
        return SummaryPlan(to_seq=to_seq, previous=None, messages=[*rebuilt, *rest])
    # Units between the folded ones that begin before to_seq are folded too.
    previous = [
        " ".join(str(p.get("text", "")) for p in window[i].parts if p.get("type") == "text")
        for i in folded
        if is_summary(window[i])
    ]
    messages = [window[i].to_json() for i in folded if not is_summary(window[i])]
    return SummaryPlan(to_seq=to_seq, previous="\n\n".join(previous) or None, messages=messages)
