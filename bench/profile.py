"""Where the server's time goes: py-spy samples of the append and read paths under wrk.

    .venv/bin/python bench/profile.py [--seconds 15] [--out bench/results/profile]

Starts a Fastpaca server on a throwaway data directory, creates contexts,
then for each workload (``append``: 64 connections appending over 256
contexts; ``read``: 64 connections reading windows of 100 messages) runs
wrk for ``--seconds`` while ``py-spy record`` samples every thread of the
server. It writes one flame graph (SVG) and the raw folded stacks per
workload to ``--out``, and prints the top entries: the functions the
samples were in (self) and the functions they passed through (total), as
shares of the server's samples. Needs py-spy (``pip install py-spy``; the
harness does not install it) and wrk; run as root or with ptrace allowed.
Bounded: every wrk run and py-spy recording stops after ``--seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.figures import Bench
from harness.load import Wrk
from harness.params import QUICK
from harness.processes import FastpacaServer

CONTEXTS = 256
CONNECTIONS = 64


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


def top_entries(
    folded: Path, count: int
) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """``(self, total)`` top functions of py-spy's folded stacks, as shares of all samples."""
    own: collections.Counter[str] = collections.Counter()
    through: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in folded.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        weight = int(number)
        frames = [frame for frame in stack.split(";") if not frame.startswith("process ")]
        frames = [frame for frame in frames if not frame.startswith("thread ")]
        if not frames:
            continue
        samples += weight
        own[frames[-1]] += weight
        for frame in set(frames):
            through[frame] += weight
    share = 100.0 / max(samples, 1)
    return (
        [(name, weight * share) for name, weight in own.most_common(count)],
        [(name, weight * share) for name, weight in through.most_common(count)],
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("bench/results/profile"))
    args = parser.parse_args()
    spy = py_spy()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fastpaca-profile-"))
    wrk = Wrk(work)
    bench = Bench(QUICK, work, {}, wrk)
    server = FastpacaServer("fastpaca-profile", work / "data", work)
    try:
        server.start()
        config = {"token_budget": 128_000}
        await bench.create_contexts([server], "profile", CONTEXTS, config)
        for index in range(CONTEXTS):
            await bench.fill(server, f"profile-{index}", 100)
        for workload in ("append", "read"):
            folded = args.out / f"{workload}.folded"
            svg = args.out / f"{workload}.svg"
            recorder = [spy, "record", "--pid", str(server.pid), "--threads", "--nonblocking"]
            duration = ["--duration", str(max(1, round(args.seconds)))]
            raw = subprocess.Popen(
                [*recorder, *duration, "--format", "raw", "--output", str(folded)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            flame = subprocess.Popen(
                [*recorder, *duration, "--output", str(svg)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            result = wrk.run(
                server.url,
                workload,
                "profile",
                CONTEXTS,
                CONNECTIONS,
                args.seconds,
                "fastpaca",
            )
            raw.wait(timeout=args.seconds + 60)
            flame.wait(timeout=args.seconds + 60)
            print(
                f"\n## {workload}: {result.rps:,.0f} req/s, p50 {result.p50:.1f} ms, "
                f"p99 {result.p99:.1f} ms at {CONNECTIONS} connections "
                f"(flame graph: {svg})"
            )
            own, total = top_entries(folded, args.top)
            print("\nself (the function the sample was in):")
            for name, share in own:
                print(f"  {share:5.1f}%  {name}")
            print("\ntotal (the function was on the stack):")
            for name, share in total:
                print(f"  {share:5.1f}%  {name}")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
