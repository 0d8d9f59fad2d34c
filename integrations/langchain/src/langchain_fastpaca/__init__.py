"""Fastpaca for LangChain.

A chat message history whose ``messages`` are the context's token-budgeted
window::

    from fastpaca import Fastpaca
    from langchain_fastpaca import FastpacaChatMessageHistory

    client = Fastpaca()
    client.context("demo-chat", budget=8000)
    history = FastpacaChatMessageHistory(client=client, context_id="demo-chat")

and window → model → append back for ``model.stream``::

    from langchain_fastpaca import to_langchain_messages

    stream = client.context("demo-chat").stream(
        lambda messages: model.stream(to_langchain_messages(messages))
    )
    for chunk in stream:  # the model's own AIMessageChunk objects
        ...
"""

from ._convert import ai_message_parts, from_langchain_messages, to_langchain_messages
from ._history import FastpacaChatMessageHistory
from ._stream import AIMessageChunkAccumulator, accumulator_for

__all__ = [
    "AIMessageChunkAccumulator",
    "FastpacaChatMessageHistory",
    "accumulator_for",
    "ai_message_parts",
    "from_langchain_messages",
    "to_langchain_messages",
]
