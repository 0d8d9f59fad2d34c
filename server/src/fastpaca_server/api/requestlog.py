"""Request ids, one log line per request, and request deadlines.

- :func:`request_log` (the outermost middleware) gives every request an id:
  its ``X-Request-Id`` if that is 1-128 printable ASCII characters without
  spaces, else 32 generated hex digits (16 random ones drawn when the process
  starts, then a counter: unique without a system call per request, which
  matters at the rate an overloaded node refuses). The id is in :data:`~.keys.REQUEST_ID`,
  in ``X-Request-Id`` on every answer, and in every log record written while
  the request is served. When the request is done it logs one ``request``
  record: id, method, route template, status, latency, context id and
  tenant (when there are), node, and byte counts where they are known.
  Never the path itself, the query string, a body or another header: no
  message content and no key reaches the log. Health checks and ``/metrics`` are logged at
  debug level. Requests refused with ``503 overloaded`` never reach this middleware
  (``overload.py`` runs before it, sets their id and logs a summary of them at most
  every 10 seconds).
- :func:`deadline` bounds the time to answer: ``X-Request-Timeout`` seconds
  (``0 < t <= 600``; anything else is ``400 invalid_request``) or the
  server's ``--request-timeout`` (``0``: none). Past it the handler is
  cancelled and the answer is ``503 deadline_exceeded`` with
  ``Retry-After: 1``. The deadline covers the time before the response
  starts: a stream (SSE, websocket, export) that has started is no longer
  bound by it.
- :func:`on_response_prepare` (``app.on_response_prepare``) puts the id on
  responses that handlers start themselves (streams, export) and lifts the
  deadline of a response that has started.

Cancelling a handler is safe: handlers hold the state machine's lock only in
``with`` blocks without an ``await``, and a stream's connection slot is given
back in ``finally``. A write cancelled after it was proposed to Raft may
still be committed (the replicated write is atomic: all or nothing); the
client, answered 503, retries with the same idempotency key and the write is
stored once.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import os
import re
import time

from aiohttp import web
from aiohttp.typedefs import Middleware

from .. import logs
from ..config import ServerConfig
from .errors import Handler, error_response
from .keys import REQUEST_ID
from .validation import CONTEXT_ID

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
TIMEOUT_HEADER = "X-Request-Timeout"
MAX_TIMEOUT_SECONDS = 600.0
DEADLINE_EXCEEDED = "deadline_exceeded"
QUIET_ROUTES = frozenset({"/health/live", "/health/ready", "/metrics"})
"""Routes logged at debug level only (probes and scrapes would drown the log)."""

_SANE_ID = re.compile(r"[\x21-\x7e]{1,128}")
_TIMEOUT = re.compile(r"[0-9]{1,12}(?:\.[0-9]{0,12})?|\.[0-9]{1,12}")
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")
_DEADLINE = web.RequestKey("fastpaca_deadline", asyncio.Timeout)
_TENANT = "fastpaca_tenant"  # set by the API key middleware (api/tenancy.py)


_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)


def request_id(header: str | None) -> str:
    """The client's id if it is sane, else a new one (see the module)."""
    if header is not None and _SANE_ID.fullmatch(header):
        return header
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _error_code(response: web.StreamResponse) -> str | None:
    """The ``error`` of an error body the server wrote (a few hundred bytes of JSON)."""
    if not isinstance(response, web.Response) or response.content_type != "application/json":
        return None
    body = response.body
    if not isinstance(body, bytes) or len(body) > 4096:
        return None
    try:
        code = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else None


def _bytes_out(response: web.StreamResponse) -> int | None:
    if response.prepared:  # written by the handler (a stream, an export): known at its end
        return response.body_length or None
    return response.content_length


def _log(
    request: web.Request,
    response: web.StreamResponse | None,
    status: int,
    error: str | None,
    started: float,
    node: str,
) -> None:
    route = _route(request)
    level = logging.DEBUG if route in QUIET_ROUTES else logging.INFO
    if not logger.isEnabledFor(level):
        return
    fields: dict[str, object] = {
        "request_id": request[REQUEST_ID],
        "method": request.method,
        "route": route,
        "status": status,
        "latency_ms": round((time.perf_counter() - started) * 1000, 3),
    }
    context_id = request.match_info.get("context_id")
    if context_id is not None and CONTEXT_ID.fullmatch(context_id):
        fields["context_id"] = context_id
    else:
        context_id = None
    tenant = request.get(_TENANT)
    if not isinstance(tenant, str) or not tenant:
        tenant = context_id.partition(":")[0] if context_id and ":" in context_id else None
    if tenant:
        fields["tenant"] = tenant
    fields["node"] = node
    if request.content_length is not None:
        fields["bytes_in"] = request.content_length
    if response is not None:
        sent = _bytes_out(response)
        if sent is not None:
            fields["bytes_out"] = sent
        if error is None and status >= 400:
            error = _error_code(response)
    if error is not None:
        fields["error"] = error
    logger.log(level, "request", extra=fields)


def request_log(config: ServerConfig) -> Middleware:
    """The outermost middleware: the request's id, and its log line (see the module)."""
    node = config.node_id

    @web.middleware
    async def log_request(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        rid = request[REQUEST_ID] = request_id(request.headers.get(REQUEST_ID_HEADER))
        token = logs.request_id.set(rid)
        response: web.StreamResponse | None = None
        status: int = 500  # what an exception escaping here becomes
        error: str | None = "internal_error"
        try:
            response = await handler(request)
            status, error = response.status, None
            if not response.prepared:
                response.headers[REQUEST_ID_HEADER] = rid
            return response
        except web.HTTPException as exception:  # a redirect (errors are answered inside)
            exception.headers[REQUEST_ID_HEADER] = rid
            status, error = exception.status, None
            raise
        except asyncio.CancelledError:  # the server stops, or the client went away
            status, error = 499, "cancelled"
            raise
        finally:
            _log(request, response, status, error, started, node)
            logs.request_id.reset(token)

    return log_request


def timeout_seconds(header: str) -> float | None:
    """The seconds an ``X-Request-Timeout`` value asks for; ``None`` if it is not valid."""
    if not _TIMEOUT.fullmatch(header):
        return None
    seconds = float(header)
    return seconds if 0 < seconds <= MAX_TIMEOUT_SECONDS and math.isfinite(seconds) else None


def _deadline_exceeded(seconds: float) -> web.Response:
    return error_response(
        503,
        DEADLINE_EXCEEDED,
        f"The request did not finish within its deadline of {seconds:g} s "
        f"({TIMEOUT_HEADER}, or the server's --request-timeout). A write may still be "
        "stored: retry it with the same idempotency key, which stores it once either way.",
        {"Retry-After": "1"},
    )


def deadline(config: ServerConfig) -> Middleware:
    """Cancel a handler that has not started its response within the deadline (see the module)."""
    default = config.request_timeout

    @web.middleware
    async def bound(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get(TIMEOUT_HEADER)
        seconds = default if header is None else timeout_seconds(header)
        if seconds is None:
            return error_response(
                400,
                "invalid_request",
                f"{TIMEOUT_HEADER} must be a number of seconds greater than 0 and at most "
                f"{MAX_TIMEOUT_SECONDS:g}, such as 2.5.",
            )
        if seconds <= 0:
            return await handler(request)
        try:
            async with asyncio.timeout(seconds) as scope:
                request[_DEADLINE] = scope
                return await handler(request)
        except TimeoutError:
            if not scope.expired():
                raise  # not the deadline's
            return _deadline_exceeded(seconds)
        finally:
            request.pop(_DEADLINE, None)

    return bound


async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """For every response as it starts: its ``X-Request-Id``; and no deadline from now on."""
    rid = request.get(REQUEST_ID)
    if rid is not None:
        response.headers[REQUEST_ID_HEADER] = rid
    scope = request.get(_DEADLINE)
    if scope is not None and not scope.expired():
        scope.reschedule(None)
