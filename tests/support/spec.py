"""Check real responses against ``spec/openapi.yaml``.

The spec is loaded once. :func:`validate_response` finds the operation for a
concrete path (``/v1/contexts/abc/messages`` matches
``/v1/contexts/{context_id}/messages``), the response documented for the
status, and validates the JSON body with Draft 2020-12, resolving
``#/components/...`` references against the spec itself.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parents[2] / "spec" / "openapi.yaml"
SPEC_URI = "urn:fastpaca:openapi"

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


@functools.cache
def load_spec() -> dict[str, Any]:
    """The parsed spec (cached: every caller shares one copy; do not mutate)."""
    spec: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
    return spec


@functools.cache
def _registry() -> Registry:
    resource = Resource.from_contents(load_spec(), default_specification=DRAFT202012)
    return Registry().with_resource(SPEC_URI, resource)


@functools.cache
def _templates() -> list[tuple[re.Pattern[str], str]]:
    """Path templates as regexes, literal paths first so they win over templates."""
    compiled = []
    for template in load_spec()["paths"]:
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        compiled.append((re.compile(pattern), template))
    compiled.sort(key=lambda item: item[1].count("{"))
    return compiled


def spec_paths() -> set[tuple[str, str]]:
    """Every ``(METHOD, path template)`` the spec documents."""
    return {
        (method.upper(), template)
        for template, item in load_spec()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def path_template(path: str) -> str:
    """The spec's template for a concrete path or full URL (query string ignored)."""
    path = urlsplit(path).path
    for pattern, template in _templates():
        if pattern.fullmatch(path):
            return template
    raise AssertionError(f"no path in {SPEC_PATH.name} matches {path!r}")


def response_schema(method: str, path: str, status: int) -> tuple[dict[str, Any], str]:
    """``(schema, media type)`` of the documented response; fails if undocumented."""
    template = path_template(path)
    item = load_spec()["paths"][template]
    operation = item.get(method.lower())
    if operation is None:
        documented = sorted(m.upper() for m in item if m in HTTP_METHODS)
        raise AssertionError(
            f"{method.upper()} {template} is not in the spec (documented: {documented})"
        )
    responses = operation["responses"]
    response = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX")
    if response is None:
        raise AssertionError(
            f"{method.upper()} {template} returned {status}, which the spec does not "
            f"document (documented: {sorted(responses)})"
        )
    response = _resolve(response)
    content = response.get("content") or {}
    if not content:
        return {}, ""
    media_type = "application/json" if "application/json" in content else next(iter(content))
    return content[media_type].get("schema", {}), media_type


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    """Follow a ``$ref`` to ``#/components/...`` (response objects may be refs)."""
    while "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise AssertionError(f"only local refs are supported, got {ref!r}")
        target: Any = load_spec()
        for key in ref[2:].split("/"):
            target = target[key.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def validate_response(method: str, path: str, status: int, body: object) -> None:
    """Fail with an :class:`AssertionError` unless ``body`` is what the spec documents.

    ``body`` is the decoded JSON value (or ``str``/``bytes`` for non-JSON media
    types, which are only checked to be text).
    """
    template = path_template(path)
    _, media_type = response_schema(method, template, status)
    where = f"{method.upper()} {path} → {status}"
    if media_type != "application/json":
        if media_type and not isinstance(body, str | bytes):
            raise AssertionError(f"{where}: expected a {media_type} body, got {type(body)}")
        return
    validator = _validator(method.lower(), template, status)
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        details = "\n".join(
            f"  at {'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
            for error in errors[:10]
        )
        shown = json.dumps(body, indent=2, default=str)
        if len(shown) > 2000:
            shown = shown[:2000] + "\n  …"
        raise AssertionError(
            f"{where}: the body does not match the spec:\n{details}\nbody:\n{shown}"
        )


def validate_httpx_response(response: httpx.Response) -> None:
    """:func:`validate_response` for an ``httpx`` response, also checking its media type."""
    method, path, status = response.request.method, response.request.url.path, response.status_code
    _, media_type = response_schema(method, path, status)
    content_type = response.headers.get("content-type", "").split(";")[0].strip()
    if content_type != media_type:
        raise AssertionError(
            f"{method} {path} → {status}: content type {content_type!r}, spec says {media_type!r}"
        )
    body = response.json() if media_type == "application/json" else response.text
    validate_response(method, path, status, body)


@functools.cache
def _validator(method: str, template: str, status: int) -> Draft202012Validator:
    schema, _ = response_schema(method, template, status)
    return _schema_validator(schema)


def _schema_validator(schema: dict[str, Any]) -> Draft202012Validator:
    # The schema's "#/components/..." refs are rebased onto the registered spec.
    return Draft202012Validator(
        {"$id": f"{SPEC_URI}/response", **_rebase(schema)},
        registry=_registry(),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


@functools.cache
def _component_validator(name: str) -> Draft202012Validator:
    return _schema_validator({"$ref": f"#/components/schemas/{name}"})


def validate_event(event: object, *, websocket: bool = False) -> None:
    """Fail unless ``event`` (decoded JSON of a live feed) matches the spec.

    An SSE message's data is an ``Event`` or a ``StreamError``; a websocket
    message is a ``StreamMessage`` (an event, an error or a ping).
    """
    names = ["StreamMessage"] if websocket else ["Event", "StreamError"]
    failures = []
    for name in names:
        errors = list(_component_validator(name).iter_errors(event))
        if not errors:
            return
        failures.append(f"  as {name}: " + "; ".join(error.message for error in errors[:5]))
    shown = json.dumps(event, default=str)[:1000]
    raise AssertionError("an event does not match the spec:\n" + "\n".join(failures) + f"\n{shown}")


def _rebase(node: Any) -> Any:
    """Point local ``#/...`` refs at the spec document registered under SPEC_URI."""
    if isinstance(node, dict):
        return {
            key: (
                f"{SPEC_URI}{value}"
                if key == "$ref" and isinstance(value, str) and value.startswith("#")
                else _rebase(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rebase(item) for item in node]
    return node
