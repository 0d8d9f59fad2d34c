"""One middleware that renders every failure as the spec's error body.

``{"error": "<code>", "message": "<human sentence>"}`` with the status of the
domain error (:mod:`fastpaca_server.core.errors`), of the replication layer
(503 ``unavailable``), of a node that is still starting (503 ``not_ready``)
or of aiohttp itself (404 for unknown paths, 405, 413 for big bodies).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..archive.store import ArchiveUnavailable
from ..core import DomainError
from ..replication import MembershipRefused, ReplicationError
from .startup import NotReady

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    429: "too_many_requests",
    503: "unavailable",
}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DomainError as error:
        wait = None if error.retry_after is None else {"Retry-After": str(error.retry_after)}
        return error_response(error.status, error.code, error.message, wait)
    except ReplicationError as error:
        return error_response(503, "unavailable", error.message, {"Retry-After": "1"})
    except MembershipRefused as error:
        return error_response(409, "membership_change_refused", error.message)
    except NotReady as error:
        return error_response(503, "not_ready", error.message, {"Retry-After": "1"})
    except ArchiveUnavailable as error:
        message = f"The archive (PostgreSQL) cannot be read: {error}. Retry later."
        return error_response(503, "archive_unavailable", message, {"Retry-After": "1"})
    except web.HTTPRequestEntityTooLarge:
        limit = request.app._client_max_size
        return error_response(
            413, "body_too_large", f"The request body is larger than the limit of {limit} bytes."
        )
    except web.HTTPException as error:
        if error.status < 400:
            raise
        code = _HTTP_CODES.get(error.status, "http_error")
        message = {
            404: f"No route for {request.method} {request.path}.",
            405: f"{request.method} is not allowed on {request.path}.",
        }.get(error.status, error.reason)
        kept = {k: v for k, v in error.headers.items() if k in ("Allow", "WWW-Authenticate")}
        return error_response(error.status, code, message, kept)
    except Exception:
        logger.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal_error", "The server failed to handle the request.")
