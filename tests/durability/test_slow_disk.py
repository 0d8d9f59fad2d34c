"""A slow disk: every fsync takes 100 ms more. Latency degrades, nothing breaks,
and the overload limit still sheds what does not fit (503 ``overloaded``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.durability.helpers import VariantServer


def message(text: str) -> dict[str, Any]:
    return {"message": {"role": "user", "parts": [{"type": "text", "text": text}]}}


def test_a_slow_disk_slows_writes_and_the_limits_still_hold(tmp_path: Path) -> None:
    server = VariantServer(tmp_path / "data", "--max-inflight", "8", patches=["slow-fsync"])
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.put("/v1/contexts/c", json={"token_budget": 10**6}).status_code == 200
            for n in range(3):  # each append waits for its fsync
                started = time.monotonic()
                response = client.post("/v1/contexts/c/messages", json=message(f"slow {n}"))
                assert response.status_code == 201
                assert time.monotonic() - started >= 0.1

        statuses: list[tuple[int, str, str | None]] = []
        lock = threading.Lock()

        def append(n: int) -> None:
            with httpx.Client(base_url=server.url, timeout=30) as own:
                response = own.post("/v1/contexts/c/messages", json=message(f"burst {n}"))
                error = response.json().get("error", "") if response.status_code != 201 else ""
                with lock:
                    statuses.append(
                        (response.status_code, error, response.headers.get("Retry-After"))
                    )

        threads = [threading.Thread(target=append, args=(n,)) for n in range(40)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(statuses) == 40
        assert {(status, error) for status, error, _ in statuses} <= {
            (201, ""),
            (503, "overloaded"),
        }
        shed = [retry for status, _, retry in statuses if status == 503]
        assert shed and all(retry for retry in shed), "the in-flight limit did not shed"
        stored = sum(1 for status, _, _ in statuses if status == 201)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("/v1/contexts/c").json()["last_seq"] == 3 + stored
    finally:
        server.stop()
