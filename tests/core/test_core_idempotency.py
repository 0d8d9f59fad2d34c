"""The compact idempotency table behaves like the ordered dict it replaces."""

from __future__ import annotations

from collections import OrderedDict

from fastpaca_server.core.idempotency import IdempotencyTable, Remembered, fingerprint_digest
from hypothesis import given, settings
from hypothesis import strategies as st


def remembered(n: int) -> Remembered:
    return Remembered(
        fingerprint=fingerprint_digest(f"f{n}"),
        version=n * 7 + 1,
        first_seq=n * 3,
        used_tokens=n * 11,
        count=n % 1000 + 1,
        compaction=n % 3 == 0,
        needs_compaction=n % 2 == 0,
    )


operations = st.lists(
    st.tuples(
        st.sampled_from(["add", "add", "add", "get"]), st.integers(0, 60), st.integers(0, 10**6)
    ),
    max_size=400,
)


@settings(max_examples=300, deadline=None)
@given(operations=operations, limit=st.integers(1, 40))
def test_the_table_is_an_ordered_dict_that_forgets_its_oldest_keys(
    operations: list[tuple[str, int, int]], limit: int
) -> None:
    table = IdempotencyTable()
    model: OrderedDict[str, Remembered] = OrderedDict()
    for operation, key_number, value in operations:
        key = f"key-{key_number}"
        if operation == "add":
            table.add(key, remembered(value), limit)
            model.pop(key, None)
            model[key] = remembered(value)
            while len(model) > limit:
                model.popitem(last=False)
        assert table.get(key) == model.get(key)
        assert len(table) == len(model)
    for key, value in model.items():
        assert table.get(key) == value
    restored = IdempotencyTable.from_text(table.to_text())
    assert restored == table
    assert list(restored) == list(table)
    for key, value in model.items():
        assert restored.get(key) == value


def test_ten_thousand_keys_stay_under_a_hundred_bytes_each() -> None:
    table = IdempotencyTable()
    for n in range(10_000):
        table.add(f"request-{n}", remembered(n), 10_000)
    size = len(table._slots) + len(table._ring)
    assert size / 10_000 <= 100, size / 10_000
    assert len(table.to_text()) / 10_000 <= 100
    assert table.get("request-0") == remembered(0)
    table.add("request-new", remembered(1), 10_000)
    assert "request-0" not in table and "request-1" in table
