"""Raft groups: contexts spread over G independent pysyncobj instances.

One Raft group orders every write through one leader and one apply thread.
With ``--groups G`` a node runs G groups (G :class:`~.node.ReplicatedStore`
objects, each with its own journal, snapshot, Raft port and leader), and a
context always belongs to group ``crc32(id) % G``. Leaders of different
groups can sit on different nodes, so writes spread over the cluster.

G is part of the data: changing it would move contexts to other groups, whose
logs do not hold them. The first start writes G to ``<data-dir>/GROUPS``;
a later start with another G refuses to run (:class:`GroupsChanged`).

Group g keeps its files in ``<data-dir>`` for g = 0 (a node started without
``--groups`` is group 0 of one) and in ``<data-dir>/group-<g>`` otherwise;
its Raft port is the ``--raft-bind`` port plus g, on every node, so
``--peers`` names group 0's ports only.
"""

from __future__ import annotations

import os
import zlib
from typing import Any, Literal

import attrs

from .cluster import ClusterConfig, split_address
from .data_dir import DataDirectoryError
from .journal import write_file_durably
from .node import RaftView, ReplicatedStore

GROUPS_FILE = "GROUPS"
MAX_GROUPS = 64


class GroupsChanged(DataDirectoryError):
    """``--groups`` differs from the number the data directory was created with."""


def group_of(context_id: str, groups: int) -> int:
    """The group of ``context_id``: stable across processes, versions and nodes."""
    return zlib.crc32(context_id.encode()) % groups


def group_dir(data_dir: str, group: int) -> str:
    return data_dir if group == 0 else os.path.join(data_dir, f"group-{group}")


def shifted(address: str, group: int) -> str:
    """``address`` with its port moved up by ``group`` (group g's Raft port)."""
    host, port = split_address(address)
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port + group}"


def group_cluster(cluster: ClusterConfig | None, group: int) -> ClusterConfig | None:
    if cluster is None or group == 0:
        return cluster
    return attrs.evolve(
        cluster,
        raft_bind=shifted(cluster.raft_bind, group),
        peers=tuple(shifted(peer, group) for peer in cluster.peers),
    )


def check_groups(data_dir: str, groups: int) -> None:
    """Record ``groups`` for a new data directory; refuse a different one later."""
    if not 1 <= groups <= MAX_GROUPS:
        raise DataDirectoryError(f"--groups must be between 1 and {MAX_GROUPS}, not {groups}")
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, GROUPS_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            recorded = int(handle.read().strip())
    except FileNotFoundError:
        has_data = os.path.exists(os.path.join(data_dir, "raft.journal"))
        if has_data and groups != 1:
            raise GroupsChanged(
                f"data directory {data_dir} was created with one Raft group, not --groups "
                f"{groups}: its contexts would move to groups that do not hold them"
            ) from None
        write_file_durably(path, f"{groups}\n".encode())
        return
    except ValueError:
        raise DataDirectoryError(f"{path} does not hold a number of groups") from None
    if recorded != groups:
        raise GroupsChanged(
            f"data directory {data_dir} was created with --groups {recorded}, not {groups}: "
            "its contexts would move to groups that do not hold them"
        )


class Shards:
    """This node's Raft groups, in group order."""

    def __init__(self, stores: list[ReplicatedStore]) -> None:
        self.stores = stores

    def for_context(self, context_id: str) -> ReplicatedStore:
        return self.stores[group_of(context_id, len(self.stores))]

    @property
    def first(self) -> ReplicatedStore:
        """Group 0, which also holds the cluster's member records."""
        return self.stores[0]

    @property
    def ready(self) -> bool:
        return all(store.ready for store in self.stores)

    def close(self) -> None:
        for store in self.stores:
            store.close()

    async def change_member(self, action: Literal["add", "remove"], address: str) -> None:
        """Add or remove the node whose group-0 Raft address is ``address``, in every
        group (group g at the address's port + g), one group after the other."""
        for group, store in enumerate(self.stores):
            await store.change_member(action, shifted(address, group))

    def cluster_status(self, node_id: str, http_url: str) -> dict[str, Any]:
        """This node's view of the cluster (``GET /v1/cluster``).

        Members are group 0's Raft members, named by the member records each
        node replicates once it has joined (``null`` until then); a member is
        ``reachable`` when this node has group 0's connection to it; it is
        ``leader`` when it leads group 0. Each group reports its own leader.
        """
        views = [store.raft_view() for store in self.stores]
        first = views[0]
        by_address = {member.raft_address: member for member in first.members.values()}
        cluster = self.first.cluster

        def name(address: str | None, group: int) -> str | None:
            if address is None:
                return None
            if cluster is None:
                return node_id
            base = shifted(address, -group)
            if base == cluster.raft_bind:
                return node_id
            record = by_address.get(base)
            return record.node_id if record else None

        addresses = [None] if cluster is None else [cluster.raft_bind, *self.first.members()]
        members = []
        for address in addresses:
            own = address is None or address == addresses[0]
            record = by_address.get(address) if address is not None else None
            members.append(
                {
                    "id": node_id if own else (record.node_id if record else None),
                    "raft_address": address,
                    "http_url": http_url if own else (record.http_url if record else None),
                    "reachable": own or first.connected.get(address or "", False),
                    "leader": (
                        first.leader_address is not None
                        and (address or "local") == first.leader_address
                    ),
                }
            )
        groups = [
            {
                "id": group,
                "leader": name(view.leader_address, group),
                "commit_index": view.commit_index,
                "applied_index": view.applied_index,
            }
            for group, view in enumerate(views)
        ]
        return {
            "node_id": node_id,
            "leader": groups[0]["leader"],
            "members": members,
            "groups": groups,
            "commit_index": first.commit_index,
            "applied_index": first.applied_index,
        }


__all__ = [
    "GroupsChanged",
    "RaftView",
    "Shards",
    "check_groups",
    "group_cluster",
    "group_dir",
    "group_of",
]
