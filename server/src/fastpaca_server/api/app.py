"""``create_app(config)``: the one place where the server is wired together.

Start-up order (``cleanup_ctx`` runs in order; the CLI binds the port right
after the app's startup): lock the data directory, start opening the store
in the background, listen. Until the store is open and its journal replayed,
``/health/live`` and ``/metrics`` answer, ``/health/ready`` and every ``/v1``
route answer 503 ``not_ready``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Middleware

from ..archive.writer import ArchiveWriter
from ..config import ServerConfig
from ..plugins import load_policies
from ..replication import DataDirectoryLock
from ..replication.node import ApplyListener
from ..summarizer import Summarizer, SummarizerConfig
from . import requestlog, retention, streams, ui
from .drain import Drain
from .errors import Handler, error_middleware
from .events import EventHub
from .keys import ACCESS, ARCHIVE, CONFIG, CUSTOM, DRAIN, EVENTS, METRICS, STORE, SUMMARIES
from .metrics import Metrics
from .overload import admission_control
from .routes import routes
from .startup import NotReady, StoreStartup
from .storage import disk_guard
from .summaries import SummaryJobs
from .tenancy import Access, access_middleware


def _is_api_path(path: str) -> bool:
    return path.startswith("/v1/") or path == "/v1"


CLUSTER_PATH = "/v1/cluster"


def readiness_middleware(startup: StoreStartup) -> Middleware:
    """No ``/v1`` route answers before the node has replayed its state (503 ``not_ready``)."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        # The cluster view answers once the store is open, to say why it is not ready.
        cluster_view = request.path == CLUSTER_PATH and startup.opened is not None
        if _is_api_path(request.path) and not startup.ready and not cluster_view:
            raise NotReady()
        return await handler(request)

    return check


async def _data_dir_lock(app: web.Application) -> AsyncIterator[None]:
    # Before anything opens the journal: one process per data directory.
    lock = DataDirectoryLock.acquire(app[CONFIG].data_dir)
    try:
        yield
    finally:
        lock.release()


async def _store_context(app: web.Application) -> AsyncIterator[None]:
    startup = app[STORE]
    # The event hub listens from before the Raft thread starts: it sees the journal replayed.
    loop = asyncio.get_running_loop()
    archive = app[ARCHIVE]

    def listeners() -> list[ApplyListener]:
        found: list[ApplyListener] = [app[EVENTS].listener(loop), app[SUMMARIES].listener(loop)]
        if archive is not None:
            found.append(archive.listener(loop))
        return found

    startup.start(apply_listeners=listeners)
    writer = None if archive is None else asyncio.create_task(archive.run())
    yield
    if writer is not None:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
    if archive is not None:
        await archive.close()
    await app[SUMMARIES].close()
    await startup.close()


async def _end_streams(app: web.Application) -> None:
    # on_shutdown runs before aiohttp waits for handlers: open streams would hold it up.
    app[EVENTS].end_all("shutting_down")


def _summarizer(config: ServerConfig) -> Summarizer | None:
    if not config.summarizer_base_url or not config.summarizer_model:
        return None
    return Summarizer(
        SummarizerConfig(
            base_url=config.summarizer_base_url,
            model=config.summarizer_model,
            api_key=config.summarizer_api_key,
            timeout=config.summarizer_timeout,
        )
    )


def _archive(config: ServerConfig, startup: StoreStartup, metrics: Metrics) -> ArchiveWriter | None:
    if not config.database_url:
        return None
    writer = ArchiveWriter(
        config.database_url,
        lambda: startup.opened if startup.ready else None,
        tail_keep=config.tail_keep,
        batch=config.archive_batch,
        on_written=metrics.archive_rows.inc,
        on_failed=metrics.archive_failures.inc,
    )
    metrics.archive = writer.refresh
    return writer


def create_app(config: ServerConfig) -> web.Application:
    """The app; raises :class:`~..plugins.PolicyPluginError` if a custom policy
    cannot be loaded, :class:`~..access.KeysFileError` if the keys file is not valid."""
    custom = tuple(load_policies())
    metrics = Metrics()
    startup = StoreStartup(config)
    drain = Drain()  # refuses requests once the node stops (cli.serve runs the drain)
    middlewares: list[Middleware] = [
        # Outermost: a refusal must cost as little as it can (overload.py).
        admission_control(config, metrics),
        requestlog.request_log(config),  # the request id and the log line
        metrics.middleware(),
        drain.middleware(),
        requestlog.deadline(config),
        error_middleware,
    ]
    access = Access.create(config.api_key, config.keys_file, metrics)
    if access.enabled:
        middlewares.append(access_middleware(access))
    if config.min_free_disk:
        middlewares.append(disk_guard(config.data_dir, config.min_free_disk, metrics))
    middlewares.append(readiness_middleware(startup))
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=middlewares)
    app[CONFIG] = config
    app[METRICS] = metrics
    app[ACCESS] = access
    app[STORE] = startup
    app[CUSTOM] = custom
    app[DRAIN] = drain
    app[SUMMARIES] = SummaryJobs(startup, _summarizer(config), metrics)
    app[ARCHIVE] = _archive(config, startup, metrics)
    app[EVENTS] = EventHub(
        retain=config.events_retain,
        retain_total=config.events_retain_total,
        queue_limit=config.events_queue,
        max_connections=config.events_max_connections,
    )
    app.add_routes(routes)
    app.add_routes(streams.routes)
    app.add_routes(ui.routes)
    app.on_response_prepare.append(drain.on_response_prepare)
    app.on_response_prepare.append(requestlog.on_response_prepare)
    app.on_shutdown.append(_end_streams)
    app.cleanup_ctx.append(_data_dir_lock)
    app.cleanup_ctx.append(_store_context)
    app.cleanup_ctx.append(retention.retention_context)
    return app
