"""Sizes and durations of ``make bench`` (full) and ``make bench-quick`` (quick)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Params:
    mode: str
    cell_seconds: int  # one wrk run of one server in one cell
    append_seconds: int  # the same, in the append figure (the headline one)
    warmup_seconds: int
    connections: tuple[int, ...] = (1, 16, 64)
    append_contexts: int = 256
    langchain_connections: tuple[int, ...] = (16,)
    window_histories: tuple[int, ...] = (100, 10_000, 20_000)
    slow_cell_cap: int = 3  # longest wrk run for a slow baseline cell
    limits: tuple[int, ...] = (200, 1_000, 10_000)
    mix_contexts: int = 63  # not a multiple of 5: every fifth request (an append) moves around
    mix_history: int = 100
    big_messages: int = 100_000
    manual_window: int = 60_000
    snapshot_cap: int = 8
    idempotency_keys: int = 2_000
    prose_mib: float = 1.0
    no_whitespace_mib: tuple[float, ...] = (0.25, 1.0)
    token_cap: int = 15
    overload_seconds: int = 10  # the open-loop run at 2x the sustainable rate
    overload_reference_seconds: int = 4  # at 1x, and the bare handler at 2x
    overload_unlimited_seconds: int = 0  # 2x on a node with --max-inflight 0 (0: not run)
    overload_connections: int = 512  # the generator's connections (its bound)
    overload_max_inflight: int = -1  # the node's --max-inflight (-1: its default)
    overload_latency_target: float = -1  # the node's --latency-target in ms (-1: its default)
    overload_rate: int = 0  # appends/s offered in the "2x" runs (0: twice the sustainable rate)


QUICK = Params(mode="quick", cell_seconds=1, append_seconds=2, warmup_seconds=1)

FULL = Params(
    mode="full",
    cell_seconds=6,
    append_seconds=10,
    warmup_seconds=2,
    langchain_connections=(1, 16, 64),
    window_histories=(100, 10_000, 20_000, 100_000),
    slow_cell_cap=40,
    limits=(200, 1_000, 100_000),
    big_messages=1_000_000,
    snapshot_cap=60,
    idempotency_keys=50_000,
    prose_mib=4.0,
    no_whitespace_mib=(1.0, 10.0),
    token_cap=120,
    overload_seconds=30,
    overload_reference_seconds=15,
    overload_unlimited_seconds=30,
)
