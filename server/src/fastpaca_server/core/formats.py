"""A window (UIMessage-shaped messages) as a model provider's request messages.

``GET …/context?format=openai|anthropic`` answers with these. They are the very
rules of the ``fastpaca-openai`` and ``fastpaca-anthropic`` converters
(``to_openai_messages``, ``to_anthropic_messages``), written again here because
the server depends on neither; ``tests/integrations/test_format_parity.py``
checks that both give the same output. Pure functions: no I/O, inputs untouched.

Both formats:

* Tool calls and results are kept only when both are in the window (a
  ``tool_call`` part and a ``tool_result`` part with its id, or an ai-sdk
  ``tool-<name>``/``dynamic-tool`` part whose ``state`` is ``output-available``
  or ``output-error``, which holds both); providers refuse either one alone.
* A call's arguments and a result's content are the part's ``payload`` (else
  ``input``, ``output``, ``args``, ``result``); an ai-sdk part's are ``input``
  and ``output`` (``errorText`` for ``output-error``). Non-string results are
  sent as JSON text.
* Parts with no equivalent (``step-start``, ``source-url``, ``data-*``, your own
  types; ``reasoning`` for OpenAI) are left out.

OpenAI Chat Completions (:func:`to_openai`):

* ``system``/``developer`` messages keep their role, their texts joined by a
  blank line as ``content``.
* ``assistant`` → ``content`` (one text as a string, several as text parts,
  none as ``null``) and ``tool_calls`` (``arguments`` as JSON text); an
  assistant message with neither is left out.
* Each paired ``tool_result`` part → a ``tool`` message, after the message that
  holds it (before the content of a user message: Anthropic-style histories
  answer calls in the next user turn); an ai-sdk tool part → its call and then
  its ``tool`` message.
* Other roles (``user``, or your own) keep their role: ``text`` parts and
  ``file`` parts (images as ``image_url``, other data URLs as ``file``); a
  message with neither is left out. ``tool`` messages give only their results.

Anthropic Messages (:func:`to_anthropic`), ``{"system"?, "messages"}``:

* ``system``/``developer`` texts → ``system`` (joined by a blank line; absent
  when there is none).
* ``assistant`` → an assistant turn of ``thinking`` blocks (``reasoning`` parts
  with ``provider_metadata.anthropic.signature``; ``redacted_thinking`` for
  ``redacted_data``; other reasoning is left out), ``text`` blocks and
  ``tool_use`` blocks (``input`` an object: other payloads as ``{"input": …}``).
* Every other role → a user turn: ``tool_result`` blocks first, then ``text``
  blocks and ``image``/``document`` blocks for image and PDF ``file`` parts
  (data URLs as base64 sources, other URLs as URL sources).
* Empty texts and empty turns are left out; consecutive turns of one role are
  merged, and a user turn's ``tool_result`` blocks are moved to its front.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["FORMATS", "to_anthropic", "to_openai"]

FORMATS = ("ui", "openai", "anthropic")
"""Values of ``GET …/context?format=`` (``ui``: the messages as stored)."""

_INSTRUCTION_ROLES = ("system", "developer")
_PAYLOAD_FIELDS = ("payload", "input", "output", "args", "result")
_OUTPUT_STATES = ("output-available", "output-error")

Part = Mapping[str, Any]
JSONObject = dict[str, Any]


# --- shared ---------------------------------------------------------------------


def _parts(message: Mapping[str, Any]) -> list[Part]:
    return list(message.get("parts") or ())


def _payload(part: Part) -> Any:
    for name in _PAYLOAD_FIELDS:
        if name in part:
            return part[name]
    return None


def _ai_sdk_tool(part: Part) -> tuple[str, str] | None:
    """``(call id, tool name)`` of an ai-sdk ``tool-<name>``/``dynamic-tool`` part."""
    part_type = part.get("type")
    call_id = part.get("toolCallId")
    if not isinstance(part_type, str) or not isinstance(call_id, str):
        return None
    tool_name = part.get("toolName")
    if part_type == "dynamic-tool" and isinstance(tool_name, str):
        return call_id, tool_name
    if part_type.startswith("tool-"):
        return call_id, part_type.removeprefix("tool-")
    return None


def _paired(messages: list[Mapping[str, Any]]) -> set[str]:
    """Ids of the tool calls that have both their call and their result in ``messages``."""
    calls: set[str] = set()
    results: set[str] = set()
    for message in messages:
        for part in _parts(message):
            part_type = part.get("type")
            if part_type == "tool_call" and isinstance(part.get("id"), str):
                calls.add(part["id"])
            elif part_type == "tool_result" and isinstance(part.get("tool_call_id"), str):
                results.add(part["tool_call_id"])
            else:
                call = _ai_sdk_tool(part)
                if call is not None and part.get("state") in _OUTPUT_STATES:
                    calls.add(call[0])
                    results.add(call[0])
    return calls & results


def _paired_call(part: Part, paired: set[str]) -> str | None:
    """The id of a ``tool_call`` part whose result is in the window."""
    call_id = part.get("id")
    if part.get("type") == "tool_call" and isinstance(call_id, str) and call_id in paired:
        return call_id
    return None


def _paired_result(part: Part, paired: set[str]) -> str | None:
    """The call id of a ``tool_result`` part whose call is in the window."""
    call_id = part.get("tool_call_id")
    if part.get("type") == "tool_result" and isinstance(call_id, str) and call_id in paired:
        return call_id
    return None


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _ai_sdk_output(part: Part) -> Any:
    if part.get("state") == "output-error":
        return part.get("errorText", "error")
    return part.get("output")


def _texts(parts: list[Part]) -> list[str]:
    return [part["text"] for part in parts if part.get("type") == "text" and _is_str(part, "text")]


def _is_str(part: Part, name: str) -> bool:
    return isinstance(part.get(name), str)


# --- OpenAI Chat Completions ------------------------------------------------------


def _text_content(texts: list[str]) -> str | list[JSONObject]:
    if len(texts) == 1:
        return texts[0]
    return [{"type": "text", "text": text} for text in texts]


def _openai_file(part: Part) -> JSONObject | None:
    url = part.get("url")
    media_type = str(part.get("mediaType") or part.get("media_type") or "")
    if not isinstance(url, str):
        return None
    if media_type.startswith("image/") or (not media_type and url.startswith("data:image/")):
        return {"type": "image_url", "image_url": {"url": url}}
    if url.startswith("data:"):
        file: JSONObject = {"file_data": url}
        if _is_str(part, "filename"):
            file["filename"] = part["filename"]
        return {"type": "file", "file": file}
    return None


def _openai_user_content(parts: list[Part]) -> str | list[JSONObject] | None:
    items: list[JSONObject] = []
    for part in parts:
        if part.get("type") == "text" and _is_str(part, "text"):
            items.append({"type": "text", "text": part["text"]})
        elif part.get("type") == "file":
            converted = _openai_file(part)
            if converted is not None:
                items.append(converted)
    if not items:
        return None
    if all(item["type"] == "text" for item in items):
        return _text_content([item["text"] for item in items])
    return items


def _openai_tool_message(call_id: str, output: Any) -> JSONObject:
    return {"role": "tool", "tool_call_id": call_id, "content": _json_text(output)}


def _openai_tool_call(call_id: str, name: str, arguments: Any) -> JSONObject:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": _json_text({} if arguments is None else arguments)},
    }


def _openai_assistant(
    parts: list[Part], paired: set[str], tool_messages: list[JSONObject]
) -> JSONObject | None:
    """The assistant message (``None`` when empty); its ai-sdk parts' results go to
    ``tool_messages``."""
    texts = _texts(parts)
    tool_calls: list[JSONObject] = []
    for part in parts:
        call_id = _paired_call(part, paired)
        if call_id is not None:
            tool_calls.append(_openai_tool_call(call_id, str(part.get("name")), _payload(part)))
            continue
        call = _ai_sdk_tool(part)
        if call is not None and call[0] in paired:
            tool_calls.append(_openai_tool_call(call[0], call[1], part.get("input")))
            tool_messages.append(_openai_tool_message(call[0], _ai_sdk_output(part)))
    if not texts and not tool_calls:
        return None
    content = _text_content(texts) if texts else None
    assistant: JSONObject = {"role": "assistant", "content": content}
    if tool_calls:
        assistant["tool_calls"] = tool_calls
    return assistant


def to_openai(messages: Iterable[Mapping[str, Any]]) -> list[JSONObject]:
    """Chat Completions ``messages`` for a window (see the module docstring)."""
    messages = list(messages)
    paired = _paired(messages)
    result: list[JSONObject] = []
    for message in messages:
        role = str(message["role"])
        parts = _parts(message)
        tool_messages = [
            _openai_tool_message(call_id, _payload(part))
            for part in parts
            if (call_id := _paired_result(part, paired)) is not None
        ]
        if role in _INSTRUCTION_ROLES:
            result.append({"role": role, "content": "\n\n".join(_texts(parts))})
        elif role == "assistant":
            assistant = _openai_assistant(parts, paired, tool_messages)
            if assistant is not None:
                result.append(assistant)
        elif role != "tool":
            # Results answer the previous assistant turn: they go before this message's content.
            result.extend(tool_messages)
            tool_messages = []
            content = _openai_user_content(parts)
            if content is not None:
                result.append({"role": role, "content": content})
        result.extend(tool_messages)
    return result


# --- Anthropic Messages -------------------------------------------------------------


def _anthropic_metadata(part: Part) -> JSONObject:
    provider = part.get("provider_metadata")
    if isinstance(provider, Mapping) and isinstance(provider.get("anthropic"), Mapping):
        return dict(provider["anthropic"])
    return {}


def _source(url: str, media_type: str) -> JSONObject:
    if url.startswith("data:") and ";base64," in url:
        header, data = url[5:].split(";base64,", 1)
        return {"type": "base64", "media_type": header or media_type, "data": data}
    return {"type": "url", "url": url}


def _anthropic_file(part: Part) -> JSONObject | None:
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


def _tool_input(payload: Any) -> JSONObject:
    if payload is None:
        return {}
    if isinstance(payload, Mapping):
        return dict(payload)
    return {"input": payload}


def _tool_result(call_id: str, output: Any, *, error: bool) -> JSONObject:
    content = _json_text(output)
    block: JSONObject = {"type": "tool_result", "tool_use_id": call_id, "content": content}
    if error:
        block["is_error"] = True
    return block


def _assistant_blocks(
    parts: list[Part], paired: set[str]
) -> tuple[list[JSONObject], list[JSONObject]]:
    """An assistant message's blocks, and the results its ai-sdk tool parts hold."""
    blocks: list[JSONObject] = []
    results: list[JSONObject] = []
    for part in parts:
        part_type = part.get("type")
        if part_type == "reasoning":
            metadata = _anthropic_metadata(part)
            if isinstance(metadata.get("signature"), str):
                thinking = str(part.get("text", ""))
                signature = metadata["signature"]
                blocks.append({"type": "thinking", "thinking": thinking, "signature": signature})
            elif isinstance(metadata.get("redacted_data"), str):
                blocks.append({"type": "redacted_thinking", "data": metadata["redacted_data"]})
        elif part_type == "text" and part.get("text"):
            blocks.append({"type": "text", "text": part["text"]})
        elif (call_id := _paired_call(part, paired)) is not None:
            name = str(part.get("name"))
            tool_input = _tool_input(_payload(part))
            blocks.append({"type": "tool_use", "id": call_id, "name": name, "input": tool_input})
        else:
            call = _ai_sdk_tool(part)
            if call is not None and call[0] in paired:
                tool_input = _tool_input(part.get("input"))
                blocks.append(
                    {"type": "tool_use", "id": call[0], "name": call[1], "input": tool_input}
                )
                error = part.get("state") == "output-error"
                results.append(_tool_result(call[0], _ai_sdk_output(part), error=error))
    return blocks, results


def _user_blocks(parts: list[Part]) -> list[JSONObject]:
    blocks: list[JSONObject] = []
    for part in parts:
        if part.get("type") == "text" and part.get("text"):
            blocks.append({"type": "text", "text": part["text"]})
        elif part.get("type") == "file":
            block = _anthropic_file(part)
            if block is not None:
                blocks.append(block)
    return blocks


def _add_turn(turns: list[JSONObject], role: str, blocks: list[JSONObject]) -> None:
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": list(blocks)})
    if role == "user":
        content: list[JSONObject] = turns[-1]["content"]
        # tool_result blocks must open the user turn that answers the calls (a stable sort).
        content.sort(key=lambda block: block.get("type") != "tool_result")


def to_anthropic(messages: Iterable[Mapping[str, Any]]) -> JSONObject:
    """``{"system": …, "messages": […]}`` for a window (see the module docstring);
    ``system`` only when the window has system text."""
    messages = list(messages)
    paired = _paired(messages)
    system: list[str] = []
    turns: list[JSONObject] = []
    for message in messages:
        role = str(message["role"])
        parts = _parts(message)
        results = [
            _tool_result(call_id, _payload(part), error=part.get("is_error") is True)
            for part in parts
            if (call_id := _paired_result(part, paired)) is not None
        ]
        if role in _INSTRUCTION_ROLES:
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
    request: JSONObject = {"messages": turns}
    if system:
        request["system"] = "\n\n".join(system)
    return request
