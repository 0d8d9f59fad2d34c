"""A LangChain chat message history backed by a Fastpaca context."""

from __future__ import annotations

from collections.abc import Sequence

from fastpaca import AsyncContext, AsyncFastpaca, Context, Fastpaca
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage

from ._convert import from_langchain_messages, to_langchain_messages

__all__ = ["FastpacaChatMessageHistory"]


class FastpacaChatMessageHistory(BaseChatMessageHistory):
    """``BaseChatMessageHistory`` over one Fastpaca context.

    * ``messages`` / ``aget_messages()`` — the context's current LLM **window**
      (kept under its token budget by the server), as LangChain messages; the full
      log stays available through the Fastpaca client.
    * ``add_messages`` / ``aadd_messages`` — one atomic append of the batch (an
      ``AIMessage``'s ``usage_metadata`` output tokens become its token count).
    * ``clear`` / ``aclear`` — compact the window to empty; the log is untouched.

    Works with :class:`~langchain_core.runnables.history.RunnableWithMessageHistory`.
    With a :class:`~fastpaca.Fastpaca` client the async methods run the sync ones in
    a thread (LangChain's default); with an :class:`~fastpaca.AsyncFastpaca` client
    only the async methods are available.

    Args:
        client: a :class:`~fastpaca.Fastpaca` or :class:`~fastpaca.AsyncFastpaca`.
        context_id: the context (create it first, e.g. ``client.context(id, budget=…)``).
        budget_tokens: read the window trimmed to this many tokens (for a model with
            a smaller context than the stored budget).
    """

    def __init__(
        self,
        *,
        client: Fastpaca | AsyncFastpaca,
        context_id: str,
        budget_tokens: int | None = None,
    ) -> None:
        self.client = client
        self.context_id = context_id
        self.budget_tokens = budget_tokens

    def _sync_context(self) -> Context:
        if not isinstance(self.client, Fastpaca):
            raise TypeError(
                "FastpacaChatMessageHistory was given an AsyncFastpaca client: use "
                "aget_messages/aadd_messages/aclear (or pass a Fastpaca client)"
            )
        return Context(self.client, self.context_id)

    def _async_context(self) -> AsyncContext | None:
        if isinstance(self.client, AsyncFastpaca):
            return AsyncContext(self.client, self.context_id)
        return None

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The context's current window as LangChain messages."""
        window = self._sync_context().context(budget_tokens=self.budget_tokens)
        return to_langchain_messages(window.messages)

    async def aget_messages(self) -> list[BaseMessage]:
        """The context's current window as LangChain messages."""
        context = self._async_context()
        if context is None:
            return await super().aget_messages()
        window = await context.context(budget_tokens=self.budget_tokens)
        return to_langchain_messages(window.messages)

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` to the context in one atomic batch."""
        if messages:
            self._sync_context().append_many(from_langchain_messages(messages))

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` to the context in one atomic batch."""
        context = self._async_context()
        if context is None:
            await super().aadd_messages(messages)
        elif messages:
            await context.append_many(from_langchain_messages(messages))

    def clear(self) -> None:
        """Empty the window (``compact([])``); the message log keeps every message."""
        self._sync_context().compact([])

    async def aclear(self) -> None:
        """Empty the window (``compact([])``); the message log keeps every message."""
        context = self._async_context()
        if context is None:
            await super().aclear()
        else:
            await context.compact([])
