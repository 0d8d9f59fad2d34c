"""examples/manual-compaction: compact.py and compact.mjs against a real server.

Each script creates a context under the ``manual`` policy, appends until an append
answers ``needs_compaction: true``, replaces the older part of the window with a
summary (``POST …/compact``) and goes on. The test checks, through the REST API,
that the compaction happened: one ``client`` compaction, the summary in front of
the recent messages (which kept their seq), and every message still in the log.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import REPO, ServerProcess

EXAMPLE = REPO / "examples" / "manual-compaction"
SDK_DIST = REPO / "sdk-typescript" / "dist" / "index.js"


@pytest.fixture
def fastpaca(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data").start()
    try:
        yield process
    finally:
        process.stop()


def run_example(command: list[str], url: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTPACA_")}
    env["FASTPACA_URL"] = url
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=30, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def check_compacted(url: str, output: str, prefix: str) -> None:
    match = re.search(rf"context ({prefix}-[0-9a-f]{{8}})", output)
    assert match, output
    context_id = match.group(1)
    with httpx.Client(base_url=url, timeout=10) as client:
        info: dict[str, Any] = client.get(f"/v1/contexts/{context_id}").json()
        window: dict[str, Any] = client.get(f"/v1/contexts/{context_id}/context").json()
        log = client.get(f"/v1/contexts/{context_id}/messages", params={"limit": 100}).json()

    assert info["policy"]["strategy"] == "manual"
    assert info["compactions"] == 1, info
    assert info["last_compaction"]["policy"] == "client"
    assert info["last_seq"] == 12  # the log keeps every message
    assert [m["seq"] for m in log["messages"]] == list(range(1, 13))

    messages = window["messages"]
    assert len(messages) < info["last_seq"]
    assert window["used_tokens"] <= info["trigger_ratio"] * info["token_budget"]
    assert not window["needs_compaction"]
    # the system prompt (kept with its seq), the summary (new: no seq), the recent ones
    assert messages[0]["seq"] == 1 and messages[0]["role"] == "system"
    summary = messages[1]
    assert summary["seq"] is None and summary["role"] == "system"
    assert summary["parts"][0]["text"].startswith("Summary of the earlier conversation:")
    assert summary["metadata"]["summary_of"] == [2, 3, 4, 5, 6, 7]
    assert [m["seq"] for m in messages[2:]] == [8, 9, 10, 11, 12]
    assert window["segments"][1]["type"] == "replacement"

    assert "needs_compaction=True" in output or "needs_compaction=true" in output
    assert "window before: 11 messages" in output
    assert "window after: 6 messages" in output


def test_python_example_compacts(fastpaca: ServerProcess) -> None:
    output = run_example([sys.executable, str(EXAMPLE / "compact.py")], fastpaca.url)
    check_compacted(fastpaca.url, output, "manual-compaction-py")


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.skipif(not SDK_DIST.exists(), reason="the TypeScript SDK is not built")
def test_typescript_example_compacts(fastpaca: ServerProcess) -> None:
    output = run_example(["node", str(EXAMPLE / "compact.mjs")], fastpaca.url)
    check_compacted(fastpaca.url, output, "manual-compaction-ts")


def test_python_example_without_a_server_says_so() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTPACA_")}
    env["FASTPACA_URL"] = "http://127.0.0.1:1"
    done = subprocess.run(
        [sys.executable, str(EXAMPLE / "compact.py")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert "make serve" in done.stdout
