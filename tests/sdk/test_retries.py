"""Retries: failures injected through the transport in front of a real server."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastpaca import AsyncFastpaca, ConflictError, Fastpaca
from fastpaca._base_client import retry_delay

from tests.sdk._transports import AsyncFaultyTransport, FaultyTransport
from tests.support.server import ServerProcess


def user(text: str) -> dict:
    return {"role": "user", "parts": [{"type": "text", "text": text}]}


def faulty_client(server: ServerProcess, plan: list, **options) -> tuple[Fastpaca, FaultyTransport]:
    transport = FaultyTransport(plan)
    client = Fastpaca(base_url=server.url, http_client=httpx.Client(transport=transport), **options)
    return client, transport


def test_a_lost_answer_is_retried_with_the_same_idempotency_key(
    server: ServerProcess, context_id: str, sleeps: list[float]
) -> None:
    client, transport = faulty_client(server, [], max_retries=3)
    ctx = client.context(context_id, budget=1000)
    transport.plan = ["lose", (503, {"Retry-After": "0"}), "refuse", "pass"]
    result = ctx.append(user("stored once"))
    appends = transport.bodies()[1:]
    assert len(appends) == 4
    keys = {body["idempotency_key"] for body in appends}
    assert len(keys) == 1 and keys.pop().startswith("fp-")
    assert result.replayed  # the first attempt was stored; the last one got its result
    assert result.seq == 1
    assert [m["seq"] for m in ctx.tail()] == [1]
    assert len(sleeps) == 3


def test_the_callers_key_is_the_one_reused(
    server: ServerProcess, context_id: str, sleeps: list[float]
) -> None:
    client, transport = faulty_client(server, [])
    ctx = client.context(context_id, budget=1000)
    transport.plan = ["lose"]
    ctx.append_many([user("a"), user("b")], idempotency_key="turn-7")
    transport.plan = ["lose"]
    ctx.compact([user("summary")], idempotency_key="compact-1")
    bodies = transport.bodies()[1:]
    assert [body["idempotency_key"] for body in bodies] == ["turn-7"] * 2 + ["compact-1"] * 2
    assert ctx.tail().last_seq == 2
    assert len(ctx.context().messages) == 1


def test_every_call_gets_its_own_key(server: ServerProcess, context_id: str) -> None:
    client, transport = faulty_client(server, [])
    ctx = client.context(context_id, budget=1000)
    ctx.append(user("a"))
    ctx.append(user("a"))
    ctx.compact([])
    keys = [body["idempotency_key"] for body in transport.bodies()[1:]]
    assert len(set(keys)) == 3
    assert ctx.tail().last_seq == 2


def test_409_is_never_retried(server: ServerProcess, context_id: str, sleeps: list[float]) -> None:
    client, transport = faulty_client(server, [], max_retries=5)
    ctx = client.context(context_id, budget=1000)
    with pytest.raises(ConflictError):
        ctx.append(user("stale"), if_version=99)
    assert len(transport.requests) == 2 and sleeps == []


def test_4xx_are_not_retried(server: ServerProcess, context_id: str, sleeps: list[float]) -> None:
    client, transport = faulty_client(server, [], max_retries=5)
    with pytest.raises(Exception):  # noqa: B017 - the class is tested in test_errors
        client.context(context_id).get()
    assert len(transport.requests) == 1 and sleeps == []


def test_retry_after_is_honoured(
    server: ServerProcess, context_id: str, sleeps: list[float]
) -> None:
    plan = [(503, {"Retry-After": "1"}), (429, {"retry-after-ms": "250"}), (500, {})]
    client, _ = faulty_client(server, plan, max_retries=3)
    client.context(context_id, budget=10)
    assert sleeps[:2] == [1.0, 0.25]
    assert 0.5 * 0.75 <= sleeps[2] <= 0.5 * 4  # backoff: 2 retries taken → 2.0 s, jittered


def test_backoff_grows_from_half_a_second_to_eight() -> None:
    for retries_taken, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = [retry_delay(retries_taken, None) for _ in range(50)]
        assert all(ceiling * 0.75 <= delay <= ceiling for delay in delays)
        assert len(set(delays)) > 1  # jitter
    too_long = httpx.Response(503, headers={"Retry-After": "3600"})
    assert retry_delay(0, too_long) <= 0.5


def test_timeouts_are_retried(server: ServerProcess, context_id: str, sleeps: list[float]) -> None:
    client, transport = faulty_client(server, ["timeout", "timeout"])
    assert client.context(context_id, budget=10).info is not None
    assert len(transport.requests) == 3


def test_max_retries_zero(server: ServerProcess, context_id: str, sleeps: list[float]) -> None:
    client, transport = faulty_client(server, ["refuse"], max_retries=0)
    with pytest.raises(Exception):  # noqa: B017 - APIConnectionError, see test_errors
        client.context(context_id, budget=10)
    assert len(transport.requests) == 1


def test_async_retries_reuse_the_key(
    server: ServerProcess, context_id: str, sleeps: list[float]
) -> None:
    transport = AsyncFaultyTransport([])

    async def main() -> None:
        http = httpx.AsyncClient(transport=transport)
        async with AsyncFastpaca(base_url=server.url, http_client=http) as client:
            ctx = await client.context(context_id, budget=1000)
            transport.plan = ["lose", (503, {"Retry-After": "0"})]
            result = await ctx.append(user("once"))
            assert result.replayed and result.seq == 1
            transport.plan = ["refuse"]
            with pytest.raises(ConflictError):
                await ctx.append(user("stale"), if_version=1)
            assert (await ctx.tail()).last_seq == 1
        await http.aclose()

    asyncio.run(main())
    keys = [body["idempotency_key"] for body in transport.bodies()[1:4]]
    assert len(set(keys)) == 1
    assert len(transport.requests) == 1 + 3 + 2 + 1
