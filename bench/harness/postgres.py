"""A throwaway PostgreSQL cluster for the LangChain baseline: initdb, start, stop.

Loopback only, on a free port, with its socket and data in a temporary
directory that is removed on stop. ``initdb`` refuses to run as root, so as
root the cluster belongs to the ``postgres`` user (``runuser``). The
settings are PostgreSQL's defaults (``fsync`` and ``synchronous_commit`` on):
a committed message is on disk, as an acknowledged Fastpaca append is.

The postmaster is started by ``pg_ctl`` (it is not our child), so
:meth:`ThrowawayPostgres.stop` must run on every exit: the harness calls it
from a ``finally`` and registers it with ``atexit``.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from .processes import free_port

HOW_TO_INSTALL = (
    "PostgreSQL is not installed (no pg_ctl/initdb on PATH or under /usr/lib/postgresql); "
    "the LangChain + PostgreSQL baseline needs it: apt-get install postgresql"
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


class ThrowawayPostgres:
    def __init__(self) -> None:
        self.bin = binaries()
        self.port = free_port()
        self.root: Path | None = None
        self._as_user: list[str] = []
        self.version = ""

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str, timeout: float = 120.0) -> str:
        result = subprocess.run(
            [*self._as_user, *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {result.stdout[-1500:]} {result.stderr}")
        return result.stdout

    def start(self) -> ThrowawayPostgres:
        if self.bin is None:
            raise RuntimeError(HOW_TO_INSTALL)
        self.root = Path(tempfile.mkdtemp(prefix="fastpaca-bench-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        atexit.register(self.stop)
        data = self.root / "data"
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        )
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(self.root / "postgres.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        self.version = self._run(str(self.bin / "postgres"), "--version").strip()
        return self

    def stop(self) -> None:
        if self.root is None:
            return
        root, self.root = self.root, None
        try:
            data = root / "data"
            if (data / "postmaster.pid").exists():
                pg_ctl = str(self.bin / "pg_ctl")
                subprocess.run(
                    [*self._as_user, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"],
                    capture_output=True,
                    timeout=60,
                    cwd="/",
                )
        finally:
            shutil.rmtree(root, ignore_errors=True)
