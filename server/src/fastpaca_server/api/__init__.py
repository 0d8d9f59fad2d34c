"""HTTP API: aiohttp app factory, routes, errors, auth and metrics."""

from .app import create_app

__all__ = ["create_app"]
