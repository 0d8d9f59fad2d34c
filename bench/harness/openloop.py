"""An open-loop load generator: appends sent at a fixed rate, whatever the answers.

wrk (closed loop: each connection waits for its answer before it sends
again) slows down with the server it measures, so it cannot offer more load
than the server takes. This sends request ``i`` at ``start + i / rate``
(wrk2's model) on keep-alive connections of its own, and times each request
from the moment it was **due**, so a request that waited for a free
connection, or for the generator itself, counts that wait too. It is bounded
in time (``--seconds``, then at most ``--drain`` seconds for answers still
out) and in connections (``--connections``, opened before the clock starts):
a request that is due while every connection is busy is not sent, and
counted as ``not_sent``.

The HTTP/1.1 client is a bare asyncio protocol (one request at a time per
connection, ``Content-Length`` bodies only: what aiohttp servers send), so
that the generator needs a fraction of the CPU an aiohttp client would, on
a machine it shares with the server.

Run by the harness in a process of its own (``harness.overload``)::

    python bench/harness/openloop.py --port 4000 --rate 8000 --seconds 10 \\
        --prefix overload --contexts 256 [--connections 512] [--loop uvloop]

It prints one line ``OPENLOOP_JSON {…}`` (latencies in ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import sys
import time
from collections import Counter
from typing import Any

MESSAGE_TEXT = (
    "Could you summarise the last quarterly report in three short bullet points "
    "for the team meeting, please?"
)
_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:\s*close", re.IGNORECASE)
_ERROR = re.compile(rb'"error"\s*:\s*"([a-z_]{1,64})"')


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, str]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def send(self, request: bytes) -> asyncio.Future[tuple[int, str]]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end])
        length = _LENGTH.search(head)
        size = int(length.group(1)) if length else 0
        if len(self.buffer) < end + 4 + size:
            return
        body = bytes(self.buffer[end + 4 : end + 4 + size])
        del self.buffer[: end + 4 + size]
        status = int(head[9:12])
        code = ""
        if status >= 400:
            found = _ERROR.search(body)
            code = found.group(1).decode() if found else ""
        if _CLOSE.search(head) and self.transport is not None:
            self.closed = True
            self.transport.close()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((status, code))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(str(exc or "connection closed")))


def percentiles(values: list[float]) -> dict[str, float | None]:
    values.sort()

    def at(fraction: float) -> float | None:
        if not values:
            return None
        index = min(len(values) - 1, max(0, math.ceil(fraction * len(values)) - 1))
        return values[index] * 1000

    return {
        "p50": at(0.5),
        "p90": at(0.9),
        "p99": at(0.99),
        "p999": at(0.999),
        "max": values[-1] * 1000 if values else None,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    clock = time.perf_counter  # uvloop's loop.time() is cached per iteration, in ms
    host = "127.0.0.1"

    async def connect() -> Connection:
        _, protocol = await loop.create_connection(Connection, host, args.port)
        return protocol

    idle = [await connect() for _ in range(args.connections)]
    open_count = len(idle)
    statuses: Counter[str] = Counter()
    admitted_due: list[float] = []
    admitted_sent: list[float] = []
    shed_due: list[float] = []
    lag: list[float] = []
    not_sent = 0
    outstanding: set[asyncio.Task[None]] = set()
    busy_peak = 0
    head = (
        "POST /v1/contexts/{context}/messages HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )

    def request(index: int) -> bytes:
        body = json.dumps(
            {
                "message": {
                    "role": "user",
                    "parts": [{"type": "text", "text": f"{MESSAGE_TEXT} (#{index})"}],
                }
            },
            separators=(",", ":"),
        ).encode()
        context = f"{args.prefix}-{index % args.contexts}"
        line = head.format(context=context, host=host, port=args.port, length=len(body))
        return line.encode() + body

    async def one(connection: Connection, index: int, due: float) -> None:
        nonlocal open_count
        sent = clock()
        lag.append(sent - due)
        try:
            status, code = await connection.send(request(index))
        except ConnectionError:
            statuses["connection error"] += 1
            open_count -= 1
            return
        done = clock()
        if 200 <= status < 300:
            statuses[str(status)] += 1
            admitted_due.append(done - due)
            by_second[int(due - start)][0].append(done - due)
            admitted_sent.append(done - sent)
        else:
            statuses[f"{status} {code}".strip()] += 1
            if status == 429 or (status == 503 and code == "overloaded"):  # shed
                shed_due.append(done - due)
                by_second[int(due - start)][1][0] += 1
        if connection.closed:
            open_count -= 1
        else:
            idle.append(connection)

    total = int(args.rate * args.seconds)
    start = clock() + 0.05
    # Per second of the run (by when the request was due): admitted latencies, shed count.
    by_second: list[tuple[list[float], list[int]]] = [
        ([], [0]) for _ in range(math.ceil(args.seconds) + 1)
    ]
    index = 0
    while index < total:
        now = clock()
        due = start + index / args.rate
        if due > now:
            # At least a millisecond: uvloop's timers count whole ones (a shorter sleep
            # would spin), and what falls due meanwhile is sent in one go.
            await asyncio.sleep(max(due - now, 0.001))
            continue
        while index < total and start + index / args.rate <= now:
            if not idle and open_count < args.connections:
                try:
                    idle.append(await connect())  # one closed after an answer: replace it
                    open_count += 1
                except OSError:
                    pass
            if idle:
                task = loop.create_task(one(idle.pop(), index, start + index / args.rate))
                outstanding.add(task)
                task.add_done_callback(outstanding.discard)
            else:
                not_sent += 1
            index += 1
        busy_peak = max(busy_peak, len(outstanding))
    sending_ended = clock()
    unfinished = 0
    if outstanding:
        _, pending = await asyncio.wait(set(outstanding), timeout=args.drain)
        unfinished = len(pending)
        for task in pending:
            task.cancel()
    for connection in idle:
        if connection.transport is not None:
            connection.transport.close()
    seconds = sending_ended - start
    admitted = len(admitted_due)
    shed = len(shed_due)
    return {
        "rate": args.rate,
        "seconds": seconds,
        "scheduled": total,
        "sent": total - not_sent,
        "not_sent": not_sent,
        "unfinished": unfinished,
        "admitted": admitted,
        "shed": shed,
        "errors": total - not_sent - admitted - shed - unfinished,
        "statuses": dict(statuses),
        "offered_rps": total / seconds if seconds > 0 else None,
        "admitted_rps": admitted / seconds if seconds > 0 else None,
        "shed_share": shed / max(1, total - not_sent),
        "busy_connections_peak": busy_peak,
        "connections": args.connections,
        "latency_ms": percentiles(admitted_due),
        "service_latency_ms": percentiles(admitted_sent),
        "shed_latency_ms": percentiles(shed_due),
        "send_lag_ms": percentiles(lag),
        "per_second": [
            {
                "admitted": len(latencies),
                "shed": shed_count[0],
                "p99_ms": percentiles(latencies)["p99"],
            }
            for latencies, shed_count in by_second
            if latencies or shed_count[0]
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--prefix", required=True, help="contexts <prefix>-0 … <prefix>-<n-1>")
    parser.add_argument("--contexts", type=int, default=1)
    parser.add_argument("--connections", type=int, default=512)
    parser.add_argument("--drain", type=float, default=15.0, help="seconds to wait for answers")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or args.connections < 1:
        parser.error("--rate, --seconds and --connections must be positive")
    started = time.perf_counter()
    if args.loop == "uvloop":
        import uvloop

        result = uvloop.run(run(args))
    else:
        result = asyncio.run(run(args))
    result["wall_seconds"] = time.perf_counter() - started
    print("OPENLOOP_JSON " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
