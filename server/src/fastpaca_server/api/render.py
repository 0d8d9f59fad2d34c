"""Core values to JSON response bodies (the shapes in spec/openapi.yaml)."""

from __future__ import annotations

import json
import operator
from collections.abc import Sequence
from typing import Any

from ..core import Message, formats
from ..core.models import (
    AppendResult,
    CompactResult,
    ContextConfig,
    JSONObject,
    Policy,
    timestamp,
)
from ..core.preview import Preview
from ..core.state import ContextView


def message(item: Message) -> JSONObject:
    """One message as a JSON object (events; reads join :attr:`Message.raw` instead)."""
    return item.to_json()


def policy(value: Policy) -> JSONObject:
    """A policy as clients set it (without the token counts the server stamps in)."""
    config = {key: item for key, item in value.config.items() if key != "frames"}
    if value.strategy == "pipeline":
        config["steps"] = [
            policy(Policy(step["strategy"], step["config"])) for step in config["steps"]
        ]
    return {"strategy": value.strategy, "config": config}


def config(value: ContextConfig) -> JSONObject:
    return {
        "token_budget": value.token_budget,
        "trigger_ratio": value.trigger_ratio,
        "policy": policy(value.policy),
        "tokenizer": value.tokenizer,
    }


def context(item: ContextView) -> JSONObject:
    last = item.last_compaction
    return {
        "id": item.id,
        **config(item.config),
        "metadata": item.metadata,
        "status": item.status,
        "version": item.version,
        "last_seq": item.last_seq,
        "used_tokens": item.used_tokens,
        "needs_compaction": item.needs_compaction,
        "created_at": timestamp(item.created_at),
        "updated_at": timestamp(item.updated_at),
        "window_messages": item.window_messages,
        "archived_seq": item.archived_seq,
        "compactions": item.compactions,
        "last_compaction": (
            None if last is None else {"at": timestamp(last[0]), "policy": last[1]}
        ),
        "summary_failures": item.summary_failures,
        "last_summary_error": item.last_summary_error,
        "purge": (
            None
            if item.purge is None
            else {"purged_at": timestamp(item.purge[0]), "purged_by": item.purge[1]}
        ),
    }


def compaction_page(records: list[bytes], has_more: bool, total: int) -> bytes:
    """A page of compaction records (stored as JSON: joined, not re-serialised)."""
    head = _compact({"compactions": total, "has_more": has_more})
    return head[:-1] + b',"records":[' + b",".join(records) + b"]}"


def preview(result: Preview) -> bytes:
    data = result.to_json()
    data["config"] = config(result.config)
    return _compact(data)


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
    tokens: int | None = None,
) -> bytes:
    """The ``GET …/context`` body: the stored bytes of each message, joined.

    ``tokens`` is the messages' token sum when the caller knows it already
    (the context's ``used_tokens`` for the whole window)."""
    if tokens is None:
        tokens = sum(map(_TOKEN_COUNT, messages))
    head = b'{"version":%d,"messages":[' % version
    tail = b'],"used_tokens":%d,"budget_tokens":%d,"needs_compaction":%s,"segments":%s}' % (
        tokens,
        budget_tokens,
        b"true" if needs_compaction else b"false",
        _compact(segments),
    )
    return b"".join((head, b",".join(map(_RAW, messages)), tail))


def formatted_window(
    *,
    window_format: str,
    version: int,
    messages: list[Message],
    budget_tokens: int,
    needs_compaction: bool,
    segments: list[dict[str, int | str | None]],
    tokens: int | None = None,
) -> bytes:
    """The ``GET …/context?format=openai|anthropic`` body: the envelope of :func:`window`
    with ``format``, and the messages converted (``system`` too for ``anthropic``)."""
    if tokens is None:
        tokens = sum(map(_TOKEN_COUNT, messages))
    stored = [item.to_json() for item in messages]
    body: JSONObject = {"version": version, "format": window_format}
    if window_format == "openai":
        body["messages"] = formats.to_openai(stored)
    else:
        request = formats.to_anthropic(stored)
        if "system" in request:
            body["system"] = request["system"]
        body["messages"] = request["messages"]
    body |= {
        "used_tokens": tokens,
        "budget_tokens": budget_tokens,
        "needs_compaction": needs_compaction,
        "segments": segments,
    }
    return _compact(body)


def page(items: list[Message], archived: Sequence[bytes] = (), **extra: Any) -> bytes:
    """A page of log messages (``tail``, ``messages``): their stored bytes, joined
    (``archived``: the bytes of older ones read from the archive, which come first)."""
    rest = _compact(extra)[1:]  # the extra fields' object without its opening brace
    raws = [*archived, *map(_RAW, items)]
    return b"".join((b'{"messages":[', b",".join(raws), b"],", rest))


_RAW = operator.attrgetter("raw")
_TOKEN_COUNT = operator.attrgetter("token_count")


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
