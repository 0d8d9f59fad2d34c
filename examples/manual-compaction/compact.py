"""Manual compaction: the ``manual`` policy plus your own summariser.

Start a server first (``make serve``), then run::

    .venv/bin/python examples/manual-compaction/compact.py

Under the ``manual`` policy the server never drops anything from the window
by itself. Every append answers ``needs_compaction``, which turns true once
the window uses more than ``trigger_ratio x token_budget`` tokens; then it is
your turn:

1. read the window (``ctx.context()``) and its ``version``;
2. summarise the older part of it (here :func:`summarise`, a deterministic
   stand-in for a model: the first sentence of each message);
3. ``ctx.compact([system prompt, summary, *recent], if_version=version)``:
   messages read from the window keep their ``seq`` (they stay the same log
   messages); the summary has none, so it is new. If something wrote to the
   context in between, the server answers ``409 version_conflict`` and the
   loop reads the window again.

The log itself is never touched: every message stays readable with
``ctx.messages()`` / ``ctx.iter_history()``.

Settings: ``FASTPACA_URL`` (default ``http://127.0.0.1:4000``) and
``FASTPACA_API_KEY`` (only if the server was started with ``--api-key``).
"""

from __future__ import annotations

import re
import sys
import uuid
from typing import Any

from fastpaca import APIConnectionError, ConflictError, Fastpaca, FastpacaError

BUDGET = 300  # tokens; small on purpose, so a short conversation fills it
TRIGGER = 0.7  # needs_compaction once used_tokens > 0.7 x 300 = 210
KEEP_RECENT = 4  # newest messages kept verbatim (with their seq)

SUMMARY_HEADER = "Summary of the earlier conversation:"
SYSTEM = "You are a travel assistant. Answer in two sentences at most."

# A scripted conversation: (role, text). Appended in order until the server
# says the window needs compacting.
CONVERSATION: list[tuple[str, str]] = [
    ("user", "I want to visit Portugal in May. Where should I start?"),
    ("assistant", "Start in Lisbon for three days. Then take the train north to Porto."),
    ("user", "How long is the train from Lisbon to Porto? Is it scenic?"),
    ("assistant", "The Alfa Pendular takes about three hours. The coastal stretch is pretty."),
    ("user", "What should I eat in Porto? I am vegetarian."),
    ("assistant", "Try the vegetarian francesinha at a modern cafe. Port tastings are also fun."),
    ("user", "Is a day trip to the Douro valley worth it? We only have four days."),
    ("assistant", "Yes, the Douro valley is worth a day. Book a boat trip and a quinta visit."),
    ("user", "Do I need a car for the Douro? Or is there a train?"),
    ("assistant", "The Douro line runs from Porto to Pinhao. No car is needed."),
    ("user", "What about the Algarve beaches? Are they warm in May?"),
]


def text_of(message: dict[str, Any]) -> str:
    return " ".join(part["text"] for part in message["parts"] if part.get("type") == "text")


def first_sentence(text: str) -> str:
    return re.split(r"(?<=[.?!])\s", text.strip(), maxsplit=1)[0]


def is_summary(message: dict[str, Any]) -> bool:
    return "summary_of" in (message.get("metadata") or {})


def summarise(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The summariser: the first sentence of each message, with its role.

    A summary from an earlier compaction is carried over line by line, so the
    new summary covers everything that left the window. A real app would send
    ``messages`` to a model with a "summarise this" prompt; this one is
    deterministic and local (no network, no API key).
    """
    lines: list[str] = []
    covered: list[int] = []
    for message in messages:
        if is_summary(message):
            lines.extend(text_of(message).splitlines()[1:])
            covered.extend(message["metadata"]["summary_of"])
        else:
            lines.append(f"{message['role']}: {first_sentence(text_of(message))}")
            covered.append(message["seq"])
    return {
        "role": "system",
        "parts": [{"type": "text", "text": f"{SUMMARY_HEADER}\n" + "\n".join(lines)}],
        "metadata": {"summary_of": covered},
    }


def show_window(title: str, window: Any) -> None:
    print(
        f"{title}: {len(window.messages)} messages, "
        f"{window.used_tokens}/{window.budget_tokens} tokens, "
        f"needs_compaction={window.needs_compaction}, version={window.version}"
    )
    for message in window.messages:
        seq = "new" if message["seq"] is None else message["seq"]
        first = text_of(message).splitlines()[0]
        print(f"  {seq:>4} {message['role']:<9} {message['token_count']:>3}  {first}")


def compact(ctx: Any, attempts: int = 5) -> None:
    """Read the window, summarise its older part, replace the window."""
    for _ in range(attempts):
        window = ctx.context()
        show_window("window before", window)
        # The replacement is the whole new window: keep the system prompt in it.
        system = [m for m in window.messages if m["role"] == "system" and not is_summary(m)]
        rest = [m for m in window.messages if m["role"] != "system" or is_summary(m)]
        older, recent = rest[:-KEEP_RECENT], rest[-KEEP_RECENT:]
        if not older:
            print("nothing old enough to summarise")
            return
        summary = summarise(older)
        try:
            result = ctx.compact([*system, summary, *recent], if_version=window.version)
        except ConflictError as error:  # someone wrote in between: read again
            print(f"compaction refused ({error.code}), reading the window again")
            continue
        covered = summary["metadata"]["summary_of"]
        print(f"summary of {len(covered)} messages (seq {covered[0]}-{covered[-1]}):")
        for line in text_of(summary).splitlines()[1:]:
            print(f"  | {line}")
        print(
            f"compacted: window now {result.message_count} messages, {result.used_tokens} tokens, "
            f"needs_compaction={result.needs_compaction}, version={result.version}"
        )
        show_window("window after", ctx.context())
        return
    raise RuntimeError(f"could not compact after {attempts} attempts")


def main() -> int:
    context_id = f"manual-compaction-py-{uuid.uuid4().hex[:8]}"
    try:
        with Fastpaca() as client:
            print(f"Fastpaca at {client.base_url}, context {context_id}")
            ctx = client.context(context_id, budget=BUDGET, trigger=TRIGGER, policy="manual")
            ctx.append({"role": "system", "parts": [{"type": "text", "text": SYSTEM}]})
            remaining = iter(CONVERSATION)
            for role, text in remaining:
                result = ctx.append({"role": role, "parts": [{"type": "text", "text": text}]})
                print(
                    f"appended seq={result.seq:<2} {role:<9} used_tokens={result.used_tokens:<3} "
                    f"needs_compaction={result.needs_compaction}"
                )
                if result.needs_compaction:  # the cue: compact before the next model call
                    break
            else:
                print("the conversation never filled the window")
                return 1
            print()
            compact(ctx)
            print()
            # The conversation goes on in the room the compaction made.
            for role, text in remaining:
                result = ctx.append({"role": role, "parts": [{"type": "text", "text": text}]})
                print(
                    f"appended seq={result.seq:<2} {role:<9} used_tokens={result.used_tokens:<3} "
                    f"needs_compaction={result.needs_compaction}"
                )
                if result.needs_compaction:
                    compact(ctx)  # the same loop, as often as it takes
            info = ctx.get()
            print(
                f"context: last_seq={info.last_seq} (the log keeps every message), "
                f"window_messages={info.window_messages}, used_tokens={info.used_tokens}, "
                f"compactions={info.compactions}"
            )
    except APIConnectionError as error:
        print(f"cannot reach the server ({error}); start one with `make serve`")
        return 1
    except FastpacaError as error:
        print(f"the server refused a request: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
