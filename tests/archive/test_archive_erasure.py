"""Erasure with the archive on: a purge deletes the context's rows, a redact rewrites
one row, and neither leaves the erased text in any column of ``messages`` or
``contexts`` (nor in any file of the data directory). A tombstone whose
messages are all archived drops its history from memory and stays readable.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.archive.conftest import Database
from tests.durability.test_erasure import _marker, _text, files_with, until
from tests.support.postgres import ThrowawayPostgres
from tests.support.server import ServerProcess

MESSAGE_COLUMNS = ("raw", "parts::text", "coalesce(metadata::text, '')", "id", "role")
CONTEXT_COLUMNS = ("config::text", "metadata::text", "status", "context_id")


def _rows_with(postgres: ThrowawayPostgres, database: Database, marker: str) -> dict[str, int]:
    """Rows of each table with the marker (UTF-8 or JSON-escaped) in any column."""
    found = {}
    for table, columns in (("messages", MESSAGE_COLUMNS), ("contexts", CONTEXT_COLUMNS)):
        forms = [marker, json.dumps(marker)[1:-1]]
        where = " OR ".join(
            f"strpos({column}, ${n}) > 0" for column in columns for n in range(1, len(forms) + 1)
        )
        rows = postgres.query(
            f"SELECT count(*) FROM {table} WHERE {where}", *forms, database=database.name
        )
        found[table] = int(rows[0][0])
    return found


@pytest.fixture
def server(tmp_path: Path, database: Database) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path / "data", "--database-url", database.dsn, "--tail-keep", "1"
    ).start()
    yield process
    process.kill9()


def _archived(client: httpx.Client, context_id: str, last_seq: int) -> Any:
    return until(
        lambda: client.get(f"/v1/contexts/{context_id}").json()["archived_seq"] == last_seq,
        f"{context_id} archived up to {last_seq}",
        timeout=30,
    )


def _fill(client: httpx.Client, context_id: str, texts: list[str], metadata: Any = None) -> None:
    body = {"token_budget": 100_000, "metadata": metadata or {}}
    assert client.put(f"/v1/contexts/{context_id}", json=body).is_success
    for text in texts:
        answer = client.post(f"/v1/contexts/{context_id}/messages", json={"message": _text(text)})
        assert answer.status_code == 201, answer.text
    _archived(client, context_id, len(texts))


def test_purge_and_redact_erase_the_archive_rows(
    server: ServerProcess, postgres: ThrowawayPostgres, database: Database
) -> None:
    marker, meta_marker = _marker("purge-me"), _marker("meta")
    secret, kept = _marker("secret"), _marker("kept")
    with server.client() as client:
        _fill(client, "doomed", [f"{marker} {n}" for n in range(5)], {"owner": meta_marker})
        _fill(client, "chat", [f"hi {kept}", f"card {secret}", f"bye {kept}", "ok"])
        assert _rows_with(postgres, database, marker)["messages"] == 5
        assert _rows_with(postgres, database, meta_marker)["contexts"] == 1
        assert _rows_with(postgres, database, secret)["messages"] == 1

        # Seq 2 is only in the archive now (--tail-keep 1): the row is rewritten.
        redacted = client.post("/v1/contexts/chat/messages/2/redact")
        assert redacted.is_success, redacted.text
        log = client.get("/v1/contexts/chat/messages").json()["messages"]
        assert [m["seq"] for m in log] == [1, 2, 3, 4]
        assert log[1]["parts"] == [{"type": "redacted"}]
        until(
            lambda: _rows_with(postgres, database, secret) == {"messages": 0, "contexts": 0},
            "the redacted row is rewritten",
        )
        assert _rows_with(postgres, database, kept)["messages"] == 2
        row = postgres.query(
            "SELECT parts::text, token_count FROM messages WHERE context_id = 'chat' AND seq = 2",
            database=database.name,
        )
        assert (json.loads(row[0][0]), row[0][1]) == ([{"type": "redacted"}], log[1]["token_count"])
        assert client.get("/v1/contexts/chat/messages").json()["messages"] == log

        purged = client.delete("/v1/contexts/doomed", params={"purge": "true"})
        assert purged.json()["status"] == "purged", purged.text
        until(
            lambda: (
                _rows_with(postgres, database, marker) == {"messages": 0, "contexts": 0}
                and _rows_with(postgres, database, meta_marker) == {"messages": 0, "contexts": 0}
            ),
            "the purged rows are deleted",
        )
        assert postgres.query(
            "SELECT count(*) FROM messages WHERE context_id = 'doomed'", database=database.name
        ) == [(0,)]
        row = postgres.query(
            "SELECT status, metadata::text, config::text FROM contexts WHERE context_id = 'doomed'",
            database=database.name,
        )
        assert row == [("purged", "{}", "{}")]
        assert client.get("/v1/contexts/doomed/messages").json()["messages"] == []
    until(
        lambda: not files_with(server.data_dir, marker, meta_marker, secret),
        "the data directory holds none of the erased text",
    )


def test_an_archived_tombstone_leaves_memory_and_stays_readable(
    server: ServerProcess,
) -> None:
    texts = [f"old {n}" for n in range(4)]
    with server.client() as client:
        _fill(client, "old", texts)
        assert client.get("/v1/contexts/old").json()["window_messages"] == 4
        assert client.delete("/v1/contexts/old").json()["status"] == "tombstoned"
        context = until(
            lambda: (c := client.get("/v1/contexts/old").json())["window_messages"] == 0 and c,
            "the tombstone's window and hot tail leave memory",
        )
        assert (context["used_tokens"], context["last_seq"]) == (0, 4)
        log = client.get("/v1/contexts/old/messages").json()["messages"]
        assert [m["parts"][0]["text"] for m in log] == texts  # from the archive
        tail = client.get("/v1/contexts/old/tail", params={"limit": 2}).json()["messages"]
        assert [m["seq"] for m in tail] == [3, 4]
        assert client.get("/v1/contexts/old/context").json()["messages"] == []
