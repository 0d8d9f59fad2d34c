"""Fastpaca quick start: one agent turn with a tool call, against a running server.

Start a server first (``make serve``), then run::

    .venv/bin/python examples/quickstart.py

What it does:

1. creates a context (``PUT /v1/contexts/{id}``) with a token budget;
2. appends a pinned system prompt and a user question;
3. loops like an agent: read the LLM window (``GET .../context``), hand it to
   a model, append the model's answer with ``if_version`` (so a concurrent
   writer makes this fail loudly instead of interleaving) and an
   ``idempotency_key`` (so a retried request is stored once); when the model
   asks for a tool, run the tool and append its result;
4. prints the final window and the first page of the message log.

The "model" is :func:`mock_model`, a plain function: no network, no API key.
Only the standard library is used. Settings come from the environment:
``FASTPACA_URL`` (default ``http://127.0.0.1:4000``) and ``FASTPACA_API_KEY``
(only if the server was started with ``--api-key``).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

BASE_URL = os.environ.get("FASTPACA_URL", "http://127.0.0.1:4000").rstrip("/")
API_KEY = os.environ.get("FASTPACA_API_KEY")

Message = dict[str, Any]


class FastpacaError(Exception):
    """The server answered with an error body ``{"error", "message"}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code


def call(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One JSON request to the Fastpaca REST API; returns the decoded body."""
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if API_KEY:
        headers["Authorization"] = f"Bearer {API_KEY}"
    request = urllib.request.Request(BASE_URL + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result
    except urllib.error.HTTPError as error:
        try:
            payload = json.loads(error.read())
        except ValueError:
            payload = {}
        raise FastpacaError(
            error.code, payload.get("error", "http_error"), payload.get("message", str(error))
        ) from None


# --- the pretend model and its tool ------------------------------------------


def get_weather(city: str) -> dict[str, Any]:
    """The tool the model may call (a fixed table; a real one would call an API)."""
    table = {"oslo": (3, "cloudy"), "paris": (11, "sunny"), "lima": (19, "overcast")}
    temperature, sky = table.get(city.lower(), (15, "unknown"))
    return {"city": city, "temperature_c": temperature, "sky": sky}


def mock_model(window: list[Message]) -> Message:
    """Stand-in for an LLM call: takes the window's messages, returns one assistant message.

    When the latest message is the user's question, it asks for the weather
    tool (a ``tool_call`` part); once a ``tool_result`` for that call is in the
    window, it answers in text. A real app would send ``window`` to its model
    here (converted to the provider's message format).
    """
    last = window[-1]
    if last["role"] == "user":
        question = " ".join(p["text"] for p in last["parts"] if p["type"] == "text")
        city = "Oslo" if "oslo" in question.lower() else "Paris"
        return {
            "role": "assistant",
            "parts": [
                {
                    "type": "tool_call",
                    "id": f"call_{uuid.uuid4().hex[:12]}",
                    "name": "get_weather",
                    "payload": {"city": city},
                }
            ],
        }
    results = [p for p in last["parts"] if p["type"] == "tool_result"]
    if results:
        weather = results[0]["payload"]
        text = (
            f"It is {weather['temperature_c']} °C and {weather['sky']} in {weather['city']}. "
            "Bring a jacket."
        )
        return {"role": "assistant", "parts": [{"type": "text", "text": text}]}
    return {"role": "assistant", "parts": [{"type": "text", "text": "How can I help?"}]}


# --- the agent loop ------------------------------------------------------------


def append(context_id: str, message: Message, *, key: str, if_version: int | None = None) -> int:
    """Append one message; returns the context's new version."""
    body: dict[str, Any] = {"message": message, "idempotency_key": key}
    if if_version is not None:
        body["if_version"] = if_version
    result = call("POST", f"/v1/contexts/{context_id}/messages", body)
    stored = result["messages"][0]
    print(f"  appended seq={stored['seq']} role={message['role']} tokens={stored['token_count']}")
    return int(result["version"])


def run_turn(context_id: str, turn: str, max_steps: int = 5) -> None:
    """Let the model act until it answers in text (or ``max_steps`` model calls)."""
    for step in range(max_steps):
        window = call("GET", f"/v1/contexts/{context_id}/context")
        reply = mock_model(window["messages"])
        # if_version: the reply was computed from this window; refuse to store
        # it if anything else changed the context in the meantime.
        append(context_id, reply, key=f"{turn}-step{step}", if_version=window["version"])
        calls = [p for p in reply["parts"] if p["type"] == "tool_call"]
        if not calls:
            return
        for tool_call in calls:
            output = get_weather(**tool_call["payload"])
            result: Message = {
                "role": "tool",
                "parts": [
                    {
                        "type": "tool_result",
                        "tool_call_id": tool_call["id"],
                        "name": tool_call["name"],
                        "payload": output,
                    }
                ],
            }
            append(context_id, result, key=f"{turn}-step{step}-{tool_call['id']}")
    raise RuntimeError(f"the model did not answer within {max_steps} steps")


def describe(part: dict[str, Any]) -> str:
    if part["type"] == "text":
        return part["text"]
    if part["type"] == "tool_call":
        return f"[tool_call {part['name']}({json.dumps(part['payload'])}) id={part['id']}]"
    if part["type"] == "tool_result":
        return f"[tool_result for {part['tool_call_id']}: {json.dumps(part['payload'])}]"
    return f"[{part['type']}]"


def main() -> int:
    context_id = f"quickstart-{uuid.uuid4().hex[:8]}"
    print(f"Fastpaca at {BASE_URL}, context {context_id}")
    try:
        context = call(
            "PUT",
            f"/v1/contexts/{context_id}",
            {
                "token_budget": 4000,
                "policy": {"strategy": "last_n", "config": {"limit": 100}},
                "metadata": {"example": "quickstart"},
            },
        )
        print(f"created: budget={context['token_budget']} policy={context['policy']['strategy']}")
        # role "system" is pinned: no policy ever drops it from the window.
        system = {"role": "system", "parts": [{"type": "text", "text": "You are a weather bot."}]}
        append(context_id, system, key="system-prompt")
        question = {"role": "user", "parts": [{"type": "text", "text": "Weather in Oslo today?"}]}
        append(context_id, question, key="turn1-user")
        run_turn(context_id, "turn1")

        window = call("GET", f"/v1/contexts/{context_id}/context")
        print(
            f"\nLLM window (version {window['version']}, "
            f"{window['used_tokens']}/{window['budget_tokens']} tokens, "
            f"needs_compaction={window['needs_compaction']}):"
        )
        for message in window["messages"]:
            text = " ".join(describe(part) for part in message["parts"])
            print(f"  {message['seq']:>2} {message['role']:<9} {message['token_count']:>3}  {text}")

        page = call("GET", f"/v1/contexts/{context_id}/tail?limit=2")
        seqs = [m["seq"] for m in page["messages"]]
        print(f"\nlog: last_seq={page['last_seq']}, newest page {seqs}, older: {page['has_more']}")
    except urllib.error.URLError as error:
        print(f"cannot reach {BASE_URL} ({error.reason}); start a server with `make serve`")
        return 1
    except FastpacaError as error:
        print(f"the server refused a request: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
