"""API keys, tenants, scopes and per-tenant limits (no I/O but reading the keys file).

A keys file (``--keys-file``, JSON) names keys and tenants::

    {"tenants": {"acme": {"requests_per_second": 50, "burst": 100, "max_contexts": 1000,
                          "max_message_bytes": 65536, "max_tokens_stored": 5000000}},
     "keys": [{"name": "acme-backend", "tenant": "acme", "scopes": ["read", "write"],
               "sha256": "<hex SHA-256 of the key>"},
              {"name": "ops", "scopes": ["read", "write", "admin"], "sha256": "…"}]}

Only the SHA-256 of a key is stored (keys are long random strings: a fast hash
is enough; ``fastpaca keys hash`` of the Python SDK prints it). A key with a tenant
sees the context ids of its namespace only: ``{tenant}:…``. A key without one
is an operator's: every context, and the cluster's membership with ``admin``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping
from typing import Any, Literal

import attrs

Scope = Literal["read", "write", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "write", "admin")
TENANT = re.compile(r"[A-Za-z0-9._-]{1,64}")
LIMITS = (
    "requests_per_second",
    "burst",
    "max_contexts",
    "max_message_bytes",
    "max_tokens_stored",
)


class KeysFileError(ValueError):
    """The keys file cannot be read or is not valid (the message says where)."""


@attrs.frozen
class TenantLimits:
    """Limits of one tenant; ``None``: no limit."""

    requests_per_second: float | None = None
    burst: int | None = None
    """Requests allowed at once above the rate (default: one second's worth, at least 1)."""
    max_contexts: int | None = None
    max_message_bytes: int | None = None
    max_tokens_stored: int | None = None


@attrs.frozen
class ApiKey:
    name: str
    tenant: str | None
    scopes: frozenset[Scope]
    digest: bytes = attrs.field(repr=False)

    def sees(self, context_id: str) -> bool:
        """Whether ``context_id`` is inside this key's namespace."""
        return self.tenant is None or context_id.startswith(f"{self.tenant}:")


OPERATOR = "operator"
"""The name of the single ``--api-key`` (every scope, every tenant)."""


@attrs.frozen
class KeyRing:
    keys: tuple[ApiKey, ...] = ()
    tenants: Mapping[str, TenantLimits] = attrs.field(factory=dict)

    def find(self, token: bytes) -> ApiKey | None:
        """The key whose hash is ``token``'s; every key is compared, in constant time."""
        digest = hashlib.sha256(token).digest()
        found = None
        for key in self.keys:
            if hmac.compare_digest(key.digest, digest):
                found = key
        return found

    def limits(self, tenant: str | None) -> TenantLimits:
        return self.tenants.get(tenant or "", TenantLimits())


def hash_key(key: str) -> str:
    """What a keys file stores for ``key``: its SHA-256, in hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def operator_key(api_key: str) -> ApiKey:
    """The single ``--api-key``: every scope on every context."""
    return ApiKey(OPERATOR, None, frozenset(SCOPES), hashlib.sha256(api_key.encode()).digest())


def tenant_of(context_id: str) -> str | None:
    """The namespace of a context id: the part before its first ``:`` (if any)."""
    head, colon, _ = context_id.partition(":")
    return head if colon else None


def _number(value: Any, where: str, *, integer: bool) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise KeysFileError(f"{where} must be a number")
    if integer and not float(value).is_integer():
        raise KeysFileError(f"{where} must be a whole number")
    if not math.isfinite(value) or value <= 0 or value > 10**15:
        raise KeysFileError(f"{where} must be positive")
    return int(value) if integer else float(value)


def _limits(name: str, raw: Any) -> TenantLimits:
    where = f"tenants.{name}"
    if not isinstance(raw, dict):
        raise KeysFileError(f"{where} must be an object")
    unknown = sorted(set(raw) - set(LIMITS))
    if unknown:
        raise KeysFileError(f"{where} has unknown fields: {', '.join(unknown)}")

    def get(field: str) -> int | None:
        value = raw.get(field)
        return None if value is None else int(_number(value, f"{where}.{field}", integer=True))

    rate = raw.get("requests_per_second")
    return TenantLimits(
        requests_per_second=(
            None
            if rate is None
            else float(_number(rate, f"{where}.requests_per_second", integer=False))
        ),
        burst=get("burst"),
        max_contexts=get("max_contexts"),
        max_message_bytes=get("max_message_bytes"),
        max_tokens_stored=get("max_tokens_stored"),
    )


def _key(index: int, raw: Any) -> ApiKey:
    where = f"keys[{index}]"
    if not isinstance(raw, dict):
        raise KeysFileError(f"{where} must be an object")
    unknown = sorted(set(raw) - {"name", "tenant", "scopes", "sha256"})
    if unknown:
        raise KeysFileError(f"{where} has unknown fields: {', '.join(unknown)}")
    name, tenant, scopes, digest = (raw.get(f) for f in ("name", "tenant", "scopes", "sha256"))
    if not isinstance(name, str) or not 1 <= len(name) <= 128:
        raise KeysFileError(f"{where}.name must be a string of 1-128 characters")
    if tenant is not None and (not isinstance(tenant, str) or not TENANT.fullmatch(tenant)):
        raise KeysFileError(f"{where}.tenant must be 1-64 letters, digits, '.', '_' or '-'")
    if not isinstance(scopes, list) or not scopes or any(s not in SCOPES for s in scopes):
        raise KeysFileError(f"{where}.scopes must be a non-empty list of read, write, admin")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise KeysFileError(
            f"{where}.sha256 must be 64 lower-case hex digits (fastpaca keys hash prints it)"
        )
    return ApiKey(name, tenant, frozenset(scopes), bytes.fromhex(digest))


def parse_keys(text: str) -> KeyRing:
    """A keys file's content as a :class:`KeyRing` (``KeysFileError`` if invalid)."""
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise KeysFileError(f"not valid JSON: {error}") from None
    if not isinstance(raw, dict) or set(raw) - {"tenants", "keys"}:
        raise KeysFileError('the file must be an object with "keys" (and "tenants")')
    raw_tenants = raw.get("tenants", {})
    if not isinstance(raw_tenants, dict):
        raise KeysFileError('"tenants" must be an object')
    for name in raw_tenants:
        if not TENANT.fullmatch(name):
            raise KeysFileError(f"tenant {name!r}: 1-64 letters, digits, '.', '_' or '-'")
    tenants = {name: _limits(name, value) for name, value in raw_tenants.items()}
    raw_keys = raw.get("keys")
    if not isinstance(raw_keys, list):
        raise KeysFileError('"keys" must be a list')
    keys = tuple(_key(index, value) for index, value in enumerate(raw_keys))
    names = [key.name for key in keys]
    if len(set(names)) != len(names):
        raise KeysFileError("two keys have the same name")
    if len({key.digest for key in keys}) != len(keys):
        raise KeysFileError("two keys have the same sha256")
    return KeyRing(keys, tenants)


def load_keys(path: str) -> KeyRing:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as error:
        raise KeysFileError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        return parse_keys(text)
    except KeysFileError as error:
        raise KeysFileError(f"{path}: {error}") from None


@attrs.define
class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    rate: float
    burst: float
    tokens: float
    at: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate, burst, burst, now)

    def take(self, now: float) -> float | None:
        """Take one token: ``None`` if there was one, else the seconds until there is."""
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return None
        return (1 - self.tokens) / self.rate
