"""Fixtures of the server tests: a spec-checking client of the module's server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server._api import Api, connect
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[Api]:
    """An :class:`Api` on the module's server (modules with their own server override it)."""
    client = connect(server)
    yield client
    client.close()
