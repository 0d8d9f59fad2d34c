"""Paging through a long log: /tail (newest first) and /messages (by seq), and atomic batches."""

from __future__ import annotations

import pytest

from tests.server._api import Api, assert_error, new_id, state, text_message

TOTAL = 263


@pytest.fixture(scope="module")
def long_log(api: Api) -> str:
    """A context with TOTAL messages whose text is their expected seq."""
    context_id = new_id("long")
    api.create(context_id, token_budget=1_000_000)
    seq = 0
    for batch_size in (1, 100, 7, 150, 5):
        batch = [text_message(f"m{seq + i + 1}") for i in range(batch_size)]
        result = api.append(context_id, *batch)
        assert [m["seq"] for m in result["messages"]] == list(range(seq + 1, seq + batch_size + 1))
        seq += batch_size
    assert seq == TOTAL
    return context_id


def seqs(page: dict) -> list[int]:
    for message in page["messages"]:
        assert message["parts"][0]["text"] == f"m{message['seq']}"
    return [message["seq"] for message in page["messages"]]


def tail(api: Api, context_id: str, **params: int) -> dict:
    response = api.get(f"/v1/contexts/{context_id}/tail", params=params)
    assert response.status_code == 200
    return response.json()


def messages(api: Api, context_id: str, **params: int) -> dict:
    response = api.get(f"/v1/contexts/{context_id}/messages", params=params)
    assert response.status_code == 200
    return response.json()


def test_tail_defaults_to_the_newest_hundred(api: Api, long_log: str) -> None:
    """As in the original Fastpaca, whose SDK's getTail() sends no limit by default."""
    page = tail(api, long_log)
    assert seqs(page) == list(range(TOTAL - 99, TOTAL + 1))
    assert page["has_more"] is True
    assert page["last_seq"] == TOTAL


@pytest.mark.parametrize("limit", [1, 37, 50, 100, 1000])
def test_tail_pages_newest_first_each_page_oldest_first(
    api: Api, long_log: str, limit: int
) -> None:
    pages = []
    offset = 0
    while True:
        page = tail(api, long_log, offset=offset, limit=limit)
        page_seqs = seqs(page)
        assert page_seqs == sorted(page_seqs)
        assert page_seqs[-1] == TOTAL - offset
        assert len(page_seqs) == min(limit, TOTAL - offset)
        assert page["last_seq"] == TOTAL
        pages.append(page_seqs)
        offset += len(page_seqs)
        assert page["has_more"] is (offset < TOTAL)
        if not page["has_more"]:
            break
    everything = [seq for page_seqs in reversed(pages) for seq in page_seqs]
    assert everything == list(range(1, TOTAL + 1))


def test_tail_past_the_beginning_is_empty(api: Api, long_log: str) -> None:
    for offset in (TOTAL, TOTAL + 1, 10**12):
        page = tail(api, long_log, offset=offset, limit=10)
        assert page["messages"] == []
        assert page["has_more"] is False
        assert page["last_seq"] == TOTAL
    partial = tail(api, long_log, offset=TOTAL - 3, limit=10)
    assert seqs(partial) == [1, 2, 3]
    assert partial["has_more"] is False


def test_messages_page_forward_by_after_seq(api: Api, long_log: str) -> None:
    collected: list[int] = []
    while True:
        page = messages(api, long_log, after_seq=len(collected), limit=100)
        page_seqs = seqs(page)
        assert page_seqs == list(range(len(collected) + 1, len(collected) + len(page_seqs) + 1))
        collected.extend(page_seqs)
        assert page["has_more"] is (len(collected) < TOTAL)
        if not page["has_more"]:
            break
    assert collected == list(range(1, TOTAL + 1))
    assert seqs(messages(api, long_log, limit=1000)) == collected


def test_messages_ranges(api: Api, long_log: str) -> None:
    default = messages(api, long_log)
    assert seqs(default) == list(range(1, 51))
    assert default["has_more"] is True

    below = messages(api, long_log, before_seq=50)
    assert seqs(below) == list(range(1, 50))
    assert below["has_more"] is False

    window = messages(api, long_log, after_seq=10, before_seq=20)
    assert seqs(window) == list(range(11, 20))
    assert window["has_more"] is False

    limited = messages(api, long_log, after_seq=10, before_seq=20, limit=4)
    assert seqs(limited) == [11, 12, 13, 14]
    assert limited["has_more"] is True

    last = messages(api, long_log, after_seq=TOTAL - 2)
    assert seqs(last) == [TOTAL - 1, TOTAL]
    assert last["has_more"] is False

    for params in (
        {"after_seq": TOTAL},
        {"after_seq": TOTAL + 100},
        {"after_seq": 20, "before_seq": 21},
        {"after_seq": 20, "before_seq": 5},
        {"before_seq": 1},
    ):
        empty = messages(api, long_log, **params)
        assert empty["messages"] == [], params
        assert empty["has_more"] is False, params
        assert empty["last_seq"] == TOTAL


def test_tail_and_messages_agree(api: Api, long_log: str) -> None:
    by_seq = messages(api, long_log, after_seq=TOTAL - 20, limit=20)
    newest = tail(api, long_log, limit=20)
    assert by_seq["messages"] == newest["messages"]


def test_empty_context_pages(api: Api) -> None:
    context_id = api.create()["id"]
    for page in (tail(api, context_id), messages(api, context_id)):
        assert page == {"messages": [], "last_seq": 0, "has_more": False}


def test_batch_append_is_atomic(api: Api) -> None:
    context_id = api.create(token_budget=100)["id"]
    api.append(context_id, text_message("first"))
    before = state(api, context_id)

    invalid = [text_message("ok"), {"role": "user"}, text_message("also ok")]
    response = api.post(f"/v1/contexts/{context_id}/messages", json={"messages": invalid})
    assert_error(response, 400, "invalid_request")
    assert "messages[1]" in response.json()["message"]
    assert state(api, context_id) == before

    too_big = [text_message("ok"), text_message("x", token_count=101), text_message("ok")]
    response = api.post(f"/v1/contexts/{context_id}/messages", json={"messages": too_big})
    assert_error(response, 400, "message_exceeds_budget")
    assert state(api, context_id) == before
    assert [m["parts"][0]["text"] for m in api.log(context_id)] == ["first"]

    valid = [text_message(f"b{i}") for i in range(3)]
    result = api.append(context_id, *valid)
    assert [m["seq"] for m in result["messages"]] == [2, 3, 4]
    assert result["last_seq"] == 4
    assert [m["parts"][0]["text"] for m in api.log(context_id)] == ["first", "b0", "b1", "b2"]
    assert result["version"] > before[0]
