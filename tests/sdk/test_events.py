"""``ctx.events()``: the server's feed (real server), whole versions, resuming after a feed
ends without a miss or a repeat (mock transports), and the SSE decoding details."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from fastpaca import (
    APIConnectionError,
    AsyncFastpaca,
    Event,
    Fastpaca,
    FastpacaError,
    NotFoundError,
)
from fastpaca._events import SSEDecoder

from tests.sdk._transports import ChunkedStream
from tests.support.server import ServerProcess

TEXT = {"role": "user", "parts": [{"type": "text", "text": "hi"}]}


def _message(seq: int, version: int) -> str:
    return f'event: message\ndata: {{"type":"message","version":{version},"seq":{seq}}}\n\n'


def _context(version: int, last_seq: int) -> str:
    return (
        f"id: {version}\nevent: context\n"
        f'data: {{"type":"context","version":{version},"cause":"appended","last_seq":{last_seq},'
        '"used_tokens":1,"needs_compaction":false}\n\n'
    )


# --- against the server ---------------------------------------------------------------


def test_replay_then_live_then_the_end(client: Fastpaca, context_id: str) -> None:
    ctx = client.context(context_id, budget=1000)
    ctx.append(TEXT)
    ctx.append_many([TEXT, TEXT])
    seen: list[Event] = []

    def later() -> None:
        ctx.append(TEXT)
        ctx.delete()

    writer = threading.Timer(0.3, later)
    writer.start()
    try:
        seen = list(ctx.events())  # ends after `tombstoned`
    finally:
        writer.join()
    assert [(e.type, e.version) for e in seen] == [
        ("context", 1),
        ("message", 2),
        ("context", 2),
        ("message", 3),
        ("message", 3),
        ("context", 3),
        ("message", 4),
        ("context", 4),
        ("tombstoned", 5),
    ]
    assert [e.data["seq"] for e in seen if e.type == "message"] == [1, 2, 3, 4]
    assert seen[1].data["message"]["parts"] == TEXT["parts"]
    after = list(ctx.events(cursor=3, include_messages=False))
    assert [(e.type, e.version) for e in after] == [
        ("message", 4),
        ("context", 4),
        ("tombstoned", 5),
    ]
    assert "message" not in after[0].data


def test_an_unknown_context_is_not_found(server: ServerProcess, context_id: str) -> None:
    with Fastpaca(base_url=server.url) as client, pytest.raises(NotFoundError) as error:
        next(client.context(context_id).events(cursor=1))
    assert error.value.code == "not_found"


# --- resuming (mock transports) ----------------------------------------------------------


def _feeds(*bodies: str, seen: list[httpx.Request]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = bodies[len(seen) - 1] if len(seen) <= len(bodies) else ""
        return httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            stream=ChunkedStream(body.encode()),
        )

    return httpx.MockTransport(handler)


FIRST = (
    ": ping\n\n"
    + _message(1, 2)
    + _context(2, 1)
    + _message(2, 3)  # the batch of version 3 is cut off after its first message …
)
ERROR = (
    'event: error\ndata: {"type":"error","version":2,"reason":"slow_consumer",'
    '"message":"slow consumer: more than 8 versions behind; resume from cursor 2"}\n\n'
)
SECOND = _message(2, 3) + _message(3, 3) + _context(3, 3)  # … and sent whole again
TOMBSTONED = 'id: 4\nevent: tombstoned\ndata: {"type":"tombstoned","version":4}\n\n'


@pytest.mark.parametrize("ending", ["", ERROR], ids=["dropped", "slow-consumer"])
def test_a_feed_that_ends_is_resumed_after_the_last_whole_version(
    ending: str, sleeps: list[float]
) -> None:
    seen: list[httpx.Request] = []
    http = httpx.Client(transport=_feeds(FIRST + ending, SECOND + TOMBSTONED, seen=seen))
    with Fastpaca(base_url="http://fastpaca.test", http_client=http) as client:
        events = list(client.context("chat").events(cursor=1))
    assert [(e.type, e.version, e.data.get("seq")) for e in events] == [
        ("message", 2, 1),
        ("context", 2, None),
        ("message", 3, 2),
        ("message", 3, 3),
        ("context", 3, None),
        ("tombstoned", 4, None),
    ]
    assert [request.url.params["cursor"] for request in seen] == ["1", "2"]
    assert seen[0].headers["accept"] == "text/event-stream"
    assert len(sleeps) == 1


def test_async_events_resume_too(sleeps: list[float]) -> None:
    seen: list[httpx.Request] = []

    async def main() -> list[Event]:
        transport = _feeds(FIRST + ERROR, SECOND + TOMBSTONED, seen=seen)
        http = httpx.AsyncClient(transport=transport)
        async with AsyncFastpaca(base_url="http://fastpaca.test", http_client=http) as client:
            ctx = await client.context("chat")
            return [event async for event in ctx.events(include_messages=False)]

    events = asyncio.run(main())
    assert [e.version for e in events] == [2, 2, 3, 3, 3, 4]
    assert "cursor" not in seen[0].url.params
    assert seen[0].url.params["include_messages"] == "false"
    assert seen[1].url.params["cursor"] == "2"


def test_feeds_that_keep_ending_without_progress_give_up(sleeps: list[float]) -> None:
    seen: list[httpx.Request] = []
    http = httpx.Client(transport=_feeds(seen=seen))  # every feed: empty, at once
    with (
        Fastpaca(base_url="http://fastpaca.test", http_client=http, max_retries=2) as client,
        pytest.raises(APIConnectionError, match="resume with cursor=7"),
    ):
        list(client.context("quiet").events(cursor=7))
    assert len(seen) == 3
    assert len(sleeps) == 2


# --- decoding -------------------------------------------------------------------------------


def test_decoder_details() -> None:
    decoder = SSEDecoder()
    lines = ["id: 7", "data: {}", "", "data: x", "id: bad\0id", ""]
    messages = list(decoder.iter_lines(lines))
    assert [m.id for m in messages] == ["7", None] and decoder.last_event_id == "7"
    # Only CR, LF and CRLF end lines, also across pieces: U+2028 stays inside the data.
    pieces = ["data: a\u2028b\r", "\ndata: c\r", "\r", "id: 1\n", "data: d\n\n"]
    decoder = SSEDecoder()
    decoded = [m for piece in pieces for m in decoder.feed_text(piece)]
    assert [(m.data, m.id) for m in decoded] == [("a\u2028b\nc", None), ("d", "1")]


def test_a_malformed_event_is_a_clear_error() -> None:
    body = 'id: 1\ndata: {"version": 1}\n\n'
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text=body))
    with (
        Fastpaca(
            base_url="http://fastpaca.test", http_client=httpx.Client(transport=transport)
        ) as client,
        pytest.raises(FastpacaError, match="without type"),
    ):
        list(client.context("chat").events())
