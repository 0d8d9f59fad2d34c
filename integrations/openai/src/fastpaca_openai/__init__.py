"""Fastpaca for the OpenAI Python client.

Window → model → append back::

    from fastpaca import Fastpaca
    from openai import OpenAI
    from fastpaca_openai import to_openai_messages

    openai, ctx = OpenAI(), Fastpaca().context("demo-chat", budget=8000)
    stream = ctx.stream(
        lambda messages: openai.chat.completions.create(
            model="gpt-4o-mini",
            messages=to_openai_messages(messages),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    for chunk in stream:  # the client's own ChatCompletionChunk objects
        ...
    stream.result  # the appended assistant message's seq, version, token_estimate

``ctx.stream`` finds :func:`accumulator_for` by itself; pass
``accumulator=ChatCompletionAccumulator()`` or ``ResponsesAccumulator()`` to choose.
"""

from ._convert import from_openai_messages, to_openai_messages, to_responses_input
from ._stream import (
    ChatCompletionAccumulator,
    ResponsesAccumulator,
    accumulator_for,
    token_count_from_usage,
)

__all__ = [
    "ChatCompletionAccumulator",
    "ResponsesAccumulator",
    "accumulator_for",
    "from_openai_messages",
    "to_openai_messages",
    "to_responses_input",
    "token_count_from_usage",
]
