"""Fastpaca messages (UIMessage-shaped) ⇄ LangChain messages.

* ``system``/``developer`` ⇄ :class:`SystemMessage`; ``user`` ⇄ :class:`HumanMessage`
  (text, and images as ``image_url`` blocks ⇄ ai-sdk ``file`` parts).
* ``assistant`` ⇄ :class:`AIMessage`: text as ``content``, ``tool_call`` parts ⇄
  ``tool_calls`` (``payload`` ⇄ ``args``), ``reasoning`` parts ⇄ ``reasoning``
  content blocks. An ``AIMessage``'s ``usage_metadata["output_tokens"]`` becomes
  the stored message's ``token_count``.
* ``tool_result`` parts ⇄ :class:`ToolMessage` (one per result).
* Going to LangChain, calls and results that do not pair up inside the list are
  left out (model providers refuse them), and the Fastpaca message ``id`` becomes
  the LangChain message ``id``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastpaca import Message, paired_tool_call_ids, parse_tool_arguments, part_payload
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)

__all__ = ["ai_message_parts", "from_langchain_messages", "to_langchain_messages"]


def _texts(parts: Iterable[Mapping[str, Any]]) -> list[str]:
    return [
        part["text"]
        for part in parts
        if part.get("type") == "text" and isinstance(part.get("text"), str)
    ]


def _result_content(payload: Any) -> str:
    return payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)


def _tool_args(payload: Any) -> dict[str, Any]:
    if payload is None:
        return {}
    if isinstance(payload, Mapping):
        return dict(payload)
    return {"input": payload}


def _human_content(parts: list[Mapping[str, Any]]) -> str | list[str | dict[str, Any]]:
    blocks: list[str | dict[str, Any]] = []
    for part in parts:
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            blocks.append({"type": "text", "text": part["text"]})
        elif part.get("type") == "file" and isinstance(part.get("url"), str):
            media_type = str(part.get("mediaType") or "")
            if media_type.startswith("image/") or part["url"].startswith("data:image/"):
                blocks.append({"type": "image_url", "image_url": {"url": part["url"]}})
    if all(isinstance(block, dict) and block["type"] == "text" for block in blocks):
        return "\n\n".join(_texts(parts))
    return blocks


def to_langchain_messages(messages: Iterable[Mapping[str, Any]]) -> list[BaseMessage]:
    """LangChain messages for a Fastpaca window (see the module docstring)."""
    messages = list(messages)
    paired = paired_tool_call_ids(messages)
    result: list[BaseMessage] = []
    for message in messages:
        role = str(message["role"])
        parts: list[Mapping[str, Any]] = list(message.get("parts") or ())
        message_id = message.get("id") if isinstance(message.get("id"), str) else None
        tool_messages: list[BaseMessage] = [
            ToolMessage(
                content=_result_content(part_payload(part)),
                tool_call_id=part["tool_call_id"],
                status="error" if part.get("is_error") is True else "success",
            )
            for part in parts
            if part.get("type") == "tool_result" and part.get("tool_call_id") in paired
        ]
        if role in ("system", "developer"):
            result.extend(tool_messages)
            result.append(SystemMessage(content="\n\n".join(_texts(parts)), id=message_id))
            continue
        if role == "assistant":
            tool_calls = [
                ToolCall(
                    name=str(part.get("name")),
                    args=_tool_args(part_payload(part)),
                    id=part["id"],
                    type="tool_call",
                )
                for part in parts
                if part.get("type") == "tool_call" and part.get("id") in paired
            ]
            reasoning = [
                {"type": "reasoning", "reasoning": part["text"]}
                for part in parts
                if part.get("type") == "reasoning" and part.get("text")
            ]
            text = "".join(_texts(parts))
            content: str | list[str | dict[str, Any]] = text
            if reasoning:
                content = [*reasoning, *([{"type": "text", "text": text}] if text else [])]
            result.append(AIMessage(content=content, tool_calls=tool_calls, id=message_id))
            result.extend(tool_messages)
            continue
        result.extend(tool_messages)
        if role == "tool":
            continue
        human = _human_content(parts)
        if role == "user":
            result.append(HumanMessage(content=human, id=message_id))
        else:
            result.append(ChatMessage(role=role, content=human, id=message_id))
    return result


def _content_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for block in content or ():
        if isinstance(block, str):
            if block:
                parts.append({"type": "text", "text": block})
            continue
        block_type = block.get("type")
        if block_type == "text" and block.get("text"):
            parts.append({"type": "text", "text": block["text"]})
        elif block_type == "reasoning":
            text = block.get("reasoning") or block.get("text") or ""
            if text:
                parts.append({"type": "reasoning", "text": text})
        elif block_type == "thinking":
            part: dict[str, Any] = {"type": "reasoning", "text": block.get("thinking", "")}
            if block.get("signature"):
                part["provider_metadata"] = {"anthropic": {"signature": block["signature"]}}
            parts.append(part)
        elif block_type == "image_url":
            url = (block.get("image_url") or {}).get("url")
            if isinstance(url, str):
                media_type = url[5:].split(";", 1)[0] if url.startswith("data:") else "image/*"
                parts.append({"type": "file", "mediaType": media_type, "url": url})
        elif block_type == "image" and isinstance(block.get("url"), str):
            media_type = str(block.get("mime_type") or "image/*")
            parts.append({"type": "file", "mediaType": media_type, "url": block["url"]})
    return parts


def ai_message_parts(message: AIMessage) -> list[dict[str, Any]]:
    """The parts of an :class:`AIMessage` (or an aggregated chunk): reasoning and text
    from its content (and ``additional_kwargs["reasoning_content"]``), then its tool
    calls; arguments that did not parse (``invalid_tool_calls``) are kept as text."""
    parts = _content_parts(message.content)
    reasoning_content = message.additional_kwargs.get("reasoning_content")
    has_reasoning = any(part["type"] == "reasoning" for part in parts)
    if isinstance(reasoning_content, str) and reasoning_content and not has_reasoning:
        parts.insert(0, {"type": "reasoning", "text": reasoning_content})
    for call in message.tool_calls:
        part: dict[str, Any] = {"type": "tool_call"}
        if call.get("id"):
            part["id"] = call["id"]
        part["name"] = call["name"]
        part["payload"] = call["args"]
        parts.append(part)
    for invalid in message.invalid_tool_calls:
        if not invalid.get("name"):
            continue
        part = {"type": "tool_call"}
        if invalid.get("id"):
            part["id"] = invalid["id"]
        part["name"] = invalid["name"]
        part["payload"] = parse_tool_arguments(invalid.get("args") or "")
        parts.append(part)
    return parts


def _output_tokens(message: AIMessage) -> int | None:
    usage = message.usage_metadata
    if usage is None:
        return None
    value = usage.get("output_tokens")
    return value if isinstance(value, int) else None


def from_langchain_messages(messages: Sequence[BaseMessage]) -> list[Message]:
    """Fastpaca messages for LangChain messages, ready for ``ctx.append_many``."""
    result: list[Message] = []
    for message in messages:
        converted: Message
        if isinstance(message, AIMessage):
            parts = ai_message_parts(message)
            converted = {"role": "assistant", "parts": parts or [{"type": "text", "text": ""}]}
            count = _output_tokens(message)
            if count is not None:
                converted["token_count"] = count
        elif isinstance(message, ToolMessage):
            content = message.content
            payload = (
                content if isinstance(content, str) else "".join(_texts(_content_parts(content)))
            )
            part: dict[str, Any] = {
                "type": "tool_result",
                "tool_call_id": message.tool_call_id,
                "payload": payload,
            }
            if message.status == "error":
                part["is_error"] = True
            converted = {"role": "tool", "parts": [part]}
        else:
            if isinstance(message, SystemMessage):
                role = "system"
            elif isinstance(message, HumanMessage):
                role = "user"
            elif isinstance(message, ChatMessage):
                role = message.role
            else:
                raise TypeError(f"cannot store a {type(message).__name__} in Fastpaca")
            parts = _content_parts(message.content)
            converted = {"role": role, "parts": parts or [{"type": "text", "text": ""}]}
        if message.id:
            converted["id"] = message.id
        result.append(converted)
    return result
