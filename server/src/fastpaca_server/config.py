"""Server configuration: one value object, filled from flags or ``FASTPACA_*`` variables."""

from __future__ import annotations

import attrs

from .replication.cluster import ClusterConfig

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_LATENCY_TARGET = 0.010
"""Chosen from the ``overload`` benchmark (docs/benchmarks.md): an append's median on a
node below its highest rate is a few milliseconds; at 10 ms it is queueing."""
DEFAULT_MAX_INFLIGHT = 64
"""Chosen from the ``overload`` benchmark (docs/benchmarks.md): appends reach their
highest rate by 16-32 in flight, and an admitted request waits behind at most this many
(the append target's own 64 connections)."""
DEFAULT_MAX_ARCHIVE_BACKLOG = 1_000_000


@attrs.frozen
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 4000
    data_dir: str = "./data"
    api_key: str | None = None
    keys_file: str | None = None
    min_free_disk: int = 64 * 1024 * 1024
    """Writes get 507 while the data directory's file system has less free (0: never)."""
    """JSON file of named keys with tenants, scopes and limits (reloaded on SIGHUP)."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    log_compaction_entries: int = 100_000
    submit_timeout: float = 10.0
    shutdown_grace: float = 10.0
    """On SIGTERM/SIGINT: seconds requests in flight get to finish before they are cancelled."""
    repair_journal: bool = False
    events_max_connections: int = 512
    """Open websocket and SSE streams per node; more get 503 ``too_many_connections``."""
    events_heartbeat: float = 30.0
    """Seconds between websocket ``{"type": "ping"}`` messages and SSE comment heartbeats."""
    events_idle_timeout: float = 90.0
    """A websocket that sends nothing (no pong) for this many seconds is closed."""
    events_queue: int = 1024
    """Versions a subscriber may fall behind before it is disconnected as a slow consumer."""
    events_retain: int = 1000
    """Versions of each context kept in memory for replay (the hot tail)."""
    events_retain_total: int = 100_000
    """Events kept in memory for replay on the whole node (the oldest go first)."""
    node_id: str = "n1"
    """This node's name in ``GET /v1/cluster`` (and its logs)."""
    groups: int = 1
    """Raft groups contexts are spread over (fixed for a data directory)."""
    cluster: ClusterConfig | None = None
    """Raft peers and secret; ``None`` for a single node."""
    advertise_url: str | None = None
    """Where clients and other nodes reach this node's API (default: from host and port)."""
    database_url: str | None = attrs.field(default=None, repr=False)
    """PostgreSQL archive (``postgresql://…``); ``None``: every message stays in memory."""
    tail_keep: int = 1000
    """With the archive: messages of each context kept in memory (the hot tail)."""
    archive_batch: int = 1000
    """With the archive: most messages of one context written in one transaction."""
    tombstone_retention: float = 0.0
    """Seconds after which the leader purges a tombstoned context (0: never)."""
    max_archive_backlog: int = DEFAULT_MAX_ARCHIVE_BACKLOG
    """With the archive: past this many messages not yet archived, appends get 503
    ``overloaded`` (``api/overload.py``); 0: no limit."""
    summarizer_base_url: str | None = None
    """OpenAI-compatible endpoint the ``summarize`` policy calls (``None``: policy refused)."""
    summarizer_model: str | None = None
    summarizer_api_key: str | None = attrs.field(default=None, repr=False)
    summarizer_timeout: float = 30.0
    """Seconds a summary may take; past it the summary fails (the budget fallback holds)."""
    request_timeout: float = 30.0
    """Seconds a request may take before its response starts (503 ``deadline_exceeded``);
    ``X-Request-Timeout`` sets it per request; 0: no deadline."""
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    """``/v1`` requests served at once (live feeds not counted); more get 503
    ``overloaded`` at once (``api/overload.py``); 0: no limit."""
    latency_target: float = DEFAULT_LATENCY_TARGET
    """Seconds: while the median time to answer is over it, the limit of requests in
    flight is lowered below ``max_inflight`` (``api/concurrency.py``); 0: a fixed limit."""
    log_format: str = "json"
    """``json`` (one object per line) or ``text``."""
    log_level: str = "info"
    """``debug``, ``info``, ``warning``, ``error`` or ``critical``."""

    @property
    def http_url(self) -> str:
        if self.advertise_url:
            return self.advertise_url
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"
