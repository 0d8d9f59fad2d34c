"""A full disk: writes are refused before they reach the journal (507), reads go on.

The journal itself never fails a write half-way (it waits for space: see
``DurableJournal.flush``); this guard keeps requests from queueing behind it.
Every ``/v1`` write but ``POST …/preview`` (which writes nothing) is refused
with ``507 insufficient_storage`` and ``Retry-After`` while the data
directory's file system has less than ``--min-free-disk`` bytes free; writes
are admitted again as soon as there is room, without a restart.
"""

from __future__ import annotations

import os

from aiohttp import web
from aiohttp.typedefs import Middleware

from .errors import Handler, error_response
from .metrics import Metrics

WRITE_METHODS = frozenset({"PUT", "POST", "PATCH", "DELETE"})
RETRY_AFTER_SECONDS = 5


def free_bytes(path: str) -> int:
    """Bytes an unprivileged process may still write on ``path``'s file system."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def disk_guard(data_dir: str, min_free: int, metrics: Metrics) -> Middleware:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            request.method in WRITE_METHODS
            and request.path.startswith("/v1/")
            and not request.path.endswith("/preview")
        ):
            try:
                free = free_bytes(data_dir)
            except OSError:
                free = min_free  # cannot tell: let the write through
            if free < min_free:
                metrics.disk_full_refusals.inc()
                return error_response(
                    507,
                    "insufficient_storage",
                    f"The server's disk is full ({free} bytes free, {min_free} needed to "
                    "take writes); nothing was written. Reads go on; retry later.",
                    {"Retry-After": str(RETRY_AFTER_SECONDS)},
                )
        return await handler(request)

    return check
