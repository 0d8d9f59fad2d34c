"""The archive end to end: real servers writing to a real throwaway PostgreSQL.

1,000+ messages archived and trimmed, the oldest pages read back through the
API byte for byte, Postgres stopped during writes and started again (everything
lands once), kill -9 of the server mid-flush, an export of the whole history,
and a replayed append whose messages left the hot tail.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.archive.conftest import Database
from tests.server._api import Api, connect, metric_value, new_id, text_message
from tests.support.polling import until
from tests.support.postgres import ThrowawayPostgres
from tests.support.server import ServerProcess

TAIL_KEEP = 100


def _server(data: Path, database: Database, *args: str) -> ServerProcess:
    return ServerProcess(data, "--database-url", database.dsn, "--tail-keep", str(TAIL_KEEP), *args)


@pytest.fixture
def archived(tmp_path: Path, database: Database) -> Iterator[tuple[ServerProcess, Api]]:
    process = _server(tmp_path / "data", database, "--archive-batch", "250").start()
    api = connect(process)
    yield process, api
    api.close()
    process.kill9()


def _fill(api: Api, context_id: str, count: int, start: int = 0) -> list[dict[str, Any]]:
    """Append ``count`` messages in batches of 50; returns them as read from the hot
    tail right after each batch (from memory: before anything could be archived)."""
    fresh: list[dict[str, Any]] = []
    for first in range(start, start + count, 50):
        batch = [
            text_message(f"message {n}: ünïcödé ✓ {'x' * (n % 7)}", metadata={"n": n, "a": [1]})
            for n in range(first, min(first + 50, start + count))
        ]
        api.append(context_id, *batch)
        page = api.get(f"/v1/contexts/{context_id}/tail", params={"limit": len(batch)})
        fresh.extend(page.json()["messages"])
    return fresh


def _archived_up_to(api: Api, context_id: str, seq: int) -> bool:
    return bool(api.context(context_id)["archived_seq"] == seq)


def _rows(postgres: ThrowawayPostgres, database: Database, context_id: str) -> list[int]:
    rows = postgres.query(
        "SELECT seq FROM messages WHERE context_id = $1 ORDER BY seq",
        context_id,
        database=database.name,
    )
    return [row[0] for row in rows]


def test_a_thousand_messages_are_archived_trimmed_and_read_back_byte_for_byte(
    archived: tuple[ServerProcess, Api], postgres: ThrowawayPostgres, database: Database
) -> None:
    _, api = archived
    context_id = new_id("archive")
    api.create(
        context_id, token_budget=100_000, policy={"strategy": "last_n", "config": {"limit": 50}}
    )
    written = _fill(api, context_id, 1200)
    assert [m["seq"] for m in written] == list(range(1, 1201))
    context = until(
        lambda: (c := api.context(context_id))["archived_seq"] == 1200 and c, what="watermark"
    )
    assert context["last_seq"] == 1200
    assert _rows(postgres, database, context_id) == list(range(1, 1201))
    stored = postgres.query(
        "SELECT raw, parts, metadata, role, token_count FROM messages "
        "WHERE context_id = $1 AND seq = 7",
        context_id,
        database=database.name,
    )[0]
    assert json.loads(stored[0]) == written[6]
    assert json.loads(stored[1]) == written[6]["parts"]
    assert json.loads(stored[2]) == {"n": 6, "a": [1]}
    # The oldest pages come from Postgres, byte for byte as they were first read.
    assert api.log(context_id) == written
    first_page = api.raw.get(
        f"/v1/contexts/{context_id}/messages", params={"after_seq": 0, "limit": 1000}
    )
    assert first_page.status_code == 200
    assert json.loads(first_page.content)["messages"] == written[:1000]
    deep = api.get(f"/v1/contexts/{context_id}/tail", params={"offset": 1150, "limit": 20}).json()
    assert [m["seq"] for m in deep["messages"]] == list(range(31, 51))
    assert deep["has_more"] is True
    across = api.get(
        f"/v1/contexts/{context_id}/messages", params={"after_seq": 1095, "limit": 10}
    ).json()
    assert [m["seq"] for m in across["messages"]] == list(range(1096, 1106))  # archive + hot
    # The window and the newest pages never needed the archive.
    assert len(api.window(context_id)["messages"]) == 50
    metrics = api.raw.get("/metrics").text
    assert metric_value(metrics, "fastpaca_archive_rows_total") >= 1200
    assert metric_value(metrics, "fastpaca_archive_backlog_messages") == 0


def test_postgres_down_during_writes_then_back_everything_lands_once(
    archived: tuple[ServerProcess, Api], postgres: ThrowawayPostgres, database: Database
) -> None:
    _, api = archived
    context_id = new_id("outage")
    api.create(context_id, token_budget=100_000)
    _fill(api, context_id, 300)
    until(lambda: api.context(context_id)["archived_seq"] == 300, what="first flush")
    postgres.pause()
    try:
        began = time.monotonic()
        _fill(api, context_id, 400, start=300)  # appends keep succeeding
        assert time.monotonic() - began < 20
        context = api.context(context_id)
        assert context["last_seq"] == 700 and context["archived_seq"] == 300
        metrics = until(
            lambda: (
                (t := api.raw.get("/metrics").text)
                and metric_value(t, "fastpaca_archive_failures_total") >= 1
                and t
            ),
            what="a failure in the metrics",
        )
        assert metric_value(metrics, "fastpaca_archive_backlog_messages") == 400
        assert metric_value(metrics, "fastpaca_archive_lag_seconds") > 0
        assert metric_value(metrics, "fastpaca_archive_connected") == 0
        # The hot tail keeps everything above the watermark: reads still work.
        hot = api.get(
            f"/v1/contexts/{context_id}/messages", params={"after_seq": 300, "limit": 1000}
        ).json()["messages"]
        assert [m["seq"] for m in hot] == list(range(301, 701))
    finally:
        postgres.resume()
    until(lambda: api.context(context_id)["archived_seq"] == 700, timeout=60, what="catch-up")
    assert _rows(postgres, database, context_id) == list(range(1, 701))  # once each, no gap


def test_kill9_mid_flush_lands_every_message_once(
    tmp_path: Path, postgres: ThrowawayPostgres, database: Database
) -> None:
    process = _server(tmp_path / "data", database, "--archive-batch", "50").start()
    api = connect(process)
    context_id = new_id("kill9")
    api.create(context_id, token_budget=100_000)
    _fill(api, context_id, 1000)
    process.kill9()  # the writer is most likely between batches, or inside one
    api.close()
    process.start()
    api = connect(process)
    until(lambda: api.context(context_id)["archived_seq"] == 1000, timeout=60, what="resume")
    assert _rows(postgres, database, context_id) == list(range(1, 1001))
    assert len(api.log(context_id)) == 1000
    api.close()
    process.kill9()


def test_export_streams_the_whole_history_in_seq_order(
    archived: tuple[ServerProcess, Api],
) -> None:
    process, api = archived
    context_id = new_id("export")
    api.create(context_id, token_budget=100_000)
    written = _fill(api, context_id, 450)
    until(lambda: api.context(context_id)["archived_seq"] == 450, what="watermark")
    _fill(api, context_id, 20, start=450)  # some of it only in the hot tail
    with httpx.stream("GET", f"{process.url}/v1/contexts/{context_id}/export", timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        assert r.headers["x-fastpaca-last-seq"] == "470"
        lines = [line for line in r.iter_lines() if line]
    exported = [json.loads(line) for line in lines]
    assert [m["seq"] for m in exported] == list(range(1, 471))
    assert exported[:450] == written
    assert api.get(f"/v1/contexts/{new_id('missing')}/export").status_code == 404


def test_a_replayed_append_whose_messages_left_the_hot_tail_answers_the_same(
    archived: tuple[ServerProcess, Api],
) -> None:
    _, api = archived
    context_id = new_id("replay")
    api.create(context_id, token_budget=100_000)
    body = {"messages": [text_message("first"), text_message("second")], "idempotency_key": "k-1"}
    first = api.post(f"/v1/contexts/{context_id}/messages", json=body)
    assert first.status_code == 201
    _fill(api, context_id, 300)
    until(lambda: api.context(context_id)["archived_seq"] == 302, what="watermark")
    again = api.post(f"/v1/contexts/{context_id}/messages", json=body)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()


def test_reads_of_archived_messages_answer_503_while_postgres_is_down(
    archived: tuple[ServerProcess, Api], postgres: ThrowawayPostgres
) -> None:
    _, api = archived
    context_id = new_id("read-down")
    api.create(context_id, token_budget=100_000)
    _fill(api, context_id, 300)
    until(lambda: api.context(context_id)["archived_seq"] == 300, what="watermark")
    postgres.pause()
    try:
        response = api.get(f"/v1/contexts/{context_id}/messages", params={"after_seq": 0})
        assert response.status_code == 503
        assert response.json()["error"] == "archive_unavailable"
        assert response.headers["Retry-After"] == "1"
        newest = api.get(f"/v1/contexts/{context_id}/tail", params={"limit": 50})
        assert newest.status_code == 200  # the hot tail needs no archive
        assert api.append(context_id, text_message("still writable"))["last_seq"] == 301
    finally:
        postgres.resume()


def test_migrations_run_on_boot_and_twice_is_fine(
    tmp_path: Path, postgres: ThrowawayPostgres, database: Database
) -> None:
    for _ in range(2):
        process = _server(tmp_path / "data", database).start()
        api = connect(process)
        try:
            context_id = new_id("boot")
            api.create(context_id, token_budget=1000)
            api.append(context_id, text_message("hi"))
            until(functools.partial(_archived_up_to, api, context_id, 1), what="watermark")
        finally:
            api.close()
            process.stop()
    tables = postgres.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
        "ORDER BY table_name",
        database=database.name,
    )
    assert {"messages", "contexts"} <= {row[0] for row in tables}
    contexts = postgres.query("SELECT count(*) FROM contexts", database=database.name)
    assert contexts[0][0] == 2


def test_an_export_during_an_outage_is_a_clean_503(
    archived: tuple[ServerProcess, Api], postgres: ThrowawayPostgres
) -> None:
    process, api = archived
    context_id = new_id("export-down")
    api.create(context_id, token_budget=100_000)
    _fill(api, context_id, 300)
    until(lambda: api.context(context_id)["archived_seq"] == 300, what="watermark")
    postgres.pause()
    try:
        response = httpx.get(f"{process.url}/v1/contexts/{context_id}/export", timeout=30)
        assert response.status_code == 503
        assert response.json()["error"] == "archive_unavailable"
    finally:
        postgres.resume()
    response = httpx.get(f"{process.url}/v1/contexts/{context_id}/export", timeout=30)
    lines = [json.loads(line) for line in response.text.splitlines() if line]
    assert [m["seq"] for m in lines] == list(range(1, 301))


def test_the_schema_is_created_at_boot_before_any_write(
    tmp_path: Path, postgres: ThrowawayPostgres, database: Database
) -> None:
    process = _server(tmp_path / "data", database).start()
    try:
        until(
            lambda: postgres.query(
                "SELECT to_regclass('messages') IS NOT NULL", database=database.name
            )[0][0],
            what="the schema",
        )
    finally:
        process.stop()
