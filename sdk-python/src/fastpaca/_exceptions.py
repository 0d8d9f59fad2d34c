"""Every exception the client raises, and the one place that maps a status to a class.

The tree::

    FastpacaError
    ├── APIConnectionError          the request did not get an HTTP answer
    │   └── APITimeoutError         ... because it timed out
    ├── APIStatusError              the server answered 4xx/5xx (status_code, code, body)
    │   ├── BadRequestError         400 (invalid_request, unknown_field, *_exceeds_budget, …)
    │   ├── AuthenticationError     401 unauthorized
    │   ├── NotFoundError           404 not_found
    │   ├── ConflictError           409 version_conflict, context_tombstoned, … (never retried)
    │   ├── RateLimitError          429
    │   ├── ServiceUnavailableError 503 unavailable, not_ready, archive_unavailable (retried,
    │   │                           Retry-After honoured)
    │   └── InternalServerError     any other 5xx
    └── ModelStreamError            the model's stream reported a failure in-band (ctx.stream)

Other statuses (405, 413, …) raise a plain :class:`APIStatusError`.
``err.code`` is the server's stable error code (``"version_conflict"``);
``str(err)`` includes the server's human sentence.
"""

from __future__ import annotations

from typing import Any

import httpx

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "FastpacaError",
    "InternalServerError",
    "ModelStreamError",
    "NotFoundError",
    "RateLimitError",
    "ServiceUnavailableError",
]


class FastpacaError(Exception):
    """The root of every exception this package raises."""


class APIConnectionError(FastpacaError):
    """The request got no HTTP answer: connection refused, reset, DNS, TLS, timeout."""

    def __init__(self, message: str = "Connection error.", *, request: httpx.Request) -> None:
        super().__init__(message)
        self.request = request


class APITimeoutError(APIConnectionError):
    """The request timed out (connect, read, write or pool)."""

    def __init__(self, request: httpx.Request) -> None:
        super().__init__("Request timed out.", request=request)


class APIStatusError(FastpacaError):
    """The server answered with a 4xx or 5xx status.

    Attributes:
        status_code: the HTTP status.
        code: the ``error`` field of the body (``"version_conflict"``), or ``None``
            when the body is not the server's error shape.
        body: the decoded JSON body, or the raw text when it is not JSON.
        response: the :class:`httpx.Response`.
        request_id: the ``x-request-id`` response header, when the server sent one.
    """

    status_code: int

    def __init__(self, message: str, *, response: httpx.Response, body: object) -> None:
        super().__init__(message)
        self.response = response
        self.status_code = response.status_code
        self.body = body
        self.code: str | None = None
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            self.code = body["error"]
        self.request_id: str | None = response.headers.get("x-request-id")


class BadRequestError(APIStatusError):
    """400: the request was refused as invalid; nothing changed."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing or wrong."""


class PermissionDeniedError(APIStatusError):
    """403 ``forbidden``: the key lacks the route's scope, or the context is outside its
    tenant's namespace. Never retried."""


class NotFoundError(APIStatusError):
    """404: no such context (or no such route)."""


class ConflictError(APIStatusError):
    """409: the context is not in the state the request assumed (``version_conflict``,
    ``context_tombstoned``, ``idempotency_key_reused``, …). Never retried."""


class RateLimitError(APIStatusError):
    """429: ``rate_limited`` (the tenant is over its request rate: retried after
    ``Retry-After``) or ``quota_exceeded`` (a write would pass one of the tenant's
    quotas: never retried, nothing was written)."""


class ServiceUnavailableError(APIStatusError):
    """503: ``unavailable`` (the write was not confirmed), ``not_ready`` (the node is
    starting), ``archive_unavailable`` (a read that needs the server's archive while
    it is down), ``overloaded`` (the node sheds load), ``deadline_exceeded`` or
    ``shutting_down``. Retried after ``Retry-After`` with the same idempotency key."""


class InternalServerError(APIStatusError):
    """Any other 5xx (retried with backoff)."""


class ModelStreamError(FastpacaError):
    """The model's stream reported a failure in-band (for example an OpenAI Responses
    ``error`` or ``response.failed`` event). Nothing was appended.

    Attributes:
        chunk: the chunk (event) that reported the failure.
    """

    def __init__(self, message: str, *, chunk: object = None) -> None:
        super().__init__(message)
        self.chunk = chunk


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def status_error_class(status_code: int) -> type[APIStatusError]:
    """The exception class for an error status (the only status → class mapping)."""
    if status_code in _STATUS_CLASSES:
        return _STATUS_CLASSES[status_code]
    if status_code >= 500:
        return InternalServerError
    return APIStatusError


def make_status_error(response: httpx.Response) -> APIStatusError:
    """Build the exception for an error response whose body has been read."""
    body: Any
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        detail = f"{body.get('error', 'error')}: {body['message']}"
    elif isinstance(body, str) and body:
        detail = body[:500]
    else:
        detail = response.reason_phrase or "error"
    message = f"{response.status_code} {detail}"
    return status_error_class(response.status_code)(message, response=response, body=body)
