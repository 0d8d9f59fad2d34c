"""A spec-checking HTTP client and small builders for the server's integration tests.

Every response that goes through :class:`Api` is checked before a test sees it:

* no 500 (and no other 5xx than the documented 503), and every error is JSON;
* JSON bodies are strict JSON (no ``NaN``/``Infinity``, which Python would
  otherwise accept) and match ``spec/openapi.yaml`` for their method, path
  and status (:func:`tests.support.spec.validate_response`).

Requests to paths the spec does not document (unknown routes, wrong methods)
go through ``api.raw`` — the plain :class:`httpx.Client` — and are checked with
:func:`assert_error` instead.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import httpx

from tests.support.server import ServerProcess
from tests.support.spec import validate_response

JSON = dict[str, Any]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json(content: bytes) -> Any:
    """Decode a body as RFC 8259 JSON: UTF-8, no NaN/Infinity."""
    return json.loads(content.decode("utf-8"), parse_constant=_refuse_constant)


def check_response(response: httpx.Response) -> None:
    """The checks every response of :class:`Api` passes (see the module docstring)."""
    request = response.request
    where = f"{request.method} {request.url.raw_path.decode()} → {response.status_code}"
    assert response.status_code < 500 or response.status_code == 503, (
        f"{where}: server error: {response.text[:500]}"
    )
    content_type = response.headers.get("content-type", "")
    path = request.url.raw_path.decode().split("?", 1)[0]
    if content_type.startswith("application/json"):
        try:
            body = strict_json(response.content)
        except ValueError as error:
            raise AssertionError(f"{where}: the body is not strict JSON ({error})") from None
        validate_response(request.method, path, response.status_code, body)
    else:
        assert response.status_code < 400, f"{where}: an error without a JSON body"
        validate_response(request.method, path, response.status_code, response.text)


class Api:
    """An :class:`httpx.Client` whose every response is checked against the spec."""

    def __init__(self, client: httpx.Client) -> None:
        self.raw = client

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = self.raw.request(method, url, **kwargs)
        check_response(response)
        return response

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)

    def close(self) -> None:
        self.raw.close()

    # --- shortcuts that expect success -------------------------------------

    def create(
        self, context_id: str | None = None, *, token_budget: int = 10_000, **body: Any
    ) -> JSON:
        """PUT a context (a fresh unique id unless given); returns the context."""
        context_id = context_id or new_id()
        response = self.put(
            f"/v1/contexts/{context_id}", json={"token_budget": token_budget, **body}
        )
        assert response.status_code == 200, response.text
        context: JSON = response.json()
        return context

    def append(self, context_id: str, *messages: JSON, **body: Any) -> JSON:
        """Append one message (or a batch when given several); returns the result."""
        payload = {"message": messages[0]} if len(messages) == 1 else {"messages": list(messages)}
        response = self.post(f"/v1/contexts/{context_id}/messages", json={**payload, **body})
        assert response.status_code == 201, response.text
        result: JSON = response.json()
        return result

    def context(self, context_id: str) -> JSON:
        response = self.get(f"/v1/contexts/{context_id}")
        assert response.status_code == 200, response.text
        context: JSON = response.json()
        return context

    def window(self, context_id: str, **params: Any) -> JSON:
        response = self.get(f"/v1/contexts/{context_id}/context", params=params)
        assert response.status_code == 200, response.text
        window: JSON = response.json()
        return window

    def log(self, context_id: str) -> list[JSON]:
        """The whole log, oldest first (paged by seq)."""
        messages: list[JSON] = []
        while True:
            response = self.get(
                f"/v1/contexts/{context_id}/messages",
                params={"after_seq": len(messages), "limit": 1000},
            )
            assert response.status_code == 200, response.text
            page = response.json()
            messages.extend(page["messages"])
            if not page["has_more"]:
                return messages


def connect(process: ServerProcess, **kwargs: Any) -> Api:
    return Api(process.client(**kwargs))


def new_id(prefix: str = "ctx") -> str:
    """A context id no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def text_message(text: str, role: str = "user", **extra: Any) -> JSON:
    return {"role": role, "parts": [{"type": "text", "text": text}], **extra}


def tool_call_message(call_id: str, text: str = "", name: str = "lookup", **extra: Any) -> JSON:
    parts: list[JSON] = [{"type": "tool_call", "id": call_id, "name": name, "input": {"q": text}}]
    return {"role": "assistant", "parts": parts, **extra}


def tool_result_message(call_id: str, output: str = "ok", **extra: Any) -> JSON:
    parts: list[JSON] = [{"type": "tool_result", "tool_call_id": call_id, "output": output}]
    return {"role": "tool", "parts": parts, **extra}


def state(api: Api, context_id: str) -> tuple[int, int]:
    """``(version, last_seq)`` of a context: what must not move when a request is refused."""
    context = api.context(context_id)
    return context["version"], context["last_seq"]


def assert_error(response: httpx.Response, status: int, code: str) -> JSON:
    """The response is the spec's error body with this status and code."""
    assert response.status_code == status, (
        f"expected {status} {code}, got {response.status_code}: {response.text[:500]}"
    )
    assert response.headers.get("content-type", "").startswith("application/json")
    body = strict_json(response.content)
    assert isinstance(body, dict) and set(body) == {"error", "message"}, body
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"].strip(), body
    return body


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 when the series does not exist)."""
    total = 0.0
    found = False
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        sample_labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(3) or ""))
        if all(sample_labels.get(key) == value for key, value in labels.items()):
            total += float(match.group(4))
            found = True
    return total if found else 0.0
