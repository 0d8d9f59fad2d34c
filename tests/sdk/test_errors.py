"""Every exception class, raised by a real server where it can answer that way, by an
injected transport (429, 500, 503) or by a socket that never answers (timeouts)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import fastpaca
import httpx
import pytest
from fastpaca import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncFastpaca,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    Fastpaca,
    FastpacaError,
    InternalServerError,
    NotFoundError,
    RateLimitError,
    ServiceUnavailableError,
)
from fastpaca._exceptions import status_error_class

from tests.sdk._transports import FaultyTransport
from tests.support.server import ServerProcess, free_port


def user(text: str) -> dict:
    return {"role": "user", "parts": [{"type": "text", "text": text}]}


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("keyed") / "data", api_key="s3cret").start()
    yield process
    process.stop()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_the_tree_is_as_documented() -> None:
    for name in [
        "APIConnectionError",
        "APIStatusError",
        "BadRequestError",
        "AuthenticationError",
        "NotFoundError",
        "ConflictError",
        "RateLimitError",
        "ServiceUnavailableError",
        "InternalServerError",
        "ModelStreamError",
    ]:
        error_class = getattr(fastpaca, name)
        assert issubclass(error_class, FastpacaError)
        assert name in fastpaca._exceptions.__doc__
    assert issubclass(APITimeoutError, APIConnectionError)
    for status, expected in [
        (400, BadRequestError),
        (401, AuthenticationError),
        (404, NotFoundError),
        (409, ConflictError),
        (429, RateLimitError),
        (503, ServiceUnavailableError),
        (500, InternalServerError),
        (502, InternalServerError),
        (413, APIStatusError),
    ]:
        assert status_error_class(status) is expected


def test_bad_request(client: Fastpaca, context_id: str) -> None:
    ctx = client.context(context_id, budget=10)
    with pytest.raises(BadRequestError) as error:
        ctx.append({"role": "user", "content": "Hi"})
    assert error.value.status_code == 400 and error.value.code == "unknown_field"
    assert isinstance(error.value.body, dict) and "parts" in error.value.body["message"]
    assert "unknown_field" in str(error.value)
    with pytest.raises(BadRequestError) as budget:
        ctx.append(user("far too long for a ten-token budget " * 3))
    assert budget.value.code == "message_exceeds_budget"
    with pytest.raises(BadRequestError) as missing_budget:
        client.context(context_id + "-x", metadata={"a": 1})
    assert missing_budget.value.code == "invalid_request"


def test_authentication(keyed_server: ServerProcess, context_id: str) -> None:
    with Fastpaca(base_url=keyed_server.url, api_key="wrong") as wrong:
        with pytest.raises(AuthenticationError) as error:
            wrong.context(context_id, budget=10)
        assert error.value.code == "unauthorized" and error.value.status_code == 401
    with Fastpaca(base_url=keyed_server.url, api_key="s3cret") as right:
        assert right.context(context_id, budget=10).info is not None


def test_api_key_from_the_environment(
    keyed_server: ServerProcess, context_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTPACA_API_KEY", "s3cret")
    monkeypatch.setenv("FASTPACA_URL", keyed_server.url)
    with Fastpaca() as client:
        assert client.context(context_id, budget=10).info is not None


def test_not_found_and_conflict(client: Fastpaca, context_id: str) -> None:
    with pytest.raises(NotFoundError):
        client.context(context_id).tail()
    ctx = client.context(context_id, budget=100)
    ctx.append(user("a"), idempotency_key="same")
    with pytest.raises(ConflictError) as reused:
        ctx.append(user("b"), idempotency_key="same")
    assert reused.value.code == "idempotency_key_reused"


@pytest.mark.parametrize(
    ("status", "error_class"),
    [(429, RateLimitError), (503, ServiceUnavailableError), (500, InternalServerError)],
)
def test_retryable_statuses_raise_once_retries_run_out(
    server: ServerProcess, context_id: str, sleeps: list[float], status: int, error_class: type
) -> None:
    transport = FaultyTransport([(status, {})] * 3)
    http = httpx.Client(transport=transport)
    client = Fastpaca(base_url=server.url, http_client=http, max_retries=2)
    with client, pytest.raises(error_class) as error:
        client.context(context_id, budget=10)
    assert error.value.status_code == status
    assert len(transport.requests) == 3 and len(sleeps) == 2


def test_connection_error(context_id: str, sleeps: list[float]) -> None:
    client = Fastpaca(base_url=f"http://127.0.0.1:{free_port()}", max_retries=1)
    with client, pytest.raises(APIConnectionError) as error:
        client.context(context_id, budget=10)
    assert not isinstance(error.value, APITimeoutError)
    assert len(sleeps) == 1


def test_timeout(silent_port: int, context_id: str) -> None:
    client = Fastpaca(base_url=f"http://127.0.0.1:{silent_port}", timeout=0.2, max_retries=0)
    with client, pytest.raises(APITimeoutError):
        client.context(context_id, budget=10)


def test_async_errors(server: ServerProcess, silent_port: int, context_id: str) -> None:
    async def main() -> None:
        async with AsyncFastpaca(base_url=server.url) as client:
            with pytest.raises(NotFoundError):
                await (await client.context(context_id)).get()
            ctx = await client.context(context_id, budget=10)
            with pytest.raises(BadRequestError):
                await ctx.append({"role": "user", "parts": []})
        silent = f"http://127.0.0.1:{silent_port}"
        async with AsyncFastpaca(base_url=silent, timeout=0.2, max_retries=0) as client:
            with pytest.raises(APITimeoutError):
                await client.context(context_id, budget=10)
        closed = f"http://127.0.0.1:{free_port()}"
        async with AsyncFastpaca(base_url=closed, max_retries=0) as client:
            with pytest.raises(APIConnectionError):
                await client.context(context_id, budget=10)

    asyncio.run(main())


def test_a_success_without_json_is_a_clear_error(context_id: str) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text="<html>"))
    with (
        Fastpaca(
            base_url="http://fastpaca.test", http_client=httpx.Client(transport=transport)
        ) as client,
        pytest.raises(FastpacaError, match="not JSON"),
    ):
        client.context(context_id, budget=10)


def test_the_server_starting_up_is_retried(tmp_path: Path, context_id: str) -> None:
    """A client that starts with the server gets through: refused connections and
    503 not_ready (with Retry-After) are retried."""
    process = ServerProcess(tmp_path / "data").launch()
    try:
        with Fastpaca(base_url=process.url, max_retries=8) as client:
            ctx = client.context(context_id, budget=100)
            assert ctx.append(user("first")).seq == 1
    finally:
        process.kill9()
