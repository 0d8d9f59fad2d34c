"""Listing contexts (``GET /v1/contexts``): filters, order and cursors (pure).

A page is the ``limit`` smallest contexts by the order's key that come after
the cursor's key. Keys are unique (the id breaks ties), so a cursor names an
exact place: under ``order=id`` paging never skips nor repeats a context that
exists throughout; under ``order=recent`` (newest activity first) a context
written to while a client pages moves to the front, ahead of the cursor.

Contexts live in several Raft groups: :func:`select` picks a page from one
group's contexts and :func:`merge` joins the groups' pages.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
from collections.abc import Iterable
from typing import Literal, Protocol, TypeVar

import attrs

from .errors import InvalidInput
from .models import JSONObject
from .state import Context

Order = Literal["id", "recent"]
Status = Literal["active", "tombstoned", "purged", "all"]
Key = tuple[int, str]
"""The order's key: ``(0, id)`` for ``id``, ``(-updated_at, id)`` for ``recent``."""

ORDERS: tuple[Order, ...] = ("id", "recent")
STATUSES: tuple[Status, ...] = ("active", "tombstoned", "purged", "all")


@attrs.frozen
class ListQuery:
    order: Order = "id"
    after: Key | None = None
    """The cursor's key: the page starts after it."""
    limit: int = 50
    prefix: str = ""
    search: str = ""
    """Case-insensitive: a substring of the id or of a top-level string metadata value."""
    metadata: tuple[tuple[str, str], ...] = ()
    """Top-level metadata keys and the values they must have (see :func:`metadata_matches`)."""
    status: Status = "active"
    namespace: str = ""
    """Ids must start with this as well (set by the server for a tenant's key)."""


class Listed(Protocol):
    """A context or a view of one: what the order looks at."""

    @property
    def id(self) -> str: ...

    @property
    def updated_at(self) -> int: ...


_L = TypeVar("_L", bound=Listed)


def within(query: ListQuery, namespace: str) -> ListQuery:
    """``query`` limited to ids that start with ``namespace`` too (a tenant's key)."""
    return attrs.evolve(query, namespace=namespace)


def key(context: Listed, order: Order) -> Key:
    return (-context.updated_at, context.id) if order == "recent" else (0, context.id)


def metadata_matches(value: object, wanted: str) -> bool:
    """A string equals ``wanted``; anything else matches its compact JSON text
    (``3``, ``true``, ``null``, ``["a"]``)."""
    if isinstance(value, str):
        return value == wanted
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False) == wanted


def _searched(context: Context, needle: str) -> bool:
    if needle in context.id.lower():
        return True
    return any(isinstance(v, str) and needle in v.lower() for v in context.metadata.values())


def matches(context: Context, query: ListQuery) -> bool:
    if query.status != "all" and context.status != query.status:
        return False
    if not context.id.startswith(query.prefix) or not context.id.startswith(query.namespace):
        return False
    if query.search and not _searched(context, query.search.lower()):
        return False
    metadata: JSONObject = context.metadata
    return all(
        name in metadata and metadata_matches(metadata[name], wanted)
        for name, wanted in query.metadata
    )


def select(contexts: Iterable[Context], query: ListQuery, count: int) -> list[Context]:
    """The first ``count`` contexts that match, after the cursor, in the query's order
    (O(n log count))."""
    after, order = query.after, query.order
    found = (c for c in contexts if (after is None or key(c, order) > after) and matches(c, query))
    return heapq.nsmallest(count, found, key=lambda c: key(c, order))


def merge(pages: Iterable[list[_L]], order: Order, count: int) -> list[_L]:
    """The first ``count`` of several groups' pages (contexts or their views), in order."""
    return heapq.nsmallest(count, (c for page in pages for c in page), key=lambda c: key(c, order))


def encode_cursor(order: Order, last: Key) -> str:
    """An opaque cursor: the order and the key of the page's last context."""
    raw = json.dumps([order, last[0], last[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, order: Order) -> Key:
    """The key in ``cursor``; 400 if it is not one this server made for ``order``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError):
        data = None
    valid = (
        isinstance(data, list)
        and len(data) == 3
        and data[0] in ORDERS
        and isinstance(data[1], int)
        and not isinstance(data[1], bool)
        and isinstance(data[2], str)
    )
    if not valid:
        raise InvalidInput("'cursor' is not a cursor from a previous page.")
    if data[0] != order:
        raise InvalidInput(f"'cursor' belongs to order={data[0]}, not order={order}.")
    return (data[1], data[2])
