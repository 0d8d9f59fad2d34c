"""``fastpaca contexts list`` and ``fastpaca context show ID``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from fastpaca import ContextInfo, Fastpaca, StoredMessage

from ._console import Output, dump_json_line
from ._errors import EXIT_OK
from ._format import (
    ROLE_STYLES,
    message_text,
    policy_detail,
    policy_name,
    short,
    timestamp,
)

__all__ = ["DEFAULT_LIST_LIMIT", "DEFAULT_WINDOW_ROWS", "LIST_PAGE_SIZE", "run_list", "run_show"]

DEFAULT_LIST_LIMIT = 50
"""Contexts ``contexts list`` shows when no ``--limit`` is given."""
LIST_PAGE_SIZE = 100
"""The most contexts asked for in one ``GET /v1/contexts`` page."""
DEFAULT_WINDOW_ROWS = 50
"""Window messages ``context show`` lists (the newest) when no ``--rows`` is given."""

STATUS_STYLES = {"active": "green", "tombstoned": "red"}


def _list_contexts(args: argparse.Namespace, client: Fastpaca) -> tuple[list[ContextInfo], bool]:
    """Up to ``--limit`` contexts (all for 0), page by page; and whether more exist."""
    limit: int = args.limit
    metadata_pairs: list[tuple[str, str]] = args.metadata or []
    metadata = dict(metadata_pairs) or None
    found: list[ContextInfo] = []
    cursor: str | None = None
    while True:
        wanted = LIST_PAGE_SIZE if limit == 0 else min(LIST_PAGE_SIZE, limit - len(found))
        page = client.list_contexts(
            limit=wanted,
            cursor=cursor,
            order=args.order,
            prefix=args.prefix,
            q=args.search,
            metadata=metadata,
            status=args.status,
        )
        found.extend(page.contexts)
        if limit and len(found) >= limit:
            return found[:limit], page.has_more or len(found) > limit
        if not page.has_more or page.next_cursor is None:
            return found, False
        cursor = page.next_cursor


def run_list(args: argparse.Namespace, client: Fastpaca, output: Output) -> int:
    contexts, more = _list_contexts(args, client)
    if args.json:
        output.write_data("".join(dump_json_line(info.raw) + "\n" for info in contexts))
        return EXIT_OK
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("id", overflow="fold")
    table.add_column("status")
    table.add_column("messages", justify="right")
    table.add_column("window", justify="right")
    table.add_column("tokens", justify="right")
    table.add_column("policy")
    table.add_column("updated", no_wrap=True)
    for info in contexts:
        table.add_row(
            Text(info.id),
            Text(info.status, style=STATUS_STYLES.get(info.status, "")),
            str(info.last_seq),
            str(info.window_messages),
            f"{info.used_tokens}/{info.token_budget}",
            Text(policy_name(info.policy)),
            timestamp(info.updated_at),
        )
    if contexts:
        output.show(table)
    else:
        output.note("no contexts")
    if more:
        output.note(f"showing the first {len(contexts)}; --limit N (0 for all) shows more")
    return EXIT_OK


def _config_table(info: ContextInfo) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, str | Text]] = [
        ("id", Text(info.id)),
        ("status", Text(info.status, style=STATUS_STYLES.get(info.status, ""))),
        ("budget", f"{info.token_budget} tokens"),
        ("trigger", f"{info.trigger_ratio:g}"),
        ("policy", Text(policy_detail(info.policy))),
        ("tokenizer", info.tokenizer),
        ("metadata", Text(json.dumps(info.metadata, ensure_ascii=False))),
        ("messages", f"{info.last_seq} (last_seq)"),
        ("window", f"{info.window_messages} messages"),
        ("used tokens", f"{info.used_tokens}/{info.token_budget}"),
        ("needs compaction", "yes" if info.needs_compaction else "no"),
        ("version", str(info.version)),
        ("compactions", str(info.compactions)),
        ("last compaction", _last_compaction(info)),
        ("archived seq", str(info.archived_seq)),
        ("created", timestamp(info.created_at)),
        ("updated", timestamp(info.updated_at)),
    ]
    if info.summary_failures:
        error = info.last_summary_error or "?"
        rows.append(("summary failures", Text(f"{info.summary_failures} (last: {error})")))
    for name, value in rows:
        table.add_row(name, value)
    return table


def _last_compaction(info: ContextInfo) -> Text:
    last = info.last_compaction
    if last is None:
        return Text("-")
    return Text(f"{timestamp(last.at)} ({last.policy})")


def _window_table(messages: list[StoredMessage], used: int, budget: int, rows: int) -> Table:
    hidden = max(len(messages) - rows, 0) if rows else 0
    title = f"window: {len(messages)} messages, {used}/{budget} tokens"
    if hidden:
        title += f" (the newest {rows} shown; --rows 0 shows all)"
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
    )
    table.add_column("seq", justify="right")
    table.add_column("role")
    table.add_column("tokens", justify="right")
    table.add_column("text", overflow="fold")
    for message in messages[hidden:]:
        seq = message.get("seq")
        role = str(message.get("role", "?"))
        message_dict: dict[str, Any] = dict(message)
        table.add_row(
            str(seq) if seq is not None else "-",
            Text(role, style=ROLE_STYLES.get(role, "")),
            str(message.get("token_count", "")),
            Text(short(message_text(message_dict))),
        )
    return table


def run_show(args: argparse.Namespace, client: Fastpaca, output: Output) -> int:
    context_id: str = args.id
    ctx = client.context(context_id)
    info = ctx.get()
    if args.json:
        output.write_data(json.dumps(info.raw, ensure_ascii=False, indent=2) + "\n")
        return EXIT_OK
    window = ctx.context()
    output.show(_config_table(info))
    output.show()
    if window.messages:
        rows: int = args.rows
        table = _window_table(window.messages, window.used_tokens, window.budget_tokens, rows)
        output.show(table)
    else:
        output.show(Text("window: empty", style="dim"))
    return EXIT_OK
