"""One context (conversation): :class:`Context` and its async twin :class:`AsyncContext`.

Both build their requests with :class:`_ContextRequests`, so a route's path,
parameters and parsing live in one place; the twins only send them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, overload
from urllib.parse import quote

import httpx

from . import _base_client
from ._base_client import Call, decode_json, retry_delay
from ._events import EventFeed, SSEDecoder
from ._exceptions import APIConnectionError
from ._export import ExportProgress, LineSplitter, parse_line
from ._stream import (
    AsyncContextStream,
    AsyncStreamFunction,
    ChunkT,
    ContextStream,
    OnAbandon,
    StreamAccumulator,
    StreamFunction,
)
from ._types import (
    AnthropicWindow,
    AppendResult,
    ClusterInfo,
    CompactionPage,
    CompactionRecord,
    CompactResult,
    ContextInfo,
    ContextPage,
    Event,
    MessageInput,
    MessagePage,
    OpenAIWindow,
    Policy,
    Preview,
    StoredMessage,
    Strategy,
    Tokenizer,
    Window,
    WindowFormat,
)

if TYPE_CHECKING:
    from ._client import AsyncFastpaca, Fastpaca

__all__ = ["AsyncContext", "Context"]

TAIL_LIMIT = 100
"""``GET …/tail`` page size when none is given (the server's and the original's default)."""
MESSAGES_LIMIT = 50
"""``GET …/messages`` page size when none is given (the server's default)."""
HISTORY_PAGE_SIZE = 1000
"""Page size ``iter_history`` and ``iter_compactions`` read with (the server's maximum)."""
COMPACTIONS_LIMIT = 50
"""``GET …/compactions`` page size when none is given (the server's default)."""


def new_idempotency_key() -> str:
    """A fresh idempotency key for a write the caller gave none for."""
    return f"fp-{uuid.uuid4().hex}"


def context_path(context_id: str, suffix: str = "") -> str:
    """``/v1/contexts/{id}{suffix}``, the id percent-encoded."""
    return f"/v1/contexts/{quote(context_id, safe='')}{suffix}"


def _replayed(response: httpx.Response) -> bool:
    return str(response.headers.get("idempotent-replayed", "")).lower() == "true"


def _parse_context(response: httpx.Response) -> ContextInfo:
    return ContextInfo.from_json(decode_json(response))


def _parse_append(response: httpx.Response) -> AppendResult:
    return AppendResult.from_json(decode_json(response), replayed=_replayed(response))


def _parse_compact(response: httpx.Response) -> CompactResult:
    return CompactResult.from_json(decode_json(response), replayed=_replayed(response))


AnyWindow = Window | OpenAIWindow | AnthropicWindow


def _parse_window(response: httpx.Response) -> AnyWindow:
    body = decode_json(response)
    if body.get("format") == "openai":
        return OpenAIWindow.from_json(body)
    if body.get("format") == "anthropic":
        return AnthropicWindow.from_json(body)
    return Window.from_json(body)


def _parse_page(response: httpx.Response) -> MessagePage:
    return MessagePage.from_json(decode_json(response))


def _parse_compactions(response: httpx.Response) -> CompactionPage:
    return CompactionPage.from_json(decode_json(response))


def _parse_preview(response: httpx.Response) -> Preview:
    return Preview.from_json(decode_json(response))


def _policy_body(policy: Policy | Strategy | str | None) -> Policy | None:
    """A policy as sent: a bare strategy name becomes ``{"strategy": name}``."""
    if isinstance(policy, str):
        return {"strategy": policy}
    return policy


def _without_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


def _with_token_count(message: MessageInput, token_count: int | None) -> dict[str, Any]:
    body = dict(message)
    if token_count is not None:
        body["token_count"] = token_count
    return body


def put_context_call(
    context_id: str,
    *,
    budget: int | None,
    trigger: float | None,
    policy: Policy | Strategy | str | None,
    metadata: Mapping[str, Any] | None,
    tokenizer: Tokenizer | None,
) -> Call[ContextInfo]:
    """``PUT /v1/contexts/{id}``: the config is replaced as a whole (see docs/api.md)."""
    body = _without_none(
        {
            "token_budget": budget,
            "trigger_ratio": trigger,
            "policy": _policy_body(policy),
            "tokenizer": tokenizer,
            "metadata": dict(metadata) if metadata is not None else None,
        }
    )
    return Call("PUT", context_path(context_id), _parse_context, json=body)


def cluster_call() -> Call[ClusterInfo]:
    """``GET /v1/cluster``: the server's view of its cluster."""
    return Call("GET", "/v1/cluster", lambda response: ClusterInfo.from_json(decode_json(response)))


ListOrder = Literal["id", "recent"]
ListStatus = Literal["active", "tombstoned", "purged", "all"]


def _filter_value(value: Any) -> str:
    """A metadata filter's value as the server compares it: a string as is,
    anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def list_contexts_call(
    *,
    limit: int | None,
    cursor: str | None,
    order: ListOrder | None,
    prefix: str | None,
    q: str | None,
    metadata: Mapping[str, Any] | None,
    status: ListStatus | None,
) -> Call[ContextPage]:
    """``GET /v1/contexts``: a page of contexts, filtered."""
    params: dict[str, int | str] = _without_none(
        {"limit": limit, "cursor": cursor, "order": order, "prefix": prefix, "q": q}
    )
    if status is not None:
        params["status"] = status
    for key, value in (metadata or {}).items():
        params[f"metadata.{key}"] = _filter_value(value)
    return Call(
        "GET", "/v1/contexts", lambda response: ContextPage.from_json(decode_json(response)), params
    )


def delete_context_call(context_id: str, *, purge: bool = False) -> Call[ContextInfo]:
    """``DELETE /v1/contexts/{id}``: tombstone; with ``purge``, erase as well."""
    params: dict[str, int | str] = {"purge": "true"} if purge else {}
    return Call("DELETE", context_path(context_id), _parse_context, params=params)


class _ContextRequests:
    """The requests of one context's routes, shared by the sync and async twins."""

    id: str

    def _get_call(self) -> Call[ContextInfo]:
        return Call("GET", context_path(self.id), _parse_context)

    def _append_call(
        self,
        messages: list[dict[str, Any]],
        *,
        single: bool,
        if_version: int | None,
        idempotency_key: str | None,
    ) -> Call[AppendResult]:
        body: dict[str, Any] = {"message": messages[0]} if single else {"messages": messages}
        body["idempotency_key"] = idempotency_key or new_idempotency_key()
        if if_version is not None:
            body["if_version"] = if_version
        return Call("POST", context_path(self.id, "/messages"), _parse_append, json=body)

    def _window_call(
        self, budget_tokens: int | None, if_version: int | None, format: WindowFormat = "ui"
    ) -> Call[AnyWindow]:
        params: dict[str, Any] = _without_none(
            {"budget_tokens": budget_tokens, "if_version": if_version}
        )
        if format != "ui":  # the default is not sent: a plain read stays as it was
            params["format"] = format
        return Call("GET", context_path(self.id, "/context"), _parse_window, params=params)

    def _compact_call(
        self,
        messages: Iterable[Mapping[str, Any]],
        if_version: int | None,
        idempotency_key: str | None,
    ) -> Call[CompactResult]:
        body: dict[str, Any] = {
            "replacement": [dict(message) for message in messages],
            "idempotency_key": idempotency_key or new_idempotency_key(),
        }
        if if_version is not None:
            body["if_version"] = if_version
        return Call("POST", context_path(self.id, "/compact"), _parse_compact, json=body)

    def _tail_call(self, offset: int, limit: int) -> Call[MessagePage]:
        params = {"offset": offset, "limit": limit}
        return Call("GET", context_path(self.id, "/tail"), _parse_page, params=params)

    def _messages_call(
        self, after_seq: int, before_seq: int | None, limit: int
    ) -> Call[MessagePage]:
        params = _without_none({"after_seq": after_seq, "before_seq": before_seq, "limit": limit})
        return Call("GET", context_path(self.id, "/messages"), _parse_page, params=params)

    def _compactions_call(self, after: int, limit: int) -> Call[CompactionPage]:
        params = {"after": after, "limit": limit}
        return Call("GET", context_path(self.id, "/compactions"), _parse_compactions, params=params)

    def _preview_call(
        self,
        token_budget: int | None,
        trigger_ratio: float | None,
        policy: Policy | Strategy | str | None,
        tokenizer: Tokenizer | None,
    ) -> Call[Preview]:
        body = _without_none(
            {
                "token_budget": token_budget,
                "trigger_ratio": trigger_ratio,
                "policy": _policy_body(policy),
                "tokenizer": tokenizer,
            }
        )
        return Call("POST", context_path(self.id, "/preview"), _parse_preview, json=body)

    def _redact_call(self, seq: int) -> Call[ContextInfo]:
        return Call("POST", context_path(self.id, f"/messages/{int(seq)}/redact"), _parse_context)

    def _patch_metadata_call(
        self, patch: Mapping[str, Any], if_version: int | None
    ) -> Call[ContextInfo]:
        body: dict[str, Any] = {"metadata": dict(patch)}
        if if_version is not None:
            body["if_version"] = if_version
        return Call("PATCH", context_path(self.id, "/metadata"), _parse_context, json=body)

    def _events_call(self, cursor: int | None, include_messages: bool = True) -> Call[None]:
        params: dict[str, Any] = _without_none({"cursor": cursor})
        if not include_messages:
            params["include_messages"] = "false"
        return Call(
            "GET",
            context_path(self.id, "/events"),
            lambda response: None,
            params=params,
            headers={"Accept": "text/event-stream"},
            timeout=httpx.Timeout(30.0, read=None),
        )

    def _export_call(self) -> Call[None]:
        return Call(
            "GET",
            context_path(self.id, "/export"),
            lambda response: None,
            headers={"Accept": "application/x-ndjson"},
        )

    def _export_lost(
        self, progress: ExportProgress, error: httpx.TransportError
    ) -> APIConnectionError:
        return APIConnectionError(
            f"The export of context {self.id!r} kept breaking off ({error}) after"
            f" {progress.handed_out} messages.",
            request=error.request,
        )

    def _events_lost(
        self, feed: EventFeed, error: httpx.TransportError | None, request: httpx.Request
    ) -> APIConnectionError:
        why = feed.ended_by_server.get("message") if feed.ended_by_server else None
        return APIConnectionError(
            f"The event feed of context {self.id!r} kept ending without a new version"
            f" ({why or error or 'closed by the server'}); resume with cursor={feed.cursor}.",
            request=error.request if error is not None else request,
        )

    @staticmethod
    def _check_single(message: MessageInput) -> None:
        if not isinstance(message, Mapping):
            raise TypeError(
                "append takes one message (a mapping with role and parts); "
                "use append_many for a list"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r})"


class Context(_ContextRequests):
    """One conversation on a :class:`~fastpaca.Fastpaca` client.

    Get one with ``client.context(id, …)``. Every method is one request (paging
    helpers page), retried as the client is configured.
    """

    def __init__(self, client: Fastpaca, context_id: str, info: ContextInfo | None = None) -> None:
        self._client = client
        self.id = context_id
        self.info = info
        """The context as the PUT of ``client.context(id, …)`` answered (``None`` without one)."""

    def get(self) -> ContextInfo:
        """The context's config, metadata, status, version and counts."""
        return self._client._send(self._get_call())

    def append(
        self,
        message: MessageInput,
        *,
        token_count: int | None = None,
        if_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        """Append one message to the log (and the window).

        Args:
            message: ``{"role": …, "parts": [...]}`` with optional ``id``, ``metadata``.
            token_count: store this count instead of the server's (verbatim).
            if_version: refuse (:class:`~fastpaca.ConflictError`) unless the context is
                at this version.
            idempotency_key: generated when not given; retries reuse it, so the
                message is stored once.

        Returns:
            ``seq``, ``version`` and ``token_estimate`` of the stored message, and the
            window's state after the append.
        """
        self._check_single(message)
        body = _with_token_count(message, token_count)
        call = self._append_call(
            [body], single=True, if_version=if_version, idempotency_key=idempotency_key
        )
        return self._client._send(call)

    def append_many(
        self,
        messages: Iterable[MessageInput],
        *,
        if_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        """Append a batch atomically (1 to 1,000 messages): all are stored, or none."""
        bodies = [dict(message) for message in messages]
        call = self._append_call(
            bodies, single=False, if_version=if_version, idempotency_key=idempotency_key
        )
        return self._client._send(call)

    @overload
    def context(
        self,
        *,
        budget_tokens: int | None = None,
        if_version: int | None = None,
        format: Literal["ui"] = "ui",
    ) -> Window: ...
    @overload
    def context(
        self,
        *,
        budget_tokens: int | None = None,
        if_version: int | None = None,
        format: Literal["openai"],
    ) -> OpenAIWindow: ...
    @overload
    def context(
        self,
        *,
        budget_tokens: int | None = None,
        if_version: int | None = None,
        format: Literal["anthropic"],
    ) -> AnthropicWindow: ...
    def context(
        self,
        *,
        budget_tokens: int | None = None,
        if_version: int | None = None,
        format: WindowFormat = "ui",
    ) -> AnyWindow:
        """The LLM window: the messages for the next model call, with its ``version``.

        Args:
            budget_tokens: trim a copy of the window to this many tokens (this
                response only).
            if_version: refuse unless the context is at this version.
            format: ``"ui"`` (the default): a :class:`Window` of the stored
                messages. ``"openai"``: an :class:`OpenAIWindow` whose ``messages``
                are Chat Completions messages. ``"anthropic"``: an
                :class:`AnthropicWindow` with the Messages API ``system`` and
                ``messages``. The server converts (after trimming), as
                ``fastpaca-openai`` and ``fastpaca-anthropic`` do.
        """
        return self._client._send(self._window_call(budget_tokens, if_version, format))

    def compact(
        self,
        messages: Iterable[Mapping[str, Any]],
        *,
        if_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> CompactResult:
        """Replace the window with ``messages``; the log is untouched.

        A message as read from :meth:`context` (with its ``seq``) keeps that log
        message; a message without ``seq`` is new (a summary, say). Include your
        system prompt: pinned messages are not carried over.
        """
        return self._client._send(self._compact_call(messages, if_version, idempotency_key))

    def tail(self, *, offset: int = 0, limit: int = TAIL_LIMIT) -> MessagePage:
        """A page of the newest messages, oldest first: the ``limit`` messages before
        the newest ``offset``. ``page.has_more`` says whether older ones exist."""
        return self._client._send(self._tail_call(offset, limit))

    def messages(
        self, *, after_seq: int = 0, before_seq: int | None = None, limit: int = MESSAGES_LIMIT
    ) -> MessagePage:
        """Messages with ``after_seq < seq < before_seq``, oldest first, at most ``limit``."""
        return self._client._send(self._messages_call(after_seq, before_seq, limit))

    def iter_history(self, *, after_seq: int = 0) -> Iterator[StoredMessage]:
        """Every message of the log after ``after_seq``, oldest first, page by page."""
        while True:
            page = self.messages(after_seq=after_seq, limit=HISTORY_PAGE_SIZE)
            yield from page
            if not page.has_more or not page:
                return
            after_seq = page[-1]["seq"] or after_seq

    def export(self) -> Iterator[StoredMessage]:
        """The whole history, oldest first, streamed (``GET …/export``).

        Every message from seq 1 to the newest one when the export started, each
        as :meth:`messages` returns it, read line by line as the server sends
        them (the archive's part included), so the history is never held in
        memory at once. A download that breaks off is started again, skipping
        the messages already yielded (``max_retries`` times in a row without a
        new message, then :class:`~fastpaca.APIConnectionError`). While the
        server's archive is down it answers 503 ``archive_unavailable``
        (retried, then :class:`~fastpaca.ServiceUnavailableError`).
        """
        for line in self.export_lines():
            yield parse_line(line)

    def export_lines(self) -> Iterator[str]:
        """The lines of :meth:`export` as the server sent them: one JSON object per
        line, without its ``\\n``. ``"".join(line + "\\n" for line in
        ctx.export_lines())`` is the server's JSON Lines file, byte for byte once
        encoded as UTF-8."""
        progress, failures, call = ExportProgress(), 0, self._export_call()
        while True:
            before = progress.handed_out
            try:
                with self._client._open(call, stream=True) as response:
                    progress.start()
                    splitter = LineSplitter()
                    for chunk in response.iter_bytes():
                        for line in splitter.feed(chunk):
                            if progress.is_new():
                                yield line
                    for line in splitter.finish():
                        if progress.is_new():
                            yield line
                    return
            except httpx.TransportError as lost:
                failures = 0 if progress.handed_out > before else failures + 1
                if failures > self._client.max_retries:
                    raise self._export_lost(progress, lost) from lost
            _base_client._sleep(retry_delay(max(failures - 1, 0), None))

    def compactions(self, *, after: int = 0, limit: int = COMPACTIONS_LIMIT) -> CompactionPage:
        """Why messages left the window: the compaction records numbered above ``after``,
        oldest first, at most ``limit``. ``page.compactions`` counts every compaction
        (the server keeps the newest 100 records); ``page.has_more`` says whether more
        records follow."""
        return self._client._send(self._compactions_call(after, limit))

    def iter_compactions(self, *, after: int = 0) -> Iterator[CompactionRecord]:
        """Every compaction record numbered above ``after``, oldest first, page by page."""
        while True:
            page = self.compactions(after=after, limit=HISTORY_PAGE_SIZE)
            yield from page
            if not page.has_more or not page:
                return
            after = page[-1].number

    def preview(
        self,
        *,
        token_budget: int | None = None,
        trigger_ratio: float | None = None,
        policy: Policy | Strategy | str | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> Preview:
        """The window the context would have under another config; nothing changes.

        The log is run through the policy from the start, as if the config (the
        context's own for what is left out) had always been in force; compactions
        sent with :meth:`compact` and summaries are not replayed. ``policy`` is
        ``{"strategy": …, "config": {…}}`` or a strategy name.
        """
        call = self._preview_call(token_budget, trigger_ratio, policy, tokenizer)
        return self._client._send(call)

    def metadata(self) -> dict[str, Any]:
        """The context's metadata."""
        return self.get().metadata

    def update_metadata(
        self, patch: Mapping[str, Any], *, if_version: int | None = None
    ) -> ContextInfo:
        """Merge ``patch`` into the metadata (RFC 7396: ``None`` removes a key)."""
        return self._client._send(self._patch_metadata_call(patch, if_version))

    def delete(self, *, purge: bool = False) -> ContextInfo:
        """Tombstone the context: history stays readable, writes get 409.

        With ``purge=True`` (an ``admin`` key) the context is also erased: its
        messages, window and metadata are gone, from the server's disk and
        archive too; the id stays taken (``status`` ``purged``).
        """
        return self._client._send(delete_context_call(self.id, purge=purge))

    def redact(self, seq: int) -> ContextInfo:
        """Erase message ``seq``'s content (an ``admin`` key): its parts become
        ``[{"type": "redacted"}]``; its seq, id, role, metadata and place stay.
        Redacting it again changes nothing."""
        return self._client._send(self._redact_call(seq))

    def events(
        self, *, cursor: int | None = None, include_messages: bool = True
    ) -> Iterator[Event]:
        """The context's events after ``cursor`` (a version; all by default), then live.

        Each version comes whole: a batch append's ``message`` events, then its
        ``context`` event. When the connection drops, or the server ends it
        (a slow consumer, a shutdown), the iterator reconnects after the last
        version it yielded, so nothing is missed or repeated (``max_retries``
        reconnections in a row without a new version, then
        :class:`~fastpaca.APIConnectionError`). A ``gap`` event means older
        versions are no longer kept by the server: re-read what you need.
        The iterator ends after ``tombstoned``. A missing context raises
        :class:`~fastpaca.NotFoundError`.
        """
        feed = EventFeed(cursor)
        failures = 0
        while True:
            progressed, error = False, None
            call = self._events_call(feed.cursor, include_messages)
            http = self._client._http
            feed.ended_by_server = None
            try:
                with self._client._open(call, stream=True) as response:
                    decoder = SSEDecoder()
                    for text in response.iter_text():
                        for message in decoder.feed_text(text):
                            for event in feed.take(message):
                                progressed = True
                                yield event
                            if feed.done:
                                return
            except httpx.TransportError as lost:
                error = lost
            feed.reset()
            failures = 0 if progressed else failures + 1
            if failures > self._client.max_retries:
                raise self._events_lost(feed, error, self._client._build_request(http, call))
            _base_client._sleep(retry_delay(max(failures - 1, 0), None))

    def stream(
        self,
        fn: StreamFunction[ChunkT],
        *,
        accumulator: StreamAccumulator | None = None,
        budget_tokens: int | None = None,
        if_unchanged: bool = False,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        on_abandon: OnAbandon = "discard",
    ) -> ContextStream[ChunkT]:
        """Read the window, call ``fn(messages)``, and pass the model's stream through.

        Iterate the returned stream for the model's own chunks. When the model's
        stream ends normally the assembled assistant message (text, tool calls,
        reasoning) is appended once, with the provider's completion-token count
        when the stream reports usage; ``stream.result`` then holds the append's
        result. If the call or the stream raises, nothing is appended. See
        :mod:`fastpaca._stream` for abandoned streams.

        Args:
            fn: gets the window's messages, returns the model's stream (e.g.
                ``lambda messages: openai.chat.completions.create(…, stream=True)``).
            accumulator: how to assemble the chunks; chosen from the first chunk
                when not given.
            budget_tokens: read the window trimmed to this many tokens.
            if_unchanged: append only if nothing else wrote to the context since the
                window was read (``if_version`` = the window's version); a
                :class:`~fastpaca.ConflictError` otherwise.
            idempotency_key: the append's key (generated when not given).
            metadata: metadata for the appended message.
            on_abandon: ``"discard"`` (default) or ``"append_partial"``.
        """
        window = self.context(budget_tokens=budget_tokens)
        source = fn(window.messages)
        return ContextStream(
            context=self,
            window=window,
            source=source,
            accumulator=accumulator,
            if_version=window.version if if_unchanged else None,
            idempotency_key=idempotency_key or new_idempotency_key(),
            metadata=metadata,
            on_abandon=on_abandon,
        )


class AsyncContext(_ContextRequests):
    """The async twin of :class:`Context`, on an :class:`~fastpaca.AsyncFastpaca` client."""

    def __init__(
        self, client: AsyncFastpaca, context_id: str, info: ContextInfo | None = None
    ) -> None:
        self._client = client
        self.id = context_id
        self.info = info
        """The context as the PUT of ``client.context(id, …)`` answered (``None`` without one)."""

    async def get(self) -> ContextInfo:
        """The context's config, metadata, status, version and counts."""
        return await self._client._send(self._get_call())

    async def append(
        self,
        message: MessageInput,
        *,
        token_count: int | None = None,
        if_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        """Append one message (see :meth:`Context.append`)."""
        self._check_single(message)
        body = _with_token_count(message, token_count)
        call = self._append_call(
            [body], single=True, if_version=if_version, idempotency_key=idempotency_key
        )
        return await self._client._send(call)

    async def append_many(
        self,
        messages: Iterable[MessageInput],
        *,
        if_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        """Append a batch atomically (see :meth:`Context.append_many`)."""
        bodies = [dict(message) for message in messages]
        call = self._append_call(
            bodies, single=False, if_version=if_version, idempotency_key=idempotency_key
        )
        return await self._client._send(call)

    @overload
    async def context(
        self,
        *,
        budget_tokens: int | None = None,
        if_version: int | None = None,
        format: Literal["ui"] = "ui",
    ) -> Window: ...
    @overload
    async def context(
        self,
        *,
        budget_tokens: int | None = None,
        if_version: int | None = None,
        format: Literal["openai"],
    ) -> OpenAIWindow: ...
    @overload
    async def context(
        self,
        *,
        budget_tokens: int | None = None,
        if_version: int | None = None,
        format: Literal["anthropic"],
    ) -> AnthropicWindow: ...
    async def context(
        self,
        *,
        budget_tokens: int | None = None,
        if_version: int | None = None,
        format: WindowFormat = "ui",
    ) -> AnyWindow:
        """The LLM window (see :meth:`Context.context`)."""
        return await self._client._send(self._window_call(budget_tokens, if_version, format))

    async def compact(
        self,
        messages: Iterable[Mapping[str, Any]],
        *,
        if_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> CompactResult:
        """Replace the window (see :meth:`Context.compact`)."""
        return await self._client._send(self._compact_call(messages, if_version, idempotency_key))

    async def tail(self, *, offset: int = 0, limit: int = TAIL_LIMIT) -> MessagePage:
        """A page of the newest messages, oldest first (see :meth:`Context.tail`)."""
        return await self._client._send(self._tail_call(offset, limit))

    async def messages(
        self, *, after_seq: int = 0, before_seq: int | None = None, limit: int = MESSAGES_LIMIT
    ) -> MessagePage:
        """Messages by seq range (see :meth:`Context.messages`)."""
        return await self._client._send(self._messages_call(after_seq, before_seq, limit))

    async def iter_history(self, *, after_seq: int = 0) -> AsyncIterator[StoredMessage]:
        """Every message of the log after ``after_seq``, oldest first, page by page."""
        while True:
            page = await self.messages(after_seq=after_seq, limit=HISTORY_PAGE_SIZE)
            for message in page:
                yield message
            if not page.has_more or not page:
                return
            after_seq = page[-1]["seq"] or after_seq

    async def export(self) -> AsyncIterator[StoredMessage]:
        """The whole history, oldest first, streamed (see :meth:`Context.export`):
        ``async for message in ctx.export()``."""
        async for line in self.export_lines():
            yield parse_line(line)

    async def export_lines(self) -> AsyncIterator[str]:
        """The lines of :meth:`export` as the server sent them (see
        :meth:`Context.export_lines`)."""
        progress, failures, call = ExportProgress(), 0, self._export_call()
        while True:
            before = progress.handed_out
            try:
                async with self._client._open(call, stream=True) as response:
                    progress.start()
                    splitter = LineSplitter()
                    async for chunk in response.aiter_bytes():
                        for line in splitter.feed(chunk):
                            if progress.is_new():
                                yield line
                    for line in splitter.finish():
                        if progress.is_new():
                            yield line
                    return
            except httpx.TransportError as lost:
                failures = 0 if progress.handed_out > before else failures + 1
                if failures > self._client.max_retries:
                    raise self._export_lost(progress, lost) from lost
            await _base_client._async_sleep(retry_delay(max(failures - 1, 0), None))

    async def compactions(
        self, *, after: int = 0, limit: int = COMPACTIONS_LIMIT
    ) -> CompactionPage:
        """Compaction records by number (see :meth:`Context.compactions`)."""
        return await self._client._send(self._compactions_call(after, limit))

    async def iter_compactions(self, *, after: int = 0) -> AsyncIterator[CompactionRecord]:
        """Every compaction record numbered above ``after``, oldest first, page by page."""
        while True:
            page = await self.compactions(after=after, limit=HISTORY_PAGE_SIZE)
            for record in page:
                yield record
            if not page.has_more or not page:
                return
            after = page[-1].number

    async def preview(
        self,
        *,
        token_budget: int | None = None,
        trigger_ratio: float | None = None,
        policy: Policy | Strategy | str | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> Preview:
        """The window under another config (see :meth:`Context.preview`)."""
        call = self._preview_call(token_budget, trigger_ratio, policy, tokenizer)
        return await self._client._send(call)

    async def metadata(self) -> dict[str, Any]:
        """The context's metadata."""
        return (await self.get()).metadata

    async def update_metadata(
        self, patch: Mapping[str, Any], *, if_version: int | None = None
    ) -> ContextInfo:
        """Merge ``patch`` into the metadata (RFC 7396)."""
        return await self._client._send(self._patch_metadata_call(patch, if_version))

    async def delete(self, *, purge: bool = False) -> ContextInfo:
        """Tombstone the context; with ``purge=True`` (an ``admin`` key), erase it too."""
        return await self._client._send(delete_context_call(self.id, purge=purge))

    async def redact(self, seq: int) -> ContextInfo:
        """Erase message ``seq``'s content (an ``admin`` key): its parts become
        ``[{"type": "redacted"}]``."""
        return await self._client._send(self._redact_call(seq))

    async def events(
        self, *, cursor: int | None = None, include_messages: bool = True
    ) -> AsyncIterator[Event]:
        """The context's events after ``cursor``, then live (see :meth:`Context.events`)."""
        feed = EventFeed(cursor)
        failures = 0
        while True:
            progressed, error = False, None
            call = self._events_call(feed.cursor, include_messages)
            http = self._client._http
            feed.ended_by_server = None
            try:
                async with self._client._open(call, stream=True) as response:
                    decoder = SSEDecoder()
                    async for text in response.aiter_text():
                        for message in decoder.feed_text(text):
                            for event in feed.take(message):
                                progressed = True
                                yield event
                            if feed.done:
                                return
            except httpx.TransportError as lost:
                error = lost
            feed.reset()
            failures = 0 if progressed else failures + 1
            if failures > self._client.max_retries:
                raise self._events_lost(feed, error, self._client._build_request(http, call))
            await _base_client._async_sleep(retry_delay(max(failures - 1, 0), None))

    async def stream(
        self,
        fn: AsyncStreamFunction[ChunkT],
        *,
        accumulator: StreamAccumulator | None = None,
        budget_tokens: int | None = None,
        if_unchanged: bool = False,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        on_abandon: OnAbandon = "discard",
    ) -> AsyncContextStream[ChunkT]:
        """Read the window, call (and await) ``fn(messages)``, pass the stream through
        (see :meth:`Context.stream`): ``stream = await ctx.stream(fn)``, then
        ``async for chunk in stream``."""
        window = await self.context(budget_tokens=budget_tokens)
        stream: AsyncContextStream[ChunkT] = AsyncContextStream(
            context=self,
            window=window,
            accumulator=accumulator,
            if_version=window.version if if_unchanged else None,
            idempotency_key=idempotency_key or new_idempotency_key(),
            metadata=metadata,
            on_abandon=on_abandon,
        )
        await stream._start(fn(window.messages))
        return stream
