"""Windows for the provider-format tests: each a list of stored (UIMessage-shaped)
messages covering one rule of ``GET …/context?format=openai|anthropic``.

``tests/integrations/test_format_parity.py`` runs every window through the
server's converters and the integrations' and compares; ``tests/server`` appends
them to real contexts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]

PNG = "data:image/png;base64,iVBORw0KGgo="
PDF = "data:application/pdf;base64,JVBERi0xLjQ="
SIGNED = {"anthropic": {"signature": "sig-1"}}


def message(role: str, *parts: JSON, seq: int | None = 1, **metadata: Any) -> JSON:
    """A message as the server stores it (the ``seq`` is renumbered by :func:`window`)."""
    return {
        "seq": seq,
        "id": f"msg_{role}",
        "role": role,
        "parts": list(parts),
        "metadata": metadata or None,
        "token_count": 5,
        "created_at": "2025-01-01T00:00:00.000Z",
    }


def window(*messages: JSON) -> list[JSON]:
    """``messages`` with ids and seqs in order (a ``seq`` of ``None`` is kept: a replacement)."""
    return [
        {**item, "id": f"msg_{index}", "seq": None if item["seq"] is None else index}
        for index, item in enumerate(messages, start=1)
    ]


def text(value: str) -> JSON:
    return {"type": "text", "text": value}


def call(call_id: str, name: str = "get_weather", **fields: Any) -> JSON:
    return {"type": "tool_call", "id": call_id, "name": name, **fields}


def result(call_id: str, **fields: Any) -> JSON:
    return {"type": "tool_result", "tool_call_id": call_id, **fields}


def file(url: str, media_type: str | None = None, **fields: Any) -> JSON:
    part: JSON = {"type": "file", "url": url, **fields}
    if media_type is not None:
        part["mediaType"] = media_type
    return part


@dataclass(frozen=True)
class Case:
    name: str
    messages: list[JSON]
    openai_valid: bool = True
    """Whether the OpenAI messages are ones its client's types accept (a role of your
    own is passed through as it is; Anthropic's turns are always ``user``/``assistant``)."""


CASES = [
    Case("empty", []),
    Case("text_only", window(message("user", text("Hi")), message("assistant", text("Hello!")))),
    Case(
        "system_and_developer",
        window(
            message("system", text("Be terse.")),
            message("developer", text("Answer in French."), text("Always.")),
            message("user", text("Hi")),
        ),
    ),
    Case(
        "multi_text",
        window(
            message("user", text("one"), text("two")),
            message("assistant", text("three"), text("four")),
            message("user", text("five")),
        ),
    ),
    Case(
        "tool_call_then_tool_message",
        window(
            message("user", text("Weather in Paris?")),
            message(
                "assistant",
                text("Let me check."),
                call("call_1", payload={"city": "Paris"}),
            ),
            message("tool", result("call_1", payload={"temp": 21, "sky": "clear"})),
            message("assistant", text("21°C and clear.")),
        ),
    ),
    Case(
        "parallel_calls_answered_in_a_user_message",
        window(
            message("user", text("Paris and Oslo?")),
            message(
                "assistant",
                call("call_a", payload={"city": "Paris"}),
                call("call_b", payload={"city": "Oslo"}),
            ),
            message(
                "user",
                result("call_a", payload="21"),
                result("call_b", payload="3"),
                text("Also, which is warmer?"),
            ),
            message("assistant", text("Paris.")),
        ),
    ),
    Case(
        "orphan_result",
        window(
            message("user", text("Hi")),
            message("tool", result("call_gone", payload="stale")),
            message("assistant", text("Hello")),
        ),
    ),
    Case(
        "call_without_result",
        window(
            message("user", text("Weather?")),
            message("assistant", text("Checking."), call("call_open", payload={})),
            message("assistant", call("call_alone", payload={"city": "Rome"})),
            message("user", text("Still there?")),
        ),
    ),
    Case(
        "call_and_result_in_one_message",
        window(
            message("user", text("Search")),
            message(
                "assistant",
                text("Searching"),
                call("call_s", name="search", payload={"q": "x"}),
                result("call_s", payload=["a", "b"]),
                text("Found two."),
            ),
        ),
    ),
    Case(
        "payload_shapes",
        window(
            message("user", text("Go")),
            message(
                "assistant",
                call("c_list", name="add", input=[2, 2]),
                call("c_none", name="ping"),
                call("c_args", name="echo", args={"s": "é"}),
                call("c_str", name="say", payload="hello"),
            ),
            message(
                "tool",
                result("c_list", output=4),
                result("c_none"),
                result("c_args", result={"s": "é"}),
                result("c_str", payload=None),
            ),
        ),
    ),
    Case(
        "tool_result_is_error",
        window(
            message("user", text("Divide")),
            message("assistant", call("c_div", name="divide", payload={"a": 1, "b": 0})),
            message("tool", result("c_div", payload="division by zero", is_error=True)),
            message("assistant", text("Cannot divide by zero.")),
        ),
    ),
    Case(
        "ai_sdk_tool_output_available",
        window(
            message("user", text("Weather?")),
            message(
                "assistant",
                {"type": "step-start"},
                {
                    "type": "tool-weather",
                    "toolCallId": "t1",
                    "state": "output-available",
                    "input": {"city": "Paris"},
                    "output": {"temp": 21},
                },
                text("21°C."),
            ),
            message("user", text("Thanks")),
        ),
    ),
    Case(
        "ai_sdk_tool_output_error",
        window(
            message("user", text("Run it")),
            message(
                "assistant",
                {
                    "type": "dynamic-tool",
                    "toolName": "run",
                    "toolCallId": "t2",
                    "state": "output-error",
                    "input": "ls",
                    "errorText": "permission denied",
                },
                {
                    "type": "tool-lookup",
                    "toolCallId": "t3",
                    "state": "output-error",
                    "input": None,
                },
            ),
        ),
    ),
    Case(
        "ai_sdk_tool_without_output",
        window(
            message("user", text("Weather?")),
            message(
                "assistant",
                text("Checking"),
                {
                    "type": "tool-weather",
                    "toolCallId": "t4",
                    "state": "input-available",
                    "input": {"city": "Oslo"},
                },
            ),
        ),
    ),
    Case(
        "files_images_pdf",
        window(
            message(
                "user",
                text("Look at these"),
                file(PNG, "image/png"),
                file("https://example.com/cat.jpg", "image/jpeg"),
                file(PDF, "application/pdf", filename="report.pdf"),
                file("data:image/gif;base64,R0lGOD=="),
                file("data:text/plain;base64,aGk=", "text/plain"),
                file("https://example.com/report.pdf", "application/pdf"),
                {"type": "file", "mediaType": "image/png"},
            ),
            message("assistant", text("Nice cat."), file(PNG, "image/png")),
        ),
    ),
    Case(
        "file_only_user_message",
        window(message("user", file(PNG, "image/png")), message("assistant", text("A pixel."))),
    ),
    Case(
        "reasoning_and_step_start",
        window(
            message("user", text("Think")),
            message(
                "assistant",
                {"type": "step-start"},
                {"type": "reasoning", "text": "unsigned thoughts"},
                {"type": "reasoning", "text": "signed thoughts", "provider_metadata": SIGNED},
                {
                    "type": "reasoning",
                    "text": "",
                    "provider_metadata": {"anthropic": {"redacted_data": "opaque"}},
                },
                text("Done."),
            ),
        ),
    ),
    Case(
        "reasoning_only_assistant",
        window(
            message("user", text("Think")),
            message("assistant", {"type": "reasoning", "text": "hmm"}),
            message("user", text("Well?")),
        ),
    ),
    Case(
        "empty_texts",
        window(
            message("system", text("")),
            message("user", text("")),
            message("assistant", text(""), call("c_e", payload={})),
            message("tool", result("c_e", payload="")),
            message("assistant", text("")),
            message("user", text("real"), text("")),
        ),
    ),
    Case(
        "unicode",
        window(
            message("system", text("Réponds en français 🇫🇷")),
            message("user", text("こんにちは 👋 שלום")),
            message("assistant", call("c_u", name="traduire", payload={"mot": "naïve ✓"})),
            message("tool", result("c_u", payload={"résultat": "наивный"})),
            message("assistant", text("«naïve» → наивный")),
        ),
    ),
    Case(
        "custom_roles_and_text_in_tool_messages",
        window(
            message("narrator", text("Once upon a time")),
            message("user", text("Go on")),
            message("assistant", call("c_t", payload={})),
            message("tool", result("c_t", payload="ok"), text("a note in a tool message")),
        ),
        openai_valid=False,
    ),
    Case(
        "consecutive_turns_merge",
        window(
            message("user", text("one")),
            message("user", text("two")),
            message("assistant", text("three")),
            message("assistant", text("four")),
        ),
    ),
    Case(
        "result_in_a_system_message",
        window(
            message("user", text("Go")),
            message("assistant", call("c_sys", payload={})),
            message("system", result("c_sys", payload="done"), text("Stay calm.")),
        ),
    ),
    Case(
        "compaction_replacement_and_pinned",
        window(
            message("assistant", text("Summary: they said hi."), seq=None),
            message("user", text("Pinned rule"), pinned=True),
            message("user", text("And now?")),
        ),
    ),
    Case(
        "unknown_part_types",
        window(
            message(
                "user",
                {"type": "data-weather", "data": {"city": "Paris"}},
                {"type": "source-url", "url": "https://example.com"},
                text("Hi"),
            ),
            message("assistant", {"type": "my-own"}, text("Hello")),
        ),
    ),
]


def inputs(messages: list[JSON]) -> list[JSON]:
    """The messages of a window as an append sends them (no seq, id or times)."""
    return [
        {"role": item["role"], "parts": item["parts"], "metadata": item["metadata"]}
        for item in messages
    ]
