"""A Raft cluster of real server processes on loopback, for tests.

:class:`Cluster` starts N ``fastpaca-server`` processes that name each other
as ``--peers``, finds the leader through ``GET /v1/cluster``, and stops,
kill -9s, pauses (SIGSTOP) and restarts nodes. Every wait is bounded.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx

from .polling import until
from .proxy import LinkProxy
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
        proxied: bool = False,
        groups: int = 1,
    ) -> None:
        raft = [f"127.0.0.1:{free_ports(groups)}" for _ in range(size)]
        if groups > 1:
            args = ("--groups", str(groups), *args)
        self.proxies: dict[frozenset[int], LinkProxy] = {}
        self.nodes: list[ServerProcess] = []
        for number in range(size):
            peers = ",".join(
                self._peer_address(raft, number, other, proxied)
                for other in range(size)
                if other != number
            )
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
        self._root = root
        self._args = args
        self._node_class = node_class
        self._groups = groups
        self._created = size

    def add_node(self) -> ServerProcess:
        """Launch one more node (not yet a member) whose --peers are the current
        members; ``POST /v1/cluster/members`` makes it one."""
        self._created += 1
        name = f"n{self._created}"
        address = f"127.0.0.1:{free_ports(self._groups)}"
        node = self._node_class(
            self._root / name,
            "--node-id",
            name,
            "--raft-bind",
            address,
            "--peers",
            ",".join(self.raft_addresses),
            *self._args,
        )
        self.nodes.append(node)
        self.raft_addresses.append(address)
        node.launch()
        return node

    def forget(self, node: ServerProcess) -> None:
        """Stop ``node`` and leave it out from now on (it was removed from the cluster)."""
        node.stop()
        index = self.nodes.index(node)
        del self.nodes[index]
        del self.raft_addresses[index]

    def update_peers(self, node: ServerProcess) -> None:
        """Set ``node``'s --peers to the current members (what the runbook asks of an
        operator after a membership change), for its next start."""
        mine = self.raft_address(node)
        peers = ",".join(address for address in self.raft_addresses if address != mine)
        index = node.args.index("--peers")
        node.args[index + 1] = peers

    def raft_address(self, node: ServerProcess) -> str:
        return self.raft_addresses[self.nodes.index(node)]

    def _peer_address(self, raft: list[str], me: int, other: int, proxied: bool) -> str:
        """How node ``me`` names node ``other`` in its --peers.

        pysyncobj opens one connection per pair, from the node with the larger
        address to the smaller, and the connecting node introduces itself by
        its own address. So with ``proxied`` the larger node reaches the
        smaller one through a :class:`LinkProxy` (whose port sorts below every
        real one, keeping the order), and the smaller names the larger by its
        real address (which is how the larger introduces itself).
        """
        if not proxied or raft[me] < raft[other]:
            return raft[other]
        proxy = LinkProxy(raft[other])
        self.proxies[frozenset((me, other))] = proxy
        return proxy.address

    def cut(self, one: ServerProcess, other: ServerProcess) -> None:
        """Cut the Raft link between two nodes (both directions: it is one connection)."""
        self.proxies[frozenset((self.nodes.index(one), self.nodes.index(other)))].cut()

    def heal(self) -> None:
        for proxy in self.proxies.values():
            proxy.heal()

    def isolate(self, node: ServerProcess) -> None:
        for other in self.nodes:
            if other is not node:
                self.cut(node, other)

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
        for proxy in self.proxies.values():
            proxy.close()

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
        """The node every live node names as leader, once they agree and it is live.

        Through proxies a node knows its peers by proxy addresses, so it cannot
        name them: then the leader is the one live node that says it leads.
        """
        if self.proxies:
            return wait_for(self._self_declared_leader, timeout, "exactly one node to lead")

        return wait_for(self._agreed_leader, timeout, "the live nodes to agree on a leader")

    def _agreed_leader(self) -> ServerProcess | None:
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

    def _self_declared_leader(self) -> ServerProcess | None:
        leading = [
            node
            for node in self.alive()
            if (view := self.view(node)) is not None and view["leader"] == view["node_id"]
        ]
        return leading[0] if len(leading) == 1 else None

    def settled(self, timeout: float = 60.0, quiet: float = 1.5) -> ServerProcess:
        """The leader, once every live node has been ready under it for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        stable_since: float | None = None
        last: ServerProcess | None = None
        while time.monotonic() < deadline:
            leader = self._self_declared_leader() if self.proxies else self._agreed_leader()
            ready = leader is not None and all(
                _status(f"{node.url}/health/ready") == 200 for node in self.alive()
            )
            if ready and leader is last:
                if stable_since is not None and time.monotonic() - stable_since >= quiet:
                    assert leader is not None
                    return leader
            else:
                stable_since = time.monotonic() if ready else None
            last = leader if ready else None
            time.sleep(0.1)
        raise TimeoutError(f"the cluster did not settle within {timeout:g}s")

    def followers(self) -> list[ServerProcess]:
        leader = self.leader()
        return [node for node in self.alive() if node is not leader]


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return None


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports (Raft groups use port + g)."""
    for _ in range(100):
        first = free_port()
        sockets = []
        try:
            for port in range(first, first + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports")


def wait_for(check: Callable[[], _T | Literal[False] | None], timeout: float, what: str) -> _T:
    """Call ``check`` every 0.1 s until it gives something other than ``None`` or
    ``False`` (a boolean check waits for ``True``; ``0`` or ``[]`` are answers), and
    return that; TimeoutError after ``timeout`` seconds."""

    def answered() -> tuple[_T] | None:
        value = check()
        return None if value is None or value is False else (value,)

    found = until(answered, what, timeout, every=0.1)
    assert found is not None  # until returns only a true value
    return found[0]


def each(items: list[_T]) -> Iterator[_T]:
    """Round-robin over ``items`` forever (writes spread over every node)."""
    while True:
        yield from items
