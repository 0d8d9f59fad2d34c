"""Fixtures for the Python SDK tests: clients on the module's real server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import fastpaca._base_client
import pytest
from fastpaca import Fastpaca

from tests.support.server import ServerProcess


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Fastpaca]:
    """A sync client on the module's server."""
    with Fastpaca(base_url=server.url) as fastpaca:
        yield fastpaca


@pytest.fixture
def context_id(request: pytest.FixtureRequest) -> str:
    """A context id no other test uses."""
    return f"sdk-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}".replace("[", "-").replace("]", "")


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record retry waits instead of sleeping (sync and async clients)."""
    recorded: list[float] = []

    def sleep(seconds: float) -> None:
        recorded.append(seconds)

    async def async_sleep(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr(fastpaca._base_client, "_sleep", sleep)
    monkeypatch.setattr(fastpaca._base_client, "_async_sleep", async_sleep)
    return recorded
