"""A 3-node Fastpaca cluster on this machine, and what happens when its leader dies.

Run it from the repository root (after ``make install``)::

    .venv/bin/python examples/cluster/run_cluster.py

It needs no running server: it starts three ``fastpaca-server`` processes
itself, on loopback, on free ports, each with its own data directory in a
temporary directory, naming each other as ``--peers`` (docs/cluster.md). Then:

1. waits until every node is ready and they agree on a leader (``GET /v1/cluster``);
2. appends the first half of a conversation through the leader;
3. kills the leader with SIGKILL (no clean shutdown);
4. waits until the two survivors agree on a new leader;
5. appends the rest of the conversation through one survivor;
6. reads the whole conversation back from the other survivor and checks that
   every message is there, in order, with gap-free seqs.

It stops its server processes and removes the temporary directory when it
ends, also on Ctrl-C or SIGTERM. Exit status 0 when every message was read
back, 1 otherwise. ``--keep`` leaves the data directories and logs in place
(the path is printed).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import httpx
from fastpaca import Fastpaca

T = TypeVar("T")

CONTEXT_ID = "cluster-demo"

BEFORE_FAILOVER: list[tuple[str, str]] = [
    ("system", "You are the on-call assistant. Be brief."),
    ("user", "The checkout service is returning 502s. Where do I look first?"),
    ("assistant", "Check the load balancer health checks, then the checkout pods' logs."),
    ("user", "Health checks fail on two of five pods."),
]
AFTER_FAILOVER: list[tuple[str, str]] = [
    ("assistant", "Restart those two pods and watch their readiness probes."),
    ("user", "Restarted. All five pods are healthy again."),
    ("assistant", "Good. Write a short incident note while it is fresh."),
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_command() -> list[str]:
    """``fastpaca-server`` from this Python's environment (the repository's .venv)."""
    script = Path(sys.executable).parent / "fastpaca-server"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "fastpaca_server"]


def wait_for(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:g}s for {what}")
        time.sleep(0.1)


class Node:
    """One ``fastpaca-server`` process of the cluster."""

    def __init__(self, name: str, root: Path, raft: str, peers: list[str]) -> None:
        self.name = name
        self.port = free_port()
        self.raft = raft
        self.data_dir = root / name
        self.log_path = root / f"{name}.log"
        self.args = [
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--node-id",
            name,
            "--raft-bind",
            raft,
            "--peers",
            ",".join(peers),
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.killed = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*server_command(), *self.args], stdout=log, stderr=subprocess.STDOUT
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> None:
        self.killed = True
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def get(self, path: str) -> httpx.Response | None:
        try:
            return httpx.get(self.url + path, timeout=2)
        except httpx.HTTPError:
            return None

    def ready(self) -> bool:
        response = self.get("/health/ready")
        return response is not None and response.status_code == 200

    def view(self) -> dict[str, Any] | None:
        """``GET /v1/cluster`` (it answers before the node is ready, to say why)."""
        response = self.get("/v1/cluster")
        if response is None or response.status_code != 200:
            return None
        view: dict[str, Any] = response.json()
        return view

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except FileNotFoundError:
            return ""


class Cluster:
    def __init__(self, root: Path, size: int = 3) -> None:
        raft = [f"127.0.0.1:{free_port()}" for _ in range(size)]
        self.nodes = [
            Node(f"n{i + 1}", root, raft[i], [a for a in raft if a != raft[i]]) for i in range(size)
        ]

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def alive(self) -> list[Node]:
        return [node for node in self.nodes if node.alive()]

    def agreed_leader(self) -> Node | None:
        """The leader every live node names and is ready under, or ``None`` (not yet)."""
        names = set()
        for node in self.alive():
            view = node.view()
            if view is None or view["leader"] is None or not node.ready():
                return None
            names.add(view["leader"])
        if len(names) != 1:
            return None
        leader = self.node(names.pop())
        return leader if leader.alive() else None

    def wait_leader(self, timeout: float) -> Node:
        def check() -> Node | None:
            for node in self.nodes:
                if not node.killed and not node.alive():  # died by itself (port taken, …)
                    assert node.process is not None
                    raise RuntimeError(f"{node.name} exited with {node.process.returncode}")
            return self.agreed_leader()

        return wait_for(check, timeout, "the live nodes to agree on a leader")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def append_all(url: str, messages: list[tuple[str, str]]) -> None:
    # The SDK sends an idempotency key with every append and retries 503s with it,
    # so an append in flight while the leader changes is stored exactly once.
    with Fastpaca(base_url=url, max_retries=10) as client:
        ctx = client.context(CONTEXT_ID)
        for role, text in messages:
            result = ctx.append({"role": role, "parts": [{"type": "text", "text": text}]})
            print(f"  seq={result.seq} {role:<9} {text}")


def run(cluster: Cluster) -> int:
    for node in cluster.nodes:
        node.start()
        print(f"started {node.name}: api {node.url}, raft {node.raft}, pid {node.pid}")

    started = time.monotonic()
    leader = cluster.wait_leader(60)
    print(f"\nleader: {leader.name} (cluster ready after {time.monotonic() - started:.1f}s)")

    with Fastpaca(base_url=leader.url) as client:
        client.context(CONTEXT_ID, budget=8000, policy="last_n")
    print(f"appending through {leader.name}:")
    append_all(leader.url, BEFORE_FAILOVER)

    killed = leader
    killed.kill9()
    killed_at = time.monotonic()
    print(f"\nkilled leader {killed.name} (SIGKILL, pid {killed.pid})")

    new_leader = cluster.wait_leader(60)
    elapsed = time.monotonic() - killed_at
    print(f"new leader: {new_leader.name} (elected {elapsed:.1f}s after the kill)")

    survivors = cluster.alive()
    writer = next((node for node in survivors if node is not new_leader), new_leader)
    reader = next(node for node in survivors if node is not writer)
    role = "the new leader" if writer is new_leader else "a follower; it forwards to the leader"
    print(f"appending through {writer.name} ({role}):")
    append_all(writer.url, AFTER_FAILOVER)

    expected = BEFORE_FAILOVER + AFTER_FAILOVER
    with Fastpaca(base_url=reader.url, max_retries=10) as client:
        history = list(client.context(CONTEXT_ID).iter_history())
    print(f"\nthe conversation read from {reader.name} ({len(history)} messages):")
    for message in history:
        text = " ".join(p["text"] for p in message["parts"] if p["type"] == "text")
        print(f"  seq={message['seq']} {message['role']:<9} {text}")

    got = [
        (m["role"], " ".join(p["text"] for p in m["parts"] if p["type"] == "text")) for m in history
    ]
    seqs = [m["seq"] for m in history]
    if got != expected or seqs != list(range(1, len(expected) + 1)):
        print(f"\nMISMATCH: expected {len(expected)} messages with seq 1..{len(expected)}")
        return 1
    print(
        f"\nall {len(expected)} messages are there: {len(BEFORE_FAILOVER)} written before "
        f"{killed.name} died, {len(AFTER_FAILOVER)} after, seq 1..{len(expected)} without gaps"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the data directories and logs")
    options = parser.parse_args()

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # also where the parent ignores it (a `cmd &` job)
    root = Path(tempfile.mkdtemp(prefix="fastpaca-cluster-"))
    print(f"data directories and logs in {root}")
    cluster = Cluster(root)
    try:
        return run(cluster)
    except KeyboardInterrupt:
        print("\ninterrupted")
        return 130
    except (TimeoutError, RuntimeError) as error:
        print(f"\nfailed: {error}")
        for log in sorted(root.glob("*.log")):
            print(f"--- {log.name} (end) ---\n{log.read_text(errors='replace')[-1500:]}")
        return 1
    finally:
        # Whatever happened, no server process outlives the script.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("stopping the nodes")
        cluster.stop()
        if options.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
