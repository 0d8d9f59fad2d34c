"""Guarantee 7: a window comes back byte for byte as its messages were sent,
through snapshots and restarts (providers' prompt caches key on exact bytes)."""

from __future__ import annotations

import json
import time

from tests.server._api import JSON, Api, connect, new_id
from tests.support.server import ServerProcess

# Keys deliberately out of alphabetical order, at every level.
PARTS: list[JSON] = [
    {"type": "text", "text": "Zürich → Oslo? ☃", "providerOptions": {"zeta": 1, "alpha": 2}},
    {
        "type": "tool_call",
        "name": "weather",
        "id": "call_1",
        "input": {"units": "metric", "city": "Oslo", "days": [3, 1.5, {"y": None, "b": True}]},
    },
]
RESULT: list[JSON] = [
    {"type": "tool_result", "tool_call_id": "call_1", "output": {"temp": -3.25, "sky": "clear"}}
]
METADATA: JSON = {"zone": "eu", "agent": {"version": 2, "name": "scout"}, "pinned": False}


def reads(api: Api, context_id: str) -> dict[str, bytes]:
    """The raw bytes of every read of a context."""
    base = f"/v1/contexts/{context_id}"
    paths = [base, f"{base}/context", f"{base}/tail", f"{base}/messages?after_seq=0"]
    return {path: api.get(path).content for path in paths}


def test_window_bytes_survive_a_snapshot_and_restarts(fresh_server: ServerProcess) -> None:
    fresh_server.args = ["--log-compaction-entries", "4"]
    fresh_server.start()
    api = connect(fresh_server)
    context_id = new_id()
    api.put(f"/v1/contexts/{context_id}", json={"token_budget": 100_000, "metadata": METADATA})
    api.append(context_id, {"role": "user", "parts": PARTS[:1], "metadata": METADATA})
    api.append(context_id, {"parts": PARTS[1:], "role": "assistant", "id": "a-1"})
    api.append(context_id, {"role": "tool", "parts": RESULT})
    for n in range(6):  # enough entries for a snapshot and a journal compaction
        api.append(context_id, {"role": "user", "parts": [{"text": f"n{n}", "type": "text"}]})
    snapshot = fresh_server.data_dir / "raft.snapshot"
    deadline = time.monotonic() + 20
    while not snapshot.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert snapshot.exists(), "no snapshot was written"
    before = reads(api, context_id)
    window = json.loads(before[f"/v1/contexts/{context_id}/context"])
    # What was sent comes back in the same key order (json.dumps keeps dict order).
    assert json.dumps(window["messages"][0]["parts"]) == json.dumps(PARTS[:1])
    assert json.dumps(window["messages"][0]["metadata"]) == json.dumps(METADATA)
    assert json.dumps(window["messages"][1]["parts"]) == json.dumps(PARTS[1:])
    api.close()

    fresh_server.restart()
    api = connect(fresh_server)
    assert reads(api, context_id) == before
    api.close()

    fresh_server.kill9()
    fresh_server.start()
    api = connect(fresh_server)
    assert reads(api, context_id) == before
    api.close()
