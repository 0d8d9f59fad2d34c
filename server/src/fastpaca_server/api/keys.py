"""Typed application state keys."""

from __future__ import annotations

from aiohttp import web

from ..archive.writer import ArchiveWriter
from ..config import ServerConfig
from .drain import Drain
from .events import EventHub
from .metrics import Metrics
from .startup import StoreStartup
from .summaries import SummaryJobs
from .tenancy import Access

CONFIG = web.AppKey("config", ServerConfig)
STORE = web.AppKey("store", StoreStartup)
METRICS = web.AppKey("metrics", Metrics)
EVENTS = web.AppKey("events", EventHub)
SUMMARIES = web.AppKey("summaries", SummaryJobs)
CUSTOM: web.AppKey[tuple[str, ...]] = web.AppKey("custom_policies")
"""Names of the custom policies installed (``fastpaca.policies`` entry points)."""
ARCHIVE: web.AppKey[ArchiveWriter | None] = web.AppKey("archive")
"""The archive's write-behind (and its store, for reads); ``None`` without ``--database-url``."""
ACCESS = web.AppKey("access", Access)
"""API keys, scopes, tenants and their limits (reloaded on SIGHUP)."""
DRAIN = web.AppKey("drain", Drain)
"""The requests in flight, and the drain that ends them when the node stops."""
REQUEST_ID = web.RequestKey("fastpaca_request_id", str)
"""The request's id (its sane ``X-Request-Id``, or a generated one): in the log and the answer."""
