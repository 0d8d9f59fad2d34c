"""Append and window-read latency of Fastpaca beside a bare aiohttp handler.

Usage (from the repository root)::

    .venv/bin/python bench/append_latency.py           # 2,000 requests per cell
    .venv/bin/python bench/append_latency.py --quick   # 200 requests per cell

Two servers run as subprocesses on free loopback ports:

* **baseline**: a bare aiohttp app (this file with ``--serve-baseline PORT``)
  whose one handler reads the JSON body, if there is one, and returns a
  small JSON object. It is the floor: HTTP parsing, JSON, and the event loop.
* **fastpaca**: ``python -m fastpaca_server`` with a fresh temporary data
  directory. Every acknowledged append is fsync'd to its journal first.

This process drives both with the same load: an aiohttp client and
``concurrency`` workers that share a fixed request count. It does this for
each concurrency level and for two workloads:

* ``append``: ``POST /v1/contexts/{id}/messages`` with one ~25-token text
  message. Each worker appends to a context of its own, the way concurrent
  conversations would. The budget is 128,000 tokens, so no window policy runs
  and the figure is the append path itself (validate, count tokens, commit
  with fsync, apply, render).
* ``read``: ``GET /v1/contexts/{id}/context`` of a context that holds a
  20-message window.

The baseline receives the same paths and bodies. Each cell is split into
``--rounds`` short rounds that alternate the two servers, so a noisy
neighbour on a shared machine hits both rather than one. The table shows
requests/s, p50 and p99 latency for each server, and fastpaca ÷ baseline.

A cell stops at ``--time-cap`` seconds even if its requests are not done;
a capped cell is marked with ``*``. Both servers are stopped, and the
temporary directory is removed, on every exit path (SIGINT, SIGTERM,
errors). If this process is killed with SIGKILL, Linux still terminates
the servers, but the temporary directory stays.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import datetime
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

TOKEN_BUDGET = 128_000
WINDOW_MESSAGES = 20
MESSAGE_TEXT = (
    "Could you summarise the last quarterly report in three short bullet points "
    "for the team meeting, please? (#{index})"
)

# --- the baseline server ---------------------------------------------------------


async def _baseline_handler(request: web.Request) -> web.Response:
    fields = 0
    if request.can_read_body:
        body = await request.json()
        fields = len(body) if isinstance(body, dict) else 0
    return web.json_response({"ok": True, "fields": fields})


def serve_baseline(port: int) -> None:
    """Run the bare aiohttp app (in the baseline subprocess)."""
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", _baseline_handler)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# --- server processes -----------------------------------------------------------


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
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return hook


class ServerProcess:
    """A server subprocess with its log file; ``stop()`` is safe to call twice."""

    def __init__(self, name: str, command: list[str], port: int, log_path: Path) -> None:
        self.name = name
        self.command = command
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str, timeout: float = 60.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FASTPACA_")}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                # Started before the event loop runs, while no other threads exist.
                preexec_fn=_die_with_parent_hook(),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.url + ready_path, timeout=1) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready after {timeout} s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextlib.contextmanager
def servers(work_dir: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Start the baseline and fastpaca servers; stop both on every way out."""
    baseline_port = free_port()
    baseline = ServerProcess(
        "baseline",
        [sys.executable, str(Path(__file__).resolve()), "--serve-baseline", str(baseline_port)],
        baseline_port,
        work_dir / "baseline.log",
    )
    fastpaca_port = free_port()
    fastpaca = ServerProcess(
        "fastpaca",
        [
            sys.executable,
            "-m",
            "fastpaca_server",
            "--host",
            "127.0.0.1",
            "--port",
            str(fastpaca_port),
            "--data-dir",
            str(work_dir / "data"),
        ],
        fastpaca_port,
        work_dir / "fastpaca.log",
    )
    try:
        baseline.start("/health")
        fastpaca.start("/health/ready")
        yield baseline, fastpaca
    finally:
        fastpaca.stop()
        baseline.stop()


# --- load ---------------------------------------------------------------------------

Request = tuple[str, str, bytes | None]  # method, path, body
RequestFactory = Callable[[int, int], Request]  # (worker, index) -> request


@dataclass
class RunResult:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    elapsed: float = 0.0
    capped: bool = False

    @property
    def requests_per_second(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed > 0 else 0.0

    def percentile_ms(self, fraction: float) -> float:
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        rank = max(1, math.ceil(fraction * len(ordered)))
        return ordered[rank - 1] * 1000


async def drive(
    base_url: str,
    make_request: RequestFactory,
    *,
    total: int,
    concurrency: int,
    time_cap: float,
) -> RunResult:
    """Send ``total`` requests from ``concurrency`` workers; stop at ``time_cap`` seconds."""
    result = RunResult()
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout) as session:

        async def send(request: Request) -> tuple[bool, str]:
            method, path, body = request
            async with session.request(method, path, data=body, headers=headers) as response:
                payload = await response.read()
                if response.status >= 300:
                    return False, f"{response.status} {payload[:200]!r}"
                return True, ""

        # Open every connection before the clock starts (not counted).
        await asyncio.gather(*(send(make_request(w, -1 - w)) for w in range(concurrency)))

        next_index = 0
        deadline = time.perf_counter() + time_cap

        async def worker(worker_id: int) -> None:
            nonlocal next_index
            while next_index < total:
                if time.perf_counter() >= deadline:
                    result.capped = True
                    return
                index = next_index
                next_index += 1
                request = make_request(worker_id, index)
                started = time.perf_counter()
                try:
                    ok, error = await send(request)
                except (aiohttp.ClientError, TimeoutError) as exception:
                    ok, error = False, repr(exception)
                if ok:
                    result.latencies.append(time.perf_counter() - started)
                else:
                    result.errors += 1
                    result.first_error = result.first_error or error

        started = time.perf_counter()
        tasks = [asyncio.create_task(worker(w)) for w in range(concurrency)]
        try:
            _, pending = await asyncio.wait(tasks, timeout=time_cap + 35)
            result.capped = result.capped or bool(pending)  # hung past cap and timeout
        finally:  # also when this coroutine is cancelled (Ctrl-C)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        result.elapsed = time.perf_counter() - started
    return result


# --- workloads ----------------------------------------------------------------------


def message(index: int) -> dict[str, Any]:
    return {"role": "user", "parts": [{"type": "text", "text": MESSAGE_TEXT.format(index=index)}]}


def append_request(prefix: str) -> RequestFactory:
    def make(worker: int, index: int) -> Request:
        body = json.dumps({"message": message(index)}).encode()
        return "POST", f"/v1/contexts/{prefix}-w{worker}/messages", body

    return make


def read_request(prefix: str) -> RequestFactory:
    def make(worker: int, index: int) -> Request:
        return "GET", f"/v1/contexts/{prefix}-w{worker}/context", None

    return make


async def setup_contexts(base_url: str, prefix: str, count: int, window: int) -> None:
    """Create ``count`` contexts (and fill each with ``window`` messages) on fastpaca."""
    async with aiohttp.ClientSession(base_url) as session:
        for worker in range(count):
            path = f"/v1/contexts/{prefix}-w{worker}"
            async with session.put(path, json={"token_budget": TOKEN_BUDGET}) as response:
                response.raise_for_status()
            if window:
                batch = {"messages": [message(i) for i in range(window)]}
                async with session.post(f"{path}/messages", json=batch) as response:
                    response.raise_for_status()


def load_average() -> str:
    """The 1-minute load average (Linux), to judge how busy a shared machine was."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except (OSError, IndexError):
        return "n/a"


def fsync_latency_ms(directory: Path, samples: int = 200) -> float:
    """p50 of append-200-bytes-then-fdatasync on the data directory's disk."""
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
    return timings[len(timings) // 2] * 1000


# --- the report ---------------------------------------------------------------------


@dataclass
class Row:
    workload: str
    concurrency: int
    baseline: RunResult
    fastpaca: RunResult


def _cell(result: RunResult) -> str:
    mark = "*" if result.capped else " "
    return (
        f"{result.requests_per_second:>8,.0f}{mark} {result.percentile_ms(0.5):>7.2f} "
        f"{result.percentile_ms(0.99):>7.2f}"
    )


def _ratio(fastpaca: float, baseline: float) -> str:
    if baseline > 0 and not math.isnan(fastpaca):
        return f"{fastpaca / baseline:>6.2f}x"
    return f"{'n/a':>7}"


def print_report(
    rows: list[Row], args: argparse.Namespace, fsync_ms: float, loads: tuple[str, str]
) -> None:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print()
    print(f"Fastpaca vs a bare aiohttp handler, {now}")
    print(
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, aiohttp {aiohttp.__version__}; "
        f"fdatasync p50 on the data disk {fsync_ms:.2f} ms; "
        f"load average {loads[0]} at the start, {loads[1]} at the end"
    )
    print(
        f"{args.requests:,} requests per cell in {args.rounds} alternating rounds, "
        f"time cap {args.time_cap:g} s per cell; client in this process, servers in subprocesses"
    )
    print()
    header = (
        f"{'workload':<8} {'conc':>4} | {'baseline':>9} {'p50':>7} {'p99':>7} "
        f"| {'fastpaca':>9} {'p50':>7} {'p99':>7} | {'fastpaca ÷ baseline':^25}"
    )
    units = (
        f"{'':<8} {'':>4} | {'req/s':>9} {'ms':>7} {'ms':>7} "
        f"| {'req/s':>9} {'ms':>7} {'ms':>7} | {'req/s':>7} {'p50':>7} {'p99':>7}"
    )
    print(header)
    print(units)
    print("-" * len(units))
    for row in rows:
        base, fast = row.baseline, row.fastpaca
        print(
            f"{row.workload:<8} {row.concurrency:>4} | {_cell(base)} | {_cell(fast)} | "
            f"{_ratio(fast.requests_per_second, base.requests_per_second)} "
            f"{_ratio(fast.percentile_ms(0.5), base.percentile_ms(0.5))} "
            f"{_ratio(fast.percentile_ms(0.99), base.percentile_ms(0.99))}"
        )
    if any(r.baseline.capped or r.fastpaca.capped for r in rows):
        print("* stopped at the time cap before all requests were sent")
    for row in rows:
        for name, result in (("baseline", row.baseline), ("fastpaca", row.fastpaca)):
            if result.errors:
                print(
                    f"! {name} {row.workload} c={row.concurrency}: {result.errors} errors, "
                    f"first: {result.first_error}"
                )


def merge(results: list[RunResult]) -> RunResult:
    merged = RunResult()
    for result in results:
        merged.latencies.extend(result.latencies)
        merged.errors += result.errors
        merged.first_error = merged.first_error or result.first_error
        merged.elapsed += result.elapsed
        merged.capped = merged.capped or result.capped
    return merged


def shifted(factory: RequestFactory, offset: int) -> RequestFactory:
    return lambda worker, index: factory(worker, index + offset if index >= 0 else index)


async def run_benchmark(
    baseline: ServerProcess, fastpaca: ServerProcess, args: argparse.Namespace
) -> list[Row]:
    """Each cell runs in ``args.rounds`` rounds that alternate the two servers.

    Neighbours on a shared machine come and go within seconds; alternating
    short rounds spreads that noise over both servers instead of one.
    """
    rows = []
    per_round = max(1, args.requests // args.rounds)
    for concurrency in args.concurrency:
        for workload, factory, window in (
            ("append", append_request, 0),
            ("read", read_request, WINDOW_MESSAGES),
        ):
            prefix = f"bench-{workload}-c{concurrency}"
            await setup_contexts(fastpaca.url, prefix, concurrency, window)
            print(f"  {workload:<6} c={concurrency:<3} …", flush=True)
            results: dict[str, list[RunResult]] = {"baseline": [], "fastpaca": []}
            for round_number in range(args.rounds):
                order = (baseline, fastpaca) if round_number % 2 == 0 else (fastpaca, baseline)
                for server in order:
                    results[server.name].append(
                        await drive(
                            server.url,
                            shifted(factory(prefix), round_number * per_round),
                            total=per_round,
                            concurrency=concurrency,
                            time_cap=args.time_cap / args.rounds,
                        )
                    )
            rows.append(
                Row(workload, concurrency, merge(results["baseline"]), merge(results["fastpaca"]))
            )
    return rows


async def warm_up(baseline: ServerProcess, fastpaca: ServerProcess, count: int) -> None:
    """Load code paths, tokenizers and connections once before anything is measured."""
    await setup_contexts(fastpaca.url, "bench-warmup", 1, WINDOW_MESSAGES)
    for server in (baseline, fastpaca):
        for factory in (append_request, read_request):
            await drive(
                server.url, factory("bench-warmup"), total=count, concurrency=1, time_cap=30
            )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="200 requests per cell, 15 s cap")
    parser.add_argument("--requests", type=int, help="requests per cell (default 2000)")
    parser.add_argument(
        "--concurrency",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[1, 16],
        help="comma-separated concurrency levels (default 1,16)",
    )
    parser.add_argument("--time-cap", type=float, help="seconds per cell (default 60)")
    parser.add_argument(
        "--rounds", type=int, default=4, help="alternating rounds per cell (default 4)"
    )
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.requests is None:
        args.requests = 200 if args.quick else 2000
    if args.time_cap is None:
        args.time_cap = 15.0 if args.quick else 60.0
    if args.requests < 1 or args.time_cap <= 0 or min(args.concurrency) < 1 or args.rounds < 1:
        parser.error("--requests >= 1, --time-cap > 0, --rounds >= 1, concurrency levels >= 1")
    return args


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # unwinds through the finally blocks that stop the servers


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_baseline is not None:
        serve_baseline(args.serve_baseline)
        return 0
    try:
        import fastpaca_server  # noqa: F401 - only checks that the server is installed
    except ImportError:
        print("fastpaca_server is not importable: run with .venv/bin/python (make install)")
        return 2
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # Background jobs of a non-interactive shell inherit SIGINT as ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    work_dir = Path(tempfile.mkdtemp(prefix="fastpaca-bench-"))
    try:
        load_at_start = load_average()
        fsync_ms = fsync_latency_ms(work_dir)
        with servers(work_dir) as (baseline, fastpaca):
            print(f"baseline {baseline.url}, fastpaca {fastpaca.url} (data in {work_dir})")

            async def run() -> list[Row]:
                await warm_up(baseline, fastpaca, min(200, args.requests))
                return await run_benchmark(baseline, fastpaca, args)

            rows = asyncio.run(run())
        print_report(rows, args, fsync_ms, (load_at_start, load_average()))
    except KeyboardInterrupt:
        print("interrupted; servers stopped")
        return 130
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
