"""``GET …/context?format=openai|anthropic``: the window converted to a provider's
request messages, over HTTP. Every response goes through the spec-checking client,
so the two new response shapes are checked against ``spec/openapi.yaml`` too."""

from __future__ import annotations

import json

import pytest
from fastpaca_server.core.formats import to_anthropic, to_openai

from tests.server._api import Api, assert_error, new_id, state, text_message
from tests.support.format_corpus import CASES, Case, inputs

ENVELOPE = ("version", "used_tokens", "budget_tokens", "needs_compaction", "segments")
UI_KEYS = ["version", "messages", "used_tokens", "budget_tokens", "needs_compaction", "segments"]


def _path(context_id: str) -> str:
    return f"/v1/contexts/{context_id}/context"


def _filled(api: Api, case: Case) -> str:
    context_id = api.create(token_budget=100_000)["id"]
    if case.messages:
        api.append(context_id, *inputs(case.messages))
    return context_id


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_formats_convert_the_window_as_read(api: Api, case: Case) -> None:
    context_id = _filled(api, case)
    ui = api.window(context_id)
    openai = api.window(context_id, format="openai")
    anthropic = api.window(context_id, format="anthropic")

    assert list(openai) == ["version", "format", "messages", *ENVELOPE[1:]]
    assert openai["format"] == "openai"
    assert openai["messages"] == to_openai(ui["messages"])

    request = to_anthropic(ui["messages"])
    assert anthropic["format"] == "anthropic"
    assert anthropic["messages"] == request["messages"]
    assert anthropic.get("system") == request.get("system")
    assert ("system" in anthropic) == ("system" in request)

    for key in ENVELOPE:
        assert openai[key] == anthropic[key] == ui[key], key


def test_default_and_ui_answers_are_unchanged(api: Api) -> None:
    context_id = api.create()["id"]
    api.append(context_id, text_message("rules", role="system"), text_message("héllo ✓"))
    plain = api.get(_path(context_id))
    ui = api.get(_path(context_id), params={"format": "ui"})
    assert plain.status_code == ui.status_code == 200
    assert plain.content == ui.content
    body = json.loads(plain.content)
    assert list(body) == UI_KEYS
    assert "format" not in body
    assert [m["seq"] for m in body["messages"]] == [1, 2]
    # The stored messages' bytes, as the log pages give them.
    log = api.get(f"/v1/contexts/{context_id}/messages").content
    for message in body["messages"]:
        stored = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
        assert stored in log and stored in plain.content


def test_budget_tokens_trims_before_converting(api: Api) -> None:
    context_id = api.create(token_budget=10_000)["id"]
    api.append(
        context_id,
        text_message("rules", role="system", token_count=10),
        *[text_message(f"turn {i}", token_count=10) for i in range(8)],
    )
    trimmed = api.window(context_id, budget_tokens=35)
    assert len(trimmed["messages"]) < 9
    openai = api.window(context_id, budget_tokens=35, format="openai")
    anthropic = api.window(context_id, budget_tokens=35, format="anthropic")
    assert openai["messages"] == to_openai(trimmed["messages"])
    assert anthropic["messages"] == to_anthropic(trimmed["messages"])["messages"]
    assert anthropic["system"] == "rules"
    for key in ENVELOPE:
        assert openai[key] == anthropic[key] == trimmed[key], key
    assert openai["budget_tokens"] == 35
    assert openai["used_tokens"] == sum(m["token_count"] for m in trimmed["messages"]) <= 35
    # The stored window is untouched.
    whole = api.window(context_id, format="openai")
    assert len(whole["messages"]) == 9 and whole["budget_tokens"] == 10_000


def test_if_version_applies_to_every_format(api: Api) -> None:
    context_id = api.create()["id"]
    version = api.append(context_id, text_message("hi"))["version"]
    for window_format in ("ui", "openai", "anthropic"):
        window = api.window(context_id, format=window_format, if_version=version)
        assert window["version"] == version
        response = api.get(
            _path(context_id), params={"format": window_format, "if_version": version + 1}
        )
        assert_error(response, 409, "version_conflict")


def test_a_large_window_converts_off_the_event_loop(api: Api) -> None:
    context_id = api.create(token_budget=1_000_000, policy={"strategy": "manual"})["id"]
    api.append(context_id, *[text_message(f"m{i}", token_count=1) for i in range(600)])
    ui = api.window(context_id)
    openai = api.window(context_id, format="openai")
    assert len(openai["messages"]) == 600
    assert openai["messages"] == to_openai(ui["messages"])
    anthropic = api.window(context_id, format="anthropic")
    assert anthropic["messages"] == to_anthropic(ui["messages"])["messages"]
    assert len(anthropic["messages"]) == 1  # consecutive user turns merge


@pytest.mark.parametrize(
    ("query", "code", "message"),
    [
        ("format=bogus", "invalid_request", "'format' must be one of ui, openai, anthropic."),
        ("format=OpenAI", "invalid_request", "'format' must be one of ui, openai, anthropic."),
        ("format=", "invalid_request", "'format' must be one of ui, openai, anthropic."),
        ("format=openai&format=ui", "invalid_request", "'format' is given more than once."),
        ("format=openai&limit=3", "unknown_field", None),
        ("format=openai&budget_tokens=0", "invalid_request", None),
        ("format=anthropic&budget_tokens=x", "invalid_request", None),
    ],
)
def test_bad_format_queries_are_refused(
    api: Api, query: str, code: str, message: str | None
) -> None:
    context_id = api.create()["id"]
    api.append(context_id, text_message("hi"))
    before = state(api, context_id)
    body = assert_error(api.get(f"{_path(context_id)}?{query}"), 400, code)
    if message is not None:
        assert body["message"] == message
    assert state(api, context_id) == before


def test_a_missing_context_is_404_whatever_the_format(api: Api) -> None:
    response = api.get(_path(new_id()), params={"format": "anthropic"})
    assert_error(response, 404, "not_found")
