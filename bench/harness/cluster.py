"""The ``cluster`` stage: a three-node loopback cluster beside a single node.

* Appends at 16 and 64 connections over 256 contexts, sent to the leader and
  to a follower (which forwards them through Raft), against one single node
  started by the same stage with the same flags.
* Failover: a writer appends through a follower; the leader is killed with
  kill -9; the time from the kill to the first acknowledged append after it.
  Repeated, the killed node restarted and caught up in between.

All five processes and wrk share the machine's CPUs: on a 2-core box three
nodes compete for two cores, so the ratio says little about three machines.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import TYPE_CHECKING, Any

import aiohttp

from .load import Measurement, call
from .processes import FastpacaServer, free_port

if TYPE_CHECKING:
    from .figures import Bench

CONTEXTS = 256
FAILOVER_ROUNDS = 3


def _cluster(bench: Bench) -> list[FastpacaServer]:
    raft = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    nodes = []
    for number in range(3):
        peers = ",".join(address for other, address in enumerate(raft) if other != number)
        nodes.append(
            FastpacaServer(
                f"cluster-n{number + 1}",
                bench.work_dir / f"cluster-n{number + 1}",
                bench.work_dir,
                "--node-id",
                f"n{number + 1}",
                "--raft-bind",
                raft[number],
                "--peers",
                peers,
            )
        )
    return nodes


async def _view(node: FastpacaServer) -> dict[str, Any] | None:
    try:
        status, body = await call(node.url, ("GET", "/v1/cluster", None), timeout=2)
    except (aiohttp.ClientError, TimeoutError):
        return None
    return body if status == 200 and isinstance(body, dict) else None


async def _leader(nodes: list[FastpacaServer], alive: list[FastpacaServer]) -> FastpacaServer:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        views = [await _view(node) for node in alive]
        names = {view["leader"] for view in views if view is not None}
        if len(names) == 1 and None not in names and all(v is not None for v in views):
            name = names.pop()
            for node in nodes:
                if node.name == f"cluster-{name}" and node in alive:
                    return node
        await asyncio.sleep(0.1)
    raise TimeoutError("the cluster elected no leader within 60 s")


async def _failover(nodes: list[FastpacaServer]) -> list[float]:
    """Seconds from kill -9 of the leader to the first append acknowledged after it."""
    seconds = []
    for round_ in range(FAILOVER_ROUNDS):
        leader = await _leader(nodes, nodes)
        survivor = next(node for node in nodes if node is not leader)
        seconds.append(await _one_failover(leader, survivor, round_))
        await asyncio.to_thread(leader.start)
        await _leader(nodes, nodes)
    return seconds


async def _one_failover(leader: FastpacaServer, survivor: FastpacaServer, round_: int) -> float:
    """Append through ``survivor`` in a loop, kill -9 ``leader``, and time the gap to the
    first append that was sent after the kill and acknowledged."""
    killed = asyncio.Event()
    acked = asyncio.Event()
    times: dict[str, float] = {}

    async def writer() -> None:
        count = 0
        while not acked.is_set():
            count += 1
            body = {
                "message": {"role": "user", "parts": [{"type": "text", "text": "failover"}]},
                "idempotency_key": f"failover-{round_}-{count}",
            }
            request = ("POST", "/v1/contexts/cluster-0/messages", body)
            sent_after_kill = killed.is_set()
            try:
                status, _ = await call(survivor.url, request, timeout=5)
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            if status == 201 and sent_after_kill:
                times["ack"] = time.monotonic()
                acked.set()
            elif status != 201:
                await asyncio.sleep(0.01)

    task = asyncio.create_task(writer())
    try:
        await asyncio.sleep(1.0)
        times["kill"] = time.monotonic()
        leader.kill()
        killed.set()
        await asyncio.wait_for(acked.wait(), 60)
    finally:
        acked.set()
        await task
    return times["ack"] - times["kill"]


async def stage_cluster(bench: Bench) -> None:
    from .figures import fact, load_row  # the figures module imports this one

    single = FastpacaServer("single", bench.work_dir / "cluster-single", bench.work_dir)
    nodes = _cluster(bench)
    try:
        await asyncio.gather(
            asyncio.to_thread(single.start), *(asyncio.to_thread(n.launch) for n in nodes)
        )
        for node in nodes:
            await asyncio.to_thread(node.wait_ready)
        leader = await _leader(nodes, nodes)
        follower = next(node for node in nodes if node is not leader)
        config = {"token_budget": 128_000}
        await bench.create_contexts([single, leader], "cluster", CONTEXTS, config)
        rows = []
        for connections in (16, 64):
            print(f"  cluster: appends at {connections} connections", flush=True)
            seconds = bench.params.append_seconds
            results: dict[str, Measurement] = {}
            for name, server in (("leader", leader), ("follower", follower), ("single", single)):
                results[name] = await asyncio.to_thread(
                    bench.wrk.run,
                    server.url,
                    "append",
                    "cluster",
                    CONTEXTS,
                    connections,
                    seconds,
                    name,
                )
            for target in ("leader", "follower"):
                pair = {"cluster": results[target], "single": results["single"]}
                case = f"{connections} conns, to {target}"
                rows.append(
                    load_row(case, pair, ours="cluster", connections=connections, target=target)
                )
        print("  cluster: failover (kill -9 of the leader)", flush=True)
        failovers = await _failover(nodes)
        bench.figures["cluster"] = {
            "title": f"3-node loopback cluster against a single node, {CONTEXTS} contexts",
            "rows": rows,
            "failover_seconds": failovers,
            "facts": [
                fact(
                    "failover, kill -9 of the leader to the first acknowledged append (median)",
                    statistics.median(failovers),
                    "s",
                    note=", ".join(f"{value:.2f}" for value in failovers) + " s",
                ),
                fact("failover, longest", max(failovers), "s"),
            ],
        }
    finally:
        for server in (single, *nodes):
            server.stop()
