"""``fastpaca window ID``: the LLM window (what the model is sent) as pretty JSON."""

from __future__ import annotations

import argparse
import json

from fastpaca import Fastpaca

from ._console import Output
from ._errors import EXIT_OK

__all__ = ["run_window"]


def run_window(args: argparse.Namespace, client: Fastpaca, output: Output) -> int:
    """Print the server's answer to ``GET …/context`` (``?format=``, ``?budget_tokens=``),
    every field in the server's order, indented; nothing but JSON on stdout."""
    context_id: str = args.id
    budget: int | None = args.budget
    ctx = client.context(context_id)
    raw = (
        ctx.context(budget_tokens=budget, format="openai").raw
        if args.format == "openai"
        else ctx.context(budget_tokens=budget, format="anthropic").raw
        if args.format == "anthropic"
        else ctx.context(budget_tokens=budget).raw
    )
    output.write_data(json.dumps(raw, ensure_ascii=False, indent=2) + "\n")
    return EXIT_OK
