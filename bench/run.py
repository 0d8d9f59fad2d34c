"""Fastpaca's benchmarks: every figure beside its baseline, in one run.

Usage (from the repository root; ``make bench`` / ``make bench-quick`` do this)::

    .venv/bin/python bench/run.py              # the full set (about 11 minutes)
    .venv/bin/python bench/run.py --quick      # the same figures, smaller (under 2 minutes)
    .venv/bin/python bench/run.py --only window,tokens   # some stages alone

Stages: append, window, history, mix, bigdata, idempotency, tokens, cluster,
overload (see ``bench/README.md`` for what each measures). The run starts
every server it measures: Fastpaca (``python -m fastpaca_server`` on temporary data
directories), a bare aiohttp handler and the LangChain + PostgreSQL service
(over a throwaway PostgreSQL cluster), and stops them all on every exit path.

It prints a table, writes ``bench/results/latest.json`` (every figure, the
targets, machine info, git revision) and ``latest.md``, and with ``--charts``
(the default of a full run) the PNGs that docs/benchmarks.md embeds. A run
with ``--only`` writes ``latest-<stages>.json`` instead, so that it never
replaces the results of a whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import charts, machine, report
from harness.figures import SHARED_STAGES, STAGE_FUNCTIONS, STAGES, Bench
from harness.load import Wrk, wrk_version
from harness.params import FULL, QUICK, Params
from harness.postgres import binaries as postgres_binaries

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="the ≤ 2-minute version")
    parser.add_argument(
        "--only",
        type=lambda text: [part.strip() for part in text.split(",") if part.strip()],
        help=f"comma-separated stages: {','.join(STAGES)}",
    )
    parser.add_argument("--out", type=Path, help="results file (default bench/results/latest.json)")
    parser.add_argument(
        "--charts",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draw the PNGs into bench/results (default: on for a full run of every stage)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a size or duration of bench/harness/params.py, e.g. big_messages=200000 "
        "or window_histories=100,20000 (repeatable)",
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.only or [] if name not in STAGES]
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGES)}")
    return args


def override(params: Params, assignments: list[str]) -> Params:
    """``params`` with ``NAME=VALUE`` overrides (a tuple field takes comma-separated values)."""
    changes: dict[str, Any] = {}
    for assignment in assignments:
        name, _, text = assignment.partition("=")
        if name not in Params.__dataclass_fields__ or name == "mode" or not text:
            raise ValueError(
                f"{assignment!r}: expected NAME=VALUE with NAME one of "
                f"{', '.join(f for f in Params.__dataclass_fields__ if f != 'mode')}"
            )
        current = getattr(params, name)
        if isinstance(current, tuple):
            kind = type(current[0]) if current else int
            changes[name] = tuple(kind(part) for part in text.split(","))
        else:
            changes[name] = type(current)(text)
    return dataclasses.replace(params, **changes)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # unwinds through the finally blocks that stop the servers


async def run_stages(bench: Bench, stages: list[str]) -> None:
    shared = [stage for stage in stages if stage in SHARED_STAGES]
    try:
        if shared:
            print("starting fastpaca, the bare handler, PostgreSQL + LangChain", flush=True)
            bench.start_shared(need_langchain=True)
            await bench.warm_up()
        for stage in stages:
            if stage not in SHARED_STAGES:
                bench.stop_shared()  # the remaining stages start servers of their own
            print(f"[{stage}]", flush=True)
            started = time.perf_counter()
            try:
                await STAGE_FUNCTIONS[stage](bench)
            except Exception as error:
                bench.error(stage, error)
            bench.stage_seconds[stage] = round(time.perf_counter() - started, 1)
            print(f"  ({bench.stage_seconds[stage]:.0f} s)", flush=True)
    finally:
        bench.stop_shared()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import fastpaca_server  # noqa: F401 - only checks that the server is installed
    except ImportError:
        print("fastpaca_server is not importable: run with .venv/bin/python (make install)")
        return 2
    try:
        params = override(QUICK if args.quick else FULL, args.set)
    except ValueError as error:
        print(f"--set: {error}")
        return 2
    stages = [stage for stage in STAGES if not args.only or stage in args.only]
    out = args.out or RESULTS / (
        "latest.json" if not args.only else f"latest-{'-'.join(stages)}.json"
    )
    draw = args.charts if args.charts is not None else (not args.quick and not args.only)

    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    work_dir = Path(tempfile.mkdtemp(prefix="fastpaca-bench-"))
    started = time.perf_counter()
    started_at = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_start = machine.load_average()
    try:
        wrk = Wrk(work_dir)
        postgres_bin = postgres_binaries()
        described = machine.describe(
            work_dir, wrk_version(), str(postgres_bin) if postgres_bin else "no PostgreSQL"
        )
        stack = machine.server_stack()
        bench = Bench(params=params, work_dir=work_dir, stack=stack, wrk=wrk)
        print(
            f"fastpaca benchmarks, {params.mode} mode, stages {', '.join(stages)}; "
            f"work in {work_dir}",
            flush=True,
        )
        asyncio.run(run_stages(bench, stages))
        described["postgres"] = bench.postgres_version or described["postgres"]
        result: dict[str, Any] = {
            "schema": 1,
            "mode": params.mode,
            "stages": stages,
            "started_at": started_at,
            "duration_s": time.perf_counter() - started,
            "git": machine.git_revision(),
            "machine": described,
            "stack": stack,
            "load_average": {"start": load_start, "end": machine.load_average()},
            "stage_seconds": bench.stage_seconds,
            "figures": bench.figures,
            "targets": report.targets(bench.figures),
            "errors": bench.errors,
        }
        RESULTS.mkdir(exist_ok=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        outputs = [out]
        if not args.only and not args.out:  # latest.json, and latest-quick/-full.json beside it
            outputs.append(RESULTS / f"latest-{params.mode}.json")
        for path in outputs:
            path.write_text(json.dumps(result, indent=2, default=str) + "\n")
            path.with_suffix(".md").write_text(report.markdown(result))
        print()
        for line in report.lines(result):
            print(line)
        print(f"\nwrote {', '.join(str(path) for path in outputs)} (and .md)")
        if draw:
            for path in charts.draw(bench.figures, RESULTS):
                print(f"wrote {path}")
    except KeyboardInterrupt:
        print("interrupted; servers stopped")
        return 130
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
