"""Prometheus metrics of one app (own registry, so tests can run many apps)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..archive.writer import ArchiveStatus

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_WINDOW_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
_TOKEN_BUCKETS = (0, 100, 500, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000, 10**6)


CACHED_CHILDREN = 512


@attrs.define
class Metrics:
    registry: CollectorRegistry = attrs.field(factory=CollectorRegistry)
    requests: Counter = attrs.field(init=False)
    latency: Histogram = attrs.field(init=False)
    appended_messages: Counter = attrs.field(init=False)
    appended_tokens: Counter = attrs.field(init=False)
    window_messages: Histogram = attrs.field(init=False)
    window_tokens: Histogram = attrs.field(init=False)
    stream_connections: Gauge = attrs.field(init=False)
    stream_ends: Counter = attrs.field(init=False)
    compactions: Counter = attrs.field(init=False)
    summaries: Counter = attrs.field(init=False)
    summary_seconds: Histogram = attrs.field(init=False)
    archive_rows: Counter = attrs.field(init=False)
    archive_failures: Counter = attrs.field(init=False)
    archive_backlog: Gauge = attrs.field(init=False)
    archive_lag: Gauge = attrs.field(init=False)
    archive_connected: Gauge = attrs.field(init=False)
    disk_full_refusals: Counter = attrs.field(init=False)
    tenant_requests: Counter = attrs.field(init=False)
    tenant_limited: Counter = attrs.field(init=False)
    inflight_requests: Gauge = attrs.field(init=False)
    inflight_limit: Gauge = attrs.field(init=False)
    shed_requests: Counter = attrs.field(init=False)
    archive: Callable[[], ArchiveStatus] | None = None
    """Measures the archive writer's status, read into the gauges at each scrape."""
    _children: dict[tuple[str, str, int], tuple[Any, Any]] = attrs.field(init=False, factory=dict)
    """The request metrics' children by (method, route, status), at most
    :data:`CACHED_CHILDREN` of them (a client can send any method)."""

    def __attrs_post_init__(self) -> None:
        registry = self.registry
        self.requests = Counter(
            "fastpaca_http_requests",
            "HTTP requests by route and status (not those shed: fastpaca_shed_requests).",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "fastpaca_http_request_duration_seconds",
            "HTTP request latency by route.",
            ["method", "route"],
            registry=registry,
        )
        self.disk_full_refusals = Counter(
            "fastpaca_disk_full_refusals",
            "Writes refused with 507 because the data directory's disk is (nearly) full.",
            registry=registry,
        )
        self.tenant_requests = Counter(
            "fastpaca_tenant_requests",
            "Requests with a valid key, by the key's tenant ('' for keys without one).",
            ["tenant"],
            registry=registry,
        )
        self.tenant_limited = Counter(
            "fastpaca_tenant_limited",
            "Requests refused with 429 by a tenant's limit, by tenant and limit.",
            ["tenant", "limit"],
            registry=registry,
        )
        self.inflight_requests = Gauge(
            "fastpaca_inflight_requests",
            "/v1 requests being served now (live feeds not counted; see --max-inflight).",
            registry=registry,
        )
        self.inflight_limit = Gauge(
            "fastpaca_inflight_limit",
            "The limit of /v1 requests served at once now: --max-inflight, lowered while "
            "answers take longer than --latency-target.",
            registry=registry,
        )
        self.shed_requests = Counter(
            "fastpaca_shed_requests",
            "Requests refused with 503 overloaded, by reason (inflight, archive_backlog).",
            ["reason"],
            registry=registry,
        )
        for reason in ("inflight", "archive_backlog"):
            self.shed_requests.labels(reason)
        self.appended_messages = Counter(
            "fastpaca_appended_messages", "Messages appended to logs.", registry=registry
        )
        self.appended_tokens = Counter(
            "fastpaca_appended_tokens", "Tokens of appended messages.", registry=registry
        )
        self.window_messages = Histogram(
            "fastpaca_window_messages",
            "Messages in the LLM window after a write.",
            buckets=_WINDOW_BUCKETS,
            registry=registry,
        )
        self.window_tokens = Histogram(
            "fastpaca_window_tokens",
            "Tokens in the LLM window after a write.",
            buckets=_TOKEN_BUCKETS,
            registry=registry,
        )

        self.stream_connections = Gauge(
            "fastpaca_stream_connections",
            "Open live event streams by feed (websocket, sse).",
            ["feed"],
            registry=registry,
        )
        self.stream_ends = Counter(
            "fastpaca_stream_ends",
            "Live event streams ended, by feed and reason "
            "(tombstoned, slow_consumer, idle, shutting_down, client_closed).",
            ["feed", "reason"],
            registry=registry,
        )

        self.compactions = Counter(
            "fastpaca_compactions",
            "Compactions of LLM windows by cause (append, config, compact, summary) and policy.",
            ["cause", "policy"],
            registry=registry,
        )
        self.summaries = Counter(
            "fastpaca_summaries",
            "Summary jobs of the summarize policy by outcome (applied, stale, failed).",
            ["outcome"],
            registry=registry,
        )
        self.summary_seconds = Histogram(
            "fastpaca_summary_seconds",
            "Time the summarizer took to answer (successful summaries).",
            registry=registry,
        )

        self.archive_rows = Counter(
            "fastpaca_archive_rows",
            "Messages this node wrote to the archive (new rows; duplicates not counted).",
            registry=registry,
        )
        self.archive_failures = Counter(
            "fastpaca_archive_failures",
            "Archive writes that failed (Postgres down, slow or refusing); they are retried.",
            registry=registry,
        )
        self.archive_backlog = Gauge(
            "fastpaca_archive_backlog_messages",
            "Messages of the contexts this node leads that are not in the archive yet.",
            registry=registry,
        )
        self.archive_lag = Gauge(
            "fastpaca_archive_lag_seconds",
            "Age of the oldest message not in the archive yet (0: none).",
            registry=registry,
        )
        self.archive_connected = Gauge(
            "fastpaca_archive_connected",
            "1 when the last archive operation succeeded, 0 when Postgres is unreachable.",
            registry=registry,
        )

    def render(self) -> web.Response:
        if self.archive is not None:
            status = self.archive()
            self.archive_backlog.set(status.backlog)
            self.archive_lag.set(status.lag_seconds)
            self.archive_connected.set(1 if status.connected else 0)
        response = web.Response(body=generate_latest(self.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    def middleware(self) -> Middleware:
        @web.middleware
        async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
            started = time.perf_counter()
            response = await handler(request)
            info = request.match_info.route.resource
            route = info.canonical if info is not None else "unmatched"
            key = (request.method, route, response.status)
            children = self._children.get(key)
            if children is None:  # labels() costs a lock and a tuple: looked up once per key
                children = (
                    self.latency.labels(request.method, route),
                    self.requests.labels(request.method, route, str(response.status)),
                )
                if len(self._children) < CACHED_CHILDREN:
                    self._children[key] = children
            children[0].observe(time.perf_counter() - started)
            children[1].inc()
            return response

        return measure
