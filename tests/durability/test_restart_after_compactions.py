"""State is identical across restarts after many snapshots and journal compactions.

A real server with ``--log-compaction-entries 100`` gets a few thousand
messages in batches across contexts with every policy, tool calls and results,
pinned messages, metadata patches, a config change, a window replacement
(``/compact``) and a tombstone. Everything a client can read (context, every
``/messages`` page, the window with and without ``budget_tokens``, a tail page)
is captured and must be identical after clean restarts and after kill -9, also
right after the last acknowledged write and after a restart of a restart.

With the journal no longer flushed before acknowledging
(``--patch no-flush-before-ack``) a kill -9 after the last write changes the
state, which the same comparison catches.

Also here: idempotency keys must keep their age order through a snapshot
(see ``test_idempotency_eviction_order_survives_a_snapshot``).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastpaca_server.core import state as core_state
from fastpaca_server.replication import ReplicatedStore
from fastpaca_server.replication.node import SNAPSHOT_FILE

from tests.durability.helpers import (
    VariantServer,
    append_command,
    capture_state,
    journal_entries,
    manual_context,
)
from tests.support.server import ServerProcess

COMPACTION = ("--log-compaction-entries", "100")

CONTEXTS: dict[str, dict[str, Any]] = {
    "r-last-n": {"token_budget": 3000, "policy": {"strategy": "last_n", "config": {"limit": 25}}},
    "r-skip": {
        "token_budget": 4000,
        "trigger_ratio": 0.6,
        "policy": {"strategy": "skip_parts", "config": {"limit": 60}},
    },
    "r-manual": {"token_budget": 1500, "policy": {"strategy": "manual"}},
    "r-cl100k": {"token_budget": 100_000, "tokenizer": "cl100k_base", "metadata": {"team": "x"}},
    "r-tomb": {"token_budget": 2000},
}


class Writer:
    """Deterministic-ish traffic for one context (its own seed and client)."""

    def __init__(self, server: ServerProcess, context_id: str, seed: int) -> None:
        self.server = server
        self.context_id = context_id
        self.random = random.Random(seed)
        self.count = 0
        self.calls = 0

    def message(self) -> dict[str, Any]:
        self.count += 1
        n = self.count
        kind = self.random.random()
        text = f"message {n} of {self.context_id}: " + " ".join(
            self.random.choice(["alpha", "béta", "γάμμα", "delta", "日本語", "emoji 🚀", "x"])
            for _ in range(self.random.randint(1, 30))
        )
        message_id = f"{self.context_id}-{n}"
        if kind < 0.1:
            reasoning = {"type": "reasoning", "text": "thinking " * self.random.randint(1, 10)}
            return {
                "role": "assistant",
                "id": message_id,
                "parts": [reasoning, {"type": "text", "text": text}],
            }
        if kind < 0.2:
            return {
                "role": "user",
                "id": message_id,
                "parts": [{"type": "text", "text": text}],
                "metadata": {"pinned": n % 40 == 0, "n": n},
                "token_count": n % 17,
            }
        return {"role": "user", "id": message_id, "parts": [{"type": "text", "text": text}]}

    def tool_exchange(self) -> list[dict[str, Any]]:
        self.calls += 1
        call = f"call-{self.context_id}-{self.calls}"
        self.count += 2
        tool_call = {"type": "tool_call", "id": call, "name": "lookup", "input": {"q": self.calls}}
        result = {"type": "tool_result", "tool_call_id": call, "output": {"rows": self.calls}}
        return [
            {
                "role": "assistant",
                "id": f"{self.context_id}-{self.count - 1}",
                "parts": [tool_call],
            },
            {"role": "tool", "id": f"{self.context_id}-{self.count}", "parts": [result]},
        ]

    def run(self, client: httpx.Client, messages: int) -> None:
        base = f"/v1/contexts/{self.context_id}"
        target = self.count + messages
        while self.count < target:
            if self.random.random() < 0.15:
                batch = self.tool_exchange()
            else:
                batch = [self.message() for _ in range(self.random.randint(1, 8))]
            body: dict[str, Any] = {"messages": batch}
            if self.random.random() < 0.5:
                body["idempotency_key"] = f"key-{batch[0]['id']}"
            response = client.post(f"{base}/messages", json=body)
            assert response.status_code == 201, response.text
            if response.json()["needs_compaction"]:
                window = client.get(f"{base}/context").json()["messages"]
                replacement = [
                    {
                        "role": "system",
                        "parts": [{"type": "text", "text": f"summary {self.count}"}],
                    },
                    *[{k: m[k] for k in ("id", "role", "parts")} for m in window[-3:]],
                ]
                response = client.post(f"{base}/compact", json={"replacement": replacement})
                assert response.status_code == 200, response.text
            if self.random.random() < 0.05:
                patch = {
                    "metadata": {"last": self.count, "drop": None, "nested": {"k": self.count}}
                }
                response = client.patch(f"{base}/metadata", json=patch)
                assert response.status_code == 200, response.text


def create(client: httpx.Client) -> None:
    for context_id, config in CONTEXTS.items():
        response = client.put(f"/v1/contexts/{context_id}", json=config)
        assert response.status_code == 200, response.text
    system = {"role": "system", "parts": [{"type": "text", "text": "You are a careful assistant."}]}
    for context_id in ("r-last-n", "r-skip"):
        response = client.post(f"/v1/contexts/{context_id}/messages", json={"message": system})
        assert response.status_code == 201, response.text


def write(server: ServerProcess, writers: list[Writer], messages_each: int) -> None:
    """All writers at once, one thread and client each."""
    failures: list[BaseException] = []

    def run(writer: Writer) -> None:
        try:
            with server.client() as client:
                writer.run(client, messages_each)
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=run, args=(writer,)) for writer in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures


def state_of(server: ServerProcess) -> dict[str, Any]:
    with server.client() as client:
        return capture_state(client, sorted(CONTEXTS))


def test_state_identical_across_clean_and_kill9_restarts(
    tmp_path: Path, cleanup: list[ServerProcess]
) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data, *COMPACTION).start()
    cleanup.append(server)
    writers = [Writer(server, context_id, seed) for seed, context_id in enumerate(CONTEXTS)]
    with server.client() as client:
        create(client)
    write(server, writers, 600)
    with server.client() as client:
        assert client.delete("/v1/contexts/r-tomb").status_code == 200
        changed = dict(CONTEXTS["r-last-n"], policy={"strategy": "last_n", "config": {"limit": 10}})
        assert client.put("/v1/contexts/r-last-n", json=changed).status_code == 200
    before = state_of(server)
    assert sum(len(c["log"]) for c in before.values()) >= 3000
    assert before["r-tomb"]["context"][1]["status"] == "tombstoned"
    assert before["r-manual"]["window"][1]["messages"][0]["role"] == "system"  # compacted window
    assert (data / SNAPSHOT_FILE).exists()
    assert len(journal_entries(data)) < 200  # the rest lives in snapshots

    server.restart()
    assert state_of(server) == before, "clean restart"
    server.kill9()
    server.start()
    assert state_of(server) == before, "kill -9 restart"

    writers = [w for w in writers if w.context_id != "r-tomb"]
    write(server, writers, 120)
    after = state_of(server)
    assert after != before
    server.kill9()  # right after the last acknowledged write
    server.start()
    assert state_of(server) == after, "kill -9 right after writes"
    server.kill9()
    server.start()
    assert state_of(server) == after, "kill -9 of a freshly restarted server"
    server.restart()
    assert state_of(server) == after, "clean restart after kill -9 restarts"


def test_without_flush_before_ack_kill9_changes_the_state(
    tmp_path: Path, cleanup: list[ServerProcess]
) -> None:
    server = VariantServer(tmp_path / "data", *COMPACTION, patches=["no-flush-before-ack"]).start()
    cleanup.append(server)
    writers = [Writer(server, context_id, seed) for seed, context_id in enumerate(CONTEXTS)]
    with server.client() as client:
        create(client)
    write(server, writers, 150)
    with server.client() as client:
        for n in range(10):
            # One more small append. Unless it triggered a compaction (whose
            # rewrite reaches the disk; give it time to finish), it now sits in
            # Python's write buffer only.
            message = {"id": f"tail-{n}", "role": "user", "parts": [{"type": "text", "text": "t"}]}
            response = client.post("/v1/contexts/r-cl100k/messages", json={"message": message})
            assert response.status_code == 201, response.text
            time.sleep(0.3)
            if not any(f"tail-{n}".encode() in c for c, _, _ in journal_entries(server.data_dir)):
                break
    before = state_of(server)
    server.kill9()
    server.start()
    assert state_of(server) != before


# --- idempotency keys across a snapshot ----------------------------------------------


def test_idempotency_eviction_order_survives_a_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cap = 20  # IDEMPOTENCY_KEYS_PER_CONTEXT is 10,000; the order logic does not depend on it
    monkeypatch.setattr(core_state, "IDEMPOTENCY_KEYS_PER_CONTEXT", cap)

    def request(n: int) -> Any:
        # later requests happen to get lexicographically smaller keys (as random keys may)
        return append_command("idem", f"m{n:03d}", key=f"key-{999 - n:03d}")

    async def scenario() -> tuple[int, int]:
        store = ReplicatedStore(str(tmp_path), log_compaction_entries=5)
        await store.wait_ready()
        await store.submit(manual_context("idem"))
        for n in range(cap):
            await store.submit(request(n))
        store.close()  # the snapshot holds most of the keys

        store = ReplicatedStore(str(tmp_path), log_compaction_entries=5)
        try:
            await store.wait_ready()
            await store.submit(request(cap))  # one key too many: the oldest one goes
            with store.read() as machine:
                before = machine.get("idem").last_seq
            # every request but the very first is still remembered: retries are replays
            for n in range(1, cap + 1):
                await store.submit(request(n))
            with store.read() as machine:
                return before, machine.get("idem").last_seq
        finally:
            store.close()

    before, after = asyncio.run(scenario())
    assert (tmp_path / SNAPSHOT_FILE).exists()
    assert after == before, f"{after - before} retried requests were stored again"
