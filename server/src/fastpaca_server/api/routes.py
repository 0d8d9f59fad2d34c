"""HTTP handlers: parse → call → render. No domain logic lives here."""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Literal, TypeVar

import attrs
from aiohttp import web
from multidict import MultiDict, MultiMapping

from .. import tokens
from ..access import ApiKey
from ..archive.store import ArchiveStore, ArchiveUnavailable
from ..core import (
    AppendMessages,
    Compact,
    Conflict,
    DomainError,
    InvalidInput,
    MessageInput,
    NotFound,
    PatchMetadata,
    Purge,
    PutContext,
    Redact,
    Tombstone,
    formats,
    listing,
)
from ..core import window as windows
from ..core.models import (
    DEFAULT_PLACEHOLDER,
    MAX_TOKEN_BUDGET,
    REDACTED_PART,
    AppendedMessage,
    AppendResult,
    CompactResult,
    ContextConfig,
    JSONObject,
    KeptMessage,
    Policy,
    content_digest,
    raw_seq,
    redacted_raw,
)
from ..core.preview import preview
from ..core.state import ContextView, check_version, window_within
from ..replication import ReplicatedStore
from ..tokens import count_parts
from . import render, tenancy, validation
from .keys import ACCESS, ARCHIVE, CONFIG, CUSTOM, METRICS, STORE
from .startup import NotReady

routes = web.RouteTableDef()

_OFFLOAD_BYTES = 64 * 1024  # count tokens of larger bodies off the event loop
_T = TypeVar("_T")
_INLINE_RENDER_MESSAGES = 500  # larger windows render off the event loop


def _now_ms() -> int:
    return int(time.time() * 1000)


def _store(request: web.Request, context_id: str) -> ReplicatedStore:
    """The Raft group of ``context_id`` (NotReady, 503, until the node has replayed)."""
    return request.app[STORE].get().for_context(context_id)


def _context_id(request: web.Request) -> str:
    return validation.context_id(request.match_info["context_id"])


async def _body(request: web.Request) -> JSONObject:
    """The JSON body of a write; write routes take no query parameters."""
    validation.query(request.query, {}, {})
    return validation.json_body(await request.read())


async def _synced(request: web.Request, context_id: str) -> ReplicatedStore:
    """The group of ``context_id``, once it has applied every write acknowledged
    before this request (on any node of a cluster: see :meth:`ReplicatedStore.sync`)."""
    store = _store(request, context_id)
    await store.sync()
    return store


async def _admit(
    request: web.Request,
    context_id: str,
    key: str | None,
    normalised: JSONObject,
    if_version: int | None,
) -> tuple[str, str | None]:
    """Refuse early what the state machine would refuse anyway; return the
    context's tokenizer and the request's idempotency fingerprint.

    A cluster node may lag behind the leader (a context just created through
    another node, a version already reached there): before refusing, it
    catches up and checks again.
    """
    fingerprint = validation.fingerprint(normalised) if key is not None else None
    store = _store(request, context_id)

    def check() -> str:
        with store.read() as machine:
            context = machine.admission_check(context_id, key, fingerprint, if_version)
            return context.config.tokenizer

    try:
        return check(), fingerprint
    except DomainError:
        if store.cluster is None:
            raise
    await store.sync()
    return check(), fingerprint


def _message_input(item: JSONObject, tokenizer: str) -> MessageInput:
    counted, per_part = count_parts(item["parts"], tokenizer)
    return MessageInput(
        id=item.get("id") or f"msg_{uuid.uuid4().hex}",
        role=item["role"],
        parts=item["parts"],
        metadata=item.get("metadata"),
        token_count=item.get("token_count", counted),
        part_tokens=per_part,
    )


def _replacement_item(item: JSONObject, tokenizer: str) -> MessageInput | KeptMessage:
    if "seq" in item:
        digest = content_digest(item["role"], item["parts"], item.get("metadata"))
        return KeptMessage(seq=item["seq"], digest=digest, id=item.get("id"))
    return _message_input(item, tokenizer)


async def _counted(request: web.Request, tokenizer: str, count: Callable[[], _T]) -> _T:
    """Run ``count`` (token counting) here, or on a worker thread for large bodies
    and while the tokenizer is still loading (never stall the event loop)."""
    if (request.content_length or 0) < _OFFLOAD_BYTES and tokens.is_loaded(tokenizer):
        return count()
    return await asyncio.get_running_loop().run_in_executor(None, count)


# --- contexts ---------------------------------------------------------------


def _stamp_frames(config: ContextConfig) -> ContextConfig:
    """The config with each ``strip_tool_results`` step's placeholder frames counted
    (the tokens of a cleared tool output, which the state machine cannot count)."""

    def stamped(step: JSONObject) -> JSONObject:
        placeholder = str(step.get("placeholder", DEFAULT_PLACEHOLDER))
        frames = {
            kind: tokens.count_part(windows.frame_part(kind, placeholder), config.tokenizer)
            for kind in windows.FRAME_KINDS
        }
        return {**step, "frames": frames}

    policy = config.policy
    if policy.strategy == "strip_tool_results":
        policy = Policy(policy.strategy, stamped(policy.config))
    elif policy.strategy == "pipeline":
        steps = [
            {**s, "config": stamped(s["config"])} if s["strategy"] == "strip_tool_results" else s
            for s in policy.config["steps"]
        ]
        policy = Policy(policy.strategy, {**policy.config, "steps": steps})
    return attrs.evolve(config, policy=policy)


@routes.get("/v1/contexts")
async def list_contexts(request: web.Request) -> web.Response:
    """A page of contexts, filtered, in id order or newest activity first."""
    query = validation.list_query(request.query)
    key = tenancy.request_key(request)
    if key is not None and key.tenant is not None:  # a tenant's key lists its namespace only
        query = listing.within(query, f"{key.tenant}:")
    stores = request.app[STORE].get().stores
    await asyncio.gather(*(store.sync() for store in stores))

    def scan() -> list[list[ContextView]]:
        """Each group's page. The lock is held to copy the group's contexts and to
        take the chosen ones' views, not while filtering (about 0.5 µs a context):
        writes wait for neither the scan nor the event loop."""
        pages = []
        for store in stores:
            with store.read() as machine:
                contexts = list(machine.contexts.values())
            found = listing.select(contexts, query, query.limit + 1)
            with store.read():
                pages.append([context.view() for context in found])
        return pages

    pages = await asyncio.get_running_loop().run_in_executor(None, scan)
    chosen = listing.merge(pages, query.order, query.limit + 1)
    shown, has_more = chosen[: query.limit], len(chosen) > query.limit
    cursor = (
        listing.encode_cursor(query.order, listing.key(shown[-1], query.order))
        if has_more
        else None
    )
    return web.json_response(
        {
            "contexts": [render.context(view) for view in shown],
            "has_more": has_more,
            "next_cursor": cursor,
        }
    )


@routes.put("/v1/contexts/{context_id}")
async def put_context(request: web.Request) -> web.Response:
    context_id = _context_id(request)
    custom: tuple[str, ...] = request.app[CUSTOM]
    config, metadata = validation.context_config(await _body(request), custom)
    if config.policy.strategy == "summarize" and request.app[CONFIG].summarizer_model is None:
        raise InvalidInput(
            "The summarize policy needs a summarizer: start the server with "
            "--summarizer-base-url and --summarizer-model.",
            "summarizer_not_configured",
        )
    if windows.tracks_outputs(config):
        config = await _counted(request, config.tokenizer, lambda: _stamp_frames(config))
    command = PutContext(context_id, _now_ms(), config, metadata)
    key = tenancy.request_key(request)
    if key is not None and key.tenant is not None:
        view = await _put_within_quota(request, key, command)
    else:
        view = await _store(request, context_id).submit(command)
    if view.compaction is not None:
        request.app[METRICS].compactions.labels("config", config.policy.strategy).inc()
    return web.json_response(render.context(view))


async def _put_within_quota(request: web.Request, key: ApiKey, command: PutContext) -> ContextView:
    """A tenant's PUT: creating a context counts against its ``max_contexts`` (checked
    and created one at a time per tenant on this node)."""
    access = request.app[ACCESS]
    store = await _synced(request, command.context_id)
    with store.read() as machine:
        exists = command.context_id in machine.contexts
    if exists or access.limits(key).max_contexts is None:
        view: ContextView = await store.submit(command)
        return view
    async with access.creation_lock(key.tenant or ""):
        stores = request.app[STORE].get().stores
        await asyncio.gather(*(s.sync() for s in stores))
        tenancy.check_new_context(access, key, stores)
        view = await store.submit(command)
        return view


@routes.get("/v1/contexts/{context_id}")
async def get_context(request: web.Request) -> web.Response:
    context_id = _context_id(request)
    validation.query(request.query, {}, {})
    with (await _synced(request, context_id)).read() as machine:
        view = machine.get(context_id).view()
    return web.json_response(render.context(view))


@routes.get("/v1/contexts/{context_id}/compactions")
async def compactions(request: web.Request) -> web.Response:
    """The context's compaction records, oldest first, after record number ``after``."""
    context_id = _context_id(request)
    params = validation.query(
        request.query,
        {"after": (0, validation.MAX_OFFSET), "limit": (1, validation.MAX_PAGE)},
        {"after": 0, "limit": 50},
    )
    with (await _synced(request, context_id)).read() as machine:
        context = machine.get(context_id)
        records = context.compaction_records(params["after"], params["limit"] + 1)
        total = context.compactions
    body = render.compaction_page(records[: params["limit"]], len(records) > params["limit"], total)
    return web.Response(body=body, content_type="application/json", charset="utf-8")


@routes.post("/v1/contexts/{context_id}/preview")
async def preview_window(request: web.Request) -> web.Response:
    """The window the context would have under another config (nothing changes)."""
    context_id = _context_id(request)
    body = await _body(request)
    with (await _synced(request, context_id)).read() as machine:
        context = machine.get(context_id)
        current = context.config
    custom: tuple[str, ...] = request.app[CUSTOM]
    config = validation.preview_config(body, current, custom)
    if windows.tracks_outputs(config):
        config = await _counted(request, config.tokenizer, lambda: _stamp_frames(config))
    recount = None
    if config.tokenizer != current.tokenizer:
        tokenizer = config.tokenizer

        def recount(parts: list[JSONObject]) -> tuple[int, list[int]]:
            return count_parts(parts, tokenizer)

    def run() -> bytes:
        # The log only grows and messages are immutable: no lock is needed to read it.
        return render.preview(preview(context, config, recount))

    loop = asyncio.get_running_loop()
    return web.Response(
        body=await loop.run_in_executor(None, run), content_type="application/json", charset="utf-8"
    )


@routes.delete("/v1/contexts/{context_id}")
async def delete_context(request: web.Request) -> web.Response:
    """Tombstone the context; with ``purge=true`` (the ``admin`` scope) also erase it."""
    context_id = _context_id(request)
    if _purge_flag(request.query):
        key = tenancy.request_key(request)
        command: Tombstone | Purge = Purge(context_id, _now_ms(), key.name if key else None)
    else:
        command = Tombstone(context_id, _now_ms())
    view = await _store(request, context_id).submit(command)
    return web.json_response(render.context(view))


def _purge_flag(query: MultiMapping[str]) -> bool:
    """``purge`` of ``DELETE /v1/contexts/{id}``: ``true`` or ``false`` (default), once."""
    values = query.getall("purge", [])
    validation.query(MultiDict((k, v) for k, v in query.items() if k != "purge"), {}, {})
    if len(values) > 1:
        raise InvalidInput("'purge' is given more than once.")
    if not values or values[0] == "false":
        return False
    if values[0] == "true":
        return True
    raise InvalidInput("'purge' must be true or false.")


@routes.post("/v1/contexts/{context_id}/messages/{seq}/redact")
async def redact_message(request: web.Request) -> web.Response:
    """Replace one message's parts by the redaction marker (an erasure: ``admin``)."""
    context_id = _context_id(request)
    seq = _seq(request.match_info["seq"])
    validation.query(request.query, {}, {})
    store = await _synced(request, context_id)
    with store.read() as machine:
        context = machine.get(context_id)
        status, last_seq, tokenizer = context.status, context.last_seq, context.config.tokenizer
        archived = seq <= context.log_offset and seq not in context.redactions
    if status == "purged":
        raise Conflict(
            f"Context '{context_id}' is purged: its messages are already erased.",
            "context_purged",
        )
    if not 1 <= seq <= last_seq:
        raise NotFound(
            f"Context '{context_id}' has no message {seq} (its log holds seqs 1-{last_seq})."
        )
    archived_tokens = None
    if archived:  # no longer in memory: its token count is the archive's
        rows = await (await _archived(request)).read_range(context_id, seq - 1, seq + 1, 1)
        archived_tokens = int(json.loads(rows[0])["token_count"]) if rows else None
    tokens, per_part = await _counted(
        request, tokenizer, lambda: count_parts([dict(REDACTED_PART)], tokenizer)
    )
    command = Redact(context_id, _now_ms(), seq, tokens, per_part, archived_tokens)
    view = await store.submit(command)
    if view.compaction is not None:
        request.app[METRICS].compactions.labels("redact", view.config.policy.strategy).inc()
    return web.json_response(render.context(view))


def _seq(value: str) -> int:
    digits = value.isascii() and value.isdigit() and len(value) <= 13
    if not digits or not 1 <= int(value) <= validation.MAX_OFFSET:
        raise InvalidInput(f"The seq in the path must be an integer 1-{validation.MAX_OFFSET}.")
    return int(value)


def _with_redactions(raws: list[bytes], redacted: frozenset[int], tokenizer: str) -> list[bytes]:
    """Archived messages with the redactions applied that the archive writer may not
    have written yet (a redact answers before Postgres has the new row)."""
    if not redacted:
        return raws
    marker: int | None = None
    shown = []
    for raw in raws:
        if raw_seq(raw) in redacted:
            if marker is None:
                marker = count_parts([dict(REDACTED_PART)], tokenizer)[0]
            raw = redacted_raw(raw, marker)
        shown.append(raw)
    return shown


@routes.patch("/v1/contexts/{context_id}/metadata")
async def patch_metadata(request: web.Request) -> web.Response:
    context_id = _context_id(request)
    patch, if_version = validation.metadata_patch(await _body(request))
    command = PatchMetadata(context_id, _now_ms(), patch, if_version)
    view = await _store(request, context_id).submit(command)
    return web.json_response(render.context(view))


# --- messages ---------------------------------------------------------------


@routes.post("/v1/contexts/{context_id}/messages")
async def append_messages(request: web.Request) -> web.Response:
    context_id = _context_id(request)
    body = await _body(request)
    raw, key, if_version = validation.append_body(body)
    normalised = {"messages": raw, "if_version": if_version}
    tokenizer, fingerprint = await _admit(request, context_id, key, normalised, if_version)
    caller = tenancy.request_key(request)
    access = request.app[ACCESS]
    tenancy.check_message_sizes(access, caller, raw)
    messages = await _counted(
        request, tokenizer, lambda: [_message_input(m, tokenizer) for m in raw]
    )
    stores = request.app[STORE].get().stores
    tenancy.check_tokens(access, caller, stores, sum(m.token_count for m in messages))
    command = AppendMessages(
        context_id=context_id,
        at=_now_ms(),
        messages=messages,
        tokenizer=tokenizer,
        idempotency_key=key,
        fingerprint=fingerprint,
        if_version=if_version,
    )
    result: AppendResult = await _store(request, context_id).submit(command)
    if result.archived:  # a replay of messages that left the hot tail: read them back
        result = await _with_archived(request, context_id, result)
    if not result.replayed:
        metrics = request.app[METRICS]
        metrics.appended_messages.inc(len(messages))
        metrics.appended_tokens.inc(sum(m.token_count for m in messages))
        metrics.window_tokens.observe(result.used_tokens)
        metrics.window_messages.observe(result.window_messages)
        if result.compaction is not None:
            metrics.compactions.labels("append", result.compaction["policy"]).inc()
    return web.json_response(
        render.append_result(result), status=201, headers=_replay_header(result.replayed)
    )


async def _with_archived(
    request: web.Request, context_id: str, result: AppendResult
) -> AppendResult:
    first = result.last_seq - result.archived - len(result.messages) + 1
    raws = await (await _archived(request)).read_range(
        context_id, first - 1, first + result.archived, result.archived
    )
    older = []
    for raw in raws:
        data = json.loads(raw)
        moment = datetime.fromisoformat(data["created_at"].replace("Z", "+00:00"))
        older.append(
            AppendedMessage(
                seq=data["seq"],
                id=data["id"],
                token_count=data["token_count"],
                created_at=int(moment.timestamp() * 1000),
            )
        )
    return attrs.evolve(result, messages=[*older, *result.messages], archived=0)


@routes.get("/v1/contexts/{context_id}/export")
async def export(request: web.Request) -> web.StreamResponse:
    """The whole history as JSON Lines in seq order: the archive's part, then the hot tail."""
    context_id = _context_id(request)
    validation.query(request.query, {}, {})
    with (await _synced(request, context_id)).read() as machine:
        context = machine.get(context_id)
        last_seq, offset = context.last_seq, context.log_offset
        hot = list(context.log)
        purged = context.status == "purged"
        redacted = frozenset(context.redactions)
        tokenizer = context.config.tokenizer
    chunks: AsyncIterator[list[bytes]] | None = None
    first: list[bytes] = []
    if offset and not purged:  # the first archive read before the headers: an outage is 503
        chunks = (await _archived(request)).iter_range(context_id, 0, offset)
        first = _with_redactions(await anext(chunks, []), redacted, tokenizer)
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/x-ndjson; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{context_id}.jsonl"',
            "X-Fastpaca-Last-Seq": str(last_seq),
        }
    )
    await response.prepare(request)
    try:
        if first:
            await response.write(b"".join(raw + b"\n" for raw in first))
        if chunks is not None:
            async for chunk in chunks:
                chunk = _with_redactions(chunk, redacted, tokenizer)
                await response.write(b"".join(raw + b"\n" for raw in chunk))
    except ArchiveUnavailable:
        # The headers are sent: a status cannot change now. Cut the connection, so the
        # client sees an incomplete export (no final chunk), never a short one.
        if request.transport is not None:
            request.transport.close()
        return response
    for start in range(0, len(hot), 1000):
        await response.write(b"".join(m.raw + b"\n" for m in hot[start : start + 1000]))
    await response.write_eof()
    return response


def _replay_header(replayed: bool) -> dict[str, str]:
    return {"Idempotent-Replayed": "true"} if replayed else {}


async def _archived(request: web.Request) -> ArchiveStore:
    """The archive, for reads of messages older than the hot tail (503 if unreachable)."""
    writer = request.app[ARCHIVE]
    # Shielded: a request cancelled (its deadline) must not leave a pool opened half-way.
    store = None if writer is None else await asyncio.shield(writer.open())
    if store is None:
        reason = writer.status.last_error if writer is not None else None
        raise ArchiveUnavailable(reason or "no archive is configured")
    return store


@routes.get("/v1/contexts/{context_id}/tail")
async def tail(request: web.Request) -> web.Response:
    context_id = _context_id(request)
    params = validation.query(
        request.query,
        {"offset": (0, validation.MAX_OFFSET), "limit": (1, validation.MAX_PAGE)},
        {"offset": 0, "limit": validation.DEFAULT_TAIL_LIMIT},
    )
    with (await _synced(request, context_id)).read() as machine:
        context = machine.get(context_id)
        items = context.tail(params["offset"], params["limit"])
        last_seq, offset = context.last_seq, context.log_offset
        redacted, tokenizer = frozenset(context.redactions), context.config.tokenizer
        if context.status == "purged":  # erased: no messages, here or in the archive
            offset = 0
    end = max(last_seq - params["offset"], 0)
    start = max(end - params["limit"], 0)
    archived: list[bytes] = []
    if start < offset:  # older than the hot tail: read through from the archive
        until = min(end, offset)
        archived = await (await _archived(request)).read_last(context_id, until + 1, until - start)
        archived = _with_redactions(archived, redacted, tokenizer)
    has_more = start > 0 and bool(items or archived)
    body = render.page(items, archived, last_seq=last_seq, has_more=has_more)
    return web.Response(body=body, content_type="application/json", charset="utf-8")


@routes.get("/v1/contexts/{context_id}/messages")
async def list_messages(request: web.Request) -> web.Response:
    context_id = _context_id(request)
    params = validation.query(
        request.query,
        {
            "after_seq": (0, validation.MAX_OFFSET),
            "before_seq": (1, validation.MAX_OFFSET),
            "limit": (1, validation.MAX_PAGE),
        },
        {"after_seq": 0, "limit": 50},
    )
    after, limit = params["after_seq"], params["limit"]
    with (await _synced(request, context_id)).read() as machine:
        context = machine.get(context_id)
        items = context.messages_between(after, params.get("before_seq"), limit)
        last_seq, offset = context.last_seq, context.log_offset
        redacted, tokenizer = frozenset(context.redactions), context.config.tokenizer
        if context.status == "purged":  # erased: no messages, here or in the archive
            offset = 0
    end = min(last_seq, params.get("before_seq", last_seq + 1) - 1)
    archived: list[bytes] = []
    if after < offset and after < end:  # older than the hot tail: read through
        archived = await (await _archived(request)).read_range(
            context_id, after, min(end, offset) + 1, limit
        )
        archived = _with_redactions(archived, redacted, tokenizer)
        complete = len(archived) == min(end, offset) - after  # the archived part is whole
        items = items[: limit - len(archived)] if complete else []
    shown = len(archived) + len(items)
    has_more = shown > 0 and after + shown < end
    body = render.page(items, archived, last_seq=last_seq, has_more=has_more)
    return web.Response(body=body, content_type="application/json", charset="utf-8")


# --- the LLM window -----------------------------------------------------------


def _window_format(query: MultiMapping[str]) -> tuple[str, MultiDict[str]]:
    """``format`` of ``GET …/context`` (``ui`` when absent) and the other parameters."""
    values = query.getall("format", [])
    if len(values) > 1:
        raise InvalidInput("'format' is given more than once.")
    if values and values[0] not in formats.FORMATS:
        raise InvalidInput("'format' must be one of ui, openai, anthropic.")
    rest = MultiDict((name, value) for name, value in query.items() if name != "format")
    return (values[0] if values else "ui"), rest


@routes.get("/v1/contexts/{context_id}/context")
async def get_window(request: web.Request) -> web.Response:
    context_id = _context_id(request)
    window_format, query = _window_format(request.query)
    params = validation.query(
        query,
        {"budget_tokens": (1, MAX_TOKEN_BUDGET), "if_version": (0, 2**62)},
        {},
    )
    with (await _synced(request, context_id)).read() as machine:
        context = machine.get(context_id)
        if "if_version" in params:
            check_version(context, params["if_version"])
        # Messages are immutable: a copy of the list is all that needs the lock.
        window, version, mask = context.window, context.version, context.live.mask
        budget = params.get("budget_tokens", context.config.token_budget)
        needs_compaction = context.needs_compaction
        cached = context.cached_segments()
        used_tokens = context.used_tokens
    trim_to = params.get("budget_tokens")

    def render_window() -> bytes:
        tokens: int | None = None
        if trim_to is None:
            shown, segments, tokens = window, cached, used_tokens
            if segments is None:
                segments = windows.segments(shown)
                context.cache_segments(version, segments)
        else:
            shown = window_within(window, trim_to, mask)
            segments = windows.segments(shown)
        body = functools.partial(
            render.window if window_format == "ui" else render.formatted_window,
            version=version,
            messages=shown,
            budget_tokens=budget,
            needs_compaction=needs_compaction,
            segments=segments,
            tokens=tokens,
        )
        return body() if window_format == "ui" else body(window_format=window_format)

    if len(window) <= _INLINE_RENDER_MESSAGES:
        body = render_window()
    else:  # a large window: trimmed and rendered on a worker thread, in pieces
        body = await asyncio.get_running_loop().run_in_executor(None, render_window)
    return web.Response(body=body, content_type="application/json", charset="utf-8")


@routes.post("/v1/contexts/{context_id}/compact")
async def compact(request: web.Request) -> web.Response:
    context_id = _context_id(request)
    body = await _body(request)
    raw, key, if_version = validation.compact_body(body)
    new = [m for m in raw if "seq" not in m]  # kept messages were measured when appended
    tenancy.check_message_sizes(request.app[ACCESS], tenancy.request_key(request), new)
    normalised = {"replacement": raw, "if_version": if_version}
    tokenizer, fingerprint = await _admit(request, context_id, key, normalised, if_version)
    replacement = await _counted(
        request, tokenizer, lambda: [_replacement_item(m, tokenizer) for m in raw]
    )
    command = Compact(
        context_id=context_id,
        at=_now_ms(),
        replacement=replacement,
        tokenizer=tokenizer,
        idempotency_key=key,
        fingerprint=fingerprint,
        if_version=if_version,
    )
    result: CompactResult = await _store(request, context_id).submit(command)
    if not result.replayed:
        request.app[METRICS].compactions.labels("compact", "client").inc()
    return web.json_response(render.compact_result(result), headers=_replay_header(result.replayed))


# --- operations ---------------------------------------------------------------


@routes.get("/health/live")
async def live(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/health/ready")
async def ready(request: web.Request) -> web.Response:
    if not request.app[STORE].ready:
        return web.json_response(
            {"error": "not_ready", "message": "The node has no leader or is still replaying."},
            status=503,
        )
    return web.json_response({"status": "ok"})


@routes.get("/v1/cluster")
async def cluster(request: web.Request) -> web.Response:
    validation.query(request.query, {}, {})
    config = request.app[CONFIG]
    shards = request.app[STORE].opened  # answers before the node is ready, to say why
    if shards is None:
        raise NotReady()
    status = shards.cluster_status(config.node_id, config.http_url)
    status["ready"] = request.app[STORE].ready
    return web.json_response(status)


@routes.post("/v1/cluster/members")
async def add_member(request: web.Request) -> web.Response:
    address = validation.member_body(await _body(request))
    return await _change_member(request, "add", address)


@routes.delete("/v1/cluster/members/{raft_address}")
async def remove_member(request: web.Request) -> web.Response:
    validation.query(request.query, {}, {})
    address = validation.raft_address(request.match_info["raft_address"], "raft_address")
    return await _change_member(request, "remove", address)


async def _change_member(
    request: web.Request, action: Literal["add", "remove"], address: str
) -> web.Response:
    """Add or remove a member in every Raft group, then answer the cluster view."""
    config = request.app[CONFIG]
    shards = request.app[STORE].get()
    await shards.change_member(action, address)
    status = shards.cluster_status(config.node_id, config.http_url)
    status["ready"] = request.app[STORE].ready
    return web.json_response(status)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    return request.app[METRICS].render()
