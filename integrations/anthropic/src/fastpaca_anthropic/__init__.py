"""Fastpaca for the Anthropic Python client.

Window → model → append back::

    from anthropic import Anthropic
    from fastpaca import Fastpaca
    from fastpaca_anthropic import to_anthropic_messages

    anthropic, ctx = Anthropic(), Fastpaca().context("demo-chat", budget=8000)
    stream = ctx.stream(
        lambda messages: anthropic.messages.create(
            model="claude-sonnet-5",
            max_tokens=1024,
            stream=True,
            **to_anthropic_messages(messages),
        )
    )
    for event in stream:  # the client's own stream events
        ...
    stream.result  # the appended assistant message's seq, version, token_estimate

``client.messages.stream(…)`` (a context manager) works as ``fn``'s result too.
"""

from ._convert import AnthropicRequest, from_anthropic_messages, to_anthropic_messages
from ._stream import MessagesAccumulator, accumulator_for, token_count_from_usage

__all__ = [
    "AnthropicRequest",
    "MessagesAccumulator",
    "accumulator_for",
    "from_anthropic_messages",
    "to_anthropic_messages",
    "token_count_from_usage",
]
