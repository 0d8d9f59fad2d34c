"""``ctx.context(format=…)``: the window as OpenAI or Anthropic messages, converted by
the server, typed by the format asked for (sync and async, against a real server)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, assert_type

import httpx
import pytest
from fastpaca import (
    AnthropicWindow,
    AsyncFastpaca,
    BadRequestError,
    ConflictError,
    Context,
    Fastpaca,
    OpenAIWindow,
    Window,
    WindowFormat,
)
from fastpaca._context import _ContextRequests
from fastpaca_anthropic import to_anthropic_messages
from fastpaca_openai import to_openai_messages

from tests.sdk._transports import FaultyTransport
from tests.support.format_corpus import CASES, inputs
from tests.support.server import ServerProcess
from tests.support.spec import load_spec

ROLES = ["system", "user", "assistant", "tool", "assistant"]
CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "parts": [{"type": "text", "text": "Be terse."}]},
    {"role": "user", "parts": [{"type": "text", "text": "Weather in Paris?"}]},
    {
        "role": "assistant",
        "parts": [
            {"type": "reasoning", "text": "look it up"},
            {"type": "tool_call", "id": "c1", "name": "weather", "payload": {"city": "Paris"}},
        ],
    },
    {"role": "tool", "parts": [{"type": "tool_result", "tool_call_id": "c1", "payload": "21°C"}]},
    {"role": "assistant", "parts": [{"type": "text", "text": "21°C."}]},
]


def filled(client: Fastpaca, context_id: str, messages: list[dict[str, Any]]) -> Context:
    ctx = client.context(context_id, budget=100_000)
    if messages:
        ctx.append_many(messages)
    return ctx


def test_the_default_is_the_ui_window(client: Fastpaca, context_id: str) -> None:
    ctx = filled(client, context_id, CONVERSATION)
    window = assert_type(ctx.context(), Window)
    assert isinstance(window, Window)
    assert assert_type(ctx.context(format="ui"), Window) == window
    assert [m["role"] for m in window.messages] == ROLES


def test_openai_format(client: Fastpaca, context_id: str) -> None:
    ctx = filled(client, context_id, CONVERSATION)
    ui = ctx.context()
    window = assert_type(ctx.context(format="openai"), OpenAIWindow)
    assert isinstance(window, OpenAIWindow) and window.format == "openai"
    assert window.messages == to_openai_messages(ui.messages)
    assert [m["role"] for m in window.messages] == ROLES
    assert (window.version, window.used_tokens, window.budget_tokens) == (
        ui.version,
        ui.used_tokens,
        ui.budget_tokens,
    )
    assert window.needs_compaction == ui.needs_compaction
    assert window.segments == ui.segments
    assert window.raw["format"] == "openai"


def test_anthropic_format(client: Fastpaca, context_id: str) -> None:
    ctx = filled(client, context_id, CONVERSATION)
    ui = ctx.context()
    window = assert_type(ctx.context(format="anthropic"), AnthropicWindow)
    assert isinstance(window, AnthropicWindow) and window.format == "anthropic"
    assert window.system == "Be terse."
    assert window.request() == to_anthropic_messages(ui.messages)
    assert [turn["role"] for turn in window.messages] == ["user", "assistant", "user", "assistant"]
    assert window.segments == ui.segments and window.version == ui.version


def test_anthropic_without_system(client: Fastpaca, context_id: str) -> None:
    ctx = filled(client, context_id, CONVERSATION[1:2])
    window = ctx.context(format="anthropic")
    assert window.system is None
    assert window.request() == {"messages": window.messages}
    assert "system" not in window.raw


@pytest.mark.parametrize("case", CASES[1:], ids=[case.name for case in CASES[1:]])
def test_every_corpus_window_matches_the_integrations(
    client: Fastpaca, context_id: str, case: Any
) -> None:
    ctx = filled(client, context_id, inputs(case.messages))
    ui = ctx.context()
    assert ctx.context(format="openai").messages == to_openai_messages(ui.messages)
    assert ctx.context(format="anthropic").request() == to_anthropic_messages(ui.messages)


def test_budget_tokens_and_if_version_go_with_the_format(client: Fastpaca, context_id: str) -> None:
    ctx = filled(client, context_id, [])
    ctx.append({"role": "system", "parts": [{"type": "text", "text": "rules"}]}, token_count=5)
    messages = [{"role": "user", "parts": [{"type": "text", "text": f"m{i}"}]} for i in range(6)]
    version = ctx.append_many([{**m, "token_count": 10} for m in messages]).version
    trimmed = ctx.context(budget_tokens=30)
    window = ctx.context(budget_tokens=30, if_version=version, format="openai")
    assert window.budget_tokens == 30
    assert window.messages == to_openai_messages(trimmed.messages)
    assert len(window.messages) < 7
    with pytest.raises(ConflictError) as caught:
        ctx.context(if_version=version + 1, format="anthropic")
    assert caught.value.code == "version_conflict"


def test_format_is_sent_only_when_not_the_default(server: ServerProcess, context_id: str) -> None:
    transport = FaultyTransport([])
    with Fastpaca(base_url=server.url, http_client=httpx.Client(transport=transport)) as client:
        ctx = filled(client, context_id, CONVERSATION[:2])
        transport.requests.clear()
        ctx.context()
        ctx.context(format="ui", budget_tokens=100)
        ctx.context(format="openai")
        ctx.context(format="anthropic", if_version=2)
    queries = [dict(request.url.params) for request in transport.requests]
    assert queries == [
        {},
        {"budget_tokens": "100"},
        {"format": "openai"},
        {"if_version": "2", "format": "anthropic"},
    ]


def test_an_unknown_format_is_the_servers_400(client: Fastpaca, context_id: str) -> None:
    ctx = filled(client, context_id, CONVERSATION[:1])
    bogus: Any = "gemini"
    with pytest.raises(BadRequestError) as caught:
        ctx.context(format=bogus)
    assert caught.value.code == "invalid_request"
    assert "'format' must be one of ui, openai, anthropic." in str(caught.value)


def test_async_twin(server: ServerProcess, context_id: str) -> None:
    async def main() -> None:
        async with AsyncFastpaca(base_url=server.url) as client:
            ctx = await client.context(context_id, budget=100_000)
            await ctx.append_many(CONVERSATION)
            ui = assert_type(await ctx.context(), Window)
            openai = assert_type(await ctx.context(format="openai"), OpenAIWindow)
            anthropic = assert_type(await ctx.context(format="anthropic"), AnthropicWindow)
            assert openai.messages == to_openai_messages(ui.messages)
            assert anthropic.request() == to_anthropic_messages(ui.messages)

    asyncio.run(main())


# --- the models against the spec -------------------------------------------------


def _schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = load_spec()["components"]["schemas"][name]
    return schema


@pytest.mark.parametrize(
    ("model", "schema_name", "value"),
    [(OpenAIWindow, "OpenAIWindow", "openai"), (AnthropicWindow, "AnthropicWindow", "anthropic")],
)
def test_models_match_their_schemas(model: type, schema_name: str, value: str) -> None:
    schema = _schema(schema_name)
    fields = [f for f in dataclasses.fields(model) if f.name != "raw"]
    assert {f.name for f in fields} == set(schema["properties"])
    required = {
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    assert required == set(schema["required"])
    assert schema["properties"]["format"]["const"] == value
    envelope = set(_schema("Window")["properties"])
    assert envelope <= set(schema["properties"])


def test_window_formats_are_the_specs() -> None:
    operation = load_spec()["paths"]["/v1/contexts/{context_id}/context"]["get"]
    (parameter,) = [p for p in operation["parameters"] if p.get("name") == "format"]
    assert tuple(parameter["schema"]["enum"]) == WindowFormat.__args__  # type: ignore[attr-defined]
    assert parameter["schema"]["default"] == "ui"
    requests = _ContextRequests()
    requests.id = "chat"
    assert requests._window_call(None, None).params == {}
    params: Any = requests._window_call(None, None, "anthropic").params
    assert params == {"format": "anthropic"}
