"""``ctx.stream`` with provider-free streams (str chunks, custom accumulators), sync and
async, against a real server."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fastpaca import (
    AssembledMessage,
    AsyncFastpaca,
    ConflictError,
    Fastpaca,
    MessageBuilder,
    StreamAccumulator,
    TextAccumulator,
    parse_tool_arguments,
)

from tests.support.server import ServerProcess


def user(text: str) -> dict:
    return {"role": "user", "parts": [{"type": "text", "text": text}]}


class Boom(Exception):
    pass


class EventAccumulator:
    """A custom accumulator: chunks are ``(kind, key, value)`` tuples."""

    def __init__(self) -> None:
        self.builder = MessageBuilder()
        self.count: int | None = None

    def add(self, chunk: Any) -> None:
        kind, key, value = chunk
        if kind == "text":
            self.builder.append_text(value)
        elif kind == "reasoning":
            self.builder.append_reasoning(value)
        elif kind == "call":
            self.builder.start_tool_call(key, call_id=f"call_{key}", name=value)
        elif kind == "args":
            self.builder.append_tool_arguments(key, value)
        elif kind == "usage":
            self.count = value

    def finish(self) -> AssembledMessage:
        return AssembledMessage(parts=self.builder.parts(), token_count=self.count)


@pytest.fixture
def ctx(client: Fastpaca, context_id: str):
    context = client.context(context_id, budget=10_000)
    context.append({"role": "system", "parts": [{"type": "text", "text": "Be brief."}]})
    context.append(user("Hi"))
    return context


def test_text_stream_is_passed_through_and_appended_once(ctx) -> None:
    seen: list[list[dict]] = []
    chunks = ["Hel", "lo", "!"]

    def model(messages: list[dict]) -> Iterator[str]:
        seen.append(messages)
        return iter(chunks)

    stream = ctx.stream(model)
    assert seen[0] == stream.window.messages and [m["seq"] for m in seen[0]] == [1, 2]
    assert stream.status == "streaming" and stream.result is None
    received = list(stream)
    assert received == chunks and all(a is b for a, b in zip(received, chunks, strict=True))
    assert stream.status == "completed"
    assert stream.result is not None and stream.result.seq == 3
    assert stream.message == {"role": "assistant", "parts": [{"type": "text", "text": "Hello!"}]}
    stored = ctx.tail()[-1]
    assert stored["role"] == "assistant" and stored["parts"] == [{"type": "text", "text": "Hello!"}]
    assert list(stream) == []  # a finished stream stays finished
    assert ctx.tail().last_seq == 3


def test_parts_token_count_metadata_and_key(ctx) -> None:
    chunks = [
        ("reasoning", None, "Think."),
        ("text", None, "Checking."),
        ("call", 0, "get_weather"),
        ("args", 0, '{"ci'),
        ("call", 1, "get_time"),
        ("args", 0, 'ty": "Paris"}'),
        ("args", 1, "not json"),
        ("usage", None, 17),
    ]
    stream = ctx.stream(
        lambda messages: iter(chunks),
        accumulator=EventAccumulator(),
        metadata={"model": "fake-1"},
        idempotency_key="turn-2-assistant",
    )
    result = stream.until_done()
    assert result is not None and result.token_estimate == 17
    stored = ctx.tail()[-1]
    assert stored["parts"] == [
        {"type": "reasoning", "text": "Think."},
        {"type": "text", "text": "Checking."},
        {"type": "tool_call", "id": "call_0", "name": "get_weather", "payload": {"city": "Paris"}},
        {"type": "tool_call", "id": "call_1", "name": "get_time", "payload": "not json"},
    ]
    assert stored["metadata"] == {"model": "fake-1"} and stored["token_count"] == 17
    again = ctx.stream(
        lambda messages: iter(chunks),
        accumulator=EventAccumulator(),
        metadata={"model": "fake-1"},
        idempotency_key="turn-2-assistant",
    )
    assert again.until_done().replayed  # the same key: stored once
    assert ctx.tail().last_seq == 3


def test_a_failing_model_call_appends_nothing(ctx) -> None:
    def model(messages: list[dict]) -> Iterator[str]:
        raise Boom("the model is down")

    with pytest.raises(Boom):
        ctx.stream(model)
    assert ctx.tail().last_seq == 2


def test_a_failing_stream_appends_nothing(ctx) -> None:
    closed: list[bool] = []

    def model(messages: list[dict]) -> Iterator[str]:
        try:
            yield "partial"
            raise Boom("connection dropped")
        finally:
            closed.append(True)

    stream = ctx.stream(model, on_abandon="append_partial")
    received = []
    with pytest.raises(Boom):
        for chunk in stream:
            received.append(chunk)
    assert received == ["partial"] and stream.status == "failed" and stream.result is None
    assert closed == [True]
    stream.close()  # closing a failed stream appends nothing either
    assert ctx.tail().last_seq == 2


def test_an_abandoned_stream_appends_nothing_by_default(ctx) -> None:
    closed: list[bool] = []

    def model(messages: list[dict]) -> Iterator[str]:
        try:
            yield from ["one ", "two ", "three"]
        finally:
            closed.append(True)

    with ctx.stream(model) as stream:
        for chunk in stream:
            if chunk == "two ":
                break
    assert stream.status == "abandoned" and stream.result is None and closed == [True]
    assert ctx.tail().last_seq == 2


def test_an_abandoned_stream_may_append_its_partial_answer(ctx) -> None:
    chunks = [
        ("text", None, "The answer is"),
        ("call", 0, "lookup"),
        ("args", 0, '{"q": "x'),
        ("text", None, "!"),
    ]
    with ctx.stream(
        lambda messages: iter(chunks), accumulator=EventAccumulator(), on_abandon="append_partial"
    ) as stream:
        for index, _ in enumerate(stream):
            if index == 2:
                break
    assert stream.status == "abandoned" and stream.result is not None
    stored = ctx.tail()[-1]
    assert stored["parts"] == [{"type": "text", "text": "The answer is"}]  # no cut tool call
    assert stored["metadata"] == {"partial": True}
    nothing_yet = ctx.stream(lambda messages: iter(["a"]), on_abandon="append_partial")
    nothing_yet.close()
    assert nothing_yet.status == "abandoned" and nothing_yet.result is None
    assert ctx.tail().last_seq == 3


def test_an_error_in_the_callers_loop_discards(ctx) -> None:
    with (
        pytest.raises(Boom),
        ctx.stream(lambda m: iter(["a", "b"]), on_abandon="append_partial") as stream,
    ):
        for _ in stream:
            raise Boom("the caller failed")
    assert stream.status == "abandoned" and ctx.tail().last_seq == 2


def test_if_unchanged_refuses_to_append_to_a_moved_window(ctx) -> None:
    def model(messages: list[dict]) -> Iterator[str]:
        yield "late"
        ctx.append(user("someone else wrote meanwhile"))

    stream = ctx.stream(model, if_unchanged=True)
    with pytest.raises(ConflictError):
        list(stream)
    assert stream.status == "failed" and stream.message is not None
    assert ctx.tail().last_seq == 3
    unchanged = ctx.stream(lambda messages: iter(["ok"]), if_unchanged=True)
    assert unchanged.until_done() is not None


def test_a_context_manager_source_is_entered_and_exited(ctx) -> None:
    events: list[str] = []

    @contextlib.contextmanager
    def model_stream(messages: list[dict]) -> Iterator[Iterator[str]]:
        events.append("enter")
        yield iter(["from ", "a manager"])
        events.append("exit")

    stream = ctx.stream(model_stream)
    assert "".join(stream) == "from a manager"
    assert events == ["enter", "exit"]
    assert ctx.tail()[-1]["parts"][0]["text"] == "from a manager"


def test_an_empty_stream_appends_an_empty_answer(ctx) -> None:
    stream = ctx.stream(lambda messages: iter([]))
    assert list(stream) == [] and stream.result is not None
    assert ctx.tail()[-1]["parts"] == [{"type": "text", "text": ""}]


def test_unknown_chunks_need_an_accumulator(ctx) -> None:
    stream = ctx.stream(lambda messages: iter([object()]))
    with pytest.raises(TypeError, match="accumulator="):
        next(stream)
    assert ctx.tail().last_seq == 2
    with pytest.raises(TypeError, match="iterable"):
        ctx.stream(lambda messages: 42)


def test_budget_tokens_trims_the_window_given_to_the_model(ctx) -> None:
    stream = ctx.stream(lambda messages: iter(["ok"]), budget_tokens=9)
    assert [m["role"] for m in stream.window.messages] == ["system"]
    stream.close()


def test_builder_and_helpers() -> None:
    builder = MessageBuilder()
    builder.append_text("a", key=1)
    builder.append_reasoning("r")
    builder.append_text("b", key=2)
    builder.append_text("c", key=1)
    builder.start_tool_call("t", name=None)
    builder.append_tool_arguments("t", "{}")
    builder.update_part("reasoning", "sig", provider_metadata={"x": 1})
    builder.add_part({"type": "step-start"})
    assert builder.parts() == [
        {"type": "text", "text": "ac"},
        {"type": "reasoning", "text": "r"},
        {"type": "text", "text": "b"},
        {"type": "reasoning", "text": "", "provider_metadata": {"x": 1}},
        {"type": "step-start"},
    ]
    assert parse_tool_arguments("") == {} and parse_tool_arguments('{"a": 1}') == {"a": 1}
    assert isinstance(TextAccumulator(), StreamAccumulator)
    assert isinstance(EventAccumulator(), StreamAccumulator)
    with pytest.raises(TypeError):
        TextAccumulator().add(b"bytes")


def test_async_streams(server: ServerProcess, context_id: str) -> None:
    async def tokens(*pieces: str) -> AsyncIterator[str]:
        for piece in pieces:
            await asyncio.sleep(0)
            yield piece

    async def main() -> None:
        async with AsyncFastpaca(base_url=server.url) as client:
            ctx = await client.context(context_id, budget=10_000)
            await ctx.append(user("Hi"))

            stream = await ctx.stream(lambda messages: tokens("Hel", "lo"))
            assert [chunk async for chunk in stream] == ["Hel", "lo"]
            assert stream.result is not None and stream.result.seq == 2

            async def awaited_call(messages: list[dict]) -> AsyncIterator[str]:
                assert messages[0]["parts"][0]["text"] == "Hi"
                return tokens("awaited")

            stream = await ctx.stream(awaited_call, metadata={"via": "coroutine"})
            assert (await stream.until_done()) is not None

            stream = await ctx.stream(lambda messages: ["plain", " iterable"])
            assert "".join([chunk async for chunk in stream]) == "plain iterable"

            @contextlib.asynccontextmanager
            async def manager(messages: list[dict]) -> AsyncIterator[AsyncIterator[str]]:
                yield tokens("managed")

            stream = await ctx.stream(manager)
            await stream.until_done()
            assert stream.status == "completed"
            texts = [m["parts"][0]["text"] for m in await ctx.tail()]
            assert texts == ["Hi", "Hello", "awaited", "plain iterable", "managed"]

            async with await ctx.stream(lambda m: tokens("a", "b", "c")) as abandoned:
                async for _ in abandoned:
                    break
            assert abandoned.status == "abandoned" and abandoned.result is None

            partial = await ctx.stream(
                lambda m: tokens("so ", "far", "!"), on_abandon="append_partial"
            )
            await partial.__anext__()
            await partial.__anext__()
            await partial.aclose()
            assert partial.result is not None

            async def failing(messages: list[dict]) -> AsyncIterator[str]:
                yield "x"
                raise Boom("dropped")

            failed = await ctx.stream(failing)
            with pytest.raises(Boom):
                async for _ in failed:
                    pass
            assert failed.status == "failed"

            with pytest.raises(Boom):
                await ctx.stream(lambda messages: (_ for _ in ()).throw(Boom("down")))

            log = await ctx.tail()
            assert log.last_seq == 6
            assert log[-1]["parts"] == [{"type": "text", "text": "so far"}]
            assert log[-1]["metadata"] == {"partial": True}

    asyncio.run(main())


def test_the_core_imports_no_provider() -> None:
    code = (
        "import sys, fastpaca\n"
        "loaded = {name.partition('.')[0] for name in sys.modules}\n"
        "assert not loaded & {'openai', 'anthropic', 'langchain_core', 'httpx2'}, loaded\n"
        "assert fastpaca.accumulator_for('text').__class__.__name__ == 'TextAccumulator'\n"
        "assert not {n.partition('.')[0] for n in sys.modules} & {'fastpaca_openai'}\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
