"""Typed application state keys."""

from __future__ import annotations

from aiohttp import web

from ..config import ServerConfig
from .events import EventHub
from .metrics import Metrics
from .startup import StoreStartup

CONFIG = web.AppKey("config", ServerConfig)
STORE = web.AppKey("store", StoreStartup)
METRICS = web.AppKey("metrics", Metrics)
EVENTS = web.AppKey("events", EventHub)
