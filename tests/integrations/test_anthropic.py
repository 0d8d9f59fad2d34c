"""fastpaca_anthropic: the real ``anthropic`` client, mocked at HTTP with respx (through
an httpx2 bridge, see ``_mock.py``), against a real Fastpaca server."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import anthropic
import httpx
import httpx2
import pytest
import respx
from fastpaca import AsyncFastpaca, Context, Fastpaca
from fastpaca_anthropic import (
    MessagesAccumulator,
    accumulator_for,
    from_anthropic_messages,
    to_anthropic_messages,
    token_count_from_usage,
)

from tests.integrations._mock import (
    dropped_response,
    httpx2_async_client,
    httpx2_client,
    request_json,
    sse_response,
)
from tests.support.server import ServerProcess

BASE_URL = "https://api.anthropic.test"


def event(name: str, **fields: Any) -> tuple[str, dict]:
    return (name, {"type": name, **fields})


def message_start(input_tokens: int = 30) -> tuple[str, dict]:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "claude-sonnet-5",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1},
    }
    return event("message_start", message=message)


def text_events(*pieces: str, output_tokens: int = 9) -> list[tuple]:
    return [
        message_start(),
        event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        *[
            event("content_block_delta", index=0, delta={"type": "text_delta", "text": p})
            for p in pieces
        ],
        event("content_block_stop", index=0),
        event(
            "message_delta",
            delta={"stop_reason": "end_turn", "stop_sequence": None},
            usage={"output_tokens": output_tokens},
        ),
        event("message_stop"),
    ]


def thinking_and_tool_events() -> list[tuple]:
    def delta(index: int, **fields: Any) -> tuple:
        return event("content_block_delta", index=index, delta=fields)

    return [
        message_start(),
        ("ping", {"type": "ping"}),
        event(
            "content_block_start",
            index=0,
            content_block={"type": "thinking", "thinking": "", "signature": ""},
        ),
        delta(0, type="thinking_delta", thinking="Need the "),
        delta(0, type="thinking_delta", thinking="weather."),
        delta(0, type="signature_delta", signature="sig-abc"),
        event("content_block_stop", index=0),
        event("content_block_start", index=1, content_block={"type": "text", "text": ""}),
        delta(1, type="text_delta", text="Checking."),
        event("content_block_stop", index=1),
        event(
            "content_block_start",
            index=2,
            content_block={"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
        ),
        delta(2, type="input_json_delta", partial_json=""),
        delta(2, type="input_json_delta", partial_json='{"city": "Pa'),
        delta(2, type="input_json_delta", partial_json='ris", "unit": "c"}'),
        event("content_block_stop", index=2),
        event(
            "message_delta",
            delta={"stop_reason": "tool_use", "stop_sequence": None},
            usage={"output_tokens": 64},
        ),
        event("message_stop"),
    ]


@pytest.fixture
def router() -> respx.MockRouter:
    return respx.MockRouter(base_url=BASE_URL, assert_all_called=False)


@pytest.fixture
def model(router: respx.MockRouter) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="sk-ant-test", base_url=BASE_URL, http_client=httpx2_client(router), max_retries=0
    )


@pytest.fixture
def ctx(client: Fastpaca) -> Context:
    context = client.context(f"anthropic-{uuid.uuid4().hex[:10]}", budget=10_000)
    context.append({"role": "system", "parts": [{"type": "text", "text": "Be brief."}]})
    context.append({"role": "user", "parts": [{"type": "text", "text": "Weather in Paris?"}]})
    return context


def create(model: anthropic.Anthropic):
    def call(messages: list[dict]) -> Any:
        return model.messages.create(
            model="claude-sonnet-5", max_tokens=1024, stream=True, **to_anthropic_messages(messages)
        )

    return call


def test_text_stream(ctx: Context, model: anthropic.Anthropic, router: respx.MockRouter) -> None:
    route = router.post("/v1/messages").mock(
        return_value=sse_response(text_events("It is ", "sunny."))
    )
    stream = ctx.stream(create(model))
    events = list(stream)
    assert [type(e).__name__ for e in events][:2] == [
        "RawMessageStartEvent",
        "RawContentBlockStartEvent",
    ]
    sent = request_json(route)
    assert sent["system"] == "Be brief."
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}
    ]
    stored = ctx.tail()[-1]
    assert stored["parts"] == [{"type": "text", "text": "It is sunny."}]
    assert stored["token_count"] == 9 and stream.result is not None


def test_thinking_and_tool_use_then_the_result_goes_back_paired(
    ctx: Context, model: anthropic.Anthropic, router: respx.MockRouter
) -> None:
    route = router.post("/v1/messages")
    route.side_effect = [
        sse_response(thinking_and_tool_events()),
        sse_response(text_events("Sunny, 21 °C.")),
    ]
    ctx.stream(create(model)).until_done()
    stored = ctx.tail()[-1]
    assert stored["parts"] == [
        {
            "type": "reasoning",
            "text": "Need the weather.",
            "provider_metadata": {"anthropic": {"signature": "sig-abc"}},
        },
        {"type": "text", "text": "Checking."},
        {
            "type": "tool_call",
            "id": "toolu_1",
            "name": "get_weather",
            "payload": {"city": "Paris", "unit": "c"},
        },
    ]
    assert stored["token_count"] == 64
    ctx.append(
        {
            "role": "tool",
            "parts": [{"type": "tool_result", "tool_call_id": "toolu_1", "payload": {"temp": 21}}],
        }
    )
    ctx.append({"role": "user", "parts": [{"type": "text", "text": "And tomorrow?"}]})
    ctx.stream(create(model)).until_done()
    assert request_json(route)["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Need the weather.", "signature": "sig-abc"},
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris", "unit": "c"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": '{"temp": 21}'},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]


def test_the_stream_helper_works_too(
    ctx: Context, model: anthropic.Anthropic, router: respx.MockRouter
) -> None:
    router.post("/v1/messages").mock(return_value=sse_response(thinking_and_tool_events()))
    stream = ctx.stream(
        lambda messages: model.messages.stream(
            model="claude-sonnet-5", max_tokens=1024, **to_anthropic_messages(messages)
        )
    )
    types = [event.type for event in stream]
    assert "text" in types and "input_json" in types  # the helper's extra events pass through
    stored = ctx.tail()[-1]
    assert [part["type"] for part in stored["parts"]] == ["reasoning", "text", "tool_call"]
    assert stored["parts"][1] == {"type": "text", "text": "Checking."}  # not doubled
    assert stored["parts"][2]["payload"] == {"city": "Paris", "unit": "c"}


def test_failures_append_nothing(
    ctx: Context, model: anthropic.Anthropic, router: respx.MockRouter
) -> None:
    route = router.post("/v1/messages")
    route.side_effect = [
        httpx.Response(
            529,
            json={"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        ),
        sse_response(
            [
                *text_events("half")[:3],
                (
                    "error",
                    {
                        "type": "error",
                        "error": {"type": "overloaded_error", "message": "Overloaded"},
                    },
                ),
            ]
        ),
        dropped_response(text_events("cut")[:3]),
    ]
    with pytest.raises(anthropic.APIStatusError):
        ctx.stream(create(model))
    in_band = ctx.stream(create(model))
    with pytest.raises(anthropic.APIStatusError):
        list(in_band)
    dropped = ctx.stream(create(model))
    with pytest.raises(httpx2.ReadError):  # the anthropic client lets read errors through
        list(dropped)
    assert in_band.status == dropped.status == "failed"
    assert ctx.tail().last_seq == 2


def test_an_abandoned_stream(
    ctx: Context, model: anthropic.Anthropic, router: respx.MockRouter
) -> None:
    router.post("/v1/messages").mock(
        side_effect=lambda request: sse_response(thinking_and_tool_events())
    )
    with ctx.stream(create(model)) as stream:
        for event in stream:
            if event.type == "content_block_start" and event.index == 2:
                break
    assert stream.status == "abandoned" and ctx.tail().last_seq == 2
    with ctx.stream(create(model), on_abandon="append_partial") as stream:
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                break
    stored = ctx.tail()[-1]
    assert [part["type"] for part in stored["parts"]] == ["reasoning", "text"]
    assert stored["metadata"] == {"partial": True}


def test_async_client(server: ServerProcess, router: respx.MockRouter) -> None:
    router.post("/v1/messages").mock(return_value=sse_response(text_events("Async ", "hello.")))

    async def main() -> None:
        model = anthropic.AsyncAnthropic(
            api_key="sk-ant-test",
            base_url=BASE_URL,
            http_client=httpx2_async_client(router),
            max_retries=0,
        )
        async with AsyncFastpaca(base_url=server.url) as fastpaca:
            ctx = await fastpaca.context(f"anthropic-async-{uuid.uuid4().hex[:8]}", budget=1000)
            await ctx.append({"role": "user", "parts": [{"type": "text", "text": "Hi"}]})
            stream = await ctx.stream(
                lambda messages: model.messages.create(
                    model="claude-sonnet-5",
                    max_tokens=64,
                    stream=True,
                    **to_anthropic_messages(messages),
                )
            )
            assert len([event async for event in stream]) == 7
            assert (await ctx.tail())[-1]["parts"] == [{"type": "text", "text": "Async hello."}]
            managed = await ctx.stream(
                lambda messages: model.messages.stream(
                    model="claude-sonnet-5", max_tokens=64, **to_anthropic_messages(messages)
                )
            )
            await managed.until_done()
            assert managed.result is not None and managed.result.token_estimate == 9
        await model.close()

    asyncio.run(main())


def test_anthropic_history_round_trips(ctx: Context) -> None:
    system = "You are terse."
    history = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Look closely.", "signature": "sig-1"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "tool_use", "id": "toolu_9", "name": "zoom", "input": {"level": 2}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_9", "content": "a red square"},
                {"type": "text", "text": "Well?"},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "A red square."}]},
    ]
    ctx.compact([])
    converted = from_anthropic_messages(history, system=system)
    assert [m["role"] for m in converted] == [
        "system",
        "user",
        "assistant",
        "tool",
        "user",
        "assistant",
    ]
    ctx.append_many(converted)
    assert to_anthropic_messages(ctx.context().messages) == {"system": system, "messages": history}


def test_converter_edges() -> None:
    window = [
        {"role": "user", "parts": [{"type": "text", "text": "a"}]},
        {"role": "user", "parts": [{"type": "text", "text": ""}, {"type": "text", "text": "b"}]},
        {
            "role": "assistant",
            "parts": [
                {"type": "reasoning", "text": "unsigned"},
                {"type": "tool_call", "id": "x", "name": "f", "payload": "raw"},
            ],
        },
        {
            "role": "tool",
            "parts": [{"type": "tool_result", "tool_call_id": "orphan", "payload": 1}],
        },
        {
            "role": "assistant",
            "parts": [
                {
                    "type": "tool-search",
                    "toolCallId": "t1",
                    "state": "output-error",
                    "input": {"q": 1},
                    "errorText": "down",
                }
            ],
        },
    ]
    assert to_anthropic_messages(window) == {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "search", "input": {"q": 1}}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": "down",
                        "is_error": True,
                    }
                ],
            },
        ]
    }
    assert accumulator_for("x") is None
    assert isinstance(accumulator_for({"type": "message_start"}), MessagesAccumulator)
    assert (
        token_count_from_usage({"output_tokens": 4}) == 4 and token_count_from_usage(None) is None
    )
