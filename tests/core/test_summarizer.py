"""The summarizer client against a fake OpenAI-compatible server over real HTTP."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastpaca_server.summarizer import (
    DEFAULT_INSTRUCTIONS,
    MAX_TOOL_TEXT,
    Summarizer,
    SummarizerConfig,
    SummarizerError,
    render_transcript,
)

from tests.support.fake_openai import FakeOpenAI

SECRET_KEY = "sk-test-very-secret-0123456789"
SECRET_TEXT = "the launch code is 4242"


def msg(role: str, *parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": role, "parts": list(parts)}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


CONVERSATION = [
    msg("user", text("What is the weather in Oslo? Also, " + SECRET_TEXT)),
    msg(
        "assistant",
        text("Let me check."),
        {"type": "tool_call", "id": "c1", "name": "weather", "payload": {"city": "Oslo"}},
    ),
    msg("tool", {"type": "tool_result", "tool_call_id": "c1", "payload": {"temp_c": 3}}),
    msg("assistant", text("It is 3 °C in Oslo.")),
]


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def summarize(
    config: SummarizerConfig,
    previous: str | None = None,
    messages: list[dict[str, Any]] | None = None,
    instructions: str | None = None,
) -> str:
    async def main() -> str:
        summarizer = Summarizer(config)
        try:
            return await summarizer.summarize(
                previous, CONVERSATION if messages is None else messages, instructions
            )
        finally:
            await summarizer.close()

    return asyncio.run(main())


def config_for(fake: FakeOpenAI, **kwargs: Any) -> SummarizerConfig:
    return SummarizerConfig(base_url=fake.base_url, model="summary-model", **kwargs)


def closed_port() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


# -- render_transcript --------------------------------------------------------


def test_transcript_renders_text_tool_calls_and_results() -> None:
    assert render_transcript(CONVERSATION) == (
        f"user: What is the weather in Oslo? Also, {SECRET_TEXT}\n\n"
        "assistant: Let me check.\n"
        '[tool call weather({"city": "Oslo"})]\n\n'
        'tool: [tool result: {"temp_c": 3}]\n\n'
        "assistant: It is 3 °C in Oslo."
    )


def test_transcript_skips_other_parts_and_empty_messages() -> None:
    messages = [
        msg("user", {"type": "image", "url": "http://x"}),
        msg("assistant", {"type": "reasoning", "text": "hmm"}, text("Hi")),
        {"role": "user"},
        msg("user", "not a part"),  # type: ignore[arg-type]
    ]
    assert render_transcript(messages) == "assistant: Hi"


def test_transcript_truncates_tool_payloads() -> None:
    big = "x" * (MAX_TOOL_TEXT + 500)
    rendered = render_transcript(
        [
            msg("assistant", {"type": "tool_call", "id": "c", "name": "f", "payload": big}),
            msg("tool", {"type": "tool_result", "tool_call_id": "c", "payload": big}),
        ]
    )
    assert big not in rendered
    assert rendered.count("x" * MAX_TOOL_TEXT) == 2
    assert "500 more characters" in rendered


def test_transcript_uses_other_fields_without_payload() -> None:
    rendered = render_transcript(
        [msg("tool", {"type": "tool_result", "tool_call_id": "c", "output": "sunny"})]
    )
    assert rendered == "tool: [tool result: sunny]"


# -- over HTTP ------------------------------------------------------------------


def test_request_carries_model_previous_summary_and_transcript(fake: FakeOpenAI) -> None:
    fake.reply = lambda body: "  The user asked about Oslo; it is 3 °C.  \n"
    result = summarize(config_for(fake, max_summary_tokens=333), previous="Earlier: hello.")
    assert result == "The user asked about Oslo; it is 3 °C."
    [body] = fake.requests
    assert body["model"] == "summary-model"
    assert body["max_tokens"] == 333
    assert body["temperature"] == 0
    assert body.get("stream") in (None, False)
    system, user = body["messages"]
    assert system == {"role": "system", "content": DEFAULT_INSTRUCTIONS}
    assert user["role"] == "user"
    assert "Earlier: hello." in user["content"]
    assert render_transcript(CONVERSATION) in user["content"]
    assert user["content"].index("Earlier: hello.") < user["content"].index("user: What is")


def test_default_reply_and_no_previous_summary(fake: FakeOpenAI) -> None:
    result = summarize(config_for(fake))
    assert result.startswith("Summary of 4 messages: user: What is the weather")
    user = fake.requests[0]["messages"][1]["content"]
    assert "summary of the conversation before" not in user.lower()


def test_custom_instructions_replace_the_default(fake: FakeOpenAI) -> None:
    summarize(config_for(fake), instructions="Summarize in French.")
    system = fake.requests[0]["messages"][0]
    assert system == {"role": "system", "content": "Summarize in French."}


def test_api_key_is_sent_as_bearer(fake: FakeOpenAI) -> None:
    summarize(config_for(fake, api_key=SECRET_KEY))
    assert fake.authorizations == [f"Bearer {SECRET_KEY}"]


def test_missing_api_key_sends_a_placeholder(fake: FakeOpenAI) -> None:
    summarize(config_for(fake))
    assert fake.authorizations == ["Bearer unused"]


def test_config_repr_hides_the_api_key(fake: FakeOpenAI) -> None:
    assert SECRET_KEY not in repr(config_for(fake, api_key=SECRET_KEY))


@pytest.mark.parametrize("status", [400, 401, 429, 500, 503])
def test_http_error_status_raises(fake: FakeOpenAI, status: int) -> None:
    fake.status = status
    with pytest.raises(SummarizerError) as raised:
        summarize(config_for(fake, api_key=SECRET_KEY))
    message = str(raised.value)
    assert message == f"the summarizer answered HTTP {status}"
    assert len(fake.requests) == 1  # no retries
    assert raised.value.__cause__ is None


def test_error_never_carries_content_or_key(fake: FakeOpenAI) -> None:
    fake.status = 500  # the fake's error body echoes the request's messages
    with pytest.raises(SummarizerError) as raised:
        summarize(config_for(fake, api_key=SECRET_KEY), previous="prior " + SECRET_TEXT)
    for leaked in (SECRET_KEY, SECRET_TEXT, "Oslo"):
        assert leaked not in str(raised.value)
        assert leaked not in repr(raised.value)


def test_timeout_raises_quickly(fake: FakeOpenAI) -> None:
    fake.delay = 10.0
    started = time.monotonic()
    with pytest.raises(SummarizerError) as raised:
        summarize(config_for(fake, timeout=0.5, api_key=SECRET_KEY))
    elapsed = time.monotonic() - started
    assert str(raised.value) == "the summarizer did not answer within 0.5 s"
    assert elapsed < 3.0
    assert SECRET_KEY not in str(raised.value)


def test_connection_refused_raises() -> None:
    port = closed_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    started = time.monotonic()
    with pytest.raises(SummarizerError) as raised:
        summarize(SummarizerConfig(base_url=base_url, model="m", api_key=SECRET_KEY, timeout=5))
    assert str(raised.value) == f"could not reach the summarizer at {base_url}"
    assert time.monotonic() - started < 3.0


def test_unreachable_url_credentials_are_not_shown() -> None:
    port = closed_port()
    with pytest.raises(SummarizerError) as raised:
        summarize(
            SummarizerConfig(
                base_url=f"http://user:{SECRET_KEY}@127.0.0.1:{port}/v1?key={SECRET_KEY}",
                model="m",
                timeout=5,
            )
        )
    assert SECRET_KEY not in str(raised.value)
    assert str(raised.value) == f"could not reach the summarizer at http://127.0.0.1:{port}/v1"


@pytest.mark.parametrize("content", ["", "   \n ", None])
def test_empty_content_raises(fake: FakeOpenAI, content: str | None) -> None:
    fake.reply = lambda body: content
    with pytest.raises(SummarizerError) as raised:
        summarize(config_for(fake))
    assert str(raised.value) == "the summarizer answered with an empty summary"


def test_behaviour_changes_while_running(fake: FakeOpenAI) -> None:
    config = config_for(fake)

    async def main() -> list[str]:
        summarizer = Summarizer(config)
        outcomes: list[str] = []
        try:
            for status in (200, 500, 200):
                fake.status = status
                try:
                    outcomes.append(await summarizer.summarize(None, CONVERSATION))
                except SummarizerError as error:
                    outcomes.append(str(error))
        finally:
            await summarizer.close()
        return outcomes

    first, second, third = asyncio.run(main())
    assert first == third and first.startswith("Summary of 4 messages")
    assert second == "the summarizer answered HTTP 500"
    assert len(fake.requests) == 3
