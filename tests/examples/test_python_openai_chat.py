"""examples/python-openai-chat/app.py, run as a subprocess (``--fake-model``) against a
real server: two chat turns stream their answers, and both the example's
``GET /history`` and the server's own log hold them in order."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import REPO, ServerProcess, free_port

APP = REPO / "examples" / "python-openai-chat" / "app.py"
CONVERSATION = "example-python-openai-chat"
SYSTEM_PROMPT = "You are a friendly, concise assistant."
FIRST_ANSWER = (
    '[fake model, turn 1] You said: "What is Fastpaca?". '
    "Hello! I am a canned answer from the fake model, streamed word by word."
)
SECOND_ANSWER = (
    '[fake model, turn 2] You said: "And what did I just ask?". '
    "I remember this conversation: Fastpaca handed me the window with your earlier turns."
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data").start()
    yield process
    process.stop()


def start_app(server: ServerProcess, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FASTPACA_", "OPENAI_"))}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                *(sys.executable, str(APP), "--fake-model", "--fake-delay", "0.01"),
                *("--fastpaca-url", server.url, "--port", str(port)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
    return process, f"http://127.0.0.1:{port}"


def wait_listening(process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the example exited: {log_path.read_text(errors='replace')}")
        try:
            httpx.get(f"{url}/history/not-yet", timeout=1)  # 404 once it listens
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"the example did not listen: {log_path.read_text(errors='replace')}")


def chat(http: httpx.Client, message: str) -> tuple[httpx.Response, list[str]]:
    """POST one message; the answer's pieces as they arrived."""
    pieces: list[str] = []
    with http.stream("POST", f"/chat/{CONVERSATION}", json={"message": message}) as response:
        assert response.status_code == 200, response.read()
        pieces.extend(piece for piece in response.iter_text() if piece)
    return response, pieces


def text_of(message: dict[str, Any]) -> str:
    return "".join(p["text"] for p in message["parts"] if p.get("type") == "text")


def test_two_turns_stream_and_land_in_the_log(server: ServerProcess, tmp_path: Path) -> None:
    log_path = tmp_path / "app.log"
    process, url = start_app(server, log_path)
    try:
        wait_listening(process, url, log_path)
        with httpx.Client(base_url=url, timeout=10) as http:
            response, pieces = chat(http, "What is Fastpaca?")
            assert response.headers["content-type"].startswith("text/plain")
            assert response.headers["x-user-seq"] == "2"  # after the system prompt
            assert "".join(pieces) == FIRST_ANSWER
            assert len(pieces) > 1  # streamed, not sent in one piece

            # The second answer counts two user turns: the model saw the window.
            response, pieces = chat(http, "And what did I just ask?")
            assert response.headers["x-user-seq"] == "4"
            assert "".join(pieces) == SECOND_ANSWER

            # The example's history, one page of 2 and then the rest.
            first = http.get(f"/history/{CONVERSATION}", params={"limit": 2})
            assert first.status_code == 200, first.text
            assert first.json()["has_more"] is True
            rest = http.get(
                f"/history/{CONVERSATION}", params={"after_seq": first.json()["next_after_seq"]}
            )
            assert rest.status_code == 200, rest.text
            assert rest.json()["has_more"] is False
            history = first.json()["messages"] + rest.json()["messages"]
            assert http.get("/history/no-such-chat").status_code == 404

        expected = [
            ("system", SYSTEM_PROMPT),
            ("user", "What is Fastpaca?"),
            ("assistant", FIRST_ANSWER),
            ("user", "And what did I just ask?"),
            ("assistant", SECOND_ANSWER),
        ]
        assert [(m["role"], m["text"]) for m in history] == expected
        assert [m["seq"] for m in history] == [1, 2, 3, 4, 5]

        # The server's own log holds the same, each answer appended once.
        with server.client() as fastpaca:
            page = fastpaca.get(f"/v1/contexts/{CONVERSATION}/messages", params={"limit": 100})
            assert page.status_code == 200, page.text
            log = page.json()["messages"]
            assert [(m["role"], text_of(m)) for m in log] == expected
            assert [m["seq"] for m in log] == [1, 2, 3, 4, 5]
            assert log[2]["metadata"] == {"model": "fake-model"}
            info = fastpaca.get(f"/v1/contexts/{CONVERSATION}").json()
            assert info["token_budget"] == 8000
            assert info["policy"]["strategy"] == "last_n"
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
