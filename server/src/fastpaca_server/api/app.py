"""``create_app(config)``: the one place where the server is wired together."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Middleware

from ..config import ServerConfig
from ..replication import ReplicatedStore
from .errors import Handler, error_middleware, error_response
from .keys import CONFIG, METRICS, STORE
from .metrics import Metrics
from .routes import routes


def auth_middleware(api_key: str) -> Middleware:
    """Every ``/v1`` route needs ``Authorization: Bearer <key>``; health stays open."""
    expected = api_key.encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/v1/") or request.path == "/v1":
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            valid = hmac.compare_digest(token.strip().encode(), expected)
            if scheme.lower() != "bearer" or not valid:
                return error_response(
                    401,
                    "unauthorized",
                    "A valid 'Authorization: Bearer <api key>' header is required.",
                    {"WWW-Authenticate": "Bearer"},
                )
        return await handler(request)

    return check


async def _store_context(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    loop = asyncio.get_running_loop()
    store = await loop.run_in_executor(
        None,
        lambda: ReplicatedStore(
            config.data_dir,
            log_compaction_entries=config.log_compaction_entries,
            submit_timeout=config.submit_timeout,
        ),
    )
    app[STORE] = store
    await store.wait_ready()
    yield
    await loop.run_in_executor(None, store.close)


def create_app(config: ServerConfig) -> web.Application:
    metrics = Metrics()
    middlewares: list[Middleware] = [metrics.middleware(), error_middleware]
    if config.api_key:
        middlewares.append(auth_middleware(config.api_key))
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=middlewares)
    app[CONFIG] = config
    app[METRICS] = metrics
    app.add_routes(routes)
    app.cleanup_ctx.append(_store_context)
    return app
