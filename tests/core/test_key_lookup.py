"""Finding the key of a request (``access.KeyRing.find``): by the SHA-256 of what the
client sent, comparing it with every key in constant time, whichever matches, so
the time to answer says nothing about which key (or which prefix) was close."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from fastpaca_server import access
from fastpaca_server.access import ApiKey, KeyRing


def _ring(count: int) -> KeyRing:
    return KeyRing(
        tuple(
            ApiKey(f"k{n}", f"t{n}", frozenset({"read"}), hashlib.sha256(f"s{n}".encode()).digest())
            for n in range(count)
        )
    )


@pytest.mark.parametrize("token", [b"s0", b"s4", b"s9", b"no such key", b""])
def test_every_key_is_compared_with_compare_digest_whichever_matches(
    token: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    ring = _ring(10)
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(access.hmac, "compare_digest", counting)
    found = ring.find(token)
    assert len(calls) == 10  # no early exit at the match
    assert all(b == hashlib.sha256(token).digest() for _, b in calls)  # hashes, not secrets
    expected = token.decode()[1:] if token.startswith(b"s") and len(token) == 2 else None
    assert (found.name if found else None) == (f"k{expected}" if expected else None)
