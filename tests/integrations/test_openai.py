"""fastpaca_openai: the real ``openai`` client, mocked at HTTP with respx (streamed SSE
bodies), against a real Fastpaca server."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import respx
from fastpaca import AsyncFastpaca, Context, Fastpaca, ModelStreamError
from fastpaca_openai import (
    ChatCompletionAccumulator,
    accumulator_for,
    from_openai_messages,
    to_openai_messages,
    to_responses_input,
    token_count_from_usage,
)
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseTextDeltaEvent

from tests.integrations._mock import dropped_response, request_json, sse_response
from tests.support.server import ServerProcess

BASE_URL = "https://api.openai.test/v1"


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> tuple:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "choices": choices,
        **extra,
    }
    return (None, body)


DONE = (None, "[DONE]")
USAGE = {"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23}


def text_stream(*pieces: str, usage: dict | None = USAGE) -> list[tuple]:
    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": piece}) for piece in pieces]
    events.append(chunk({}, finish="stop"))
    if usage is not None:
        events.append(chunk(None, usage=usage))
    return [*events, DONE]


def tool_call_stream() -> list[tuple]:
    def call(index: int, **fields: Any) -> tuple:
        return chunk({"tool_calls": [{"index": index, **fields}]})

    return [
        chunk({"role": "assistant", "content": "Let me check."}),
        call(
            0, id="call_paris", type="function", function={"name": "get_weather", "arguments": ""}
        ),
        call(0, function={"arguments": '{"ci'}),
        call(
            1,
            id="call_oslo",
            type="function",
            function={"name": "get_weather", "arguments": '{"city"'},
        ),
        call(0, function={"arguments": 'ty": "Par'}),
        call(1, function={"arguments": ': "Oslo"}'}),
        call(0, function={"arguments": 'is"}'}),
        chunk({}, finish="tool_calls"),
        chunk(None, usage={"prompt_tokens": 30, "completion_tokens": 41, "total_tokens": 71}),
        DONE,
    ]


@pytest.fixture
def router() -> respx.MockRouter:
    """Routes for the model client only (not entered: nothing else is patched)."""
    return respx.MockRouter(base_url=BASE_URL, assert_all_called=False)


@pytest.fixture
def model(router: respx.MockRouter) -> Iterator[openai.OpenAI]:
    http = httpx.Client(transport=httpx.MockTransport(router.handler))
    client = openai.OpenAI(api_key="sk-test", base_url=BASE_URL, http_client=http, max_retries=0)
    yield client
    client.close()


@pytest.fixture
def ctx(client: Fastpaca) -> Context:
    context = client.context(f"openai-{uuid.uuid4().hex[:10]}", budget=10_000)
    context.append({"role": "system", "parts": [{"type": "text", "text": "Be brief."}]})
    context.append({"role": "user", "parts": [{"type": "text", "text": "Capital of France?"}]})
    return context


def chat(model: openai.OpenAI, **options: Any):
    def call(messages: list[dict]) -> Any:
        return model.chat.completions.create(
            model="gpt-4o-mini",
            messages=to_openai_messages(messages),
            stream=True,
            stream_options={"include_usage": True},
            **options,
        )

    return call


def test_text_stream_passes_chunks_through_and_appends(
    ctx: Context, model: openai.OpenAI, router: respx.MockRouter
) -> None:
    route = router.post("/chat/completions").mock(
        return_value=sse_response(text_stream("Par", "is", "."))
    )
    stream = ctx.stream(chat(model))
    chunks = list(stream)
    assert all(isinstance(item, ChatCompletionChunk) for item in chunks)
    assert [c.choices[0].delta.content for c in chunks if c.choices] == ["", "Par", "is", ".", None]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    sent = request_json(route)
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert sent["stream"] is True
    assert stream.result is not None and stream.result.token_estimate == 3
    stored = ctx.tail()[-1]
    assert stored["role"] == "assistant" and stored["token_count"] == 3
    assert stored["parts"] == [{"type": "text", "text": "Paris."}]


def test_tool_calls_split_across_chunks(
    ctx: Context, model: openai.OpenAI, router: respx.MockRouter
) -> None:
    route = router.post("/chat/completions")
    route.side_effect = [sse_response(tool_call_stream()), sse_response(text_stream("Sunny."))]
    stream = ctx.stream(chat(model))
    stream.until_done()
    stored = ctx.tail()[-1]
    assert stored["parts"] == [
        {"type": "text", "text": "Let me check."},
        {
            "type": "tool_call",
            "id": "call_paris",
            "name": "get_weather",
            "payload": {"city": "Paris"},
        },
        {
            "type": "tool_call",
            "id": "call_oslo",
            "name": "get_weather",
            "payload": {"city": "Oslo"},
        },
    ]
    assert stored["token_count"] == 41
    ctx.append(
        {
            "role": "tool",
            "parts": [
                {"type": "tool_result", "tool_call_id": "call_paris", "payload": {"sky": "sunny"}},
                {"type": "tool_result", "tool_call_id": "call_oslo", "payload": "cloudy"},
            ],
        }
    )
    ctx.stream(chat(model)).until_done()
    sent = request_json(route)["messages"]
    assert sent[2:] == [
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_paris",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_oslo",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_paris", "content": '{"sky": "sunny"}'},
        {"role": "tool", "tool_call_id": "call_oslo", "content": "cloudy"},
    ]
    assert ctx.tail()[-1]["parts"] == [{"type": "text", "text": "Sunny."}]


def test_a_failing_call_appends_nothing(
    ctx: Context, model: openai.OpenAI, router: respx.MockRouter
) -> None:
    router.post("/chat/completions").mock(
        return_value=httpx.Response(
            500, json={"error": {"message": "overloaded", "type": "server_error"}}
        )
    )
    with pytest.raises(openai.InternalServerError):
        ctx.stream(chat(model))
    assert ctx.tail().last_seq == 2


def test_a_stream_that_breaks_appends_nothing(
    ctx: Context, model: openai.OpenAI, router: respx.MockRouter
) -> None:
    router.post("/chat/completions").mock(return_value=dropped_response(text_stream("Par")[:2]))
    stream = ctx.stream(chat(model))
    received = []
    with pytest.raises(openai.APIConnectionError):
        for item in stream:
            received.append(item)
    assert len(received) == 2 and stream.status == "failed"
    assert ctx.tail().last_seq == 2


def test_an_abandoned_stream(ctx: Context, model: openai.OpenAI, router: respx.MockRouter) -> None:
    router.post("/chat/completions").mock(
        side_effect=lambda request: sse_response(text_stream("The ", "capital ", "is ", "Paris."))
    )
    with ctx.stream(chat(model)) as stream:
        for index, _ in enumerate(stream):
            if index == 2:
                break
    assert stream.status == "abandoned" and ctx.tail().last_seq == 2
    with ctx.stream(chat(model), on_abandon="append_partial") as stream:
        for index, _ in enumerate(stream):
            if index == 2:
                break
    stored = ctx.tail()[-1]
    assert stored["parts"] == [{"type": "text", "text": "The capital "}]
    assert stored["metadata"] == {"partial": True}


def responses_events() -> list[tuple]:
    def event(name: str, sequence: int, **fields: Any) -> tuple:
        return (name, {"type": name, "sequence_number": sequence, **fields})

    response = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1_700_000_000,
        "model": "gpt-5-mini",
        "status": "in_progress",
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }
    reasoning = {"id": "rs_1", "type": "reasoning", "summary": []}
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "status": "in_progress",
        "content": [],
    }
    call = {
        "id": "fc_1",
        "type": "function_call",
        "call_id": "call_1",
        "name": "get_weather",
        "arguments": "",
        "status": "in_progress",
    }
    usage = {
        "input_tokens": 25,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 57,
        "output_tokens_details": {"reasoning_tokens": 30},
        "total_tokens": 82,
    }
    return [
        event("response.created", 0, response=response),
        event("response.output_item.added", 1, output_index=0, item=reasoning),
        event(
            "response.reasoning_summary_text.delta",
            2,
            item_id="rs_1",
            output_index=0,
            summary_index=0,
            delta="User wants ",
        ),
        event(
            "response.reasoning_summary_text.delta",
            3,
            item_id="rs_1",
            output_index=0,
            summary_index=0,
            delta="the weather.",
        ),
        event("response.output_item.added", 4, output_index=1, item=message),
        event(
            "response.output_text.delta",
            5,
            item_id="msg_1",
            output_index=1,
            content_index=0,
            delta="Checking",
            logprobs=[],
        ),
        event(
            "response.output_text.delta",
            6,
            item_id="msg_1",
            output_index=1,
            content_index=0,
            delta=" now.",
            logprobs=[],
        ),
        event("response.output_item.added", 7, output_index=2, item=call),
        event(
            "response.function_call_arguments.delta",
            8,
            item_id="fc_1",
            output_index=2,
            delta='{"city":',
        ),
        event(
            "response.function_call_arguments.delta",
            9,
            item_id="fc_1",
            output_index=2,
            delta=' "Lima"}',
        ),
        event(
            "response.function_call_arguments.done",
            10,
            item_id="fc_1",
            output_index=2,
            arguments='{"city": "Lima"}',
        ),
        event(
            "response.completed", 11, response={**response, "status": "completed", "usage": usage}
        ),
    ]


def test_responses_api_stream(ctx: Context, model: openai.OpenAI, router: respx.MockRouter) -> None:
    route = router.post("/responses").mock(return_value=sse_response(responses_events()))
    stream = ctx.stream(
        lambda messages: model.responses.create(
            model="gpt-5-mini", input=to_responses_input(messages), stream=True
        )
    )
    events = list(stream)
    assert [e.delta for e in events if isinstance(e, ResponseTextDeltaEvent)] == [
        "Checking",
        " now.",
    ]
    assert request_json(route)["input"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
    ]
    stored = ctx.tail()[-1]
    assert stored["parts"] == [
        {"type": "reasoning", "text": "User wants the weather."},
        {"type": "text", "text": "Checking now."},
        {"type": "tool_call", "id": "call_1", "name": "get_weather", "payload": {"city": "Lima"}},
    ]
    assert stored["token_count"] == 57


@pytest.mark.parametrize("failure", ["error", "response.failed"])
def test_responses_failure_events_append_nothing(
    ctx: Context, model: openai.OpenAI, router: respx.MockRouter, failure: str
) -> None:
    events = responses_events()[:6]
    if failure == "error":
        events.append(
            (
                "error",
                {
                    "type": "error",
                    "code": "server_error",
                    "message": "boom",
                    "param": None,
                    "sequence_number": 6,
                },
            )
        )
    else:
        failed = {
            **events[0][1]["response"],
            "status": "failed",
            "error": {"code": "server_error", "message": "boom"},
        }
        events.append(
            (
                "response.failed",
                {"type": "response.failed", "sequence_number": 6, "response": failed},
            )
        )
    router.post("/responses").mock(return_value=sse_response(events))
    stream = ctx.stream(
        lambda messages: model.responses.create(
            model="gpt-5-mini", input=to_responses_input(messages), stream=True
        )
    )
    with pytest.raises(ModelStreamError, match="boom"):
        list(stream)
    assert stream.status == "failed" and ctx.tail().last_seq == 2


def test_async_client(server: ServerProcess, router: respx.MockRouter) -> None:
    router.post("/chat/completions").mock(
        side_effect=[sse_response(tool_call_stream()), sse_response(text_stream("Sunny in both."))]
    )

    async def main() -> None:
        http = httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler))
        model = openai.AsyncOpenAI(
            api_key="sk-test", base_url=BASE_URL, http_client=http, max_retries=0
        )
        async with AsyncFastpaca(base_url=server.url) as fastpaca:
            ctx = await fastpaca.context(f"openai-async-{uuid.uuid4().hex[:8]}", budget=10_000)
            await ctx.append({"role": "user", "parts": [{"type": "text", "text": "Weather?"}]})

            def call(messages: list[dict]) -> Any:
                return model.chat.completions.create(
                    model="gpt-4o-mini", messages=to_openai_messages(messages), stream=True
                )

            stream = await ctx.stream(call)
            chunks = [item async for item in stream]
            assert all(isinstance(item, ChatCompletionChunk) for item in chunks)
            assert stream.result is not None and stream.result.token_estimate == 41
            await ctx.append_many(
                [
                    {
                        "role": "tool",
                        "parts": [
                            {
                                "type": "tool_result",
                                "tool_call_id": "call_paris",
                                "payload": "sunny",
                            }
                        ],
                    },
                    {
                        "role": "tool",
                        "parts": [
                            {"type": "tool_result", "tool_call_id": "call_oslo", "payload": "sunny"}
                        ],
                    },
                ]
            )
            async with await ctx.stream(call) as second:
                await second.until_done()
            assert (await ctx.tail())[-1]["parts"] == [{"type": "text", "text": "Sunny in both."}]
        await model.close()

    asyncio.run(main())


def test_openai_history_round_trips_through_fastpaca(ctx: Context) -> None:
    history = [
        {"role": "system", "content": "You are terse."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What's this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_9",
                    "type": "function",
                    "function": {"name": "describe", "arguments": '{"detail": "high"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_9", "content": "a red square"},
        {"role": "assistant", "content": "A red square."},
    ]
    ctx.compact([])
    ctx.append_many(from_openai_messages(history))
    window = ctx.context().messages
    assert window[2]["parts"] == [
        {"type": "tool_call", "id": "call_9", "name": "describe", "payload": {"detail": "high"}}
    ]
    assert to_openai_messages(window) == [
        history[0],
        history[1],
        {
            **history[2],
            "tool_calls": [
                {
                    **history[2]["tool_calls"][0],
                    "function": {"name": "describe", "arguments": json.dumps({"detail": "high"})},
                }
            ],
        },
        history[3],
        history[4],
    ]


def test_completion_message_objects_convert(router: respx.MockRouter, model: openai.OpenAI) -> None:
    router.post("/chat/completions").mock(
        return_value=httpx.Response(
            200,
            json={
                "id": "chatcmpl-2",
                "object": "chat.completion",
                "created": 1,
                "model": "gpt-4o-mini",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "Hi!", "refusal": None},
                    }
                ],
                "usage": USAGE,
            },
        )
    )
    completion = model.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]
    )
    assert from_openai_messages([completion.choices[0].message]) == [
        {"role": "assistant", "parts": [{"type": "text", "text": "Hi!"}]}
    ]
    assert token_count_from_usage(completion.usage) == 3


def test_converter_edges() -> None:
    window = [
        {
            "role": "assistant",
            "parts": [
                {"type": "reasoning", "text": "hmm"},
                {"type": "tool_call", "id": "lost", "name": "f", "payload": {}},
            ],
        },
        {
            "role": "tool",
            "parts": [{"type": "tool_result", "tool_call_id": "orphan", "payload": 1}],
        },
        {
            "role": "user",
            "parts": [
                {"type": "text", "text": "a"},
                {"type": "text", "text": "b"},
                {"type": "step-start"},
            ],
        },
        {
            "role": "assistant",
            "parts": [
                {
                    "type": "tool-search",
                    "toolCallId": "t1",
                    "state": "output-available",
                    "input": {"q": "x"},
                    "output": ["r"],
                },
                {
                    "type": "tool-search",
                    "toolCallId": "t2",
                    "state": "input-available",
                    "input": {"q": "y"},
                },
            ],
        },
    ]
    assert to_openai_messages(window) == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "search", "arguments": '{"q": "x"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": '["r"]'},
    ]
    assert to_responses_input(window)[1:] == [
        {"type": "function_call", "call_id": "t1", "name": "search", "arguments": '{"q": "x"}'},
        {"type": "function_call_output", "call_id": "t1", "output": '["r"]'},
    ]
    with pytest.raises(ValueError, match="function"):
        from_openai_messages([{"role": "function", "name": "f", "content": "x"}])
    assert accumulator_for("text") is None and accumulator_for(object()) is None
    dict_chunk = {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": "x"}}],
    }
    accumulator = accumulator_for(dict_chunk)
    assert isinstance(accumulator, ChatCompletionAccumulator)
    accumulator.add(dict_chunk)
    assert accumulator.finish().parts == [{"type": "text", "text": "x"}]
