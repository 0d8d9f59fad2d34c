"""The data directory with real server processes: one owner, corruption, start-up.

* Two processes on one ``--data-dir`` would both acknowledge writes into the
  same journal; the second one must refuse to start.
* Only a torn *last* journal record may be cut away on start. Damage with
  valid records after it stops the node with the file and byte offset, and
  changes nothing, unless ``--repair-journal`` asks for a repair (which keeps
  a byte-identical copy first). A damaged snapshot stops the node too.
* No ``/v1`` route answers before the journal is replayed: ``503 not_ready``
  with ``Retry-After`` until then, the complete state afterwards.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from fastpaca_server.replication.journal import scan_journal
from fastpaca_server.replication.node import JOURNAL_FILE, SNAPSHOT_FILE

from tests.durability.helpers import (
    append_command,
    manual_context,
    read_log,
    text_message,
    write_journal,
)
from tests.support.server import ServerProcess
from tests.support.spec import validate_httpx_response

APPENDS = 8


def _one_line_error(output: str, prefix: str) -> str:
    """The ``fastpaca-server: …`` line of ``output``, which must hold no traceback."""
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, output
    return lines[0]


def _append_each(server: ServerProcess, context_id: str, count: int, first: int = 0) -> None:
    """``count`` appends of one message each (one journal entry each)."""
    with server.client() as client:
        if first == 0:
            put = client.put(f"/v1/contexts/{context_id}", json={"token_budget": 100_000})
            assert put.status_code == 200, put.text
        for n in range(first, first + count):
            body = {"message": text_message(f"m{n:03d}", f"message number {n} ✓")}
            response = client.post(f"/v1/contexts/{context_id}/messages", json=body)
            assert response.status_code == 201, response.text
            assert response.json()["messages"][0]["seq"] == n + 1


def _log_ids(server: ServerProcess, context_id: str) -> list[str]:
    with server.client() as client:
        return [message["id"] for message in read_log(client, context_id)]


def _written_journal(tmp_path: Path, cleanup: list[ServerProcess]) -> tuple[Path, bytes]:
    """A data directory whose journal a real server wrote: a context, APPENDS appends."""
    data_dir = tmp_path / "data"
    server = ServerProcess(data_dir)
    cleanup.append(server)
    server.start()
    _append_each(server, "journal", APPENDS)
    server.stop()
    return data_dir, (data_dir / JOURNAL_FILE).read_bytes()


def _record_of(data: bytes, message_id: str) -> tuple[int, int]:
    """(offset, size) of the journal record that appended ``message_id``."""
    scan = scan_journal(data)
    assert scan.damage is None
    found = [
        (offset, 24 + len(entry[0]))
        for offset, entry in zip(scan.offsets, scan.entries, strict=True)
        if f'"id":"{message_id}"'.encode() in entry[0]
    ]
    assert len(found) == 1, found
    return found[0]


# --- one process per data directory ------------------------------------------------


def test_a_second_process_on_the_same_data_dir_exits_at_once(
    tmp_path: Path, cleanup: list[ServerProcess]
) -> None:
    data_dir = tmp_path / "data"
    first = ServerProcess(data_dir)
    second = ServerProcess(data_dir)
    cleanup += [first, second]
    first.start()
    _append_each(first, "owned", 3)

    started = time.monotonic()
    status, output = second.run_to_exit(timeout=20)
    elapsed = time.monotonic() - started
    assert status != 0
    assert elapsed < 10, f"the second process took {elapsed:.1f}s to give up"
    assert first.process is not None
    line = _one_line_error(output, "fastpaca-server:")
    assert line == (
        f"fastpaca-server: data directory {data_dir} is in use by another process "
        f"(pid {first.process.pid})"
    )

    # the owner never noticed: it keeps serving and acknowledging
    _append_each(first, "owned", 3, first=3)
    assert _log_ids(first, "owned") == [f"m{n:03d}" for n in range(6)]

    # the lock goes with its process, even with kill -9
    first.kill9()
    second.start()
    assert _log_ids(second, "owned") == [f"m{n:03d}" for n in range(6)]


# --- a corrupted journal ---------------------------------------------------------------


def test_a_damaged_record_with_valid_records_after_it_stops_the_node(
    tmp_path: Path, cleanup: list[ServerProcess]
) -> None:
    data_dir, intact = _written_journal(tmp_path, cleanup)
    offset, size = _record_of(intact, "m003")
    damaged = bytearray(intact)
    damaged[offset + size // 2] ^= 0x20  # one byte in the middle of the 4th append
    journal = data_dir / JOURNAL_FILE
    journal.write_bytes(bytes(damaged))
    files_before = sorted(path.name for path in data_dir.iterdir())

    server = ServerProcess(data_dir)
    cleanup.append(server)
    status, output = server.run_to_exit(timeout=30)

    assert status != 0
    line = _one_line_error(output, "fastpaca-server:")
    assert f"journal {journal} is corrupted at byte {offset} (checksum mismatch)" in line
    assert "--repair-journal" in line
    assert journal.read_bytes() == bytes(damaged), "a refused start changed the journal"
    assert sorted(path.name for path in data_dir.iterdir()) == files_before


@pytest.mark.parametrize("how", ["flag", "variable"])
def test_repair_journal_keeps_a_copy_and_serves_what_came_before(
    tmp_path: Path, cleanup: list[ServerProcess], how: str
) -> None:
    data_dir, intact = _written_journal(tmp_path, cleanup)
    offset, size = _record_of(intact, "m003")
    damaged = bytearray(intact)
    damaged[offset + size // 2] ^= 0x20
    journal = data_dir / JOURNAL_FILE
    journal.write_bytes(bytes(damaged))

    if how == "flag":
        server = ServerProcess(data_dir, "--repair-journal")
    else:
        server = ServerProcess(data_dir, env={"FASTPACA_REPAIR_JOURNAL": "1"})
    cleanup.append(server)
    server.start()

    copies = sorted(data_dir.glob(f"{JOURNAL_FILE}.corrupt-*"))
    assert len(copies) == 1, copies
    assert copies[0].read_bytes() == bytes(damaged), "the quarantined copy is not the damaged file"
    assert journal.read_bytes()[:offset] == intact[:offset]
    assert f"dropped {len(damaged) - offset} bytes from byte {offset}" in server.output()
    assert str(copies[0]) in server.output()
    assert _log_ids(server, "journal") == ["m000", "m001", "m002"]
    _append_each(server, "journal", 1, first=3)  # and it takes writes again
    server.stop()
    server.start()
    assert _log_ids(server, "journal") == ["m000", "m001", "m002", "m003"]


def test_a_torn_last_record_is_still_repaired_silently(
    tmp_path: Path, cleanup: list[ServerProcess]
) -> None:
    data_dir, intact = _written_journal(tmp_path, cleanup)
    offset, size = _record_of(intact, f"m{APPENDS - 1:03d}")
    assert offset + size == len(intact), "the last append is not the last record"
    journal = data_dir / JOURNAL_FILE
    journal.write_bytes(intact[: offset + size - 5])  # the process died writing it

    server = ServerProcess(data_dir)
    cleanup.append(server)
    server.start()
    assert _log_ids(server, "journal") == [f"m{n:03d}" for n in range(APPENDS - 1)]
    scan = scan_journal(journal.read_bytes())
    assert scan.damage is None  # the torn bytes are gone, the new entries follow the rest
    assert journal.read_bytes()[:offset] == intact[:offset]
    assert not list(data_dir.glob("*.corrupt-*"))


# --- a damaged snapshot ---------------------------------------------------------------


def test_a_damaged_snapshot_stops_the_node_with_one_line(
    tmp_path: Path, cleanup: list[ServerProcess]
) -> None:
    data_dir = tmp_path / "data"
    server = ServerProcess(data_dir, "--log-compaction-entries", "4")
    cleanup.append(server)
    server.start()
    _append_each(server, "snap", APPENDS)
    snapshot = data_dir / SNAPSHOT_FILE
    deadline = time.monotonic() + 20
    while not snapshot.exists():
        assert time.monotonic() < deadline, "no snapshot was written"
        time.sleep(0.05)
    server.stop()

    damaged = bytearray(snapshot.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    snapshot.write_bytes(bytes(damaged))
    journal_before = (data_dir / JOURNAL_FILE).read_bytes()
    status, output = server.run_to_exit(timeout=30)

    assert status != 0
    line = _one_line_error(output, "fastpaca-server:")
    assert line.startswith(f"fastpaca-server: snapshot {snapshot} is damaged (checksum mismatch)")
    assert snapshot.read_bytes() == bytes(damaged)
    assert (data_dir / JOURNAL_FILE).read_bytes() == journal_before


# --- no /v1 answer before the journal is replayed ------------------------------------------

REPLAY_APPENDS = 50_000


def test_v1_answers_not_ready_until_the_journal_is_replayed(
    tmp_path: Path, cleanup: list[ServerProcess]
) -> None:
    data_dir = tmp_path / "data"
    commands = [manual_context("replayed")]
    commands += [append_command("replayed", f"r{n:06d}") for n in range(REPLAY_APPENDS)]
    write_journal(data_dir, commands)  # replaying it takes a couple of seconds

    server = ServerProcess(data_dir)
    cleanup.append(server)
    server.launch()
    not_ready = 0
    complete = 0
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=server.url, timeout=10) as client:
        while complete < 20:
            assert time.monotonic() < deadline, f"never became ready: {server.log()}"
            assert server.process is not None and server.process.poll() is None, server.log()
            try:
                response = client.get("/v1/contexts/replayed")
            except httpx.TransportError:
                time.sleep(0.005)  # not listening yet
                continue
            if response.status_code == 200:
                assert response.json()["last_seq"] == REPLAY_APPENDS, "a half-replayed state"
                complete += 1
                continue
            assert complete == 0, "went back to not ready"
            assert response.status_code == 503, response.text
            assert response.json()["error"] == "not_ready"
            assert response.headers["Retry-After"] == "1"
            validate_httpx_response(response)
            not_ready += 1
            # the same for a write, and for a route of no context at all
            write = client.post(
                "/v1/contexts/missing/messages",
                json={"message": {"role": "user", "parts": [{"type": "text", "text": "x"}]}},
            )
            assert (write.status_code, write.json()["error"]) in (
                (503, "not_ready"),
                (404, "not_found"),  # ready in between; nothing written
            )
            # ops routes stay open meanwhile
            assert client.get("/health/live").status_code == 200
            ready = client.get("/health/ready")
            assert ready.status_code in (200, 503)
            if ready.status_code == 503:
                validate_httpx_response(ready)
                assert ready.json()["error"] == "not_ready"
            assert client.get("/metrics").status_code == 200
        last = client.get(
            "/v1/contexts/replayed/messages", params={"after_seq": REPLAY_APPENDS - 1}
        )
        assert [m["id"] for m in last.json()["messages"]] == [f"r{REPLAY_APPENDS - 1:06d}"]
    assert not_ready > 0, "no 503 not_ready was seen before the state was served"
