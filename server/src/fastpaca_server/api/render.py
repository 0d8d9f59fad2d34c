"""Core values to JSON response bodies (the shapes in spec/openapi.yaml)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from ..core import Message
from ..core.models import AppendResult, CompactResult, JSONObject
from ..core.state import ContextView


def timestamp(ms: int) -> str:
    """Milliseconds since the epoch as an RFC 3339 UTC timestamp."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def message(item: Message) -> JSONObject:
    return {
        "seq": item.seq,
        "id": item.id,
        "role": item.role,
        "parts": item.parts,
        "metadata": item.metadata,
        "token_count": item.token_count,
        "created_at": timestamp(item.created_at),
    }


def context(item: ContextView) -> JSONObject:
    config = item.config
    return {
        "id": item.id,
        "token_budget": config.token_budget,
        "trigger_ratio": config.trigger_ratio,
        "policy": {"strategy": config.policy.strategy, "config": config.policy.config},
        "tokenizer": config.tokenizer,
        "metadata": item.metadata,
        "status": item.status,
        "version": item.version,
        "last_seq": item.last_seq,
        "used_tokens": item.used_tokens,
        "needs_compaction": item.needs_compaction,
        "created_at": timestamp(item.created_at),
        "updated_at": timestamp(item.updated_at),
    }


def append_result(result: AppendResult) -> JSONObject:
    """The append answer; one message also gets the original Fastpaca's top-level
    ``seq`` and ``token_estimate`` (its SDK reads exactly those and ``version``)."""
    single: JSONObject = {}
    if len(result.messages) == 1:
        single = {"seq": result.messages[0].seq, "token_estimate": result.messages[0].token_count}
    return {
        **single,
        "version": result.version,
        "last_seq": result.last_seq,
        "used_tokens": result.used_tokens,
        "needs_compaction": result.needs_compaction,
        "messages": [
            {
                "seq": item.seq,
                "id": item.id,
                "token_count": item.token_count,
                "created_at": timestamp(item.created_at),
            }
            for item in result.messages
        ],
    }


def compact_result(result: CompactResult) -> JSONObject:
    return {
        "version": result.version,
        "used_tokens": result.used_tokens,
        "needs_compaction": result.needs_compaction,
        "message_count": result.message_count,
    }


def window(
    *,
    version: int,
    messages: list[Message],
    budget_tokens: int,
    needs_compaction: bool,
    segments: list[dict[str, int | str | None]],
) -> bytes:
    """The ``GET …/context`` body, the bytes ``json.dumps`` of the whole would give.

    Each message is encoded by its own ``json.dumps`` call and the results
    joined, so a worker thread rendering a large window gives the event loop
    the interpreter between messages instead of holding it for the whole body.
    """
    encode = json.dumps
    rendered = ", ".join([encode(message(item)) for item in messages])
    tokens = sum(item.token_count for item in messages)
    return (
        f'{{"version": {version}, "messages": [{rendered}], "used_tokens": {tokens}, '
        f'"budget_tokens": {budget_tokens}, "needs_compaction": {encode(needs_compaction)}, '
        f'"segments": {encode(segments)}}}'
    ).encode()


def page(items: list[Message], **extra: Any) -> JSONObject:
    return {"messages": [message(item) for item in items], **extra}
