"""Listing contexts (core/listing.py): pages joined in order are exactly the
filtered, sorted contexts, whatever the page size and however the contexts are
spread over groups."""

from __future__ import annotations

import json

import attrs
import pytest
from fastpaca_server.core import ContextConfig, InvalidInput, Policy, listing
from fastpaca_server.core.state import Context
from hypothesis import given, settings
from hypothesis import strategies as st

CONFIG = ContextConfig(token_budget=100, trigger_ratio=0.7, policy=Policy("last_n", {}))
VALUES = st.one_of(
    st.sampled_from(["red", "Blue", "ünï", "3", ""]), st.integers(0, 3), st.booleans(), st.none()
)


@st.composite
def contexts(draw: st.DrawFn) -> list[Context]:
    ids = draw(st.lists(st.from_regex(r"[a-c][a-c:]{0,3}", fullmatch=True), unique=True))
    found = []
    for context_id in ids:
        metadata = draw(st.dictionaries(st.sampled_from(["team", "rank", "note"]), VALUES))
        found.append(
            Context(
                id=context_id,
                config=CONFIG,
                metadata=metadata,
                created_at=0,
                updated_at=draw(st.integers(0, 5)),  # ties: the id decides
                status=draw(st.sampled_from(["active", "active", "tombstoned"])),
            )
        )
    return found


queries = st.builds(
    listing.ListQuery,
    order=st.sampled_from(listing.ORDERS),
    limit=st.integers(1, 4),
    prefix=st.sampled_from(["", "a", "b:", "c"]),
    search=st.sampled_from(["", "A", "ue", "ÜN", ":"]),
    metadata=st.lists(
        st.tuples(
            st.sampled_from(["team", "rank"]), st.sampled_from(["red", "3", "true", "null", "0"])
        ),
        max_size=2,
        unique_by=lambda f: f[0],
    ).map(tuple),
    status=st.sampled_from(listing.STATUSES),
)


def expected(all_contexts: list[Context], query: listing.ListQuery) -> list[str]:
    """The filter and the order, written out plainly."""

    def wanted(c: Context) -> bool:
        texts = [c.id.lower()] + [v.lower() for v in c.metadata.values() if isinstance(v, str)]
        return (
            (query.status == "all" or c.status == query.status)
            and c.id.startswith(query.prefix)
            and any(query.search.lower() in text for text in texts)
            and all(
                name in c.metadata
                and (
                    c.metadata[name] == value
                    if isinstance(c.metadata[name], str)
                    else json.dumps(c.metadata[name]) == value
                )
                for name, value in query.metadata
            )
        )

    found = [c for c in all_contexts if wanted(c)]
    if query.order == "recent":
        found.sort(key=lambda c: (-c.updated_at, c.id))
    else:
        found.sort(key=lambda c: c.id)
    return [c.id for c in found]


@settings(max_examples=300, deadline=None)
@given(contexts(), queries, st.integers(1, 3))
def test_pages_over_groups_list_each_match_once_in_order(
    all_contexts: list[Context], query: listing.ListQuery, groups: int
) -> None:
    spread: list[list[Context]] = [[] for _ in range(groups)]
    for context in all_contexts:
        spread[hash(context.id) % groups].append(context)
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(len(all_contexts) + 2):
        after = None if cursor is None else listing.decode_cursor(cursor, query.order)
        page_query = attrs.evolve(query, after=after)
        pages = [listing.select(group, page_query, query.limit + 1) for group in spread]
        chosen = listing.merge(pages, query.order, query.limit + 1)
        shown = chosen[: query.limit]
        seen += [c.id for c in shown]
        if len(chosen) <= query.limit:
            break
        cursor = listing.encode_cursor(query.order, listing.key(shown[-1], query.order))
    assert seen == expected(all_contexts, query)


def test_a_cursor_is_checked() -> None:
    cursor = listing.encode_cursor("recent", (-5, "a:b"))
    assert listing.decode_cursor(cursor, "recent") == (-5, "a:b")
    with pytest.raises(InvalidInput, match="order=recent"):
        listing.decode_cursor(cursor, "id")
    for bad in ["", "!!", "bm90IGpzb24", listing.encode_cursor("id", (0, "x"))[:-3], "W10"]:
        with pytest.raises(InvalidInput):
            listing.decode_cursor(bad, "id")


def test_metadata_values_match_as_strings_or_as_json() -> None:
    assert listing.metadata_matches("3", "3") and listing.metadata_matches(3, "3")
    assert listing.metadata_matches(True, "true") and listing.metadata_matches(None, "null")
    assert listing.metadata_matches(["ü"], '["ü"]')
    assert not listing.metadata_matches("true", "True") and not listing.metadata_matches(3.5, "3")
