"""ArchiveStore against a real (throwaway) PostgreSQL: schema, writes, reads, outages."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
from fastpaca_server.archive import (
    SCHEMA_VERSION,
    ArchivedContext,
    ArchivedMessage,
    ArchiveStore,
    ArchiveUnavailable,
)

from tests.archive.conftest import Database
from tests.support.postgres import ThrowawayPostgres, free_port

_T = TypeVar("_T")

BASE_MS = 1_796_119_200_123  # 2026-12-01T10:00:00.123Z


def run(scenario: Callable[[], Awaitable[_T]]) -> _T:
    async def main() -> _T:
        return await scenario()

    return asyncio.run(main())


@asynccontextmanager
async def opened(dsn: str, *, migrate: bool = True, **options: Any) -> AsyncIterator[ArchiveStore]:
    store = await ArchiveStore.open(dsn, **options)
    try:
        if migrate:
            await store.migrate()
        yield store
    finally:
        await store.close()


def render(
    seq: int,
    text: str = "hi",
    *,
    role: str = "user",
    metadata: dict[str, Any] | None = None,
    parts: list[dict[str, Any]] | None = None,
    created_at: int | None = None,
) -> bytes:
    """A message's JSON as the server renders it (compact UTF-8, key order kept)."""
    moment = created_at if created_at is not None else BASE_MS + seq
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment // 1000))
    rendered = {
        "seq": seq,
        "id": f"msg_{seq}",
        "role": role,
        "parts": parts if parts is not None else [{"type": "text", "text": text}],
        "metadata": metadata,
        "token_count": 5 * seq,
        "created_at": f"{stamp}.{moment % 1000:03d}Z",
    }
    return json.dumps(rendered, separators=(",", ":"), ensure_ascii=False).encode()


def message(context_id: str, seq: int, raw: bytes | None = None, **kwargs: Any) -> ArchivedMessage:
    raw = raw if raw is not None else render(seq, **kwargs)
    parts = len(json.loads(raw)["parts"])
    return ArchivedMessage(
        context_id=context_id,
        seq=seq,
        raw=raw,
        part_tokens=[seq + index for index in range(parts)],
        created_at=kwargs.get("created_at", BASE_MS + seq),
    )


def context_row(context_id: str, version: int, **changes: Any) -> ArchivedContext:
    values: dict[str, Any] = {
        "context_id": context_id,
        "config": {"token_budget": 1000, "policy": {"strategy": "last_n", "limit": 10}},
        "metadata": {"owner": "ada", "version": version},
        "status": "active",
        "version": version,
        "last_seq": version * 10,
        "archived_seq": version * 10,
        "created_at": BASE_MS,
        "updated_at": BASE_MS + version,
    }
    values.update(changes)
    return ArchivedContext(**values)


# -- schema ------------------------------------------------------------------


def test_migrate_is_idempotent(postgres: ThrowawayPostgres, database: Database) -> None:
    async def scenario() -> int:
        async with opened(database.dsn, migrate=False) as store:
            assert await store.schema_version() == 0
            await store.migrate()
            await store.migrate()
            assert await store.write([message("c", 1)], []) == 1
            await store.migrate()  # a migration on a schema in use changes nothing
            return await store.schema_version()

    assert run(scenario) == SCHEMA_VERSION == 1
    assert postgres.query("SELECT version FROM fastpaca_schema", database=database.name) == [(1,)]
    tables = postgres.query(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
        database=database.name,
    )
    assert tables == [("contexts",), ("fastpaca_schema",), ("messages",)]
    assert postgres.query("SELECT count(*) FROM messages", database=database.name) == [(1,)]


def test_migrate_concurrently_from_several_stores(
    postgres: ThrowawayPostgres, database: Database
) -> None:
    async def scenario() -> None:
        stores = [await ArchiveStore.open(database.dsn) for _ in range(4)]
        try:
            await asyncio.gather(*(store.migrate() for store in stores))
            await asyncio.gather(*(store.migrate() for store in stores))
            assert [await store.schema_version() for store in stores] == [1, 1, 1, 1]
        finally:
            await asyncio.gather(*(store.close() for store in stores))

    run(scenario)
    assert postgres.query("SELECT version FROM fastpaca_schema", database=database.name) == [(1,)]


# -- writes and reads --------------------------------------------------------


def test_write_and_read_back_byte_identical(
    postgres: ThrowawayPostgres, database: Database
) -> None:
    big = "".join(chr(0x20 + (i * 7919) % 0x5F) for i in range(1_200_000))  # ~1.2 MB
    raws = [
        render(1, "héllo wörld — 你好, мир, שלום, 🦙🚀 e\u0301 \u200b"),
        # Key order as the client sent it, nested too (jsonb would sort these).
        b'{"seq":2,"id":"msg_2","role":"assistant","parts":[{"text":"zebra","type":"text",'
        b'"z":1,"a":{"y":2,"b":[3,{"k":"v","c":null}]}}],"metadata":{"zz":true,"aa":1.5,'
        b'"m":"\\"quoted\\" \\\\ slash \\n newline"},"token_count":7,'
        b'"created_at":"2026-12-01T10:00:00.125Z"}',
        render(3, big, metadata={"pinned": True}),
        render(
            4,
            parts=[
                {"type": "tool_call", "id": "call_1", "name": "search", "input": {"q": "x"}},
                {"type": "text", "text": "a"},
                {"type": "reasoning", "text": ""},
            ],
            role="assistant",
        ),
        render(5, "nul \u0000 inside, and a literal \\u0000"),  # jsonb rejects \u0000
        render(6, "", parts=[]),
    ]
    messages = [message("ctx_ü", seq, raw) for seq, raw in enumerate(raws, start=1)]

    async def scenario() -> list[bytes]:
        async with opened(database.dsn) as store:
            assert await store.write(messages, []) == len(raws)
            return await store.read_range("ctx_ü", 0, None, 100)

    assert run(scenario) == raws

    rows = postgres.query(
        "SELECT seq, id, role, token_count, part_tokens, metadata::text, "
        "(extract(epoch FROM created_at) * 1000)::bigint, parts->0->>'type', "
        "jsonb_array_length(parts) FROM messages WHERE context_id = $1 ORDER BY seq",
        "ctx_ü",
        database=database.name,
    )
    assert [row[0] for row in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[0][1:5] == ("msg_1", "user", 5, [1])
    assert rows[1][1:5] == ("msg_2", "assistant", 7, [2])
    assert rows[3][4] == [4, 5, 6]
    assert rows[5][4] == []
    assert [row[5] for row in rows] == [
        None,
        '{"m": "\\"quoted\\" \\\\ slash \\n newline", "aa": 1.5, "zz": true}',
        '{"pinned": true}',
        None,
        None,
        None,
    ]
    assert [row[6] for row in rows] == [BASE_MS + seq for seq in range(1, 7)]
    assert [row[7] for row in rows] == ["text", "text", "text", "tool_call", "text", None]
    assert [row[8] for row in rows] == [1, 1, 1, 3, 1, 0]
    # The queryable copy of a NUL has U+FFFD; raw (above) kept the original.
    [(text,)] = postgres.query(
        "SELECT parts->0->>'text' FROM messages WHERE seq = 5", database=database.name
    )
    assert text == "nul \ufffd inside, and a literal \\u0000"


def test_characters_postgres_rejects_are_kept_in_raw(
    postgres: ThrowawayPostgres, database: Database
) -> None:
    """NUL and lone surrogates are valid JSON escapes but not PostgreSQL text: the
    queryable columns get U+FFFD, raw keeps the bytes."""
    raw = (
        b'{"seq":1,"id":"a\\u0000b","role":"user","parts":[{"type":"text","text":"x\\ud800y"}],'
        b'"metadata":{"k\\u0000":"\\udc00"},"token_count":0,"created_at":"2026-12-01T10:00:00Z"}'
    )
    assert b"\\u0000" in raw and b"\x00" not in raw

    async def scenario() -> list[bytes]:
        async with opened(database.dsn) as store:
            assert await store.write([message("u", 1, raw)], []) == 1
            return await store.read_range("u", 0, None, 10)

    assert run(scenario) == [raw]
    rows = postgres.query(
        "SELECT id, parts->0->>'text', metadata::text FROM messages", database=database.name
    )
    assert rows == [("a\ufffdb", "x\ufffdy", '{"k\ufffd": "\ufffd"}')]


def test_write_rejects_what_is_not_a_rendered_message(database: Database) -> None:
    async def scenario() -> None:
        async with opened(database.dsn) as store:
            with pytest.raises(ValueError, match="raw has seq 2"):
                await store.write([message("c", 1, render(2))], [])
            bad = ArchivedMessage("c", 1, b'{"seq":1,"role":"user"}', [1], BASE_MS)
            with pytest.raises(ValueError, match="c/1: not a rendered message"):
                await store.write([message("c", 2), bad], [])
            bad = ArchivedMessage("c", 1, b"not json", [1], BASE_MS)
            with pytest.raises(ValueError, match="c/1: not a rendered message"):
                await store.write([bad], [])
            assert await store.count("c") == 0

    run(scenario)


def test_duplicates_are_stored_once(postgres: ThrowawayPostgres, database: Database) -> None:
    batch = [message("a", seq) for seq in range(1, 101)] + [message("b", 1)]

    async def scenario() -> None:
        async with opened(database.dsn) as store:
            assert await store.write(batch, []) == 101
            assert await store.write(batch, []) == 0
            assert await store.write(list(reversed(batch)), []) == 0
            # An overlapping batch, with a duplicate inside it: only the new rows count.
            overlapping = [message("a", seq) for seq in (99, 100, 101, 101, 102)]
            assert await store.write(overlapping, []) == 2
            # A second copy of a seq is ignored, even if its bytes differ.
            assert await store.write([message("a", 1, render(1, "changed"))], []) == 0
            assert await store.count("a") == 102
            assert await store.count("b") == 1
            assert await store.max_seq("a") == 102
            assert await store.read_range("a", 0, 2, 10) == [render(1)]

    run(scenario)
    assert postgres.query("SELECT count(*) FROM messages", database=database.name) == [(103,)]


def test_reads_bounds_and_order(database: Database) -> None:
    total = 1500
    raws = {seq: render(seq, f"message {seq}") for seq in range(1, total + 1)}

    def seqs(chunk: list[bytes]) -> list[int]:
        return [json.loads(raw)["seq"] for raw in chunk]

    async def scenario() -> None:
        async with opened(database.dsn) as store:
            batch = [message("ctx", seq, raw) for seq, raw in raws.items()]
            assert await store.write(batch, []) == total
            # Another context's rows never show up.
            await store.write([message("other", seq) for seq in range(1, 2001, 100)], [])
            assert (await store.count("ctx"), await store.max_seq("ctx")) == (total, total)
            assert (await store.count("none"), await store.max_seq("none")) == (0, 0)

            everything = await store.read_range("ctx", 0, None, 10_000)
            assert everything == [raws[seq] for seq in range(1, total + 1)]
            assert seqs(await store.read_range("ctx", 100, 200, 1000)) == list(range(101, 200))
            assert seqs(await store.read_range("ctx", 100, 200, 5)) == list(range(101, 106))
            assert seqs(await store.read_range("ctx", 1490, None, 100)) == list(range(1491, 1501))
            assert seqs(await store.read_range("ctx", 0, 3, 100)) == [1, 2]
            assert await store.read_range("ctx", 5, 6, 10) == []
            assert await store.read_range("ctx", 5, 5, 10) == []
            assert await store.read_range("ctx", 1500, None, 10) == []
            assert await store.read_range("ctx", 0, None, 0) == []
            assert await store.read_range("none", 0, None, 10) == []

            assert seqs(await store.read_last("ctx", total + 1, 10)) == list(range(1491, 1501))
            assert seqs(await store.read_last("ctx", 1000, 3)) == [997, 998, 999]
            assert seqs(await store.read_last("ctx", 5, 10)) == [1, 2, 3, 4]
            assert await store.read_last("ctx", 1, 10) == []
            assert await store.read_last("ctx", 100, 0) == []
            assert len(await store.read_last("ctx", 10**12, 2000)) == total

            chunks = [chunk async for chunk in store.iter_range("ctx", 0, total, chunk=500)]
            assert [len(chunk) for chunk in chunks] == [500, 500, 500]
            assert [raw for chunk in chunks for raw in chunk] == everything
            chunks = [chunk async for chunk in store.iter_range("ctx", 250, 1200, chunk=500)]
            assert [seqs(chunk)[0] for chunk in chunks] == [251, 751]
            assert seqs(chunks[-1])[-1] == 1200  # until_seq is inclusive
            assert [len(chunk) for chunk in chunks] == [500, 450]
            chunks = [chunk async for chunk in store.iter_range("ctx", 1400, 10**9, chunk=500)]
            assert [seqs(chunk) for chunk in chunks] == [list(range(1401, 1501))]
            assert [chunk async for chunk in store.iter_range("ctx", 10, 10, chunk=5)] == []
            assert [chunk async for chunk in store.iter_range("none", 0, 100)] == []
            with pytest.raises(ValueError):
                [chunk async for chunk in store.iter_range("ctx", 0, 10, chunk=0)]

    run(scenario)


def test_reads_with_gaps(database: Database) -> None:
    present = [2, 3, 5, 8, 13, 21, 34]

    async def scenario() -> None:
        async with opened(database.dsn) as store:
            await store.write([message("g", seq) for seq in present], [])
            assert await store.read_range("g", 3, 21, 10) == [render(5), render(8), render(13)]
            assert await store.read_last("g", 21, 2) == [render(8), render(13)]
            chunks = [chunk async for chunk in store.iter_range("g", 0, 34, chunk=3)]
            assert chunks == [
                [render(2), render(3), render(5)],
                [render(8), render(13), render(21)],
                [render(34)],
            ]

    run(scenario)


def test_a_large_batch_is_one_fast_statement(database: Database) -> None:
    batch = [message(f"ctx_{seq % 7}", seq) for seq in range(1, 5001)]

    async def scenario() -> float:
        async with opened(database.dsn) as store:
            started = time.monotonic()
            assert await store.write(batch, []) == 5000
            elapsed = time.monotonic() - started
            assert sum([await store.count(f"ctx_{n}") for n in range(7)]) == 5000
            return elapsed

    assert run(scenario) < 5.0


# -- contexts ----------------------------------------------------------------


def test_contexts_upsert_keeps_the_newest_version(database: Database) -> None:
    async def scenario() -> None:
        async with opened(database.dsn) as store:
            assert await store.get_context("c1") is None
            await store.write([], [context_row("c1", 1)])
            assert await store.get_context("c1") == context_row("c1", 1)
            await store.write([], [context_row("c1", 3, status="tombstoned")])
            await store.write([], [context_row("c1", 2)])  # older: ignored
            assert await store.get_context("c1") == context_row("c1", 3, status="tombstoned")
            # The same version replaces (a retried batch, or more archived messages).
            newest = context_row("c1", 3, status="tombstoned", archived_seq=31)
            await store.write([], [newest])
            assert await store.get_context("c1") == newest
            # Several rows of a context in one batch: the newest wins, whatever the order.
            batch = [context_row("c2", 5), context_row("c2", 7), context_row("c2", 6)]
            assert await store.write([message("c2", 1)], batch) == 1
            assert await store.get_context("c2") == context_row("c2", 7)
            assert await store.get_context("c1") == newest
            unicode = context_row("c3", 1, metadata={"title": "🦙 ünïcode", "nul": "a\u0000b"})
            await store.write([], [unicode])
            stored = await store.get_context("c3")
            assert stored is not None
            assert stored.metadata == {"title": "🦙 ünïcode", "nul": "a\ufffdb"}

    run(scenario)


# -- outages and secrets -----------------------------------------------------


def test_unavailable_while_paused_then_the_same_store_recovers(
    postgres: ThrowawayPostgres, database: Database
) -> None:
    async def scenario() -> None:
        async with opened(database.dsn, max_size=2, timeout=5.0) as store:
            assert await store.write([message("p", 1), message("p", 2)], []) == 2
            postgres.pause()
            try:
                assert not postgres.is_up()
                started = time.monotonic()
                with pytest.raises(ArchiveUnavailable, match="unavailable"):
                    await store.write([message("p", 3)], [context_row("p", 1)])
                with pytest.raises(ArchiveUnavailable):
                    await store.read_range("p", 0, None, 10)
                with pytest.raises(ArchiveUnavailable):
                    await store.read_last("p", 10, 10)
                with pytest.raises(ArchiveUnavailable):
                    [chunk async for chunk in store.iter_range("p", 0, 10)]
                with pytest.raises(ArchiveUnavailable):
                    await store.count("p")
                with pytest.raises(ArchiveUnavailable):
                    await store.migrate()
                assert time.monotonic() - started < 5.0  # refused at once, not timed out
            finally:
                postgres.resume()
            # The pool's connections died with the server: the same store reconnects.
            assert await store.write([message("p", 3)], [context_row("p", 1)]) == 1
            assert await store.read_range("p", 0, None, 10) == [render(1), render(2), render(3)]
            assert await store.get_context("p") == context_row("p", 1)

    run(scenario)


def test_a_hung_server_times_out_as_unavailable(
    postgres: ThrowawayPostgres, database: Database
) -> None:
    """A backend that stops answering (SIGSTOP) is an outage after ``timeout``."""

    async def scenario() -> float:
        async with opened(database.dsn, min_size=1, max_size=1, timeout=1.0) as store:
            assert await store.count("h") == 0
            [(pid,)] = postgres.query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'fastpaca-archive' "
                "AND datname = $1",
                database.name,
            )
            os.kill(pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(ArchiveUnavailable, match="TimeoutError"):
                    await store.count("h")
                elapsed = time.monotonic() - started
            finally:
                os.kill(pid, signal.SIGCONT)
            assert await store.write([message("h", 1)], []) == 1
            return elapsed

    assert run(scenario) < 5.0


def test_a_closed_store_is_unavailable(database: Database) -> None:
    async def scenario() -> None:
        store = await ArchiveStore.open(database.dsn)
        await store.close()
        await store.close()  # twice is fine
        with pytest.raises(ArchiveUnavailable, match="closed"):
            await store.count("c")

    run(scenario)


def test_open_fails_clearly_when_postgres_is_unreachable() -> None:
    port = free_port()  # nothing listens there
    dsn = f"postgresql://someone:hunter2-secret@127.0.0.1:{port}/archive"

    async def scenario() -> ArchiveUnavailable:
        with pytest.raises(ArchiveUnavailable) as caught:
            await ArchiveStore.open(dsn, timeout=2.0)
        return caught.value

    error = run(scenario)
    assert f"127.0.0.1:{port}/archive" in str(error)
    assert "hunter2" not in _everything_about(error)


PASSWORD = "Pa55:w@rd/%s3cr3t"  # characters a DSN must percent-encode


def test_errors_never_include_the_password(postgres: ThrowawayPostgres, database: Database) -> None:
    owner, nologin = f"archivist_{database.name}", f"nologin_{database.name}"
    postgres.query(f"CREATE ROLE {owner} LOGIN PASSWORD '{PASSWORD}'")
    postgres.query(f'ALTER DATABASE "{database.name}" OWNER TO {owner}')
    dsn = postgres.dsn_for(database.name, user=owner, password=PASSWORD)
    assert quote(PASSWORD, safe="") in dsn
    errors: list[BaseException] = []

    async def scenario() -> None:
        async with opened(dsn, timeout=5.0) as store:  # trust auth ignores the password
            assert await store.write([message("s", 1)], [context_row("s", 1)]) == 1
            postgres.pause()
            try:
                for attempt in (
                    lambda: store.write([message("s", 2)], []),
                    lambda: store.read_range("s", 0, None, 10),
                    lambda: store.count("s"),
                ):
                    with pytest.raises(ArchiveUnavailable) as caught:
                        await attempt()
                    errors.append(caught.value)
                with pytest.raises(ArchiveUnavailable) as caught:
                    await ArchiveStore.open(dsn, timeout=5.0)
                errors.append(caught.value)
            finally:
                postgres.resume()
        # Other refusals name no password either: a database that does not exist,
        # a role that may not log in, a password in the query string.
        missing = postgres.dsn_for("no_such_db", user=owner, password=PASSWORD)
        postgres.query(f"CREATE ROLE {nologin} NOLOGIN")
        refused = postgres.dsn_for(database.name, user=nologin, password=PASSWORD)
        in_query = f"{postgres.dsn_for(database.name)}?password={quote(PASSWORD, safe='')}"
        for bad in (missing, refused, "http://x:" + quote(PASSWORD, safe="") + "@host/db"):
            with pytest.raises(ArchiveUnavailable) as caught:
                await ArchiveStore.open(bad, timeout=5.0)
            errors.append(caught.value)
        async with opened(in_query, timeout=5.0) as store:
            postgres.pause()
            try:
                with pytest.raises(ArchiveUnavailable) as caught:
                    await store.count("s")
                errors.append(caught.value)
            finally:
                postgres.resume()

    run(scenario)
    assert len(errors) == 8
    assert "does not exist" in str(errors[4])
    assert nologin in str(errors[5])
    for error in errors:
        text = _everything_about(error)
        assert f"127.0.0.1:{postgres.port}" in str(error) or "host/db" in str(error)
        for secret in (PASSWORD, quote(PASSWORD, safe=""), "s3cr3t"):
            assert secret not in text, text


def _everything_about(error: BaseException) -> str:
    """The message, repr, traceback and chained causes of an error."""
    assert error.__cause__ is None and error.__suppress_context__
    return "\n".join([str(error), repr(error), *traceback.format_exception(error)])
