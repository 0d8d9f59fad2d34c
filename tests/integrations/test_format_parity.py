"""The server's provider formats (``GET …/context?format=…``) are the integrations'
converters: the same window gives the same messages, and both are requests the
``openai`` and ``anthropic`` clients' types accept."""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest
from anthropic.types import MessageParam, TextBlockParam
from fastpaca_anthropic import to_anthropic_messages
from fastpaca_openai import to_openai_messages
from fastpaca_server.core import formats
from openai.types.chat import ChatCompletionMessageParam

from tests.support.format_corpus import CASES, Case

STRICT = pydantic.ConfigDict(extra="forbid")
OPENAI_MESSAGES = pydantic.TypeAdapter(list[ChatCompletionMessageParam], config=STRICT)
ANTHROPIC_MESSAGES = pydantic.TypeAdapter(list[MessageParam], config=STRICT)
ANTHROPIC_SYSTEM = pydantic.TypeAdapter(str | list[TextBlockParam], config=STRICT)

by_name = pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])


def drained(value: Any) -> Any:
    """``value`` with every lazily validated iterable (pydantic validates ``Iterable[…]``
    fields as iterators) consumed, so that each of its items is validated too."""
    if isinstance(value, dict):
        return {key: drained(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [drained(item) for item in value]
    if isinstance(value, Iterator):
        return [drained(item) for item in value]
    return value


def test_the_corpus_is_large_and_named_uniquely() -> None:
    assert len(CASES) >= 15
    assert len({case.name for case in CASES}) == len(CASES)


@by_name
def test_openai_format_is_the_integrations(case: Case) -> None:
    before = copy.deepcopy(case.messages)
    server = formats.to_openai(case.messages)
    assert server == to_openai_messages(case.messages)
    # Same JSON, key order included (the HTTP answer is this JSON).
    assert json.dumps(server) == json.dumps(to_openai_messages(case.messages))
    assert case.messages == before, "the converter changed its input"


@by_name
def test_anthropic_format_is_the_integrations(case: Case) -> None:
    before = copy.deepcopy(case.messages)
    server = formats.to_anthropic(case.messages)
    assert server == to_anthropic_messages(case.messages)
    assert json.dumps(server) == json.dumps(to_anthropic_messages(case.messages))
    assert case.messages == before, "the converter changed its input"


@by_name
def test_openai_messages_are_valid_requests(case: Case) -> None:
    if not case.openai_valid:
        pytest.skip("a role of the app's own goes through as it is")
    messages = formats.to_openai(case.messages)
    assert drained(OPENAI_MESSAGES.validate_python(messages)) == messages


@by_name
def test_anthropic_messages_are_valid_requests(case: Case) -> None:
    request = formats.to_anthropic(case.messages)
    assert set(request) <= {"system", "messages"}
    assert drained(ANTHROPIC_MESSAGES.validate_python(request["messages"])) == request["messages"]
    if "system" in request:
        assert ANTHROPIC_SYSTEM.validate_python(request["system"]) == request["system"]
    roles = [turn["role"] for turn in request["messages"]]
    assert all(a != b for a, b in itertools.pairwise(roles)), "turns must alternate"
    for turn in request["messages"]:
        assert turn["content"], "an empty turn"
        types = [block["type"] for block in turn["content"]]
        assert types == sorted(types, key=lambda t: t != "tool_result"), "results open a turn"


@by_name
def test_tool_calls_and_results_pair_up(case: Case) -> None:
    """Every call has its result and every result its call, in both formats."""
    openai_messages = formats.to_openai(case.messages)
    calls = [c["id"] for m in openai_messages for c in m.get("tool_calls", ())]
    results = [m["tool_call_id"] for m in openai_messages if m["role"] == "tool"]
    assert sorted(calls) == sorted(results)
    blocks = [b for m in formats.to_anthropic(case.messages)["messages"] for b in m["content"]]
    uses = [b["id"] for b in blocks if b["type"] == "tool_use"]
    answered = [b["tool_use_id"] for b in blocks if b["type"] == "tool_result"]
    assert sorted(uses) == sorted(answered) == sorted(calls)


def test_provider_messages_of_the_corpus_are_not_all_trivial() -> None:
    """The corpus exercises what it claims to: tool calls, files, thinking, errors."""
    openai_text = json.dumps([formats.to_openai(case.messages) for case in CASES])
    anthropic_text = json.dumps([formats.to_anthropic(case.messages) for case in CASES])
    for fragment in ('"tool_calls"', '"image_url"', '"file_data"', '"role": "developer"'):
        assert fragment in openai_text, fragment
    for fragment in ('"thinking"', '"redacted_thinking"', '"is_error"', '"document"', '"url"'):
        assert fragment in anthropic_text, fragment
