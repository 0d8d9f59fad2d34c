"""Typed application state keys."""

from __future__ import annotations

from aiohttp import web

from ..config import ServerConfig
from ..replication import ReplicatedStore
from .metrics import Metrics

CONFIG = web.AppKey("config", ServerConfig)
STORE = web.AppKey("store", ReplicatedStore)
METRICS = web.AppKey("metrics", Metrics)
