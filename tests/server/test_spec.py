"""spec/openapi.yaml is the contract: valid, in step with the routes, and true of real responses.

- the spec is valid OpenAPI 3.1;
- every spec operation has an aiohttp route and every route an operation;
- the spec's bounds and enums are the server's constants;
- a real server answers every operation, and every documented error status,
  with bodies that validate against the spec.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest
from fastpaca_server.access import hash_key
from fastpaca_server.api import create_app, validation
from fastpaca_server.config import ServerConfig
from fastpaca_server.core import models
from openapi_spec_validator import validate as validate_openapi

from tests.support.server import ServerProcess
from tests.support.spec import (
    load_spec,
    path_template,
    response_schema,
    spec_paths,
    validate_event,
    validate_httpx_response,
    validate_response,
)

API_KEY = "spec-test-key"
SMALL_BODY_LIMIT = 1024
# a running single node is always ready (tests/durability/test_data_dir.py sees these 503s
# while a node replays its journal)
UNTESTABLE = {
    ("GET", "/health/ready", 503),
    # Membership changes need a cluster; their 503s are covered in tests/cluster.
    ("POST", "/v1/cluster/members", 503),
    ("DELETE", "/v1/cluster/members/{raft_address}", 503),
    # A preview writes nothing: its 503 is the not-ready one every /v1 route shares.
    ("POST", "/v1/contexts/{context_id}/preview", 503),
}
UNREPRODUCIBLE_CODES = {"tokenizer_changed"}  # a race between counting tokens and applying


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    spec = load_spec()
    return [
        (method, template, spec["paths"][template][method.lower()])
        for method, template in sorted(spec_paths())
    ]


def _concrete(template: str, context_id: str = "ctx") -> str:
    path = template.replace("{context_id}", context_id).replace("{seq}", "1")
    return path.replace("{raft_address}", "127.0.0.1:7000")


def send(
    client: httpx.Client, method: str, path: str, status: int, **kwargs: Any
) -> httpx.Response:
    """Send one request, check its status and media type, validate its body."""
    response = client.request(method, path, **kwargs)
    assert response.status_code == status, (
        f"{method} {path}: expected {status}, got {response.status_code}: {response.text}"
    )
    validate_httpx_response(response)
    return response


def call(client: httpx.Client, method: str, path: str, status: int, **kwargs: Any) -> Any:
    """:func:`send`, returning the decoded body."""
    response = send(client, method, path, status, **kwargs)
    return _body(response, response_schema(method, path, status)[1])


def _body(response: httpx.Response, media_type: str) -> Any:
    return response.json() if media_type == "application/json" else response.text


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _text(text: str, role: str = "user", **extra: Any) -> dict[str, Any]:
    return {"role": role, "parts": [{"type": "text", "text": text}], **extra}


# --- the document -------------------------------------------------------------


def test_spec_is_valid_openapi_3_1() -> None:
    spec = load_spec()
    assert spec["openapi"] == "3.1.0"
    validate_openapi(spec)


def _route_operations() -> set[tuple[str, str]]:
    """Every ``(METHOD, path)`` the app serves (HEAD aside): the app's own router.
    The inspector's static files (``/ui``) are a web page, not part of the API."""
    found = set()
    for route in create_app(ServerConfig()).router.routes():
        resource = route.resource
        if resource is None or route.method == "HEAD" or resource.canonical.startswith("/ui"):
            continue
        found.add((route.method, resource.canonical))
    return found


def test_every_route_is_in_the_spec() -> None:
    missing = _route_operations() - spec_paths()
    assert not missing, f"routes without an operation in spec/openapi.yaml: {sorted(missing)}"


def test_every_spec_operation_has_a_route() -> None:
    missing = spec_paths() - _route_operations()
    assert not missing, f"spec operations without an aiohttp route: {sorted(missing)}"


def test_every_v1_operation_documents_its_shared_errors() -> None:
    problems = []
    for method, template, operation in _operations():
        statuses = set(operation["responses"])
        if not template.startswith("/v1/"):
            if operation.get("security") != []:
                problems.append(f"{method} {template} should be open (security: [])")
            continue
        if "security" in operation:
            problems.append(f"{method} {template} must inherit bearerAuth")
        # 503 not_ready on every /v1 route while starting; 403 and 429 with a keys file
        # (membership takes operator keys only, which no tenant's rate limits)
        expected = {"400", "401", "403", "503"}
        if not template.startswith("/v1/cluster/members"):
            expected.add("429")
        if method != "PUT" and "{context_id}" in template:
            expected.add("404")
        if "requestBody" in operation:
            expected.add("413")
        if not expected <= statuses:
            problems.append(f"{method} {template} lacks {sorted(expected - statuses)}")
    assert load_spec()["security"] == [{"bearerAuth": []}]
    assert not problems, "\n".join(problems)


def test_spec_bounds_are_the_servers_constants() -> None:
    schemas = load_spec()["components"]["schemas"]
    parameters = load_spec()["components"]["parameters"]
    paths = load_spec()["paths"]

    def query(template: str, name: str) -> dict[str, Any]:
        for parameter in paths[template]["get"]["parameters"]:
            if parameter.get("name") == name:
                schema: dict[str, Any] = parameter["schema"]
                return schema
        raise AssertionError(f"{template} has no query parameter {name}")

    assert schemas["ContextId"]["pattern"] == f"^{validation.CONTEXT_ID.pattern}$"
    assert parameters["Limit"]["schema"]["maximum"] == validation.MAX_PAGE
    for template, name in [
        ("/v1/contexts/{context_id}/tail", "offset"),
        ("/v1/contexts/{context_id}/messages", "after_seq"),
        ("/v1/contexts/{context_id}/messages", "before_seq"),
    ]:
        assert query(template, name)["maximum"] == validation.MAX_OFFSET
    budget = query("/v1/contexts/{context_id}/context", "budget_tokens")
    assert budget["maximum"] == models.MAX_TOKEN_BUDGET
    assert query("/v1/contexts/{context_id}/context", "if_version")["maximum"] == 2**62
    assert schemas["IfVersion"]["maximum"] == 2**62
    put = schemas["ContextPut"]["properties"]
    assert put["token_budget"]["maximum"] == models.MAX_TOKEN_BUDGET
    assert put["trigger_ratio"]["default"] == models.DEFAULT_TRIGGER_RATIO
    assert schemas["Tokenizer"]["enum"] == list(models.TOKENIZERS)
    for name in ("Policy", "PolicyInput"):
        *branches, custom = schemas[name]["oneOf"]
        strategies = [v["properties"]["strategy"]["const"] for v in branches]
        assert sorted(strategies) == sorted(models.STRATEGIES)
        assert custom["properties"]["strategy"]["not"]["enum"] == list(models.STRATEGIES)
    steps = [v["properties"]["strategy"]["const"] for v in schemas["PolicyStepInput"]["oneOf"]]
    assert steps == list(models.STEP_STRATEGIES)
    last_n, skip_parts, budget, time_window, strip, pipeline, *_ = schemas["PolicyInput"]["oneOf"]
    strip_config = strip["properties"]["config"]["properties"]
    assert strip_config["keep"]["default"] == models.DEFAULT_KEEP_TOOL_RESULTS
    assert strip_config["placeholder"]["default"] == models.DEFAULT_PLACEHOLDER
    assert strip_config["placeholder"]["maxLength"] == validation.MAX_PLACEHOLDER_LENGTH
    assert strip_config["exclude_tools"]["maxItems"] == validation.MAX_EXCLUDED_TOOLS
    steps_schema = pipeline["properties"]["config"]["properties"]["steps"]
    assert steps_schema["maxItems"] == models.MAX_PIPELINE_STEPS
    target = budget["properties"]["config"]["properties"]["target_ratio"]
    assert target["default"] == models.DEFAULT_TARGET_RATIO
    age = time_window["properties"]["config"]["properties"]["max_age_seconds"]
    assert age["maximum"] == models.MAX_AGE_SECONDS
    limit = last_n["properties"]["config"]["properties"]["limit"]
    assert (limit["maximum"], limit["default"]) == (
        models.MAX_POLICY_LIMIT,
        models.DEFAULT_LAST_N_LIMIT,
    )
    skip_kinds = skip_parts["properties"]["config"]["properties"]["skip_kinds"]
    assert skip_kinds["default"] == list(models.DEFAULT_SKIP_KINDS)
    assert skip_kinds["maxItems"] == validation.MAX_SKIP_KINDS
    message = schemas["Message"]["properties"]
    assert message["parts"]["maxItems"] == validation.MAX_PARTS
    assert message["role"]["maxLength"] == validation.MAX_ROLE_LENGTH
    assert message["id"]["maxLength"] == validation.MAX_ID_LENGTH
    assert message["token_count"]["maximum"] == models.MAX_TOKEN_BUDGET
    batch = schemas["AppendRequest"]["properties"]["messages"]["maxItems"]
    assert batch == schemas["CompactRequest"]["properties"]["replacement"]["maxItems"]
    assert batch == validation.MAX_BATCH
    assert schemas["Part"]["properties"]["type"]["maxLength"] == validation.MAX_PART_TYPE_LENGTH


def test_validate_response_rejects_what_the_spec_does_not_document() -> None:
    with pytest.raises(AssertionError, match="does not document"):
        validate_response("GET", "/v1/contexts/abc", 409, {"error": "x", "message": "y"})
    with pytest.raises(AssertionError, match="not in the spec"):
        validate_response("POST", "/v1/contexts/abc", 200, {})
    with pytest.raises(AssertionError, match="no path"):
        validate_response("GET", "/v2/contexts", 200, {})
    with pytest.raises(AssertionError, match="'not_found' was expected"):
        validate_response("GET", "/v1/contexts/abc", 404, {"error": "gone", "message": "m"})
    with pytest.raises(AssertionError, match="Additional properties"):
        validate_response(
            "GET", "/v1/contexts/abc/tail", 200,
            {"messages": [], "last_seq": 0, "has_more": False, "extra": 1},
        )  # fmt: skip
    assert path_template("http://127.0.0.1:4000/v1/contexts/a.b:c/messages?limit=1") == (
        "/v1/contexts/{context_id}/messages"
    )


# --- a real server: every operation once ---------------------------------------


def test_every_operation_answers_as_the_spec_says(server: ServerProcess) -> None:
    seen: set[tuple[str, str]] = set()
    context_id = _unique("spec-smoke")
    base = f"/v1/contexts/{context_id}"

    def ok(method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        body = call(client, method, path, status, **kwargs)
        seen.add((method, path_template(path)))
        return body

    with server.client() as client:
        assert ok("GET", "/health/live") == {"status": "ok"}
        assert ok("GET", "/health/ready") == {"status": "ok"}
        created = ok(
            "PUT",
            base,
            json={
                "token_budget": 10_000,
                "policy": {"strategy": "skip_parts", "config": {"skip_kinds": ["reasoning"]}},
                "metadata": {"user": "u1"},
            },
        )
        assert created["policy"] == {
            "strategy": "skip_parts",
            "config": {"limit": 200, "skip_kinds": ["reasoning"]},
        }
        assert created["archived_seq"] == 0  # this server has no archive
        assert ok("GET", base)["version"] == created["version"]
        patched = ok("PATCH", f"{base}/metadata", json={"metadata": {"topic": "spec"}})
        assert patched["metadata"] == {"user": "u1", "topic": "spec"}
        listed = ok("GET", "/v1/contexts", params={"metadata.topic": "spec", "limit": 1})
        assert [c["id"] for c in listed["contexts"]] == [patched["id"]]
        assert listed["contexts"][0] == ok("GET", base)

        one = ok(
            "POST",
            f"{base}/messages",
            201,
            json={"message": _text("You are terse.", role="system"), "idempotency_key": "k1"},
        )
        assert [m["seq"] for m in one["messages"]] == [1]
        batch = {
            "messages": [
                _text("What is 2+2?", metadata={"lang": "en"}),
                {
                    "id": "m-call",
                    "role": "assistant",
                    "parts": [
                        {"type": "reasoning", "text": "add"},
                        {"type": "tool_call", "id": "c1", "name": "add", "input": [2, 2]},
                    ],
                },
                {
                    "role": "tool",
                    "parts": [{"type": "tool_result", "tool_call_id": "c1", "output": 4}],
                    "token_count": 3,
                },
            ],
            "idempotency_key": "k2",
            "if_version": one["version"],
        }
        appended = ok("POST", f"{base}/messages", 201, json=batch)
        assert [m["seq"] for m in appended["messages"]] == [2, 3, 4]
        assert ok("POST", f"{base}/messages", 201, json=batch) == appended

        page = ok("GET", f"{base}/messages", params={"after_seq": 1, "limit": 2})
        assert [m["seq"] for m in page["messages"]] == [2, 3]
        assert page["has_more"] is True
        tail = ok("GET", f"{base}/tail", params={"offset": 1, "limit": 2})
        assert [m["seq"] for m in tail["messages"]] == [2, 3]
        window = ok("GET", f"{base}/context")
        assert window["segments"] == [
            {"type": "log", "from_seq": 1, "to_seq": 4, "count": 4, "tokens": window["used_tokens"]}
        ]
        ok("GET", f"{base}/context", params={"budget_tokens": 50, "if_version": window["version"]})

        compacted = ok(
            "POST",
            f"{base}/compact",
            json={
                "replacement": [_text("Summary: 2+2=4.", role="assistant")],
                "if_version": window["version"],
            },
        )
        assert compacted["message_count"] == 1
        ok("POST", f"{base}/messages", 201, json={"message": _text("thanks")})
        window = ok("GET", f"{base}/context")
        assert [s["type"] for s in window["segments"]] == ["replacement", "log"]
        assert window["messages"][0]["seq"] is None
        records = ok("GET", f"{base}/compactions", params={"after": 0, "limit": 10})
        assert records["compactions"] == 1
        assert records["records"][0]["actions"][0]["removed"] == [[1, 4]]
        preview = ok(
            "POST",
            f"{base}/preview",
            json={"token_budget": 30, "policy": {"strategy": "strip_tool_results"}},
        )
        assert preview["config"]["policy"]["strategy"] == "strip_tool_results"

        # The export: the whole log as JSON Lines, each line as GET …/messages has it.
        export = send(client, "GET", f"{base}/export", 200)
        seen.add(("GET", path_template(f"{base}/export")))
        assert export.headers["X-Fastpaca-Last-Seq"] == "5"
        assert export.text.endswith("\n")
        log = ok("GET", f"{base}/messages", params={"limit": 1000})["messages"]
        assert [json.loads(line) for line in export.text.split("\n")[:-1]] == log
        assert [m["seq"] for m in log] == [1, 2, 3, 4, 5]

        # The live feeds: both replay everything after the cursor; on a tombstoned context
        # they end after `tombstoned` (before it, the SSE response would never end).
        stream = asyncio.run(_websocket_messages(server.url, f"{base}/stream", cursor=0))
        seen.add(("GET", path_template(f"{base}/stream")))
        deleted = ok("DELETE", base)
        assert deleted["status"] == "tombstoned"
        assert ok("DELETE", base)["version"] == deleted["version"]
        feed = ok("GET", f"{base}/events", params={"cursor": 1})
        events = _server_sent_events(feed)
        replayed = [e["type"] for e in stream[2:]]  # versions 3 … on
        assert [e["type"] for e in events] == ["context", *replayed, "tombstoned"]
        assert events[-1]["version"] == deleted["version"]
        assert {e["type"] for e in stream} >= {"context", "message", "compaction"}
        assert [e["seq"] for e in stream if e["type"] == "message"] == [1, 2, 3, 4, 5]

        # Erasure: a redacted message keeps its seq and place (a tombstone may be
        # redacted); a purge erases the rest and reads answer empty.
        redacted = ok("POST", f"{base}/messages/2/redact")
        assert redacted["version"] == deleted["version"] + 1
        assert ok("POST", f"{base}/messages/2/redact")["version"] == redacted["version"]
        log = ok("GET", f"{base}/messages", params={"limit": 1000})["messages"]
        assert [m["seq"] for m in log] == [1, 2, 3, 4, 5]
        assert log[1]["parts"] == [{"type": "redacted"}] and log[1]["metadata"] == {"lang": "en"}
        purged = ok("DELETE", base, params={"purge": "true"})
        assert (purged["status"], purged["metadata"], purged["last_seq"]) == ("purged", {}, 5)
        assert purged["purge"]["purged_by"] is None  # this server takes no keys
        assert ok("GET", f"{base}/tail")["messages"] == []
        assert ok("GET", f"{base}/context")["messages"] == []

        metrics = ok("GET", "/metrics")
        assert "fastpaca_http_requests_total" in metrics
        cluster = ok("GET", "/v1/cluster")  # a single node is a cluster of one
        assert cluster["leader"] == cluster["node_id"] == "n1" and cluster["ready"] is True
        assert [m["leader"] for m in cluster["members"]] == [True]
        # Membership changes need a cluster (tests/cluster exercises their 200s):
        # a single node answers them with the documented 409.
        member = {"raft_address": "127.0.0.1:7000"}
        assert ok("POST", "/v1/cluster/members", 409, json=member)["error"] == (
            "membership_change_refused"
        )
        assert ok("DELETE", "/v1/cluster/members/127.0.0.1:7000", 409)["error"] == (
            "membership_change_refused"
        )

    assert seen == spec_paths(), f"not exercised: {sorted(spec_paths() - seen)}"


async def _websocket_messages(url: str, path: str, **params: Any) -> list[Any]:
    """The events a websocket feed replays (read until it goes quiet), each checked."""
    messages: list[Any] = []
    async with (
        aiohttp.ClientSession(url) as session,
        session.ws_connect(path, params=params) as websocket,
    ):
        assert websocket._response.status == 101
        while True:
            try:
                message = await websocket.receive(timeout=1)
            except TimeoutError:
                return messages
            assert message.type == aiohttp.WSMsgType.TEXT, message
            event = json.loads(message.data)
            validate_event(event, websocket=True)
            if event["type"] != "ping":
                messages.append(event)


def _server_sent_events(body: str) -> list[Any]:
    """The JSON data of each SSE message of ``body``, each checked against the spec."""
    events = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line[:1] != ":")
        if "data" in fields:
            event = json.loads(fields["data"])
            assert fields["event"] == event["type"]
            validate_event(event)
            events.append(event)
    return events


# --- a real server: every documented 400, 404 and 409 ---------------------------

APPEND = {"message": _text("hello")}
BAD = "/v1/contexts/" + "x" * 257  # one character too long
ACTIVE = "/v1/contexts/{active}"
SMALL = "/v1/contexts/{small}"  # token_budget 50, a pinned 40-token system message, metadata
TOMBSTONED = "/v1/contexts/{tombstoned}"
PURGED = "/v1/contexts/{purged}"  # one message, then purged
MISSING = "/v1/contexts/{missing}"
PLACEHOLDERS = {"active": "a", "small": "s", "tombstoned": "t", "purged": "p", "missing": "m"}


def case(method: str, path: str, status: int, code: str, **kwargs: Any) -> Any:
    """One error request; ``path`` has placeholders for the ids made by ``contexts``."""
    shown = path.replace(BAD, "/v1/contexts/<too-long>")
    return pytest.param(method, path, status, code, kwargs, id=f"{method} {shown} {code}")


ERROR_CASES = [
    # GET /v1/cluster, and membership changes
    case("GET", "/v1/cluster", 400, "unknown_field", params={"verbose": 1}),
    case("POST", "/v1/cluster/members", 400, "invalid_json", content=b"{"),
    case("POST", "/v1/cluster/members", 400, "unknown_field", json={"raft_address": "a:1", "b": 1}),
    case("POST", "/v1/cluster/members", 400, "invalid_request", json={"raft_address": "nope"}),
    case(
        "POST",
        "/v1/cluster/members",
        409,
        "membership_change_refused",
        json={"raft_address": "127.0.0.1:7000"},
    ),
    case("DELETE", "/v1/cluster/members/nope", 400, "invalid_request"),
    case("DELETE", "/v1/cluster/members/127.0.0.1:7000", 400, "unknown_field", params={"x": 1}),
    case("DELETE", "/v1/cluster/members/127.0.0.1:7000", 409, "membership_change_refused"),
    # GET /v1/contexts
    case("GET", "/v1/contexts", 400, "unknown_field", params={"colour": "red"}),
    case("GET", "/v1/contexts", 400, "invalid_request", params={"limit": 0}),
    case("GET", "/v1/contexts", 400, "invalid_request", params={"order": "oldest"}),
    case("GET", "/v1/contexts", 400, "invalid_request", params={"cursor": "not-a-cursor"}),
    case("GET", "/v1/contexts", 400, "invalid_request", params={"status": "deleted"}),
    case("GET", "/v1/contexts", 400, "invalid_request", params={"metadata.": "x"}),
    case("GET", "/v1/contexts", 400, "invalid_request", params={"prefix": "x" * 1025}),
    # PUT /v1/contexts/{id}
    case("PUT", BAD, 400, "invalid_context_id", json={"token_budget": 10}),
    case("PUT", MISSING, 400, "invalid_json", content=b"{not json"),
    case("PUT", MISSING, 400, "invalid_json", content=b"[1, 2]"),
    case("PUT", MISSING, 400, "unknown_field", json={"token_budget": 10, "colour": 1}),
    case(
        "PUT",
        MISSING,
        400,
        "unknown_field",
        json={"token_budget": 10, "policy": {"strategy": "manual", "config": {"limit": 3}}},
    ),
    case("PUT", MISSING, 400, "invalid_request", json={}),
    case(
        "PUT",
        MISSING,
        400,
        "summarizer_not_configured",
        json={"token_budget": 10, "policy": {"strategy": "summarize"}},
    ),
    case("PUT", MISSING, 400, "invalid_request", json={"token_budget": 0}),
    case("PUT", TOMBSTONED, 409, "context_tombstoned", json={"token_budget": 10}),
    case(
        "PUT",
        ACTIVE,
        409,
        "tokenizer_immutable",
        json={"token_budget": 1000, "tokenizer": "cl100k_base"},
    ),
    case("PUT", SMALL, 409, "budget_below_pinned", json={"token_budget": 30}),
    # GET and DELETE /v1/contexts/{id}
    case("GET", BAD, 400, "invalid_context_id"),
    case("GET", ACTIVE, 400, "unknown_field", params={"verbose": 1}),
    case("GET", MISSING, 404, "not_found"),
    case("DELETE", "/v1/contexts/bad%20id", 400, "invalid_context_id"),
    case("DELETE", ACTIVE, 400, "unknown_field", params={"force": 1}),
    case("DELETE", MISSING, 404, "not_found"),
    case("DELETE", ACTIVE, 400, "invalid_request", params={"purge": "yes"}),
    case("DELETE", ACTIVE, 400, "invalid_request", params=[("purge", "false")] * 2),
    # POST /v1/contexts/{id}/messages/{seq}/redact
    case("POST", "/v1/contexts/bad%20id/messages/1/redact", 400, "invalid_context_id"),
    case("POST", f"{ACTIVE}/messages/1/redact", 400, "unknown_field", params={"all": "true"}),
    case("POST", f"{ACTIVE}/messages/0/redact", 400, "invalid_request"),
    case("POST", f"{ACTIVE}/messages/one/redact", 400, "invalid_request"),
    case("POST", f"{MISSING}/messages/1/redact", 404, "not_found"),
    case("POST", f"{ACTIVE}/messages/99/redact", 404, "not_found"),
    case("POST", f"{PURGED}/messages/1/redact", 409, "context_purged"),
    # PATCH /v1/contexts/{id}/metadata
    case("PATCH", f"{BAD}/metadata", 400, "invalid_context_id", json={"metadata": {}}),
    case("PATCH", f"{ACTIVE}/metadata", 400, "invalid_json", content=b"nope"),
    case("PATCH", f"{ACTIVE}/metadata", 400, "unknown_field", json={"metadata": {}, "x": 1}),
    case("PATCH", f"{ACTIVE}/metadata", 400, "invalid_request", json={}),
    case("PATCH", f"{MISSING}/metadata", 404, "not_found", json={"metadata": {}}),
    case(
        "PATCH",
        f"{ACTIVE}/metadata",
        409,
        "version_conflict",
        json={"metadata": {"a": 1}, "if_version": 10**9},
    ),
    case("PATCH", f"{TOMBSTONED}/metadata", 409, "context_tombstoned", json={"metadata": {}}),
    # POST /v1/contexts/{id}/messages
    case("POST", f"{BAD}/messages", 400, "invalid_context_id", json=APPEND),
    case("POST", f"{ACTIVE}/messages", 400, "invalid_json", content=b'{"message":'),
    case(
        "POST",
        f"{ACTIVE}/messages",
        400,
        "unknown_field",
        json={"message": {**_text("hi"), "name": "bob"}},
    ),
    case(
        "POST",
        f"{ACTIVE}/messages",
        400,
        "invalid_request",
        json={"message": _text("a"), "messages": [_text("b")]},
    ),
    case(
        "POST",
        f"{ACTIVE}/messages",
        400,
        "invalid_request",
        json={"message": {"role": "user", "parts": []}},
    ),
    case(
        "POST",
        f"{ACTIVE}/messages",
        400,
        "invalid_request",
        json={"message": {"role": "assistant", "parts": [{"type": "tool_call", "id": "c"}]}},
    ),
    case(
        "POST",
        f"{SMALL}/messages",
        400,
        "message_exceeds_budget",
        json={"message": _text("big", token_count=51)},
    ),
    case(
        "POST",
        f"{SMALL}/messages",
        400,
        "unit_exceeds_budget",
        json={
            "messages": [
                {
                    "role": "assistant",
                    "parts": [{"type": "tool_call", "id": "c1", "name": "f", "payload": {}}],
                    "token_count": 5,
                },
                {
                    "role": "tool",
                    "parts": [{"type": "tool_result", "tool_call_id": "c1", "output": 1}],
                    "token_count": 6,
                },
            ]
        },
    ),
    case(
        "PATCH",
        f"{SMALL}/metadata",
        400,
        "metadata_too_large",
        json={"metadata": {"a": "x" * 65_520}},
    ),
    case(
        "POST",
        f"{SMALL}/messages",
        400,
        "pinned_exceeds_budget",
        json={"message": _text("rules", role="system", token_count=20)},
    ),
    case("POST", f"{MISSING}/messages", 404, "not_found", json=APPEND),
    case(
        "POST",
        f"{ACTIVE}/messages",
        409,
        "version_conflict",
        json={**APPEND, "if_version": 10**9},
    ),
    case("POST", f"{TOMBSTONED}/messages", 409, "context_tombstoned", json=APPEND),
    case(
        "POST",
        f"{ACTIVE}/messages",
        409,
        "idempotency_key_reused",
        json={"message": _text("something else"), "idempotency_key": "used-append-key"},
    ),
    # GET /v1/contexts/{id}/messages and /tail
    case("GET", f"{BAD}/messages", 400, "invalid_context_id"),
    case("GET", f"{ACTIVE}/messages", 400, "unknown_field", params={"cursor": 1}),
    case("GET", f"{ACTIVE}/messages", 400, "invalid_request", params={"limit": 1001}),
    case("GET", f"{ACTIVE}/messages", 400, "invalid_request", params={"before_seq": 0}),
    case("GET", f"{ACTIVE}/messages?limit=1&limit=2", 400, "invalid_request"),
    case("GET", f"{MISSING}/messages", 404, "not_found"),
    case("GET", f"{BAD}/tail", 400, "invalid_context_id"),
    case("GET", f"{ACTIVE}/tail", 400, "unknown_field", params={"after_seq": 1}),
    case("GET", f"{ACTIVE}/tail", 400, "invalid_request", params={"offset": -1}),
    case("GET", f"{ACTIVE}/tail", 400, "invalid_request", params={"limit": "ten"}),
    case("GET", f"{MISSING}/tail", 404, "not_found"),
    # GET /v1/contexts/{id}/export (takes no query parameters)
    case("GET", f"{BAD}/export", 400, "invalid_context_id"),
    case("GET", f"{ACTIVE}/export", 400, "unknown_field", params={"after_seq": 1}),
    case("GET", f"{MISSING}/export", 404, "not_found"),
    # GET /v1/contexts/{id}/compactions and POST …/preview
    case("GET", f"{BAD}/compactions", 400, "invalid_context_id"),
    case("GET", f"{ACTIVE}/compactions", 400, "unknown_field", params={"offset": 1}),
    case("GET", f"{ACTIVE}/compactions", 400, "invalid_request", params={"after": -1}),
    case("GET", f"{MISSING}/compactions", 404, "not_found"),
    case("POST", f"{BAD}/preview", 400, "invalid_context_id", json={}),
    case("POST", f"{ACTIVE}/preview", 400, "invalid_json", content=b"{"),
    case("POST", f"{ACTIVE}/preview", 400, "unknown_field", json={"metadata": {}}),
    case("POST", f"{ACTIVE}/preview", 400, "invalid_request", json={"token_budget": 0}),
    case(
        "POST",
        f"{ACTIVE}/preview",
        400,
        "invalid_request",
        json={"policy": {"strategy": "pipeline", "config": {"steps": []}}},
    ),
    case("POST", f"{MISSING}/preview", 404, "not_found", json={}),
    # GET /v1/contexts/{id}/context
    case("GET", f"{BAD}/context", 400, "invalid_context_id"),
    case("GET", f"{ACTIVE}/context", 400, "unknown_field", params={"limit": 1}),
    case("GET", f"{ACTIVE}/context", 400, "invalid_request", params={"budget_tokens": 0}),
    case("GET", f"{SMALL}/context", 400, "budget_too_small", params={"budget_tokens": 10}),
    case("GET", f"{MISSING}/context", 404, "not_found"),
    case("GET", f"{ACTIVE}/context", 409, "version_conflict", params={"if_version": 10**9}),
    # GET /v1/contexts/{id}/stream and /events (refused before any upgrade or stream)
    case("GET", f"{BAD}/stream", 400, "invalid_context_id"),
    case("GET", f"{ACTIVE}/stream", 400, "unknown_field", params={"after_seq": 1}),
    case("GET", f"{ACTIVE}/stream", 400, "invalid_request", params={"cursor": -1}),
    case("GET", f"{ACTIVE}/stream", 400, "invalid_request"),  # not a websocket upgrade
    case("GET", f"{MISSING}/stream", 404, "not_found"),
    case("GET", f"{BAD}/events", 400, "invalid_context_id"),
    case("GET", f"{ACTIVE}/events", 400, "unknown_field", params={"since": 1}),
    case("GET", f"{ACTIVE}/events", 400, "invalid_request", params={"include_messages": "yes"}),
    case("GET", f"{ACTIVE}/events", 400, "invalid_request", headers={"Last-Event-ID": "x"}),
    case("GET", f"{MISSING}/events", 404, "not_found"),
    # POST /v1/contexts/{id}/compact
    case("POST", f"{BAD}/compact", 400, "invalid_context_id", json={"replacement": []}),
    case("POST", f"{ACTIVE}/compact", 400, "invalid_json", content=b"\xff\xfe"),
    case(
        "POST", f"{ACTIVE}/compact", 400, "unknown_field", json={"replacement": [], "summary": "x"}
    ),
    case("POST", f"{ACTIVE}/compact", 400, "invalid_request", json={}),
    case(
        "POST",
        f"{SMALL}/compact",
        400,
        "replacement_exceeds_budget",
        json={"replacement": [_text("summary", token_count=51)]},
    ),
    case(
        "POST",
        f"{ACTIVE}/compact",
        400,
        "unknown_seq",
        json={"replacement": [{**_text("kept"), "seq": 10**9}]},
    ),
    case(
        "POST",
        f"{ACTIVE}/compact",
        400,
        "kept_message_mismatch",
        json={"replacement": [{**_text("not what seq 1 says"), "seq": 1}]},
    ),
    case("POST", f"{MISSING}/compact", 404, "not_found", json={"replacement": []}),
    case(
        "POST",
        f"{ACTIVE}/compact",
        409,
        "version_conflict",
        json={"replacement": [], "if_version": 10**9},
    ),
    case("POST", f"{TOMBSTONED}/compact", 409, "context_tombstoned", json={"replacement": []}),
    case(
        "POST",
        f"{ACTIVE}/compact",
        409,
        "idempotency_key_reused",
        json={"replacement": [_text("another summary")], "idempotency_key": "used-compact-key"},
    ),
]


@pytest.fixture(scope="module")
def contexts(server: ServerProcess) -> dict[str, str]:
    """Contexts in the states the error cases need (errors change nothing, so they are shared)."""
    names = ("active", "small", "tombstoned", "purged", "missing")
    ids = {name: _unique(f"spec-{name}") for name in names}
    with server.client() as client:
        client.put(f"/v1/contexts/{ids['active']}", json={"token_budget": 1000}).raise_for_status()
        client.post(
            f"/v1/contexts/{ids['active']}/messages",
            json={"message": _text("hello"), "idempotency_key": "used-append-key"},
        ).raise_for_status()
        client.post(
            f"/v1/contexts/{ids['active']}/compact",
            json={"replacement": [_text("summary")], "idempotency_key": "used-compact-key"},
        ).raise_for_status()
        client.put(
            f"/v1/contexts/{ids['small']}",
            json={"token_budget": 50, "metadata": {"owner": "spec"}},
        ).raise_for_status()
        client.post(
            f"/v1/contexts/{ids['small']}/messages",
            json={"message": _text("rules", role="system", token_count=40)},
        ).raise_for_status()
        client.put(
            f"/v1/contexts/{ids['tombstoned']}", json={"token_budget": 10}
        ).raise_for_status()
        client.delete(f"/v1/contexts/{ids['tombstoned']}").raise_for_status()
        purged = f"/v1/contexts/{ids['purged']}"
        client.put(purged, json={"token_budget": 10}).raise_for_status()
        client.post(f"{purged}/messages", json=APPEND).raise_for_status()
        client.delete(purged, params={"purge": "true"}).raise_for_status()
    return ids


@pytest.mark.parametrize(("method", "path", "status", "code", "kwargs"), ERROR_CASES)
def test_error_responses_match_the_spec(
    server: ServerProcess,
    contexts: dict[str, str],
    method: str,
    path: str,
    status: int,
    code: str,
    kwargs: dict[str, Any],
) -> None:
    path = path.format(**contexts)
    with server.client() as client:
        before = {name: client.get(f"/v1/contexts/{cid}").text for name, cid in contexts.items()}
        body = call(client, method, path, status, **kwargs)
        assert body["error"] == code, body
        after = {name: client.get(f"/v1/contexts/{cid}").text for name, cid in contexts.items()}
    assert after == before, "a refused request changed a context"


def test_error_cases_cover_every_documented_error_status_and_code() -> None:
    """Adding a documented 400/404/409 (or an error code) to the spec needs a case here."""
    cases = [
        (method, path_template(path.format(**PLACEHOLDERS)), status, code)
        for method, path, status, code, _ in (param.values for param in ERROR_CASES)
    ]
    covered = {(method, template, status) for method, template, status, _ in cases}
    documented = {
        (method, template, int(status))
        for method, template, operation in _operations()
        for status in operation["responses"]
        if int(status) in (400, 404, 409)
    }
    assert not documented - covered, f"no error case for {sorted(documented - covered)}"
    assert not covered - documented, f"cases of undocumented statuses: {covered - documented}"
    codes = {(method, template, code) for method, template, _, code in cases}
    missing = [
        f"{method} {template} {status} {code}"
        for method, template, status in sorted(documented)
        for code in _documented_codes(method, template, status)
        if code not in UNREPRODUCIBLE_CODES and (method, template, code) not in codes
    ]
    assert not missing, "no error case for:\n" + "\n".join(missing)
    wrong = [case for case in cases if case[3] not in _documented_codes(*case[:3])]
    assert not wrong, f"cases with codes the spec does not list: {wrong}"


def _documented_codes(method: str, template: str, status: int) -> list[str]:
    schema, _ = response_schema(method, template, status)
    codes = []
    for part in schema.get("allOf", []):
        error = part.get("properties", {}).get("error", {})
        codes += error.get("enum", []) + ([error["const"]] if "const" in error else [])
    return codes


# --- servers of their own: 401, 413 and 503 -------------------------------------


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """An API key and a small body limit."""
    data = tmp_path_factory.mktemp("guarded") / "data"
    process = ServerProcess(
        data, "--max-body-bytes", str(SMALL_BODY_LIMIT), api_key=API_KEY
    ).start()
    yield process
    process.stop()


V1_OPERATIONS = [(m, t) for m, t, _ in _operations() if t.startswith("/v1/")]
OPEN_OPERATIONS = [(m, t) for m, t, _ in _operations() if not t.startswith("/v1/")]
BODY_OPERATIONS = [(m, t) for m, t, op in _operations() if "requestBody" in op]
WRITE_OPERATIONS = [
    (m, t)
    for m, t, op in _operations()
    if m in ("PUT", "POST", "PATCH", "DELETE")
    and "503" in op["responses"]
    and (m, t, 503) not in UNTESTABLE
]


@pytest.mark.parametrize(("method", "template"), V1_OPERATIONS)
@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-key", API_KEY], ids=["none", "wrong-key", "no-scheme"]
)
def test_v1_needs_the_api_key(
    guarded_server: ServerProcess, method: str, template: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    with httpx.Client(base_url=guarded_server.url, headers=headers, timeout=30) as client:
        response = send(client, method, _concrete(template), 401, json={})
    assert response.json()["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"] == "Bearer"


WRITE_ONLY_KEY = "spec-write-only"
THROTTLED_KEY = "spec-throttled"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A keys file: a key of tenant ``t`` with the write scope only, and a key of tenant
    ``r`` whose rate allows one request (then 429s for a long while)."""
    data = tmp_path_factory.mktemp("keyed") / "data"
    keys = {
        "tenants": {"r": {"requests_per_second": 0.001, "burst": 1}},
        "keys": [
            {"name": "w", "tenant": "t", "scopes": ["write"], "sha256": hash_key(WRITE_ONLY_KEY)},
            {
                "name": "throttled",
                "tenant": "r",
                "scopes": ["read", "write", "admin"],
                "sha256": hash_key(THROTTLED_KEY),
            },
        ],
    }
    keys_file = data.parent / "keys.json"
    keys_file.write_text(json.dumps(keys))
    process = ServerProcess(data, "--keys-file", str(keys_file)).start()
    with httpx.Client(base_url=process.url, timeout=30) as client:  # spend r's one request
        headers = {"Authorization": f"Bearer {THROTTLED_KEY}"}
        assert client.get("/v1/contexts", headers=headers).status_code == 200
    yield process
    process.stop()


@pytest.mark.parametrize(("method", "template"), V1_OPERATIONS)
def test_v1_answers_403_outside_the_scope_or_the_namespace(
    keyed_server: ServerProcess, method: str, template: str
) -> None:
    """Reads need ``read``; writes on ``ctx`` are outside tenant ``t``'s namespace;
    membership needs ``admin``: every operation answers 403 to this key."""
    headers = {"Authorization": f"Bearer {WRITE_ONLY_KEY}"}
    with httpx.Client(base_url=keyed_server.url, headers=headers, timeout=30) as client:
        response = send(client, method, _concrete(template), 403, json={})
    assert response.json()["error"] == "forbidden"


@pytest.mark.parametrize(
    ("method", "template"), [(m, t) for m, t in V1_OPERATIONS if "/members" not in t]
)
def test_v1_answers_429_over_the_tenants_rate(
    keyed_server: ServerProcess, method: str, template: str
) -> None:
    headers = {"Authorization": f"Bearer {THROTTLED_KEY}"}
    with httpx.Client(base_url=keyed_server.url, headers=headers, timeout=30) as client:
        response = send(client, method, _concrete(template, "r:ctx"), 429, json={})
    assert response.json()["error"] == "rate_limited"
    assert int(response.headers["Retry-After"]) >= 1


@pytest.fixture(scope="module")
def full_disk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A node that asks for more free disk than any disk has: every write is a 507."""
    data = tmp_path_factory.mktemp("full-disk") / "data"
    process = ServerProcess(data, "--min-free-disk", str(10**18)).start()
    yield process
    process.stop()


DISK_WRITES = [(m, t) for m, t, op in _operations() if "507" in op["responses"]]


def test_every_write_documents_507() -> None:
    writes = {
        (m, t)
        for m, t, _ in _operations()
        if m != "GET" and t.startswith("/v1/") and "preview" not in t
    }
    assert set(DISK_WRITES) == writes


@pytest.mark.parametrize(("method", "template"), DISK_WRITES)
def test_writes_on_a_full_disk_get_507(
    full_disk_server: ServerProcess, method: str, template: str
) -> None:
    with httpx.Client(base_url=full_disk_server.url, timeout=30) as client:
        response = send(client, method, _concrete(template), 507, json={})
        assert response.json()["error"] == "insufficient_storage"
        assert response.headers["Retry-After"] == "5"
        assert client.get("/v1/contexts/ctx").status_code == 404  # reads answer; nothing made


@pytest.mark.parametrize(("method", "template"), OPEN_OPERATIONS)
def test_health_and_metrics_are_open(
    guarded_server: ServerProcess, method: str, template: str
) -> None:
    with httpx.Client(base_url=guarded_server.url, timeout=30) as client:
        call(client, method, template, 200)


@pytest.mark.parametrize(("method", "template"), BODY_OPERATIONS)
def test_large_bodies_get_413(guarded_server: ServerProcess, method: str, template: str) -> None:
    context_id = _unique("spec-large")
    padding = "x" * (SMALL_BODY_LIMIT + 1)
    with guarded_server.client() as client:
        call(client, "PUT", f"/v1/contexts/{context_id}", 200, json={"token_budget": 1000})
        body = call(
            client,
            method,
            _concrete(template, context_id),
            413,
            json={"metadata": {"padding": padding}},
        )
        assert body["error"] == "body_too_large"
        assert str(SMALL_BODY_LIMIT) in body["message"]
        assert call(client, "GET", f"/v1/contexts/{context_id}", 200)["version"] == 1


@pytest.fixture(scope="module")
def unconfirmed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A 1 ns submit timeout: most writes answer 503 (and are applied a moment later)."""
    data = tmp_path_factory.mktemp("unconfirmed") / "data"
    process = ServerProcess(data, "--submit-timeout", "1e-9").start()
    yield process
    process.stop()


def _unconfirmed(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """Repeat a write until it is not confirmed in time; validate that 503.

    A journal write can still beat the 1 ns timer, so one attempt may succeed;
    every attempt here is harmless to repeat.
    """
    for _ in range(100):
        response = client.request(method, path, **kwargs)
        if response.status_code == 503:
            validate_httpx_response(response)
            return response
        assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
    raise AssertionError(f"{method} {path} never answered 503")


@pytest.mark.parametrize(("method", "template"), WRITE_OPERATIONS)
def test_unconfirmed_writes_get_503(
    unconfirmed_server: ServerProcess, method: str, template: str
) -> None:
    context_id = _unique("spec-503")
    requests: dict[tuple[str, str], dict[str, Any]] = {
        ("PUT", "/v1/contexts/{context_id}"): {"json": {"token_budget": 1000}},
        ("DELETE", "/v1/contexts/{context_id}"): {},
        ("PATCH", "/v1/contexts/{context_id}/metadata"): {"json": {"metadata": {"a": 1}}},
        ("POST", "/v1/contexts/{context_id}/messages"): {"json": APPEND},
        ("POST", "/v1/contexts/{context_id}/compact"): {"json": {"replacement": []}},
        ("POST", "/v1/contexts/{context_id}/messages/{seq}/redact"): {},
    }
    assert (method, template) in requests, f"add a 503 request for {method} {template}"
    with unconfirmed_server.client() as client:
        client.put(f"/v1/contexts/{context_id}", json={"token_budget": 1000})
        _wait_until_exists(client, context_id)
        if template.endswith("/redact"):  # a message to redact (repeating it is harmless)
            _unconfirmed(client, "POST", f"/v1/contexts/{context_id}/messages", json=APPEND)
            _wait_until_seq(client, context_id, 1)
        path = _concrete(template, context_id)
        response = _unconfirmed(client, method, path, **requests[method, template])
    assert response.json()["error"] == "unavailable"
    assert response.headers["Retry-After"] == "1"


def _wait_until_seq(client: httpx.Client, context_id: str, seq: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if client.get(f"/v1/contexts/{context_id}").json()["last_seq"] >= seq:
            return
        time.sleep(0.025)
    raise AssertionError(f"message {seq} of {context_id} was never applied")


def _wait_until_exists(client: httpx.Client, context_id: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if client.get(f"/v1/contexts/{context_id}").status_code == 200:
            return
        time.sleep(0.025)
    raise AssertionError(f"context {context_id} was never applied")
