"""The ``ctx.stream`` accumulator for Anthropic Messages streams.

It reads the raw stream events, which both ``messages.create(…, stream=True)``
and ``messages.stream(…)`` yield: text blocks, ``tool_use`` blocks (their
``input_json_delta`` pieces joined and parsed), ``thinking`` blocks as reasoning
parts with their signature (``redacted_thinking`` too), and the output-token
count from ``message_start`` / ``message_delta`` usage. The convenience events
``messages.stream(…)`` adds (``text``, ``input_json``, ``thinking``,
``signature``, ``citation``) repeat the raw ones and are ignored. An ``error``
event makes the ``anthropic`` client raise, so nothing is appended.
"""

from __future__ import annotations

import json
from typing import Any

from fastpaca import AssembledMessage, MessageBuilder, field_of

__all__ = ["MessagesAccumulator", "accumulator_for", "token_count_from_usage"]

_RAW_EVENTS = frozenset(
    {
        "message_start",
        "message_delta",
        "message_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
    }
)


def token_count_from_usage(usage: Any) -> int | None:
    """Generated tokens (``output_tokens``) from an Anthropic usage object."""
    if usage is None:
        return None
    value = field_of(usage, "output_tokens")
    return value if isinstance(value, int) else None


class MessagesAccumulator:
    """Assembles an Anthropic Messages stream into one assistant message."""

    def __init__(self) -> None:
        self._builder = MessageBuilder()
        self._token_count: int | None = None
        self.stop_reason: str | None = None

    def add(self, event: Any) -> None:
        """Take one stream event."""
        event_type = field_of(event, "type")
        if event_type == "message_start":
            self._count(field_of(field_of(event, "message"), "usage"))
        elif event_type == "message_delta":
            self._count(field_of(event, "usage"))
            stop_reason = field_of(field_of(event, "delta"), "stop_reason")
            if stop_reason:
                self.stop_reason = stop_reason
        elif event_type == "content_block_start":
            self._start_block(field_of(event, "index"), field_of(event, "content_block"))
        elif event_type == "content_block_delta":
            self._add_delta(field_of(event, "index"), field_of(event, "delta"))

    def _count(self, usage: Any) -> None:
        count = token_count_from_usage(usage)
        if count is not None:
            self._token_count = count

    def _start_block(self, index: int, block: Any) -> None:
        builder = self._builder
        block_type = field_of(block, "type")
        if block_type == "text":
            builder.append_text(field_of(block, "text") or "", key=index)
        elif block_type == "thinking":
            builder.append_reasoning(field_of(block, "thinking") or "", key=index)
            signature = field_of(block, "signature")
            if signature:
                builder.update_part(
                    "reasoning", index, provider_metadata={"anthropic": {"signature": signature}}
                )
        elif block_type == "redacted_thinking":
            builder.update_part(
                "reasoning",
                index,
                provider_metadata={"anthropic": {"redacted_data": field_of(block, "data")}},
            )
        elif block_type == "tool_use":
            builder.start_tool_call(
                index, call_id=field_of(block, "id"), name=field_of(block, "name")
            )
            initial = field_of(block, "input")
            if initial:
                builder.set_tool_arguments(index, json.dumps(initial))

    def _add_delta(self, index: int, delta: Any) -> None:
        builder = self._builder
        delta_type = field_of(delta, "type")
        if delta_type == "text_delta":
            builder.append_text(field_of(delta, "text") or "", key=index)
        elif delta_type == "input_json_delta":
            builder.append_tool_arguments(index, field_of(delta, "partial_json") or "")
        elif delta_type == "thinking_delta":
            builder.append_reasoning(field_of(delta, "thinking") or "", key=index)
        elif delta_type == "signature_delta":
            builder.update_part(
                "reasoning",
                index,
                provider_metadata={"anthropic": {"signature": field_of(delta, "signature")}},
            )

    def finish(self) -> AssembledMessage:
        """The assistant message so far, with the output-token count if reported."""
        return AssembledMessage(parts=self._builder.parts(), token_count=self._token_count)


def accumulator_for(chunk: Any) -> MessagesAccumulator | None:
    """The accumulator for an Anthropic Messages stream (``ctx.stream`` calls this
    when no ``accumulator=`` is given), or ``None`` for other chunks."""
    if field_of(chunk, "type") in _RAW_EVENTS:
        return MessagesAccumulator()
    return None
