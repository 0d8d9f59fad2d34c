"""``fastpaca`` against a real server, run as a subprocess: contexts list/show, tail (and
``-f``), window, cluster status, the global options and the exit statuses."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastpaca import __version__

from tests.cli._cli import Running, clean_env, colour_codes, run
from tests.support.server import ServerProcess, free_port


def text(value: str, role: str = "user") -> dict[str, Any]:
    return {"role": role, "parts": [{"type": "text", "text": value}]}


def put(http: httpx.Client, context_id: str, **body: Any) -> dict[str, Any]:
    response = http.put(f"/v1/contexts/{context_id}", json={"token_budget": 10_000, **body})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def append(http: httpx.Client, context_id: str, *messages: dict[str, Any]) -> dict[str, Any]:
    response = http.post(f"/v1/contexts/{context_id}/messages", json={"messages": list(messages)})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def table_rows(stdout: str) -> list[list[str]]:
    """The rows of a piped table: lines split at runs of 2+ spaces (after the header rule)."""
    lines = stdout.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("─"))
    return [re.split(r"\s{2,}", line.strip()) for line in lines[rule + 1 :] if line.strip()]


# --- global options ---------------------------------------------------------------------


def test_version_help_and_the_console_script() -> None:
    result = run("--version")
    assert (result.status, result.stdout.strip()) == (0, f"fastpaca {__version__}")
    script = Path(sys.executable).parent / "fastpaca"
    assert script.exists(), "pip install -e sdk-python makes the console script"
    done = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, env=clean_env(), timeout=30
    )
    assert done.returncode == 0
    for name in ("contexts", "tail", "export", "import", "cluster", "window"):
        assert name in done.stdout
    for command in (
        ["contexts", "list"],
        ["context", "show"],
        ["tail"],
        ["export"],
        ["import"],
        ["cluster", "status"],
        ["window"],
    ):
        helped = run(*command, "--help")
        assert helped.status == 0, command
        assert "--url" in helped.stdout and "usage: fastpaca" in helped.stdout


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["contexts"],
        ["nonsense"],
        ["window", "x", "--format", "xml"],
        ["tail", "x", "-n", "-1"],
        ["import", "f.jsonl", "--batch", "0"],
        ["import", "f.jsonl", "--batch", "1001"],
        ["contexts", "list", "--metadata", "novalue"],
        ["--url", "ftp://example.org", "cluster", "status"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = run(*args, url="http://127.0.0.1:9")
    assert result.status == 2
    assert "usage: fastpaca" in result.stderr
    assert result.stdout == ""


# --- contexts list ----------------------------------------------------------------------


@pytest.fixture
def listed(http: httpx.Client, context_id: str) -> list[str]:
    """Three contexts under one prefix: b (team red), a (team blue, 2 messages), c
    (deleted), written in the order b, a, c, then b again (so b is the most recent)."""
    ids = [f"{context_id}-b", f"{context_id}-a", f"{context_id}-c"]
    put(http, ids[0], metadata={"team": "red", "topic": "Llamas"})
    put(http, ids[1], metadata={"team": "blue"}, policy={"strategy": "manual"})
    append(http, ids[1], text("one"), text("two", "assistant"))
    put(http, ids[2])
    assert http.delete(f"/v1/contexts/{ids[2]}").status_code == 200
    append(http, ids[0], text("latest"))
    return ids


def test_list_is_a_table_of_the_contexts(server: ServerProcess, listed: list[str]) -> None:
    b, a, _ = listed
    result = run("contexts", "list", "--prefix", a.removesuffix("-a"), url=server.url)
    assert result.status == 0, result.stderr
    header = result.stdout.splitlines()[0].split()
    assert header == ["id", "status", "messages", "window", "tokens", "policy", "updated"]
    rows = table_rows(result.stdout)
    assert [row[0] for row in rows] == [b, a]  # recent first; the tombstoned one is left out
    row_a = rows[1]
    assert row_a[1:4] == ["active", "2", "2"]
    used, budget = row_a[4].split("/")
    assert int(used) > 0 and budget == "10000"
    assert row_a[5] == "manual"
    assert row_a[6].count(":") == 2  # 2026-11-21 21:52:42
    assert "\x1b" not in result.stdout  # a pipe gets no escapes
    assert all(line == line.rstrip() for line in result.stdout.splitlines())


def test_list_json_lines_are_the_server_objects(
    server: ServerProcess, http: httpx.Client, listed: list[str]
) -> None:
    prefix = listed[0].removesuffix("-b")
    result = run(
        "contexts", "list", "--prefix", prefix, "--json", "--status", "all", url=server.url
    )
    assert result.status == 0, result.stderr
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["id"] for o in objects] == [listed[0], listed[2], listed[1]]  # recent first
    for obj in objects:
        assert obj == http.get(f"/v1/contexts/{obj['id']}").json()
    assert "\x1b" not in result.stdout


def test_list_filters_and_order(server: ServerProcess, listed: list[str]) -> None:
    b, a, c = listed
    prefix = b.removesuffix("-b")

    def ids(*args: str) -> list[str]:
        result = run("contexts", "list", "--prefix", prefix, "--json", *args, url=server.url)
        assert result.status == 0, result.stderr
        return [json.loads(line)["id"] for line in result.stdout.splitlines()]

    assert ids("--order", "id") == [a, b]
    assert ids("--order", "recent") == [b, a]
    assert ids("--status", "tombstoned") == [c]
    assert ids("--status", "all", "--order", "id") == [a, b, c]
    assert ids("--metadata", "team=blue") == [a]
    assert ids("--metadata", "team=red", "--metadata", "topic=Llamas") == [b]
    assert ids("--metadata", "team=red", "--metadata", "topic=Alpacas") == []
    assert ids("--search", "llamas") == [b]  # case-insensitive, in metadata values
    assert ids("--limit", "1") == [b]


def test_list_pages_through_the_cursor(
    server: ServerProcess, http: httpx.Client, context_id: str
) -> None:
    made = sorted(f"{context_id}-{n:03d}" for n in range(130))
    for name in made:
        put(http, name)
    result = run(
        "contexts",
        "list",
        "--prefix",
        context_id,
        "--order",
        "id",
        "--json",
        "--limit",
        "0",
        url=server.url,
    )
    assert result.status == 0, result.stderr
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == made
    capped = run(
        "contexts",
        "list",
        "--prefix",
        context_id,
        "--order",
        "id",
        "--limit",
        "120",
        "--json",
        url=server.url,
    )
    assert [json.loads(line)["id"] for line in capped.stdout.splitlines()] == made[:120]
    table = run("contexts", "list", "--prefix", context_id, url=server.url)
    assert len(table_rows(table.stdout)) == 50  # the default --limit
    assert "--limit" in table.stderr  # says there are more


def test_list_of_nothing_says_so(server: ServerProcess, context_id: str) -> None:
    result = run("contexts", "list", "--prefix", f"{context_id}-none", url=server.url)
    assert (result.status, result.stdout) == (0, "")
    assert "no contexts" in result.stderr
    as_json = run("contexts", "list", "--prefix", f"{context_id}-none", "--json", url=server.url)
    assert (as_json.status, as_json.stdout) == (0, "")


# --- context show -----------------------------------------------------------------------


def test_show_has_the_config_the_counts_and_the_window(
    server: ServerProcess, http: httpx.Client, context_id: str
) -> None:
    put(http, context_id, policy={"strategy": "last_n", "config": {"limit": 2}}, trigger_ratio=0.5)
    long = "a long question " * 10
    append(http, context_id, text("system prompt", "system"))
    append(http, context_id, text("first"), text(long), text("the answer", "assistant"))
    info = http.get(f"/v1/contexts/{context_id}").json()
    result = run("context", "show", context_id, url=server.url)
    assert result.status == 0, result.stderr
    fields = dict(
        re.split(r"\s{2,}", line, maxsplit=1)
        for line in result.stdout.split("\n\n")[0].splitlines()
    )
    assert fields["id"] == context_id
    assert fields["budget"] == "10000 tokens"
    assert fields["trigger"] == "0.5"
    assert fields["policy"] == 'last_n {"limit":2}'
    assert fields["tokenizer"] == "o200k_base"
    assert fields["messages"] == "4 (last_seq)"
    assert fields["window"] == f"{info['window_messages']} messages"
    assert fields["used tokens"] == f"{info['used_tokens']}/10000"
    assert fields["version"] == str(info["version"])
    assert fields["status"] == "active"
    assert fields["compactions"] == str(info["compactions"]) and info["compactions"] > 0
    assert fields["last compaction"].endswith("(last_n)")
    window = http.get(f"/v1/contexts/{context_id}/context").json()["messages"]
    rows = table_rows(result.stdout)
    assert [int(row[0]) for row in rows] == [m["seq"] for m in window] == [1, 3, 4]
    assert [row[1] for row in rows] == ["system", "user", "assistant"]
    assert [int(row[2]) for row in rows] == [m["token_count"] for m in window]
    assert rows[1][3] == long[:59] + "…"
    assert rows[2][3] == "the answer"


def test_show_json_is_the_context_object(
    server: ServerProcess, http: httpx.Client, context_id: str
) -> None:
    put(http, context_id, metadata={"k": "v"})
    result = run("context", "show", context_id, "--json", url=server.url)
    assert result.status == 0
    assert json.loads(result.stdout) == http.get(f"/v1/contexts/{context_id}").json()


# --- tail -------------------------------------------------------------------------------


def test_tail_prints_the_newest_oldest_first(
    server: ServerProcess, http: httpx.Client, context_id: str
) -> None:
    put(http, context_id)
    append(http, context_id, *(text(f"message {n}") for n in range(1, 26)))
    append(
        http,
        context_id,
        {
            "role": "assistant",
            "parts": [
                {"type": "text", "text": "two\nlines"},
                {"type": "tool_call", "id": "c1", "name": "lookup"},
            ],
        },
        {"role": "tool", "parts": [{"type": "tool_result", "tool_call_id": "c1", "output": 1}]},
    )
    default = run("tail", context_id, url=server.url)
    assert default.status == 0, default.stderr
    lines = default.stdout.splitlines()
    assert len(lines) == 20
    assert [int(line.split()[0]) for line in lines] == list(range(8, 28))
    assert lines[0].split(None, 2) == ["8", "user", "message 8"]
    assert lines[-2].split(None, 2) == ["26", "assistant", "two\\nlines [tool_call lookup]"]
    assert lines[-1].split(None, 2) == ["27", "tool", "[tool_result c1]"]
    two = run("tail", context_id, "-n", "2", url=server.url)
    assert [line.split()[0] for line in two.stdout.splitlines()] == ["26", "27"]
    everything = run("tail", context_id, "-n", "1000", url=server.url)
    assert len(everything.stdout.splitlines()) == 27
    assert run("tail", context_id, "-n", "0", url=server.url).stdout == ""


def test_tail_pages_past_the_server_page(
    server: ServerProcess, http: httpx.Client, context_id: str
) -> None:
    put(http, context_id, policy={"strategy": "manual"})
    append(http, context_id, *(text(f"m{n}") for n in range(1, 1001)))
    append(http, context_id, *(text(f"m{n}") for n in range(1001, 1206)))
    result = run("tail", context_id, "-n", "1100", url=server.url)
    assert result.status == 0, result.stderr
    seqs = [int(line.split()[0]) for line in result.stdout.splitlines()]
    assert seqs == list(range(106, 1206))


def test_tail_follow_prints_new_messages_until_ctrl_c(
    server: ServerProcess, http: httpx.Client, context_id: str
) -> None:
    put(http, context_id)
    append(http, context_id, text("before 1"), text("before 2"))
    follower = Running("tail", context_id, "-n", "1", "-f", url=server.url)
    try:
        assert follower.wait_for("before 2").split()[0] == "2"
        append(http, context_id, text("live one", "assistant"))
        assert follower.wait_for("live one").split(None, 2) == ["3", "assistant", "live one"]
        append(http, context_id, text("batch a"), text("batch b"))
        assert follower.wait_for("batch a").split()[0] == "4"
        assert follower.wait_for("batch b").split()[0] == "5"
    finally:
        status, stderr = follower.stop(signal.SIGINT)
    assert status == 0, stderr
    assert "Traceback" not in stderr
    assert all("before 1" not in line for line in follower.drain())


def test_tail_follow_reconnects_after_a_server_restart(
    fresh_server: ServerProcess, context_id: str
) -> None:
    fresh_server.start()
    with fresh_server.client() as http:
        put(http, context_id)
        append(http, context_id, text("first"))
    follower = Running("tail", context_id, "-f", url=fresh_server.url)
    try:
        follower.wait_for("first")
        fresh_server.restart()
        with fresh_server.client() as http:
            append(http, context_id, text("after the restart"))
        assert follower.wait_for("after the restart", timeout=30).split()[0] == "2"
    finally:
        status, stderr = follower.stop(signal.SIGINT)
    assert status == 0, stderr


def test_tail_follow_ends_when_the_context_is_deleted(
    server: ServerProcess, http: httpx.Client, context_id: str
) -> None:
    put(http, context_id)
    follower = Running("tail", context_id, "-f", url=server.url)
    try:
        append(http, context_id, text("last words"))
        follower.wait_for("last words")
        assert http.delete(f"/v1/contexts/{context_id}").status_code == 200
        status = follower.process.wait(15)
    finally:
        _, stderr = follower.stop(signal.SIGINT)
    assert status == 0
    assert "tombstoned" in stderr


# --- window -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["ui", "openai", "anthropic"])
def test_window_is_the_server_answer(
    server: ServerProcess, http: httpx.Client, context_id: str, fmt: str
) -> None:
    put(http, context_id)
    append(
        http,
        context_id,
        text("Be terse. ✓", "system"),
        text("What is 2+2?"),
        {
            "role": "assistant",
            "parts": [
                {"type": "tool_call", "id": "c1", "name": "add", "payload": {"a": 2, "b": 2}}
            ],
        },
        {"role": "tool", "parts": [{"type": "tool_result", "tool_call_id": "c1", "payload": 4}]},
        text("4", "assistant"),
    )
    result = run("window", context_id, "--format", fmt, url=server.url)
    assert result.status == 0, result.stderr
    params = {} if fmt == "ui" else {"format": fmt}
    expected = http.get(f"/v1/contexts/{context_id}/context", params=params).json()
    assert json.loads(result.stdout) == expected
    assert list(json.loads(result.stdout)) == list(expected)  # the server's key order
    assert result.stdout.startswith("{\n  ")  # pretty
    trimmed = run("window", context_id, "--format", fmt, "--budget", "30", url=server.url)
    assert (
        json.loads(trimmed.stdout)
        == http.get(
            f"/v1/contexts/{context_id}/context", params={**params, "budget_tokens": 30}
        ).json()
    )


def test_window_stdout_has_no_escapes_even_when_colour_is_forced(
    server: ServerProcess, http: httpx.Client, context_id: str
) -> None:
    put(http, context_id)
    append(http, context_id, text("[bold]not markup[/bold]"))
    result = run("window", context_id, url=server.url, env=clean_env(FORCE_COLOR="1"))
    assert result.status == 0
    assert "\x1b" not in result.stdout
    assert json.loads(result.stdout)["messages"][0]["parts"][0]["text"] == "[bold]not markup[/bold]"


# --- cluster status ---------------------------------------------------------------------


def test_cluster_status(server: ServerProcess, http: httpx.Client) -> None:
    expected = http.get("/v1/cluster").json()
    result = run("cluster", "status", url=server.url)
    assert result.status == 0, result.stderr
    summary = dict(line.split(None, 1) for line in result.stdout.split("\n\n")[0].splitlines())
    assert summary["node"] == expected["node_id"]
    assert summary["leader"] == expected["leader"]
    assert summary["ready"] == "yes"
    members_part, groups_part = result.stdout.split("\n\n")[1:3]
    assert members_part.splitlines()[0] == "members"
    member = expected["members"][0]
    row = table_rows(members_part)[0]
    assert row == [member["id"], "-", member["http_url"], "yes", "yes"]
    assert groups_part.splitlines()[0] == "groups"
    group_row = table_rows(groups_part)[0]
    assert group_row[:2] == [str(expected["groups"][0]["id"]), expected["groups"][0]["leader"]]
    as_json = json.loads(run("cluster", "status", "--json", url=server.url).stdout)
    assert {k: as_json[k] for k in ("node_id", "leader", "members", "ready")} == {
        k: expected[k] for k in ("node_id", "leader", "members", "ready")
    }


# --- exit statuses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["context", "show", "{id}"],
        ["tail", "{id}"],
        ["tail", "{id}", "-f"],
        ["export", "{id}"],
        ["window", "{id}"],
    ],
)
def test_an_unknown_context_exits_3(
    server: ServerProcess, context_id: str, args: list[str]
) -> None:
    result = run(*(a.replace("{id}", context_id) for a in args), url=server.url)
    assert result.status == 3
    assert result.stderr.strip() == f"error: not_found: Context '{context_id}' does not exist."
    assert result.stdout == ""


def test_a_bad_request_exits_1(server: ServerProcess) -> None:
    result = run("context", "show", "bad id!", url=server.url)
    assert result.status == 1
    assert result.stderr.startswith("error: invalid_context_id: ")
    assert "Traceback" not in result.stderr


def test_a_closed_port_exits_5() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run("cluster", "status", url=url)
    assert result.status == 5
    assert result.stderr.startswith(f"error: cannot_connect: cannot reach the server at {url}")
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    process = ServerProcess(tmp_path_factory.mktemp("keyed") / "data", api_key="s3cret").start()
    yield process
    process.stop()


def test_the_api_key(keyed_server: ServerProcess) -> None:
    url = keyed_server.url
    missing = run("cluster", "status", url=url)
    assert missing.status == 4
    assert missing.stderr.startswith("error: unauthorized: ")
    wrong = run("--api-key", "nope", "contexts", "list", url=url)
    assert wrong.status == 4
    assert run("--api-key", "s3cret", "cluster", "status", url=url).status == 0
    # after the command too, and from the environment
    assert run("cluster", "status", "--api-key", "s3cret", url=url).status == 0
    after = run("cluster", "status", "--url", url, "--api-key", "s3cret")
    assert after.status == 0, after.stderr
    from_env = run("cluster", "status", env=clean_env(FASTPACA_URL=url, FASTPACA_API_KEY="s3cret"))
    assert from_env.status == 0, from_env.stderr
    # the one after the command wins
    assert run("--api-key", "s3cret", "cluster", "status", "--api-key", "x", url=url).status == 4


# --- colours ----------------------------------------------------------------------------


def test_no_color_is_respected(server: ServerProcess, listed: list[str]) -> None:
    prefix = listed[0].removesuffix("-b")
    forced = run(
        "contexts", "list", "--prefix", prefix, url=server.url, env=clean_env(FORCE_COLOR="1")
    )
    assert colour_codes(forced.stdout), "FORCE_COLOR colours the status column"
    plain = run(
        "contexts",
        "list",
        "--prefix",
        prefix,
        url=server.url,
        env=clean_env(FORCE_COLOR="1", NO_COLOR="1"),
    )
    assert plain.status == 0
    assert colour_codes(plain.stdout) == []
    error = run(
        "context",
        "show",
        f"{prefix}-nope",
        url=server.url,
        env=clean_env(FORCE_COLOR="1", NO_COLOR="1"),
    )
    assert error.status == 3 and colour_codes(error.stderr) == []
