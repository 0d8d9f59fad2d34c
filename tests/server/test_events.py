"""Live events (``GET …/stream`` websocket, ``GET …/events`` SSE) against real server processes.

Every event read here is checked against the spec's schemas, and every feed
against the feed's invariants (:func:`check_feed`): versions in order and
without a gap or a repeat, each version whole (its ``message`` events, then
exactly one closing event), seqs gap-free.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import statistics
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest

from tests.server._api import metric_value, new_id, text_message
from tests.support.server import ServerProcess
from tests.support.spec import validate_event

JSON = dict[str, Any]
CLOSING = ("context", "compaction", "tombstoned")
API_KEY = "events-test-key"
HEARTBEAT = 0.5
IDLE = 3.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Short heartbeats and idle timeout, a generous hot tail."""
    process = ServerProcess(
        tmp_path_factory.mktemp("events") / "data",
        "--events-heartbeat",
        str(HEARTBEAT),
        "--events-idle-timeout",
        str(IDLE),
        "--events-retain",
        "400",
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def bounded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A hot tail of 5 versions per context and subscriber queues of 8 versions."""
    process = ServerProcess(
        tmp_path_factory.mktemp("bounded") / "data",
        "--events-retain",
        "5",
        "--events-queue",
        "8",
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """An API key and room for two streams."""
    process = ServerProcess(
        tmp_path_factory.mktemp("guarded") / "data",
        "--events-max-connections",
        "2",
        api_key=API_KEY,
    ).start()
    yield process
    process.stop()


# --- clients ------------------------------------------------------------------------


def _headers(server: ServerProcess) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.api_key}"} if server.api_key else {}


class Feed:
    """One subscription (websocket or SSE), read in a task of its own into ``events``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.events: list[JSON] = []
        self.pings = 0
        self.ended: str | None = None
        """Why the feed ended: ``close <code> <reason>``, ``eof``, or ``error <reason>``."""
        self.task: asyncio.Task[None] | None = None
        self.websocket: aiohttp.ClientWebSocketResponse | None = None
        self._changed = asyncio.Event()

    def add(self, event: JSON) -> None:
        validate_event(event, websocket=self.kind == "websocket")
        if event["type"] == "ping":
            self.pings += 1
        elif event["type"] == "error":
            self.ended = f"error {event['reason']} {event['version']}"
        else:
            self.events.append(event)
        self._changed.set()

    async def until(self, condition: Any, timeout: float = 10.0) -> None:
        """Wait until ``condition(self)`` holds (or fail after ``timeout`` seconds)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not condition(self):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"{self.kind} feed: condition not met; {self.summary()}")
            self._changed.clear()
            if self.task is not None and self.task.done() and not condition(self):
                self.task.result()  # its error, if it failed
                raise AssertionError(f"{self.kind} feed ended early; {self.summary()}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.2))

    async def until_version(self, version: int, timeout: float = 10.0) -> None:
        await self.until(lambda feed: feed.version >= version, timeout)

    @property
    def version(self) -> int:
        """The version of the last closing event read (what a client resumes from)."""
        closed = [e["version"] for e in self.events if e["type"] in (*CLOSING, "gap")]
        return closed[-1] if closed else 0

    def summary(self) -> str:
        shown = [(e["type"], e["version"]) for e in self.events[-6:]]
        return f"{len(self.events)} events, last {shown}, ended {self.ended!r}"


async def _read_websocket(
    feed: Feed, websocket: aiohttp.ClientWebSocketResponse, pong: bool
) -> None:
    while True:
        message = await websocket.receive()
        if message.type != aiohttp.WSMsgType.TEXT:
            break
        event = json.loads(message.data)
        if event["type"] == "ping" and pong:
            await websocket.send_str('{"type":"pong"}')
        feed.add(event)
    reason = message.extra if message.type == aiohttp.WSMsgType.CLOSE else message.type.name
    feed.ended = f"close {websocket.close_code} {reason}"
    feed._changed.set()


def complete_versions(events: list[JSON]) -> list[JSON]:
    """``events`` without a last version cut off before its closing event."""
    end = len(events)
    while end and events[end - 1]["type"] == "message":
        end -= 1
    return events[:end]


async def _read_sse(feed: Feed, response: httpx.Response) -> None:
    data: list[str] = []
    kind = None
    event_id = None
    async for line in response.aiter_lines():
        if line.startswith(":"):
            feed.pings += 1
        elif line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and data:
            event = json.loads("\n".join(data))
            assert event["type"] == kind, (kind, event)
            if event["type"] in (*CLOSING, "gap"):
                assert event_id == str(event["version"]), (event_id, event)
            else:
                assert event_id is None, "only the closing event of a version has an id"
            feed.add(event)
            data, kind, event_id = [], None, None
    if feed.ended is None:
        feed.ended = "eof"
    feed._changed.set()


def _query(params: dict[str, Any]) -> dict[str, str]:
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}


class Subscriber:
    """Opens feeds on one server and closes them all at the end."""

    def __init__(self, server: ServerProcess) -> None:
        self.session = aiohttp.ClientSession(server.url, headers=_headers(server))
        self.http = httpx.AsyncClient(base_url=server.url, headers=_headers(server), timeout=30)
        self.feeds: list[Feed] = []
        self._closers: list[Any] = []

    async def websocket(self, context_id: str, *, pong: bool = True, **params: Any) -> Feed:
        """A websocket feed; with ``pong=False`` it never answers the server's pings."""
        feed = Feed("websocket")
        websocket = await self.session.ws_connect(
            f"/v1/contexts/{context_id}/stream", params=_query(params)
        )
        feed.task = asyncio.create_task(_read_websocket(feed, websocket, pong))
        feed.websocket = websocket
        self._closers.append(websocket.close)
        self.feeds.append(feed)
        return feed

    async def sse(
        self, context_id: str, *, headers: dict[str, str] | None = None, **params: Any
    ) -> Feed:
        feed = Feed("sse")
        request = self.http.build_request(
            "GET", f"/v1/contexts/{context_id}/events", params=_query(params), headers=headers
        )
        response = await self.http.send(request, stream=True)
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"] == "text/event-stream"
        feed.task = asyncio.create_task(_read_sse(feed, response))
        self._closers.append(response.aclose)
        self.feeds.append(feed)
        return feed

    async def close(self) -> None:
        for feed in self.feeds:
            if feed.task is not None:
                feed.task.cancel()
        for close in self._closers:
            with contextlib.suppress(Exception):
                await close()
        await self.session.close()
        await self.http.aclose()

    # --- REST shortcuts -----------------------------------------------------------

    async def create(self, **body: Any) -> str:
        context_id = new_id("events")
        response = await self.http.put(
            f"/v1/contexts/{context_id}", json={"token_budget": 1_000_000, **body}
        )
        assert response.status_code == 200, response.text
        return context_id

    async def append(self, context_id: str, *texts: str, **body: Any) -> JSON:
        messages = [text_message(text) for text in texts]
        payload = {"message": messages[0]} if len(messages) == 1 else {"messages": messages}
        response = await self.http.post(
            f"/v1/contexts/{context_id}/messages", json={**payload, **body}
        )
        assert response.status_code == 201, response.text
        result: JSON = response.json()
        return result

    async def get(self, path: str) -> JSON:
        response = await self.http.get(path)
        assert response.status_code == 200, response.text
        body: JSON = response.json()
        return body


def scenario(server: ServerProcess, body: Any, timeout: float = 30.0) -> None:
    """Run ``body(subscriber)`` on a fresh event loop, with every feed closed afterwards."""

    async def main() -> None:
        subscriber = Subscriber(server)
        try:
            await asyncio.wait_for(body(subscriber), timeout)
        finally:
            await subscriber.close()

    asyncio.run(main())


def check_feed(events: list[JSON], cursor: int, last_version: int) -> list[JSON]:
    """The feed's invariants; returns its ``message`` events.

    After an optional leading ``gap``, versions run from the cursor (or the
    gap) to ``last_version`` without a hole or a repeat; each version is its
    ``message`` events followed by exactly one closing event; seqs are
    gap-free.
    """
    expected = cursor + 1
    if events and events[0]["type"] == "gap":
        gap = events.pop(0)
        assert gap["expected"] == cursor + 1 and gap["actual"] > gap["expected"], gap
        assert gap["version"] == gap["actual"] - 1
        expected = gap["actual"]
    messages: list[JSON] = []
    pending: list[JSON] = []
    for event in events:
        assert event["type"] != "gap", f"a gap in the middle of a feed: {event}"
        assert event["version"] == expected, f"version {event['version']}, expected {expected}"
        if event["type"] == "message":
            pending.append(event)
            continue
        assert event["type"] in CLOSING, event
        if pending:
            assert event["type"] == "context" and event["cause"] == "appended", event
            assert event["last_seq"] == pending[-1]["seq"]
        messages += pending
        pending = []
        expected += 1
    assert not pending, "a version's messages without its closing event"
    assert expected == last_version + 1, f"the feed ends at {expected - 1}, not {last_version}"
    seqs = [m["seq"] for m in messages]
    if seqs:
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    return messages


# --- replay then live -------------------------------------------------------------------


def test_replay_then_live_under_concurrent_appends(server: ServerProcess) -> None:
    """Feeds opened during a burst of concurrent appends, from several cursors, over both
    transports: each sees exactly the versions after its cursor, once, in order."""

    async def body(subscriber: Subscriber) -> None:
        context_id = await subscriber.create()
        for number in range(5):
            await subscriber.append(
                context_id, *[f"early {number}.{i}" for i in range(number % 3 + 1)]
            )
        rng = random.Random(7)

        async def writer(name: str) -> None:
            for number in range(25):
                size = rng.choice([1, 1, 2, 3])
                await subscriber.append(context_id, *[f"{name} {number}.{i}" for i in range(size)])

        writers = [asyncio.create_task(writer(f"w{n}")) for n in range(3)]
        opened: list[tuple[Feed, int]] = []
        for delay, kind, cursor in [
            (0.0, "websocket", 0),
            (0.05, "sse", 0),
            (0.1, "websocket", 3),
            (0.2, "sse", 6),
            (0.3, "websocket", 20),
        ]:
            await asyncio.sleep(delay)
            if kind == "websocket":
                feed = await subscriber.websocket(context_id, cursor=cursor)
            else:
                feed = await subscriber.sse(context_id, cursor=cursor)
            opened.append((feed, cursor))
        await asyncio.gather(*writers)
        context = await subscriber.get(f"/v1/contexts/{context_id}")
        log = (await subscriber.get(f"/v1/contexts/{context_id}/messages?limit=1000"))["messages"]
        assert len(log) == context["last_seq"]
        for feed, cursor in opened:
            await feed.until_version(context["version"])
            messages = check_feed(list(feed.events), cursor, context["version"])
            assert messages[-1]["seq"] == context["last_seq"]
            for event in messages:
                assert event["message"] == log[event["seq"] - 1]
            if cursor == 0:
                assert [m["seq"] for m in messages] == [m["seq"] for m in log]

    scenario(server, body)


def test_every_change_is_an_event(server: ServerProcess) -> None:
    async def body(subscriber: Subscriber) -> None:
        context_id = await subscriber.create(policy={"strategy": "manual"}, token_budget=100)
        feed = await subscriber.websocket(context_id)
        lean = await subscriber.websocket(context_id, include_messages=False)
        await subscriber.append(context_id, "one", "two")
        await subscriber.http.patch(
            f"/v1/contexts/{context_id}/metadata", json={"metadata": {"a": 1}}
        )
        await subscriber.http.patch(
            f"/v1/contexts/{context_id}/metadata", json={"metadata": {"a": 1}}
        )
        response = await subscriber.http.put(
            f"/v1/contexts/{context_id}",
            json={"token_budget": 10, "policy": {"strategy": "manual"}},
        )
        assert response.status_code == 200
        replayed = {"message": text_message("three"), "idempotency_key": "k"}
        for _ in range(2):  # the replay changes nothing: no event
            await subscriber.http.post(f"/v1/contexts/{context_id}/messages", json=replayed)
        window = await subscriber.get(f"/v1/contexts/{context_id}/context")
        compacted = await subscriber.http.post(
            f"/v1/contexts/{context_id}/compact",
            json={
                "replacement": [text_message("summary", role="assistant"), window["messages"][-1]]
            },
        )
        assert compacted.status_code == 200
        context = await subscriber.get(f"/v1/contexts/{context_id}")
        await feed.until_version(context["version"])
        await lean.until_version(context["version"])
        summary = [(e["type"], e.get("cause"), e["version"]) for e in feed.events]
        assert summary == [
            ("context", "created", 1),
            ("message", None, 2),
            ("message", None, 2),
            ("context", "appended", 2),
            ("context", "metadata", 3),
            ("context", "config", 4),
            ("message", None, 5),
            ("context", "appended", 5),
            ("compaction_record", None, 6),
            ("compaction", None, 6),
        ]
        assert feed.events[-5]["needs_compaction"] is True  # 10-token budget, manual
        record = feed.events[-2]["record"]
        assert (record["cause"], record["policy"], record["actions"][0]["reason"]) == (
            "compact",
            "client",
            "replaced",
        )
        window = await subscriber.get(f"/v1/contexts/{context_id}/context")
        assert feed.events[-1]["segments"] == window["segments"]
        assert feed.events[-1]["used_tokens"] == window["used_tokens"] == context["used_tokens"]
        assert [(e["type"], e["version"]) for e in lean.events] == [
            (e["type"], e["version"]) for e in feed.events
        ]
        assert all("message" not in e for e in lean.events)
        assert feed.events[1]["message"]["parts"] == [{"type": "text", "text": "one"}]

    scenario(server, body)


# --- resume -------------------------------------------------------------------------------


def test_resume_from_a_cursor_after_a_disconnect(server: ServerProcess) -> None:
    async def body(subscriber: Subscriber) -> None:
        context_id = await subscriber.create()
        first = await subscriber.websocket(context_id)
        await subscriber.append(context_id, "a")
        await subscriber.append(context_id, "b", "c", "d")  # one version, three messages
        await first.until_version(3)
        # Say the client processed the batch's first message only, then lost the
        # connection: its cursor is still 2, the version of the last closing event it
        # processed (a cursor means "after everything at that version").
        cursor = 2
        assert first.websocket is not None
        await first.websocket.close()
        await subscriber.append(context_id, "e")
        resumed = await subscriber.websocket(context_id, cursor=cursor)
        await subscriber.append(context_id, "f")
        await resumed.until_version(5)
        messages = check_feed(list(resumed.events), cursor, 5)
        assert [m["seq"] for m in messages] == [2, 3, 4, 5, 6]
        # SSE: Last-Event-ID (what EventSource sends when it reconnects) wins over cursor.
        sse = await subscriber.sse(context_id, cursor=0, headers={"Last-Event-ID": "3"})
        await sse.until_version(5)
        assert [m["seq"] for m in check_feed(list(sse.events), 3, 5)] == [5, 6]

    scenario(server, body)


def test_the_hot_tail_is_refilled_from_the_journal_at_start(fresh_server: ServerProcess) -> None:
    fresh_server.start()
    context_ids: list[str] = []

    async def write(subscriber: Subscriber) -> None:
        context_ids.append(await subscriber.create())
        await subscriber.append(context_ids[0], "before", "the restart")
        await subscriber.append(context_ids[0], "again")

    scenario(fresh_server, write)
    fresh_server.restart()

    async def resume(subscriber: Subscriber) -> None:
        feed = await subscriber.sse(context_ids[0], cursor=0)
        await feed.until_version(3)
        assert [m["seq"] for m in check_feed(list(feed.events), 0, 3)] == [1, 2, 3]

    scenario(fresh_server, resume)


# --- the end of a feed --------------------------------------------------------------------


def test_a_tombstone_ends_every_feed(server: ServerProcess) -> None:
    async def body(subscriber: Subscriber) -> None:
        context_id = await subscriber.create()
        await subscriber.append(context_id, "hello")
        live_ws = await subscriber.websocket(context_id, cursor=2)
        live_sse = await subscriber.sse(context_id, cursor=2)
        deleted = (await subscriber.http.delete(f"/v1/contexts/{context_id}")).json()
        for feed in (live_ws, live_sse):
            await feed.until(lambda f: f.ended is not None)
            assert [(e["type"], e["version"]) for e in feed.events] == [
                ("tombstoned", deleted["version"])
            ]
        assert live_ws.ended == "close 1000 context tombstoned"
        assert live_sse.ended == "eof"
        # Subscribing afterwards: the replay, then `tombstoned`, then the close; and a
        # cursor already at the tombstone still learns that nothing more will come.
        for cursor, expected in [
            (0, ["context", "message", "context", "tombstoned"]),
            (3, ["tombstoned"]),
        ]:
            for feed in (
                await subscriber.websocket(context_id, cursor=cursor),
                await subscriber.sse(context_id, cursor=cursor),
            ):
                await feed.until(lambda f: f.ended is not None)
                assert [e["type"] for e in feed.events] == expected, feed.summary()

    scenario(server, body)


def test_gap_when_the_cursor_is_older_than_the_hot_tail(bounded_server: ServerProcess) -> None:
    async def body(subscriber: Subscriber) -> None:
        context_id = await subscriber.create()
        for number in range(8):
            await subscriber.append(context_id, f"m{number}")  # versions 2 … 9
        feed = await subscriber.websocket(context_id, cursor=1)
        sse = await subscriber.sse(context_id, cursor=0)
        await subscriber.append(context_id, "live")  # version 10
        for stream, cursor in ((feed, 1), (sse, 0)):
            await stream.until_version(10)
            gap = stream.events[0]
            # --events-retain 5: versions 5 … 9 were kept when the feed opened.
            assert gap == {"type": "gap", "version": 4, "expected": cursor + 1, "actual": 5}
            messages = check_feed(list(stream.events), cursor, 10)
            assert [m["seq"] for m in messages] == [4, 5, 6, 7, 8, 9]
        within = await subscriber.websocket(context_id, cursor=7)
        await within.until_version(10)
        assert [e["type"] for e in within.events] == ["message", "context"] * 3

    scenario(bounded_server, body)


def test_heartbeats_and_the_idle_close(server: ServerProcess) -> None:
    async def body(subscriber: Subscriber) -> None:
        context_id = await subscriber.create()
        silent = await subscriber.websocket(context_id, pong=False)
        answering = await subscriber.websocket(context_id)
        sse = await subscriber.sse(context_id)
        started = time.monotonic()
        await silent.until(lambda f: f.ended is not None, timeout=IDLE + 3)
        waited = time.monotonic() - started
        assert silent.ended is not None and silent.ended.startswith("close 1008 no message (pong)")
        assert IDLE - 0.5 <= waited <= IDLE + 2, waited
        assert silent.pings >= int(IDLE / HEARTBEAT) - 2
        assert answering.ended is None and answering.pings >= silent.pings - 1
        assert sse.ended is None and sse.pings >= 2
        await subscriber.append(context_id, "still there")
        await answering.until_version(2)
        await sse.until_version(2)

    scenario(server, body)


# --- limits and auth ----------------------------------------------------------------------


def test_auth_and_the_connection_limit(guarded_server: ServerProcess) -> None:
    async def body(subscriber: Subscriber) -> None:
        context_id = await subscriber.create()
        async with aiohttp.ClientSession(guarded_server.url) as anonymous:
            for params in ({}, {"api_key": API_KEY}):  # the key goes in the header only
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await anonymous.ws_connect(f"/v1/contexts/{context_id}/stream", params=params)
                assert refused.value.status == 401
        async with httpx.AsyncClient(base_url=guarded_server.url) as anonymous_http:
            response = await anonymous_http.get(f"/v1/contexts/{context_id}/events")
            assert response.status_code == 401
            assert response.json()["error"] == "unauthorized"
        first = await subscriber.websocket(context_id)
        await subscriber.sse(context_id)
        for _ in range(2):  # both feeds are at the limit (2)
            with pytest.raises(aiohttp.WSServerHandshakeError) as full:
                await subscriber.session.ws_connect(f"/v1/contexts/{context_id}/stream")
            assert full.value.status == 503
            response = await subscriber.http.get(f"/v1/contexts/{context_id}/events")
            assert response.status_code == 503
            assert response.json()["error"] == "too_many_connections"
            assert response.headers["Retry-After"] == "1"
        await subscriber.append(context_id, "over the limit")
        await first.until_version(2)
        assert first.websocket is not None
        await first.websocket.close()
        deadline = time.monotonic() + 5
        while True:  # the slot is free once the server has seen the close
            try:
                again = await subscriber.websocket(context_id, cursor=1)
                break
            except aiohttp.WSServerHandshakeError as error:
                assert error.status == 503 and time.monotonic() < deadline
                await asyncio.sleep(0.05)
        await again.until_version(2)

    scenario(guarded_server, body)


def _small_receive_buffer(addr_info: Any) -> socket.socket:
    """A client socket that takes little before the server's writes block (the buffer
    size is set before connecting, so the TCP window is small from the start)."""
    family, kind, protocol, _, _ = addr_info
    sock = socket.socket(family, kind, protocol)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


def _stalled_sse(server: ServerProcess, path: str) -> socket.socket:
    """An SSE request on a socket with a small receive buffer, not read until later."""
    sock = _small_receive_buffer((socket.AF_INET, socket.SOCK_STREAM, 0, "", ()))
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return sock


def _read_to_end(sock: socket.socket) -> bytes:
    sock.settimeout(15)
    received = bytearray()
    while chunk := sock.recv(65536):
        received += chunk
    return bytes(received)


def test_a_slow_consumer_is_disconnected_and_appends_do_not_wait(
    bounded_server: ServerProcess,
) -> None:
    """Two clients that stop reading (one per transport) fill their buffers and queues;
    they are closed with a reason while appends go on at their usual speed and a client
    that reads gets every version."""

    async def body(subscriber: Subscriber) -> None:
        context_id = await subscriber.create(policy={"strategy": "manual"})
        text = "x " * 50_000  # ~100 KB per message: the buffers fill within a few MB
        payload = {"message": {"role": "user", "parts": [{"type": "text", "text": text}]}}

        async def append() -> float:
            started = time.perf_counter()
            response = await subscriber.http.post(
                f"/v1/contexts/{context_id}/messages", json=payload
            )
            assert response.status_code == 201, response.text
            return time.perf_counter() - started

        baseline = [await append() for _ in range(15)]  # versions 2 … 16
        metrics_before = (await subscriber.http.get("/metrics")).text
        stalled_session = aiohttp.ClientSession(
            bounded_server.url, connector=aiohttp.TCPConnector(socket_factory=_small_receive_buffer)
        )
        cursor = 16
        stalled_sse = _stalled_sse(
            bounded_server, f"/v1/contexts/{context_id}/events?cursor={cursor}"
        )
        try:
            stalled_ws = await stalled_session.ws_connect(
                f"/v1/contexts/{context_id}/stream", params={"cursor": cursor}
            )
            reading = await subscriber.websocket(context_id, cursor=cursor)
            during = [await append() for _ in range(80)]  # versions 17 … 96
            # Neither stalled client read a byte so far; now they do, and find the end.
            texts = []
            while True:
                message = await stalled_ws.receive(timeout=10)
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                texts.append(json.loads(message.data))
            assert message.type == aiohttp.WSMsgType.CLOSE
            assert stalled_ws.close_code == 1013
            assert str(message.extra).startswith("slow consumer: more than 8 versions behind")
            error = texts[-1]
            assert error["type"] == "error" and error["reason"] == "slow_consumer"
            validate_event(error, websocket=True)
            assert cursor < error["version"] < 96
            # A version cut off in the middle by the close is resumed whole, so drop it.
            events = complete_versions(texts[:-1])
            got = check_feed(events, cursor, events[-1]["version"])
            assert error["version"] <= got[-1]["version"] <= error["version"] + 1
            raw = await asyncio.to_thread(_read_to_end, stalled_sse)
            assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
            final = raw[raw.rindex(b"event: error\ndata: ") :].split(b"\n\n", 1)[0]
            sse_error = json.loads(final.split(b"data: ", 1)[1])
            validate_event(sse_error)
            assert sse_error["reason"] == "slow_consumer"
            assert cursor < sse_error["version"] < 96
        finally:
            await stalled_session.close()
            stalled_sse.close()
        await reading.until_version(96)
        check_feed(list(reading.events), cursor, 96)
        assert reading.ended is None
        assert max(during) < 2.0, f"an append took {max(during):.2f} s"
        assert statistics.median(during) < 3 * statistics.median(baseline) + 0.05, (
            statistics.median(baseline),
            statistics.median(during),
        )
        deadline = time.monotonic() + 10
        while True:
            metrics = (await subscriber.http.get("/metrics")).text
            ended = {
                feed: metric_value(
                    metrics, "fastpaca_stream_ends_total", feed=feed, reason="slow_consumer"
                )
                - metric_value(
                    metrics_before, "fastpaca_stream_ends_total", feed=feed, reason="slow_consumer"
                )
                for feed in ("websocket", "sse")
            }
            if ended == {"websocket": 1, "sse": 1} or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert ended == {"websocket": 1, "sse": 1}

    scenario(bounded_server, body, timeout=45)
