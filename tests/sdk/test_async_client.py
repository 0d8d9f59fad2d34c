"""Every method of the async client against a real server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from fastpaca import (
    AsyncContext,
    AsyncFastpaca,
    ConflictError,
    MessagePage,
    NotFoundError,
)

from tests.support.server import ServerProcess


def user(text: str) -> dict:
    return {"role": "user", "parts": [{"type": "text", "text": text}]}


def run(server: ServerProcess, scenario: Callable[[AsyncFastpaca], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with AsyncFastpaca(base_url=server.url) as client:
            return await scenario(client)

    return asyncio.run(main())


def test_context_put_get_and_no_request_without_options(
    server: ServerProcess, context_id: str
) -> None:
    async def scenario(client: AsyncFastpaca) -> None:
        handle = await client.context(context_id)
        assert isinstance(handle, AsyncContext) and handle.info is None
        with pytest.raises(NotFoundError):
            await handle.get()
        ctx = await client.context(
            context_id, budget=500, trigger=0.9, policy="manual", metadata={"a": 1}
        )
        assert ctx.info is not None and ctx.info.policy["strategy"] == "manual"
        assert (await ctx.get()).trigger_ratio == 0.9

    run(server, scenario)


def test_append_append_many_and_window(server: ServerProcess, context_id: str) -> None:
    async def scenario(client: AsyncFastpaca) -> None:
        ctx = await client.context(context_id, budget=1000)
        first = await ctx.append(user("Paris."), token_count=9, idempotency_key="k1")
        assert (first.seq, first.version, first.token_estimate) == (1, 2, 9)
        assert (await ctx.append(user("Paris."), token_count=9, idempotency_key="k1")).replayed
        batch = await ctx.append_many([user("a"), user("b")], if_version=2)
        assert [m.seq for m in batch.messages] == [2, 3]
        with pytest.raises(ConflictError):
            await ctx.append(user("late"), if_version=2)
        window = await ctx.context()
        assert [m["seq"] for m in window.messages] == [1, 2, 3]
        trimmed = await ctx.context(budget_tokens=10)
        assert [m["seq"] for m in trimmed.messages] == [2, 3]
        with pytest.raises(ConflictError):
            await ctx.context(if_version=1)

    run(server, scenario)


def test_redact_and_purge(server: ServerProcess, context_id: str) -> None:
    async def scenario(client: AsyncFastpaca) -> None:
        ctx = await client.context(context_id, budget=100)
        await ctx.append_many([user("public"), user("secret")])
        info = await ctx.redact(2)
        assert (await ctx.redact(2)).version == info.version
        assert (await ctx.tail())[1]["parts"] == [{"type": "redacted"}]
        purged = await ctx.delete(purge=True)
        assert purged.status == "purged" and purged.purge is not None
        other = await client.context(context_id + "-2", budget=100)
        assert (await client.delete_context(other.id, purge=True)).status == "purged"

    run(server, scenario)


def test_compact_tail_messages_and_history(server: ServerProcess, context_id: str) -> None:
    async def scenario(client: AsyncFastpaca) -> None:
        ctx = await client.context(context_id, budget=1_000_000)
        await ctx.append_many([user(str(n)) for n in range(1, 1001)])
        await ctx.append_many([user(str(n)) for n in range(1001, 1101)])
        window = await ctx.context()
        result = await ctx.compact(window.messages[-2:], if_version=window.version)
        assert result.message_count == 2
        assert [m["seq"] for m in (await ctx.context()).messages] == [1099, 1100]
        tail = await ctx.tail(offset=1, limit=2)
        assert isinstance(tail, MessagePage)
        assert [m["seq"] for m in tail] == [1098, 1099] and tail.has_more
        assert len(await ctx.tail()) == 100
        page = await ctx.messages(after_seq=5, before_seq=9, limit=2)
        assert [m["seq"] for m in page] == [6, 7] and page.has_more
        assert len(await ctx.messages()) == 50
        seqs = [message["seq"] async for message in ctx.iter_history()]
        assert seqs == list(range(1, 1101))
        tail_seqs = [message["seq"] async for message in ctx.iter_history(after_seq=1098)]
        assert tail_seqs == [1099, 1100]

    run(server, scenario)


def test_metadata_delete_and_events(server: ServerProcess, context_id: str) -> None:
    async def scenario(client: AsyncFastpaca) -> None:
        ctx = await client.context(context_id, budget=100, metadata={"user": "ada"})
        assert await ctx.metadata() == {"user": "ada"}
        info = await ctx.update_metadata({"user": None, "topic": "x"}, if_version=1)
        assert info.metadata == {"topic": "x"}
        with pytest.raises(NotFoundError):
            async for _ in (await client.context(context_id + "-nope")).events(cursor=3):
                pass
        assert (await ctx.delete()).status == "tombstoned"
        events = [event async for event in ctx.events()]  # ends after `tombstoned`
        assert [(e.type, e.data.get("cause")) for e in events] == [
            ("context", "created"),
            ("context", "metadata"),
            ("tombstoned", None),
        ]
        with pytest.raises(ConflictError):
            await ctx.update_metadata({"x": 1})
        other = await client.context(context_id + "-b", budget=100)
        assert (await client.delete_context(other.id)).status == "tombstoned"
        cluster = await client.cluster()
        assert cluster.ready and [m.leader for m in cluster.members] == [True]

    run(server, scenario)
