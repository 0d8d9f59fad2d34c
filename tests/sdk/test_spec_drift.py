"""The SDK's models, enums, defaults, error codes and routes against spec/openapi.yaml:
a change to either side that the other does not follow fails here."""

from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Any, get_args, get_type_hints

import fastpaca
import pytest
from fastpaca import (
    ERROR_CODES,
    STRATEGIES,
    TOKENIZERS,
    AppendedMessage,
    AppendResult,
    ClusterInfo,
    ClusterMember,
    CompactionAction,
    CompactionPage,
    CompactionRecord,
    CompactResult,
    Context,
    ContextInfo,
    ContextPage,
    DroppedRun,
    LastCompaction,
    Message,
    MessagePage,
    Pin,
    Preview,
    PreviewConfig,
    PurgeRecord,
    RefusedMessage,
    Segment,
    StoredMessage,
    Strategy,
    TokenBreakdown,
    Tokenizer,
    Window,
)
from fastpaca._base_client import Call
from fastpaca._context import COMPACTIONS_LIMIT, HISTORY_PAGE_SIZE, _ContextRequests
from fastpaca._exceptions import APIStatusError, status_error_class

from tests.support.spec import load_spec

CLIENT_ONLY_FIELDS = {"raw", "replayed"}  # not in the wire format
CLIENT_ONLY_CODES = {"internal_error"}  # a 500 body; the spec documents no 500s


def schema(name: str) -> dict[str, Any]:
    return load_spec()["components"]["schemas"][name]


def schema_properties(name: str) -> tuple[set[str], set[str]]:
    """(every property, the required ones) of a schema, following ``allOf``."""
    node = schema(name)
    properties = set(node.get("properties", {}))
    required = set(node.get("required", []))
    for part in node.get("allOf", []):
        if "$ref" in part:
            more, more_required = schema_properties(part["$ref"].rsplit("/", 1)[-1])
            properties |= more
            required |= more_required
    return properties, required


def model_fields(model: type) -> tuple[set[str], set[str]]:
    fields = [f for f in dataclasses.fields(model) if f.name not in CLIENT_ONLY_FIELDS]
    names = {f.name for f in fields}
    required = {
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    return names, required


@pytest.mark.parametrize(
    ("model", "schema_name"),
    [
        (ContextInfo, "Context"),
        (AppendResult, "AppendResult"),
        (AppendedMessage, "AppendedMessage"),
        (CompactResult, "CompactResult"),
        (Window, "Window"),
        (ClusterInfo, "Cluster"),
        (ClusterMember, "ClusterMember"),
        (CompactionRecord, "CompactionRecord"),
        (CompactionAction, "CompactionAction"),
        (Preview, "Preview"),
    ],
    ids=lambda value: getattr(value, "__name__", value),
)
def test_result_models_match_their_schemas(model: type, schema_name: str) -> None:
    properties, required = schema_properties(schema_name)
    names, model_required = model_fields(model)
    assert names == properties
    assert model_required == required


def test_segment_covers_every_segment_schema() -> None:
    names_of = [ref["$ref"].rsplit("/", 1)[-1] for ref in schema("Segment")["oneOf"]]
    shapes = [schema_properties(name) for name in names_of]
    names, required = model_fields(Segment)
    assert names == set().union(*(properties for properties, _ in shapes))
    assert required == set.intersection(*(required for _, required in shapes))
    segment_types = {schema(name)["properties"]["type"]["const"] for name in names_of}
    assert set(get_args(get_type_hints(Segment)["type"])) == segment_types


def _inline_properties(node: dict[str, Any]) -> tuple[set[str], set[str]]:
    return set(node["properties"]), set(node.get("required", []))


def _items_of(schema_name: str, property_name: str) -> dict[str, Any]:
    items: dict[str, Any] = schema(schema_name)["properties"][property_name]["items"]
    return items


def test_nested_records_match_their_schemas() -> None:
    preview = schema("Preview")["properties"]
    context = schema("Context")["properties"]["last_compaction"]["oneOf"]
    purge = schema("Context")["properties"]["purge"]["oneOf"]
    nested = [
        (PurgeRecord, _inline_properties(next(o for o in purge if "properties" in o))),
        (PreviewConfig, _inline_properties(preview["config"])),
        (TokenBreakdown, _inline_properties(_items_of("Preview", "breakdown"))),
        (DroppedRun, _inline_properties(_items_of("Preview", "dropped"))),
        (RefusedMessage, _inline_properties(_items_of("Preview", "refused"))),
        (LastCompaction, _inline_properties(next(o for o in context if "properties" in o))),
    ]
    for model, (properties, required) in nested:
        assert model_fields(model) == (properties, required), model.__name__


def test_compaction_enums_match_the_spec() -> None:
    record = get_type_hints(CompactionRecord)
    for name in ("cause", "outcome"):
        assert set(get_args(record[name])) == set(
            schema("CompactionRecord")["properties"][name]["enum"]
        ), name
    assert set(get_args(get_type_hints(CompactionAction)["reason"])) == set(
        schema("CompactionAction")["properties"]["reason"]["enum"]
    )


def test_compaction_page_matches_its_schema() -> None:
    properties, required = schema_properties("CompactionPage")
    page = CompactionPage([], compactions=0, has_more=False)
    assert {"records"} | set(vars(page)) == properties == required


def test_context_page_matches_its_schema() -> None:
    properties, required = schema_properties("ContextPage")
    names, model_required = model_fields(ContextPage)
    assert names == properties and model_required == required


def test_list_contexts_parameters_are_the_specs() -> None:
    call = fastpaca._context.list_contexts_call(
        limit=1, cursor="c", order="recent", prefix="p", q="q", metadata={"k": 1}, status="all"
    )
    operation = load_spec()["paths"][call.path]["get"]
    documented = {p["name"] for p in operation["parameters"]}
    assert set(call.params) - {"metadata.k"} == documented
    assert call.params["metadata.k"] == "1"  # compact JSON, as the server compares it
    by_name = {p["name"]: p["schema"] for p in operation["parameters"]}
    assert set(get_args(fastpaca._context.ListOrder)) == set(by_name["order"]["enum"])
    assert set(get_args(fastpaca._context.ListStatus)) == set(by_name["status"]["enum"])
    signature = inspect.signature(fastpaca.Fastpaca.list_contexts).parameters
    assert set(signature) - {"self", "metadata"} == documented


def test_page_matches_its_schema() -> None:
    properties, required = schema_properties("Page")
    page = MessagePage([], last_seq=0, has_more=False)
    assert {"messages"} | set(vars(page)) == properties == required


def test_message_typeddicts_match_their_schemas() -> None:
    stored, stored_required = schema_properties("StoredMessage")
    assert set(StoredMessage.__annotations__) == stored
    assert StoredMessage.__required_keys__ == stored_required
    message, message_required = schema_properties("Message")
    assert set(Message.__annotations__) == message
    assert Message.__required_keys__ == message_required
    replacement, _ = schema_properties("ReplacementMessage")
    assert replacement <= stored | message  # compact takes messages as read from the window


def test_strategies_and_tokenizers() -> None:
    for schema_name in ("PolicyInput", "Policy"):
        options = schema(schema_name)["oneOf"]
        strategies = {
            option["properties"]["strategy"]["const"]
            for option in options
            if "const" in option["properties"]["strategy"]
        }
        assert set(STRATEGIES) == set(get_args(Strategy)) == strategies, schema_name
        # Any other name is a custom policy: the spec's catch-all excludes exactly these.
        (custom,) = [o for o in options if "const" not in o["properties"]["strategy"]]
        assert set(custom["properties"]["strategy"]["not"]["enum"]) == strategies
        pins = {
            tuple(option["properties"]["config"]["properties"]["pin"]["enum"])
            for option in options
            if "pin" in option["properties"]["config"].get("properties", {})
        }
        assert pins == {get_args(Pin)}, schema_name
    assert set(TOKENIZERS) == set(get_args(Tokenizer)) == set(schema("Tokenizer")["enum"])
    assert set(get_args(get_type_hints(ContextInfo)["status"])) == set(
        schema("Context")["properties"]["status"]["enum"]
    )


def _spec_error_codes() -> set[str]:
    codes: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            error = node.get("properties", {}).get("error") if "properties" in node else None
            if isinstance(error, dict):
                codes.update(error.get("enum", []))
                if "const" in error:
                    codes.add(error["const"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    spec = load_spec()
    walk(spec)
    codes.update(re.findall(r"^\| \d{3} \| `([a-z_]+)` \|", spec["info"]["description"], re.M))
    return codes


def test_error_codes_match_the_spec() -> None:
    spec_codes = _spec_error_codes()
    assert spec_codes, "no codes found: the spec's error shape changed"
    assert spec_codes == ERROR_CODES - CLIENT_ONLY_CODES


def test_every_documented_error_status_has_a_class() -> None:
    statuses = {
        int(status)
        for path in load_spec()["paths"].values()
        for operation in path.values()
        if isinstance(operation, dict)
        for status in operation.get("responses", {})
        if status.isdigit() and int(status) >= 400
    }
    assert {400, 401, 404, 409, 503} <= statuses
    for status in statuses:
        error_class = status_error_class(status)
        assert issubclass(error_class, APIStatusError)
        if status in (400, 401, 404, 409, 429, 503):
            assert error_class is not APIStatusError, status


def _spec_operation(method: str, path: str) -> dict[str, Any]:
    return load_spec()["paths"][path][method.lower()]


def _query_defaults(method: str, path: str) -> dict[str, Any]:
    defaults = {}
    for parameter in _spec_operation(method, path).get("parameters", []):
        if "$ref" in parameter:
            parameter = load_spec()["components"]["parameters"][
                parameter["$ref"].rsplit("/", 1)[-1]
            ]
        defaults[parameter["name"]] = parameter["schema"].get("default")
    return defaults


def test_paging_defaults_match_the_spec() -> None:
    tail = inspect.signature(Context.tail).parameters
    tail_defaults = _query_defaults("GET", "/v1/contexts/{context_id}/tail")
    assert {name: tail[name].default for name in ("offset", "limit")} == tail_defaults
    messages = inspect.signature(Context.messages).parameters
    messages_defaults = _query_defaults("GET", "/v1/contexts/{context_id}/messages")
    assert {name: messages[name].default for name in messages_defaults} == messages_defaults
    limit = load_spec()["components"]["parameters"]["Limit"]["schema"]
    assert limit["maximum"] == HISTORY_PAGE_SIZE
    window = _query_defaults("GET", "/v1/contexts/{context_id}/context")
    assert set(window) == set(inspect.signature(Context.context).parameters) - {"self"}
    compactions = inspect.signature(Context.compactions).parameters
    compactions_defaults = _query_defaults("GET", "/v1/contexts/{context_id}/compactions")
    assert {name: compactions[name].default for name in ("after", "limit")} == (
        compactions_defaults
    )
    assert compactions_defaults["limit"] == COMPACTIONS_LIMIT


def test_request_fields_exist_in_the_spec() -> None:
    requests = _ContextRequests()
    requests.id = "chat"
    calls: dict[str, Call[Any]] = {
        "AppendRequest": requests._append_call(
            [{}], single=False, if_version=1, idempotency_key=None
        ),
        "CompactRequest": requests._compact_call([], 1, None),
        "MetadataPatch": requests._patch_metadata_call({}, 1),
        "PreviewRequest": requests._preview_call(1, 0.5, "manual", "o200k_base"),
    }
    for schema_name, call in calls.items():
        properties, _ = schema_properties(schema_name)
        assert call.json is not None and set(call.json) <= properties, schema_name
    put = fastpaca._context.put_context_call(
        "chat", budget=1, trigger=0.5, policy="manual", metadata={}, tokenizer="o200k_base"
    )
    assert put.json is not None and set(put.json) == schema_properties("ContextPut")[0]
    preview = calls["PreviewRequest"].json
    assert preview is not None and set(preview) == schema_properties("PreviewRequest")[0]
    assert set(preview) == set(inspect.signature(Context.preview).parameters) - {"self"}


def test_routes_exist_in_the_spec() -> None:
    requests = _ContextRequests()
    requests.id = "chat"
    calls: list[Call[Any]] = [
        requests._get_call(),
        requests._append_call([{}], single=True, if_version=None, idempotency_key=None),
        requests._window_call(None, None),
        requests._compact_call([], None, None),
        requests._tail_call(0, 1),
        requests._messages_call(0, None, 1),
        requests._patch_metadata_call({}, None),
        requests._compactions_call(0, 1),
        requests._preview_call(None, None, None, None),
        requests._export_call(),
        requests._redact_call(3),
        fastpaca._context.delete_context_call("chat"),
        fastpaca._context.delete_context_call("chat", purge=True),
        fastpaca._context.cluster_call(),
        fastpaca._context.list_contexts_call(
            limit=None, cursor=None, order=None, prefix=None, q=None, metadata=None, status=None
        ),
        fastpaca._context.put_context_call(
            "chat", budget=1, trigger=None, policy=None, metadata=None, tokenizer=None
        ),
    ]
    paths = load_spec()["paths"]
    for call in calls:
        template = call.path.replace("/contexts/chat", "/contexts/{context_id}")
        template = template.replace("/messages/3/", "/messages/{seq}/")
        assert call.method.lower() in paths[template], f"{call.method} {template}"
    events = requests._events_call(3, include_messages=False)
    # …and every operation on a context has a call (the websocket feed aside: the
    # SDK follows the same feed over SSE).
    called = {
        (call.method.lower(), call.path.replace("/chat", "/{context_id}").replace("/3/", "/{seq}/"))
        for call in [*calls, events]
    }
    context_operations = {
        (method, path)
        for path, item in paths.items()
        if path.startswith("/v1/contexts")
        for method, operation in item.items()
        if isinstance(operation, dict) and "operationId" in operation
    }
    assert context_operations - called == {("get", "/v1/contexts/{context_id}/stream")}
    operation = paths[events.path.replace("/chat", "/{context_id}")][events.method.lower()]
    documented = {
        _resolve_parameter(parameter)["name"]
        for parameter in operation["parameters"]
        if _resolve_parameter(parameter)["in"] == "query"
    }
    assert set(events.params) == documented == {"cursor", "include_messages"}
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    purge = fastpaca._context.delete_context_call("chat", purge=True)
    operation = paths["/v1/contexts/{context_id}"]["delete"]
    assert set(purge.params) == {p["name"] for p in operation["parameters"]} == {"purge"}
    assert not fastpaca._context.delete_context_call("chat").params
    export = requests._export_call()
    operation = paths[export.path.replace("/chat", "/{context_id}")][export.method.lower()]
    assert not export.params and "parameters" not in operation  # the route takes none
    assert export.headers["Accept"] in operation["responses"]["200"]["content"]


def _resolve_parameter(parameter: dict[str, Any]) -> dict[str, Any]:
    if "$ref" not in parameter:
        return parameter
    resolved: dict[str, Any] = load_spec()["components"]["parameters"][
        parameter["$ref"].rsplit("/", 1)[1]
    ]
    return resolved


def test_event_types_are_the_specs() -> None:
    from fastpaca._events import CLOSING_TYPES, NON_CLOSING_TYPES

    schemas = load_spec()["components"]["schemas"]
    types = {
        schemas[ref["$ref"].rsplit("/", 1)[1]]["properties"]["type"]["const"]
        for ref in schemas["Event"]["oneOf"]
    }
    assert types == CLOSING_TYPES | NON_CLOSING_TYPES
    assert not CLOSING_TYPES & NON_CLOSING_TYPES
    assert set(schemas["ServerSentEvent"]["properties"]["event"]["enum"]) == types | {"error"}
