"""What window a context would have under another config (``POST /contexts/{id}/preview``).

:func:`preview` replays a context's message log through a fresh
:class:`~.state.StateMachine` created with the other config, so every policy
the state machine knows (including ones added later) is previewed by the very
code that would run it. Nothing of the context changes: the replay has a
machine of its own, and the log's messages are immutable.

What is previewed is *what the policy alone would make of the log*: the
window the context would have had if ``config`` had been its config from its
first message on. Whatever else shaped the context's actual window is not
reproduced: manual compactions and summaries (``POST /compact``), and earlier
config changes (``PUT``). Appends are replayed at their messages' times
(``time_window`` sees the ages the messages had when they were appended);
consecutive messages with the same ``created_at`` are replayed as one append
(they were one batch, or appends the server stamped in the same millisecond).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import groupby
from typing import Any

import attrs

from . import window as windows
from .errors import DomainError
from .models import (
    AppendMessages,
    ContextConfig,
    JSONObject,
    Message,
    MessageInput,
    PutContext,
    converter,
)
from .state import Context, StateMachine

Recount = Callable[[list[JSONObject]], tuple[int, list[int]]]
"""Counts a message's parts with the previewed tokenizer: ``(token_count, part_tokens)``."""


@attrs.frozen
class Preview:
    """The window a context would have under ``config`` (see :func:`preview`).

    ``messages`` carry their seqs in the context's log. ``dropped`` holds the
    inclusive seq ranges of the log that are not in the window (refused
    messages included), ``changed`` the seqs of window messages whose content
    differs from the log's (parts a policy stripped), ``refused`` a
    ``{"seq", "code"}`` for each message the config could not take at all
    (e.g. ``message_exceeds_budget``).
    """

    messages: list[Message]
    used_tokens: int
    needs_compaction: bool
    segments: list[dict[str, int | str | None]]
    dropped: list[tuple[int, int]]
    changed: list[int]
    refused: list[dict[str, int | str]]
    config: ContextConfig

    def to_json(self) -> JSONObject:
        """The preview as a JSON-ready dict (new objects each call)."""
        rendered: list[JSONObject] = []
        breakdown: list[JSONObject] = []
        for message in self.messages:
            data = message.to_json()
            rendered.append(data)
            breakdown.append(
                {
                    "seq": message.seq,
                    "id": data["id"],
                    "role": message.role,
                    "token_count": message.token_count,
                    "part_tokens": message.part_tokens,
                }
            )
        config: JSONObject = converter.unstructure(self.config, ContextConfig)
        return {
            "config": config,
            "used_tokens": self.used_tokens,
            "needs_compaction": self.needs_compaction,
            "messages": rendered,
            "breakdown": breakdown,
            "dropped": [
                {"from_seq": first, "to_seq": last, "count": last - first + 1}
                for first, last in self.dropped
            ],
            "changed": list(self.changed),
            "refused": [dict(entry) for entry in self.refused],
            "segments": [dict(segment) for segment in self.segments],
        }


def preview(context: Context, config: ContextConfig, recount: Recount | None = None) -> Preview:
    """The window ``context`` would have if ``config`` had been its config from the start.

    The log is replayed through a fresh state machine: one ``PutContext`` with
    ``config``, then one ``AppendMessages`` per run of consecutive messages
    with the same ``created_at``, each at that time. Messages keep their
    stored token counts (which a client may have supplied) unless
    ``recount`` is given (the tokenizer changes), which then counts every
    message's parts afresh.

    A batch the state machine refuses is replayed message by message; the
    messages refused on their own are recorded in ``refused`` and left out,
    and the replay goes on. The window of a context that had manual
    compactions or summaries is not reproduced, nor the effect of earlier
    config changes: this is what the policy alone makes of the log.

    Costs one append per batch (the state machine's window upkeep is
    amortised O(1) per message) plus O(log) to compare the result with the
    log. ``context`` is not changed. With the archive on, the log in memory is
    the hot tail (seqs after ``log_offset``): that is what is replayed.
    """
    log = context.log
    machine = StateMachine()
    start = log[0].created_at if log else context.created_at
    machine.apply(PutContext(context.id, start, config, dict(context.metadata)))
    replayed: list[int] = []  # log seq of each replayed message (refusals shift the seqs)
    refused: list[dict[str, int | str]] = []
    for at, group in groupby(log, key=lambda message: message.created_at):
        batch = list(group)
        inputs = [_input(message, recount) for message in batch]
        if _append(machine, context.id, at, inputs, config.tokenizer) is None:
            replayed.extend(_seq(message) for message in batch)
            continue
        for message, single in zip(batch, inputs, strict=True):
            error = _append(machine, context.id, at, [single], config.tokenizer)
            if error is None:
                replayed.append(_seq(message))
            else:
                refused.append({"seq": _seq(message), "code": error.code})
    result = machine.get(context.id)
    window = result.window
    changed = [
        replayed[seq - 1]
        for message in window
        if (seq := message.seq) is not None and message.raw != result.log[seq - 1].raw
    ]
    if refused or context.log_offset:
        window = [_renumbered(message, replayed) for message in window]
    return Preview(
        messages=window,
        used_tokens=result.used_tokens,
        needs_compaction=result.needs_compaction,
        segments=windows.segments(window),
        dropped=_missing_ranges(
            [m.seq for m in window if m.seq is not None], context.last_seq, context.log_offset + 1
        ),
        changed=changed,
        refused=refused,
        config=config,
    )


def _append(
    machine: StateMachine, context_id: str, at: int, inputs: list[MessageInput], tokenizer: str
) -> DomainError | None:
    """Append ``inputs`` as one batch; the refusal, if the machine refused it."""
    try:
        machine.apply(AppendMessages(context_id, at, inputs, tokenizer))
    except DomainError as error:
        return error
    return None


def _input(message: Message, recount: Recount | None) -> MessageInput:
    """The log message as it was appended (its seq and time stripped)."""
    data: dict[str, Any] = message.to_json()
    parts: list[JSONObject] = data["parts"]
    if recount is None:
        token_count, part_tokens = message.token_count, message.part_tokens
    else:
        token_count, part_tokens = recount(parts)
    return MessageInput(
        id=data["id"],
        role=message.role,
        parts=parts,
        metadata=data["metadata"],
        token_count=token_count,
        part_tokens=list(part_tokens),
    )


def _seq(message: Message) -> int:
    assert message.seq is not None, "log messages have seqs"
    return message.seq


def _renumbered(message: Message, replayed: list[int]) -> Message:
    """A window message of the replay with the seq its message has in the context's log."""
    seq = message.seq
    if seq is None or replayed[seq - 1] == seq:
        return message
    data = message.to_json()
    return Message(
        seq=replayed[seq - 1],
        id=data["id"],
        role=message.role,
        parts=data["parts"],
        metadata=data["metadata"],
        token_count=message.token_count,
        part_tokens=message.part_tokens,
        created_at=message.created_at,
    )


def _missing_ranges(kept: Sequence[int], last_seq: int, first: int = 1) -> list[tuple[int, int]]:
    """Inclusive ranges of the seqs ``first..last_seq`` not in ``kept`` (ascending seqs)."""
    ranges: list[tuple[int, int]] = []
    expected = first
    for seq in [*kept, last_seq + 1]:
        if seq > expected:
            ranges.append((expected, seq - 1))
        expected = max(expected, seq + 1)
    return ranges
