"""``fastpaca cluster status``: the node, its leader, the members and the Raft groups."""

from __future__ import annotations

import argparse
import json

from rich import box
from rich.table import Table
from rich.text import Text

from fastpaca import Fastpaca

from ._console import Output
from ._errors import EXIT_OK

__all__ = ["run_status"]


def _yes_no(value: object) -> Text:
    if value is True:
        return Text("yes", style="green")
    if value is False:
        return Text("no", style="red")
    return Text("-" if value is None else str(value))


def _cell(value: object) -> Text:
    return Text("-" if value is None else str(value))


def run_status(args: argparse.Namespace, client: Fastpaca, output: Output) -> int:
    info = client.cluster()
    if args.json:
        output.write_data(json.dumps(info.raw, ensure_ascii=False, indent=2) + "\n")
        return EXIT_OK
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("node", _cell(info.node_id))
    summary.add_row("leader", _cell(info.leader) if info.leader else Text("none", style="red"))
    summary.add_row("ready", _yes_no(info.ready))
    summary.add_row("commit index", str(info.commit_index))
    summary.add_row("applied index", str(info.applied_index))
    output.show(summary)
    output.show()

    members = Table(
        title="members", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False
    )
    for name in ("id", "raft address", "http url", "reachable", "leader"):
        members.add_column(name)
    for member in info.members:
        members.add_row(
            _cell(member.id),
            _cell(member.raft_address),
            _cell(member.http_url),
            _yes_no(member.reachable),
            _yes_no(member.leader),
        )
    output.show(members)
    output.show()

    groups = Table(
        title="groups", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False
    )
    groups.add_column("id", justify="right")
    groups.add_column("leader")
    groups.add_column("commit index", justify="right")
    groups.add_column("applied index", justify="right")
    for group in info.groups:
        groups.add_row(
            _cell(group.get("id")),
            _cell(group.get("leader")),
            _cell(group.get("commit_index")),
            _cell(group.get("applied_index")),
        )
    output.show(groups)
    return EXIT_OK
