"""Fixtures for the integration tests: a Fastpaca client on the module's real server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastpaca import Fastpaca

from tests.support.server import ServerProcess


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Fastpaca]:
    """A sync Fastpaca client on the module's server."""
    with Fastpaca(base_url=server.url) as fastpaca:
        yield fastpaca
