"""Fixtures of the archive tests: a throwaway PostgreSQL and a database per test.

Missing PostgreSQL binaries fail these tests (CI has them): they are never
skipped.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs
import pytest

from tests.support.postgres import ThrowawayPostgres, scratch_postgres


@attrs.frozen
class Database:
    """A database of the test's own on the module's PostgreSQL."""

    name: str
    dsn: str


@pytest.fixture(scope="module")
def postgres() -> Iterator[ThrowawayPostgres]:
    """One PostgreSQL cluster for the module."""
    yield from scratch_postgres()


@pytest.fixture
def database(postgres: ThrowawayPostgres) -> Database:
    """A fresh database (``CREATE DATABASE``): tests do not see each other's rows."""
    if not postgres.is_up():  # a test that paused it and failed before resuming
        postgres.resume()
    name = postgres.create_database()
    return Database(name=name, dsn=postgres.dsn_for(name))
