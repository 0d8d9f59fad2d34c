"""What the sync and async clients share: configuration, requests, retries.

A :class:`Call` describes one API request (method, path, query, body) and how to
parse its answer. The context classes build calls; :class:`SyncAPIClient` and
:class:`AsyncAPIClient` send them with the same retry policy, the only
difference being how they wait and do I/O.

Retries follow openai-python: connection errors, timeouts, 408, 429 and 5xx are
retried up to ``max_retries`` times with exponential backoff from 0.5 s to 8 s
and up to 25 % jitter, or after the server's ``Retry-After`` when it gives one
(≤ 60 s); a 503 is retried whatever its code (``unavailable``, ``not_ready``,
``archive_unavailable``). 409 is never retried: it means the context is not in
the state the request assumed. A call is built once, so a retried append carries
the same body, and with it the same ``idempotency_key``.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

from ._exceptions import (
    APIConnectionError,
    APITimeoutError,
    FastpacaError,
    make_status_error,
)
from ._version import __version__

T = TypeVar("T")

DEFAULT_BASE_URL = "http://127.0.0.1:4000"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
DEFAULT_MAX_RETRIES = 2
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
MAX_RETRY_AFTER = 60.0
RETRYABLE_STATUSES = frozenset({408, 429})


class NotGiven:
    """Sentinel for "argument not given" where ``None`` is a meaningful value."""

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN = NotGiven()

TimeoutTypes = float | httpx.Timeout | None


def decode_json(response: httpx.Response) -> Any:
    """The JSON body of a successful answer (a :class:`FastpacaError` if it is not JSON)."""
    try:
        return response.json()
    except ValueError as error:
        raise FastpacaError(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code} with a body that is not JSON"
        ) from error


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API request and the parser of its successful answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, int | str] = field(default_factory=dict)
    json: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: TimeoutTypes | NotGiven = NOT_GIVEN


def should_retry_status(status_code: int) -> bool:
    """Whether an error status is worth retrying (never 409)."""
    return status_code in RETRYABLE_STATUSES or status_code >= 500


def should_retry(response: httpx.Response) -> bool:
    """Whether a read error response is worth retrying: its status says so, and it is not
    a 429 ``quota_exceeded`` (a quota does not free up by waiting)."""
    if not should_retry_status(response.status_code):
        return False
    if response.status_code == 429:
        try:
            body = response.json()
        except ValueError:
            return True
        return not (isinstance(body, dict) and body.get("error") == "quota_exceeded")
    return True


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """The wait a ``Retry-After`` (or ``retry-after-ms``) header asks for, if any."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return float(milliseconds) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    moment = email.utils.parsedate_tz(value)
    if moment is None:
        return None
    return float(email.utils.mktime_tz(moment) - time.time())


def retry_delay(retries_taken: int, response: httpx.Response | None) -> float:
    """Seconds to wait before retry number ``retries_taken + 1``."""
    if response is not None:
        asked = retry_after_seconds(response.headers)
        if asked is not None and 0 <= asked <= MAX_RETRY_AFTER:
            return asked
    backoff = min(INITIAL_RETRY_DELAY * 2.0**retries_taken, MAX_RETRY_DELAY)
    return backoff * (1 - 0.25 * random.random())


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


async def _async_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


class BaseClient:
    """Configuration shared by :class:`~fastpaca.Fastpaca` and
    :class:`~fastpaca.AsyncFastpaca`."""

    base_url: str
    api_key: str | None
    max_retries: int
    timeout: TimeoutTypes

    def _configure(
        self,
        *,
        base_url: str | None,
        api_key: str | None,
        timeout: TimeoutTypes | NotGiven,
        max_retries: int,
        client_timeout: httpx.Timeout | None,
    ) -> None:
        url = base_url or os.environ.get("FASTPACA_URL") or DEFAULT_BASE_URL
        url = url.rstrip("/")
        # The original Fastpaca SDK's base URL includes /v1; accept both.
        url = url.removesuffix("/v1")
        self.base_url = url
        self.api_key = api_key if api_key is not None else os.environ.get("FASTPACA_API_KEY")
        if max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        self.max_retries = max_retries
        if isinstance(timeout, NotGiven):
            self.timeout = client_timeout if client_timeout is not None else DEFAULT_TIMEOUT
        else:
            self.timeout = timeout

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": f"fastpaca-python/{__version__}"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _build_request(
        self, http: httpx.Client | httpx.AsyncClient, call: Call[Any]
    ) -> httpx.Request:
        timeout = self.timeout if isinstance(call.timeout, NotGiven) else call.timeout
        return http.build_request(
            call.method,
            self.base_url + call.path,
            params=dict(call.params) or None,
            json=call.json,
            headers={**self._headers(), **call.headers},
            timeout=timeout,
        )


class SyncAPIClient(BaseClient):
    """Sends calls with an :class:`httpx.Client`, retrying as the module says."""

    _http: httpx.Client
    _owns_http: bool

    def _setup_http(self, http_client: httpx.Client | None) -> None:
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.Client()

    def _send(self, call: Call[T]) -> T:
        with self._open(call, stream=False) as response:
            return call.parse(response)

    @contextmanager
    def _open(self, call: Call[Any], *, stream: bool) -> Iterator[httpx.Response]:
        """Send ``call`` (with retries) and yield its successful response."""
        retries_taken = 0
        while True:
            request = self._build_request(self._http, call)
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TimeoutException as error:
                if retries_taken < self.max_retries:
                    _sleep(retry_delay(retries_taken, None))
                    retries_taken += 1
                    continue
                raise APITimeoutError(request) from error
            except httpx.RequestError as error:
                if retries_taken < self.max_retries:
                    _sleep(retry_delay(retries_taken, None))
                    retries_taken += 1
                    continue
                raise APIConnectionError(f"Connection error: {error}", request=request) from error
            if response.is_success:
                try:
                    yield response
                finally:
                    response.close()
                return
            response.read()
            response.close()
            if should_retry(response) and retries_taken < self.max_retries:
                _sleep(retry_delay(retries_taken, response))
                retries_taken += 1
                continue
            raise make_status_error(response)

    def close(self) -> None:
        """Close the HTTP connection pool (not an ``http_client`` you passed in)."""
        if self._owns_http:
            self._http.close()


class AsyncAPIClient(BaseClient):
    """Sends calls with an :class:`httpx.AsyncClient`, retrying as the module says."""

    _http: httpx.AsyncClient
    _owns_http: bool

    def _setup_http(self, http_client: httpx.AsyncClient | None) -> None:
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient()

    async def _send(self, call: Call[T]) -> T:
        async with self._open(call, stream=False) as response:
            return call.parse(response)

    @asynccontextmanager
    async def _open(self, call: Call[Any], *, stream: bool) -> AsyncIterator[httpx.Response]:
        """Send ``call`` (with retries) and yield its successful response."""
        retries_taken = 0
        while True:
            request = self._build_request(self._http, call)
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TimeoutException as error:
                if retries_taken < self.max_retries:
                    await _async_sleep(retry_delay(retries_taken, None))
                    retries_taken += 1
                    continue
                raise APITimeoutError(request) from error
            except httpx.RequestError as error:
                if retries_taken < self.max_retries:
                    await _async_sleep(retry_delay(retries_taken, None))
                    retries_taken += 1
                    continue
                raise APIConnectionError(f"Connection error: {error}", request=request) from error
            if response.is_success:
                try:
                    yield response
                finally:
                    await response.aclose()
                return
            await response.aread()
            await response.aclose()
            if should_retry(response) and retries_taken < self.max_retries:
                await _async_sleep(retry_delay(retries_taken, response))
                retries_taken += 1
                continue
            raise make_status_error(response)

    async def close(self) -> None:
        """Close the HTTP connection pool (not an ``http_client`` you passed in)."""
        if self._owns_http:
            await self._http.aclose()
