"""How messages, policies and times are shown in tables and lines."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rich.text import Text

__all__ = [
    "ROLE_STYLES",
    "message_line",
    "message_text",
    "policy_name",
    "short",
    "timestamp",
]

ROLE_STYLES = {"system": "magenta", "user": "cyan", "assistant": "green", "tool": "yellow"}


def _part_text(part: Any) -> str:
    if not isinstance(part, Mapping):
        return "[?]"
    kind = part.get("type")
    if kind == "text" and isinstance(part.get("text"), str):
        return str(part["text"])
    if kind == "tool_call":
        return f"[tool_call {part.get('name', '?')}]"
    if kind == "tool_result":
        return f"[tool_result {part.get('tool_call_id', '?')}]"
    if kind == "reasoning" and isinstance(part.get("text"), str):
        return f"[reasoning] {part['text']}"
    return f"[{kind}]"


def message_text(message: Mapping[str, Any]) -> str:
    """A message's parts as one line: text parts as they are (line breaks shown as
    ``\\n``), other parts as ``[tool_call name]``, ``[tool_result id]``, ``[type]``."""
    parts = message.get("parts")
    pieces = [_part_text(part) for part in parts] if isinstance(parts, list) else []
    text = " ".join(piece for piece in pieces if piece)
    return text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n")


def short(text: str, length: int = 60) -> str:
    """``text`` cut to ``length`` characters (with ``…`` when cut)."""
    return text if len(text) <= length else text[: length - 1] + "…"


def message_line(message: Mapping[str, Any]) -> Text:
    """``seq role text`` for ``tail``: one line per message."""
    seq = message.get("seq")
    role = str(message.get("role", "?"))
    line = Text(f"{seq if seq is not None else '-':>6} ", style="dim")
    line.append(f"{role:<9}", style=ROLE_STYLES.get(role, "bold"))
    line.append(" ")
    line.append(message_text(message))
    return line


def policy_name(policy: Mapping[str, Any]) -> str:
    """A policy's strategy (``last_n``)."""
    return str(policy.get("strategy", "?"))


def policy_detail(policy: Mapping[str, Any]) -> str:
    """A policy's strategy and config: ``last_n {"limit":200}``."""
    config = policy.get("config")
    if not config:
        return policy_name(policy)
    return f"{policy_name(policy)} {json.dumps(config, ensure_ascii=False, separators=(',', ':'))}"


def timestamp(value: str | None) -> str:
    """An RFC 3339 time as ``2026-11-21 21:52:42`` (UTC); ``-`` for none."""
    if not value:
        return "-"
    text = value.replace("T", " ").removesuffix("Z")
    return text.split(".", 1)[0]
