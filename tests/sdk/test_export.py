"""``ctx.export()`` / ``ctx.export_lines()``: the whole history as JSON Lines, against the
real server (sync and async, equal to paging ``GET …/messages``), and with mock
transports for what a real server does rarely (503 ``archive_unavailable``, a body
that breaks off in the middle)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastpaca import (
    APIConnectionError,
    AsyncFastpaca,
    Fastpaca,
    FastpacaError,
    NotFoundError,
    ServiceUnavailableError,
    StoredMessage,
)
from fastpaca._export import LineSplitter

from tests.sdk._transports import ChunkedStream
from tests.support.server import ServerProcess

COUNT = 120


def _history() -> list[dict[str, Any]]:
    """120 messages of every kind, with text that a naive line splitter would break."""
    messages: list[dict[str, Any]] = []
    for index in range(COUNT):
        kind = index % 4
        if kind == 0:
            text = f"question {index}: é ✓ 🦙 and a line\nbreak, a U+2028 \u2028 and a tab\t"
            messages.append({"role": "user", "parts": [{"type": "text", "text": text}]})
        elif kind == 1:
            messages.append(
                {
                    "id": f"call-{index}",
                    "role": "assistant",
                    "parts": [
                        {"type": "reasoning", "text": "think"},
                        {"type": "tool_call", "id": f"c{index}", "name": "add", "input": [1, 2]},
                    ],
                    "metadata": {"step": index},
                }
            )
        elif kind == 2:
            messages.append(
                {
                    "role": "tool",
                    "parts": [
                        {"type": "tool_result", "tool_call_id": f"c{index - 1}", "output": 3}
                    ],
                }
            )
        else:
            messages.append(
                {"role": "assistant", "parts": [{"type": "text", "text": f"answer {index}"}]}
            )
    return messages


@pytest.fixture(scope="module")
def filled(server: ServerProcess) -> str:
    """A context holding the 120 messages (shared: exports change nothing)."""
    context_id = "sdk-export-120"
    with Fastpaca(base_url=server.url) as client:
        ctx = client.context(context_id, budget=1_000_000)
        history = _history()
        ctx.append_many(history[:50])
        for message in history[50:]:
            ctx.append(message)
    return context_id


# --- against the server ---------------------------------------------------------------


def test_export_is_the_history(server: ServerProcess, filled: str) -> None:
    with Fastpaca(base_url=server.url) as client:
        ctx = client.context(filled)
        exported = list(ctx.export())
        assert exported == list(ctx.iter_history())
        assert [m["seq"] for m in exported] == list(range(1, COUNT + 1))
        assert exported[0]["parts"][0]["text"].endswith("\u2028 and a tab\t")
        lines = list(ctx.export_lines())
        assert [json.loads(line) for line in lines] == exported
        assert ctx.get().archived_seq == 0  # this server has no archive


def test_export_lines_are_the_servers_body_byte_for_byte(
    server: ServerProcess, filled: str
) -> None:
    with Fastpaca(base_url=server.url) as client:
        lines = list(client.context(filled).export_lines())
    with server.client() as http:
        response = http.get(f"/v1/contexts/{filled}/export")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert response.headers["x-fastpaca-last-seq"] == str(COUNT)
    assert "".join(line + "\n" for line in lines).encode() == response.content
    assert len(lines) == COUNT


def test_async_export_is_the_history(server: ServerProcess, filled: str) -> None:
    async def main() -> tuple[list[StoredMessage], list[StoredMessage], list[str]]:
        async with AsyncFastpaca(base_url=server.url) as client:
            ctx = await client.context(filled)
            exported = [message async for message in ctx.export()]
            page = await ctx.messages(limit=1000)
            lines = [line async for line in ctx.export_lines()]
            return exported, list(page), lines

    exported, paged, lines = asyncio.run(main())
    assert exported == paged
    assert len(exported) == COUNT
    assert [json.loads(line) for line in lines] == exported


def test_an_empty_context_exports_nothing_and_a_missing_one_is_not_found(
    client: Fastpaca, context_id: str
) -> None:
    ctx = client.context(context_id, budget=1000)
    assert list(ctx.export()) == []
    assert ctx.info is not None and ctx.info.archived_seq == 0
    with pytest.raises(NotFoundError) as raised:
        list(client.context(context_id + "-missing").export())
    assert raised.value.code == "not_found"


def test_a_tombstoned_context_still_exports(client: Fastpaca, context_id: str) -> None:
    ctx = client.context(context_id, budget=1000)
    ctx.append({"role": "user", "parts": [{"type": "text", "text": "kept"}]})
    ctx.delete()
    assert [m["parts"][0]["text"] for m in ctx.export()] == ["kept"]


def test_stopping_early_closes_the_download(server: ServerProcess, filled: str) -> None:
    with Fastpaca(base_url=server.url) as client:
        ctx = client.context(filled)
        exports = ctx.export()
        first = [next(exports) for _ in range(3)]
        exports.close()  # a generator: closing it closes the response
        assert [m["seq"] for m in first] == [1, 2, 3]
        assert ctx.get().last_seq == COUNT  # the client still works


# --- failures (mock transports) --------------------------------------------------------


def _archive_down(inner: httpx.BaseTransport, failures: int, seen: list[httpx.Request]):
    """Answer 503 ``archive_unavailable`` ``failures`` times, then pass to ``inner``."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) <= failures:
            body = {"error": "archive_unavailable", "message": "the archive is down"}
            return httpx.Response(503, json=body, headers={"Retry-After": "1"})
        return inner.handle_request(request)

    return httpx.MockTransport(handler)


def test_archive_unavailable_is_retried_like_unavailable(
    server: ServerProcess, filled: str, sleeps: list[float]
) -> None:
    seen: list[httpx.Request] = []
    transport = _archive_down(httpx.HTTPTransport(), 2, seen)
    http = httpx.Client(transport=transport)
    with Fastpaca(base_url=server.url, http_client=http, max_retries=2) as client:
        exported = list(client.context(filled).export())
    assert len(exported) == COUNT
    assert len(seen) == 3
    assert sleeps == [1.0, 1.0]  # Retry-After honoured
    assert seen[0].headers["accept"] == "application/x-ndjson"
    assert seen[0].url.path == f"/v1/contexts/{filled}/export" and not seen[0].url.query


def test_archive_unavailable_gives_up_after_max_retries(
    server: ServerProcess, filled: str, sleeps: list[float]
) -> None:
    seen: list[httpx.Request] = []
    http = httpx.Client(transport=_archive_down(httpx.HTTPTransport(), 10, seen))
    with (
        Fastpaca(base_url=server.url, http_client=http, max_retries=1) as client,
        pytest.raises(ServiceUnavailableError) as raised,
    ):
        list(client.context(filled).export())
    assert raised.value.code == "archive_unavailable"
    assert len(seen) == 2 and len(sleeps) == 1


class BreakingStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that sends ``body`` in small pieces, then breaks off (a reset connection)."""

    def __init__(self, body: bytes, piece: int = 11) -> None:
        self.pieces = [body[i : i + piece] for i in range(0, len(body), piece)]

    def __iter__(self) -> Iterator[bytes]:
        yield from self.pieces
        raise httpx.ReadError("injected: connection reset")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece
        raise httpx.ReadError("injected: connection reset")


LINES = [
    json.dumps({"seq": seq, "id": f"m{seq}", "role": "user", "parts": [], "token_count": 1})
    for seq in range(1, 8)
]
BODY = "".join(line + "\n" for line in LINES).encode()


def _bodies(*streams: httpx.SyncByteStream, seen: list[httpx.Request]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        stream = streams[min(len(seen), len(streams)) - 1]
        headers = {"Content-Type": "application/x-ndjson"}
        return httpx.Response(200, headers=headers, stream=stream)

    return httpx.MockTransport(handler)


def test_a_download_that_breaks_off_starts_again_without_repeats(sleeps: list[float]) -> None:
    seen: list[httpx.Request] = []
    cut = len(LINES[0]) * 3 + 5  # in the middle of the fourth line
    transport = _bodies(BreakingStream(BODY[:cut]), ChunkedStream(BODY), seen=seen)
    with Fastpaca(
        base_url="http://fastpaca.test", http_client=httpx.Client(transport=transport)
    ) as client:
        lines = list(client.context("chat").export_lines())
    assert lines == LINES
    assert len(seen) == 2 and len(sleeps) == 1


def test_async_downloads_start_again_too(sleeps: list[float]) -> None:
    seen: list[httpx.Request] = []

    async def main() -> list[StoredMessage]:
        transport = _bodies(BreakingStream(BODY[:100]), ChunkedStream(BODY), seen=seen)
        async with AsyncFastpaca(
            base_url="http://fastpaca.test", http_client=httpx.AsyncClient(transport=transport)
        ) as client:
            ctx = await client.context("chat")
            return [message async for message in ctx.export()]

    assert [m["seq"] for m in asyncio.run(main())] == list(range(1, 8))
    assert len(seen) == 2


def test_a_download_that_keeps_breaking_off_without_progress_gives_up(
    sleeps: list[float],
) -> None:
    seen: list[httpx.Request] = []
    transport = _bodies(BreakingStream(BODY[:10]), seen=seen)
    http = httpx.Client(transport=transport)
    with (
        Fastpaca(base_url="http://fastpaca.test", http_client=http, max_retries=2) as client,
        pytest.raises(APIConnectionError, match="kept breaking off"),
    ):
        list(client.context("chat").export())
    assert len(seen) == 3


def test_a_line_that_is_not_a_message_is_an_error() -> None:
    transport = _bodies(ChunkedStream(b'{"seq": 1}\n[1, 2]\n'), seen=[])
    http = httpx.Client(transport=transport)
    with Fastpaca(base_url="http://fastpaca.test", http_client=http) as client:
        exports = client.context("chat").export()
        assert next(exports) == {"seq": 1}
        with pytest.raises(FastpacaError, match="not a JSON object"):
            next(exports)


def test_line_splitter_cuts_only_at_newlines_and_decodes_whole_lines() -> None:
    text = '{"a": "é\u2028🦙"}\n\n{"b": 1}\r\n{"c": 2}'
    encoded = text.encode()
    for piece in (1, 2, 3, 5):
        splitter = LineSplitter()
        lines = []
        for start in range(0, len(encoded), piece):
            lines += splitter.feed(encoded[start : start + piece])
        lines += splitter.finish()
        assert lines == ['{"a": "é\u2028🦙"}', '{"b": 1}', '{"c": 2}'], piece
