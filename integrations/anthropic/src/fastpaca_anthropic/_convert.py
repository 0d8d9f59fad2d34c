"""Fastpaca messages (UIMessage-shaped) ⇄ Anthropic Messages API ``system`` + ``messages``.

Fastpaca → Anthropic (:func:`to_anthropic_messages`):

* ``system``/``developer`` messages → the ``system`` text (joined by blank lines).
* ``user`` → a user turn of ``text`` blocks, and ``image``/``document`` blocks for
  ai-sdk ``file`` parts (data URLs become base64 sources, others URL sources).
* ``assistant`` → an assistant turn: ``reasoning`` parts that carry Anthropic's
  signature become ``thinking`` blocks (``redacted_thinking`` for redacted ones;
  reasoning without a signature is left out, the API would refuse it), ``text``
  blocks, and ``tool_call`` parts as ``tool_use`` blocks (``payload`` → ``input``;
  a payload that is not an object is wrapped as ``{"input": payload}``).
* ``tool_result`` parts (usually in ``tool`` messages) → ``tool_result`` blocks in
  the user turn after the call, ahead of any other content of that turn.
* Calls and results are kept only when both are in the list, so every
  ``tool_use`` has its ``tool_result`` and the reverse. Consecutive turns of one
  role are merged; empty text blocks and empty turns are left out.

Reasoning parts store Anthropic's data under ``provider_metadata.anthropic``
(``signature`` or ``redacted_data``), so a thinking block goes back byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, NotRequired, TypedDict, cast

from anthropic.types import MessageParam
from fastpaca import Message, ai_sdk_tool, paired_tool_call_ids, part_payload, to_plain

__all__ = ["AnthropicRequest", "from_anthropic_messages", "to_anthropic_messages"]


class AnthropicRequest(TypedDict):
    """``messages`` (and ``system`` when the window has one) for ``messages.create(**…)``."""

    messages: list[MessageParam]
    system: NotRequired[str]


def _anthropic_metadata(part: Mapping[str, Any]) -> dict[str, Any]:
    provider = part.get("provider_metadata")
    if isinstance(provider, Mapping) and isinstance(provider.get("anthropic"), Mapping):
        return dict(provider["anthropic"])
    return {}


def _source(url: str, media_type: str) -> dict[str, Any]:
    if url.startswith("data:") and ";base64," in url:
        header, data = url[5:].split(";base64,", 1)
        return {"type": "base64", "media_type": header or media_type, "data": data}
    return {"type": "url", "url": url}


def _file_block(part: Mapping[str, Any]) -> dict[str, Any] | None:
    url = part.get("url")
    if not isinstance(url, str):
        return None
    media_type = str(part.get("mediaType") or part.get("media_type") or "")
    if not media_type and url.startswith("data:"):
        media_type = url[5:].split(";", 1)[0]
    if media_type.startswith("image/"):
        return {"type": "image", "source": _source(url, media_type)}
    if media_type == "application/pdf":
        return {"type": "document", "source": _source(url, media_type)}
    return None


def _tool_input(payload: Any) -> dict[str, Any]:
    if payload is None:
        return {}
    if isinstance(payload, Mapping):
        return dict(payload)
    return {"input": payload}


def _result_content(payload: Any) -> str:
    return payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)


def _assistant_blocks(
    parts: list[Mapping[str, Any]], paired: set[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """An assistant message's blocks, and the tool results its ai-sdk tool parts hold."""
    blocks: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for part in parts:
        part_type = part.get("type")
        if part_type == "reasoning":
            metadata = _anthropic_metadata(part)
            if isinstance(metadata.get("signature"), str):
                blocks.append(
                    {
                        "type": "thinking",
                        "thinking": str(part.get("text", "")),
                        "signature": metadata["signature"],
                    }
                )
            elif isinstance(metadata.get("redacted_data"), str):
                blocks.append({"type": "redacted_thinking", "data": metadata["redacted_data"]})
        elif part_type == "text" and part.get("text"):
            blocks.append({"type": "text", "text": part["text"]})
        elif part_type == "tool_call" and part.get("id") in paired:
            blocks.append(
                {
                    "type": "tool_use",
                    "id": part["id"],
                    "name": str(part.get("name")),
                    "input": _tool_input(part_payload(part)),
                }
            )
        else:
            call = ai_sdk_tool(part)
            if call is not None and call[0] in paired:
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call[0],
                        "name": call[1],
                        "input": _tool_input(part.get("input")),
                    }
                )
                error = part.get("state") == "output-error"
                output = part.get("errorText", "error") if error else part.get("output")
                result: dict[str, Any] = {
                    "type": "tool_result",
                    "tool_use_id": call[0],
                    "content": _result_content(output),
                }
                if error:
                    result["is_error"] = True
                results.append(result)
    return blocks, results


def _user_blocks(parts: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in parts:
        if part.get("type") == "text" and part.get("text"):
            blocks.append({"type": "text", "text": part["text"]})
        elif part.get("type") == "file":
            block = _file_block(part)
            if block is not None:
                blocks.append(block)
    return blocks


def _add_turn(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": list(blocks)})
    if role == "user":
        content = turns[-1]["content"]
        # tool_result blocks must open the user turn that answers the calls.
        content.sort(key=lambda block: block.get("type") != "tool_result")


def to_anthropic_messages(messages: Iterable[Mapping[str, Any]]) -> AnthropicRequest:
    """``{"system": …, "messages": […]}`` for a Fastpaca window (see the module
    docstring); ``system`` is present only when the window has a system message, so
    ``client.messages.create(model=…, max_tokens=…, **to_anthropic_messages(window))``
    works either way."""
    messages = list(messages)
    paired = paired_tool_call_ids(messages)
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = str(message["role"])
        parts: list[Mapping[str, Any]] = list(message.get("parts") or ())
        results = [
            {
                "type": "tool_result",
                "tool_use_id": part["tool_call_id"],
                "content": _result_content(part_payload(part)),
                **({"is_error": True} if part.get("is_error") is True else {}),
            }
            for part in parts
            if part.get("type") == "tool_result" and part.get("tool_call_id") in paired
        ]
        if role in ("system", "developer"):
            system.extend(
                part["text"] for part in parts if part.get("type") == "text" and part.get("text")
            )
            _add_turn(turns, "user", results)
        elif role == "assistant":
            blocks, own_results = _assistant_blocks(parts, paired)
            _add_turn(turns, "assistant", blocks)
            _add_turn(turns, "user", own_results + results)
        else:
            _add_turn(turns, "user", results + _user_blocks(parts))
    request: AnthropicRequest = {"messages": cast(list[MessageParam], turns)}
    if system:
        request["system"] = "\n\n".join(system)
    return request


def _data_url(source: Mapping[str, Any]) -> tuple[str, str] | None:
    if source.get("type") == "base64":
        media_type = str(source.get("media_type", "application/octet-stream"))
        return f"data:{media_type};base64,{source.get('data', '')}", media_type
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return source["url"], ""
    return None


def _result_text(content: Any) -> Any:
    if content is None or isinstance(content, str):
        return content or ""
    texts = [to_plain(block).get("text", "") for block in content]
    return "".join(str(text) for text in texts)


def from_anthropic_messages(messages: Iterable[Any], system: Any = None) -> list[Message]:
    """Fastpaca messages for Anthropic ``messages`` (dicts or the client's models, e.g.
    a response ``Message``) and an optional ``system``, ready for ``ctx.append_many``.

    A user turn's ``tool_result`` blocks become a ``tool`` message (``tool_result``
    parts) ahead of the rest of the turn; ``thinking`` blocks become ``reasoning``
    parts with their signature.
    """
    result: list[Message] = []
    if system:
        text = system if isinstance(system, str) else _result_text(system)
        result.append({"role": "system", "parts": [{"type": "text", "text": text}]})
    for raw in messages:
        message = to_plain(raw)
        role = str(message.get("role"))
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        parts: list[dict[str, Any]] = []
        tool_parts: list[dict[str, Any]] = []
        for raw_block in blocks:
            block = to_plain(raw_block)
            block_type = block.get("type")
            if block_type == "text":
                parts.append({"type": "text", "text": block.get("text", "")})
            elif block_type == "thinking":
                parts.append(
                    {
                        "type": "reasoning",
                        "text": block.get("thinking", ""),
                        "provider_metadata": {"anthropic": {"signature": block.get("signature")}},
                    }
                )
            elif block_type == "redacted_thinking":
                parts.append(
                    {
                        "type": "reasoning",
                        "text": "",
                        "provider_metadata": {"anthropic": {"redacted_data": block.get("data")}},
                    }
                )
            elif block_type == "tool_use":
                parts.append(
                    {
                        "type": "tool_call",
                        "id": block.get("id"),
                        "name": block.get("name"),
                        "payload": block.get("input", {}),
                    }
                )
            elif block_type == "tool_result":
                tool_part: dict[str, Any] = {
                    "type": "tool_result",
                    "tool_call_id": block.get("tool_use_id"),
                    "payload": _result_text(block.get("content")),
                }
                if block.get("is_error"):
                    tool_part["is_error"] = True
                tool_parts.append(tool_part)
            elif block_type in ("image", "document"):
                converted = _data_url(to_plain(block.get("source") or {}))
                if converted is not None:
                    url, media_type = converted
                    fallback = "image/*" if block_type == "image" else "application/pdf"
                    parts.append({"type": "file", "mediaType": media_type or fallback, "url": url})
        if tool_parts:
            result.append({"role": "tool", "parts": tool_parts})
        if parts or not tool_parts:
            result.append({"role": role, "parts": parts or [{"type": "text", "text": ""}]})
    return result
