"""Admission control: past its limits a node refuses work at once instead of queueing it.

Two limits, checked by the outermost middleware before anything of the
request is read (its body included), each answered with the standard error
body ``503 {"error": "overloaded", "message": …}``, a ``Retry-After`` and the
request's ``X-Request-Id``:

- **Requests in flight**: at most that many ``/v1`` requests are being
  served by the node at once; one more is answered ``Retry-After: 1``. The
  limit is ``--max-inflight`` while answers are quick, and lower while the
  median time to answer is over ``--latency-target`` (down to an eighth of
  ``--max-inflight``; see :mod:`.concurrency`, which says why).
  The live feeds (``…/events``, ``…/stream``) are not counted: they last as
  long as the client stays, and have their own bounds
  (``--events-max-connections``, ``--events-queue``). ``/health/*`` and
  ``/metrics`` are never refused. Each request has at most one command (or
  read barrier) waiting in each Raft group at a time (``submit`` and
  ``sync`` are awaited one after the other), so this also bounds the
  commands a node has proposed and not yet seen committed.
- **The archive backlog** (``--max-archive-backlog``, with the archive
  on): when the messages of the groups this node leads that are not in
  PostgreSQL yet (the writer's backlog: Postgres down or slow) exceed the
  limit, appends are answered ``Retry-After: 5``; reads and the other
  writes go on. The backlog is measured at most once a second (it walks
  the contexts waiting to be archived), so it may pass the limit by up to
  a second of appends.

Admitted requests therefore wait behind a bounded number of others, and the
memory held by requests in progress stays bounded.

Refusing must stay cheap, since at twice its capacity a node refuses more
than it serves, all on the event loop: this middleware is the outermost one
(a refusal costs no request log line, metrics lookups or drain tracking:
about a third less than behind them, measured), the in-flight refusal's
body is serialised once, and refusals are counted in
``fastpaca_shed_requests_total`` and logged as one warning every
``LOG_EVERY_SECONDS`` with their count, not one line each. In a cluster the
backlog limit is checked by the node an append reaches, against the groups
it leads: an append sent through a follower is not refused by it.
"""

from __future__ import annotations

import json
import logging
import time

from aiohttp import web
from aiohttp.typedefs import Middleware

from ..config import ServerConfig
from .concurrency import AdaptiveLimit
from .errors import Handler, error_response
from .keys import ARCHIVE
from .metrics import Metrics
from .requestlog import REQUEST_ID_HEADER, request_id

logger = logging.getLogger(__name__)

OVERLOADED = "overloaded"
FEED_ROUTES = frozenset({"/v1/contexts/{context_id}/events", "/v1/contexts/{context_id}/stream"})
"""Long-lived feeds: bounded by ``--events-max-connections``, not counted as in flight."""
APPEND_ROUTE = "/v1/contexts/{context_id}/messages"
INFLIGHT_RETRY_AFTER = 1
ARCHIVE_RETRY_AFTER = 5
"""The archive catches up in seconds once Postgres is back (its writer backs off up to
10 s between attempts while it is down): there is no point in retrying sooner."""
BACKLOG_MEASURE_SECONDS = 1.0
"""The archive backlog is measured again at most this often (cached in between)."""
LOG_EVERY_SECONDS = 10.0
"""Refused requests are not logged one by one (a line for each would add to the load):
one warning with their count at most this often."""


def _is_api_path(path: str) -> bool:
    return path.startswith("/v1/") or path == "/v1"


class Admission:
    """The node's requests in flight and its limits (see the module)."""

    def __init__(self, config: ServerConfig, metrics: Metrics) -> None:
        self.limit = AdaptiveLimit(config.max_inflight, config.latency_target)
        """Its ceiling is ``--max-inflight`` (0: no limit)."""
        self.max_archive_backlog = config.max_archive_backlog
        """0: no limit."""
        self.inflight = 0
        self._backlog = 0
        self._measured = -BACKLOG_MEASURE_SECONDS
        self._shed_inflight = metrics.shed_requests.labels("inflight")
        self._shed_backlog = metrics.shed_requests.labels("archive_backlog")
        metrics.inflight_requests.set_function(lambda: self.inflight)
        metrics.inflight_limit.set_function(lambda: self.limit.current(time.monotonic()))
        self._unlogged = {"inflight": 0, "archive_backlog": 0}
        self._full_body = json.dumps(
            {
                "error": OVERLOADED,
                "message": "This node is already serving as many requests as it takes now "
                "(--max-inflight, lowered while its answers are slower than --latency-target). "
                "Nothing was read or written: retry after the Retry-After seconds, or on "
                "another node.",
            }
        ).encode()
        self._logged_at = -LOG_EVERY_SECONDS

    def archive_backlog(self, app: web.Application) -> int:
        """The archive writer's backlog, measured at most once a second (0 without one)."""
        writer = app[ARCHIVE]
        if writer is None:
            return 0
        now = time.monotonic()
        if now - self._measured >= BACKLOG_MEASURE_SECONDS:
            self._measured = now
            self._backlog = writer.refresh().backlog
        return self._backlog

    def middleware(self) -> Middleware:
        @web.middleware
        async def admit(request: web.Request, handler: Handler) -> web.StreamResponse:
            if not _is_api_path(request.path):
                return await handler(request)
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else ""
            if route in FEED_ROUTES:
                return await handler(request)
            if self.limit.ceiling and self.inflight >= self.limit.current(time.monotonic()):
                self._shed_inflight.inc()
                self._shed("inflight")
                return _with_id(request, self._too_many_requests())
            if (
                self.max_archive_backlog
                and route == APPEND_ROUTE
                and request.method == "POST"
                and self.archive_backlog(request.app) > self.max_archive_backlog
            ):
                self._shed_backlog.inc()
                self._shed("archive_backlog")
                return _with_id(request, self._archive_behind())
            self.inflight += 1
            started = time.monotonic()
            try:
                response = await handler(request)
            finally:
                self.inflight -= 1
            if not response.prepared:  # a stream or an export takes as long as its reader
                now = time.monotonic()
                self.limit.answered(now - started, now)
            return response

        return admit

    def _shed(self, reason: str) -> None:
        self._unlogged[reason] += 1
        now = time.monotonic()
        if now - self._logged_at < LOG_EVERY_SECONDS:
            return
        since = now - self._logged_at
        self._logged_at = now
        parts = []
        if self._unlogged["inflight"]:
            parts.append(
                f"{self._unlogged['inflight']} requests past the limit of requests in flight "
                f"(now {int(self.limit.limit)}, --max-inflight {self.limit.ceiling}; "
                f"{self.inflight} in flight)"
            )
        if self._unlogged["archive_backlog"]:
            parts.append(
                f"{self._unlogged['archive_backlog']} appends past --max-archive-backlog "
                f"{self.max_archive_backlog} (archive backlog {self._backlog} messages)"
            )
        window = f"in the last {since:.0f} s" if since < 10 * LOG_EVERY_SECONDS else "now"
        logger.warning(
            "overloaded: refused with 503 %s: %s; fastpaca_shed_requests_total counts them all",
            window,
            "; ".join(parts),
        )
        self._unlogged = dict.fromkeys(self._unlogged, 0)

    def _too_many_requests(self) -> web.Response:
        # The body is the same every time: serialised once (this path must stay cheap).
        return web.Response(
            body=self._full_body,
            status=503,
            content_type="application/json",
            charset="utf-8",
            headers={"Retry-After": str(INFLIGHT_RETRY_AFTER)},
        )

    def _archive_behind(self) -> web.Response:
        return error_response(
            503,
            OVERLOADED,
            f"The archive (PostgreSQL) is {self._backlog} messages behind on this node, "
            f"more than --max-archive-backlog ({self.max_archive_backlog}): appends are "
            "refused until it catches up, reads go on. Nothing was written: retry after "
            "the Retry-After seconds.",
            {"Retry-After": str(ARCHIVE_RETRY_AFTER)},
        )


def _with_id(request: web.Request, response: web.Response) -> web.Response:
    """A refusal carries the request's id like every answer (the request log, which sets
    it on the others, is inside this middleware)."""
    response.headers[REQUEST_ID_HEADER] = request_id(request.headers.get(REQUEST_ID_HEADER))
    return response


def admission_control(config: ServerConfig, metrics: Metrics) -> Middleware:
    """The middleware of a new :class:`Admission` (``create_app`` installs it)."""
    return Admission(config, metrics).middleware()
