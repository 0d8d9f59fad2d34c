"""A throwaway PostgreSQL cluster: initdb, start, pause, resume, stop.

Loopback only, on a free port, with its socket and data in a temporary
directory that is removed on stop. ``initdb`` refuses to run as root, so as
root the cluster belongs to the ``postgres`` user (``runuser``). Trust
authentication: any role connects without a password (a password in a DSN is
accepted and ignored). Unless ``settings`` say otherwise the settings are
PostgreSQL's defaults (``fsync`` and ``synchronous_commit`` on).

The postmaster is started by ``pg_ctl`` (it is not our child), so
:meth:`ThrowawayPostgres.stop` must run on every exit: it is registered with
``atexit`` on start, and callers also call it from a ``finally``.

The benchmark harness uses this class too (``bench/harness/postgres.py``
re-exports it), so this module imports nothing outside the standard library
at import time (:meth:`ThrowawayPostgres.query` imports asyncpg when called).
"""

from __future__ import annotations

import asyncio
import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

HOW_TO_INSTALL = (
    "PostgreSQL is not installed (no pg_ctl/initdb on PATH or under /usr/lib/postgresql); "
    "the archive tests and the LangChain + PostgreSQL benchmark baseline need it: "
    "apt-get install postgresql"
)


def binaries() -> Path | None:
    """The directory with ``initdb`` and ``pg_ctl``, newest version first."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent
    for directory in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(directory, "initdb")):
            return Path(directory)
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ThrowawayPostgres:
    """One PostgreSQL cluster in a temporary directory.

    :meth:`pause` stops the server and keeps its data directory (clients see
    PostgreSQL down); :meth:`resume` starts it again on the same port.
    ``settings`` are extra ``-c name=value`` server settings (for example
    ``{"fsync": "off"}`` where durability does not matter).
    """

    def __init__(
        self, *, settings: Mapping[str, str] | None = None, prefix: str = "fastpaca-pg-"
    ) -> None:
        self.bin = binaries()
        self.port = free_port()
        self.root: Path | None = None
        self.settings = dict(settings or {})
        self.version = ""
        self._prefix = prefix
        self._as_user: list[str] = []

    @property
    def dsn(self) -> str:
        """The ``postgres`` superuser's DSN for the ``postgres`` database."""
        return self.dsn_for("postgres")

    def dsn_for(self, database: str, user: str = "postgres", password: str | None = None) -> str:
        """A DSN for ``database`` as ``user`` (``password`` is ignored by trust auth)."""
        credentials = quote(user, safe="")
        if password is not None:
            credentials += ":" + quote(password, safe="")
        return f"postgresql://{credentials}@127.0.0.1:{self.port}/{quote(database, safe='')}"

    def _run(self, *command: str, timeout: float = 120.0) -> str:
        result = subprocess.run(
            [*self._as_user, *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root or "/",
        )
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {result.stdout[-1500:]} {result.stderr}")
        return result.stdout

    def _tool(self, name: str) -> str:
        if self.bin is None:
            raise RuntimeError(HOW_TO_INSTALL)
        return str(self.bin / name)

    def _data(self) -> Path:
        if self.root is None:
            raise RuntimeError("the throwaway PostgreSQL is not started")
        return self.root / "data"

    def start(self) -> ThrowawayPostgres:
        """initdb a new cluster and start it (waits until it accepts connections)."""
        if self.bin is None:
            raise RuntimeError(HOW_TO_INSTALL)
        if self.root is not None:
            raise RuntimeError("the throwaway PostgreSQL is already started")
        self.root = Path(tempfile.mkdtemp(prefix=self._prefix))
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        atexit.register(self.stop)
        self._run(
            self._tool("initdb"),
            "-D",
            str(self._data()),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        )
        self._start()
        self.version = self._run(self._tool("postgres"), "--version").strip()
        return self

    def _start(self) -> None:
        assert self.root is not None
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        for name, value in self.settings.items():
            options += f" -c {name}={value}"
        self._run(
            self._tool("pg_ctl"),
            "-D",
            str(self._data()),
            "-l",
            str(self.root / "postgres.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def pause(self) -> None:
        """Stop the server (``pg_ctl stop -m fast``: open connections are closed),
        keeping the data directory; :meth:`resume` starts it again."""
        self._run(self._tool("pg_ctl"), "-D", str(self._data()), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start the paused server again, on the same port with the same data."""
        self._start()

    def is_up(self) -> bool:
        """Whether the server accepts TCP connections on its port."""
        if self.root is None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def create_database(self, name: str | None = None) -> str:
        """``CREATE DATABASE`` (a new unique name unless given); returns the name."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        self.query(f'CREATE DATABASE "{name}"')
        return name

    def query(self, sql: str, *args: Any, database: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement as the superuser (a connection of its own) and return
        its rows as tuples. Synchronous, for test assertions: from inside a running
        event loop it runs on a thread of its own."""
        import asyncpg  # not at import time: the benchmark harness has no need of it

        async def run() -> list[tuple[Any, ...]]:
            connection = await asyncpg.connect(self.dsn_for(database), timeout=30)
            try:
                rows = await connection.fetch(sql, *args)
                return [tuple(row) for row in rows]
            finally:
                await connection.close()

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(run())
        result: list[list[tuple[Any, ...]]] = []
        failure: list[BaseException] = []

        def in_thread() -> None:
            try:
                result.append(asyncio.run(run()))
            except BaseException as error:
                failure.append(error)

        worker = threading.Thread(target=in_thread)
        worker.start()
        worker.join()
        if failure:
            raise failure[0]
        return result[0]

    def stop(self) -> None:
        """Stop the server (if up) and remove its directory; safe to call twice."""
        if self.root is None:
            return
        root, self.root = self.root, None
        try:
            data = root / "data"
            if (data / "postmaster.pid").exists() and self.bin is not None:
                pg_ctl = str(self.bin / "pg_ctl")
                subprocess.run(
                    [*self._as_user, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"],
                    capture_output=True,
                    timeout=60,
                    cwd="/",
                )
        finally:
            shutil.rmtree(root, ignore_errors=True)


def scratch_postgres() -> Iterator[ThrowawayPostgres]:
    """The body of a pytest fixture: a throwaway PostgreSQL with fsync off (the tests
    using it do not test its durability), stopped afterwards. Missing binaries fail
    the test with :data:`HOW_TO_INSTALL`: such tests are never skipped (CI has them)."""
    import pytest  # not at import time: the benchmark harness imports this module

    if binaries() is None:
        pytest.fail(HOW_TO_INSTALL, pytrace=False)
    server = ThrowawayPostgres(settings={"fsync": "off"}).start()
    try:
        yield server
    finally:
        server.stop()
