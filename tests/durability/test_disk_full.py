"""A full disk: the data directory on a small tmpfs (mounted by the test, as root).

Writes are refused (507) or wait, nothing is half-written, reads go on, writes
resume by themselves when space returns, and no acknowledged write is lost,
also across a kill -9 and while snapshots cannot be written.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import ServerProcess

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)"
)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs, unmounted after the test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """A filler file that leaves about ``leave`` bytes free on ``disk``."""
    filler = disk / "filler"
    stats = os.statvfs(disk)
    free = stats.f_bavail * stats.f_frsize
    with open(filler, "ab") as handle:
        handle.write(b"\0" * max(free - leave, 0))
    return filler


def message(n: int) -> dict[str, Any]:
    return {"role": "user", "parts": [{"type": "text", "text": f"message {n} " + "x" * 2000}]}


def test_writes_get_507_below_the_reserve_and_come_back_without_a_restart(
    small_disk: Path,
) -> None:
    server = ServerProcess(small_disk / "data", "--min-free-disk", str(2 * 1024 * 1024)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.put("/v1/contexts/c", json={"token_budget": 10**6}).status_code == 200
            first = client.post("/v1/contexts/c/messages", json={"message": message(1)})
            assert first.status_code == 201
            filler = fill(small_disk, 1024 * 1024)
            started = time.monotonic()
            refused = client.post("/v1/contexts/c/messages", json={"message": message(2)})
            assert time.monotonic() - started < 3.0, "a full disk must be refused at once"
            assert refused.status_code == 507
            assert refused.json()["error"] == "insufficient_storage"
            assert refused.headers["Retry-After"] == "5"
            assert client.get("/v1/contexts/c").json()["last_seq"] == 1  # nothing written
            assert client.get("/v1/contexts/c/context").status_code == 200  # reads go on
            assert client.post("/v1/contexts/c/preview", json={}).status_code == 200
            filler.unlink()
            again = client.post("/v1/contexts/c/messages", json={"message": message(2)})
            assert again.status_code == 201 and again.json()["last_seq"] == 2
        assert "fastpaca_disk_full_refusals_total 1.0" in httpx.get(f"{server.url}/metrics").text
    finally:
        server.stop()


def test_a_journal_that_finds_the_disk_full_waits_and_loses_nothing(small_disk: Path) -> None:
    """With the guard off, the journal itself meets ENOSPC: writes wait (and time out
    as retryable 503s), reads go on; once space returns, every write that was
    acknowledged, and every retry of one that was not, is in the log exactly once,
    also after a kill -9. Snapshots come due meanwhile and cannot be written."""
    server = ServerProcess(
        small_disk / "data",
        "--min-free-disk",
        "0",
        "--submit-timeout",
        "1",
        "--log-compaction-entries",
        "40",
    ).start()
    acked: dict[str, int] = {}
    pending: list[tuple[str, int]] = []
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.put("/v1/contexts/c", json={"token_budget": 10**7}).status_code == 200
            filler = fill(small_disk, 400 * 1024)
            for n in range(400):
                key = f"k-{n}-{uuid.uuid4().hex[:6]}"
                body = {"message": message(n), "idempotency_key": key}
                response = client.post("/v1/contexts/c/messages", json=body)
                if response.status_code == 201:
                    acked[key] = response.json()["messages"][0]["seq"]
                    continue
                assert response.status_code == 503, response.text
                assert response.headers.get("Retry-After"), "a refusal must say when to retry"
                pending.append((key, n))
                if len(pending) >= 3:
                    break
            assert pending, "the disk never filled up"
            assert client.get("/v1/contexts/c").status_code == 200  # reads go on
            assert client.get("/v1/contexts/c/tail", params={"limit": 5}).status_code == 200
            # The journal's flush (or the tick's meta write before it) met ENOSPC.
            assert "No space left on device" in server.output()
            filler.unlink()
            deadline = time.monotonic() + 20
            for key, n in pending:  # the same keys: stored once, whatever happened before
                while True:
                    body = {"message": message(n), "idempotency_key": key}
                    response = client.post("/v1/contexts/c/messages", json=body)
                    if response.status_code == 201:
                        acked[key] = response.json()["messages"][0]["seq"]
                        break
                    assert time.monotonic() < deadline, response.text
                    time.sleep(0.2)
            last_seq = client.get("/v1/contexts/c").json()["last_seq"]
        assert sorted(acked.values()) == list(range(1, last_seq + 1))
        server.kill9()
        server.start()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            texts = [
                m["parts"][0]["text"]
                for m in client.get("/v1/contexts/c/messages", params={"limit": 1000}).json()[
                    "messages"
                ]
            ]
        assert len(texts) == last_seq == len(acked)
        assert len(set(texts)) == len(texts), "a message was stored twice"
    finally:
        server.stop()


def test_a_kill9_while_the_disk_is_full_loses_no_acknowledged_write(small_disk: Path) -> None:
    """Appends keep coming while the journal cannot write; the node is killed before
    any space returns. Every write it acknowledged must be there after the restart
    (a journal that gave up on the full disk let pysyncobj acknowledge entries that
    were only in memory: with the retry switched off this test loses one)."""
    server = ServerProcess(
        small_disk / "data", "--min-free-disk", "0", "--submit-timeout", "1"
    ).start()
    try:
        acked: dict[str, str] = {}
        refusals = 0
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.put("/v1/contexts/c", json={"token_budget": 10**7}).status_code == 200
            filler = fill(small_disk, 300 * 1024)
            for n in range(400):
                body = {"message": message(n), "idempotency_key": f"k-{n}"}
                response = client.post("/v1/contexts/c/messages", json=body)
                if response.status_code == 201:
                    acked[f"k-{n}"] = body["message"]["parts"][0]["text"]
                    continue
                assert response.status_code == 503, response.text
                refusals += 1
                if refusals >= 6:
                    break
        assert refusals >= 6, "the disk never filled up"
        server.kill9()
        filler.unlink()
        server.start()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            page = client.get("/v1/contexts/c/messages", params={"limit": 1000}).json()
        texts = {m["parts"][0]["text"] for m in page["messages"]}
        missing = [key for key, text in acked.items() if text not in texts]
        assert not missing, f"acknowledged writes lost: {missing}"
    finally:
        server.stop()
