"""Admission control against real server processes (``api/overload.py``).

- Past ``--max-inflight`` requests in flight, a request is answered at once
  with ``503 overloaded`` and ``Retry-After: 1``; the admitted ones succeed,
  and once the burst is over the count is back to zero (nothing leaks).
- The limit falls below ``--max-inflight`` while the median answer is slower
  than ``--latency-target``, and is back at ``--max-inflight`` once the node
  is idle.
- The live feeds are not counted.
- With the archive on and PostgreSQL down, appends are refused with ``503
  overloaded`` and ``Retry-After: 5`` once the backlog passes
  ``--max-archive-backlog``; reads go on; appends are admitted again once
  PostgreSQL is back and the backlog has landed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from fastpaca_server.cli import parse_args

from tests.server._api import assert_error, metric_value, new_id, text_message
from tests.support.polling import until
from tests.support.postgres import ThrowawayPostgres, scratch_postgres
from tests.support.server import ServerProcess

HISTORY = 4_000
"""Messages of the context whose preview (a replay of the whole log) makes a slow request."""
BURST = 60


def _fill(client: httpx.Client, context_id: str, count: int, tag: str = "m") -> None:
    for first in range(0, count, 1000):
        batch = [
            text_message(f"{tag} {n}: the quarterly report, in three short bullet points")
            for n in range(first, min(first + 1000, count))
        ]
        response = client.post(f"/v1/contexts/{context_id}/messages", json={"messages": batch})
        assert response.status_code == 201, response.text


def _metrics(client: httpx.Client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.text


async def _previews(url: str, context_id: str, count: int) -> list[tuple[int, str, dict[str, Any]]]:
    """``count`` previews sent at once, each on its own connection:
    ``(status, Retry-After, body)`` of each."""
    connector = aiohttp.TCPConnector(limit=count)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:

        async def one() -> tuple[int, str, dict[str, Any]]:
            async with session.post(f"/v1/contexts/{context_id}/preview", json={}) as response:
                body = await response.json()
                return response.status, response.headers.get("Retry-After", ""), body

        return await asyncio.gather(*(one() for _ in range(count)))


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server that serves 4 requests at once."""
    process = ServerProcess(tmp_path_factory.mktemp("overload") / "data", "--max-inflight", "4")
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def slow_context(limited: ServerProcess) -> str:
    """A context whose preview replays a few thousand messages."""
    context_id = new_id("slow")
    with limited.client() as client:
        response = client.put(f"/v1/contexts/{context_id}", json={"token_budget": 100_000})
        assert response.status_code == 200, response.text
        _fill(client, context_id, HISTORY)
    return context_id


def test_past_the_limit_requests_are_shed_at_once_and_the_admitted_succeed(
    limited: ServerProcess, slow_context: str
) -> None:
    with limited.client() as client:
        before = metric_value(_metrics(client), "fastpaca_shed_requests_total", reason="inflight")
    answers = asyncio.run(_previews(limited.url, slow_context, BURST))
    ok = [body for status, _, body in answers if status == 200]
    shed = [(retry, body) for status, retry, body in answers if status == 503]
    assert len(ok) + len(shed) == BURST, [a[:2] for a in answers if a[0] not in (200, 503)]
    assert shed, "60 slow requests at once on a node serving 4: none was shed"
    assert len(ok) >= 4, "fewer requests admitted than the limit"
    for retry, body in shed:
        assert retry == "1"
        assert set(body) == {"error", "message"} and body["error"] == "overloaded", body
        assert "--max-inflight" in body["message"]
    for body in ok:
        assert body["used_tokens"] > 0, body  # a real preview of the whole log
    with limited.client() as client:
        text = _metrics(client)
        after = metric_value(text, "fastpaca_shed_requests_total", reason="inflight")
        assert after - before == len(shed)
        assert metric_value(text, "fastpaca_inflight_requests") == 0
    # Nothing leaked: 4 slow requests at once are all admitted again.
    again = asyncio.run(_previews(limited.url, slow_context, 4))
    assert [status for status, _, _ in again] == [200] * 4, again
    # Refusals are not logged one by one (that would add to the load), but summed up.
    log = limited.log_path.read_text(errors="replace")
    assert "overloaded: refused with 503" in log and "--max-inflight 4;" in log
    refused_lines = [line for line in log.splitlines() if '"status":503' in line]
    assert not refused_lines, refused_lines[:3]


def test_an_overloaded_answer_is_the_standard_error_with_the_request_id(
    limited: ServerProcess, slow_context: str
) -> None:
    """Through the whole middleware stack: the spec's error body and the request's id."""

    async def burst_and_one() -> tuple[int, dict[str, str], bytes]:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(limited.url, timeout=timeout) as session:
            pending = [
                asyncio.create_task(session.post(f"/v1/contexts/{slow_context}/preview", json={}))
                for _ in range(8)
            ]
            await asyncio.sleep(0)
            try:
                for _ in range(200):  # until one is refused (bounded)
                    async with session.get(
                        f"/v1/contexts/{slow_context}", headers={"X-Request-Id": "shed-me"}
                    ) as response:
                        body = await response.read()
                        if response.status == 503:
                            return response.status, dict(response.headers), body
                raise AssertionError("no request was refused while the node was full")
            finally:
                for response in await asyncio.gather(*pending):
                    response.release()

    status, headers, body = asyncio.run(burst_and_one())
    response = httpx.Response(status, headers=headers, content=body)
    assert_error(response, 503, "overloaded")
    assert response.headers["Retry-After"] == "1"
    assert response.headers["X-Request-Id"] == "shed-me"


def test_live_feeds_do_not_count(tmp_path: Path) -> None:
    process = ServerProcess(tmp_path / "data", "--max-inflight", "2").start()
    try:
        context_id = new_id("feeds")
        with process.client() as client:
            response = client.put(f"/v1/contexts/{context_id}", json={"token_budget": 10_000})
            assert response.status_code == 200

        async def feeds_then_requests() -> list[int]:
            timeout = aiohttp.ClientTimeout(total=30, sock_read=None)
            async with aiohttp.ClientSession(process.url, timeout=timeout) as session:
                feeds = []
                for _ in range(10):
                    feed = await session.get(f"/v1/contexts/{context_id}/events")
                    assert feed.status == 200, await feed.text()
                    feeds.append(feed)
                try:
                    statuses = []
                    for n in range(6):
                        message = {"message": text_message(f"while 10 feeds are open {n}")}
                        async with session.post(
                            f"/v1/contexts/{context_id}/messages", json=message
                        ) as response:
                            statuses.append(response.status)
                        async with session.get(f"/v1/contexts/{context_id}") as response:
                            statuses.append(response.status)
                    async with session.get("/metrics") as response:
                        text = await response.text()
                    assert metric_value(text, "fastpaca_inflight_requests") == 0
                    assert metric_value(text, "fastpaca_stream_connections", feed="sse") == 10
                    # The feeds are live: the first has the messages appended meanwhile.
                    seen = b""
                    for _ in range(20):  # after the context's creation, the first append
                        seen += await asyncio.wait_for(feeds[0].content.readuntil(b"\n\n"), 10)
                        if b"event: message" in seen:
                            break
                    assert b"while 10 feeds are open 0" in seen, seen
                    return statuses
                finally:
                    for feed in feeds:
                        feed.close()

        statuses = asyncio.run(feeds_then_requests())
        assert statuses == [201, 200] * 6
        with process.client() as client:
            text = _metrics(client)
            assert metric_value(text, "fastpaca_shed_requests_total", reason="inflight") == 0
    finally:
        process.stop()


def test_the_limits_are_checked_at_start() -> None:
    config = parse_args(["--max-inflight", "0", "--max-archive-backlog", "0"])
    assert (config.max_inflight, config.max_archive_backlog) == (0, 0)
    assert parse_args(["--latency-target", "25"]).latency_target == 0.025
    assert parse_args(["--latency-target", "0"]).latency_target == 0
    for flag, value in (
        ("--max-inflight", "-1"),
        ("--max-archive-backlog", "-1"),
        ("--latency-target", "-1"),
        ("--latency-target", "nan"),
        ("--latency-target", "inf"),
        ("--latency-target", "1e9"),
        ("--latency-target", "ten"),
    ):
        with pytest.raises(SystemExit):
            parse_args([flag, value])


async def _appends(url: str, context_id: str, count: int, concurrency: int) -> list[int]:
    """``count`` appends, ``concurrency`` at a time; the status of each."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    statuses: list[int] = []
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:

        async def worker(first: int) -> None:
            for n in range(first, count, concurrency):
                message = {"message": text_message(f"load {n}")}
                async with session.post(
                    f"/v1/contexts/{context_id}/messages", json=message
                ) as response:
                    statuses.append(response.status)

        await asyncio.gather(*(worker(first) for first in range(concurrency)))
    return statuses


async def _appends_watching_the_limit(url: str, context_id: str) -> tuple[list[int], list[float]]:
    """600 appends, 16 at a time, while ``fastpaca_inflight_limit`` is read every 20 ms:
    the appends' statuses and the limits seen."""
    limits: list[float] = []
    done = asyncio.Event()

    async def watch() -> None:
        async with aiohttp.ClientSession(url) as session:
            while not done.is_set():
                async with session.get("/metrics") as response:
                    limits.append(metric_value(await response.text(), "fastpaca_inflight_limit"))
                await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    try:
        statuses = await _appends(url, context_id, 600, 16)
    finally:
        done.set()
        await watcher
    return statuses, limits


@contextlib.contextmanager
def _node(root: Path, latency_target: str) -> Iterator[tuple[ServerProcess, str]]:
    """A node with ``--max-inflight 32`` and this target, and a context on it."""
    process = ServerProcess(
        root / "data", "--max-inflight", "32", "--latency-target", latency_target
    ).start()
    try:
        context_id = new_id("adaptive")
        with process.client() as client:
            response = client.put(f"/v1/contexts/{context_id}", json={"token_budget": 100_000})
            assert response.status_code == 200
            assert metric_value(_metrics(client), "fastpaca_inflight_limit") == 32
        yield process, context_id
    finally:
        process.stop()


def test_the_limit_falls_while_answers_are_slow_and_comes_back_when_idle(tmp_path: Path) -> None:
    # A target of 0.2 ms: every append (an fsync) is slower, so a busy node lowers its
    # limit from 32 towards its floor (4) and refuses what it would have admitted.
    with _node(tmp_path, "0.2") as (process, context_id), process.client() as client:
        statuses, limits = asyncio.run(_appends_watching_the_limit(process.url, context_id))
        assert set(statuses) <= {201, 503}, set(statuses)
        shed = statuses.count(503)
        assert shed, "16 appends at once, 600 in all, on a node whose limit fell: none shed"
        assert min(limits) < 16, limits  # it refused below 16 in flight
        stored = client.get(f"/v1/contexts/{context_id}").json()["last_seq"]
        assert stored == statuses.count(201)  # a refusal wrote nothing
        text = _metrics(client)
        assert metric_value(text, "fastpaca_shed_requests_total", reason="inflight") == shed
        # Idle for 2 s: the whole limit again.
        time.sleep(2.0)
        assert metric_value(_metrics(client), "fastpaca_inflight_limit") == 32


def test_with_a_target_of_zero_the_limit_stays(tmp_path: Path) -> None:
    with _node(tmp_path, "0") as (process, context_id), process.client() as client:
        statuses = asyncio.run(_appends(process.url, context_id, 600, 16))
        assert statuses == [201] * 600
        assert metric_value(_metrics(client), "fastpaca_inflight_limit") == 32


# --- the archive backlog ----------------------------------------------------------------


@pytest.fixture
def postgres() -> Iterator[ThrowawayPostgres]:
    yield from scratch_postgres()


def test_appends_are_shed_past_the_archive_backlog_and_reads_go_on(
    tmp_path: Path, postgres: ThrowawayPostgres
) -> None:
    database = postgres.create_database()
    process = ServerProcess(
        tmp_path / "data",
        "--database-url",
        postgres.dsn_for(database),
        "--max-archive-backlog",
        "50",
    ).start()
    try:
        context_id = new_id("backlog")
        with process.client() as client:
            created = client.put(f"/v1/contexts/{context_id}", json={"token_budget": 100_000})
            assert created.status_code == 200, created.text
            _fill(client, context_id, 20, "before")
            until(
                lambda: client.get(f"/v1/contexts/{context_id}").json()["archived_seq"] == 20,
                "the first messages archived",
                20,
            )
            postgres.pause()
            refused = None
            appended = 0
            deadline = time.monotonic() + 15
            while refused is None and time.monotonic() < deadline:
                batch = [text_message(f"during the outage {appended + n}") for n in range(10)]
                response = client.post(
                    f"/v1/contexts/{context_id}/messages", json={"messages": batch}
                )
                if response.status_code == 201:
                    appended += 10
                    time.sleep(0.05)
                else:
                    refused = response
            assert refused is not None, f"{appended} messages appended, none refused"
            body = assert_error(refused, 503, "overloaded")
            assert refused.headers["Retry-After"] == "5"
            assert "--max-archive-backlog" in body["message"]
            assert appended > 50
            # Reads go on, and so do other writes.
            context = client.get(f"/v1/contexts/{context_id}").json()
            assert context["last_seq"] == 20 + appended
            window = client.get(f"/v1/contexts/{context_id}/context")
            assert window.status_code == 200
            tail = client.get(f"/v1/contexts/{context_id}/tail", params={"limit": 5})
            assert tail.status_code == 200 and len(tail.json()["messages"]) == 5
            patch = client.patch(
                f"/v1/contexts/{context_id}/metadata", json={"metadata": {"outage": True}}
            )
            assert patch.status_code == 200, patch.text
            text = _metrics(client)
            assert metric_value(text, "fastpaca_shed_requests_total", reason="archive_backlog") >= 1
            assert metric_value(text, "fastpaca_archive_backlog_messages") > 50

            postgres.resume()

            def admitted() -> bool:
                message = {"message": text_message("after the outage")}
                response = client.post(f"/v1/contexts/{context_id}/messages", json=message)
                assert response.status_code in (201, 503), response.text
                if response.status_code == 503:
                    time.sleep(0.4)
                return response.status_code == 201

            until(admitted, "an append admitted once Postgres is back")
            assert client.get(f"/v1/contexts/{context_id}").json()["last_seq"] == 21 + appended
    finally:
        process.stop()
