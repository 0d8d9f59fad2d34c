"""Fastpaca messages (UIMessage-shaped) ⇄ OpenAI Chat Completions messages, and →
Responses API input items.

Fastpaca → OpenAI:

* ``system``/``developer`` messages → that role, their text parts as content.
* ``user`` → ``user``; ``text`` parts, and ``file`` parts (ai-sdk ``{"type": "file",
  "mediaType", "url"}``) as ``image_url`` (images) or ``file`` (PDFs as data URLs).
* ``assistant`` → ``assistant`` with its text as ``content`` and its ``tool_call``
  parts as ``tool_calls`` (``payload`` → JSON ``arguments``).
* ``tool_result`` parts (in any message, usually role ``tool``) → one ``tool``
  message each (``payload`` → ``content``; a non-string payload as JSON).
* ai-sdk ``tool-<name>`` / ``dynamic-tool`` parts with an output → the call and
  its ``tool`` message.
* Calls and results that do not pair up inside the list are left out (OpenAI
  refuses both); so are parts with no Chat Completions equivalent (``reasoning``,
  ``step-start``, your own types).

OpenAI → Fastpaca (:func:`from_openai_messages`) is the inverse for text, images,
tool calls (``arguments`` parsed into ``payload``) and ``tool`` messages (their
content kept as the ``payload`` string). A message's ``name`` is not kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, cast

from fastpaca import (
    Message,
    ai_sdk_tool,
    paired_tool_call_ids,
    parse_tool_arguments,
    part_payload,
    to_plain,
)
from openai.types.chat import ChatCompletionMessageParam
from openai.types.responses import ResponseInputItemParam

__all__ = ["from_openai_messages", "to_openai_messages", "to_responses_input"]

_INSTRUCTION_ROLES = ("system", "developer")


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _texts(parts: Iterable[Mapping[str, Any]]) -> list[str]:
    return [
        part["text"]
        for part in parts
        if part.get("type") == "text" and isinstance(part.get("text"), str)
    ]


def _text_content(texts: list[str]) -> str | list[dict[str, Any]]:
    if len(texts) == 1:
        return texts[0]
    return [{"type": "text", "text": text} for text in texts]


def _file_to_chat_part(part: Mapping[str, Any]) -> dict[str, Any] | None:
    url = part.get("url")
    media_type = str(part.get("mediaType") or part.get("media_type") or "")
    if not isinstance(url, str):
        return None
    if media_type.startswith("image/") or (not media_type and url.startswith("data:image/")):
        return {"type": "image_url", "image_url": {"url": url}}
    if url.startswith("data:"):
        file: dict[str, Any] = {"file_data": url}
        if isinstance(part.get("filename"), str):
            file["filename"] = part["filename"]
        return {"type": "file", "file": file}
    return None


def _user_content(parts: list[Mapping[str, Any]]) -> str | list[dict[str, Any]] | None:
    items: list[dict[str, Any]] = []
    for part in parts:
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            items.append({"type": "text", "text": part["text"]})
        elif part.get("type") == "file":
            converted = _file_to_chat_part(part)
            if converted is not None:
                items.append(converted)
    if not items:
        return None
    if all(item["type"] == "text" for item in items):
        return _text_content([item["text"] for item in items])
    return items


def _ai_sdk_tool_output(part: Mapping[str, Any]) -> Any:
    if part.get("state") == "output-error":
        return part.get("errorText", "error")
    return part.get("output")


def to_openai_messages(
    messages: Iterable[Mapping[str, Any]],
) -> list[ChatCompletionMessageParam]:
    """Chat Completions ``messages`` for a Fastpaca window (see the module docstring)."""
    messages = list(messages)
    paired = paired_tool_call_ids(messages)
    result: list[dict[str, Any]] = []
    for message in messages:
        role = str(message["role"])
        parts: list[Mapping[str, Any]] = list(message.get("parts") or ())
        tool_messages: list[dict[str, Any]] = []
        for part in parts:
            if part.get("type") == "tool_result" and part.get("tool_call_id") in paired:
                tool_messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": part["tool_call_id"],
                        "content": _json_text(part_payload(part)),
                    }
                )
        if role in _INSTRUCTION_ROLES:
            result.append({"role": role, "content": "\n\n".join(_texts(parts))})
        elif role == "assistant":
            texts = _texts(parts)
            tool_calls: list[dict[str, Any]] = []
            for part in parts:
                call: tuple[str, str] | None = None
                if part.get("type") == "tool_call" and part.get("id") in paired:
                    call = (part["id"], str(part.get("name")))
                    arguments = part_payload(part)
                else:
                    call = ai_sdk_tool(part)
                    if call is not None and call[0] in paired:
                        arguments = part.get("input")
                        tool_messages.append(
                            {
                                "role": "tool",
                                "tool_call_id": call[0],
                                "content": _json_text(_ai_sdk_tool_output(part)),
                            }
                        )
                    else:
                        call = None
                if call is not None:
                    tool_calls.append(
                        {
                            "id": call[0],
                            "type": "function",
                            "function": {
                                "name": call[1],
                                "arguments": _json_text({} if arguments is None else arguments),
                            },
                        }
                    )
            if texts or tool_calls:
                assistant: dict[str, Any] = {
                    "role": "assistant",
                    "content": _text_content(texts) if texts else None,
                }
                if tool_calls:
                    assistant["tool_calls"] = tool_calls
                result.append(assistant)
        elif role != "tool":
            # Results answer the previous assistant turn, so they go before this
            # message's own content (Anthropic-style histories put them in a user turn).
            result.extend(tool_messages)
            tool_messages = []
            content = _user_content(parts)
            if content is not None:
                result.append({"role": role, "content": content})
        result.extend(tool_messages)
    return cast(list[ChatCompletionMessageParam], result)


def _content_to_parts(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for item in content:
        item = to_plain(item)
        item_type = item.get("type")
        if item_type == "text":
            parts.append({"type": "text", "text": item.get("text", "")})
        elif item_type == "refusal":
            parts.append({"type": "text", "text": item.get("refusal", "")})
        elif item_type == "image_url":
            url = to_plain(item.get("image_url") or {}).get("url")
            media_type = "image/*"
            if isinstance(url, str) and url.startswith("data:"):
                media_type = url[5:].split(";", 1)[0] or media_type
            parts.append({"type": "file", "mediaType": media_type, "url": url})
        elif item_type == "file":
            file = to_plain(item.get("file") or {})
            if isinstance(file.get("file_data"), str):
                data = file["file_data"]
                media_type = data[5:].split(";", 1)[0] if data.startswith("data:") else ""
                part: dict[str, Any] = {
                    "type": "file",
                    "mediaType": media_type or "application/octet-stream",
                    "url": data,
                }
                if isinstance(file.get("filename"), str):
                    part["filename"] = file["filename"]
                parts.append(part)
    return parts


def from_openai_messages(messages: Iterable[Any]) -> list[Message]:
    """Fastpaca messages for Chat Completions messages (dicts or the client's models,
    e.g. ``completion.choices[0].message``), ready for ``ctx.append_many``."""
    result: list[Message] = []
    for raw in messages:
        message = to_plain(raw)
        role = message.get("role")
        if role == "function":
            raise ValueError(
                "legacy 'function' messages have no tool call id; use tool calls instead"
            )
        if not isinstance(role, str):
            raise ValueError(f"an OpenAI message without a role: {message!r}")
        if role == "tool":
            content = message.get("content")
            if not isinstance(content, str):
                content = "".join(part["text"] for part in _content_to_parts(content))
            parts: list[dict[str, Any]] = [
                {
                    "type": "tool_result",
                    "tool_call_id": str(message.get("tool_call_id")),
                    "payload": content,
                }
            ]
        else:
            parts = _content_to_parts(message.get("content"))
            if role == "assistant":
                if isinstance(message.get("refusal"), str) and not parts:
                    parts.append({"type": "text", "text": message["refusal"]})
                for call in message.get("tool_calls") or ():
                    call = to_plain(call)
                    function = to_plain(call.get("function") or {})
                    parts.append(
                        {
                            "type": "tool_call",
                            "id": call.get("id"),
                            "name": function.get("name"),
                            "payload": parse_tool_arguments(function.get("arguments") or ""),
                        }
                    )
        if not parts:
            parts = [{"type": "text", "text": ""}]
        result.append({"role": role, "parts": parts})
    return result


def to_responses_input(messages: Iterable[Mapping[str, Any]]) -> list[ResponseInputItemParam]:
    """Responses API ``input`` items for a Fastpaca window: role messages with their
    text (and images for users), ``function_call`` and ``function_call_output`` items
    for tool calls and results that pair up."""
    messages = list(messages)
    paired = paired_tool_call_ids(messages)
    items: list[dict[str, Any]] = []
    for message in messages:
        role = str(message["role"])
        parts: list[Mapping[str, Any]] = list(message.get("parts") or ())
        outputs: list[dict[str, Any]] = []
        content: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        for part in parts:
            part_type = part.get("type")
            if part_type == "text" and isinstance(part.get("text"), str):
                kind = "output_text" if role == "assistant" else "input_text"
                content.append({"type": kind, "text": part["text"]})
            elif part_type == "file" and role != "assistant":
                converted = _file_to_chat_part(part)
                if converted is not None and converted["type"] == "image_url":
                    image = {"type": "input_image", "image_url": converted["image_url"]["url"]}
                    content.append(image)
            elif part_type == "tool_call" and part.get("id") in paired:
                calls.append(
                    {
                        "type": "function_call",
                        "call_id": part["id"],
                        "name": str(part.get("name")),
                        "arguments": _json_text(part_payload(part) or {}),
                    }
                )
            elif part_type == "tool_result" and part.get("tool_call_id") in paired:
                outputs.append(
                    {
                        "type": "function_call_output",
                        "call_id": part["tool_call_id"],
                        "output": _json_text(part_payload(part)),
                    }
                )
            else:
                call = ai_sdk_tool(part)
                if call is not None and call[0] in paired:
                    calls.append(
                        {
                            "type": "function_call",
                            "call_id": call[0],
                            "name": call[1],
                            "arguments": _json_text(part.get("input") or {}),
                        }
                    )
                    outputs.append(
                        {
                            "type": "function_call_output",
                            "call_id": call[0],
                            "output": _json_text(_ai_sdk_tool_output(part)),
                        }
                    )
        if content and role != "tool":
            if all(item["type"] in ("input_text", "output_text") for item in content):
                items.append({"role": role, "content": "\n\n".join(i["text"] for i in content)})
            else:
                items.append({"role": role, "content": content})
        items.extend(calls)
        items.extend(outputs)
    return cast(list[ResponseInputItemParam], items)
