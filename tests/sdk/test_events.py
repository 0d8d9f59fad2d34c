"""``ctx.events()``: the documented SSE shape (through a mock transport, as the server
has no feed yet) and the clear error on the 404 today's server gives."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastpaca import (
    AsyncFastpaca,
    Event,
    EventsUnavailableError,
    Fastpaca,
    FastpacaError,
    NotFoundError,
)
from fastpaca._events import SSEDecoder

from tests.sdk._transports import ChunkedStream
from tests.support.server import ServerProcess

FEED = (
    ": keep-alive\n\n"
    "id: 3\n"
    "event: message.appended\n"
    'data: {"type": "message.appended", "version": 3, "seq": 2}\n\n'
    "retry: 1000\n\n"
    "id: 4\n"
    'data: {"type": "window.compacted",\n'
    'data:  "version": 4}\n\n'
    "id: 5\r\n"
    'data: {"type": "metadata.updated"}\r\n\r\n'
)


def feed_handler(seen: list[httpx.Request]):
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=ChunkedStream(FEED.encode())
        )

    return handler


EXPECTED = [
    Event("message.appended", 3, {"type": "message.appended", "version": 3, "seq": 2}),
    Event("window.compacted", 4, {"type": "window.compacted", "version": 4}),
    Event("metadata.updated", 5, {"type": "metadata.updated"}),
]


def test_events_follow_the_documented_shape() -> None:
    seen: list[httpx.Request] = []
    http = httpx.Client(transport=httpx.MockTransport(feed_handler(seen)))
    with Fastpaca(base_url="http://fastpaca.test", http_client=http) as client:
        events = list(client.context("chat").events(cursor=2))
    assert events == EXPECTED
    assert seen[0].url.path == "/v1/contexts/chat/events"
    assert seen[0].url.params["cursor"] == "2"
    assert seen[0].headers["accept"] == "text/event-stream"


def test_async_events_follow_the_documented_shape() -> None:
    seen: list[httpx.Request] = []

    async def main() -> list[Event]:
        http = httpx.AsyncClient(transport=httpx.MockTransport(feed_handler(seen)))
        async with AsyncFastpaca(base_url="http://fastpaca.test", http_client=http) as client:
            return [event async for event in (await client.context("chat")).events()]

    assert asyncio.run(main()) == EXPECTED
    assert "cursor" not in seen[0].url.params


def test_decoder_details() -> None:
    decoder = SSEDecoder()
    lines = ["id: 7", "data: {}", "", "data: x", "id: bad\0id", ""]
    messages = list(decoder.iter_lines(lines))
    assert [m.id for m in messages] == ["7", None] and decoder.last_event_id == "7"


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


def test_todays_server_has_no_feed(client: Fastpaca, context_id: str) -> None:
    ctx = client.context(context_id, budget=100)
    with pytest.raises(EventsUnavailableError) as error:
        next(ctx.events())
    assert error.value.status_code == 404
    assert "no live event feed" in str(error.value)
    assert isinstance(error.value, NotFoundError)


def test_an_unknown_context_is_still_not_found(server: ServerProcess, context_id: str) -> None:
    with Fastpaca(base_url=server.url) as client, pytest.raises(NotFoundError) as error:
        next(client.context(context_id).events(cursor=1))
    assert not isinstance(error.value, EventsUnavailableError)
