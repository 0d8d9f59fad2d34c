"""docs/api.md against spec/openapi.yaml: the routes table lists exactly the spec's
operations (with their success status), and the errors table every error code the
spec documents, and no other."""

from __future__ import annotations

import re
from typing import Any

from tests.support.server import REPO
from tests.support.spec import load_spec

API_MD = REPO / "docs" / "api.md"


def _section(title: str) -> str:
    text = API_MD.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _table_rows(section: str) -> list[list[str]]:
    rows = []
    for line in section.splitlines():
        if line.startswith("|") and not line.startswith("| ---"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[1:]  # without the header


def _spec_codes(node: Any) -> set[str]:
    """Every ``error`` code enumerated anywhere in the spec's error schemas."""
    found: set[str] = set()
    if isinstance(node, dict):
        error = node.get("properties", {}).get("error") if "properties" in node else None
        if isinstance(error, dict):
            found.update(error.get("enum", []))
            if "const" in error:
                found.add(error["const"])
        for value in node.values():
            found |= _spec_codes(value)
    elif isinstance(node, list):
        for value in node:
            found |= _spec_codes(value)
    return found


def test_the_routes_table_lists_every_operation_of_the_spec() -> None:
    documented = set()
    for method, path, success, _ in _table_rows(_section("Routes")):
        method = method.replace(" (websocket)", "")
        path = path.strip("`").replace("{id}", "{context_id}")
        documented.add((method, path, success.split(" ")[0]))
    spec = load_spec()
    operations = set()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in ("get", "put", "post", "patch", "delete"):
                continue
            success = next(code for code in operation["responses"] if code.startswith(("1", "2")))
            operations.add((method.upper(), path, success))
    assert documented == operations, documented ^ operations


def test_the_errors_table_lists_every_error_code_of_the_spec() -> None:
    rows = _table_rows(_section("Errors"))
    documented = {re.sub(r"`", "", row[1]) for row in rows}
    spec_codes = _spec_codes(load_spec())
    # Codes of responses the spec describes only by status: routing and framework errors.
    assert spec_codes <= documented, spec_codes - documented
    assert documented - spec_codes <= {"method_not_allowed", "internal_error"}, (
        documented - spec_codes
    )
