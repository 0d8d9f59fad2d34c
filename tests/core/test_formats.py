"""The window as provider messages (``fastpaca_server.core.formats``): the rules, one
tricky window at a time. ``tests/integrations/test_format_parity.py`` checks the
same functions against the integrations' converters over a larger corpus."""

from __future__ import annotations

from typing import Any

from fastpaca_server.core.formats import FORMATS, to_anthropic, to_openai

from tests.support.format_corpus import PDF, PNG, call, file, message, result, text, window


def test_formats() -> None:
    assert FORMATS == ("ui", "openai", "anthropic")


def test_text_and_instructions() -> None:
    messages = window(
        message("system", text("Be terse."), text("Be kind.")),
        message("developer", text("French.")),
        message("user", text("Hi")),
        message("assistant", text("Salut"), text("!")),
    )
    assert to_openai(messages) == [
        {"role": "system", "content": "Be terse.\n\nBe kind."},
        {"role": "developer", "content": "French."},
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Salut"}, {"type": "text", "text": "!"}],
        },
    ]
    assert to_anthropic(messages) == {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "Salut"}, {"type": "text", "text": "!"}],
            },
        ],
        "system": "Be terse.\n\nBe kind.\n\nFrench.",
    }


def test_no_system_text_no_system_key() -> None:
    assert to_anthropic(window(message("user", text("Hi")))) == {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    }
    assert to_anthropic([]) == {"messages": []}
    assert to_openai([]) == []
    # An empty system message: OpenAI keeps the message, Anthropic has no system.
    assert to_openai(window(message("system", text("")))) == [{"role": "system", "content": ""}]
    assert to_anthropic(window(message("system", text("")))) == {"messages": []}


def test_tool_call_and_result_in_separate_messages() -> None:
    messages = window(
        message("user", text("Weather?")),
        message("assistant", text("Checking."), call("c1", payload={"city": "Paris"})),
        message("tool", result("c1", payload={"temp": 21})),
    )
    assert to_openai(messages) == [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 21}'},
    ]
    assert to_anthropic(messages)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "c1", "name": "get_weather", "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "c1", "content": '{"temp": 21}'}],
        },
    ]


def test_results_in_a_user_message_come_before_its_text() -> None:
    messages = window(
        message("assistant", call("a", payload={}), call("b", payload={})),
        message("user", text("and?"), result("b", payload="B"), result("a", payload="A")),
    )
    assert to_openai(messages)[1:] == [
        {"role": "tool", "tool_call_id": "b", "content": "B"},
        {"role": "tool", "tool_call_id": "a", "content": "A"},
        {"role": "user", "content": "and?"},
    ]
    user = to_anthropic(messages)["messages"][1]
    assert [block["type"] for block in user["content"]] == ["tool_result", "tool_result", "text"]


def test_calls_and_results_that_do_not_pair_are_left_out() -> None:
    messages = window(
        message("tool", result("gone", payload="stale")),
        message("user", text("Hi")),
        message("assistant", call("open", payload={})),  # nothing else: the message goes
        message("assistant", text("Hello"), call("open2", payload={})),
    )
    assert to_openai(messages) == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]
    assert to_anthropic(messages)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
    ]


def test_payloads_that_are_not_objects() -> None:
    messages = window(
        message(
            "assistant",
            call("l", name="add", input=[2, 2]),
            call("n", name="ping"),
            call("s", name="say", payload="héllo"),
        ),
        message("tool", result("l", output=4), result("n"), result("s", payload={"ok": "✓"})),
    )
    calls = to_openai(messages)[0]["tool_calls"]
    assert [c["function"]["arguments"] for c in calls] == ["[2, 2]", "{}", "héllo"]
    assert [m["content"] for m in to_openai(messages)[1:]] == ["4", "null", '{"ok": "✓"}']
    blocks = to_anthropic(messages)["messages"][0]["content"]
    assert [b["input"] for b in blocks] == [{"input": [2, 2]}, {}, {"input": "héllo"}]


def test_is_error_results() -> None:
    messages = window(
        message("assistant", call("d", payload={})),
        message("tool", result("d", payload="boom", is_error=True)),
    )
    assert to_anthropic(messages)["messages"][1]["content"] == [
        {"type": "tool_result", "tool_use_id": "d", "content": "boom", "is_error": True}
    ]
    assert to_openai(messages)[1] == {"role": "tool", "tool_call_id": "d", "content": "boom"}


def test_ai_sdk_tool_parts() -> None:
    done: dict[str, Any] = {
        "type": "tool-weather",
        "toolCallId": "t1",
        "state": "output-available",
        "input": {"city": "Oslo"},
        "output": "3°C",
    }
    failed: dict[str, Any] = {
        "type": "dynamic-tool",
        "toolName": "run",
        "toolCallId": "t2",
        "state": "output-error",
        "input": {"cmd": "ls"},
    }
    pending = {**done, "toolCallId": "t3", "state": "input-available"}
    messages = window(message("assistant", done, failed, pending, text("Done.")))
    assert to_openai(messages) == [
        {
            "role": "assistant",
            "content": "Done.",
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
                },
                {
                    "id": "t2",
                    "type": "function",
                    "function": {"name": "run", "arguments": '{"cmd": "ls"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "3°C"},
        {"role": "tool", "tool_call_id": "t2", "content": "error"},
    ]
    assert to_anthropic(messages)["messages"] == [
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Oslo"}},
                {"type": "tool_use", "id": "t2", "name": "run", "input": {"cmd": "ls"}},
                {"type": "text", "text": "Done."},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "3°C"},
                {"type": "tool_result", "tool_use_id": "t2", "content": "error", "is_error": True},
            ],
        },
    ]


def test_files() -> None:
    messages = window(
        message(
            "user",
            file(PNG, "image/png"),
            file("https://example.com/a.jpg", "image/jpeg"),
            file(PDF, "application/pdf", filename="r.pdf"),
            file("https://example.com/r.pdf", "application/pdf"),
            file("data:image/gif;base64,R0lG"),
            file("data:text/plain;base64,aGk=", "text/plain"),
            {"type": "file", "mediaType": "image/png"},
        )
    )
    assert to_openai(messages) == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": PNG}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
                {"type": "file", "file": {"file_data": PDF, "filename": "r.pdf"}},
                {"type": "image_url", "image_url": {"url": "data:image/gif;base64,R0lG"}},
                {"type": "file", "file": {"file_data": "data:text/plain;base64,aGk="}},
            ],
        }
    ]
    assert to_anthropic(messages)["messages"][0]["content"] == [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQ="},
        },
        {"type": "document", "source": {"type": "url", "url": "https://example.com/r.pdf"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": "R0lG"}},
    ]


def test_reasoning_and_step_start() -> None:
    messages = window(
        message(
            "assistant",
            {"type": "step-start"},
            {"type": "reasoning", "text": "unsigned"},
            {
                "type": "reasoning",
                "text": "signed",
                "provider_metadata": {"anthropic": {"signature": "s1"}},
            },
            {"type": "reasoning", "provider_metadata": {"anthropic": {"redacted_data": "xx"}}},
            text("Answer"),
        )
    )
    assert to_openai(messages) == [{"role": "assistant", "content": "Answer"}]
    assert to_anthropic(messages)["messages"][0]["content"] == [
        {"type": "thinking", "thinking": "signed", "signature": "s1"},
        {"type": "redacted_thinking", "data": "xx"},
        {"type": "text", "text": "Answer"},
    ]
    # Reasoning alone is not a message.
    alone = window(message("assistant", {"type": "reasoning", "text": "hmm"}))
    assert to_openai(alone) == []
    assert to_anthropic(alone) == {"messages": []}


def test_empty_texts() -> None:
    messages = window(
        message("user", text("")),
        message("assistant", text("")),
        message("user", text("x"), text("")),
    )
    # OpenAI keeps empty texts where the integration does; an empty assistant message goes.
    assert to_openai(messages) == [
        {"role": "user", "content": ""},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "text", "text": ""}]},
    ]
    # Anthropic refuses empty text blocks: they go, and so do the turns they leave empty.
    assert to_anthropic(messages) == {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]
    }


def test_anthropic_merges_turns_and_puts_results_first() -> None:
    messages = window(
        message("user", text("one")),
        message("assistant", call("c", payload={})),
        message("user", text("two")),
        message("tool", result("c", payload="r")),
        message("user", text("three")),
    )
    assert to_anthropic(messages)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "one"}]},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "c", "name": "get_weather", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "c", "content": "r"},
                {"type": "text", "text": "two"},
                {"type": "text", "text": "three"},
            ],
        },
    ]


def test_roles_of_your_own_and_tool_message_text() -> None:
    messages = window(
        message("narrator", text("Once")),
        message("assistant", call("c", payload={})),
        message("tool", result("c", payload="ok"), text("note")),
    )
    assert to_openai(messages) == [
        {"role": "narrator", "content": "Once"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c", "content": "ok"},
    ]
    assert to_anthropic(messages)["messages"][-1] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "c", "content": "ok"},
            {"type": "text", "text": "note"},
        ],
    }


def test_malformed_ids_pair_with_nothing() -> None:
    """Ids the API would refuse never reach the converters, but must not break them."""
    ai_sdk_part = {"type": "tool-x", "toolCallId": 5, "state": "output-available"}
    messages: list[dict[str, Any]] = [
        {"role": "assistant", "parts": [{"type": "tool_call", "id": ["x"], "name": "f"}]},
        {"role": "tool", "parts": [{"type": "tool_result", "tool_call_id": {"x": 1}}]},
        {"role": "user", "parts": [ai_sdk_part]},
        {"role": "user"},
    ]
    assert to_openai(messages) == []
    assert to_anthropic(messages) == {"messages": []}
