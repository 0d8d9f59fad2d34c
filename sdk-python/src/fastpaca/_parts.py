"""Small provider-neutral helpers over message parts, for converters and accumulators.

A window may hold a tool call whose result is not there yet (the app stopped
between the call and the result) or, after a manual compaction, a result whose
call was dropped. Model providers refuse both, so converters keep only calls and
results that pair up: :func:`paired_tool_call_ids`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["field_of", "paired_tool_call_ids", "part_payload", "to_plain"]


def field_of(value: Any, name: str, default: Any = None) -> Any:
    """``value[name]`` for a mapping, ``value.name`` otherwise (SDK models, dicts alike)."""
    if isinstance(value, Mapping):
        return value.get(name, default)
    return getattr(value, name, default)


def to_plain(value: Any) -> dict[str, Any]:
    """A mapping or a pydantic model (``model_dump``) as a plain dict."""
    if isinstance(value, Mapping):
        return dict(value)
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        result = dump(exclude_none=True)
        if isinstance(result, dict):
            return result
    raise TypeError(f"expected a mapping or a pydantic model, not {type(value).__name__}")


def part_payload(part: Mapping[str, Any]) -> Any:
    """A tool call's arguments or a tool result's content: ``payload`` by convention
    (``input``/``output`` as ai-sdk names them, ``args``/``result`` as some apps do)."""
    for name in ("payload", "input", "output", "args", "result"):
        if name in part:
            return part[name]
    return None


def ai_sdk_tool(part: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(call id, tool name)`` of an ai-sdk ``tool-<name>`` or ``dynamic-tool`` part
    (one part holding a call and, once it ran, its output), else ``None``."""
    part_type = part.get("type")
    call_id = part.get("toolCallId")
    if not isinstance(part_type, str) or not isinstance(call_id, str):
        return None
    if part_type == "dynamic-tool" and isinstance(part.get("toolName"), str):
        return call_id, part["toolName"]
    if part_type.startswith("tool-"):
        return call_id, part_type.removeprefix("tool-")
    return None


def paired_tool_call_ids(messages: Iterable[Mapping[str, Any]]) -> set[str]:
    """Ids of tool calls that have both a ``tool_call`` part and a ``tool_result`` part
    in ``messages`` (ai-sdk ``tool-<name>`` parts with an output pair by themselves)."""
    calls: set[str] = set()
    results: set[str] = set()
    for message in messages:
        for part in message.get("parts") or ():
            part_type = part.get("type")
            if part_type == "tool_call" and isinstance(part.get("id"), str):
                calls.add(part["id"])
            elif part_type == "tool_result" and isinstance(part.get("tool_call_id"), str):
                results.add(part["tool_call_id"])
            elif ai_sdk_tool(part) is not None and part.get("state") in (
                "output-available",
                "output-error",
            ):
                calls.add(part["toolCallId"])
                results.add(part["toolCallId"])
    return calls & results
