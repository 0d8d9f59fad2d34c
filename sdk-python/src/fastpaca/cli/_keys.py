"""``fastpaca keys new`` and ``fastpaca keys hash``: API keys for a server's keys file.

A keys file (``fastpaca-server --keys-file``) stores the SHA-256 of each key in
hex, never the key. No request is sent: these work without a server.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import sys

from fastpaca import Fastpaca

from ._console import Output
from ._errors import EXIT_OK, CLIError

__all__ = ["hash_key", "run_hash", "run_new"]


def hash_key(key: str) -> str:
    """What a keys file stores for ``key`` (the server computes the same)."""
    return hashlib.sha256(key.encode()).hexdigest()


def run_new(args: argparse.Namespace, client: Fastpaca, output: Output) -> int:
    """A new random key (256 bits) and its hash, one per line."""
    key = f"fp_{secrets.token_hex(32)}"
    output.write_data(f"key:    {key}\nsha256: {hash_key(key)}\n")
    return EXIT_OK


def run_hash(args: argparse.Namespace, client: Fastpaca, output: Output) -> int:
    """The hash of the key read from stdin (so it stays out of the shell history)."""
    key = sys.stdin.readline().strip()
    if not key:
        raise CLIError('no key on stdin: echo "$KEY" | fastpaca keys hash', code="invalid_key")
    output.write_data(hash_key(key) + "\n")
    return EXIT_OK
