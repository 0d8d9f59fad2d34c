"""Server subprocesses on free loopback ports: Fastpaca and the two baselines.

Every child asks Linux to SIGTERM it if the harness dies
(``PR_SET_PDEATHSIG``), and :meth:`ServerProcess.stop` is safe to call twice,
so no server outlives a run, whichever way the run ends.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
REPO = BENCH.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks Linux to SIGTERM the child if this process dies."""
    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(name, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return hook


def http_status(url: str, timeout: float = 1.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (OSError, ValueError):
        return None


class ServerProcess:
    """One server subprocess with its log file; ``stop()`` is safe to call twice."""

    def __init__(self, name: str, command: list[str], port: int, log_path: Path) -> None:
        self.name = name
        self.command = command
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def launch(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FASTPACA_")}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
                preexec_fn=_die_with_parent_hook(),  # only calls prctl
            )

    def wait_ready(self, path: str = "/health/ready", timeout: float = 120.0) -> float:
        """Poll ``path`` until it answers 200; the seconds that took."""
        started = time.perf_counter()
        deadline = started + timeout
        while time.perf_counter() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}: {self.log_tail()}"
                )
            if http_status(self.url + path) == 200:
                return time.perf_counter() - started
            time.sleep(0.01)
        raise TimeoutError(f"{self.name} not ready after {timeout:g} s: {self.log_tail()}")

    def start(self, timeout: float = 120.0) -> float:
        """Launch and wait until ready; the seconds from launch to ready."""
        started = time.perf_counter()
        self.launch()
        self.wait_ready(timeout=timeout)
        return time.perf_counter() - started

    def log_tail(self, characters: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-characters:]
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 30.0) -> float:
        """SIGTERM, then SIGKILL after ``timeout``; the seconds the process took to exit."""
        started = time.perf_counter()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return time.perf_counter() - started

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class FastpacaServer(ServerProcess):
    """``python -m fastpaca_server`` on a data directory; restartable with other flags.

    Unless the flags say otherwise it runs with ``--latency-target 0`` (a fixed limit
    of ``--max-inflight`` requests in flight): the closed-loop stages measure what the
    engine does at 64 connections, which a node lowering its limit under load would
    partly refuse. The ``overload`` stage runs the node with its defaults."""

    def __init__(self, name: str, data_dir: Path, log_dir: Path, *flags: str) -> None:
        self.data_dir = data_dir
        self.flags = list(flags)
        port = free_port()
        super().__init__(name, self._command(port), port, log_dir / f"{name}.log")

    def _command(self, port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "fastpaca_server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(self.data_dir),
            *([] if "--latency-target" in self.flags else ["--latency-target", "0"]),
            *self.flags,
        ]

    def restart(self, *flags: str, timeout: float = 600.0) -> tuple[float, float]:
        """Stop, then start on the same data directory (with ``flags`` instead of the old
        ones); ``(seconds to stop, seconds from launch to /health/ready)``."""
        stopped = self.stop()
        self.flags = list(flags)
        self.command = self._command(self.port)
        return stopped, self.start(timeout=timeout)


def baseline_command(script: str, port: int, stack: dict[str, str], *extra: str) -> list[str]:
    return [
        sys.executable,
        str(BENCH / "baselines" / script),
        "--port",
        str(port),
        "--json",
        stack["json"],
        "--loop",
        stack["loop"],
        *extra,
    ]


def start_bare(log_dir: Path, stack: dict[str, str]) -> ServerProcess:
    port = free_port()
    server = ServerProcess(
        "bare", baseline_command("bare_aiohttp.py", port, stack), port, log_dir / "bare.log"
    )
    server.start(timeout=60)
    return server


def start_langchain(log_dir: Path, stack: dict[str, str], dsn: str) -> ServerProcess:
    port = free_port()
    command = baseline_command("langchain_service.py", port, stack, "--dsn", dsn)
    server = ServerProcess("langchain", command, port, log_dir / "langchain.log")
    server.start(timeout=120)
    return server
