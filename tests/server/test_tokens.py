"""Token counts: exact for the context's tokenizer, client counts verbatim."""

from __future__ import annotations

import json

import pytest
from fastpaca_server.tokens import encoding

from tests.server._api import Api, new_id, text_message

OVERHEAD = 4  # tokens of chat framing added to every message

TEXTS = [
    "hello",
    "The quick brown fox jumps over the lazy dog. " * 20,
    "def f(x):\n    return {'a': [1, 2, 3]}\n",
    "日本語のテキストを数えます。こんにちは、世界！",  # noqa: RUF001 - full-width on purpose
    "Привет, как дела? Сегодня хорошая погода.",
    "emoji 👩‍👩‍👧‍👦 🇺🇳 and combining é (e\u0301)",
    "<|endoftext|> is ordinary text here",
    "",
]


def count(text: str, tokenizer: str) -> int:
    return len(encoding(tokenizer).encode_ordinary(text))


def compact_json(part: dict) -> str:
    return json.dumps(part, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize("tokenizer", ["o200k_base", "cl100k_base"])
def test_text_messages_count_exactly(api: Api, tokenizer: str) -> None:
    context_id = api.create(token_budget=1_000_000, tokenizer=tokenizer)["id"]
    result = api.append(context_id, *[text_message(text) for text in TEXTS])
    expected = [count(text, tokenizer) + OVERHEAD for text in TEXTS]
    assert [m["token_count"] for m in result["messages"]] == expected
    assert [m["token_count"] for m in api.log(context_id)] == expected
    window = api.window(context_id)
    assert window["used_tokens"] == sum(expected)
    assert result["used_tokens"] == sum(expected)
    assert api.context(context_id)["used_tokens"] == sum(expected)


def test_tokenizers_differ_on_non_ascii_text(api: Api) -> None:
    text = "नमस्ते दुनिया, आप कैसे हैं? 日本語のテキストです。"
    counts = {}
    for tokenizer in ("o200k_base", "cl100k_base"):
        context_id = api.create(token_budget=10_000, tokenizer=tokenizer)["id"]
        counts[tokenizer] = api.append(context_id, text_message(text))["messages"][0]["token_count"]
        assert counts[tokenizer] == count(text, tokenizer) + OVERHEAD
    assert counts["o200k_base"] != counts["cl100k_base"]


def test_the_default_tokenizer_is_o200k_base(api: Api) -> None:
    text = "Привет, как дела? Сегодня хорошая погода."
    context_id = api.create()["id"]
    token_count = api.append(context_id, text_message(text))["messages"][0]["token_count"]
    assert token_count == count(text, "o200k_base") + OVERHEAD


def test_multi_part_messages_sum_their_parts(api: Api) -> None:
    context_id = api.create(token_budget=100_000)["id"]
    # Keys in sorted order and ASCII values: "compact JSON" is unambiguous.
    call = {
        "id": "call_1",
        "input": {"city": "Oslo", "days": 3},
        "name": "weather",
        "type": "tool_call",
    }
    reasoning = {"text": "Need the forecast first.", "type": "reasoning"}
    text = {"text": "Let me check the weather.", "type": "text"}
    message = {"role": "assistant", "parts": [reasoning, text, call]}
    token_count = api.append(context_id, message)["messages"][0]["token_count"]
    expected = (
        OVERHEAD
        + count(compact_json(reasoning), "o200k_base")
        + count(text["text"], "o200k_base")
        + count(compact_json(call), "o200k_base")
    )
    assert token_count == expected


@pytest.mark.parametrize(
    "part",
    [
        {"tool_call_id": "call_1", "type": "tool_result", "output": {"temp": 21, "unit": "C"}},
        {"data": [1, 2, 3], "type": "data-chart"},
        {"mediaType": "image/png", "type": "file", "url": "https://example.com/a.png"},
        {"type": "step-start"},
    ],
    ids=["tool_result", "data", "file", "bare"],
)
def test_non_text_parts_count_their_compact_json(api: Api, part: dict) -> None:
    part = dict(sorted(part.items()))
    context_id = api.create(token_budget=100_000)["id"]
    message = {"role": "tool", "parts": [part]}
    token_count = api.append(context_id, message)["messages"][0]["token_count"]
    assert token_count == OVERHEAD + count(compact_json(part), "o200k_base")


def test_client_token_count_is_used_verbatim(api: Api) -> None:
    context_id = api.create(token_budget=10_000)["id"]
    long_text = "many words " * 500
    given = [
        text_message(long_text, token_count=7),
        text_message("short", token_count=999),
        text_message("zero", token_count=0),
    ]
    result = api.append(context_id, *given)
    assert [m["token_count"] for m in result["messages"]] == [7, 999, 0]
    assert [m["token_count"] for m in api.log(context_id)] == [7, 999, 0]
    assert result["used_tokens"] == 7 + 999 + 0
    assert api.window(context_id)["used_tokens"] == 1006

    # null means "count it for me".
    counted = api.append(context_id, text_message("short", token_count=None))
    assert counted["messages"][0]["token_count"] == count("short", "o200k_base") + OVERHEAD


def test_counts_are_stable_across_reads(api: Api) -> None:
    context_id = new_id()
    api.create(context_id, token_budget=10_000, tokenizer="cl100k_base")
    appended = api.append(context_id, text_message("stable count"))["messages"][0]
    tail = api.get(f"/v1/contexts/{context_id}/tail").json()["messages"][0]
    window = api.window(context_id)["messages"][0]
    assert appended["token_count"] == tail["token_count"] == window["token_count"]
