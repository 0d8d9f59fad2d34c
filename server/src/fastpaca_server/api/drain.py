"""The drain of a node that stops (SIGTERM, SIGINT): finish what is in flight, refuse the rest.

:class:`Drain` is one middleware and one method. The middleware keeps the
set of requests in flight (from the start of the handler until the response
is written). :meth:`Drain.drain` (called by the CLI once the listening
socket is closed) then:

1. refuses every request that reaches a handler from now on, on a
   connection that was already open: ``503 {"error": "shutting_down"}``
   with ``Retry-After: 1`` and ``Connection: close``;
2. ends every live event feed with the reason ``shutting_down`` (the feed
   handlers send the cursor to resume from, then close);
3. waits until the requests in flight are answered, for at most the grace
   (``--shutdown-grace``);
4. cancels the requests still running. One that has not started its
   response answers ``503 shutting_down`` (a write it was waiting for may or
   may not be stored: a retry with the same idempotency key is safe either
   way); one that has (a feed, an export) loses its connection.

Both outcomes are retryable, and every write acknowledged before is
already on disk (the journal is fsynced before an acknowledgement).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import attrs
from aiohttp import web
from aiohttp.typedefs import Middleware

from .errors import Handler, error_response
from .events import EventHub

SHUTTING_DOWN = "shutting_down"
CANCEL_WAIT_SECONDS = 0.5
"""How long cancelled handlers get to answer (their 503) before the connections close."""

_STARTED = web.RequestKey("fastpaca_response_started", bool)

_REFUSED = (
    "This node is shutting down and takes no new requests. Retry after the Retry-After "
    "seconds: on another node, or on this one once it is back."
)
_CANCELLED = (
    "This node is shutting down and stopped this request before it finished "
    "(--shutdown-grace). A write may or may not have been stored: retry it with the same "
    "idempotency key, which stores it exactly once either way."
)


def shutting_down(message: str = _REFUSED) -> web.Response:
    """``503 shutting_down`` with ``Retry-After: 1``, closing the connection after it."""
    response = error_response(503, SHUTTING_DOWN, message, {"Retry-After": "1"})
    response.force_close()  # sends Connection: close; the client reconnects elsewhere
    return response


@attrs.frozen
class DrainReport:
    finished: int
    """Requests in flight when the drain began that ended by themselves (feeds included)."""
    cancelled: int
    """Requests still running at the end of the grace, cancelled."""
    feeds: int
    """Live event feeds open when the drain began (ended with ``shutting_down``)."""
    refused: int
    """Requests that arrived during the drain (answered ``503 shutting_down``)."""
    seconds: float

    def line(self) -> str:
        return (
            f"drained in {self.seconds:.1f} s: {self.finished} in-flight requests finished, "
            f"{self.cancelled} cancelled ({self.feeds} event feeds ended, "
            f"{self.refused} new requests refused with 503 shutting_down)"
        )


class Drain:
    """The requests of the node in flight, and the drain that ends them (see the module).

    A request is in flight from its handler's start until its response is
    written (or its connection lost).
    """

    def __init__(self) -> None:
        self.draining = False
        self._in_flight: set[asyncio.Task[object]] = set()
        self._cancelled: set[asyncio.Task[object]] = set()
        self._idle: asyncio.Event | None = None
        self._refused = 0

    def middleware(self) -> Middleware:
        @web.middleware
        async def track(request: web.Request, handler: Handler) -> web.StreamResponse:
            if self.draining:
                self._refused += 1
                return shutting_down()
            # aiohttp's task of this request: done once the response is written too.
            task = request.task
            self._in_flight.add(task)
            task.add_done_callback(self._done)
            try:
                return await handler(request)
            except asyncio.CancelledError:
                if task not in self._cancelled or request.get(_STARTED, False):
                    raise  # not ours, or too late to answer: the connection drops
                task.uncancel()
                return shutting_down(_CANCELLED)

        return track

    def _done(self, task: asyncio.Task[object]) -> None:
        self._in_flight.discard(task)
        self._cancelled.discard(task)
        if self._idle is not None and not self._in_flight:
            self._idle.set()

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """``on_response_prepare``: from here on a cancelled handler cannot answer 503."""
        request[_STARTED] = True

    async def drain(self, grace: float, events: EventHub) -> DrainReport:
        """Refuse new requests, end the feeds of ``events``, wait up to ``grace`` s for
        the requests in flight, cancel what is left."""
        started = time.monotonic()
        self.draining = True
        at_start = len(self._in_flight)
        feeds = events.connections
        events.end_all(SHUTTING_DOWN)
        if self._in_flight:
            self._idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        left = list(self._in_flight)
        for task in left:
            self._cancelled.add(task)
            task.cancel()
        if left:
            await asyncio.wait(left, timeout=CANCEL_WAIT_SECONDS)
        return DrainReport(
            finished=at_start - len(left),
            cancelled=len(left),
            feeds=feeds,
            refused=self._refused,
            seconds=time.monotonic() - started,
        )
