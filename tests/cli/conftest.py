"""Fixtures for the CLI tests: unique context ids, an HTTP client on the module's server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support.server import ServerProcess


@pytest.fixture
def context_id(request: pytest.FixtureRequest) -> str:
    """A context id no other test uses (only characters the server allows)."""
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in request.node.name[:40])
    return f"cli-{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    """Plain HTTP to the module's server, to set up and to compare with."""
    with server.client() as client:
        yield client
