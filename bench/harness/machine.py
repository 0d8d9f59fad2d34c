"""What a result was measured on: machine, software versions, git revision, load."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

from .processes import REPO

SERVER_SOURCES = REPO / "server" / "src"


def server_stack() -> dict[str, str]:
    """The JSON library and event loop the server uses, read from its imports.

    The bare baseline must use the same ones: a baseline on a faster (or a
    slower) library would not measure what the server adds.
    """
    text = "\n".join(path.read_text(errors="replace") for path in SERVER_SOURCES.rglob("*.py"))
    uses = {
        name: bool(re.search(rf"^\s*(import|from)\s+{name}\b", text, re.MULTILINE))
        for name in ("orjson", "uvloop")
    }
    return {
        "json": "orjson" if uses["orjson"] else "json",
        "loop": "uvloop" if uses["uvloop"] else "asyncio",
    }


def git_revision() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            result = subprocess.run(
                ["git", *args], capture_output=True, text=True, timeout=10, cwd=REPO
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return result.stdout.strip()

    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "revision": git("rev-parse", "HEAD") or "unknown",
        "dirty": bool(status),
        "changed_files": status.splitlines()[:50],
    }


def load_average() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _filesystem(path: Path) -> str:
    try:
        result = subprocess.run(
            ["df", "--output=fstype,source", str(path)], capture_output=True, text=True, timeout=5
        )
        return " ".join(result.stdout.split()[2:]) or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def fsync_p50_ms(directory: Path, samples: int = 200) -> float:
    """p50 of write-200-bytes-then-fdatasync in ``directory`` (where the data dirs live)."""
    path = directory / "fsync-probe"
    timings = []
    with open(path, "ab") as handle:
        for _ in range(samples):
            started = time.perf_counter()
            handle.write(b"x" * 200)
            handle.flush()
            os.fdatasync(handle.fileno())
            timings.append(time.perf_counter() - started)
    path.unlink()
    timings.sort()
    return round(timings[len(timings) // 2] * 1000, 3)


def describe(work_dir: Path, wrk: str, postgres: str) -> dict[str, Any]:
    import tiktoken

    return {
        "system": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "tiktoken": tiktoken.__version__,
        "wrk": wrk,
        "postgres": postgres,
        "data_filesystem": _filesystem(work_dir),
        "fsync_p50_ms": fsync_p50_ms(work_dir),
    }
