"""Bad input: a clear 4xx in the spec's error shape, and nothing changes (guarantee 6).

Every case checks the status, the body ``{"error": code, "message": str}`` with
the expected code, and that the context (config, version, last_seq, metadata,
log and window) is exactly as before. The spec-checking client fails any 500.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server._api import (
    JSON,
    Api,
    assert_error,
    connect,
    new_id,
    strict_json,
    text_message,
)
from tests.support.server import ServerProcess

BUDGET = 1000
OK_MESSAGE = text_message("hello")


@pytest.fixture
def context_id(api: Api) -> str:
    """A context with one message and some metadata."""
    context_id = api.create(token_budget=BUDGET, metadata={"owner": "test"})["id"]
    api.append(context_id, text_message("first"))
    return context_id


def snapshot(api: Api, context_id: str) -> tuple[JSON, JSON, JSON]:
    tail = api.get(f"/v1/contexts/{context_id}/tail", params={"limit": 1000}).json()
    return api.context(context_id), tail, api.window(context_id)


def refused(
    api: Api, context_id: str, method: str, path: str, status: int, code: str, **kwargs: Any
) -> JSON:
    """Send a request that must be refused; check the error and that nothing changed."""
    before = snapshot(api, context_id)
    response = api.request(method, f"/v1/contexts/{context_id}{path}", **kwargs)
    body = assert_error(response, status, code)
    assert snapshot(api, context_id) == before
    return body


def message_with(**fields: Any) -> JSON:
    message: JSON = {"role": "user", "parts": [{"type": "text", "text": "x"}]}
    for key, value in fields.items():
        if value is _DROP:
            message.pop(key)
        else:
            message[key] = value
    return message


_DROP = object()


# --- bodies that are not JSON objects ------------------------------------------------------

NOT_JSON = {
    "garbage": b"{bad",
    "empty": b"",
    "truncated": b'{"token_budget": 1000',
    "trailing": b'{"token_budget": 1000} {}',
    "array": b"[1, 2]",
    "string": b'"text"',
    "null": b"null",
    "number": b"42",
    "nan": b'{"token_budget": NaN}',
    "infinity": b'{"token_budget": Infinity}',
    "minus_infinity": b'{"token_budget": -Infinity}',
    "nan_nested": b'{"token_budget": 10, "metadata": {"x": [NaN]}}',
    "invalid_utf8": b'{"token_budget": 10, "metadata": {"x": "\xff\xfe"}}',
    "utf16": '{"token_budget": 10}'.encode("utf-16"),
    "too_many_digits": b'{"token_budget": 1' + b"0" * 5000 + b"}",
    "deep_nesting": b'{"token_budget": 10, "metadata": {"x": '
    + b"[" * 100_000
    + b"]" * 100_000
    + b"}}",
}

WRITE_ROUTES = [
    ("PUT", ""),
    ("POST", "/messages"),
    ("PATCH", "/metadata"),
    ("POST", "/compact"),
]


@pytest.mark.parametrize("route", WRITE_ROUTES, ids=lambda r: f"{r[0]}{r[1] or '/'}")
@pytest.mark.parametrize("content", list(NOT_JSON.values()), ids=list(NOT_JSON))
def test_bodies_that_are_not_json_objects(
    api: Api, context_id: str, route: tuple[str, str], content: bytes
) -> None:
    method, path = route
    refused(api, context_id, method, path, 400, "invalid_json", content=content)


# --- PUT /v1/contexts/{id} ---------------------------------------------------------------

PUT_CASES: dict[str, tuple[JSON, str]] = {
    "budget_string": ({"token_budget": "1000"}, "invalid_request"),
    "budget_bool": ({"token_budget": True}, "invalid_request"),
    "budget_fraction": ({"token_budget": 1000.5}, "invalid_request"),
    "budget_zero": ({"token_budget": 0}, "invalid_request"),
    "budget_negative": ({"token_budget": -5}, "invalid_request"),
    "budget_huge": ({"token_budget": 10**30}, "invalid_request"),
    "budget_just_over_max": ({"token_budget": 10_000_001}, "invalid_request"),
    "budget_null": ({"token_budget": None}, "invalid_request"),
    "budget_missing": ({"trigger_ratio": 0.5}, "invalid_request"),
    "budget_list": ({"token_budget": [1000]}, "invalid_request"),
    "ratio_zero": ({"token_budget": 100, "trigger_ratio": 0}, "invalid_request"),
    "ratio_above_one": ({"token_budget": 100, "trigger_ratio": 1.5}, "invalid_request"),
    "ratio_negative": ({"token_budget": 100, "trigger_ratio": -0.5}, "invalid_request"),
    "ratio_string": ({"token_budget": 100, "trigger_ratio": "x"}, "invalid_request"),
    "ratio_bool": ({"token_budget": 100, "trigger_ratio": True}, "invalid_request"),
    "ratio_null": ({"token_budget": 100, "trigger_ratio": None}, "invalid_request"),
    "tokenizer_unknown": ({"token_budget": 100, "tokenizer": "gpt2"}, "invalid_request"),
    "tokenizer_number": ({"token_budget": 100, "tokenizer": 5}, "invalid_request"),
    "strategy_unknown": ({"token_budget": 100, "policy": {"strategy": "lru"}}, "invalid_request"),
    "strategy_missing": ({"token_budget": 100, "policy": {"config": {}}}, "invalid_request"),
    "policy_string": ({"token_budget": 100, "policy": "last_n"}, "invalid_request"),
    "policy_config_list": (
        {"token_budget": 100, "policy": {"strategy": "last_n", "config": []}},
        "invalid_request",
    ),
    "limit_zero": (
        {"token_budget": 100, "policy": {"strategy": "last_n", "config": {"limit": 0}}},
        "invalid_request",
    ),
    "limit_string": (
        {"token_budget": 100, "policy": {"strategy": "last_n", "config": {"limit": "5"}}},
        "invalid_request",
    ),
    "limit_huge": (
        {"token_budget": 100, "policy": {"strategy": "last_n", "config": {"limit": 10**18}}},
        "invalid_request",
    ),
    "skip_kinds_string": (
        {
            "token_budget": 100,
            "policy": {"strategy": "skip_parts", "config": {"skip_kinds": "tool"}},
        },
        "invalid_request",
    ),
    "skip_kinds_number": (
        {"token_budget": 100, "policy": {"strategy": "skip_parts", "config": {"skip_kinds": [1]}}},
        "invalid_request",
    ),
    "metadata_list": ({"token_budget": 100, "metadata": []}, "invalid_request"),
    "metadata_string": ({"token_budget": 100, "metadata": "x"}, "invalid_request"),
    "metadata_too_big": ({"token_budget": 100, "metadata": {"x": "y" * 70_000}}, "invalid_request"),
    "unknown_top_level": ({"token_budget": 100, "budget": 5}, "unknown_field"),
    "unknown_in_policy": (
        {"token_budget": 100, "policy": {"strategy": "last_n", "limit": 5}},
        "unknown_field",
    ),
    "unknown_in_last_n_config": (
        {"token_budget": 100, "policy": {"strategy": "last_n", "config": {"skip_kinds": []}}},
        "unknown_field",
    ),
    "unknown_in_manual_config": (
        {"token_budget": 100, "policy": {"strategy": "manual", "config": {"limit": 5}}},
        "unknown_field",
    ),
    "if_version_not_accepted": ({"token_budget": 100, "if_version": 1}, "unknown_field"),
}


@pytest.mark.parametrize(("body", "code"), list(PUT_CASES.values()), ids=list(PUT_CASES))
def test_bad_put_bodies(api: Api, context_id: str, body: JSON, code: str) -> None:
    refused(api, context_id, "PUT", "", 400, code, json=body)


@pytest.mark.parametrize(("body", "code"), list(PUT_CASES.values())[:8], ids=list(PUT_CASES)[:8])
def test_a_refused_put_creates_nothing(api: Api, body: JSON, code: str) -> None:
    context_id = new_id("never")
    assert_error(api.put(f"/v1/contexts/{context_id}", json=body), 400, code)
    assert_error(api.get(f"/v1/contexts/{context_id}"), 404, "not_found")


def test_changing_the_tokenizer_after_messages_is_refused(api: Api, context_id: str) -> None:
    refused(
        api,
        context_id,
        "PUT",
        "",
        409,
        "tokenizer_immutable",
        json={"token_budget": BUDGET, "tokenizer": "cl100k_base"},
    )


# --- POST /v1/contexts/{id}/messages --------------------------------------------------------

APPEND_CASES: dict[str, tuple[JSON, str]] = {
    "unknown_top_level": ({"message": OK_MESSAGE, "msg": 1}, "unknown_field"),
    "unknown_in_message": ({"message": message_with(content="hi")}, "unknown_field"),
    "unknown_in_batch_message": (
        {"messages": [OK_MESSAGE, message_with(name="bob")]},
        "unknown_field",
    ),
    "both_message_and_messages": (
        {"message": OK_MESSAGE, "messages": [OK_MESSAGE]},
        "invalid_request",
    ),
    "neither": ({}, "invalid_request"),
    "only_a_key": ({"idempotency_key": "k"}, "invalid_request"),
    "messages_empty": ({"messages": []}, "invalid_request"),
    "messages_object": ({"messages": OK_MESSAGE}, "invalid_request"),
    "messages_too_many": ({"messages": [OK_MESSAGE] * 1001}, "invalid_request"),
    "message_string": ({"message": "hello"}, "invalid_request"),
    "message_null": ({"message": None}, "invalid_request"),
    "role_missing": ({"message": message_with(role=_DROP)}, "invalid_request"),
    "role_number": ({"message": message_with(role=1)}, "invalid_request"),
    "role_empty": ({"message": message_with(role="")}, "invalid_request"),
    "role_too_long": ({"message": message_with(role="r" * 65)}, "invalid_request"),
    "parts_missing": ({"message": message_with(parts=_DROP)}, "invalid_request"),
    "parts_empty": ({"message": message_with(parts=[])}, "invalid_request"),
    "parts_object": (
        {"message": message_with(parts={"type": "text", "text": "x"})},
        "invalid_request",
    ),
    "part_string": ({"message": message_with(parts=["hello"])}, "invalid_request"),
    "part_without_type": ({"message": message_with(parts=[{"text": "x"}])}, "invalid_request"),
    "part_type_number": ({"message": message_with(parts=[{"type": 3}])}, "invalid_request"),
    "part_type_null": ({"message": message_with(parts=[{"type": None}])}, "invalid_request"),
    "part_type_empty": ({"message": message_with(parts=[{"type": ""}])}, "invalid_request"),
    "part_type_too_long": (
        {"message": message_with(parts=[{"type": "t" * 129}])},
        "invalid_request",
    ),
    "text_without_text": ({"message": message_with(parts=[{"type": "text"}])}, "invalid_request"),
    "text_number": (
        {"message": message_with(parts=[{"type": "text", "text": 5}])},
        "invalid_request",
    ),
    "tool_call_id_empty": (
        {
            "message": message_with(
                role="assistant", parts=[{"type": "tool_call", "id": "", "name": "f"}]
            )
        },
        "invalid_request",
    ),
    "tool_call_without_name": (
        {"message": message_with(role="assistant", parts=[{"type": "tool_call", "id": "c"}])},
        "invalid_request",
    ),
    "tool_call_id_number": (
        {"message": message_with(parts=[{"type": "tool_call", "id": 7, "name": "f"}])},
        "invalid_request",
    ),
    "tool_result_without_call_id": (
        {"message": message_with(role="tool", parts=[{"type": "tool_result", "output": "x"}])},
        "invalid_request",
    ),
    "tool_result_call_id_empty": (
        {"message": message_with(parts=[{"type": "tool_result", "tool_call_id": ""}])},
        "invalid_request",
    ),
    "second_part_bad": (
        {"message": message_with(parts=[{"type": "text", "text": "ok"}, {"type": "tool_call"}])},
        "invalid_request",
    ),
    "id_number": ({"message": message_with(id=5)}, "invalid_request"),
    "id_empty": ({"message": message_with(id="")}, "invalid_request"),
    "id_too_long": ({"message": message_with(id="i" * 257)}, "invalid_request"),
    "metadata_string": ({"message": message_with(metadata="x")}, "invalid_request"),
    "token_count_negative": ({"message": message_with(token_count=-1)}, "invalid_request"),
    "token_count_string": ({"message": message_with(token_count="5")}, "invalid_request"),
    "token_count_bool": ({"message": message_with(token_count=True)}, "invalid_request"),
    "token_count_float": ({"message": message_with(token_count=1.5)}, "invalid_request"),
    "token_count_huge": ({"message": message_with(token_count=10**30)}, "invalid_request"),
    "idempotency_key_empty": ({"message": OK_MESSAGE, "idempotency_key": ""}, "invalid_request"),
    "idempotency_key_number": ({"message": OK_MESSAGE, "idempotency_key": 5}, "invalid_request"),
    "idempotency_key_too_long": (
        {"message": OK_MESSAGE, "idempotency_key": "k" * 257},
        "invalid_request",
    ),
    "if_version_string": ({"message": OK_MESSAGE, "if_version": "2"}, "invalid_request"),
    "if_version_negative": ({"message": OK_MESSAGE, "if_version": -1}, "invalid_request"),
    "if_version_bool": ({"message": OK_MESSAGE, "if_version": True}, "invalid_request"),
    "if_version_huge": ({"message": OK_MESSAGE, "if_version": 10**30}, "invalid_request"),
    "over_budget_by_count": (
        {"message": message_with(token_count=BUDGET + 1)},
        "message_exceeds_budget",
    ),
    "over_budget_by_text": (
        {"message": text_message("many words here " * 400)},
        "message_exceeds_budget",
    ),
    "pinned_over_budget": (
        {
            "messages": [
                text_message("a", "system", token_count=600),
                text_message("b", "system", token_count=600),
            ]
        },
        "pinned_exceeds_budget",
    ),
}


@pytest.mark.parametrize(("body", "code"), list(APPEND_CASES.values()), ids=list(APPEND_CASES))
def test_bad_appends(api: Api, context_id: str, body: JSON, code: str) -> None:
    refused(api, context_id, "POST", "/messages", 400, code, json=body)


def test_a_bad_message_anywhere_in_a_batch_stores_nothing(api: Api, context_id: str) -> None:
    for position in range(3):
        batch = [text_message(f"ok {n}") for n in range(3)]
        batch[position] = message_with(parts=[])
        body = refused(
            api, context_id, "POST", "/messages", 400, "invalid_request", json={"messages": batch}
        )
        assert f"messages[{position}]" in body["message"]


# --- PATCH metadata, compact ------------------------------------------------------------------

OTHER_BODY_CASES: dict[str, tuple[str, str, JSON, str]] = {
    "patch_missing_metadata": ("PATCH", "/metadata", {}, "invalid_request"),
    "patch_metadata_null": ("PATCH", "/metadata", {"metadata": None}, "invalid_request"),
    "patch_metadata_list": ("PATCH", "/metadata", {"metadata": [1]}, "invalid_request"),
    "patch_metadata_too_big": (
        "PATCH",
        "/metadata",
        {"metadata": {"x": "y" * 70_000}},
        "invalid_request",
    ),
    "patch_unknown_field": ("PATCH", "/metadata", {"metadata": {}, "merge": True}, "unknown_field"),
    "patch_if_version_string": (
        "PATCH",
        "/metadata",
        {"metadata": {"a": 1}, "if_version": "x"},
        "invalid_request",
    ),
    "compact_missing_replacement": ("POST", "/compact", {}, "invalid_request"),
    "compact_replacement_object": (
        "POST",
        "/compact",
        {"replacement": OK_MESSAGE},
        "invalid_request",
    ),
    "compact_bad_message": (
        "POST",
        "/compact",
        {"replacement": [message_with(role=_DROP)]},
        "invalid_request",
    ),
    "compact_unknown_field": (
        "POST",
        "/compact",
        {"replacement": [], "mode": "x"},
        "unknown_field",
    ),
    "compact_unknown_in_message": (
        "POST",
        "/compact",
        {"replacement": [message_with(extra=1)]},
        "unknown_field",
    ),
    "compact_over_budget": (
        "POST",
        "/compact",
        {"replacement": [message_with(token_count=BUDGET + 1)]},
        "replacement_exceeds_budget",
    ),
}


@pytest.mark.parametrize(
    ("method", "path", "body", "code"), list(OTHER_BODY_CASES.values()), ids=list(OTHER_BODY_CASES)
)
def test_bad_patch_and_compact_bodies(
    api: Api, context_id: str, method: str, path: str, body: JSON, code: str
) -> None:
    refused(api, context_id, method, path, 400, code, json=body)


def test_patches_cannot_grow_metadata_past_the_limit(api: Api, context_id: str) -> None:
    first = api.patch(f"/v1/contexts/{context_id}/metadata", json={"metadata": {"a": "x" * 40_000}})
    assert first.status_code == 200
    body = refused(
        api,
        context_id,
        "PATCH",
        "/metadata",
        400,
        "metadata_too_large",
        json={"metadata": {"b": "y" * 40_000}},
    )
    assert "metadata" in body["message"]


# --- query strings --------------------------------------------------------------------------

QUERY_CASES: dict[str, tuple[str, str, str]] = {
    "tail_limit_zero": ("/tail", "limit=0", "invalid_request"),
    "tail_limit_1001": ("/tail", "limit=1001", "invalid_request"),
    "tail_limit_negative": ("/tail", "limit=-1", "invalid_request"),
    "tail_limit_word": ("/tail", "limit=abc", "invalid_request"),
    "tail_limit_fraction": ("/tail", "limit=1.5", "invalid_request"),
    "tail_limit_empty": ("/tail", "limit=", "invalid_request"),
    "tail_limit_plus": ("/tail", "limit=%2B5", "invalid_request"),
    "tail_limit_spaces": ("/tail", "limit=%205", "invalid_request"),
    "tail_limit_fullwidth_digit": ("/tail", "limit=%EF%BC%95", "invalid_request"),
    "tail_limit_huge": ("/tail", "limit=" + "9" * 19, "invalid_request"),
    "tail_limit_huger": ("/tail", "limit=" + "9" * 40, "invalid_request"),
    "tail_limit_repeated": ("/tail", "limit=5&limit=6", "invalid_request"),
    "tail_offset_negative": ("/tail", "offset=-1", "invalid_request"),
    "tail_offset_huge": ("/tail", "offset=" + "9" * 25, "invalid_request"),
    "tail_unknown": ("/tail", "cursor=5", "unknown_field"),
    "tail_unknown_flag": ("/tail", "reverse", "unknown_field"),
    "messages_after_negative": ("/messages", "after_seq=-1", "invalid_request"),
    "messages_after_huge": ("/messages", "after_seq=" + "1" * 30, "invalid_request"),
    "messages_before_zero": ("/messages", "before_seq=0", "invalid_request"),
    "messages_before_word": ("/messages", "before_seq=last", "invalid_request"),
    "messages_limit_zero": ("/messages", "limit=0", "invalid_request"),
    "messages_limit_1001": ("/messages", "limit=1001", "invalid_request"),
    "messages_unknown": ("/messages", "offset=5", "unknown_field"),
    "window_budget_zero": ("/context", "budget_tokens=0", "invalid_request"),
    "window_budget_huge": ("/context", "budget_tokens=" + "9" * 30, "invalid_request"),
    "window_budget_over_max": ("/context", "budget_tokens=10000001", "invalid_request"),
    "window_budget_word": ("/context", "budget_tokens=lots", "invalid_request"),
    "window_if_version_negative": ("/context", "if_version=-1", "invalid_request"),
    "window_if_version_word": ("/context", "if_version=latest", "invalid_request"),
    "window_unknown": ("/context", "limit=5", "unknown_field"),
    "context_unknown": ("", "verbose=1", "unknown_field"),
}


@pytest.mark.parametrize(
    ("path", "query", "code"), list(QUERY_CASES.values()), ids=list(QUERY_CASES)
)
def test_bad_query_strings(api: Api, context_id: str, path: str, query: str, code: str) -> None:
    refused(api, context_id, "GET", f"{path}?{query}", 400, code)


def test_delete_with_a_query_string_is_refused_and_does_not_tombstone(
    api: Api, context_id: str
) -> None:
    refused(api, context_id, "DELETE", "?force=1", 400, "unknown_field")
    assert api.context(context_id)["status"] == "active"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/messages", {"message": OK_MESSAGE}),
        ("PATCH", "/metadata", {"metadata": {"a": 1}}),
        ("PUT", "", {"token_budget": 50}),
        ("POST", "/compact", {"replacement": []}),
    ],
    ids=["append", "patch", "put", "compact"],
)
def test_write_routes_refuse_query_parameters(
    api: Api, context_id: str, method: str, path: str, body: JSON
) -> None:
    refused(api, context_id, method, f"{path}?if_version=1", 400, "unknown_field", json=body)


# --- context ids ----------------------------------------------------------------------------

BAD_IDS = {
    "too_long": "a" * 257,
    "space": "a%20b",
    "only_space": "%20",
    "tab": "%09",
    "newline": "a%0Ab",
    "nul": "a%00",
    "slash": "a%2Fb",
    "plus": "a+b",
    "at": "a@b",
    "unicode": "caf%C3%A9",
    "cjk": "%E6%97%A5%E6%9C%AC",
    "emoji": "%F0%9F%98%80",
    "percent": "a%25b",
}

ID_ROUTES = [
    ("PUT", "", {"json": {"token_budget": 100}}),
    ("GET", "", {}),
    ("DELETE", "", {}),
    ("POST", "/messages", {"json": {"message": OK_MESSAGE}}),
    ("GET", "/tail", {}),
    ("GET", "/messages", {}),
    ("GET", "/context", {}),
    ("PATCH", "/metadata", {"json": {"metadata": {}}}),
    ("POST", "/compact", {"json": {"replacement": []}}),
]


@pytest.mark.parametrize("route", ID_ROUTES, ids=lambda r: f"{r[0]}{r[1] or '/'}")
@pytest.mark.parametrize("bad_id", list(BAD_IDS.values()), ids=list(BAD_IDS))
def test_bad_context_ids(api: Api, bad_id: str, route: tuple[str, str, dict]) -> None:
    method, path, kwargs = route
    response = api.request(method, f"/v1/contexts/{bad_id}{path}", **kwargs)
    assert_error(response, 400, "invalid_context_id")


def test_the_longest_and_oddest_valid_ids_work(api: Api) -> None:
    for context_id in ("a" * 256, "A.b_c:d-e", "0", "urn:chat:2025-01-01"):
        api.create(context_id)
        assert api.context(context_id)["id"] == context_id


def test_an_empty_context_id_has_no_route(api: Api) -> None:
    assert_error(api.raw.put("/v1/contexts/", json={"token_budget": 10}), 404, "not_found")
    assert_error(api.raw.get("/v1/contexts//tail"), 404, "not_found")


# --- 404, 405 --------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ID_ROUTES[1:], ids=lambda r: f"{r[0]}{r[1] or '/'}")
def test_unknown_context_is_404(api: Api, route: tuple[str, str, dict]) -> None:
    method, path, kwargs = route
    context_id = new_id("missing")
    assert_error(
        api.request(method, f"/v1/contexts/{context_id}{path}", **kwargs), 404, "not_found"
    )
    assert_error(api.get(f"/v1/contexts/{context_id}"), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/nope"),
        ("GET", "/v1/context"),
        ("POST", "/v1/contexts/"),
        ("GET", "/v1/contexts/abc/unknown"),
        ("POST", "/v2/contexts/abc/messages"),
        ("GET", "/"),
    ],
)
def test_unknown_routes_are_404(api: Api, method: str, path: str) -> None:
    assert_error(api.raw.request(method, path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/contexts/abc"),
        ("PUT", "/v1/contexts/abc/messages"),
        ("DELETE", "/v1/contexts/abc/tail"),
        ("GET", "/v1/contexts/abc/compact"),
        ("POST", "/health/live"),
    ],
)
def test_wrong_methods_are_405(api: Api, method: str, path: str) -> None:
    response = api.raw.request(method, path)
    assert_error(response, 405, "method_not_allowed")
    assert response.headers.get("Allow")


# --- numbers JSON cannot carry, strings UTF-8 cannot carry ------------------------------------


OVERFLOW_CASES = {
    "put_metadata": ("PUT", "", b'{"token_budget": 1000, "metadata": {"x": 1e400}}'),
    "patch_metadata": ("PATCH", "/metadata", b'{"metadata": {"x": 1e400}}'),
    "patch_negative": ("PATCH", "/metadata", b'{"metadata": {"x": [-1E999]}}'),
    "message_part": (
        "POST",
        "/messages",
        b'{"message": {"role": "user", "parts": [{"type": "data", "v": 1e400}]}}',
    ),
    "message_metadata": (
        "POST",
        "/messages",
        b'{"message": {"role": "user", "metadata": {"t": 1e400}, '
        b'"parts": [{"type": "text", "text": "x"}]}}',
    ),
    "token_budget": ("PUT", "", b'{"token_budget": 1e400}'),
    "trigger_ratio": ("PUT", "", b'{"token_budget": 1000, "trigger_ratio": 1e400}'),
}


@pytest.mark.parametrize(
    ("method", "path", "content"),
    [pytest.param(*case, id=name) for name, case in OVERFLOW_CASES.items()],
)
def test_numbers_that_overflow_are_refused(
    api: Api, context_id: str, method: str, path: str, content: bytes
) -> None:
    before = snapshot(api, context_id)
    response = api.request(method, f"/v1/contexts/{context_id}{path}", content=content)
    assert response.status_code == 400, response.text
    assert strict_json(response.content)["error"] in ("invalid_json", "invalid_request")
    assert snapshot(api, context_id) == before


SURROGATE_CASES = {
    "message_text": (
        "POST",
        "/messages",
        b'{"message": {"role": "user", "parts": [{"type": "text", "text": "a\\ud800b"}]}}',
    ),
    "message_text_with_key": (
        "POST",
        "/messages",
        b'{"idempotency_key": "k1", '
        b'"message": {"role": "user", "parts": [{"type": "text", "text": "a\\ud800b"}]}}',
    ),
    "message_metadata": (
        "POST",
        "/messages",
        b'{"message": {"role": "user", "metadata": {"m": "\\udfff"}, '
        b'"parts": [{"type": "text", "text": "x"}]}}',
    ),
    "patch_metadata": ("PATCH", "/metadata", b'{"metadata": {"m": "\\ud83d"}}'),
    "put_metadata": ("PUT", "", b'{"token_budget": 1000, "metadata": {"m": "\\ud83d"}}'),
}


@pytest.mark.parametrize(
    ("method", "path", "content"),
    [pytest.param(*case, id=name) for name, case in SURROGATE_CASES.items()],
)
def test_lone_surrogates_never_crash_the_server(
    api: Api, context_id: str, method: str, path: str, content: bytes
) -> None:
    """A lone surrogate may be refused (400) or stored as sent; never a 500."""
    before = snapshot(api, context_id)
    response = api.request(method, f"/v1/contexts/{context_id}{path}", content=content)
    if response.status_code == 400:
        assert strict_json(response.content)["error"] in ("invalid_json", "invalid_request")
        assert snapshot(api, context_id) == before
    else:
        assert response.status_code in (200, 201), response.text
        sent = json.loads(content)
        if path == "/messages":
            stored = api.log(context_id)[-1]
            assert stored["parts"] == sent["message"]["parts"]
            assert stored["metadata"] == sent["message"].get("metadata")
        else:
            assert api.context(context_id)["metadata"]["m"] == sent["metadata"]["m"]


# --- unicode is data ----------------------------------------------------------------------------

UNICODE_TEXTS = [
    "héllo wörld ñ ç ß",
    "日本語 中文 한국어",
    "مرحبا بالعالم עברית",
    "👩‍👩‍👧‍👦 👍🏽 🇳🇴 🏳️‍🌈",
    "e\u0301 vs é (NFC and NFD differ)",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟘𝟙𝟚 \U0010fffd",  # noqa: RUF001 - look-alikes on purpose
    "zero\u200bwidth\u200djoiner \ufeffbom \u2028line\u2029para",
    "nul\u0000byte and \x01\x1f controls",
    'quotes " \\ backslash / slash',
    "\uffff\ufffe noncharacters",
]


@pytest.mark.parametrize("ensure_ascii", [False, True], ids=["utf8", "escaped"])
def test_unicode_round_trips_exactly(api: Api, ensure_ascii: bool) -> None:
    context_id = api.create(token_budget=100_000)["id"]
    metadata = {"名前": "値", "emoji 🎉": ["✓", {"ключ": "значение"}]}
    messages = [
        {
            "id": f"msg-ünï-{n}-🙂",
            "role": "user" if n % 2 else "assistant",
            "parts": [
                {"type": "text", "text": text},
                {"type": "data-ünicode", "payload": {"text": text, "ключ": [text]}},
            ],
            "metadata": {"label": text},
        }
        for n, text in enumerate(UNICODE_TEXTS)
    ]
    body = json.dumps({"messages": messages}, ensure_ascii=ensure_ascii).encode()
    response = api.post(
        f"/v1/contexts/{context_id}/messages",
        content=body,
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 201, response.text
    assert [m["id"] for m in response.json()["messages"]] == [m["id"] for m in messages]

    patch = json.dumps({"metadata": metadata}, ensure_ascii=ensure_ascii).encode()
    assert api.patch(f"/v1/contexts/{context_id}/metadata", content=patch).status_code == 200

    stored = api.log(context_id)
    assert [{k: m[k] for k in ("id", "role", "parts", "metadata")} for m in stored] == messages
    window = api.window(context_id)["messages"]
    assert [m["parts"] for m in window] == [m["parts"] for m in messages]
    assert api.context(context_id)["metadata"] == metadata


# --- body size ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("small-body") / "data"
    process = ServerProcess(data_dir, "--max-body-bytes", "2048").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def small_api(small_server: ServerProcess) -> Iterator[Api]:
    client = connect(small_server)
    yield client
    client.close()


def test_a_body_under_the_limit_is_accepted(small_api: Api) -> None:
    context_id = small_api.create()["id"]
    body = json.dumps({"message": text_message("x" * 1800)}).encode()
    assert len(body) < 2048
    response = small_api.post(f"/v1/contexts/{context_id}/messages", content=body)
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/messages", {"message": text_message("x" * 3000)}),
        ("PUT", "", {"token_budget": 100, "metadata": {"x": "y" * 3000}}),
        ("PATCH", "/metadata", {"metadata": {"x": "y" * 3000}}),
        ("POST", "/compact", {"replacement": [text_message("x" * 3000)]}),
    ],
    ids=["append", "put", "patch", "compact"],
)
def test_a_body_over_the_limit_is_413(small_api: Api, method: str, path: str, body: JSON) -> None:
    context_id = small_api.create(policy={"strategy": "manual"})["id"]
    refused(small_api, context_id, method, path, 413, "body_too_large", json=body)
