"""``ctx.compactions()``, ``ctx.iter_compactions()``, ``ctx.preview()``, the context's
compaction counters and the ``compaction_record`` event, against the real server (sync and
async), plus the parsing details with mock transports."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import fastpaca._context
import httpx
import pytest
from fastpaca import (
    ERROR_CODES,
    AsyncFastpaca,
    BadRequestError,
    CompactionPage,
    CompactionRecord,
    Context,
    DroppedRun,
    Event,
    Fastpaca,
    Policy,
    Preview,
    Segment,
)

from tests.sdk._transports import ChunkedStream
from tests.support.server import ServerProcess

LAST_TWO: Policy = {"strategy": "last_n", "config": {"limit": 2}}
LAST_THREE: Policy = {"strategy": "last_n", "config": {"limit": 3}}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"type": "text", "text": text}]}


def removed_seqs(records: list[CompactionRecord]) -> set[int]:
    return {
        seq
        for record in records
        for action in record.actions
        for first, last in action.removed
        for seq in range(first, last + 1)
    }


def last_two_of_four(client: Fastpaca, context_id: str) -> Context:
    ctx = client.context(context_id, budget=1000, policy=LAST_TWO)
    for n in range(1, 5):
        ctx.append(user(f"message {n}"))
    return ctx


# --- against the server ----------------------------------------------------------------


def test_counters_of_a_compacted_context(client: Fastpaca, context_id: str) -> None:
    ctx = client.context(context_id, budget=1000, policy=LAST_TWO)
    assert ctx.info is not None
    assert (ctx.info.window_messages, ctx.info.compactions) == (0, 0)
    assert ctx.info.last_compaction is None
    for n in range(1, 5):
        ctx.append(user(f"message {n}"))
    info = ctx.get()
    assert info.window_messages == 2
    assert info.compactions >= 1
    assert info.last_compaction is not None and info.last_compaction.policy == "last_n"
    assert info.last_compaction.at.endswith("Z")
    assert (info.summary_failures, info.last_summary_error) == (0, None)


def test_records_say_which_seqs_left_the_window(client: Fastpaca, context_id: str) -> None:
    ctx = last_two_of_four(client, context_id)
    page = ctx.compactions()
    assert isinstance(page, CompactionPage) and not page.has_more
    assert page.compactions == ctx.get().compactions >= 1
    assert page and all(isinstance(record, CompactionRecord) for record in page)
    assert removed_seqs(page) == {1, 2}
    record = page[0]
    assert (record.number, record.cause, record.policy, record.outcome) == (
        1,
        "append",
        "last_n",
        "applied",
    )
    assert record.error is None and record.runs >= 1
    assert record.first_version <= record.version
    action = record.actions[0]
    assert (action.step, action.policy, action.reason) == (0, "last_n", "over_message_limit")
    assert all(isinstance(pair, tuple) and len(pair) == 2 for pair in action.removed)
    assert action.changed == []
    assert record.raw["number"] == 1
    assert list(ctx.iter_compactions()) == list(page)
    assert ctx.compactions(after=page[-1].number) == []


def test_paging_through_records(
    client: Fastpaca, context_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = last_two_of_four(client, context_id)
    window = ctx.context()
    ctx.compact(window.messages[-1:], if_version=window.version)  # a second record
    first = ctx.compactions(limit=1)
    assert len(first) == 1 and first.has_more and first.compactions >= 2
    second = ctx.compactions(after=first[0].number, limit=1)
    assert [record.number for record in second] == [2] and not second.has_more
    replaced = second[0]
    assert (replaced.cause, replaced.policy) == ("compact", "client")
    assert replaced.actions[0].reason == "replaced"
    assert removed_seqs([replaced]) == {3}
    monkeypatch.setattr(fastpaca._context, "HISTORY_PAGE_SIZE", 1)
    assert [record.number for record in ctx.iter_compactions()] == [1, 2]
    assert [record.number for record in ctx.iter_compactions(after=1)] == [2]


def test_preview_under_another_policy(client: Fastpaca, context_id: str) -> None:
    ctx = last_two_of_four(client, context_id)
    before = ctx.get()
    preview = ctx.preview(policy=LAST_THREE)
    assert isinstance(preview, Preview)
    assert [m["seq"] for m in preview.messages] == [2, 3, 4]
    assert preview.dropped == [DroppedRun(from_seq=1, to_seq=1, count=1)]
    assert preview.config.policy == LAST_THREE
    assert (preview.config.token_budget, preview.config.tokenizer) == (1000, "o200k_base")
    assert [b.seq for b in preview.breakdown] == [2, 3, 4]
    assert preview.used_tokens == sum(b.token_count for b in preview.breakdown)
    assert all(len(b.part_tokens) == 1 for b in preview.breakdown)
    log = Segment(type="log", count=3, tokens=preview.used_tokens, from_seq=2, to_seq=4)
    assert preview.segments == [log]
    assert (preview.changed, preview.refused, preview.needs_compaction) == ([], [], False)
    assert ctx.get().version == before.version  # nothing changed
    # A strategy name alone, and the new strategies, are accepted too.
    everything = ctx.preview(policy="manual", trigger_ratio=0.9)
    assert [m["seq"] for m in everything.messages] == [1, 2, 3, 4]
    assert everything.dropped == [] and everything.config.trigger_ratio == 0.9
    pipeline = ctx.preview(
        policy={
            "strategy": "pipeline",
            "config": {"steps": [{"strategy": "last_n", "config": {"limit": 1}}]},
        }
    )
    assert [m["seq"] for m in pipeline.messages] == [4]
    assert pipeline.dropped == [DroppedRun(from_seq=1, to_seq=3, count=3)]
    refused = ctx.preview(token_budget=1, policy="budget")
    assert {r.seq for r in refused.refused} == {1, 2, 3, 4}
    assert all(r.code in ERROR_CODES for r in refused.refused)


def test_summarize_without_a_summarizer_is_refused(client: Fastpaca, context_id: str) -> None:
    assert "summarizer_not_configured" in ERROR_CODES
    with pytest.raises(BadRequestError) as error:
        client.context(context_id, budget=1000, policy="summarize")
    assert error.value.code == "summarizer_not_configured"


def test_a_compaction_record_event_comes_before_its_closing_event(
    client: Fastpaca, context_id: str
) -> None:
    ctx = last_two_of_four(client, context_id)
    ctx.delete()
    events = list(ctx.events(include_messages=False))  # ends after `tombstoned`
    records = [(index, event) for index, event in enumerate(events) if event.record]
    assert records
    for index, event in records:
        assert event.type == "compaction_record" and event.record is not None
        assert event.data["record"]["version"] == event.record.version == event.version
        closing = events[index + 1]
        assert (closing.type, closing.version) == ("context", event.version)
    recorded = {event.record.number for _, event in records if event.record is not None}
    assert recorded == {record.number for record in ctx.compactions()}
    assert events[-1].type == "tombstoned"
    assert all(event.record is None for event in events if event.type != "compaction_record")


def test_async_compactions_preview_and_counters(server: ServerProcess, context_id: str) -> None:
    async def main() -> None:
        async with AsyncFastpaca(base_url=server.url) as client:
            ctx = await client.context(context_id, budget=1000, policy=LAST_TWO)
            for n in range(1, 5):
                await ctx.append(user(f"message {n}"))
            info = await ctx.get()
            assert info.window_messages == 2 and info.compactions >= 1
            assert info.last_compaction is not None
            assert info.last_compaction.policy == "last_n"
            page = await ctx.compactions()
            assert isinstance(page, CompactionPage) and not page.has_more
            assert removed_seqs(page) == {1, 2}
            assert [r async for r in ctx.iter_compactions()] == list(page)
            assert await ctx.compactions(after=page[-1].number, limit=10) == []
            preview = await ctx.preview(policy=LAST_THREE)
            assert [m["seq"] for m in preview.messages] == [2, 3, 4]
            assert preview.dropped == [DroppedRun(from_seq=1, to_seq=1, count=1)]
            await ctx.delete()
            events = [event async for event in ctx.events(include_messages=False)]
            assert any(event.type == "compaction_record" for event in events)

    asyncio.run(main())


# --- parsing (mock transports) ------------------------------------------------------------

RECORD = {
    "number": 7,
    "version": 12,
    "first_version": 12,
    "at": "2025-01-31T12:00:00.000Z",
    "cause": "summary",
    "policy": "summarize",
    "outcome": "applied",
    "runs": 1,
    "tokens_before": 900,
    "tokens_after": 300,
    "actions": [
        {
            "step": 0,
            "policy": "summarize",
            "reason": "summarized",
            "removed": [[1, 5], [7, 9]],
            "removed_unlogged": 1,
            "changed": [],
            "tokens_before": 900,
            "tokens_after": 300,
            "detail": "8 messages folded into summary 2",
            "summary": 2,
            "added_by_a_newer_server": True,
        }
    ],
    "added_by_a_newer_server": True,
}


def test_a_record_with_every_field() -> None:
    record = CompactionRecord.from_json(RECORD)
    action = record.actions[0]
    assert action.removed == [(1, 5), (7, 9)]
    assert (action.removed_unlogged, action.summary, action.step) == (1, 2, 0)
    assert record.raw["added_by_a_newer_server"] is True
    summary = Segment.from_json(
        {"type": "summary", "from_seq": 1, "to_seq": 9, "count": 1, "tokens": 40}
    )
    assert (summary.type, summary.from_seq, summary.to_seq, summary.count) == ("summary", 1, 9, 1)


def _sse(*events: tuple[str, str, int | None]) -> str:
    return "".join(
        (f"id: {closing}\n" if closing is not None else "") + f"event: {kind}\ndata: {data}\n\n"
        for kind, data, closing in events
    )


def test_a_cut_version_is_resent_whole_with_its_record(sleeps: list[float]) -> None:
    record = json.dumps({"type": "compaction_record", "version": 3, "record": RECORD})
    closing = (
        '{"type":"context","version":3,"cause":"summary","last_seq":9,'
        '"used_tokens":300,"needs_compaction":false}'
    )
    tombstoned = '{"type":"tombstoned","version":4}'
    bodies = [
        _sse(("compaction_record", record, None)),  # cut before the closing event …
        _sse(("compaction_record", record, None), ("context", closing, 3)),  # … sent again
        _sse(("tombstoned", tombstoned, 4)),
    ]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = bodies[len(seen) - 1] if len(seen) <= len(bodies) else ""
        return httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            stream=ChunkedStream(body.encode()),
        )

    http = httpx.Client(transport=httpx.MockTransport(handler))
    with Fastpaca(base_url="http://fastpaca.test", http_client=http) as client:
        events: list[Event] = list(client.context("chat").events(cursor=2))
    assert [(e.type, e.version) for e in events] == [
        ("compaction_record", 3),
        ("context", 3),
        ("tombstoned", 4),
    ]
    assert events[0].record == CompactionRecord.from_json(RECORD)
    assert events[1].data["cause"] == "summary" and events[1].record is None
    assert [request.url.params["cursor"] for request in seen] == ["2", "2", "3"]
