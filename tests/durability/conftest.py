"""Fixtures shared by the durability tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.server import ServerProcess


@pytest.fixture
def cleanup() -> Iterator[list[ServerProcess]]:
    """Servers a test appends here are killed when it ends, however it ends."""
    servers: list[ServerProcess] = []
    yield servers
    for server in servers:
        server.kill9()
