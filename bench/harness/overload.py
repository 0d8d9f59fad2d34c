"""The ``overload`` stage: appends offered at twice what the node sustains.

1. The sustainable rate: wrk appends at 64 connections over 256 contexts
   (closed loop, as the ``append`` stage), on a node with a fixed limit of
   64 requests in flight (``--latency-target 0``): the most it appends per
   second. (With its defaults the node would refuse part of wrk's 64
   connections, which send again at once, and the rate measured would be
   that of a node busy refusing.)
2. The same node, restarted with its default settings (the adaptive limit
   on): the open-loop generator (``openloop.py``, a process of its own) sends
   appends at a fixed rate whatever the answers: at 1x that rate, then at
   2x, while the server's RSS is sampled every 50 ms.
3. In the full run, 2x again on a node started with ``--max-inflight 0``
   (no limit), to show what the limit prevents.
4. The bare aiohttp handler under the same 2x generator: the floor of HTTP,
   JSON, the event loop and the generator itself.

Latency is counted from the moment each request was due, for the admitted
(2xx) answers; the shed ones (``503 overloaded``, ``429``) are counted apart.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from .load import Measurement
from .processes import FastpacaServer, ServerProcess, start_bare

if TYPE_CHECKING:
    from .figures import Bench

PREFIX = "overload"
CONTEXTS = 256
CLOSED_LOOP_CONNECTIONS = 64
NEVER_SNAPSHOT = "1000000000"
MiB = 1024 * 1024
OPENLOOP = Path(__file__).resolve().parent / "openloop.py"
RSS_INTERVAL = 0.05
DRAIN_SECONDS = 15.0


class RssSampler:
    """The RSS of one process, sampled on the harness's event loop."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.samples: list[float] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def now(self) -> float:
        return float(self.process.memory_info().rss) / MiB

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.now())
            await asyncio.sleep(RSS_INTERVAL)

    async def stop(self) -> float:
        """Stop sampling; the peak seen."""
        self._stop.set()
        if self._task is not None:
            await self._task
        return max(self.samples, default=self.now())


def _run_generator(
    port: int, rate: float, seconds: float, connections: int, loop: str
) -> dict[str, Any]:
    command = [
        sys.executable,
        str(OPENLOOP),
        "--port",
        str(port),
        "--rate",
        f"{rate:.1f}",
        "--seconds",
        str(seconds),
        "--prefix",
        PREFIX,
        "--contexts",
        str(CONTEXTS),
        "--connections",
        str(connections),
        "--drain",
        str(DRAIN_SECONDS),
        "--loop",
        loop,
    ]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + DRAIN_SECONDS + 120
        )
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"the open-loop generator did not finish: {error}") from None
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("OPENLOOP_JSON ")), None)
    if line is None:
        raise RuntimeError(
            f"the open-loop generator gave no result: {result.stdout[-500:]} "
            f"{result.stderr[-1500:]}"
        )
    found: dict[str, Any] = json.loads(line.removeprefix("OPENLOOP_JSON "))
    return found


async def open_loop(
    bench: Bench, server: ServerProcess, rate: float, seconds: float, case: str
) -> dict[str, Any]:
    """One open-loop run against ``server``, with its RSS at start, peak and end."""
    params = bench.params
    sampler = RssSampler(server.pid)
    rss_start = sampler.now()
    sampler.start()
    started = time.perf_counter()
    try:
        run = await asyncio.to_thread(
            _run_generator,
            server.port,
            rate,
            seconds,
            params.overload_connections,
            bench.stack["loop"],
        )
    finally:
        peak = await sampler.stop()
    await asyncio.sleep(1.0)  # answers written, buffers freed
    rss_end = sampler.now()
    latency = run["latency_ms"]
    print(
        f"  {case}: offered {run['offered_rps']:,.0f}/s, admitted {run['admitted_rps']:,.0f}/s, "
        f"shed {run['shed_share']:.0%}, p99 {_ms(latency['p99'])} ms "
        f"({time.perf_counter() - started:.0f} s)",
        flush=True,
    )
    seconds = " ".join(_ms(second["p99_ms"]) for second in run["per_second"])
    print(f"    admitted p99 by second (ms): {seconds}", flush=True)
    return {
        "case": case,
        "server": server.name,
        **run,
        "rss_mib": {"start": rss_start, "peak": peak, "end": rss_end},
    }


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


async def stage_overload(bench: Bench) -> None:
    # Here: the figures module imports this one, and run.py checks that the server is
    # importable (with a clear message) after importing the harness.
    from fastpaca_server.config import DEFAULT_LATENCY_TARGET, DEFAULT_MAX_INFLIGHT

    from .figures import fact

    params = bench.params
    flags = ["--log-compaction-entries", NEVER_SNAPSHOT]
    if params.overload_max_inflight >= 0:
        flags += ["--max-inflight", str(params.overload_max_inflight)]
    target = (
        params.overload_latency_target
        if params.overload_latency_target >= 0
        else DEFAULT_LATENCY_TARGET * 1000
    )
    server = FastpacaServer(
        "fastpaca-overload",
        bench.work_dir / "overload",
        bench.work_dir,
        *flags,
        "--latency-target",
        "0",
    )
    unlimited: FastpacaServer | None = None
    bare: ServerProcess | None = None
    runs: list[dict[str, Any]] = []
    try:
        server.start()
        await bench.create_contexts([server], PREFIX, CONTEXTS, {"token_budget": 128_000})
        await asyncio.to_thread(
            bench.wrk.run,
            server.url,
            "append",
            PREFIX,
            CONTEXTS,
            4,
            params.warmup_seconds,
            server.name,
        )
        print(f"  closed loop: wrk appends at {CLOSED_LOOP_CONNECTIONS} connections", flush=True)
        closed: Measurement = await asyncio.to_thread(
            bench.wrk.run,
            server.url,
            "append",
            PREFIX,
            CONTEXTS,
            CLOSED_LOOP_CONNECTIONS,
            params.append_seconds,
            server.name,
        )
        if not closed.rps or closed.rps != closed.rps:  # nothing measured (NaN or 0)
            raise RuntimeError(f"the closed-loop run measured nothing: {closed.first_error}")
        rate = closed.rps
        twice = float(params.overload_rate) if params.overload_rate > 0 else 2 * rate
        print(f"  sustainable: {rate:,.0f} appends/s, p99 {closed.p99:.1f} ms", flush=True)
        await asyncio.to_thread(server.restart, *flags, "--latency-target", f"{target:g}")
        print(f"  restarted with --latency-target {target:g} ms", flush=True)
        runs.append(
            await open_loop(bench, server, rate, params.overload_reference_seconds, "open loop 1x")
        )
        runs.append(await open_loop(bench, server, twice, params.overload_seconds, "open loop 2x"))
        if params.overload_unlimited_seconds > 0:
            server.stop()  # one server at a time on the CPUs
            unlimited = FastpacaServer(
                "fastpaca-no-limit",
                bench.work_dir / "overload-no-limit",
                bench.work_dir,
                "--log-compaction-entries",
                NEVER_SNAPSHOT,
                "--max-inflight",
                "0",
            )
            unlimited.start()
            await bench.create_contexts([unlimited], PREFIX, CONTEXTS, {"token_budget": 128_000})
            runs.append(
                await open_loop(
                    bench,
                    unlimited,
                    twice,
                    params.overload_unlimited_seconds,
                    "open loop 2x, no limit",
                )
            )
            unlimited.stop()
        server.stop()
        bare = start_bare(bench.work_dir, bench.stack)
        runs.append(
            await open_loop(
                bench, bare, twice, params.overload_reference_seconds, "open loop 2x, bare"
            )
        )
    finally:
        for process in (bare, unlimited, server):
            if process is not None:
                process.stop()
    one, two = runs[0], runs[1]
    bare_run = runs[-1]
    rss = two["rss_mib"]
    if params.overload_max_inflight >= 0:
        limit = str(params.overload_max_inflight)
    else:
        limit = f"{DEFAULT_MAX_INFLIGHT} (the default)"
    offered = f"{twice:,.0f}/s" if params.overload_rate > 0 else "2x the sustainable rate"
    unlimited_run = next((run for run in runs if run["case"].endswith("no limit")), None)
    extra = []
    if unlimited_run is not None:
        extra = [
            fact(
                "p99 of admitted appends at 2x",
                two["latency_ms"]["p99"],
                "ms",
                "with no limit (--max-inflight 0)",
                unlimited_run["latency_ms"]["p99"],
            ),
            fact(
                "admitted at 2x",
                two["admitted_rps"],
                "req/s",
                "with no limit (--max-inflight 0)",
                unlimited_run["admitted_rps"],
            ),
        ]
    bench.figures["overload"] = {
        "title": f"Appends offered at {offered} (open loop, {CONTEXTS} contexts, "
        f"--max-inflight {limit}, --latency-target {target:g} ms)",
        "max_inflight": params.overload_max_inflight,
        "latency_target_ms": target,
        "default_max_inflight": DEFAULT_MAX_INFLIGHT,
        "offered_rate_fixed": params.overload_rate > 0,
        "closed_loop": closed.as_json(),
        "sustainable_rps": rate,
        "runs": runs,
        "facts": [
            fact("sustainable rate (wrk, 64 connections)", rate, "req/s"),
            fact("offered at 2x", two["offered_rps"], "req/s"),
            fact(
                "admitted at 2x",
                two["admitted_rps"],
                "req/s",
                "the sustainable rate",
                rate,
            ),
            fact("shed at 2x (503 overloaded, 429)", two["shed_share"] * 100, "%"),
            fact(
                "p99 of admitted appends at 2x",
                two["latency_ms"]["p99"],
                "ms",
                "open loop at 1x",
                one["latency_ms"]["p99"],
            ),
            fact(
                "p50 of admitted appends at 2x",
                two["latency_ms"]["p50"],
                "ms",
                "open loop at 1x",
                one["latency_ms"]["p50"],
            ),
            fact(
                "p99 of admitted appends at 2x",
                two["latency_ms"]["p99"],
                "ms",
                "closed loop at 64 connections",
                closed.p99,
            ),
            fact(
                "p99 of admitted appends at 2x",
                two["latency_ms"]["p99"],
                "ms",
                "bare aiohttp at 2x",
                bare_run["latency_ms"]["p99"],
            ),
            fact("p99 of the shed answers at 2x", two["shed_latency_ms"]["p99"], "ms"),
            fact("server RSS at the start of the 2x run", rss["start"], "MiB"),
            fact("server RSS, peak during the 2x run", rss["peak"], "MiB"),
            fact("server RSS after the 2x run", rss["end"], "MiB"),
            *extra,
        ],
    }
