"""langchain_fastpaca with langchain-core's fake chat models, against a real server."""

from __future__ import annotations

import asyncio
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from fastpaca import AsyncFastpaca, Context, Fastpaca
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableLambda
from langchain_fastpaca import (
    AIMessageChunkAccumulator,
    FastpacaChatMessageHistory,
    accumulator_for,
    from_langchain_messages,
    to_langchain_messages,
)

from tests.support.server import ServerProcess


@pytest.fixture
def ctx(client: Fastpaca) -> Context:
    context = client.context(f"langchain-{uuid.uuid4().hex[:10]}", budget=10_000)
    context.append({"role": "system", "parts": [{"type": "text", "text": "Be brief."}]})
    context.append({"role": "user", "parts": [{"type": "text", "text": "Say hello"}]})
    return context


def test_streaming_append_with_a_fake_model(ctx: Context) -> None:
    seen: list[list[BaseMessage]] = []

    class Recording(GenericFakeChatModel):
        def _stream(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Iterator[Any]:
            seen.append(messages)
            return super()._stream(messages, *args, **kwargs)

    model = Recording(messages=iter(["Hello there, friend."]))
    stream = ctx.stream(lambda messages: model.stream(to_langchain_messages(messages)))
    chunks = list(stream)
    assert all(isinstance(chunk, AIMessageChunk) for chunk in chunks) and len(chunks) > 3
    assert "".join(chunk.content for chunk in chunks) == "Hello there, friend."
    assert [type(m) for m in seen[0]] == [SystemMessage, HumanMessage]
    stored = ctx.tail()[-1]
    assert stored["role"] == "assistant"
    assert stored["parts"] == [{"type": "text", "text": "Hello there, friend."}]


def tool_call_chunks() -> list[AIMessageChunk]:
    return [
        AIMessageChunk(content="", additional_kwargs={"reasoning_content": "Weather tool."}),
        AIMessageChunk(content="Checking"),
        AIMessageChunk(
            content="",
            tool_call_chunks=[{"name": "get_weather", "args": '{"ci', "id": "call_1", "index": 0}],
        ),
        AIMessageChunk(
            content="",
            tool_call_chunks=[{"name": None, "args": 'ty": "Rome"}', "id": None, "index": 0}],
        ),
        AIMessageChunk(
            content="",
            usage_metadata={"input_tokens": 12, "output_tokens": 23, "total_tokens": 35},
            chunk_position="last",
        ),
    ]


def test_tool_call_chunks_and_usage(ctx: Context) -> None:
    stream = ctx.stream(lambda messages: iter(tool_call_chunks()))
    stream.until_done()
    stored = ctx.tail()[-1]
    assert stored["parts"] == [
        {"type": "reasoning", "text": "Weather tool."},
        {"type": "text", "text": "Checking"},
        {"type": "tool_call", "id": "call_1", "name": "get_weather", "payload": {"city": "Rome"}},
    ]
    assert stored["token_count"] == 23
    ctx.append(
        {
            "role": "tool",
            "parts": [{"type": "tool_result", "tool_call_id": "call_1", "payload": "sunny"}],
        }
    )
    converted = to_langchain_messages(ctx.context().messages)
    assert isinstance(converted[2], AIMessage)
    assert converted[2].tool_calls == [
        {"name": "get_weather", "args": {"city": "Rome"}, "id": "call_1", "type": "tool_call"}
    ]
    assert isinstance(converted[3], ToolMessage) and converted[3].tool_call_id == "call_1"


def test_a_failing_model_appends_nothing(ctx: Context) -> None:
    def broken() -> Iterator[AIMessageChunk]:
        yield AIMessageChunk(content="Hel")
        raise RuntimeError("model crashed")

    stream = ctx.stream(lambda messages: broken())
    with pytest.raises(RuntimeError):
        list(stream)
    assert ctx.tail().last_seq == 2


def test_astream(server: ServerProcess) -> None:
    async def main() -> None:
        async with AsyncFastpaca(base_url=server.url) as client:
            ctx = await client.context(f"langchain-async-{uuid.uuid4().hex[:8]}", budget=1000)
            await ctx.append({"role": "user", "parts": [{"type": "text", "text": "Hi"}]})
            model = GenericFakeChatModel(messages=iter(["Async hello to you."]))
            stream = await ctx.stream(
                lambda messages: model.astream(to_langchain_messages(messages))
            )
            assert "".join([chunk.content async for chunk in stream]) == "Async hello to you."
            assert (await ctx.tail())[-1]["parts"] == [
                {"type": "text", "text": "Async hello to you."}
            ]

    asyncio.run(main())


def test_history_is_a_chat_message_history(client: Fastpaca) -> None:
    context_id = f"history-{uuid.uuid4().hex[:10]}"
    client.context(context_id, budget=10_000)
    history = FastpacaChatMessageHistory(client=client, context_id=context_id)
    assert isinstance(history, BaseChatMessageHistory)
    assert history.messages == []
    history.add_user_message("Hi")
    history.add_messages(
        [
            AIMessage(
                content="Hello!",
                usage_metadata={"input_tokens": 3, "output_tokens": 7, "total_tokens": 10},
            )
        ]
    )
    messages = history.messages
    assert [type(m) for m in messages] == [HumanMessage, AIMessage]
    assert [m.content for m in messages] == ["Hi", "Hello!"]
    assert client.context(context_id).tail()[-1]["token_count"] == 7
    history.clear()
    assert history.messages == []
    assert client.context(context_id).tail().last_seq == 2  # the log keeps everything


def test_runnable_with_message_history_round_trip(client: Fastpaca) -> None:
    from langchain_core.runnables.history import RunnableWithMessageHistory

    prompts: list[list[BaseMessage]] = []
    model = GenericFakeChatModel(messages=iter(["Nice to meet you, Ada.", "Your name is Ada."]))

    def remember(prompt: Any) -> Any:
        prompts.append(prompt.to_messages())
        return prompt

    prompt = ChatPromptTemplate.from_messages(
        [("system", "You remember names."), MessagesPlaceholder("history"), ("human", "{question}")]
    )
    chain = prompt | RunnableLambda(remember) | model
    context_id = f"runnable-{uuid.uuid4().hex[:10]}"
    client.context(context_id, budget=10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deprecated in favour of LangGraph
        with_history = RunnableWithMessageHistory(
            chain,
            lambda session_id: FastpacaChatMessageHistory(client=client, context_id=session_id),
            input_messages_key="question",
            history_messages_key="history",
        )
    config = {"configurable": {"session_id": context_id}}
    first = with_history.invoke({"question": "I am Ada."}, config=config)
    second = with_history.invoke({"question": "What is my name?"}, config=config)
    assert (first.content, second.content) == ("Nice to meet you, Ada.", "Your name is Ada.")
    assert [m.content for m in prompts[1][1:3]] == ["I am Ada.", "Nice to meet you, Ada."]
    log = client.context(context_id).tail()
    assert [(m["role"], m["parts"][0]["text"]) for m in log] == [
        ("user", "I am Ada."),
        ("assistant", "Nice to meet you, Ada."),
        ("user", "What is my name?"),
        ("assistant", "Your name is Ada."),
    ]


def test_async_history(server: ServerProcess) -> None:
    async def main() -> None:
        async with AsyncFastpaca(base_url=server.url) as client:
            context_id = f"history-async-{uuid.uuid4().hex[:8]}"
            await client.context(context_id, budget=1000)
            history = FastpacaChatMessageHistory(client=client, context_id=context_id)
            await history.aadd_messages([HumanMessage(content="Hi"), AIMessage(content="Hello")])
            assert [m.content for m in await history.aget_messages()] == ["Hi", "Hello"]
            await history.aclear()
            assert await history.aget_messages() == []
            with pytest.raises(TypeError, match="AsyncFastpaca"):
                _ = history.messages

    asyncio.run(main())


def test_async_methods_with_a_sync_client(client: Fastpaca) -> None:
    context_id = f"history-mixed-{uuid.uuid4().hex[:8]}"
    client.context(context_id, budget=1000)
    history = FastpacaChatMessageHistory(client=client, context_id=context_id)

    async def main() -> list[BaseMessage]:
        await history.aadd_messages([HumanMessage(content="Hi")])
        return await history.aget_messages()

    assert [m.content for m in asyncio.run(main())] == ["Hi"]


def test_converters_round_trip() -> None:
    messages: list[BaseMessage] = [
        SystemMessage(content="Be brief."),
        HumanMessage(
            content=[
                {"type": "text", "text": "What's this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
            ]
        ),
        AIMessage(
            content="",
            tool_calls=[
                {"name": "zoom", "args": {"level": 2}, "id": "call_z", "type": "tool_call"}
            ],
        ),
        ToolMessage(content="a red square", tool_call_id="call_z"),
        AIMessage(
            content=[
                {"type": "reasoning", "reasoning": "Easy."},
                {"type": "text", "text": "A red square."},
            ]
        ),
    ]
    stored = from_langchain_messages(messages)
    assert [m["role"] for m in stored] == ["system", "user", "assistant", "tool", "assistant"]
    assert stored[2]["parts"] == [
        {"type": "tool_call", "id": "call_z", "name": "zoom", "payload": {"level": 2}}
    ]
    assert stored[4]["parts"] == [
        {"type": "reasoning", "text": "Easy."},
        {"type": "text", "text": "A red square."},
    ]
    back = to_langchain_messages(stored)
    assert [type(m) for m in back] == [type(m) for m in messages]
    assert back[1].content == messages[1].content
    assert back[2].tool_calls == messages[2].tool_calls
    assert back[3].content == "a red square"
    assert back[4].content == messages[4].content
    assert accumulator_for("x") is None
    assert isinstance(accumulator_for(AIMessageChunk(content="")), AIMessageChunkAccumulator)
    assert AIMessageChunkAccumulator().finish().parts == []
