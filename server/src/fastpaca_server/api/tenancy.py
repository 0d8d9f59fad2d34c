"""Who may call what: API keys (``--api-key``, ``--keys-file``), scopes, tenants'
namespaces and per-tenant limits, as one middleware and the checks routes call.

- No valid key: 401 ``unauthorized``. A valid key without the route's scope,
  or a context id outside its tenant's namespace: 403 ``forbidden``.
- A tenant over its request rate: 429 ``rate_limited``; over a quota (contexts,
  message size, tokens stored): 429 ``quota_exceeded``. Both with
  ``Retry-After`` and counted in ``fastpaca_tenant_limited_total``.

Rates are per node (each node keeps its own token buckets). Quotas are read
from this node's replica of every Raft group at admission, so writes racing
on other nodes or groups can pass a quota by what they carry; creations of
one tenant's contexts are serialised on a node, so one node never passes
``max_contexts``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping, Sequence

import attrs
from aiohttp import web
from aiohttp.typedefs import Middleware

from ..access import (
    ApiKey,
    KeyRing,
    KeysFileError,
    Scope,
    TenantLimits,
    TokenBucket,
    load_keys,
    operator_key,
)
from ..core import DomainError
from ..core.models import JSONObject, canonical_json
from ..core.state import Usage
from ..replication import ReplicatedStore
from .errors import Handler, error_response
from .metrics import Metrics

logger = logging.getLogger(__name__)

ADMIN_ROUTES = frozenset(
    {
        "/v1/cluster/members",
        "/v1/cluster/members/{raft_address}",
        "/v1/contexts/{context_id}/messages/{seq}/redact",  # an erasure
    }
)
CONTEXT_ROUTE = "/v1/contexts/{context_id}"
READ_POSTS = frozenset({"/v1/contexts/{context_id}/preview"})

REQUEST_KEY = web.RequestKey("fastpaca_key", ApiKey)


class Forbidden(DomainError):
    status = 403
    code = "forbidden"


QUOTA_RETRY_AFTER = 60
"""Seconds a 429 ``quota_exceeded`` asks a client to wait: a quota frees up only when an
operator raises it or the tenant's data goes, so a client should not hurry back."""


class QuotaExceeded(DomainError):
    status = 429
    code = "quota_exceeded"
    retry_after = QUOTA_RETRY_AFTER


def required_scope(method: str, template: str, query: Mapping[str, str] | None = None) -> Scope:
    """The scope a route needs: reads ``read``, writes ``write``, membership and
    erasures (``DELETE …?purge=true``, redact) ``admin``."""
    if template in ADMIN_ROUTES:
        return "admin"
    purge = query is not None and query.get("purge") == "true"
    if method == "DELETE" and template == CONTEXT_ROUTE and purge:
        return "admin"
    if method in ("GET", "HEAD") or template in READ_POSTS:
        return "read"
    return "write"


@attrs.define
class Access:
    """The keys in force (replaced as a whole on reload) and each tenant's bucket."""

    keys_file: str | None
    operator: ApiKey | None
    metrics: Metrics
    ring: KeyRing = attrs.field(factory=KeyRing)
    buckets: dict[str, TokenBucket] = attrs.field(factory=dict)
    creating: dict[str, asyncio.Lock] = attrs.field(factory=dict)

    @classmethod
    def create(cls, api_key: str | None, keys_file: str | None, metrics: Metrics) -> Access:
        """Raises :class:`KeysFileError` if the keys file is not valid (the node does not start)."""
        access = cls(keys_file, operator_key(api_key) if api_key else None, metrics)
        if keys_file is not None:
            access.ring = load_keys(keys_file)
        return access

    @property
    def enabled(self) -> bool:
        return self.operator is not None or self.keys_file is not None

    def reload(self) -> bool:
        """Read the keys file again; on an error keep the keys in force (and log why)."""
        if self.keys_file is None:
            return False
        try:
            ring = load_keys(self.keys_file)
        except KeysFileError as error:
            logger.error("keys file not reloaded, the previous keys stay in force: %s", error)
            return False
        self.ring = ring
        self.buckets.clear()  # new limits apply from now on
        logger.info("keys file reloaded: %d keys, %d tenants", len(ring.keys), len(ring.tenants))
        return True

    def find(self, token: bytes) -> ApiKey | None:
        found = self.ring.find(token)
        if found is None and self.operator is not None:
            found = self.operator if self.operator_matches(token) else None
        return found

    def operator_matches(self, token: bytes) -> bool:
        assert self.operator is not None
        return KeyRing((self.operator,)).find(token) is not None

    def limits(self, key: ApiKey) -> TenantLimits:
        return self.ring.limits(key.tenant) if key.tenant is not None else TenantLimits()

    def limited(self, tenant: str, limit: str) -> None:
        self.metrics.tenant_limited.labels(tenant, limit).inc()

    def take(self, key: ApiKey) -> float | None:
        """A request of the key's tenant: ``None`` if its rate allows it, else the wait."""
        limits = self.limits(key)
        if key.tenant is None or limits.requests_per_second is None:
            return None
        rate = limits.requests_per_second
        now = time.monotonic()
        bucket = self.buckets.get(key.tenant)
        if bucket is None:
            burst = limits.burst if limits.burst is not None else max(1, math.ceil(rate))
            bucket = self.buckets[key.tenant] = TokenBucket.full(rate, burst, now)
        return bucket.take(now)

    def creation_lock(self, tenant: str) -> asyncio.Lock:
        return self.creating.setdefault(tenant, asyncio.Lock())


def _bearer(request: web.Request) -> bytes:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return b""
    try:  # bytes that were not UTF-8 come back as sent (and match no key)
        return token.strip().encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return b""


def access_middleware(access: Access) -> Middleware:
    """Every ``/v1`` route needs a key with the route's scope; health and the page do not."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not (request.path.startswith("/v1/") or request.path == "/v1"):
            return await handler(request)
        token = _bearer(request)
        key = access.find(token) if token else None
        if key is None:
            return error_response(
                401,
                "unauthorized",
                "A valid 'Authorization: Bearer <api key>' header is required.",
                {"WWW-Authenticate": "Bearer"},
            )
        request[REQUEST_KEY] = key
        request["fastpaca_tenant"] = key.tenant
        resource = request.match_info.route.resource
        template = resource.canonical if resource is not None else request.path
        scope = required_scope(request.method, template, request.query)
        if scope not in key.scopes:
            return error_response(
                403, "forbidden", f"The key '{key.name}' does not have the '{scope}' scope."
            )
        if key.tenant is not None:
            context_id = request.match_info.get("context_id")
            if context_id is not None and not key.sees(context_id):
                return error_response(
                    403,
                    "forbidden",
                    f"The key '{key.name}' only reaches contexts whose id starts with "
                    f"'{key.tenant}:'.",
                )
            if template.startswith("/v1/cluster/members"):
                return error_response(
                    403, "forbidden", "Cluster membership needs an operator key (no tenant)."
                )
        access.metrics.tenant_requests.labels(key.tenant or "").inc()
        wait = access.take(key)
        if wait is not None:
            access.limited(key.tenant or "", "requests_per_second")
            limit = access.limits(key).requests_per_second
            return error_response(
                429,
                "rate_limited",
                f"The tenant '{key.tenant}' is over its {limit:g} requests per second.",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        return await handler(request)

    return check


def request_key(request: web.Request) -> ApiKey | None:
    """The key the request came with (``None`` when the server takes no keys)."""
    return request.get(REQUEST_KEY)


def usage(stores: Sequence[ReplicatedStore], tenant: str) -> Usage:
    """What the tenant's contexts hold, over every Raft group of this node."""
    total = Usage()
    for store in stores:
        with store.read() as machine:
            found = machine.usage_of(tenant)
        total.contexts += found.contexts
        total.tokens += found.tokens
    return total


def check_message_sizes(access: Access, key: ApiKey | None, messages: Sequence[JSONObject]) -> None:
    """429 ``quota_exceeded`` if a message's JSON is larger than the tenant allows
    (measured only when the key's tenant has that limit: appends pay nothing else)."""
    if key is None or key.tenant is None:
        return
    limit = access.limits(key).max_message_bytes
    if limit is None or not messages:
        return
    largest = max(len(canonical_json(message)) for message in messages)
    if largest > limit:
        access.limited(key.tenant, "max_message_bytes")
        raise QuotaExceeded(
            f"A message of {largest} bytes is larger than the tenant '{key.tenant}' "
            f"allows ({limit} bytes)."
        )


def check_tokens(
    access: Access, key: ApiKey | None, stores: Sequence[ReplicatedStore], adding: int
) -> None:
    """429 ``quota_exceeded`` if storing ``adding`` more tokens passes the tenant's quota."""
    if key is None or key.tenant is None:
        return
    limit = access.limits(key).max_tokens_stored
    if limit is None:
        return
    stored = usage(stores, key.tenant).tokens
    if stored + adding > limit:
        access.limited(key.tenant, "max_tokens_stored")
        raise QuotaExceeded(
            f"The tenant '{key.tenant}' stores {stored} tokens; {adding} more would pass "
            f"its quota of {limit}."
        )


def check_new_context(access: Access, key: ApiKey, stores: Sequence[ReplicatedStore]) -> None:
    """429 ``quota_exceeded`` if the tenant already has its ``max_contexts``."""
    limit = access.limits(key).max_contexts
    if key.tenant is None or limit is None:
        return
    count = usage(stores, key.tenant).contexts
    if count >= limit:
        access.limited(key.tenant, "max_contexts")
        raise QuotaExceeded(
            f"The tenant '{key.tenant}' has {count} contexts, its quota is {limit}."
        )
