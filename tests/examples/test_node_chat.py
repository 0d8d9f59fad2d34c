"""examples/nextjs-chat: the Next.js-style route handlers, served by node:http, end to end.

A real Fastpaca server, the example's ``server.mjs`` in front of it (mock model, no
key), a chat turn read as the SSE UI message stream ``useChat`` reads, then the
history route and Fastpaca's own log.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import REPO, ServerProcess, free_port

EXAMPLE = REPO / "examples" / "nextjs-chat"
CANNED = "This is a canned answer from the mock model."

pytestmark = [
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),
    pytest.mark.skipif(
        not (REPO / "sdk-typescript" / "dist" / "index.js").exists()
        or not (REPO / "sdk-typescript" / "node_modules" / "ai").exists(),
        reason="the TypeScript SDK is not built (make install)",
    ),
]


@pytest.fixture
def fastpaca(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data").start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def chat_app(tmp_path: Path, fastpaca: ServerProcess) -> Iterator[str]:
    """``node examples/nextjs-chat/server.mjs`` on a free port; its base URL."""
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FASTPACA_", "OPENAI_")) and k not in ("PORT", "HOST")
    }
    env.update(FASTPACA_URL=fastpaca.url, PORT=str(port), HOST="127.0.0.1")
    log_path = tmp_path / "node.log"
    with open(log_path, "wb") as log:
        node = subprocess.Popen(
            ["node", str(EXAMPLE / "server.mjs")],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            if node.poll() is not None:
                raise AssertionError(f"server.mjs exited: {log_path.read_text()}")
            try:
                httpx.get(f"{url}/api/history", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"server.mjs not up: {log_path.read_text()}") from None
                time.sleep(0.05)
        yield url
    finally:
        node.kill()
        node.wait(10)


def sse_chunks(body: str) -> list[dict[str, Any]]:
    """The UI message stream's chunks: one JSON object per ``data:`` event, up to ``[DONE]``."""
    chunks: list[dict[str, Any]] = []
    for event in body.split("\n\n"):
        data = "\n".join(
            line[len("data: ") :] for line in event.splitlines() if line.startswith("data: ")
        )
        if data == "" or data == "[DONE]":
            continue
        chunks.append(json.loads(data))
    return chunks


def answer_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(chunk["delta"] for chunk in chunks if chunk["type"] == "text-delta")


def chat(url: str, conversation_id: str, message: str) -> list[dict[str, Any]]:
    response = httpx.post(
        f"{url}/api/chat",
        json={"conversationId": conversation_id, "message": message},
        timeout=15,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    return sse_chunks(response.text)


def text_of(message: dict[str, Any]) -> str:
    return "".join(part.get("text", "") for part in message["parts"] if part["type"] == "text")


def test_chat_streams_the_answer_and_both_turns_are_in_the_log(
    chat_app: str, fastpaca: ServerProcess
) -> None:
    conversation = "nextjs-chat-e2e"

    first = chat(chat_app, conversation, "Hello, Fastpaca!")
    types = [chunk["type"] for chunk in first]
    assert types[0] == "start"
    assert types[-1] == "finish"
    assert "error" not in types
    assert types.count("text-delta") > 1  # streamed, not one blob
    text = answer_text(first)
    assert CANNED in text
    assert 'It saw 1 message of this conversation; the last one said: "Hello, Fastpaca!"' in text

    # The second turn's model call gets the whole first turn from the window.
    second = answer_text(chat(chat_app, conversation, "And again?"))
    assert 'It saw 3 messages of this conversation; the last one said: "And again?"' in second

    history = httpx.get(
        f"{chat_app}/api/history", params={"conversationId": conversation}, timeout=10
    )
    assert history.status_code == 200, history.text
    page = history.json()
    assert page["has_more"] is False
    assert page["next_offset"] is None
    assert [(m["role"], text_of(m)) for m in page["messages"]] == [
        ("user", "Hello, Fastpaca!"),
        ("assistant", text),
        ("user", "And again?"),
        ("assistant", second),
    ]
    assert page["messages"][1]["id"] == first[0]["messageId"]  # the id useChat was shown

    # Paging: offset 2 is the older turn.
    older = httpx.get(
        f"{chat_app}/api/history",
        params={"conversationId": conversation, "offset": 2, "limit": 2},
        timeout=10,
    ).json()
    assert [m["seq"] for m in older["messages"]] == [1, 2]

    # Fastpaca's own log holds both messages of each turn, stored once.
    with fastpaca.client() as client:
        log = client.get(f"/v1/contexts/{conversation}/messages")
    assert log.status_code == 200, log.text
    assert [(m["seq"], m["role"], text_of(m)) for m in log.json()["messages"]] == [
        (1, "user", "Hello, Fastpaca!"),
        (2, "assistant", text),
        (3, "user", "And again?"),
        (4, "assistant", second),
    ]


def test_bad_requests_are_refused(chat_app: str) -> None:
    missing = httpx.post(f"{chat_app}/api/chat", json={"message": "hi"}, timeout=10)
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "invalid_request"

    unknown = httpx.get(
        f"{chat_app}/api/history", params={"conversationId": "never-used"}, timeout=10
    )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"

    assert httpx.get(f"{chat_app}/api/chat", timeout=10).status_code == 405
