"""SIGTERM drains a node: real server processes (docs/deployment.md, "Stopping a node").

* Under load (threads appending with idempotency keys, retrying 503s and
  connection errors with the same key), a SIGTERM and a restart on the same
  data directory lose nothing: every acknowledged append is stored once, at
  its seq, seqs are gap-free, and every failure a writer saw was retryable
  (a 503 with ``Retry-After`` or a connection error, never a hang). The
  process exits 0 within the grace plus a few seconds.
* A slow request in flight (a preview over 20,000 messages) finishes with 200.
* Open feeds end with the reason ``shutting_down``: SSE with ``retry:``, the
  websocket with its ``error`` message and close code 1001.
* A request on a kept-alive connection during the drain gets ``503
  shutting_down`` with ``Retry-After: 1`` and ``Connection: close``; a new
  connection is refused.
* ``--shutdown-grace 1``: requests that cannot finish (an upload that
  stalls, a preview whose worker thread is busy for 30 s) are cancelled and
  the process exits within about a second, without waiting for the thread.
* A second SIGTERM during the drain exits at once (status 1).
* ``ReplicatedStore.close`` stops the Raft thread and closes the journal.
* In process: a cancelled request whose response has begun loses its
  connection instead of getting a 503 in the middle of its body.

The stop of a cluster's leader is in tests/cluster/test_cluster_shutdown.py.

Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from fastpaca_server.api.drain import Drain
from fastpaca_server.api.events import EventHub
from fastpaca_server.replication import ReplicatedStore

from tests.durability.helpers import (
    RETRYABLE,
    RetryingWriters,
    VariantServer,
    check_history,
    drained,
    manual_context,
    sigterm,
    text_message,
    wait_exit,
    wait_for_acknowledgements,
)
from tests.support.server import ServerProcess
from tests.support.spec import validate_event

DEFAULT_GRACE = 10.0
SLACK = 4.0
"""Seconds beyond the grace a stop may take: cancelled requests answer (0.5 s),
connections close (1 s at most), the store closes, busy worker threads are
given 0.5 s. Usually the whole stop takes well under a second."""
CONTEXTS = ["stop-a", "stop-b", "stop-c"]
THREADS = 6


# --- helpers -----------------------------------------------------------------------


def create_context(server: ServerProcess, context_id: str, **config: Any) -> None:
    with server.client() as client:
        body = {"token_budget": 10_000_000, "policy": {"strategy": "manual", "config": {}}}
        response = client.put(f"/v1/contexts/{context_id}", json={**body, **config})
        assert response.status_code == 200, response.text


def listening(server: ServerProcess) -> bool:
    try:
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
    except OSError:
        return False
    return True


def wait_not_listening(server: ServerProcess, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while listening(server):
        assert time.monotonic() < deadline, "the listening socket is still open"
        time.sleep(0.01)


def stalled_upload(server: ServerProcess, context_id: str) -> socket.socket:
    """An append whose body stops after a few bytes: its handler waits for the rest."""
    body = json.dumps({"message": text_message("stalled", "never sent in full")}).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    head = (
        f"POST /v1/contexts/{context_id}/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body[:5])
    return sock


def read_to_end(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset counts as a close)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    return b"".join(chunks)


def assert_shutting_down(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "1"
    assert response.headers["Connection"] == "close"
    assert response.json()["error"] == "shutting_down"


class Call(threading.Thread):
    """One request on its own thread; ``result`` is the response or the error."""

    def __init__(self, client: httpx.Client, method: str, url: str, **kwargs: Any) -> None:
        super().__init__(daemon=True)
        self.client, self.method, self.url, self.kwargs = client, method, url, kwargs
        self.result: httpx.Response | Exception | None = None

    def run(self) -> None:
        try:
            self.result = self.client.request(self.method, self.url, **self.kwargs)
        except Exception as error:  # the test looks at it
            self.result = error

    def response(self, timeout: float) -> httpx.Response | Exception:
        self.join(timeout)
        assert not self.is_alive(), f"{self.method} {self.url}: no answer within {timeout:g} s"
        assert self.result is not None
        return self.result


# --- the tests -------------------------------------------------------------------------


def test_stop_under_load_loses_nothing(tmp_path: Path, cleanup: list[ServerProcess]) -> None:
    server = ServerProcess(tmp_path / "data")
    cleanup.append(server)
    server.start()
    for context_id in CONTEXTS:
        create_context(server, context_id)
    workload = RetryingWriters(server, CONTEXTS, THREADS).start()
    try:
        for _ in range(2):
            wait_for_acknowledgements(workload, workload.acknowledged() + 60)
            status, _ = wait_exit(server, sigterm(server), DEFAULT_GRACE + SLACK)
            assert status == 0, server.output()
            drained(server)
            server.start()  # the same data directory and port; the writers keep going
        wait_for_acknowledgements(workload, workload.acknowledged() + 60)
    finally:
        workload.stop()
    assert not workload.errors, workload.errors[:10]
    with server.client() as client:
        problems = check_history(client, workload)
    assert not problems, problems[:20]
    acknowledged = workload.acknowledged()
    assert acknowledged >= 180
    assert set(workload.seen) <= RETRYABLE, workload.seen


def test_a_slow_request_in_flight_finishes(tmp_path: Path, cleanup: list[ServerProcess]) -> None:
    """A preview that recounts 20,000 messages with another tokenizer (about a second)."""
    server = ServerProcess(tmp_path / "data")
    cleanup.append(server)
    server.start()
    create_context(server, "slow")
    with server.client() as client:
        for batch in range(20):
            messages = [
                text_message(f"m{batch}-{n}", f"message {batch}/{n} " + "lorem ipsum dolor " * 30)
                for n in range(1000)
            ]
            response = client.post("/v1/contexts/slow/messages", json={"messages": messages})
            assert response.status_code == 201, response.text[:300]
        preview = Call(
            client, "POST", "/v1/contexts/slow/preview", json={"tokenizer": "cl100k_base"}
        )
        preview.start()
        time.sleep(0.2)
        started = sigterm(server)
        response = preview.response(30)
    assert isinstance(response, httpx.Response), response
    assert response.status_code == 200, response.text[:300]
    assert response.json()["config"]["tokenizer"] == "cl100k_base"
    status, _ = wait_exit(server, started, DEFAULT_GRACE + SLACK)
    assert status == 0
    counts = drained(server)
    assert counts["finished"] >= 1 and counts["cancelled"] == 0, counts


async def _read_sse(session: aiohttp.ClientSession, url: str, lines: list[str]) -> None:
    async with session.get(url) as response:
        assert response.status == 200
        async for raw in response.content:
            lines.append(raw.decode().rstrip("\n"))


async def _read_websocket(
    session: aiohttp.ClientSession, url: str, messages: list[Any]
) -> tuple[int | None, str]:
    async with session.ws_connect(url) as websocket:
        while True:
            message = await websocket.receive(timeout=20)
            if message.type != aiohttp.WSMsgType.TEXT:
                return websocket.close_code, str(message.extra)
            messages.append(json.loads(message.data))


def test_feeds_end_with_a_reconnect_hint(tmp_path: Path, cleanup: list[ServerProcess]) -> None:
    server = ServerProcess(tmp_path / "data")
    cleanup.append(server)
    server.start()
    create_context(server, "feeds")

    async def scenario() -> tuple[list[str], list[Any], tuple[int | None, str]]:
        lines: list[str] = []
        messages: list[Any] = []
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(server.url, timeout=timeout) as session:
            sse = asyncio.create_task(_read_sse(session, "/v1/contexts/feeds/events", lines))
            websocket = asyncio.create_task(
                _read_websocket(session, "/v1/contexts/feeds/stream", messages)
            )
            body = {"message": text_message("one", "hello")}
            # Both feeds are open once both replayed version 1 (the context's creation).
            deadline = time.monotonic() + 10
            while not (any(line.startswith("id: 1") for line in lines) and messages):
                assert time.monotonic() < deadline, (lines, messages)
                await asyncio.sleep(0.02)
            appended = await session.post("/v1/contexts/feeds/messages", json=body)
            assert appended.status == 201
            while not any(line.startswith("id: 2") for line in lines) or len(messages) < 3:
                assert time.monotonic() < deadline, (lines, messages)
                await asyncio.sleep(0.02)
            sigterm(server)
            await asyncio.wait_for(sse, 15)
            closed = await asyncio.wait_for(websocket, 15)
        return lines, messages, closed

    started = time.monotonic()
    lines, messages, (close_code, close_reason) = asyncio.run(scenario())
    status, _ = wait_exit(server, started, DEFAULT_GRACE + SLACK)
    assert status == 0
    # SSE: the last message says why, where to resume, and when to reconnect.
    final = "\n".join(lines).rstrip("\n").rsplit("\n\n", 1)[-1].split("\n")
    assert final[:2] == ["retry: 1000", "event: error"], lines[-6:]
    error = json.loads(final[2].removeprefix("data: "))
    validate_event(error)
    assert error["reason"] == "shutting_down" and error["version"] == 2, error
    # The websocket: the same error message, then close code 1001 with the cursor.
    assert messages[-1]["type"] == "error" and messages[-1]["reason"] == "shutting_down"
    validate_event(messages[-1], websocket=True)
    assert messages[-1]["version"] == 2
    assert close_code == 1001
    assert close_reason == "server shutting down; resume from cursor 2"
    assert drained(server)["feeds"] == 2


def test_a_request_on_a_kept_alive_connection_is_refused(
    tmp_path: Path, cleanup: list[ServerProcess]
) -> None:
    """During the drain (held open by a preview busy for 30 s, grace 3 s)."""
    server = VariantServer(tmp_path / "data", "--shutdown-grace", "3", patches=["slow-preview"])
    cleanup.append(server)
    server.start()
    create_context(server, "kept")
    with server.client() as client, server.client() as other:
        assert client.get("/v1/contexts/kept").status_code == 200  # the connection stays open
        preview = Call(other, "POST", "/v1/contexts/kept/preview", json={})
        preview.start()
        time.sleep(0.3)
        started = sigterm(server)
        wait_not_listening(server)
        refused = client.get("/v1/contexts/kept")
        assert_shutting_down(refused)
        assert "shutting down" in refused.json()["message"]
        with pytest.raises(httpx.ConnectError):  # that connection is closed; a new one is refused
            client.get("/health/ready")
        cancelled = preview.response(10)
    assert isinstance(cancelled, httpx.Response), cancelled
    assert_shutting_down(cancelled)  # cancelled at the end of the grace, before it answered
    assert "idempotency key" in cancelled.json()["message"]
    status, seconds = wait_exit(server, started, 3 + SLACK)
    assert status == 0
    assert seconds >= 3
    counts = drained(server)
    assert counts["cancelled"] == 1 and counts["refused"] >= 1, counts


def test_the_grace_bounds_the_stop(tmp_path: Path, cleanup: list[ServerProcess]) -> None:
    """``--shutdown-grace 1``: a stalled upload and a 30 s preview are cancelled."""
    server = VariantServer(tmp_path / "data", "--shutdown-grace", "1", patches=["slow-preview"])
    cleanup.append(server)
    server.start()
    create_context(server, "bounded")
    with server.client() as client:
        preview = Call(client, "POST", "/v1/contexts/bounded/preview", json={})
        preview.start()
        upload = stalled_upload(server, "bounded")
        time.sleep(0.3)
        started = sigterm(server)
        status, seconds = wait_exit(server, started, 1 + SLACK)
        answered = preview.response(5)
    assert status == 0, server.output()
    assert 1 <= seconds < 1 + SLACK
    assert isinstance(answered, httpx.Response), answered
    assert_shutting_down(answered)
    raw = read_to_end(upload)
    assert raw == b"" or raw.startswith(b"HTTP/1.1 503 "), raw[:300]
    assert raw == b"" or b'"error": "shutting_down"' in raw, raw[:600]
    assert drained(server)["cancelled"] == 2
    assert "worker threads are still busy" in server.output()
    server.start()
    with server.client() as client:  # the upload was never stored
        assert client.get("/v1/contexts/bounded").json()["last_seq"] == 0


def test_a_second_signal_exits_at_once(tmp_path: Path, cleanup: list[ServerProcess]) -> None:
    server = ServerProcess(tmp_path / "data")
    cleanup.append(server)
    server.start()
    create_context(server, "twice")
    upload = stalled_upload(server, "twice")  # holds the drain for the whole grace (10 s)
    time.sleep(0.3)
    sigterm(server)
    wait_not_listening(server)
    status, _ = wait_exit(server, sigterm(server), 2)  # not the 10 s of the grace
    upload.close()
    assert status == 1
    assert "a second signal while stopping: exiting at once" in server.output()


def test_close_stops_raft_and_closes_the_journal(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = ReplicatedStore(str(tmp_path / "data"))
        await store.wait_ready()
        await store.submit(manual_context("closing"))
        journal = store.journal
        thread = store._node._SyncObj__thread
        store.close()
        assert not thread.is_alive()
        assert journal._handle.closed

    asyncio.run(scenario())


def test_a_cancelled_request_answers_503_unless_its_answer_began() -> None:
    """In process: the drain's cancel of a request that has not begun its response
    gives a 503; of one that has (a stream), a dropped connection, never a second
    status line in the middle of the body."""

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(60)
        return web.Response(text="late")

    async def streaming(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first")
        await asyncio.sleep(60)
        return response

    async def scenario() -> None:
        drain = Drain()
        app = web.Application(middlewares=[drain.middleware()])
        app.on_response_prepare.append(drain.on_response_prepare)
        app.router.add_get("/slow", slow)
        app.router.add_get("/stream", streaming)
        async with TestServer(app) as server, aiohttp.ClientSession() as session:
            waiting = asyncio.create_task(session.get(server.make_url("/slow")))
            stream = await session.get(server.make_url("/stream"))
            assert await stream.content.readexactly(5) == b"first"
            await asyncio.sleep(0.1)
            report = await drain.drain(0.2, EventHub())
            assert (report.finished, report.cancelled) == (0, 2), report
            answered = await asyncio.wait_for(waiting, 5)
            assert answered.status == 503 and answered.headers["Retry-After"] == "1"
            assert (await answered.json())["error"] == "shutting_down"
            with pytest.raises(aiohttp.ClientPayloadError):
                await asyncio.wait_for(stream.content.read(), 5)

    asyncio.run(scenario())
