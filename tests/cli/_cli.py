"""Run the ``fastpaca`` command line as a real subprocess, with bounded waits."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO

CLI = [sys.executable, "-m", "fastpaca.cli"]
TIMEOUT = 30.0
ESCAPE = re.compile(rb"\x1b")
SGR = re.compile(r"\x1b\[([0-9;]*)m")


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without ``FASTPACA_*``, colour and width settings."""
    drop = ("FASTPACA_", "NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES", "TTY_COMPATIBLE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


@dataclass(frozen=True)
class Result:
    status: int
    stdout_bytes: bytes
    stderr: str

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8")


def run(
    *args: str,
    url: str | None = None,
    input: bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = TIMEOUT,
) -> Result:
    """``fastpaca [--url URL] ARGS…``: its exit status, stdout (bytes) and stderr."""
    command = [*CLI, *(["--url", url] if url else []), *args]
    done = subprocess.run(
        command,
        input=input if input is not None else b"",
        capture_output=True,
        env=env if env is not None else clean_env(),
        timeout=timeout,
    )
    return Result(done.returncode, done.stdout, done.stderr.decode("utf-8", "replace"))


def colour_codes(text: str) -> list[str]:
    """The SGR parameters that set a colour (foreground or background)."""
    found = []
    for match in SGR.finditer(text):
        for param in match.group(1).split(";"):
            if param.isdigit() and (30 <= int(param) <= 49 or 90 <= int(param) <= 107):
                found.append(param)
    return found


class Running:
    """A ``fastpaca`` process that keeps running (``tail -f``): its stdout read by a
    thread, line by line, so a test can wait for a line with a deadline."""

    def __init__(self, *args: str, url: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [*CLI, "--url", url, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env if env is not None else clean_env(),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert self.process.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,))
        self._reader.daemon = True
        self._reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self.lines.put(raw.decode("utf-8").rstrip("\n"))

    def wait_for(self, needle: str, timeout: float = 15.0) -> str:
        """The first line (not seen before) containing ``needle``."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.seen:
                if needle in line:
                    self.seen.remove(line)
                    return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                stderr = self.stop()[1]
                raise AssertionError(f"no line with {needle!r} within {timeout}s; stderr: {stderr}")
            try:
                self.seen.append(self.lines.get(timeout=min(remaining, 0.2)))
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    raise AssertionError(
                        f"the process exited with {self.process.returncode} before {needle!r}"
                        f"; stderr: {self.stop()[1]}"
                    ) from None

    def drain(self) -> list[str]:
        """Every line read so far and not yet waited for."""
        while True:
            try:
                self.seen.append(self.lines.get_nowait())
            except queue.Empty:
                break
        lines, self.seen = self.seen, []
        return lines

    def stop(self, sig: int | None = None, timeout: float = 10.0) -> tuple[int, str]:
        """Send ``sig`` (or kill), wait; the exit status and stderr."""
        if self.process.poll() is None:
            if sig is None:
                self.process.kill()
            else:
                self.process.send_signal(sig)
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)
            raise AssertionError(f"the process did not end within {timeout}s") from None
        self._reader.join(timeout)
        assert self.process.stderr is not None
        stderr = self.process.stderr.read().decode("utf-8", "replace")
        self.process.stderr.close()
        if self.process.stdout is not None:
            self.process.stdout.close()
        return status, stderr
