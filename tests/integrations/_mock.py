"""Model providers mocked at the HTTP layer with respx, for the real ``openai`` and
``anthropic`` clients.

``openai`` 3.x accepts an ``httpx.Client``/``httpx.AsyncClient`` as ``http_client``,
so its requests go straight to a respx router through ``httpx.MockTransport``.
``anthropic`` 2.x only takes ``httpx2`` clients, which respx cannot see;
:func:`httpx2_client` bridges an ``httpx2`` transport to the same respx router, so
both providers are mocked the same way (routes, recorded calls, streamed bodies).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import httpx
import httpx2
import respx

from tests.sdk._transports import ChunkedStream


def sse_body(events: Iterable[tuple[str | None, Any]]) -> bytes:
    """An ``text/event-stream`` body: ``(event name or None, data)`` pairs; data that
    is not a string is sent as JSON."""
    lines = []
    for name, data in events:
        if name is not None:
            lines.append(f"event: {name}")
        lines.append(f"data: {data if isinstance(data, str) else json.dumps(data)}")
        lines.append("")
    return ("\n".join(lines) + "\n").encode()


def sse_response(events: Iterable[tuple[str | None, Any]], piece: int = 7) -> httpx.Response:
    """A 200 streamed in ``piece``-byte reads, so events (and JSON) split across reads."""
    return httpx.Response(
        200,
        headers={"content-type": "text/event-stream"},
        stream=ChunkedStream(sse_body(events), piece),
    )


class DroppedStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that sends ``body`` and then loses the connection."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def __iter__(self) -> Iterator[bytes]:
        yield self.body
        raise httpx.ReadError("connection reset by peer")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.body
        raise httpx.ReadError("connection reset by peer")


def dropped_response(events: Iterable[tuple[str | None, Any]]) -> httpx.Response:
    """A 200 whose stream breaks after ``events``."""
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=DroppedStream(sse_body(events))
    )


def request_json(route: respx.Route, index: int = -1) -> Any:
    """The JSON body of a call the route answered."""
    return json.loads(route.calls[index].request.content)


def _legacy_request(request: httpx2.Request) -> httpx.Request:
    return httpx.Request(
        request.method,
        str(request.url),
        headers=list(request.headers.multi_items()),
        content=request.content,
    )


def _httpx2_error(error: httpx.TransportError, request: httpx2.Request) -> Exception:
    return httpx2.ReadError(str(error), request=request)


class _Httpx2Bridge(httpx2.BaseTransport, httpx2.AsyncBaseTransport):
    """An ``httpx2`` transport that answers from a respx router."""

    def __init__(self, router: respx.MockRouter) -> None:
        self.router = router

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        request.read()
        response = self.router.handler(_legacy_request(request))
        if response.is_stream_consumed:  # respx pre-reads plain bodies
            return httpx2.Response(
                response.status_code,
                headers=list(response.headers.multi_items()),
                content=response.content,
            )

        def body() -> Iterator[bytes]:
            try:
                yield from response.iter_raw()
            except httpx.TransportError as error:
                raise _httpx2_error(error, request) from error

        return httpx2.Response(
            response.status_code, headers=list(response.headers.multi_items()), content=body()
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await request.aread()
        response = await self.router.async_handler(_legacy_request(request))
        if response.is_stream_consumed:
            return httpx2.Response(
                response.status_code,
                headers=list(response.headers.multi_items()),
                content=response.content,
            )

        async def body() -> AsyncIterator[bytes]:
            try:
                async for piece in response.aiter_raw():
                    yield piece
            except httpx.TransportError as error:
                raise _httpx2_error(error, request) from error

        return httpx2.Response(
            response.status_code, headers=list(response.headers.multi_items()), content=body()
        )


def httpx2_client(router: respx.MockRouter) -> httpx2.Client:
    """An ``httpx2.Client`` whose requests the respx ``router`` answers."""
    return httpx2.Client(transport=_Httpx2Bridge(router))


def httpx2_async_client(router: respx.MockRouter) -> httpx2.AsyncClient:
    """An ``httpx2.AsyncClient`` whose requests the respx ``router`` answers."""
    return httpx2.AsyncClient(transport=_Httpx2Bridge(router))
