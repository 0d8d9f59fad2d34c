"""httpx transports that inject failures in front of a real server.

Each request takes the next step of a plan:

* ``"pass"`` — forward to the server;
* ``"refuse"`` — raise :class:`httpx.ConnectError` without sending anything;
* ``"lose"`` — forward to the server (so the write happens), then raise
  :class:`httpx.ReadError`: the answer is lost on the way back;
* ``"timeout"`` — raise :class:`httpx.ReadTimeout` without sending;
* ``(status, headers)`` — answer ``status`` with the server's error shape without
  sending anything.

Once the plan is used up every request passes. ``requests`` records what was sent.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

Step = str | tuple[int, dict[str, str]]

_CODES = {429: "rate_limited", 500: "internal_error", 503: "unavailable"}


def _error_response(request: httpx.Request, status: int, headers: dict[str, str]) -> httpx.Response:
    body = {"error": _CODES.get(status, "error"), "message": f"injected {status}"}
    return httpx.Response(status, json=body, headers=headers, request=request)


class _Recorder:
    def __init__(self, plan: list[Step]) -> None:
        self.plan = list(plan)
        self.requests: list[httpx.Request] = []

    def next_step(self, request: httpx.Request) -> Step:
        self.requests.append(request)
        return self.plan.pop(0) if self.plan else "pass"

    def bodies(self) -> list[Any]:
        return [
            json.loads(request.content) if request.content else None for request in self.requests
        ]


class FaultyTransport(httpx.BaseTransport, _Recorder):
    """Sync transport following a plan (see the module docstring)."""

    def __init__(self, plan: list[Step]) -> None:
        _Recorder.__init__(self, plan)
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        step = self.next_step(request)
        if step == "refuse":
            raise httpx.ConnectError("injected: connection refused", request=request)
        if step == "timeout":
            raise httpx.ReadTimeout("injected: read timeout", request=request)
        if isinstance(step, tuple):
            return _error_response(request, *step)
        response = self.inner.handle_request(request)
        if step == "lose":
            response.read()
            response.close()
            raise httpx.ReadError("injected: connection reset", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


class AsyncFaultyTransport(httpx.AsyncBaseTransport, _Recorder):
    """Async transport following a plan (see the module docstring)."""

    def __init__(self, plan: list[Step]) -> None:
        _Recorder.__init__(self, plan)
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        step = self.next_step(request)
        if step == "refuse":
            raise httpx.ConnectError("injected: connection refused", request=request)
        if step == "timeout":
            raise httpx.ReadTimeout("injected: read timeout", request=request)
        if isinstance(step, tuple):
            return _error_response(request, *step)
        response = await self.inner.handle_async_request(request)
        if step == "lose":
            await response.aread()
            await response.aclose()
            raise httpx.ReadError("injected: connection reset", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class ChunkedStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body delivered in small pieces (to split events across reads)."""

    def __init__(self, body: bytes, piece: int = 7) -> None:
        self.pieces = [body[i : i + piece] for i in range(0, len(body), piece)]

    def __iter__(self):
        yield from self.pieces

    async def __aiter__(self):
        for piece in self.pieces:
            yield piece
