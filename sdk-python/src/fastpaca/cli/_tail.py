"""``fastpaca tail ID [-n N] [-f]``: the newest messages, then (``-f``) the new ones live."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping
from typing import Any

from fastpaca import (
    APIConnectionError,
    Context,
    Fastpaca,
    ServiceUnavailableError,
    StoredMessage,
)

from ._console import Output
from ._errors import EXIT_OK
from ._format import message_line

__all__ = ["DEFAULT_LINES", "follow", "newest", "run_tail"]

DEFAULT_LINES = 20
PAGE = 1000
"""The server's largest page (``tail``, ``messages``)."""
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0)
"""Waits between reconnections of ``-f`` after the SDK gave up (then 5 s each time)."""

Printer = Callable[[Mapping[str, Any]], None]


def newest(ctx: Context, count: int) -> list[StoredMessage]:
    """The newest ``count`` messages, oldest first (older pages read by seq range, so
    messages appended meanwhile do not shift them)."""
    if count == 0:
        return []
    messages = list(ctx.tail(limit=min(count, PAGE)))
    while len(messages) < count and messages:
        first = messages[0]["seq"]
        if first is None or first <= 1:
            break
        want = min(count - len(messages), PAGE)
        older = ctx.messages(after_seq=max(first - 1 - want, 0), before_seq=first, limit=want)
        if not older:
            break
        messages[:0] = list(older)
    return messages


def follow(
    ctx: Context,
    *,
    cursor: int,
    last_seq: int,
    show: Printer,
    output: Output,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print every message with a seq above ``last_seq`` as it arrives, from the context's
    event feed after version ``cursor``, until the context is tombstoned.

    The SDK's iterator resumes a dropped feed itself; when it gives up (the server is
    down for longer) this reconnects from the last whole version, forever, with a note
    on stderr. A ``gap`` (the server no longer keeps the versions after ``cursor``) is
    filled by reading the messages after ``last_seq``.
    """
    outage = 0
    while True:
        try:
            for event in ctx.events(cursor=cursor):
                outage = 0
                if event.type == "message":
                    seq = event.data.get("seq")
                    message = event.data.get("message")
                    if isinstance(seq, int) and seq > last_seq and isinstance(message, dict):
                        show(message)
                        last_seq = seq
                elif event.type == "gap":
                    for message in ctx.iter_history(after_seq=last_seq):
                        show(message)
                        last_seq = message["seq"] or last_seq
                elif event.type == "tombstoned":
                    output.note(f"context {ctx.id!r} was deleted (tombstoned)")
                if event.type not in ("message", "compaction_record"):
                    cursor = event.version
            return EXIT_OK  # the feed ends only after "tombstoned"
        except (APIConnectionError, ServiceUnavailableError) as error:
            if not outage:
                output.note(f"lost the event feed ({error}); reconnecting…")
            sleep(RECONNECT_DELAYS[min(outage, len(RECONNECT_DELAYS) - 1)])
            outage += 1


def run_tail(args: argparse.Namespace, client: Fastpaca, output: Output) -> int:
    context_id: str = args.id
    count: int = args.lines
    ctx = client.context(context_id)
    info = ctx.get()  # its version is where following starts (nothing is missed)

    def show(message: Mapping[str, Any]) -> None:
        output.out.print(message_line(message), soft_wrap=True)
        output.stdout.flush()

    messages = newest(ctx, count)
    for message in messages:
        show(message)
    if not args.follow:
        return EXIT_OK
    if info.status == "tombstoned":
        output.note(f"context {context_id!r} is tombstoned: nothing more will come")
        return EXIT_OK
    seen = max([info.last_seq, *(m["seq"] or 0 for m in messages)])
    try:
        return follow(ctx, cursor=info.version, last_seq=seen, show=show, output=output)
    except KeyboardInterrupt:
        return EXIT_OK
