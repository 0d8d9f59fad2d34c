"""The ``ctx.stream`` accumulator for LangChain chat model streams.

``model.stream(…)`` / ``model.astream(…)`` yield :class:`AIMessageChunk` s; the
accumulator adds them up the way LangChain does (``chunk + chunk``: text joined,
tool-call argument pieces joined and parsed, usage summed) and turns the sum
into parts with :func:`~langchain_fastpaca.ai_message_parts`. The token count is
the summed ``usage_metadata["output_tokens"]`` when the model reports usage.
"""

from __future__ import annotations

from typing import Any

from fastpaca import AssembledMessage
from langchain_core.messages import AIMessageChunk

from ._convert import ai_message_parts

__all__ = ["AIMessageChunkAccumulator", "accumulator_for"]


class AIMessageChunkAccumulator:
    """Assembles a stream of :class:`AIMessageChunk` into one assistant message."""

    def __init__(self) -> None:
        self.aggregate: AIMessageChunk | None = None

    def add(self, chunk: Any) -> None:
        """Take one ``AIMessageChunk``."""
        if not isinstance(chunk, AIMessageChunk):
            raise TypeError(f"expected AIMessageChunk, got {type(chunk).__name__}")
        self.aggregate = chunk if self.aggregate is None else self.aggregate + chunk

    def finish(self) -> AssembledMessage:
        """The assistant message so far, with the output-token count if reported."""
        if self.aggregate is None:
            return AssembledMessage()
        usage = self.aggregate.usage_metadata
        count = usage.get("output_tokens") if usage else None
        return AssembledMessage(
            parts=ai_message_parts(self.aggregate),
            token_count=count if isinstance(count, int) else None,
        )


def accumulator_for(chunk: Any) -> AIMessageChunkAccumulator | None:
    """The accumulator for a LangChain chat model stream (``ctx.stream`` calls this when
    no ``accumulator=`` is given), or ``None`` for other chunks."""
    if isinstance(chunk, AIMessageChunk):
        return AIMessageChunkAccumulator()
    return None
