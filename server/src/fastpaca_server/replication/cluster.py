"""What a node needs to be one member of a Raft cluster: addresses, the secret, a transport.

A single node is a one-member cluster with no sockets (``LocalTransport`` in
:mod:`.node`). With peers, pysyncobj's TCP transport carries the Raft
messages, through :class:`DurableTCPTransport`: it flushes the journal
before sending anything, so no node ever tells another about entries (a
follower's acknowledgement, a vote, entries a leader replicates) that a
crash could still take from its own disk.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import attrs
from pysyncobj.transport import TCPTransport


class ClusterConfigError(ValueError):
    """The cluster flags do not describe a cluster this node can join."""


@attrs.frozen
class ClusterConfig:
    """This node's place in the cluster.

    ``raft_bind`` and ``peers`` are ``host:port`` Raft addresses; the cluster
    is ``raft_bind`` plus ``peers`` (the same set, seen from each node).
    ``secret`` encrypts and authenticates the Raft traffic (pysyncobj's
    ``password``); ``None`` only on loopback (see :func:`check`).
    """

    node_id: str
    raft_bind: str
    peers: tuple[str, ...]
    secret: str | None = None


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) as ``(host, port)``; ValueError if it is not one."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterConfigError(f"{address!r} is not a host:port address")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check(config: ClusterConfig) -> ClusterConfig:
    """``config`` if it describes a cluster this node can start, else ClusterConfigError.

    Everything on the Raft port is pickled: without a secret anyone who can
    reach it can run code on the node. A cluster therefore needs
    ``--raft-secret``, except when every Raft address is loopback (a
    development cluster on one machine).
    """
    addresses = [config.raft_bind, *config.peers]
    hosts = [split_address(address)[0] for address in addresses]
    if len(set(addresses)) != len(addresses):
        raise ClusterConfigError("--peers must not repeat an address or name --raft-bind")
    if not config.node_id or len(config.node_id) > 64 or not config.node_id.isprintable():
        raise ClusterConfigError("--node-id must be 1-64 printable characters")
    if config.secret is None and not all(is_loopback(host) for host in hosts):
        raise ClusterConfigError(
            "a cluster with non-loopback Raft addresses needs --raft-secret "
            "(FASTPACA_RAFT_SECRET): the Raft port carries pickles"
        )
    return config


class DurableTCPTransport(TCPTransport):  # type: ignore[misc]
    """pysyncobj's TCP transport, flushing the journal before every message it sends."""

    def send(self, node: Any, message: Any) -> bool:
        # A no-op when nothing was written since the last flush; otherwise one
        # fdatasync covers every entry added since (group commit).
        self._syncObj._SyncObj__raftLog.flush()
        sent: bool = super().send(node, message)
        return sent
