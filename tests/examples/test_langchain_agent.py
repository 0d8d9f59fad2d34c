"""examples/langchain-agent/agent.py, run as a subprocess against a real server."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.support.server import REPO, ServerProcess

AGENT = REPO / "examples" / "langchain-agent" / "agent.py"
TURNS = 5
WINDOW_LINE = re.compile(
    r"^\[turn (?P<turn>\d+)\] window: (?P<messages>\d+) messages, "
    r"(?P<used>\d+)/(?P<budget>\d+) tokens; "
    r"tool outputs: (?P<full>\d+) full, (?P<cleared>\d+) cleared; "
    r"log: (?P<log>\d+) messages, (?P<log_tokens>\d+) tokens$",
    re.MULTILINE,
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data").start()
    yield process
    process.stop()


def load_agent() -> ModuleType:
    spec = importlib.util.spec_from_file_location("langchain_agent_example", AGENT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_log(server: ServerProcess, context_id: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    with server.client() as http:
        while True:
            response = http.get(
                f"/v1/contexts/{context_id}/messages",
                params={"after_seq": messages[-1]["seq"] if messages else 0, "limit": 1000},
            )
            assert response.status_code == 200, response.text
            page = response.json()
            messages.extend(page["messages"])
            if not page["has_more"]:
                return messages


def test_the_agent_keeps_its_window_small_and_its_log_whole(server: ServerProcess) -> None:
    context_id = "example-langchain-agent"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FASTPACA_", "OPENAI_"))}
    run = subprocess.run(
        [
            sys.executable,
            str(AGENT),
            "--fastpaca-url",
            server.url,
            "--turns",
            str(TURNS),
            "--context-id",
            context_id,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ScriptedToolModel (offline)" in run.stdout

    # One window line per turn, each within the budget.
    lines = [
        {key: int(value) for key, value in match.groupdict().items()}
        for match in WINDOW_LINE.finditer(run.stdout)
    ]
    assert [line["turn"] for line in lines] == list(range(1, TURNS + 1)), run.stdout
    for line in lines:
        assert line["budget"] == 3000
        assert 0 < line["used"] <= line["budget"]
        assert 0 < line["messages"] <= line["log"]
        assert line["full"] >= 1
        assert line["log_tokens"] >= line["used"]
    # The first turn fits; later ones show the policy clearing old tool outputs.
    assert lines[0]["cleared"] == 0
    assert lines[-1]["cleared"] > 0, run.stdout
    assert lines[-1]["log_tokens"] > lines[-1]["used"] + 1000

    # The full log still holds every tool output, exactly as the tools returned it.
    agent = load_agent()
    log = read_log(server, context_id)
    assert log[-1]["seq"] == lines[-1]["log"]
    calls = {
        part["id"]: part
        for message in log
        for part in message["parts"]
        if part["type"] == "tool_call"
    }
    results = [
        part for message in log for part in message["parts"] if part["type"] == "tool_result"
    ]
    assert len(calls) >= TURNS and len(results) == len(calls)
    for result in results:
        assert "cleared" not in result
        call = calls[result["tool_call_id"]]
        expected = agent.TOOLS_BY_NAME[call["name"]].invoke(call["payload"])
        assert result["payload"] == expected
    assert sum(calls[r["tool_call_id"]]["name"] == "search" for r in results) == TURNS

    # While the window the model reads holds placeholders for some of them.
    window = httpx.get(f"{server.url}/v1/contexts/{context_id}/context", timeout=10).json()
    cleared = [
        part
        for message in window["messages"]
        for part in message["parts"]
        if part["type"] == "tool_result" and part.get("cleared") is True
    ]
    assert len(cleared) == lines[-1]["cleared"]
    assert {part["payload"] for part in cleared} == {agent.PLACEHOLDER}
    assert {part["tool_call_id"] for part in cleared} <= calls.keys()
