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


def _ai_sdk_tool_part(part: Mapping[str, Any]) -> bool:
    part_type = part.get("type")
    return isinstance(part_type, str) and (
        part_type.startswith("tool-") or part_type == "dynamic-tool"
    )


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
            elif (
                _ai_sdk_tool_part(part)
                and isinstance(part.get("toolCallId"), str)
                and part.get("state") in ("output-available", "output-error")
            ):
                calls.add(part["toolCallId"])
                results.add(part["toolCallId"])
    return calls & results
