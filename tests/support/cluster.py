"""A Raft cluster of real server processes on loopback, for tests.

:class:`Cluster` starts N ``fastpaca-server`` processes that name each other
as ``--peers``, finds the leader through ``GET /v1/cluster``, and stops,
kill -9s, pauses (SIGSTOP) and restarts nodes. Every wait is bounded.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from .server import ServerProcess, free_port

_T = TypeVar("_T")


class Cluster:
    """``size`` nodes ``n1`` … ``nN``; ``args`` go to every node. ``node_class``
    builds each node's process (a variant with a fix switched off, for tests
    that prove a test notices)."""

    def __init__(
        self,
        root: Path,
        size: int = 3,
        *args: str,
        node_class: Callable[..., ServerProcess] = ServerProcess,
    ) -> None:
        raft = [f"127.0.0.1:{free_port()}" for _ in range(size)]
        self.nodes: list[ServerProcess] = []
        for number in range(size):
            peers = ",".join(address for other, address in enumerate(raft) if other != number)
            node = node_class(
                root / f"n{number + 1}",
                "--node-id",
                f"n{number + 1}",
                "--raft-bind",
                raft[number],
                "--peers",
                peers,
                *args,
            )
            self.nodes.append(node)
        self.raft_addresses = raft
        self.paused: set[str] = set()

    # --- lifecycle -------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> Cluster:
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            self.wait_ready(node, timeout)
        return self

    def wait_ready(self, node: ServerProcess, timeout: float = 60.0) -> None:
        """Until ``node`` answers ready, and is the process this cluster started."""
        node.wait_ready(timeout)
        view = self.view(node)
        assert view is not None and view["node_id"] == self.name(node), view

    def stop(self) -> None:
        for node in self.nodes:
            if self.name(node) in self.paused:
                self.resume(node)
            node.stop()

    def kill9(self, node: ServerProcess) -> None:
        node.kill9()

    def restart(self, node: ServerProcess, timeout: float = 60.0) -> None:
        node.kill9()
        node.start(timeout)
        self.wait_ready(node, timeout)

    def pause(self, node: ServerProcess) -> None:
        assert node.process is not None
        node.process.send_signal(signal.SIGSTOP)
        self.paused.add(self.name(node))

    def resume(self, node: ServerProcess) -> None:
        assert node.process is not None
        node.process.send_signal(signal.SIGCONT)
        self.paused.discard(self.name(node))

    # --- looking at it -------------------------------------------------------------

    @staticmethod
    def name(node: ServerProcess) -> str:
        return node.data_dir.name

    def alive(self) -> list[ServerProcess]:
        return [
            node
            for node in self.nodes
            if node.process is not None
            and node.process.poll() is None
            and self.name(node) not in self.paused
        ]

    def node(self, name: str) -> ServerProcess:
        return next(node for node in self.nodes if self.name(node) == name)

    @staticmethod
    def view(node: ServerProcess) -> dict[str, Any] | None:
        """``GET /v1/cluster`` of ``node``, or ``None`` if it does not answer."""
        try:
            response = httpx.get(f"{node.url}/v1/cluster", timeout=2)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        view: dict[str, Any] = response.json()
        return view

    def leader(self, timeout: float = 30.0) -> ServerProcess:
        """The node every live node names as leader, once they agree and it is live."""

        def agreed() -> ServerProcess | None:
            names = set()
            for node in self.alive():
                view = self.view(node)
                if view is None or view["leader"] is None:
                    return None
                names.add(view["leader"])
            if len(names) != 1:
                return None
            leader = self.node(names.pop())
            return leader if leader in self.alive() else None

        return wait_for(agreed, timeout, "the live nodes to agree on a leader")

    def followers(self) -> list[ServerProcess]:
        leader = self.leader()
        return [node for node in self.alive() if node is not leader]


def wait_for(check: Callable[[], _T | None], timeout: float, what: str) -> _T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:g}s for {what}")
        time.sleep(0.1)


def each(items: list[_T]) -> Iterator[_T]:
    """Round-robin over ``items`` forever (writes spread over every node)."""
    while True:
        yield from items
