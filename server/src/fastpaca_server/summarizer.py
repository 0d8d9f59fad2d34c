"""The client of the ``summarize`` compaction policy.

When a context's window crosses its trigger, the leader asks an
OpenAI-compatible Chat Completions endpoint to fold the oldest part of the
window (and the previous summary, if any) into a new summary.
:class:`Summarizer` makes that one call; :func:`render_transcript` turns
Fastpaca UIMessages into the plain-text transcript the model reads.

Every failure (an HTTP error status, a timeout, an unreachable endpoint, an
answer without text) raises :class:`SummarizerError` with a short message that
names what happened and never carries message content or the API key.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import attrs
import httpx
import openai
from openai.types.chat import (
    ChatCompletionMessageParam,
    ChatCompletionSystemMessageParam,
    ChatCompletionUserMessageParam,
)

DEFAULT_INSTRUCTIONS = (
    "You keep the memory of a long conversation between a user and an AI assistant. "
    "Write a concise, factual summary of the conversation you are given. Preserve "
    "names, facts, numbers, decisions made, open questions and unfinished tasks, and "
    "the tool results that matter. Leave out greetings, filler and repetition. If a "
    "previous summary is given, fold it and the new messages into one updated "
    "summary, keeping what still matters from it. Your summary will be the only "
    "memory of the earlier conversation, so include everything needed to continue "
    "it. Answer with the summary alone, without a preamble."
)
"""The system instruction used when a policy gives no ``instructions``."""

MAX_TOOL_TEXT = 2_000
"""Characters kept of each tool call's arguments and each tool result."""


class SummarizerError(Exception):
    """The summarizer failed; the message says what happened (no content, no key)."""


@attrs.frozen
class SummarizerConfig:
    """Where and how to ask for summaries.

    ``base_url`` is the API root of an OpenAI-compatible server (e.g.
    ``https://api.openai.com/v1``); ``timeout`` bounds a whole call, in seconds.
    """

    base_url: str
    model: str
    api_key: str | None = attrs.field(default=None, repr=False)
    timeout: float = 30.0
    max_summary_tokens: int = 1024


def _truncate(text: str, limit: int = MAX_TOOL_TEXT) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit} more characters]"


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _free_fields(part: Mapping[str, Any], reserved: frozenset[str]) -> Any:
    """The ``payload`` of a tool part, or (without one) its other free fields."""
    if "payload" in part:
        return part["payload"]
    rest = {key: value for key, value in part.items() if key not in reserved}
    if not rest:
        return ""
    if len(rest) == 1:
        return next(iter(rest.values()))
    return rest


_CALL_FIELDS = frozenset({"type", "id", "name"})
_RESULT_FIELDS = frozenset({"type", "tool_call_id"})


def _render_part(part: Any) -> str | None:
    if not isinstance(part, Mapping):
        return None
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        return text if isinstance(text, str) and text.strip() else None
    if kind == "tool_call":
        name = part.get("name")
        args = _truncate(_as_text(_free_fields(part, _CALL_FIELDS)))
        return f"[tool call {name if isinstance(name, str) else 'tool'}({args})]"
    if kind == "tool_result":
        result = _truncate(_as_text(_free_fields(part, _RESULT_FIELDS)))
        return f"[tool result: {result}]"
    return None


def render_transcript(messages: Sequence[Mapping[str, Any]]) -> str:
    """``messages`` (Fastpaca UIMessages) as a plain-text transcript.

    One ``role: text`` block per message, blocks separated by a blank line.
    ``tool_call`` parts render as ``[tool call name(args)]``, ``tool_result``
    parts as ``[tool result: ...]`` (each cut to :data:`MAX_TOOL_TEXT`
    characters); other part types are skipped, and so is a message left with
    nothing to show.
    """
    blocks: list[str] = []
    for message in messages:
        parts = message.get("parts")
        if not isinstance(parts, list):
            continue
        rendered = [text for text in map(_render_part, parts) if text is not None]
        if not rendered:
            continue
        role = message.get("role")
        blocks.append(
            f"{role if isinstance(role, str) and role else 'unknown'}: " + "\n".join(rendered)
        )
    return "\n\n".join(blocks)


def build_prompt(
    previous_summary: str | None,
    messages: Sequence[Mapping[str, Any]],
    instructions: str | None = None,
) -> list[ChatCompletionMessageParam]:
    """The Chat Completions ``messages`` of one summarize call."""
    sections: list[str] = []
    if previous_summary:
        sections.append(f"Summary of the conversation before these messages:\n{previous_summary}")
        sections.append(f"Messages to fold into the summary:\n{render_transcript(messages)}")
        sections.append("Write the updated summary.")
    else:
        sections.append(f"Messages to summarize:\n{render_transcript(messages)}")
        sections.append("Write the summary.")
    system: ChatCompletionSystemMessageParam = {
        "role": "system",
        "content": instructions if instructions else DEFAULT_INSTRUCTIONS,
    }
    user: ChatCompletionUserMessageParam = {"role": "user", "content": "\n\n".join(sections)}
    return [system, user]


def _safe_url(url: str) -> str:
    """``url`` without credentials, query or fragment (fit for an error message)."""
    try:
        split = urlsplit(url)
        host = split.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{split.port}" if split.port is not None else host
        return urlunsplit((split.scheme, netloc, split.path, "", ""))
    except ValueError:
        return "the configured URL"


class Summarizer:
    """Asks an OpenAI-compatible Chat Completions endpoint for summaries.

    One instance holds one HTTP connection pool; :meth:`close` releases it.
    Calls are not retried: the caller decides when to try again.
    """

    def __init__(self, config: SummarizerConfig) -> None:
        self.config = config
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(config.timeout))
        # openai 3.x types ``http_client`` as an ``httpx2.AsyncClient`` but accepts
        # (and checks for) a classic ``httpx.AsyncClient`` at run time.
        self._client = openai.AsyncOpenAI(
            base_url=config.base_url,
            api_key=config.api_key or "unused",
            timeout=config.timeout,
            max_retries=0,
            http_client=cast(Any, self._http),
        )

    async def summarize(
        self,
        previous_summary: str | None,
        messages: list[dict[str, Any]],
        instructions: str | None = None,
        max_tokens: int | None = None,
    ) -> str:
        """The new summary of ``previous_summary`` followed by ``messages``.

        Raises :class:`SummarizerError` on any failure.
        """
        prompt = build_prompt(previous_summary, messages, instructions)
        timeout = self.config.timeout
        try:
            async with asyncio.timeout(timeout):
                completion = await self._client.chat.completions.create(
                    model=self.config.model,
                    messages=prompt,
                    max_tokens=min(
                        max_tokens or self.config.max_summary_tokens, self.config.max_summary_tokens
                    ),
                    temperature=0,
                )
        except (TimeoutError, openai.APITimeoutError):
            raise SummarizerError(f"the summarizer did not answer within {timeout:g} s") from None
        except openai.APIConnectionError:
            raise SummarizerError(
                f"could not reach the summarizer at {_safe_url(self.config.base_url)}"
            ) from None
        except openai.APIStatusError as error:
            raise SummarizerError(f"the summarizer answered HTTP {error.status_code}") from None
        except Exception as error:  # a malformed answer, or anything else
            raise SummarizerError(f"the summarizer call failed ({type(error).__name__})") from None
        return _summary_text(completion)

    async def close(self) -> None:
        """Release the connection pool (the instance is unusable afterwards)."""
        await self._client.close()
        await self._http.aclose()


def _summary_text(completion: Any) -> str:
    choices = getattr(completion, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise SummarizerError("the summarizer answered without a choice")
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None)
    if not isinstance(content, str) or not content.strip():
        raise SummarizerError("the summarizer answered with an empty summary")
    return content.strip()
