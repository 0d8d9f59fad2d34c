"""The speed figures, each beside its baseline, measured in one run.

Stages (``bench/run.py --only NAME,…``):

* ``append``: appends at 1, 16 and 64 connections over 256 contexts.
* ``window``: window reads at 100 … 100k messages of history (c=1).
* ``history``: appends to one context at 0 and at the largest history, and
  to ``last_n`` windows at their limit against one below it.
* ``mix``: 80 % window reads, 20 % appends at 16 connections.
* ``bigdata``: one data directory of 1M messages (100k in quick mode): RSS
  per 100k messages before and after restarts, the event loop during reads of
  a 60k-message manual window, restart time, append latency during a
  snapshot.
* ``idempotency``: RAM and snapshot bytes per remembered idempotency key.
* ``tokens``: tokens counted per second, prose and text with no whitespace.
* ``cluster``: a 3-node loopback cluster against a single node (appends
  through the leader and through a follower), and failover time after
  kill -9 of the leader.
* ``overload``: appends offered at twice the sustainable rate (open loop):
  what is admitted, what is shed, the admitted requests' latency, RSS.

The first four share one Fastpaca server and the two baselines; the others
start servers of their own (and stop them), so that they never load
the shared one.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import string
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from .cluster import stage_cluster
from .load import (
    Measurement,
    Request,
    Timeline,
    Wrk,
    call,
    drive,
    drive_until,
    probe,
    summarise,
)
from .overload import stage_overload
from .params import Params
from .postgres import ThrowawayPostgres
from .processes import FastpacaServer, ServerProcess, start_bare, start_langchain

MESSAGE_TEXT = (
    "Could you summarise the last quarterly report in three short bullet points "
    "for the team meeting, please?"
)
WINDOW_CONFIG = {"token_budget": 8_000, "policy": {"strategy": "last_n", "config": {"limit": 100}}}
MANUAL_CONFIG = {"token_budget": 10_000_000, "policy": {"strategy": "manual", "config": {}}}
NEVER_SNAPSHOT = "1000000000"  # --log-compaction-entries that a run never reaches
BATCH = 1_000  # the largest batch an append takes
MiB = 1024 * 1024
RSS_NOISE_BYTES = 2 * MiB  # how far RSS differs between two identical runs, about
STAGES = (
    "append",
    "window",
    "history",
    "mix",
    "bigdata",
    "idempotency",
    "tokens",
    "cluster",
    "overload",
)


def message(index: int, text: str = MESSAGE_TEXT) -> dict[str, Any]:
    return {"role": "user", "parts": [{"type": "text", "text": f"{text} (#{index})"}]}


def ratio(numerator: float, denominator: float) -> float | None:
    if denominator and not math.isnan(denominator) and not math.isnan(numerator):
        return numerator / denominator
    return None


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / MiB


@dataclass
class Bench:
    """One run: its parameters, its servers, and everything measured so far."""

    params: Params
    work_dir: Path
    stack: dict[str, str]
    wrk: Wrk
    figures: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    fastpaca: FastpacaServer | None = None
    bare: ServerProcess | None = None
    langchain: ServerProcess | None = None
    postgres: ThrowawayPostgres | None = None
    postgres_version: str = ""
    _postgres_error: BaseException | None = None
    _order: int = 0

    # --- servers -------------------------------------------------------------------

    def start_shared(self, need_langchain: bool) -> None:
        """The Fastpaca server, the bare baseline and (if asked) PostgreSQL + LangChain."""
        postgres = None
        if need_langchain and self.langchain is None and self.postgres is None:
            postgres = ThrowawayPostgres()  # initdb and start while the others start
            self.postgres = postgres
            starting = threading.Thread(target=self._start_postgres, args=(postgres,))
            starting.start()
        if self.fastpaca is None:
            self.fastpaca = FastpacaServer(
                "fastpaca",
                self.work_dir / "fastpaca-data",
                self.work_dir,
                "--log-compaction-entries",
                NEVER_SNAPSHOT,
            )
            self.fastpaca.start()
        if self.bare is None:
            self.bare = start_bare(self.work_dir, self.stack)
        if postgres is not None:
            starting.join(timeout=180)
            try:
                if self._postgres_error is not None:
                    raise self._postgres_error
                self.postgres_version = postgres.version
                self.langchain = start_langchain(self.work_dir, self.stack, postgres.dsn)
            except Exception as error:
                self.error("langchain baseline", error)

    def _start_postgres(self, postgres: ThrowawayPostgres) -> None:
        try:
            postgres.start()
        except Exception as error:
            self._postgres_error = error

    def stop_shared(self) -> None:
        for server in (self.langchain, self.bare, self.fastpaca):
            if server is not None:
                server.stop()
        if self.postgres is not None:
            self.postgres.stop()
        self.fastpaca = self.bare = self.langchain = None
        self.postgres = None

    def servers(self, with_langchain: bool = True) -> list[ServerProcess]:
        found = [self.fastpaca, self.bare]
        if with_langchain:
            found.append(self.langchain)
        return [server for server in found if server is not None]

    def error(self, where: str, error: BaseException) -> None:
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        print(f"  ! {where}: {detail}", flush=True)
        self.errors.append({"where": where, "error": detail})

    # --- cells ---------------------------------------------------------------------

    async def cell(
        self,
        servers: list[ServerProcess],
        workload: str,
        prefix: str,
        contexts: int,
        connections: int,
        seconds: Callable[[ServerProcess, float], float] | float | None = None,
    ) -> dict[str, Measurement]:
        """Each server under the same wrk load, one after the other.

        A smoke request first checks that the workload works (else the cell
        records the error instead of a wrk run) and times one request, from
        which ``seconds`` may size the run (slow baselines get a longer one,
        so that the percentiles rest on more than a handful of requests).
        The order of the servers alternates from cell to cell, so that a noisy
        neighbour does not always hit the same one.
        """
        self._order += 1
        ordered = servers if self._order % 2 else list(reversed(servers))
        results: dict[str, Measurement] = {}
        for server in ordered:
            request: Request = (
                ("POST", f"/v1/contexts/{prefix}-0/messages", {"message": message(0)})
                if workload in ("append", "mix")
                else ("GET", f"/v1/contexts/{prefix}-0/context", None)
            )
            started = time.perf_counter()
            status, body = await call(server.url, request)
            single = time.perf_counter() - started
            if not 200 <= status < 300:
                results[server.name] = Measurement(
                    server.name,
                    errors=1,
                    connections=connections,
                    first_error=f"smoke request {request[0]} {request[1]}: {status} {body}",
                )
                print(f"  ! {server.name}: {results[server.name].first_error}", flush=True)
                continue
            if callable(seconds):
                duration = seconds(server, single)
            else:
                duration = seconds if seconds is not None else self.params.cell_seconds
            results[server.name] = await asyncio.to_thread(
                self.wrk.run,
                server.url,
                workload,
                prefix,
                contexts,
                connections,
                duration,
                server.name,
            )
        return {server.name: results[server.name] for server in servers}

    def slow_cell_seconds(self, server: ServerProcess, single: float) -> float:
        """Long enough for about 20 requests at c=1, within the slow-cell cap."""
        base = float(self.params.cell_seconds)
        if server.name != "langchain":
            return base
        return min(float(self.params.slow_cell_cap), max(base, 20 * single))

    async def warm_up(self) -> None:
        """Load code paths and tokenizers on every shared server before measuring."""
        await self.create_contexts(self.servers(), "warmup", 4, WINDOW_CONFIG)
        for server in self.servers():
            for workload in ("append", "read") if server is self.fastpaca else ("append",):
                await asyncio.to_thread(
                    self.wrk.run,
                    server.url,
                    workload,
                    "warmup",
                    4,
                    4,
                    self.params.warmup_seconds,
                    server.name,
                )

    # --- data ----------------------------------------------------------------------

    async def create_contexts(
        self, servers: list[ServerProcess], prefix: str, count: int, config: dict[str, Any]
    ) -> None:
        for server in servers:
            timeline = await drive(
                server.url,
                lambda index: ("PUT", f"/v1/contexts/{prefix}-{index}", config),
                total=count,
                concurrency=8,
                time_cap=120,
            )
            if timeline.errors:
                raise RuntimeError(f"{server.name}: creating {prefix}-*: {timeline.first_error}")

    async def fill(self, server: ServerProcess, context: str, count: int, first: int = 0) -> int:
        """Append ``count`` messages in batches of 1,000; the number of requests sent."""
        sent = 0
        position = first
        while position < first + count:
            size = min(BATCH, first + count - position)
            batch = [message(index) for index in range(position, position + size)]
            status, body = await call(
                server.url, ("POST", f"/v1/contexts/{context}/messages", {"messages": batch})
            )
            if status != 201:
                raise RuntimeError(f"{server.name}: filling {context}: {status} {body}")
            position += size
            sent += 1
        return sent

    async def window_of(self, context: str) -> dict[str, Any]:
        assert self.fastpaca is not None
        status, body = await call(
            self.fastpaca.url, ("GET", f"/v1/contexts/{context}/context", None)
        )
        if status != 200:
            raise RuntimeError(f"reading the window of {context}: {status} {body}")
        window: dict[str, Any] = body
        return window

    async def mirror_window(self, context: str) -> int:
        """Prime the bare baseline with the server's window of ``context``, and give the
        LangChain baseline that window's tokens as its budget (so that both build the same
        window). The window's token count."""
        window = await self.window_of(context)
        if self.bare is not None:
            await call(self.bare.url, ("PUT", f"/_bench/prime/{context}", window))
        if self.langchain is not None:
            budget = {"token_budget": window["used_tokens"]}
            await call(self.langchain.url, ("PUT", f"/v1/contexts/{context}", budget))
        used: int = window["used_tokens"]
        return used


# --- the report rows ------------------------------------------------------------------


def load_row(
    case: str, results: dict[str, Measurement], ours: str = "fastpaca", **extra: Any
) -> dict[str, Any]:
    """A row of a load figure: every server's measurement and ``ours`` ÷ each other one."""
    reference = results.get(ours)
    row: dict[str, Any] = {"case": case, "servers": list(results), **extra}
    ratios: dict[str, dict[str, float | None]] = {}
    for name, measurement in results.items():
        row[name] = measurement.as_json()
        if reference is not None and name != ours:
            ratios[name] = {
                "rps": ratio(reference.rps, measurement.rps),
                "p50": ratio(reference.p50, measurement.p50),
                "p99": ratio(reference.p99, measurement.p99),
            }
    row["ratios"] = ratios
    return row


def fact(
    name: str,
    value: float | None,
    unit: str,
    baseline_name: str = "",
    baseline: float | None = None,
    note: str = "",
) -> dict[str, Any]:
    """A single figure beside its baseline; ``ratio`` is value ÷ baseline."""
    return {
        "name": name,
        "value": value,
        "unit": unit,
        "baseline_name": baseline_name,
        "baseline": baseline,
        "ratio": ratio(value, baseline) if value is not None and baseline is not None else None,
        "note": note,
    }


# --- stage: append --------------------------------------------------------------------


async def stage_append(bench: Bench) -> None:
    params = bench.params
    contexts = params.append_contexts
    servers = bench.servers()
    await bench.create_contexts(servers, "append", contexts, {"token_budget": 128_000})
    rows = []
    for connections in params.connections:
        print(f"  append c={connections}", flush=True)
        included = [
            s
            for s in servers
            if s.name != "langchain" or connections in params.langchain_connections
        ]
        results = await bench.cell(
            included, "append", "append", contexts, connections, params.append_seconds
        )
        case = f"{connections} connection{'s' if connections > 1 else ''}"
        rows.append(load_row(case, results, connections=connections))
    bench.figures["append"] = {
        "title": f"Append one message, {contexts} contexts, by connections",
        "rows": rows,
    }


# --- stage: window --------------------------------------------------------------------


async def stage_window(bench: Bench) -> None:
    rows = []
    for history in bench.params.window_histories:
        prefix = f"window-{history}"
        context = f"{prefix}-0"
        print(f"  window read at {history:,} messages of history: filling", flush=True)
        await bench.create_contexts(bench.servers(), prefix, 1, WINDOW_CONFIG)
        fills: list[Awaitable[int]] = [
            bench.fill(s, context, history) for s in bench.servers() if s.name != "bare"
        ]
        await asyncio.gather(*fills)
        window = await bench.window_of(context)
        await bench.mirror_window(context)
        lengths = {"fastpaca": len(window["messages"])}
        if bench.langchain is not None:
            _, theirs = await call(
                bench.langchain.url, ("GET", f"/v1/contexts/{context}/context", None)
            )
            lengths["langchain"] = len(theirs["messages"]) if isinstance(theirs, dict) else 0
        print(f"  window read at {history:,}: measuring", flush=True)
        results = await bench.cell(
            bench.servers(), "read", prefix, 1, 1, seconds=bench.slow_cell_seconds
        )
        rows.append(
            load_row(
                f"{history:,} messages",
                results,
                history=history,
                window_messages=lengths,
                window_tokens=window["used_tokens"],
            )
        )
    bench.figures["window"] = {
        "title": "Window read (GET …/context), 1 connection, by history size "
        "(last_n 100: the same 100-message window at every size)",
        "rows": rows,
    }


# --- stage: history -------------------------------------------------------------------


async def stage_history(bench: Bench) -> None:
    params = bench.params
    assert bench.fastpaca is not None
    largest = max(params.window_histories)
    servers = bench.servers()
    rows = []
    await bench.create_contexts(servers, "history-zero", 1, WINDOW_CONFIG)
    if "window" not in bench.figures:  # run alone: make the history context here
        await bench.create_contexts(servers, f"window-{largest}", 1, WINDOW_CONFIG)
        await asyncio.gather(
            *(bench.fill(s, f"window-{largest}-0", largest) for s in servers if s.name != "bare")
        )
    for case, prefix, history in (
        ("0 history", "history-zero", 0),
        (f"{largest:,} history", f"window-{largest}", largest),
    ):
        print(f"  append at {case}", flush=True)
        results = await bench.cell(servers, "append", prefix, 1, 16)
        rows.append(load_row(case, results, history=history, window="last_n 100"))
    # last_n windows at their limit, against one below its limit.
    big = {"token_budget": 10_000_000}
    below_config = {**big, "policy": {"strategy": "last_n", "config": {"limit": 100_000}}}
    await bench.create_contexts([bench.fastpaca], "limit-below", 1, below_config)
    print("  append below the limit (last_n 100,000, empty)", flush=True)
    results = await bench.cell([bench.fastpaca, *servers[1:2]], "append", "limit-below", 1, 16)
    rows.append(load_row("below the limit", results, limit=100_000, at_limit=False))
    for limit in params.limits:
        config = {**big, "policy": {"strategy": "last_n", "config": {"limit": limit}}}
        await bench.create_contexts([bench.fastpaca], f"limit-{limit}", 1, config)
        await bench.fill(bench.fastpaca, f"limit-{limit}-0", limit)
        print(f"  append at the limit of last_n {limit:,}", flush=True)
        results = await bench.cell([bench.fastpaca], "append", f"limit-{limit}", 1, 16)
        rows.append(load_row(f"at limit {limit:,}", results, limit=limit, at_limit=True))
    bench.figures["history"] = {
        "title": "Append to one context at 16 connections: by history, and last_n at its limit",
        "rows": rows,
    }


# --- stage: mix -----------------------------------------------------------------------


async def stage_mix(bench: Bench) -> None:
    params = bench.params
    servers = bench.servers()
    count = params.mix_contexts
    await bench.create_contexts(servers, "mix", count, WINDOW_CONFIG)
    print(f"  mix: filling {count} contexts with {params.mix_history} messages", flush=True)

    async def fill_one(index: int) -> None:
        await asyncio.gather(
            *(
                bench.fill(server, f"mix-{index}", params.mix_history)
                for server in servers
                if server.name != "bare"
            )
        )
        await bench.mirror_window(f"mix-{index}")

    for first in range(0, count, 8):
        await asyncio.gather(*(fill_one(i) for i in range(first, min(count, first + 8))))
    print("  mix: measuring", flush=True)
    results = await bench.cell(servers, "mix", "mix", count, 16)
    bench.figures["mix"] = {
        "title": f"80 % window reads / 20 % appends, {count} contexts, 16 connections",
        "rows": [load_row("80/20 read/append", results, connections=16)],
    }


# --- stage: bigdata -------------------------------------------------------------------


class SnapshotWatch:
    """Watches a data directory for the first snapshot written during a run.

    A snapshot in progress shows as a change of a file with ``snap`` in its
    name, or as a child process of the server (a forked snapshot writer); it
    is done when a snapshot file other than a ``…writing`` one has changed and
    no writer is left. Polled every ``interval`` seconds on the harness's
    event loop. Only the first snapshot counts: under steady load a small
    ``--log-compaction-entries`` can start the next one right after it.
    """

    def __init__(self, data_dir: Path, pid: int, interval: float = 0.005) -> None:
        self.data_dir = data_dir
        self.pid = pid
        self.interval = interval
        self.started: float | None = None
        self.finished: float | None = None
        self.bytes = 0
        self.stop = asyncio.Event()

    def _state(self) -> dict[str, tuple[int, int]]:
        state = {}
        try:
            for entry in os.scandir(self.data_dir):
                if "snap" in entry.name:
                    stat = entry.stat()
                    state[entry.name] = (stat.st_size, stat.st_mtime_ns)
        except OSError:
            pass
        return state

    def _children(self) -> int:
        try:
            return len(psutil.Process(self.pid).children())
        except psutil.Error:
            return 0

    async def run(self, time_cap: float) -> None:
        started = time.perf_counter()
        previous = self._state()
        written = False
        while not self.stop.is_set() and time.perf_counter() - started < time_cap:
            await asyncio.sleep(self.interval)
            state = self._state()
            children = self._children()
            now = time.perf_counter()
            if self.started is None and (state != previous or children):
                self.started = now
            written = written or any(
                "writing" not in name and previous.get(name) != value
                for name, value in state.items()
            )
            if self.started is not None and written and not children:
                self.finished = now
                self.bytes = sum(size for name, (size, _) in state.items() if "writing" not in name)
                return
            previous = state

    @property
    def interval_seen(self) -> tuple[float, float] | None:
        if self.started is None or self.finished is None:
            return None
        return self.started, self.finished

    def snapshot_bytes(self) -> int:
        return sum(size for name, (size, _) in self._state().items() if "writing" not in name)


async def wait_for_snapshot(server: FastpacaServer, time_cap: float) -> int | None:
    """Bytes of the snapshot once one is written and settled (no writer, sizes steady)."""
    watch = SnapshotWatch(server.data_dir, server.pid)
    deadline = time.perf_counter() + time_cap
    steady_since = None
    previous: dict[str, tuple[int, int]] = {}
    while time.perf_counter() < deadline:
        state = watch._state()
        settled = (
            state
            and state == previous
            and not watch._children()
            and not any("writing" in name or "tmp" in name for name in state)
        )
        if settled:
            steady_since = steady_since or time.perf_counter()
            if time.perf_counter() - steady_since > 1.0:
                return watch.snapshot_bytes()
        else:
            steady_since = None
        previous = state
        await asyncio.sleep(0.05)
    return None


async def loaded_run(
    server: FastpacaServer, prefix: str, contexts: int, seconds: float, watch: SnapshotWatch | None
) -> Timeline:
    """Appends at 16 connections over the contexts, each request timed and time-stamped
    (wrk gives no timeline, and this figure needs the requests during the snapshot).

    With ``watch``, the load stops half a second after the first snapshot ends, or at
    ``seconds``.
    """
    stop = asyncio.Event()
    load = asyncio.create_task(
        drive_until(
            server.url,
            lambda i: (
                "POST",
                f"/v1/contexts/{prefix}-{i % contexts}/messages",
                {"message": message(i)},
            ),
            16,
            stop,
            seconds,
        )
    )
    watch_task = asyncio.create_task(watch.run(seconds + 5)) if watch is not None else None
    while not load.done():
        finished = watch.finished if watch is not None else None
        if finished is not None and time.perf_counter() - finished > 0.5:
            stop.set()
        await asyncio.sleep(0.02)
    if watch is not None and watch_task is not None:
        watch.stop.set()
        await watch_task
    return await load


async def stage_bigdata(bench: Bench) -> None:
    params = bench.params
    total = params.big_messages
    manual = min(params.manual_window, total)
    per_context = 10_000
    others = max(0, math.ceil((total - manual) / per_context))
    facts: list[dict[str, Any]] = []
    server = FastpacaServer(
        "fastpaca-big",
        bench.work_dir / "big-data",
        bench.work_dir,
        "--log-compaction-entries",
        NEVER_SNAPSHOT,
    )
    try:
        empty_start = server.start()
        writes = 0
        await bench.create_contexts([server], "big-manual", 1, MANUAL_CONFIG)
        await bench.create_contexts([server], "big-probe", 1, {"token_budget": 128_000})
        if others:
            await bench.create_contexts([server], "big", others, {"token_budget": 128_000})
        writes += 2 + others
        writes += await bench.fill(server, "big-probe-0", 10)  # loads the tokenizer
        await asyncio.sleep(0.5)
        rss_empty = rss_mib(server.pid)
        print(
            f"  bigdata: filling {total:,} messages ({manual:,} in one manual window)", flush=True
        )
        started = time.perf_counter()
        writes += await bench.fill(server, "big-manual-0", manual)
        remaining = total - manual
        for index in range(others):
            count = min(per_context, remaining)
            writes += await bench.fill(server, f"big-{index}", count)
            remaining -= count
        fill_seconds = time.perf_counter() - started
        await asyncio.sleep(0.5)
        rss_full = rss_mib(server.pid)
        sample = len(str(message(123_456)).encode())
        facts.append(
            fact(
                "bulk fill rate (batches of 1,000)",
                total / fill_seconds,
                "messages/s",
                note=f"{total:,} messages of about {sample} bytes of JSON each",
            )
        )
        per_100k = (rss_full - rss_empty) / total * 100_000
        raw_per_100k = sample * 100_000 / MiB
        facts.append(
            fact(
                "RSS per 100k messages, after filling",
                per_100k,
                "MiB",
                "the messages' JSON",
                raw_per_100k,
                note=f"RSS {rss_empty:.0f} MiB empty, {rss_full:.0f} MiB with {total:,} messages",
            )
        )

        # The event loop while a 60k-message manual window is read.
        print(f"  bigdata: event loop during reads of the {manual:,}-message window", flush=True)
        tiny: Callable[[int], Request] = lambda i: ("GET", "/v1/contexts/big-probe-0", None)  # noqa: E731
        idle = await probe(server.url, tiny, asyncio.Event(), 0.002, 1.5)
        stop = asyncio.Event()
        probe_task = asyncio.create_task(
            probe(server.url, tiny, stop, 0.002, params.cell_seconds + 30)
        )
        read = await asyncio.to_thread(
            bench.wrk.run,
            server.url,
            "read",
            "big-manual",
            1,
            1,
            max(3, params.cell_seconds),
            "fastpaca",
        )
        stop.set()
        during = await probe_task
        idle_m, during_m = summarise("idle", idle, 1), summarise("during", during, 1)
        bench.figures["stall"] = {
            "title": f"A tiny request (GET …/contexts/{{id}}) while the {manual:,}-message "
            "manual window is read",
            "read": read.as_json(),
            "probe_idle": idle_m.as_json(),
            "probe_during": during_m.as_json(),
            "facts": [
                fact(
                    "longest tiny request during the big reads",
                    during_m.max,
                    "ms",
                    "the same request, server idle",
                    idle_m.max,
                ),
                fact(
                    "p99 tiny request during the big reads",
                    during_m.p99,
                    "ms",
                    "server idle",
                    idle_m.p99,
                ),
                fact(
                    f"read of the {manual:,}-message window, p50",
                    read.p50,
                    "ms",
                    note=f"{read.requests} reads; {read.first_error}".strip("; "),
                ),
            ],
        }

        # Restart: replay the journal of the whole data directory.
        print("  bigdata: restart (journal replay)", flush=True)
        compact_at = str(writes + 200)  # the next ~200 entries trigger a snapshot
        stop_seconds, replay_seconds = server.restart("--log-compaction-entries", compact_at)
        await call(server.url, ("GET", "/v1/contexts/big-probe-0", None))
        await asyncio.sleep(0.5)
        rss_replayed = rss_mib(server.pid)

        # Appends while the snapshot of the whole state is written.
        print("  bigdata: appends during a snapshot", flush=True)
        watch = SnapshotWatch(server.data_dir, server.pid)
        loaded = await loaded_run(server, "big", max(1, others), params.snapshot_cap, watch)
        seen = watch.interval_seen

        # Restart again: now from the snapshot (and the short journal after it).
        print("  bigdata: restart (from the snapshot)", flush=True)
        _, snapshot_restart = server.restart("--log-compaction-entries", NEVER_SNAPSHOT)
        await call(server.url, ("GET", "/v1/contexts/big-probe-0", None))
        await asyncio.sleep(0.5)
        rss_snapshot = rss_mib(server.pid)

        # The same load without a snapshot, for as long as the snapshot took.
        print("  bigdata: the same appends without a snapshot", flush=True)
        quiet_seconds = max(3.0, (seen[1] - seen[0]) if seen else params.cell_seconds)
        quiet_timeline = await loaded_run(
            server, "big", max(1, others), min(quiet_seconds, params.snapshot_cap), None
        )
        quiet = summarise("no snapshot", quiet_timeline, 16)
        whole = summarise("the whole run", loaded, 16)
        if seen is not None:
            during = summarise("during the snapshot", loaded, 16, seen[0], seen[1])
            note = f"snapshot seen for {seen[1] - seen[0]:.2f} s, {watch.bytes / MiB:.0f} MiB"
        else:
            during = summarise("no snapshot seen", loaded, 16)
            note = f"no snapshot was seen within {params.snapshot_cap} s"
        bench.figures["snapshot"] = {
            "title": f"Appends at 16 connections while a snapshot of {total:,} messages is written",
            "messages": total,
            "snapshot_seen": seen is not None,
            "snapshot_seconds": (seen[1] - seen[0]) if seen else None,
            "snapshot_bytes": watch.bytes,
            "during_snapshot": during.as_json(),
            "whole_run": whole.as_json(),
            "without_snapshot": quiet.as_json(),
            "facts": [
                fact(
                    "append p99 during the snapshot",
                    during.p99,
                    "ms",
                    "the same load, no snapshot",
                    quiet.p99,
                    note=note,
                ),
                fact("append p50 during the snapshot", during.p50, "ms", "no snapshot", quiet.p50),
                fact(
                    "longest append during the snapshot", during.max, "ms", "no snapshot", quiet.max
                ),
                fact(
                    "appends/s during the snapshot", during.rps, "req/s", "no snapshot", quiet.rps
                ),
            ],
        }
        bench.figures["restart"] = {
            "title": f"Restart of a data directory of {total:,} messages",
            "messages": total,
            "facts": [
                fact(
                    "start to ready, journal replay",
                    replay_seconds,
                    "s",
                    "empty data directory",
                    empty_start,
                ),
                fact(
                    "start to ready, from the snapshot",
                    snapshot_restart,
                    "s",
                    "empty data directory",
                    empty_start,
                ),
                fact("stop (SIGTERM to exit)", stop_seconds, "s"),
            ],
        }
        facts.append(
            fact(
                "RSS per 100k messages, after the journal-replay restart",
                (rss_replayed - rss_empty) / total * 100_000,
                "MiB",
                "after filling",
                per_100k,
            )
        )
        facts.append(
            fact(
                "RSS per 100k messages, after the snapshot restart",
                (rss_snapshot - rss_empty) / total * 100_000,
                "MiB",
                "after filling",
                per_100k,
            )
        )
        bench.figures["memory"] = {
            "title": f"Server RSS per 100k messages ({total:,} messages in the data directory)",
            "rss_mib": {
                "empty": rss_empty,
                "filled": rss_full,
                "after_replay_restart": rss_replayed,
                "after_snapshot_restart": rss_snapshot,
            },
            "facts": facts,
        }
    finally:
        server.stop()


# --- stage: idempotency ---------------------------------------------------------------


async def idempotency_instance(bench: Bench, keyed: bool, keys: int) -> tuple[float, int | None]:
    """RSS growth (bytes) for ``keys`` appends, and the snapshot's size afterwards."""
    name = "fastpaca-idem-keys" if keyed else "fastpaca-idem-plain"
    server = FastpacaServer(
        name, bench.work_dir / name, bench.work_dir, "--log-compaction-entries", NEVER_SNAPSHOT
    )
    per_context = 500
    contexts = math.ceil(keys / per_context)
    try:
        server.start()
        await bench.create_contexts([server], "idem", contexts, {"token_budget": 10_000_000})
        await bench.create_contexts([server], "idem-warm", 1, {"token_budget": 128_000})

        def request(index: int, prefix: str = "idem") -> Request:
            body: dict[str, Any] = {"message": message(index)}
            if keyed:
                body["idempotency_key"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"key-{index}"))
            context = "idem-warm-0" if prefix != "idem" else f"idem-{index % contexts}"
            return "POST", f"/v1/contexts/{context}/messages", body

        await drive(server.url, lambda i: request(keys + i, "warm"), 200, 4, 60)
        await asyncio.sleep(0.5)
        before = psutil.Process(server.pid).memory_info().rss
        timeline = await drive(server.url, request, keys, 16, 300)
        if timeline.errors:
            raise RuntimeError(f"{name}: {timeline.errors} errors: {timeline.first_error}")
        await asyncio.sleep(0.5)
        after = psutil.Process(server.pid).memory_info().rss
        server.restart("--log-compaction-entries", "2")  # snapshots at once
        snapshot = await wait_for_snapshot(server, 120)
        return float(after - before), snapshot
    finally:
        server.stop()


async def stage_idempotency(bench: Bench) -> None:
    keys = bench.params.idempotency_keys
    print(f"  idempotency: {keys:,} appends with keys, and the same without", flush=True)
    # Side by side: RSS and snapshot sizes do not depend on timing.
    (keyed_rss, keyed_snapshot), (plain_rss, plain_snapshot) = await asyncio.gather(
        idempotency_instance(bench, True, keys), idempotency_instance(bench, False, keys)
    )
    key_length = 36
    ram = (keyed_rss - plain_rss) / keys
    # RSS moves by a MiB or two between two identical runs (allocator arenas, buffers):
    # a difference smaller than that says nothing. The snapshot sizes are exact.
    resolution = RSS_NOISE_BYTES / keys
    snapshot = (
        (keyed_snapshot - plain_snapshot) / keys
        if keyed_snapshot is not None and plain_snapshot is not None
        else None
    )
    bench.figures["idempotency"] = {
        "title": f"Bytes per remembered idempotency key ({keys:,} keys of {key_length} "
        "characters, against the same appends without keys)",
        "keys": keys,
        "ram_resolution_bytes": resolution,
        "rss_growth_bytes": {"with_keys": keyed_rss, "without": plain_rss},
        "snapshot_bytes": {"with_keys": keyed_snapshot, "without": plain_snapshot},
        "facts": [
            fact(
                "RAM per key",
                ram,
                "B",
                "the key itself",
                key_length,
                note=f"RSS resolution ±{resolution:.0f} B per key at {keys:,} keys",
            ),
            fact("snapshot per key", snapshot, "B", "the key itself", key_length),
        ],
    }


# --- stage: tokens --------------------------------------------------------------------

_COUNT_IN_TIKTOKEN = """
import sys, time
from fastpaca_server.tokens import encoding
enc = encoding("o200k_base")
enc.encode_ordinary("warm up")
for path in sys.argv[1:]:
    text = open(path, encoding="utf-8").read()
    started = time.perf_counter()
    tokens = len(enc.encode_ordinary(text))
    print(tokens, time.perf_counter() - started, flush=True)
"""


def tiktoken_seconds(paths: list[Path], time_cap: float) -> list[tuple[int, float]]:
    """Plain tiktoken on each file, in one subprocess that is killed at ``time_cap``:
    ``(tokens, seconds)`` for the files it finished."""
    process = subprocess.Popen(
        [sys.executable, "-c", _COUNT_IN_TIKTOKEN, *map(str, paths)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        stdout, _ = process.communicate(timeout=time_cap + 10)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, _ = process.communicate()
    found = []
    for line in stdout.splitlines():
        tokens, seconds = line.split()
        found.append((int(tokens), float(seconds)))
    return found


def no_whitespace_text(size: int, seed: int = 7) -> str:
    """Random lowercase letters: one "word" for the tokenizer's pre-split, its worst case."""
    table = bytes(string.ascii_lowercase[i % 26].encode()[0] for i in range(256))
    return random.Random(seed).randbytes(size).translate(table).decode()


def prose_text(size: int) -> str:
    paragraph = (
        "The quarterly report shows revenue growth of 12 percent, driven by new customers "
        "in Europe and Asia; costs rose by 4 percent. Next steps: hire two engineers, ship "
        "the billing rewrite, and review pricing with the sales team before March. "
    )
    return (paragraph * (size // len(paragraph) + 1))[:size]


async def stage_tokens(bench: Bench) -> None:
    params = bench.params
    cap = params.token_cap
    server = FastpacaServer(
        "fastpaca-tokens",
        bench.work_dir / "tokens-data",
        bench.work_dir,
        "--max-body-bytes",
        str(32 * MiB),
        "--log-compaction-entries",
        NEVER_SNAPSHOT,
    )
    facts = []
    try:
        server.start()
        await bench.create_contexts([server], "tokens", 1, MANUAL_CONFIG)
        small = await drive(
            server.url,
            lambda i: ("POST", "/v1/contexts/tokens-0/messages", {"message": message(i)}),
            20,
            1,
            30,
        )
        small_seconds = sorted(lat for _, lat in small.samples)[len(small.samples) // 2]
        cases = [("prose", params.prose_mib, prose_text)] + [
            ("no whitespace", size, no_whitespace_text) for size in params.no_whitespace_mib
        ]
        paths = []
        for number, (_, mib, make) in enumerate(cases):
            paths.append(bench.work_dir / f"tokens-{number}.txt")
            paths[-1].write_text(make(int(mib * MiB)), encoding="utf-8")
        print("  tokens: tiktoken alone", flush=True)
        plain = await asyncio.to_thread(tiktoken_seconds, paths, cap * len(paths))
        for number, (kind, mib, _) in enumerate(cases):
            name = f"{mib:g} MiB of {kind}"
            print(f"  tokens: {name}", flush=True)
            text = paths[number].read_text(encoding="utf-8")
            body = {"message": {"role": "user", "parts": [{"type": "text", "text": text}]}}
            started = time.perf_counter()
            try:
                status, answer = await call(
                    server.url, ("POST", "/v1/contexts/tokens-0/messages", body), timeout=cap
                )
            except (TimeoutError, aiohttp.ClientError) as error:
                status, answer = 0, f"no answer within {cap} s ({type(error).__name__})"
            seconds = max(1e-6, time.perf_counter() - started - small_seconds)
            baseline = plain[number] if number < len(plain) else None
            baseline_per_mib = baseline[1] / mib if baseline else None
            failed = status != 201 or not isinstance(answer, dict)
            if isinstance(answer, dict) and not failed:
                tokens = answer.get("token_estimate", 0)
                facts.append(
                    fact(
                        f"{name}: tokens counted per second (append, end to end)",
                        tokens / seconds,
                        "tokens/s",
                        "tiktoken alone",
                        baseline[0] / baseline[1] if baseline else None,
                        note=f"{tokens:,} tokens",
                    )
                )
            facts.append(
                fact(
                    f"{name}: seconds per MiB",
                    seconds / mib,
                    "s/MiB",
                    "tiktoken alone",
                    baseline_per_mib,
                    note=f"at least: {status} {str(answer)[:200]}" if failed else "",
                )
            )
            if failed:
                server.kill()  # it may still be counting
                break
        bench.figures["tokens"] = {
            "title": "Token counting (o200k_base): one large text message appended",
            "facts": facts,
        }
    finally:
        server.stop()


STAGE_FUNCTIONS: dict[str, Callable[[Bench], Awaitable[None]]] = {
    "append": stage_append,
    "window": stage_window,
    "history": stage_history,
    "mix": stage_mix,
    "bigdata": stage_bigdata,
    "idempotency": stage_idempotency,
    "tokens": stage_tokens,
    "cluster": stage_cluster,
    "overload": stage_overload,
}
SHARED_STAGES = ("append", "window", "history", "mix")
