"""Builders shared by the core tests: messages with made-up token counts, machines.

Token counts follow the server's rule (``MESSAGE_OVERHEAD + sum(part_tokens)``)
but the per-part counts are chosen by the test, so no tokenizer is needed.
"""

from __future__ import annotations

from typing import Any

from fastpaca_server.core import (
    AppendMessages,
    AppendResult,
    Compact,
    CompactResult,
    ContextConfig,
    Message,
    MessageInput,
    Policy,
    PutContext,
    StateMachine,
)
from fastpaca_server.tokens import MESSAGE_OVERHEAD

TOKENIZER = "o200k_base"


def message_input(
    message_id: str,
    role: str = "user",
    parts: list[dict[str, Any]] | None = None,
    part_tokens: list[int] | None = None,
    metadata: dict[str, Any] | None = None,
) -> MessageInput:
    """A message whose parts cost ``part_tokens`` (default 1 each) plus the overhead."""
    if parts is None:
        parts = [{"type": "text", "text": message_id}]
    if part_tokens is None:
        part_tokens = [1] * len(parts)
    assert len(part_tokens) == len(parts)
    return MessageInput(
        id=message_id,
        role=role,
        parts=parts,
        metadata=metadata,
        token_count=MESSAGE_OVERHEAD + sum(part_tokens),
        part_tokens=part_tokens,
    )


def text(message_id: str, role: str = "user", tokens: int = 1, **kwargs: Any) -> MessageInput:
    return message_input(
        message_id, role, [{"type": "text", "text": message_id}], [tokens], **kwargs
    )


def tool_call(message_id: str, *call_ids: str, tokens: int = 1) -> MessageInput:
    """An assistant message calling one tool per id (one part each, ``tokens`` each)."""
    parts = [
        {"type": "tool_call", "id": call_id, "name": "weather", "payload": {"city": "Oslo"}}
        for call_id in call_ids
    ]
    return message_input(message_id, "assistant", parts, [tokens] * len(parts))


def tool_result(message_id: str, *call_ids: str, tokens: int = 1) -> MessageInput:
    """A tool message answering each id with one ``tool_result`` part."""
    parts = [
        {"type": "tool_result", "tool_call_id": call_id, "output": "sunny"} for call_id in call_ids
    ]
    return message_input(message_id, "tool", parts, [tokens] * len(parts))


def stored(message: MessageInput, seq: int | None, at: int = 0) -> Message:
    """The :class:`Message` the core would keep for ``message``."""
    return message.stored(seq, at)


def window_of(*messages: MessageInput) -> list[Message]:
    """A window of log messages numbered 1, 2, 3 …"""
    return [stored(message, seq) for seq, message in enumerate(messages, start=1)]


def config(
    token_budget: int = 1000,
    strategy: str = "last_n",
    trigger_ratio: float = 0.7,
    tokenizer: str = TOKENIZER,
    **options: Any,
) -> ContextConfig:
    if strategy == "manual":
        policy = Policy(strategy="manual", config={})
    elif strategy == "budget":
        policy = Policy(strategy="budget", config={"target_ratio": 0.5, **options})
    elif strategy == "time_window":
        policy = Policy(strategy="time_window", config=dict(options))
    else:
        policy = Policy(strategy=strategy, config={"limit": 200, **options})
    return ContextConfig(
        token_budget=token_budget, trigger_ratio=trigger_ratio, policy=policy, tokenizer=tokenizer
    )


def machine_with(
    context_config: ContextConfig | None = None,
    context_id: str = "c",
    metadata: dict[str, Any] | None = None,
) -> StateMachine:
    machine = StateMachine()
    machine.apply(PutContext(context_id, 0, context_config or config(), metadata))
    return machine


def append(
    machine: StateMachine,
    *messages: MessageInput,
    context_id: str = "c",
    at: int = 1,
    **kwargs: Any,
) -> AppendResult:
    kwargs.setdefault("tokenizer", TOKENIZER)
    result = machine.apply(AppendMessages(context_id, at, list(messages), **kwargs))
    assert isinstance(result, AppendResult)
    return result


def compact(
    machine: StateMachine,
    *replacement: MessageInput,
    context_id: str = "c",
    at: int = 1,
    **kwargs: Any,
) -> CompactResult:
    kwargs.setdefault("tokenizer", TOKENIZER)
    result = machine.apply(Compact(context_id, at, list(replacement), **kwargs))
    assert isinstance(result, CompactResult)
    return result


def ids(messages: list[Message]) -> list[str]:
    return [message.id for message in messages]
