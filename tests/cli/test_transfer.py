"""``fastpaca export`` and ``fastpaca import`` against a real server, as subprocesses: the
export is the server's bytes, an export → import round trip keeps every message, and
``--resume`` continues an interrupted import without duplicates."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli._cli import CLI, clean_env, run
from tests.support.server import ServerProcess

COUNT = 230


def history() -> list[dict[str, Any]]:
    """Messages of every kind: unicode and line breaks, tool calls, metadata (key order
    on purpose), client ids, token counts given by the client."""
    messages: list[dict[str, Any]] = []
    for n in range(COUNT):
        kind = n % 5
        if kind == 0:
            body = f"question {n}: é ✓ 🦙\nline two\u2028and a U+2028, [bold]no markup[/bold]"
            messages.append({"role": "user", "parts": [{"type": "text", "text": body}]})
        elif kind == 1:
            messages.append(
                {
                    "id": f"client-{n}",
                    "role": "assistant",
                    "parts": [
                        {"type": "reasoning", "text": "think"},
                        {"type": "tool_call", "id": f"c{n}", "name": "add", "payload": [1, 2]},
                    ],
                    "metadata": {"z": 1, "a": {"y": None, "b": [1.5, "x"]}},
                }
            )
        elif kind == 2:
            messages.append(
                {
                    "role": "tool",
                    "parts": [{"type": "tool_result", "tool_call_id": f"c{n - 1}", "payload": 3}],
                }
            )
        elif kind == 3:
            messages.append(
                {
                    "role": "assistant",
                    "parts": [{"type": "text", "text": f"answer {n}"}],
                    "token_count": 1234 + n,
                }
            )
        else:
            messages.append({"role": "user", "parts": [{"type": "step-start"}, {"type": "x"}]})
    return messages


@pytest.fixture(scope="module")
def source(server: ServerProcess) -> str:
    """A context holding :func:`history` (appended in batches of varying size)."""
    context_id = "cli-export-source"
    with server.client() as http:
        assert http.put(f"/v1/contexts/{context_id}", json={"token_budget": 100_000}).is_success
        messages = history()
        for start in range(0, COUNT, 70):
            batch = messages[start : start + 70]
            response = http.post(f"/v1/contexts/{context_id}/messages", json={"messages": batch})
            assert response.status_code == 201, response.text
    return context_id


@pytest.fixture(scope="module")
def exported(server: ServerProcess, source: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's own export of the source context, as a file."""
    path = tmp_path_factory.mktemp("exports") / "source.jsonl"
    with server.client() as http:
        path.write_bytes(http.get(f"/v1/contexts/{source}/export").content)
    return path


def lines_of(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode("utf-8").split("\n") if line]


def without_times(messages: list[dict[str, Any]]) -> list[str]:
    """Each message as its JSON text (key order kept), ``created_at`` left out."""
    return [
        json.dumps({k: v for k, v in m.items() if k != "created_at"}, ensure_ascii=False)
        for m in messages
    ]


def server_export(http: httpx.Client, context_id: str) -> bytes:
    response = http.get(f"/v1/contexts/{context_id}/export")
    assert response.status_code == 200
    return response.content


# --- export -----------------------------------------------------------------------------


def test_export_is_the_server_export_byte_for_byte(
    server: ServerProcess, http: httpx.Client, source: str
) -> None:
    result = run("export", source, url=server.url)
    assert result.status == 0, result.stderr
    assert result.stdout_bytes == server_export(http, source)
    assert len(lines_of(result.stdout_bytes)) == COUNT
    assert result.stderr == ""  # no progress bar: stderr is not a terminal


def test_export_progress_goes_to_stderr_only(
    server: ServerProcess, http: httpx.Client, source: str
) -> None:
    result = run("export", source, "--progress", url=server.url, env=clean_env(FORCE_COLOR="1"))
    assert result.status == 0, result.stderr
    assert b"\x1b" not in result.stdout_bytes
    assert result.stdout_bytes == server_export(http, source)
    assert f"{COUNT}/{COUNT}" in result.stderr  # total = last_seq, all done
    assert "export" in result.stderr


def test_export_to_a_file(
    server: ServerProcess, http: httpx.Client, source: str, tmp_path: Path
) -> None:
    target = tmp_path / "out.jsonl"
    result = run("export", source, "-o", str(target), url=server.url)
    assert result.status == 0, result.stderr
    assert result.stdout == ""
    assert target.read_bytes() == server_export(http, source)
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temporary left


def test_export_of_an_unknown_context_writes_no_file(server: ServerProcess, tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    result = run("export", "cli-no-such-context", "-o", str(target), url=server.url)
    assert result.status == 3
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_export_of_an_empty_context(
    server: ServerProcess, http: httpx.Client, context_id: str
) -> None:
    assert http.put(f"/v1/contexts/{context_id}", json={"token_budget": 100}).is_success
    result = run("export", context_id, "--progress", url=server.url)
    assert (result.status, result.stdout_bytes) == (0, b"")


# --- import -----------------------------------------------------------------------------


def test_export_import_round_trip(
    server: ServerProcess, http: httpx.Client, exported: Path, context_id: str
) -> None:
    result = run(
        "import", str(exported), "--context", context_id, "--batch", "100",
        "--budget", "100000", url=server.url,
    )  # fmt: skip
    assert result.status == 0, result.stderr
    assert result.stdout.strip() == f"imported {COUNT} messages into '{context_id}' (seq 1-{COUNT})"
    assert f"creating context '{context_id}' with a budget of 100000 tokens" in result.stderr
    info = http.get(f"/v1/contexts/{context_id}").json()
    assert (info["last_seq"], info["token_budget"]) == (COUNT, 100_000)
    original = lines_of(exported.read_bytes())
    copied = lines_of(server_export(http, context_id))
    # id, role, parts, metadata, token_count and seq, byte for byte (key order included)
    assert without_times(copied) == without_times(original)
    given = [m["token_count"] for m in copied if m["parts"][0].get("text", "").startswith("answer")]
    assert given == [1234 + n for n in range(COUNT) if n % 5 == 3]  # the client's counts
    # and the export of the copy, as the CLI writes it, is the server's bytes
    again = run("export", context_id, url=server.url)
    assert again.stdout_bytes == server_export(http, context_id)


def test_import_names_the_context_after_the_file_and_says_which_budget(
    server: ServerProcess, http: httpx.Client, exported: Path, tmp_path: Path, context_id: str
) -> None:
    named = tmp_path / f"{context_id}.jsonl"
    named.write_bytes(exported.read_bytes())
    result = run("import", str(named), "--policy", "manual", url=server.url)
    assert result.status == 0, result.stderr
    assert "budget of 128000 tokens (the default" in result.stderr
    info = http.get(f"/v1/contexts/{context_id}").json()
    assert (info["last_seq"], info["token_budget"]) == (COUNT, 128_000)
    assert info["policy"]["strategy"] == "manual"


def test_import_from_stdin(
    server: ServerProcess, http: httpx.Client, exported: Path, context_id: str
) -> None:
    result = run(
        "import", "-", "--context", context_id, "--progress", input=exported.read_bytes(),
        url=server.url,
    )  # fmt: skip
    assert result.status == 0, result.stderr
    assert without_times(lines_of(server_export(http, context_id))) == without_times(
        lines_of(exported.read_bytes())
    )
    assert f"import {context_id}" in result.stderr and f"{COUNT}/{COUNT}" in result.stderr
    no_context = run("import", "-", input=exported.read_bytes(), url=server.url)
    assert no_context.status == 2
    assert "needs --context" in no_context.stderr


def test_import_into_a_context_with_messages_needs_resume(
    server: ServerProcess, http: httpx.Client, exported: Path, context_id: str
) -> None:
    assert http.put(f"/v1/contexts/{context_id}", json={"token_budget": 1000}).is_success
    message = {"role": "user", "parts": [{"type": "text", "text": "already here"}]}
    assert http.post(f"/v1/contexts/{context_id}/messages", json={"message": message}).is_success
    result = run("import", str(exported), "--context", context_id, url=server.url)
    assert result.status == 1
    assert result.stderr.startswith("error: context_not_empty: ")
    assert "--resume" in result.stderr
    assert http.get(f"/v1/contexts/{context_id}").json()["last_seq"] == 1
    # --resume checks the context came from this file
    resumed = run("import", str(exported), "--context", context_id, "--resume", url=server.url)
    assert resumed.status == 1
    assert "error: resume_mismatch: " in resumed.stderr
    assert http.get(f"/v1/contexts/{context_id}").json()["last_seq"] == 1


def test_resume_after_a_partial_import_does_not_duplicate(
    server: ServerProcess, http: httpx.Client, exported: Path, tmp_path: Path, context_id: str
) -> None:
    lines = exported.read_bytes().splitlines(keepends=True)
    partial = tmp_path / "partial.jsonl"
    partial.write_bytes(b"".join(lines[:97]))  # an import that stopped after 97 messages
    first = run("import", str(partial), "--context", context_id, "--batch", "40", url=server.url)
    assert first.status == 0, first.stderr
    assert http.get(f"/v1/contexts/{context_id}").json()["last_seq"] == 97

    refused = run("import", str(exported), "--context", context_id, url=server.url)
    assert refused.status == 1
    assert http.get(f"/v1/contexts/{context_id}").json()["last_seq"] == 97

    resumed = run(
        "import", str(exported), "--context", context_id, "--resume", "--batch", "50",
        "--budget", "5", url=server.url,
    )  # fmt: skip
    assert resumed.status == 0, resumed.stderr
    assert resumed.stdout.strip() == (
        f"imported {COUNT - 97} messages into '{context_id}' (seq 98-{COUNT})"
    )
    assert "--budget and --policy are ignored" in resumed.stderr
    copied = lines_of(server_export(http, context_id))
    assert [m["seq"] for m in copied] == list(range(1, COUNT + 1))
    assert without_times(copied) == without_times(lines_of(exported.read_bytes()))

    # once complete, a rerun with --resume is a no-op
    again = run("import", str(exported), "--context", context_id, "--resume", url=server.url)
    assert again.status == 0, again.stderr
    assert again.stdout.startswith("nothing to import")
    assert http.get(f"/v1/contexts/{context_id}").json()["last_seq"] == COUNT


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b'{"seq": 1, "role": "user", "parts": []}\nnot json\n', "line 2: not JSON"),
        (b'{"seq": 2, "role": "user", "parts": []}\n', "line 1: seq 2, expected 1"),
        (b'{"role": "user", "parts": []}\n', "line 1: no integer seq"),
        (b"[1, 2]\n", "line 1: not a JSON object"),
        (b'{"seq": 1, "parts": []}\n', "line 1: a message needs a role"),
    ],
)
def test_a_malformed_file_is_refused_before_anything_is_written(
    server: ServerProcess,
    http: httpx.Client,
    tmp_path: Path,
    context_id: str,
    content: bytes,
    why: str,
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    result = run("import", str(path), "--context", context_id, url=server.url)
    assert result.status == 1
    assert result.stderr.startswith("error: invalid_file: ")
    assert why in result.stderr
    assert http.get(f"/v1/contexts/{context_id}").status_code == 404  # not even created


def test_a_missing_file(server: ServerProcess, tmp_path: Path) -> None:
    result = run("import", str(tmp_path / "nope.jsonl"), url=server.url)
    assert result.status == 1
    assert "cannot read" in result.stderr


def test_the_server_refusing_a_message_is_an_api_error(
    server: ServerProcess, http: httpx.Client, exported: Path, context_id: str
) -> None:
    result = run("import", str(exported), "--context", context_id, "--budget", "10", url=server.url)
    assert result.status == 1
    assert "error: message_exceeds_budget: " in result.stderr


def test_a_reader_that_goes_away_ends_the_export_quietly(
    server: ServerProcess, http: httpx.Client, context_id: str
) -> None:
    assert http.put(
        f"/v1/contexts/{context_id}",
        json={"token_budget": 1000, "policy": {"strategy": "manual"}},
    ).is_success
    big = {"role": "user", "parts": [{"type": "text", "text": "x" * 500}]}
    response = http.post(f"/v1/contexts/{context_id}/messages", json={"messages": [big] * 1000})
    assert response.status_code == 201  # about 600 KB of export, more than a pipe holds
    process = subprocess.Popen(
        [*CLI, "--url", server.url, "export", context_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.read(100).startswith(b'{"seq":1,')
    process.stdout.close()  # as `| head -c 100` does
    try:
        status = process.wait(30)
    finally:
        process.kill()
    stderr = process.stderr.read().decode()
    process.stderr.close()
    assert status == 1
    assert stderr == ""  # no traceback, no "Exception ignored"
