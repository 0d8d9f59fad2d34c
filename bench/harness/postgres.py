"""A throwaway PostgreSQL cluster for the LangChain baseline: initdb, start, stop.

The class lives in ``tests/support/postgres.py`` (the archive tests use it
too); this module puts the repository root on ``sys.path`` (``bench/run.py``
runs with ``bench/`` as ``sys.path[0]``) and re-exports it. The settings are
PostgreSQL's defaults (``fsync`` and ``synchronous_commit`` on): a committed
message is on disk, as an acknowledged Fastpaca append is.

The postmaster is started by ``pg_ctl`` (it is not our child), so
:meth:`ThrowawayPostgres.stop` must run on every exit: the harness calls it
from a ``finally`` and it is registered with ``atexit``.
"""

from __future__ import annotations

import sys

from .processes import REPO

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.postgres import (
    HOW_TO_INSTALL,
    ThrowawayPostgres,
    binaries,
)

__all__ = ["HOW_TO_INSTALL", "ThrowawayPostgres", "binaries"]
