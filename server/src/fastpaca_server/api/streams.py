"""Live events of a context: ``GET …/stream`` (websocket) and ``GET …/events`` (SSE).

Both handlers parse and check the request like any REST route (so a bad
id, an unknown context or a bad cursor is an ordinary JSON error before
anything is upgraded), take one of the node's stream connections, register
a :class:`~.events.Subscription` with the replay queued, and then pump its
versions to the client with heartbeats until the feed ends:

- ``tombstoned``: the context's last event was written; websocket close 1000.
- ``slow_consumer``: the client fell more than ``--events-queue`` versions
  behind; websocket close 1013, SSE a final ``event: error``.
- ``idle`` (websocket): nothing from the client for ``--events-idle-timeout``;
  close 1008.
- ``shutting_down``: the server stops; websocket close 1001, SSE a final
  ``event: error`` with ``retry:`` (reconnect after a second, elsewhere or here).

Closing never waits on a client for more than :data:`CLOSE_GRACE` seconds;
after that the connection is aborted.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import WSMsgType, web
from multidict import MultiDict

from ..config import ServerConfig
from ..core import InvalidInput
from ..replication import ReplicatedStore
from . import validation
from .errors import error_response
from .events import EventHub, Subscription, VersionEvents
from .keys import CONFIG, EVENTS, METRICS, STORE

routes = web.RouteTableDef()

MAX_VERSION = 2**62
CLOSE_GRACE = 5.0
"""Seconds a closing stream waits for the client before the connection is aborted."""
MAX_CLIENT_MESSAGE = 4096
"""Bytes of one websocket message from the client (they only send pongs)."""

PING = json.dumps({"type": "ping"}, separators=(",", ":"))
SSE_HEARTBEAT = b": ping\n\n"
SSE_RECONNECT_MS = 1000
"""The ``retry:`` of the event that ends a feed on shutdown (``Retry-After: 1`` of 503s)."""

_CLOSE_CODES = {
    "tombstoned": 1000,
    "shutting_down": 1001,
    "idle": 1008,
    "slow_consumer": 1013,
}


def _reason_text(reason: str, resume_from: int, config: ServerConfig) -> str:
    """What the client is told when its feed ends (at most 123 bytes: a close reason)."""
    return {
        "tombstoned": "context tombstoned",
        "shutting_down": f"server shutting down; resume from cursor {resume_from}",
        "idle": f"no message (pong) for {config.events_idle_timeout:g} s",
        "slow_consumer": f"slow consumer: more than {config.events_queue} versions behind; "
        f"resume from cursor {resume_from}",
    }.get(reason, reason)


# --- the request --------------------------------------------------------------


def _boolean(raw: str, name: str) -> bool:
    if raw == "true":
        return True
    if raw == "false":
        return False
    raise InvalidInput(f"'{name}' must be true or false.")


def _feed_request(request: web.Request, *, last_event_id: bool) -> tuple[str, int, bool]:
    """The context id, the cursor and ``include_messages`` of a stream request.

    For SSE, a ``Last-Event-ID`` header (sent by a reconnecting
    ``EventSource``) wins over the ``cursor`` parameter.
    """
    context_id = validation.context_id(request.match_info["context_id"])
    query = request.query
    include_values = query.getall("include_messages", [])
    rest = MultiDict((key, value) for key, value in query.items() if key != "include_messages")
    params = validation.query(rest, {"cursor": (0, MAX_VERSION)}, {"cursor": 0})
    if len(include_values) > 1:
        raise InvalidInput("'include_messages' is given more than once.")
    include = _boolean(include_values[0], "include_messages") if include_values else True
    cursor = params["cursor"]
    header = request.headers.get("Last-Event-ID", "").strip() if last_event_id else ""
    if header:
        if not re.fullmatch(r"[0-9]{1,19}", header) or int(header) > MAX_VERSION:
            raise InvalidInput("The Last-Event-ID header must be a version (an integer >= 0).")
        cursor = int(header)
    return context_id, cursor, include


def _store(request: web.Request, context_id: str) -> ReplicatedStore:
    return request.app[STORE].get().for_context(context_id)


def _tombstoned_at(store: ReplicatedStore, context_id: str) -> int | None:
    """The context's version if it is tombstoned; NotFound (404) if there is no such context."""
    with store.read() as machine:
        context = machine.get(context_id)
        return context.version if context.status != "active" else None  # purged too


def _too_many_connections(hub: EventHub) -> web.Response:
    return error_response(
        503,
        "too_many_connections",
        f"This node already serves {hub.max_connections} streams (--events-max-connections). "
        "Retry after the Retry-After seconds, or on another node.",
        {"Retry-After": "1"},
    )


# --- pumping a subscription -----------------------------------------------------


class _Feed:
    """Writes a subscription's versions, and heartbeats, to one client."""

    def __init__(
        self,
        subscription: Subscription,
        cursor: int,
        heartbeat: float,
        send: Callable[[VersionEvents], Awaitable[None]],
        ping: Callable[[], Awaitable[None]],
    ) -> None:
        self.subscription = subscription
        self.heartbeat = heartbeat
        self.send = send
        self.ping = ping
        self.written = cursor
        """The cursor to resume from: the newest version written completely (or the start)."""

    async def pump(self) -> str:
        """Write until the context's last event (``tombstoned``) or until the hub ends the feed."""
        subscription = self.subscription
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + self.heartbeat
        while True:
            entry = subscription.pop()
            if entry is not None:
                await self.send(entry)
                self.written = max(self.written, entry.version)
                if entry.closes:
                    return "tombstoned"
            elif subscription.ended.done():
                return subscription.ended.result()
            else:
                await subscription.wait(next_ping - loop.time())
            if loop.time() >= next_ping:
                await self.ping()
                next_ping = loop.time() + self.heartbeat

    async def ended(self) -> str:
        """The reason the hub ended the feed (``slow_consumer``, ``shutting_down``)."""
        return await asyncio.shield(self.subscription.ended)


async def _first(*coroutines: Coroutine[Any, Any, str]) -> str:
    """Run ``coroutines`` until the first one ends; cancel the others; return its reason.

    A connection that broke under a write or a read is ``client_closed``.
    """
    tasks = [asyncio.create_task(coroutine) for coroutine in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finished = next(task for task in tasks if task in done)
    error = finished.exception()
    if isinstance(error, ConnectionError):
        return "client_closed"
    if error is not None:
        raise error
    return finished.result()


async def _close_within_grace(request: web.Request, closing: Awaitable[None]) -> None:
    """Run ``closing`` and let the client take what is still buffered for it, within
    :data:`CLOSE_GRACE` seconds in all; then abort the connection.

    A client that stopped reading would otherwise keep the socket, and
    everything written to it, for as long as it stays connected.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CLOSE_GRACE
    try:
        await asyncio.wait_for(closing, CLOSE_GRACE)
        while (transport := request.transport) is not None:
            if transport.get_write_buffer_size() == 0:
                return
            if loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
    except (TimeoutError, ConnectionError):
        pass
    transport = request.transport
    if transport is not None:
        transport.abort()


def _error_event(reason: str, resume_from: int, config: ServerConfig) -> str:
    """The last message of a feed the server ends early: why, and the cursor to resume from."""
    message = _reason_text(reason, resume_from, config)
    error = {"type": "error", "version": resume_from, "reason": reason, "message": message}
    return json.dumps(error, separators=(",", ":"))


def _count_end(request: web.Request, feed: str, reason: str) -> None:
    # Counted before closing: aiohttp may cancel the handler once the connection is closed.
    request.app[METRICS].stream_ends.labels(feed, reason).inc()


async def _subscribed(
    request: web.Request,
    kind: str,
    context_id: str,
    cursor: int,
    serve: Callable[[Subscription], Awaitable[None]],
) -> None:
    """Register the subscription (replay queued) and ``serve`` it; count the connection."""
    hub = request.app[EVENTS]
    metrics = request.app[METRICS]
    metrics.stream_connections.labels(kind).inc()
    try:
        # Read and register in one step (no await between): see events.py.
        tombstoned_at = _tombstoned_at(_store(request, context_id), context_id)
        subscription = hub.subscribe(context_id, cursor, tombstoned_at=tombstoned_at)
        try:
            await serve(subscription)
        finally:
            subscription.end("closed")
    finally:
        hub.close_connection()
        metrics.stream_connections.labels(kind).dec()


# --- websocket ------------------------------------------------------------------


@routes.get("/v1/contexts/{context_id}/stream")
async def stream(request: web.Request) -> web.StreamResponse:
    """The context's events over a websocket: replay after ``cursor``, then live."""
    context_id, cursor, include_messages = _feed_request(request, last_event_id=False)
    await _store(request, context_id).sync()  # a feed starts after every acknowledged write
    _tombstoned_at(_store(request, context_id), context_id)  # 404 before anything is upgraded
    websocket = web.WebSocketResponse(
        autoping=False, compress=False, max_msg_size=MAX_CLIENT_MESSAGE, timeout=CLOSE_GRACE
    )
    if not websocket.can_prepare(request).ok:
        raise InvalidInput(
            f"GET {request.path} is a websocket: send a websocket upgrade request "
            "(or read the same feed as Server-Sent Events from …/events)."
        )
    hub = request.app[EVENTS]
    if not hub.open_connection():
        return _too_many_connections(hub)
    try:
        await websocket.prepare(request)
    except BaseException:
        hub.close_connection()
        raise

    async def serve(subscription: Subscription) -> None:
        await _serve_websocket(request, websocket, subscription, cursor, include_messages)

    await _subscribed(request, "websocket", context_id, cursor, serve)
    return websocket


async def _serve_websocket(
    request: web.Request,
    websocket: web.WebSocketResponse,
    subscription: Subscription,
    cursor: int,
    include_messages: bool,
) -> None:
    config = request.app[CONFIG]
    loop = asyncio.get_running_loop()
    last_heard = loop.time()

    async def send(entry: VersionEvents) -> None:
        for _, text in entry.texts(include_messages):
            await websocket.send_str(text)

    async def ping() -> None:
        await websocket.send_str(PING)

    async def listen() -> str:
        nonlocal last_heard
        while True:
            message = await websocket.receive()
            if message.type in (
                WSMsgType.CLOSE,
                WSMsgType.CLOSING,
                WSMsgType.CLOSED,
                WSMsgType.ERROR,
            ):
                return "client_closed"
            last_heard = loop.time()  # a pong, or anything else: the client is there
            if message.type == WSMsgType.PING:
                await websocket.pong(message.data)

    async def watch_idle() -> str:
        while True:
            remaining = last_heard + config.events_idle_timeout - loop.time()
            if remaining <= 0:
                return "idle"
            await asyncio.sleep(remaining)

    feed = _Feed(subscription, cursor, config.events_heartbeat, send, ping)
    reason = await _first(feed.pump(), feed.ended(), listen(), watch_idle())
    _count_end(request, "websocket", reason)
    if reason == "client_closed" or websocket.closed:
        return
    text = _reason_text(reason, feed.written, config)

    async def close() -> None:
        if reason in ("slow_consumer", "shutting_down"):
            await websocket.send_str(_error_event(reason, feed.written, config))
        code = _CLOSE_CODES.get(reason, 1011)
        await websocket.close(code=code, message=text.encode()[:123])

    await _close_within_grace(request, close())


# --- Server-Sent Events -------------------------------------------------------------


def _sse(entry: VersionEvents, include_messages: bool) -> bytes:
    """The SSE messages of one version; only the last (closing) one carries ``id:``, so a
    reconnecting client's Last-Event-ID never points into the middle of a version."""
    texts = entry.texts(include_messages)
    chunks = [f"event: {kind}\ndata: {text}\n\n" for kind, text in texts[:-1]]
    kind, text = texts[-1]
    chunks.append(f"id: {entry.version}\nevent: {kind}\ndata: {text}\n\n")
    return "".join(chunks).encode()


@routes.get("/v1/contexts/{context_id}/events")
async def events(request: web.Request) -> web.StreamResponse:
    """The context's events as Server-Sent Events: replay after the cursor, then live."""
    context_id, cursor, include_messages = _feed_request(request, last_event_id=True)
    await _store(request, context_id).sync()  # a feed starts after every acknowledged write
    _tombstoned_at(_store(request, context_id), context_id)  # 404 before the stream starts
    headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    if request.method == "HEAD":
        return web.Response(headers=headers)
    hub = request.app[EVENTS]
    if not hub.open_connection():
        return _too_many_connections(hub)
    response = web.StreamResponse(headers={**headers, "X-Accel-Buffering": "no"})
    response.force_close()  # the connection of a stream is not reused
    try:
        await response.prepare(request)
    except BaseException:
        hub.close_connection()
        raise

    async def serve(subscription: Subscription) -> None:
        config = request.app[CONFIG]

        async def send(entry: VersionEvents) -> None:
            await response.write(_sse(entry, include_messages))

        async def ping() -> None:
            await response.write(SSE_HEARTBEAT)

        feed = _Feed(subscription, cursor, config.events_heartbeat, send, ping)
        reason = await _first(feed.pump(), feed.ended())
        _count_end(request, "sse", reason)
        if reason == "client_closed":
            return
        final = b""
        if reason in ("slow_consumer", "shutting_down"):
            retry = f"retry: {SSE_RECONNECT_MS}\n" if reason == "shutting_down" else ""
            data = _error_event(reason, feed.written, config)
            final = f"{retry}event: error\ndata: {data}\n\n".encode()
        await _close_within_grace(request, _finish(response, final))

    await _subscribed(request, "sse", context_id, cursor, serve)
    return response


async def _finish(response: web.StreamResponse, final: bytes) -> None:
    if final:
        await response.write(final)
    await response.write_eof()
