"""Load: ``wrk`` with Lua scripts for throughput and latency, and a small aiohttp
client for what wrk cannot give (exact request counts, per-request timelines).

Every loop here is bounded in time: wrk by ``-d`` (and ``--timeout``), the
client by a request count and a deadline.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from .processes import BENCH

LUA = BENCH / "lua"
HOW_TO_INSTALL_WRK = (
    "wrk is not installed. On Debian/Ubuntu: apt-get install wrk (the bench targets do this "
    "when run as root); on macOS: brew install wrk. Then run make bench again."
)


@dataclass
class Measurement:
    """One server under one load: requests/s, latency percentiles (ms), errors."""

    server: str
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    rps: float = math.nan
    p50: float = math.nan
    p90: float = math.nan
    p99: float = math.nan
    max: float = math.nan
    connections: int = 0
    note: str = ""
    first_error: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in asdict(self).items()
        }


# --- wrk ----------------------------------------------------------------------------


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def ensure_wrk() -> str:
    """wrk's path; installs the Debian package when running as root, else explains."""
    found = wrk_binary()
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing: apt-get install -y wrk", flush=True)
        for command in (
            ["apt-get", "install", "-y", "wrk"],
            ["apt-get", "update"],
            ["apt-get", "install", "-y", "wrk"],
        ):
            subprocess.run(
                command,
                capture_output=True,
                timeout=600,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
            found = wrk_binary()
            if found:
                return found
    raise SystemExit(HOW_TO_INSTALL_WRK)


def wrk_version() -> str:
    binary = wrk_binary()
    if not binary:
        return "not installed"
    result = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    return (result.stdout + result.stderr).splitlines()[0].split(" Copyright")[0].strip()


def _script(workload: str, directory: Path) -> Path:
    """``_common.lua`` followed by the workload's own script, in one file for ``-s``."""
    path = directory / f"{workload}.lua"
    if not path.exists():
        path.write_text(
            (LUA / "_common.lua").read_text() + "\n" + (LUA / f"{workload}.lua").read_text()
        )
    return path


class Wrk:
    """Runs wrk against a server; one instance per run (it keeps the combined scripts)."""

    def __init__(self, work_dir: Path) -> None:
        self.binary = ensure_wrk()
        self.scripts = Path(tempfile.mkdtemp(prefix="lua-", dir=work_dir))

    def start(
        self, url: str, workload: str, prefix: str, contexts: int, connections: int, seconds: float
    ) -> subprocess.Popen[str]:
        threads = max(1, min(2, connections))
        command = [
            self.binary,
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{max(1, round(seconds))}s",
            "--timeout",
            "60s",
            "-s",
            str(_script(workload, self.scripts)),
            url,
            "--",
            prefix,
            str(contexts),
        ]
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    @staticmethod
    def finish(
        process: subprocess.Popen[str], server: str, connections: int, timeout: float
    ) -> Measurement:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        return parse_wrk(stdout, stderr, server, connections)

    def run(
        self,
        url: str,
        workload: str,
        prefix: str,
        contexts: int,
        connections: int,
        seconds: float,
        server: str,
    ) -> Measurement:
        process = self.start(url, workload, prefix, contexts, connections, seconds)
        return self.finish(process, server, connections, timeout=seconds + 90)

    @staticmethod
    def interrupt(process: subprocess.Popen[str]) -> None:
        """Stop wrk early: on SIGINT it stops and still prints its summary."""
        if process.poll() is None:
            process.send_signal(signal.SIGINT)


def parse_wrk(stdout: str, stderr: str, server: str, connections: int) -> Measurement:
    line = next((ln for ln in stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        return Measurement(
            server,
            connections=connections,
            errors=1,
            first_error=f"wrk gave no result: {stdout[-500:]} {stderr[-500:]}",
        )
    data = json.loads(line.removeprefix("BENCH_JSON "))
    errors = data["errors"]
    failed = sum(errors.values())
    ok = max(0, data["requests"] - errors["status"])
    seconds = data["duration_us"] / 1e6
    latency = data["latency_us"]
    result = Measurement(
        server,
        requests=ok,
        errors=failed,
        seconds=seconds,
        rps=ok / seconds if seconds > 0 else math.nan,
        connections=connections,
    )
    if data["requests"]:
        result.p50, result.p90 = latency["p50"] / 1000, latency["p90"] / 1000
        result.p99, result.max = latency["p99"] / 1000, latency["max"] / 1000
    if failed:
        result.first_error = ", ".join(f"{k} {v}" for k, v in errors.items() if v)
    return result


# --- the aiohttp client -------------------------------------------------------------

Request = tuple[str, str, Any]  # method, path, JSON body or None


@dataclass
class Timeline:
    """Per-request samples: (start, latency) in seconds on ``time.perf_counter``."""

    samples: list[tuple[float, float]] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    elapsed: float = 0.0

    def latencies(self, start: float = -math.inf, end: float = math.inf) -> list[float]:
        """Latencies of the requests that overlapped ``[start, end]``."""
        return sorted(lat for begun, lat in self.samples if begun <= end and begun + lat >= start)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def summarise(
    server: str,
    timeline: Timeline,
    concurrency: int,
    start: float = -math.inf,
    end: float = math.inf,
) -> Measurement:
    latencies = timeline.latencies(start, end)
    seconds = timeline.elapsed if math.isinf(start) else max(0.0, end - start)
    return Measurement(
        server,
        requests=len(latencies),
        errors=timeline.errors,
        seconds=seconds,
        rps=len(latencies) / seconds if seconds > 0 else math.nan,
        p50=percentile(latencies, 0.5) * 1000,
        p90=percentile(latencies, 0.9) * 1000,
        p99=percentile(latencies, 0.99) * 1000,
        max=(latencies[-1] * 1000) if latencies else math.nan,
        connections=concurrency,
        first_error=timeline.first_error,
    )


async def send(session: aiohttp.ClientSession, request: Request) -> tuple[int, bytes]:
    method, path, body = request
    async with session.request(method, path, json=body) as response:
        return response.status, await response.read()


async def call(url: str, request: Request, timeout: float = 120.0) -> tuple[int, Any]:
    """One request on a fresh session: ``(status, parsed JSON or text)``."""
    async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        status, payload = await send(session, request)
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload[:500].decode(errors="replace")


async def drive(
    url: str,
    requests: Callable[[int], Request],
    total: int,
    concurrency: int,
    time_cap: float,
    timeout: float = 60.0,
) -> Timeline:
    """Send ``requests(0 … total-1)`` from ``concurrency`` workers; stop at ``time_cap``."""
    return await _workers(url, requests, concurrency, time_cap, timeout, lambda n: n < total)


async def drive_until(
    url: str,
    requests: Callable[[int], Request],
    concurrency: int,
    stop: asyncio.Event,
    time_cap: float,
) -> Timeline:
    """``concurrency`` workers send ``requests(0, 1, …)`` until ``stop`` is set or the cap."""
    return await _workers(url, requests, concurrency, time_cap, 60.0, lambda _: not stop.is_set())


async def _workers(
    url: str,
    requests: Callable[[int], Request],
    concurrency: int,
    time_cap: float,
    timeout: float,
    more: Callable[[int], bool],
) -> Timeline:
    """``concurrency`` workers sending ``requests(n)`` for n = 0, 1, … while ``more(n)``
    holds and ``time_cap`` seconds have not passed; every request timed."""
    timeline = Timeline()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        url, connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as session:
        next_index = 0
        started = time.perf_counter()
        deadline = started + time_cap

        async def worker() -> None:
            nonlocal next_index
            while more(next_index) and time.perf_counter() < deadline:
                index = next_index
                next_index += 1
                begun = time.perf_counter()
                try:
                    status, payload = await send(session, requests(index))
                except (aiohttp.ClientError, TimeoutError) as error:
                    status, payload = 0, repr(error).encode()
                if 200 <= status < 300:
                    timeline.samples.append((begun, time.perf_counter() - begun))
                else:
                    timeline.errors += 1
                    timeline.first_error = timeline.first_error or f"{status} {payload[:200]!r}"

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        timeline.elapsed = time.perf_counter() - started
    return timeline


async def probe(
    url: str,
    request: Callable[[int], Request],
    stop: asyncio.Event,
    interval: float,
    time_cap: float,
) -> Timeline:
    """One connection, one request at a time, ``interval`` apart, until ``stop`` or the cap."""
    timeline = Timeline()
    async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=60)) as session:
        started = time.perf_counter()
        index = 0
        while not stop.is_set() and time.perf_counter() - started < time_cap:
            begun = time.perf_counter()
            try:
                status, payload = await send(session, request(index))
            except (aiohttp.ClientError, TimeoutError) as error:
                status, payload = 0, repr(error).encode()
            if 200 <= status < 300:
                timeline.samples.append((begun, time.perf_counter() - begun))
            else:
                timeline.errors += 1
                timeline.first_error = timeline.first_error or f"{status} {payload[:200]!r}"
            index += 1
            pause = interval - (time.perf_counter() - begun)
            if pause > 0:
                await asyncio.sleep(pause)
        timeline.elapsed = time.perf_counter() - started
    return timeline
