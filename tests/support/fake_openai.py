"""A fake OpenAI-compatible Chat Completions server for tests, over real HTTP.

It runs an aiohttp server in a background thread (with its own event loop) on
a free loopback port and serves ``POST /v1/chat/completions`` with a valid,
non-streaming Chat Completions answer. Its behaviour can be changed while it
runs: ``reply`` (the answer text from the request body; ``None`` answers
``"content": null``), ``status`` (anything but 200 answers an OpenAI-style
error body with that status) and ``delay`` (seconds to wait before answering).

    with FakeOpenAI() as fake:
        client = Summarizer(SummarizerConfig(base_url=fake.base_url, model="m"))
        ...
        assert fake.requests[0]["model"] == "m"
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from aiohttp import web

_ROLE_LINE = re.compile(r"^(user|assistant|system|tool|developer|unknown): ", re.MULTILINE)


def default_reply(body: dict[str, Any]) -> str:
    """``"Summary of N messages: ..."``, derived deterministically from ``body``.

    N counts the transcript lines that start with a role (``user: ...``) in the
    request's user messages; the rest quotes the start of the first few.
    """
    texts = [
        m["content"]
        for m in body.get("messages") or []
        if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)
    ]
    lines = [line for text in texts for line in text.splitlines() if _ROLE_LINE.match(line)]
    quoted = "; ".join(" ".join(line.split())[:40] for line in lines[:5])
    return f"Summary of {len(lines)} messages: {quoted}"


class FakeOpenAI:
    """A Chat Completions endpoint at :attr:`base_url` (``http://127.0.0.1:PORT/v1``)."""

    def __init__(self) -> None:
        self.reply: Callable[[dict[str, Any]], str | None] = default_reply
        self.status = 200
        self.delay = 0.0
        self.base_url = ""
        self.port = 0
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._headers: list[dict[str, str]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0

    # -- what was received ----------------------------------------------------

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The JSON bodies received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def headers(self) -> list[dict[str, str]]:
        """The headers of each request (names lower-cased), oldest first (a copy)."""
        with self._lock:
            return [dict(h) for h in self._headers]

    @property
    def authorizations(self) -> list[str | None]:
        """The ``Authorization`` header of each request (``None`` when absent)."""
        return [h.get("authorization") for h in self.headers]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._headers.clear()

    # -- life cycle -------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        if self._thread is not None:
            raise RuntimeError("FakeOpenAI already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._open(sock))
            except BaseException as error:  # reported to start()
                failure.append(error)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                loop.close()

        self._thread = threading.Thread(target=serve, name="fake-openai", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("FakeOpenAI did not start within 10 s")
        if failure:
            self._thread.join(5)
            self._thread = None
            raise RuntimeError("FakeOpenAI failed to start") from failure[0]
        return self

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def _open(self, sock: socket.socket) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runner = runner

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        # Handlers still sleeping out a ``delay`` outlive the runner's shutdown timeout.
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # -- the endpoint ---------------------------------------------------------

    async def _chat_completions(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        with self._lock:
            self._requests.append(body if isinstance(body, dict) else {"_invalid": True})
            self._headers.append({k.lower(): v for k, v in request.headers.items()})
            self._counter += 1
            number = self._counter
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        status = self.status
        if not isinstance(body, dict):
            return _error(400, "The body is not a JSON object.", "invalid_request_error")
        if status != 200:
            # Echo some of the request, so tests can check it does not leak into errors.
            echoed = str(body.get("messages"))[:500]
            return _error(status, f"Fake failure for: {echoed}", "server_error")
        content = self.reply(body)
        prompt_tokens = sum(
            len(str(m.get("content", "")).split())
            for m in body.get("messages") or []
            if isinstance(m, dict)
        )
        completion_tokens = len(content.split()) if content else 0
        return web.json_response(
            {
                "id": f"chatcmpl-fake-{number}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake-model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )


def _error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": None}},
        status=status,
    )
