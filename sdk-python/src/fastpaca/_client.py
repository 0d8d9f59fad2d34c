"""The entry points: :class:`Fastpaca` and its async twin :class:`AsyncFastpaca`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from types import TracebackType
from typing import Any

import httpx

from ._base_client import (
    DEFAULT_MAX_RETRIES,
    NOT_GIVEN,
    AsyncAPIClient,
    NotGiven,
    SyncAPIClient,
    TimeoutTypes,
)
from ._context import (
    AsyncContext,
    Context,
    ListOrder,
    ListStatus,
    cluster_call,
    delete_context_call,
    list_contexts_call,
    put_context_call,
)
from ._types import ClusterInfo, ContextInfo, ContextPage, Policy, Strategy, Tokenizer

__all__ = ["AsyncFastpaca", "Fastpaca"]


def _has_options(*options: object) -> bool:
    return any(option is not None for option in options)


class Fastpaca(SyncAPIClient):
    """A client for one Fastpaca server.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:4000`` (a trailing ``/v1``, as
            the original SDK took, is accepted). Default: ``$FASTPACA_URL``, else
            ``http://127.0.0.1:4000``.
        api_key: sent as ``Authorization: Bearer …``. Default: ``$FASTPACA_API_KEY``.
        timeout: seconds (or an :class:`httpx.Timeout`) per request. Default: 60 s,
            5 s to connect (or the ``http_client``'s own timeout).
        max_retries: retries of a failed request (connection errors, 429, 5xx;
            never 409). Default 2.
        http_client: an :class:`httpx.Client` to send with (custom transport,
            proxies, tests). It is not closed by :meth:`close`.

    Use it as a context manager, or call :meth:`close`, to release connections.
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._configure(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            client_timeout=http_client.timeout if http_client is not None else None,
        )
        self._setup_http(http_client)

    def context(
        self,
        context_id: str,
        *,
        budget: int | None = None,
        trigger: float | None = None,
        policy: Policy | Strategy | str | None = None,
        metadata: Mapping[str, Any] | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> Context:
        """A handle on the context ``context_id``.

        With any option given it creates the context or replaces its config (``PUT``;
        options left out go back to their defaults, and ``budget`` is required by the
        server); with none, no request is made.

        Args:
            budget: ``token_budget``, the window's token budget.
            trigger: ``trigger_ratio`` (0 < r ≤ 1, default 0.7).
            policy: ``{"strategy": …, "config": {…}}`` or just a strategy name
                (``"last_n"``, ``"skip_parts"``, ``"budget"``, ``"time_window"``,
                ``"strip_tool_results"``, ``"summarize"``, ``"manual"``, or a custom
                policy installed on the server; ``"pipeline"`` needs its ``steps``).
            metadata: replaces the context's metadata.
            tokenizer: ``"o200k_base"`` (default) or ``"cl100k_base"``.
        """
        info: ContextInfo | None = None
        if _has_options(budget, trigger, policy, metadata, tokenizer):
            call = put_context_call(
                context_id,
                budget=budget,
                trigger=trigger,
                policy=policy,
                metadata=metadata,
                tokenizer=tokenizer,
            )
            info = self._send(call)
        return Context(self, context_id, info)

    def delete_context(self, context_id: str, *, purge: bool = False) -> ContextInfo:
        """Tombstone a context (the same as ``client.context(id).delete()``); with
        ``purge=True`` (an ``admin`` key), erase its messages, window and metadata too."""
        return self._send(delete_context_call(context_id, purge=purge))

    def list_contexts(
        self,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        order: ListOrder | None = None,
        prefix: str | None = None,
        q: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        status: ListStatus | None = None,
    ) -> ContextPage:
        """One page of contexts (``GET /v1/contexts``).

        Args:
            limit: contexts per page (1-1000, server default 50).
            cursor: the previous page's ``next_cursor``.
            order: ``"id"`` (default: every context listed once while paging) or
                ``"recent"`` (newest activity first).
            prefix: only ids starting with this.
            q: case-insensitive search in the id and the top-level string metadata values.
            metadata: top-level metadata keys and the values they must have (a
                non-string value matches by its JSON: ``{"priority": 3}``).
            status: ``"active"`` (default), ``"tombstoned"``, ``"purged"`` or ``"all"``.
        """
        call = list_contexts_call(
            limit=limit,
            cursor=cursor,
            order=order,
            prefix=prefix,
            q=q,
            metadata=metadata,
            status=status,
        )
        return self._send(call)

    def iter_contexts(
        self,
        *,
        order: ListOrder | None = None,
        prefix: str | None = None,
        q: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        status: ListStatus | None = None,
        page_size: int | None = None,
    ) -> Iterator[ContextInfo]:
        """Every context that matches, page by page (see :meth:`list_contexts`)."""
        cursor: str | None = None
        while True:
            page = self.list_contexts(
                limit=page_size,
                cursor=cursor,
                order=order,
                prefix=prefix,
                q=q,
                metadata=metadata,
                status=status,
            )
            yield from page
            if not page.has_more or page.next_cursor is None:
                return
            cursor = page.next_cursor

    def cluster(self) -> ClusterInfo:
        """The server's view of its cluster: node id, leader, members, indexes."""
        return self._send(cluster_call())

    def __enter__(self) -> Fastpaca:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Fastpaca(base_url={self.base_url!r})"


class AsyncFastpaca(AsyncAPIClient):
    """The async twin of :class:`Fastpaca` (same arguments; ``http_client`` is an
    :class:`httpx.AsyncClient`). ``client.context(…)`` is awaited."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._configure(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            client_timeout=http_client.timeout if http_client is not None else None,
        )
        self._setup_http(http_client)

    async def context(
        self,
        context_id: str,
        *,
        budget: int | None = None,
        trigger: float | None = None,
        policy: Policy | Strategy | str | None = None,
        metadata: Mapping[str, Any] | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> AsyncContext:
        """A handle on the context ``context_id`` (see :meth:`Fastpaca.context`)."""
        info: ContextInfo | None = None
        if _has_options(budget, trigger, policy, metadata, tokenizer):
            call = put_context_call(
                context_id,
                budget=budget,
                trigger=trigger,
                policy=policy,
                metadata=metadata,
                tokenizer=tokenizer,
            )
            info = await self._send(call)
        return AsyncContext(self, context_id, info)

    async def delete_context(self, context_id: str, *, purge: bool = False) -> ContextInfo:
        """Tombstone a context; with ``purge=True`` (an ``admin`` key), erase it too."""
        return await self._send(delete_context_call(context_id, purge=purge))

    async def list_contexts(
        self,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        order: ListOrder | None = None,
        prefix: str | None = None,
        q: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        status: ListStatus | None = None,
    ) -> ContextPage:
        """One page of contexts (see :meth:`Fastpaca.list_contexts`)."""
        call = list_contexts_call(
            limit=limit,
            cursor=cursor,
            order=order,
            prefix=prefix,
            q=q,
            metadata=metadata,
            status=status,
        )
        return await self._send(call)

    async def iter_contexts(
        self,
        *,
        order: ListOrder | None = None,
        prefix: str | None = None,
        q: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        status: ListStatus | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[ContextInfo]:
        """Every context that matches, page by page (see :meth:`Fastpaca.list_contexts`)."""
        cursor: str | None = None
        while True:
            page = await self.list_contexts(
                limit=page_size,
                cursor=cursor,
                order=order,
                prefix=prefix,
                q=q,
                metadata=metadata,
                status=status,
            )
            for item in page:
                yield item
            if not page.has_more or page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def cluster(self) -> ClusterInfo:
        """The server's view of its cluster (see :meth:`Fastpaca.cluster`)."""
        return await self._send(cluster_call())

    async def __aenter__(self) -> AsyncFastpaca:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncFastpaca(base_url={self.base_url!r})"
