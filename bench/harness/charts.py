"""PNG charts for docs/benchmarks.md (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SERVERS = (
    ("fastpaca", "Fastpaca", "tab:blue"),
    ("bare", "bare aiohttp handler", "tab:gray"),
    ("langchain", "LangChain + PostgreSQL", "tab:red"),
)


def _series(rows: list[dict[str, Any]], server: str, x_key: str, y_key: str) -> tuple[list, list]:
    xs, ys = [], []
    for row in rows:
        value = row.get(server, {}).get(y_key)
        if value is not None:
            xs.append(row[x_key])
            ys.append(value)
    return xs, ys


def draw(figures: dict[str, Any], directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    window = figures.get("window", {}).get("rows", [])
    if window:
        fig, axis = plt.subplots(figsize=(7, 4.2))
        for server, label, colour in SERVERS:
            for key, style in (("p50", "-o"), ("p99", "--.")):
                xs, ys = _series(window, server, "history", key)
                if xs:
                    axis.plot(xs, ys, style, color=colour, label=f"{label} {key}")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("messages of history")
        axis.set_ylabel("window read latency (ms, log)")
        axis.set_title("GET …/context (same 100-message window), 1 connection")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
        fig.tight_layout()
        path = directory / "window_read_vs_history.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    append = figures.get("append", {}).get("rows", [])
    if append:
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
        for server, label, colour in SERVERS:
            xs, ys = _series(append, server, "connections", "rps")
            if xs:
                left.plot(xs, ys, "-o", color=colour, label=label)
            xs, ys = _series(append, server, "connections", "p99")
            if xs:
                right.plot(xs, ys, "-o", color=colour, label=label)
        for axis in (left, right):
            axis.set_xscale("log", base=2)
            axis.set_xticks([1, 16, 64], ["1", "16", "64"])
            axis.set_xlabel("connections")
            axis.grid(True, alpha=0.3)
        left.set_ylabel("appends per second")
        left.set_title("Append throughput")
        right.set_ylabel("p99 latency (ms, log)")
        right.set_yscale("log")
        right.set_title("Append p99")
        left.legend(fontsize=8)
        fig.tight_layout()
        path = directory / "append_vs_connections.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
