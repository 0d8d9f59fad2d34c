"""The quick starts in the package READMEs run as pasted: in a fresh interpreter,
against a real server, with the model providers' base URLs pointed at a local fake
that streams canned answers (the clients' own ``*_BASE_URL`` variables)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.integrations._mock import sse_body
from tests.integrations.test_anthropic import text_events
from tests.integrations.test_openai import responses_events, text_stream
from tests.support.server import REPO, ServerProcess

ANSWERS = {
    "/v1/chat/completions": sse_body(text_stream("Seine, ", "Loire, ", "Rhône.")),
    "/v1/responses": sse_body(responses_events()),
    "/v1/messages": sse_body(text_events("Seine, ", "Loire, ", "Rhône.")),
}


class FakeProvider(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = ANSWERS.get(self.path.split("?", 1)[0])
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeProvider)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def python_blocks(readme: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", readme.read_text(), re.S)


def run(code: str, server: ServerProcess, provider: str) -> str:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FASTPACA_", "OPENAI_", "ANTHROPIC_"))
    }
    env |= {
        "FASTPACA_URL": server.url,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": f"{provider}/v1",
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "ANTHROPIC_BASE_URL": provider,
    }
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_sdk_quickstart(server: ServerProcess, provider: str) -> None:
    output = run(python_blocks(REPO / "sdk-python" / "README.md")[0], server, provider)
    assert "Paris." in output and "appended as seq 3" in output
    assert "3 assistant Paris." in output


def test_openai_quickstart(server: ServerProcess, provider: str) -> None:
    quickstart, responses = python_blocks(REPO / "integrations" / "openai" / "README.md")[:2]
    output = run(quickstart + responses, server, provider)
    assert "Seine, Loire, Rhône." in output and "appended as seq 2 with 3 tokens" in output
    assert "Checking now." in output


def test_anthropic_quickstart(server: ServerProcess, provider: str) -> None:
    output = run(
        python_blocks(REPO / "integrations" / "anthropic" / "README.md")[0], server, provider
    )
    assert "Seine, Loire, Rhône." in output and "appended as seq 3 with 9 tokens" in output


def test_langchain_quickstart(server: ServerProcess, provider: str) -> None:
    quickstart, runnable = python_blocks(REPO / "integrations" / "langchain" / "README.md")[:2]
    output = run(quickstart + runnable, server, provider)
    assert "['Hi, I am Ada.', 'Hello, Ada!']" in output
    assert "You are Ada." in output and "appended as seq 4" in output
    assert output.rstrip().endswith("Hi again, Ada.")
