"""``ctx.stream`` accumulators for OpenAI streams.

* :class:`ChatCompletionAccumulator` — ``chat.completions.create(…, stream=True)``
  chunks (``ChatCompletionChunk``): text and refusals as text, tool calls by
  index with their ``arguments`` pieces joined, ``reasoning_content``/``reasoning``
  deltas (sent by OpenAI-compatible servers) as reasoning, and usage from the
  last chunk (``stream_options={"include_usage": True}``).
* :class:`ResponsesAccumulator` — ``responses.create(…, stream=True)`` events:
  output text, refusals, function calls (``call_id`` as the id), reasoning text
  and summaries, and usage from ``response.completed`` / ``response.incomplete``.
  ``error`` and ``response.failed`` events raise
  :class:`~fastpaca.ModelStreamError`, so nothing is appended.

Both read chunks by attribute or key, so the client's models and plain dicts work.
"""

from __future__ import annotations

from typing import Any

from fastpaca import AssembledMessage, MessageBuilder, ModelStreamError, field_of

__all__ = [
    "ChatCompletionAccumulator",
    "ResponsesAccumulator",
    "accumulator_for",
    "token_count_from_usage",
]


def token_count_from_usage(usage: Any) -> int | None:
    """Generated tokens from an OpenAI usage object: ``completion_tokens`` (Chat
    Completions) or ``output_tokens`` (Responses); ``None`` without usage."""
    if usage is None:
        return None
    for name in ("completion_tokens", "output_tokens"):
        value = field_of(usage, name)
        if isinstance(value, int):
            return value
    return None


class ChatCompletionAccumulator:
    """Assembles a Chat Completions stream (choice 0) into one assistant message."""

    def __init__(self) -> None:
        self._builder = MessageBuilder()
        self._token_count: int | None = None
        self.finish_reason: str | None = None

    def add(self, chunk: Any) -> None:
        """Take one ``ChatCompletionChunk``."""
        count = token_count_from_usage(field_of(chunk, "usage"))
        if count is not None:
            self._token_count = count
        for choice in field_of(chunk, "choices") or ():
            if (field_of(choice, "index") or 0) != 0:
                continue
            delta = field_of(choice, "delta")
            if delta is not None:
                self._add_delta(delta)
            finish_reason = field_of(choice, "finish_reason")
            if finish_reason:
                self.finish_reason = finish_reason

    def _add_delta(self, delta: Any) -> None:
        reasoning = field_of(delta, "reasoning_content") or field_of(delta, "reasoning")
        if isinstance(reasoning, str) and reasoning:
            self._builder.append_reasoning(reasoning)
        for name in ("content", "refusal"):
            text = field_of(delta, name)
            if isinstance(text, str) and text:
                self._builder.append_text(text)
        for tool_call in field_of(delta, "tool_calls") or ():
            index = field_of(tool_call, "index") or 0
            function = field_of(tool_call, "function")
            self._builder.start_tool_call(
                index,
                call_id=field_of(tool_call, "id"),
                name=field_of(function, "name") if function is not None else None,
            )
            arguments = field_of(function, "arguments") if function is not None else None
            if arguments:
                self._builder.append_tool_arguments(index, arguments)

    def finish(self) -> AssembledMessage:
        """The assistant message so far, with the completion-token count if reported."""
        return AssembledMessage(parts=self._builder.parts(), token_count=self._token_count)


class ResponsesAccumulator:
    """Assembles a Responses API event stream into one assistant message."""

    def __init__(self) -> None:
        self._builder = MessageBuilder()
        self._token_count: int | None = None
        self.status: str | None = None

    def add(self, event: Any) -> None:
        """Take one Responses stream event."""
        event_type = field_of(event, "type")
        builder = self._builder
        if event_type == "response.output_text.delta":
            key = ("text", field_of(event, "item_id"), field_of(event, "content_index"))
            builder.append_text(field_of(event, "delta") or "", key=key)
        elif event_type == "response.refusal.delta":
            key = ("refusal", field_of(event, "item_id"), field_of(event, "content_index"))
            builder.append_text(field_of(event, "delta") or "", key=key)
        elif event_type == "response.reasoning_summary_text.delta":
            key = ("summary", field_of(event, "item_id"), field_of(event, "summary_index"))
            builder.append_reasoning(field_of(event, "delta") or "", key=key)
        elif event_type == "response.reasoning_text.delta":
            key = ("reasoning", field_of(event, "item_id"), field_of(event, "content_index"))
            builder.append_reasoning(field_of(event, "delta") or "", key=key)
        elif event_type in ("response.output_item.added", "response.output_item.done"):
            item = field_of(event, "item")
            if field_of(item, "type") == "function_call":
                item_key = field_of(item, "id") or ("output", field_of(event, "output_index"))
                builder.start_tool_call(
                    item_key, call_id=field_of(item, "call_id"), name=field_of(item, "name")
                )
                arguments = field_of(item, "arguments")
                if arguments:
                    builder.set_tool_arguments(item_key, arguments)
        elif event_type == "response.function_call_arguments.delta":
            builder.append_tool_arguments(field_of(event, "item_id"), field_of(event, "delta"))
        elif event_type == "response.function_call_arguments.done":
            builder.set_tool_arguments(field_of(event, "item_id"), field_of(event, "arguments"))
        elif event_type in ("response.completed", "response.incomplete"):
            response = field_of(event, "response")
            self.status = field_of(response, "status")
            count = token_count_from_usage(field_of(response, "usage"))
            if count is not None:
                self._token_count = count
        elif event_type == "response.failed":
            error = field_of(field_of(event, "response"), "error")
            message = field_of(error, "message") or "the response failed"
            raise ModelStreamError(f"OpenAI response failed: {message}", chunk=event)
        elif event_type == "error":
            message = field_of(event, "message") or "stream error"
            raise ModelStreamError(f"OpenAI stream error: {message}", chunk=event)

    def finish(self) -> AssembledMessage:
        """The assistant message so far, with the output-token count if reported."""
        return AssembledMessage(parts=self._builder.parts(), token_count=self._token_count)


def accumulator_for(chunk: Any) -> ChatCompletionAccumulator | ResponsesAccumulator | None:
    """The accumulator for a stream whose first chunk is ``chunk`` (``ctx.stream`` calls
    this when no ``accumulator=`` is given), or ``None`` for other chunks."""
    if field_of(chunk, "object") == "chat.completion.chunk" or type(chunk).__name__ == (
        "ChatCompletionChunk"
    ):
        return ChatCompletionAccumulator()
    event_type = field_of(chunk, "type")
    if isinstance(event_type, str) and (
        event_type.startswith("response.") or event_type == "error"
    ):
        return ResponsesAccumulator()
    return None
