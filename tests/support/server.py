"""Real server processes for tests: start on a free loopback port, kill -9, restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """One ``fastpaca-server`` process (``python -m fastpaca_server``) on loopback.

    ``env`` adds ``FASTPACA_*`` (or other) variables; the test's own
    ``FASTPACA_*`` variables are never passed on.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *args: str,
        api_key: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.args = list(args)
        self.api_key = api_key
        self.env = dict(env or {})
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server.log"
        self._log_start = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        self.launch()
        self.wait_ready(timeout)
        return self

    def launch(self) -> ServerProcess:
        """Start the process and return at once (not waiting for it to listen)."""
        command = [
            sys.executable,
            "-m",
            "fastpaca_server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            *self.args,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FASTPACA_")}
        if self.api_key:
            env["FASTPACA_API_KEY"] = self.api_key
        env.update(self.env)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self._log_start = log.tell()
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        return self

    def run_to_exit(self, timeout: float = 30.0) -> tuple[int, str]:
        """Start a process that is expected to stop by itself: its status and output."""
        self.launch()
        assert self.process is not None
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AssertionError(
                f"the server did not exit within {timeout}s: {self.log()}"
            ) from None
        return status, self.output()

    def output(self) -> str:
        """Everything the latest process printed (stdout and stderr)."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_start)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log()}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server not ready after {timeout}s: {self.log()}")

    def log(self) -> str:
        """The end of the log (the last 4,000 characters), for failure messages: to find a
        line in it use :meth:`output`, which request lines cannot push out."""
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def kill9(self) -> None:
        """SIGKILL: no clean shutdown, no flush."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()

    def restart(self, timeout: float = 30.0) -> ServerProcess:
        self.stop()
        return self.start(timeout)

    def client(self, **kwargs: Any) -> httpx.Client:
        headers = dict(kwargs.pop("headers", {}))
        if self.api_key:
            headers.setdefault("Authorization", f"Bearer {self.api_key}")
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)
