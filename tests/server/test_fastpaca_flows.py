"""The original Fastpaca's documented flows, and the window's promises, against a real server.

Users migrate from the original Fastpaca (Elixir) and its TypeScript SDK
``@fastpaca/fastpaca`` 0.1. :class:`OriginalSdk` sends exactly what that SDK
sends (base URL with ``/v1``, its bodies, no idempotency keys) and reads
exactly what it reads, so these tests fail when our server breaks code
written against it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.server._api import (
    JSON,
    Api,
    assert_error,
    check_response,
    new_id,
    state,
    text_message,
    tool_call_message,
    tool_result_message,
)
from tests.support.server import ServerProcess


class OriginalSdk:
    """The HTTP calls of ``@fastpaca/fastpaca`` 0.1.1, field for field."""

    def __init__(self, server: ServerProcess) -> None:
        self.http = httpx.Client(
            base_url=f"{server.url}/v1", timeout=30, event_hooks={"response": [self._check]}
        )

    @staticmethod
    def _check(response: httpx.Response) -> None:
        response.read()
        check_response(response)  # every answer also matches our spec
        if not response.is_success:  # the SDK throws "Failed to …: statusText"
            raise RuntimeError(f"Failed: {response.status_code} {response.reason_phrase}")

    def context(self, context_id: str, **options: Any) -> str:
        if options:
            body = {
                "token_budget": options.get("budget"),
                "trigger_ratio": options.get("trigger"),
                "policy": options.get("policy"),
                "metadata": options.get("metadata"),
            }
            self.http.put(
                f"/contexts/{context_id}", json={k: v for k, v in body.items() if v is not None}
            )
        return context_id

    def append(
        self,
        context_id: str,
        message: JSON,
        if_version: int | None = None,
        token_count: int | None = None,
    ) -> JSON:
        sent: JSON = {"role": message["role"], "parts": message["parts"]}  # id/metadata dropped
        if token_count is not None:
            sent["token_count"] = token_count
        body: JSON = {"message": sent}
        if if_version is not None:
            body["if_version"] = if_version
        answer = self.http.post(f"/contexts/{context_id}/messages", json=body).json()
        return {key: answer[key] for key in ("seq", "version", "token_estimate")}

    def window(self, context_id: str, **params: int) -> JSON:
        answer = self.http.get(f"/contexts/{context_id}/context", params=params).json()
        keys = ("version", "messages", "used_tokens", "needs_compaction", "segments")
        return {key: answer[key] for key in keys}

    def compact(
        self, context_id: str, replacement: list[JSON], if_version: int | None = None
    ) -> int:
        body: JSON = {"replacement": replacement}
        if if_version is not None:
            body["if_version"] = if_version
        version: int = self.http.post(f"/contexts/{context_id}/compact", json=body).json()[
            "version"
        ]
        return version

    def get_tail(self, context_id: str, **params: int) -> list[JSON]:
        messages: list[JSON] = self.http.get(f"/contexts/{context_id}/tail", params=params).json()[
            "messages"
        ]
        return messages

    def delete_context(self, context_id: str) -> None:
        self.http.delete(f"/contexts/{context_id}")


@pytest.fixture(scope="module")
def sdk(server: ServerProcess) -> Iterator[OriginalSdk]:
    client = OriginalSdk(server)
    yield client
    client.http.close()


# --- the original SDK's flows -----------------------------------------------------------


def test_original_sdk_create_append_read_and_page(sdk: OriginalSdk, api: Api) -> None:
    context_id = sdk.context(
        new_id(), budget=8000, trigger=0.7, policy={"strategy": "last_n", "config": {"limit": 400}}
    )
    first = sdk.append(context_id, text_message("What changed?"))
    assert first == {"seq": 1, "version": 2, "token_estimate": 7}
    second = sdk.append(
        context_id, text_message("Nothing.", "assistant"), if_version=2, token_count=42
    )
    assert second == {"seq": 2, "version": 3, "token_estimate": 42}
    with pytest.raises(RuntimeError, match="409"):
        sdk.append(context_id, text_message("stale"), if_version=2)
    assert api.context(context_id)["last_seq"] == 2
    window = sdk.window(context_id)
    assert [m["seq"] for m in window["messages"]] == [1, 2]
    assert (window["version"], window["used_tokens"]) == (3, 49)
    for n in range(3, 8):
        sdk.append(context_id, text_message(f"m{n}"))
    assert [m["seq"] for m in sdk.get_tail(context_id)] == list(range(1, 8))
    assert [m["seq"] for m in sdk.get_tail(context_id, limit=3)] == [5, 6, 7]
    assert [m["seq"] for m in sdk.get_tail(context_id, offset=3, limit=3)] == [2, 3, 4]
    sdk.delete_context(context_id)
    assert api.context(context_id)["status"] == "tombstoned"


def test_original_sdk_manual_compaction_with_the_remaining_messages(
    sdk: OriginalSdk, api: Api
) -> None:
    """Its docs: read the window, summarise, compact([summary, ...remainingMessages])."""
    context_id = sdk.context(new_id(), budget=200, policy={"strategy": "manual", "config": {}})
    for n in range(6):
        result = sdk.append(context_id, text_message(f"m{n}"), token_count=45)
    assert api.context(context_id)["needs_compaction"] is True
    window = sdk.window(context_id)
    assert len(window["messages"]) == 6  # manual keeps everything and tells you
    assert window["needs_compaction"] is True
    assert window["used_tokens"] == 270 == api.context(context_id)["used_tokens"]
    summary = {"role": "system", "parts": [{"type": "text", "text": "Summary of m0-m3."}]}
    remaining = window["messages"][4:]
    version = sdk.compact(context_id, [summary, *remaining], if_version=window["version"])
    assert version == result["version"] + 1
    after = sdk.window(context_id)
    assert [m["seq"] for m in after["messages"]] == [None, 5, 6]
    kept = after["messages"][1:]
    for before, now in zip(remaining, kept, strict=True):
        assert {k: now[k] for k in ("seq", "id", "token_count", "created_at")} == {
            k: before[k] for k in ("seq", "id", "token_count", "created_at")
        }
    assert after["segments"][1:] == [
        {"type": "log", "from_seq": 5, "to_seq": 6, "count": 2, "tokens": 90}
    ]
    assert after["needs_compaction"] is False
    # Compacting again with what was read (the summary now has seq null) works too.
    again = sdk.compact(context_id, after["messages"], if_version=after["version"])
    assert sdk.window(context_id)["messages"][1:] == kept
    assert again == after["version"] + 1
    assert len(api.log(context_id)) == 6  # the log is untouched


# --- GET …/context: the whole window, one used_tokens ---------------------------------


def test_a_manual_window_is_returned_whole_and_trimmed_only_on_request(api: Api) -> None:
    context_id = api.create(token_budget=200, policy={"strategy": "manual"})["id"]
    system = {**text_message("You are terse.", "system"), "token_count": 250}
    appended = api.append(context_id, system)
    for n in range(6):
        appended = api.append(context_id, {**text_message(f"m{n}"), "token_count": 45})
    window = api.window(context_id)  # no budget_tokens: no 400 although pinned > budget
    assert len(window["messages"]) == 7
    assert window["used_tokens"] == 520 == appended["used_tokens"]
    assert window["used_tokens"] == api.context(context_id)["used_tokens"]
    assert window["budget_tokens"] == 200
    trimmed = api.window(context_id, budget_tokens=400)
    assert [m["role"] for m in trimmed["messages"]] == ["system", "user", "user", "user"]
    assert trimmed["used_tokens"] == 385
    response = api.get(f"/v1/contexts/{context_id}/context", params={"budget_tokens": 100})
    assert_error(response, 400, "budget_too_small")


@pytest.mark.parametrize(
    "policy",
    [
        {"strategy": "last_n", "config": {"limit": 5}},
        {"strategy": "skip_parts", "config": {"limit": 6}},
        {"strategy": "manual"},
    ],
)
def test_the_window_and_the_context_agree_on_used_tokens(api: Api, policy: JSON) -> None:
    context_id = api.create(token_budget=120, trigger_ratio=0.6, policy=policy)["id"]
    turns: list[JSON] = []
    for n in range(12):
        turns = [
            text_message(f"question {n} " + "word " * (n % 4)),
            tool_call_message(f"call-{n}", f"q{n}"),
            tool_result_message(f"call-{n}", "result " * (n % 3 + 1)),
            text_message(f"answer {n}", "assistant"),
        ]
        for message in turns:
            appended = api.append(context_id, message)
            window = api.window(context_id)
            context = api.context(context_id)
            assert window["version"] == context["version"] == appended["version"]
            assert window["used_tokens"] == context["used_tokens"] == appended["used_tokens"]
            assert window["used_tokens"] == sum(m["token_count"] for m in window["messages"])


# --- compaction that keeps messages ----------------------------------------------------


def test_compact_refuses_kept_messages_that_were_changed(api: Api) -> None:
    context_id = api.create()["id"]
    api.append(context_id, text_message("one"), text_message("two", "assistant"))
    read = api.window(context_id)["messages"]
    before = state(api, context_id)
    url = f"/v1/contexts/{context_id}/compact"
    edited = {**read[1], "parts": [{"type": "text", "text": "rewritten"}]}
    assert_error(api.post(url, json={"replacement": [edited]}), 400, "kept_message_mismatch")
    assert_error(api.post(url, json={"replacement": [{**read[0], "seq": 3}]}), 400, "unknown_seq")
    twice = {"replacement": [read[1], read[0]]}
    assert_error(api.post(url, json=twice), 400, "invalid_request")
    assert state(api, context_id) == before
    # Read-only fields are ignored: a wrong token_count or created_at changes nothing kept.
    fudged = {**read[0], "token_count": 999, "created_at": "1999-01-01T00:00:00.000Z"}
    api.post(url, json={"replacement": [fudged]})
    assert api.window(context_id)["messages"] == [read[0]]
    blank = {**read[0], "created_at": ""}  # any string: it is ignored
    assert api.post(url, json={"replacement": [blank]}).status_code == 200
    # Without its seq, the same message is a new one.
    new = {key: value for key, value in read[1].items() if key != "seq"}
    api.post(url, json={"replacement": [new]})
    window = api.window(context_id)
    assert window["messages"][0]["seq"] is None
    assert window["segments"] == [
        {"type": "replacement", "count": 1, "tokens": read[1]["token_count"]}
    ]


# --- append answers and messages the original accepts ------------------------------------


def test_single_appends_answer_seq_and_token_estimate_batches_do_not(api: Api) -> None:
    context_id = api.create()["id"]
    single = api.append(context_id, text_message("hello"))
    assert (single["seq"], single["token_estimate"]) == (1, single["messages"][0]["token_count"])
    batch = api.append(context_id, text_message("a"), text_message("b"))
    assert "seq" not in batch and "token_estimate" not in batch
    replay = api.post(
        f"/v1/contexts/{context_id}/messages",
        json={"message": text_message("k"), "idempotency_key": "k1"},
    )
    again = api.post(
        f"/v1/contexts/{context_id}/messages",
        json={"message": text_message("k"), "idempotency_key": "k1"},
    )
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content == replay.content and again.json()["seq"] == 4


def test_a_tool_call_without_an_id_is_a_call_nothing_pairs_with(api: Api) -> None:
    context_id = api.create(token_budget=60, policy={"strategy": "last_n", "config": {"limit": 2}})[
        "id"
    ]
    call = {"role": "assistant", "parts": [{"type": "tool_call", "name": "search", "payload": {}}]}
    api.append(context_id, text_message("look it up"), call)
    api.append(context_id, tool_result_message("call_1", "found"))  # answers nothing: orphan
    window = api.window(context_id)
    assert [m["parts"][0]["type"] for m in window["messages"]] == ["text", "tool_call"]
    assert len(api.log(context_id)) == 3


def test_a_result_in_the_same_message_as_its_call_stays(api: Api) -> None:
    context_id = api.create()["id"]
    both = {
        "role": "assistant",
        "parts": [
            {"type": "tool_call", "id": "c1", "name": "calc", "input": {"x": 1}},
            {"type": "tool_result", "tool_call_id": "c1", "output": 2},
            {"type": "text", "text": "It is 2."},
        ],
    }
    api.append(context_id, text_message("1+1?"), both)
    api.append(context_id, tool_result_message("c1", "again"))  # forces orphan stripping
    window = api.window(context_id)
    assert window["messages"][1]["parts"] == both["parts"]


def test_skip_parts_never_leaves_a_call_without_its_result_nor_empty_husks(api: Api) -> None:
    context_id = api.create(
        token_budget=400,
        trigger_ratio=0.5,
        policy={"strategy": "skip_parts", "config": {"skip_kinds": ["tool_result", "reasoning"]}},
    )["id"]
    husk = {
        "role": "assistant",
        "parts": [
            {"type": "step-start"},
            {"type": "reasoning", "text": "let me think " * 20},
            {"type": "step-start"},
        ],
    }
    api.append(context_id, text_message("first"), husk)
    api.append(context_id, tool_call_message("c1", "q"), tool_result_message("c1", "r " * 40))
    api.append(context_id, text_message("second " * 30))  # over the trigger: the policy runs
    window = api.window(context_id)
    for message in window["messages"]:
        types = {p["type"] for p in message["parts"]}
        assert types - {"step-start"}, f"a husk stayed: {message}"
        assert "tool_call" not in types, "the call lost its result but stayed"
    assert window["used_tokens"] == api.context(context_id)["used_tokens"] <= 400


# --- requests that mean the same thing, and errors that teach ---------------------------


def test_whole_number_floats_are_integers(api: Api) -> None:
    context_id = new_id()
    created = api.put(
        f"/v1/contexts/{context_id}",
        json={"token_budget": 5000.0, "policy": {"strategy": "last_n", "config": {"limit": 20.0}}},
    ).json()
    assert created["token_budget"] == 5000 and created["policy"]["config"]["limit"] == 20
    appended = api.append(
        context_id, {**text_message("x"), "token_count": 7.0}, if_version=float(created["version"])
    )
    assert appended["token_estimate"] == 7
    assert '"token_budget":5000,' in api.get(f"/v1/contexts/{context_id}").text.replace(" ", "")


def test_token_count_null_and_absent_are_the_same_request(api: Api) -> None:
    context_id = api.create()["id"]
    url = f"/v1/contexts/{context_id}/messages"
    first = api.post(url, json={"message": text_message("hi"), "idempotency_key": "k"})
    again = api.post(
        url,
        json={
            "message": {**text_message("hi"), "token_count": None, "metadata": None},
            "idempotency_key": "k",
        },
    )
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content == first.content
    assert len(api.log(context_id)) == 1


def test_openai_shaped_messages_get_told_what_to_send(api: Api) -> None:
    context_id = api.create()["id"]
    url = f"/v1/contexts/{context_id}/messages"
    before = state(api, context_id)
    body = assert_error(
        api.post(url, json={"message": {"role": "user", "content": "hi"}}), 400, "unknown_field"
    )
    assert "parts" in body["message"] and '"type": "text"' in body["message"]
    body = assert_error(
        api.post(url, json={"role": "user", "parts": [{"type": "text", "text": "hi"}]}),
        400,
        "unknown_field",
    )
    assert '"message"' in body["message"] and "parts, role" in body["message"]
    assert state(api, context_id) == before


def nested_metadata_body(depth: int) -> bytes:
    """An append whose body nests ``depth`` levels: body > message > metadata > {"n": …}."""
    wrappers = depth - 3  # the metadata object is level 3 and holds ``wrappers`` more
    metadata = '{"n":' * wrappers + "{}" + "}" * wrappers
    return b'{"message":{"role":"user","parts":[{"type":"text","text":"deep"}],"metadata":%s}}' % (
        metadata.encode()
    )


@pytest.mark.parametrize("depth", [65, 330, 600, 980, 10_000])
def test_nesting_deeper_than_the_limit_is_refused(api: Api, depth: int) -> None:
    context_id = api.create()["id"]
    before = state(api, context_id)
    url = f"/v1/contexts/{context_id}/messages"
    assert_error(api.post(url, content=nested_metadata_body(depth)), 400, "invalid_json")
    levels = depth - 4  # body > message > parts > part > "v": [[…]]
    part = '{"type":"x","v":' + "[" * levels + "]" * levels + "}"
    content = ('{"message":{"role":"user","parts":[' + part + "]}}").encode()
    assert_error(api.post(url, content=content), 400, "invalid_json")
    assert state(api, context_id) == before


def test_nesting_up_to_the_limit_is_accepted(api: Api) -> None:
    context_id = api.create()["id"]
    response = api.post(f"/v1/contexts/{context_id}/messages", content=nested_metadata_body(64))
    assert response.status_code == 201, response.text
    metadata = api.log(context_id)[0]["metadata"]
    depth = 3
    while metadata:
        metadata, depth = metadata["n"], depth + 1
    assert depth == 64


def test_concurrent_puts_each_answer_with_their_own_state(api: Api, server: ServerProcess) -> None:
    context_id = api.create(token_budget=1000)["id"]
    answers: dict[int, JSON] = {}

    def put(budget: int) -> None:
        with server.client() as client:
            response = client.put(f"/v1/contexts/{context_id}", json={"token_budget": budget})
            assert response.status_code == 200, response.text
            answers[budget] = response.json()

    threads = [threading.Thread(target=put, args=(2000 + n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == 8
    for budget, answer in answers.items():
        assert answer["token_budget"] == budget
    versions = sorted(answer["version"] for answer in answers.values())
    assert versions == list(range(2, 10))
    final = api.context(context_id)
    assert answers[final["token_budget"]]["version"] == final["version"] == 9


def compact_json(value: JSON) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def test_large_windows_render_to_the_same_bytes_as_small_ones(api: Api) -> None:
    """Windows over 500 messages are trimmed and rendered on a worker thread: the body
    is still exactly the compact UTF-8 JSON of the whole, as for small windows."""
    context_id = api.create(token_budget=1000, policy={"strategy": "manual"})["id"]
    batch = [text_message(f"m{n} ünïcødé ☃", "user" if n % 2 else "assistant") for n in range(600)]
    api.append(context_id, *batch[:3])
    small = api.get(f"/v1/contexts/{context_id}/context")
    assert small.content == compact_json(json.loads(small.content))
    api.append(context_id, *batch[3:])
    for params in ({}, {"budget_tokens": 2000}):
        large = api.get(f"/v1/contexts/{context_id}/context", params=params)
        assert large.headers["content-type"] == "application/json; charset=utf-8"
        body = json.loads(large.content)
        assert large.content == compact_json(body)
        assert body["used_tokens"] == sum(m["token_count"] for m in body["messages"])
    assert len(json.loads(api.get(f"/v1/contexts/{context_id}/context").content)["messages"]) == 600
    too_small = api.get(f"/v1/contexts/{context_id}/context", params={"budget_tokens": 1})
    assert too_small.status_code == 200 and json.loads(too_small.content)["messages"] == []
