"""Health, Prometheus metrics, and the command line (flags, variables, start failures)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.server._api import Api, metric_value, text_message
from tests.support.server import REPO, ServerProcess, free_port

METRIC_NAMES = [
    "fastpaca_http_requests_total",
    "fastpaca_http_request_duration_seconds",
    "fastpaca_appended_messages_total",
    "fastpaca_appended_tokens_total",
    "fastpaca_window_messages",
    "fastpaca_window_tokens",
]
MESSAGES_ROUTE = "/v1/contexts/{context_id}/messages"


def scrape(api: Api) -> str:
    response = api.get("/metrics")
    assert response.status_code == 200
    return response.text


@pytest.mark.parametrize("path", ["/health/live", "/health/ready"])
def test_health(api: Api, path: str) -> None:
    response = api.get(path)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_metrics_are_prometheus_text(api: Api) -> None:
    context_id = api.create()["id"]
    api.append(context_id, text_message("warm up"))
    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    types = dict(line.split(" ")[2:4] for line in text.splitlines() if line.startswith("# TYPE "))
    for name in (
        "fastpaca_http_requests",
        "fastpaca_appended_messages",
        "fastpaca_appended_tokens",
    ):
        # prometheus_client names the family with or without _total, depending on version
        assert "counter" in (types.get(name), types.get(f"{name}_total")), name
    histograms = [
        "fastpaca_http_request_duration_seconds",
        "fastpaca_window_messages",
        "fastpaca_window_tokens",
    ]
    for name in histograms:
        assert types.get(name) == "histogram", name
    for name in METRIC_NAMES:
        assert any(line.startswith(name) for line in text.splitlines()), name
    for line in text.splitlines():
        assert line.startswith("#") or re.fullmatch(r"[a-z_:]+(\{.*\})? \S+", line), line


def test_counters_move_after_appends(api: Api) -> None:
    context_id = api.create()["id"]
    before = scrape(api)
    result = api.append(context_id, text_message("one"), text_message("two"), text_message("three"))
    api.append(context_id, text_message("four", token_count=40))
    after = scrape(api)

    tokens = sum(m["token_count"] for m in result["messages"]) + 40

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert delta("fastpaca_appended_messages_total") == 4
    assert delta("fastpaca_appended_tokens_total") == tokens
    labels = {"method": "POST", "route": MESSAGES_ROUTE, "status": "201"}
    assert delta("fastpaca_http_requests_total", **labels) == 2
    assert (
        delta("fastpaca_http_request_duration_seconds_count", method="POST", route=MESSAGES_ROUTE)
        == 2
    )
    assert (
        delta("fastpaca_http_request_duration_seconds_sum", method="POST", route=MESSAGES_ROUTE) > 0
    )
    assert delta("fastpaca_window_messages_count") == 2
    assert delta("fastpaca_window_messages_sum") == 3 + 4
    assert delta("fastpaca_window_tokens_count") == 2
    window_tokens = result["used_tokens"] + result["used_tokens"] + 40
    assert delta("fastpaca_window_tokens_sum") == window_tokens


def test_refused_requests_are_counted_by_status(api: Api) -> None:
    context_id = api.create()["id"]
    before = scrape(api)
    api.post(f"/v1/contexts/{context_id}/messages", json={"message": {"role": "user"}})
    api.get(f"/v1/contexts/{context_id}x-missing")
    after = scrape(api)
    bad = {"method": "POST", "route": MESSAGES_ROUTE, "status": "400"}
    assert metric_value(after, "fastpaca_http_requests_total", **bad) == (
        metric_value(before, "fastpaca_http_requests_total", **bad) + 1
    )
    missing = {"method": "GET", "route": "/v1/contexts/{context_id}", "status": "404"}
    assert metric_value(after, "fastpaca_http_requests_total", **missing) == (
        metric_value(before, "fastpaca_http_requests_total", **missing) + 1
    )
    assert metric_value(after, "fastpaca_appended_messages_total") == metric_value(
        before, "fastpaca_appended_messages_total"
    )


def test_idempotent_replays_do_not_count_as_appended(api: Api) -> None:
    context_id = api.create()["id"]
    body = {"message": text_message("once"), "idempotency_key": "metrics-key"}
    assert api.post(f"/v1/contexts/{context_id}/messages", json=body).status_code == 201
    before = scrape(api)
    assert api.post(f"/v1/contexts/{context_id}/messages", json=body).status_code == 201
    after = scrape(api)
    for name in ("fastpaca_appended_messages_total", "fastpaca_appended_tokens_total"):
        assert metric_value(after, name) == metric_value(before, name), name


# --- the command line ------------------------------------------------------------------


def _error_lines(output: str) -> list[str]:
    assert "Traceback" not in output, output
    return [line for line in output.splitlines() if line.startswith("fastpaca-server:")]


def test_a_port_in_use_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = ServerProcess(tmp_path / "data")
        server.port = taken.getsockname()[1]
        started = time.monotonic()
        status, output = server.run_to_exit(timeout=20)
    assert status != 0
    assert time.monotonic() - started < 10
    assert _error_lines(output) == [
        f"fastpaca-server: cannot listen on 127.0.0.1:{server.port}: address already in use"
    ]


def _help(env: dict[str, str]) -> dict[str, str]:
    """``--help`` of a real process: each option's help text (whitespace normalised)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FASTPACA_")}
    result = subprocess.run(
        [sys.executable, "-m", "fastpaca_server", "--help"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    options = result.stdout.split("options:", 1)[1]
    blocks = re.split(r"\n(?=  -)", options.strip("\n"))
    return {block.split()[0].rstrip(","): " ".join(block.split()) for block in blocks}


def test_help_shows_every_default_and_never_the_api_key() -> None:
    options = _help({"FASTPACA_API_KEY": "secret-value-1234", "FASTPACA_PORT": "4999"})
    flags = sorted(options)
    readme_flags = sorted(
        set(re.findall(r"^\| `(--[a-z-]+)`", (REPO / "README.md").read_text(), re.MULTILINE))
    )
    assert flags == sorted(["-h", *readme_flags]), "README's configuration table differs"
    for flag, text in options.items():
        assert flag == "-h" or "(default: " in text, f"{flag} shows no default: {text}"
    assert "secret-value-1234" not in " ".join(options.values())
    assert "(default: set, from FASTPACA_API_KEY)" in options["--api-key"]
    assert "(default: 4999, from FASTPACA_PORT)" in options["--port"]
    assert "(default: off)" in options["--repair-journal"]

    plain = _help({})
    assert "(default: unset)" in plain["--api-key"]
    assert "(default: 4000)" in plain["--port"]
    assert "(default: ./data)" in plain["--data-dir"]


def test_flags_win_over_variables_and_variables_still_work(tmp_path: Path) -> None:
    variable_dir = tmp_path / "variable-data"
    variable_port = free_port()
    server = ServerProcess(
        tmp_path / "data",
        "--max-body-bytes",
        "4096",
        api_key="variable-key",  # FASTPACA_API_KEY, with no --api-key flag
        env={
            "FASTPACA_HOST": "203.0.113.7",  # not an address of this machine
            "FASTPACA_PORT": str(variable_port),
            "FASTPACA_DATA_DIR": str(variable_dir),
            "FASTPACA_MAX_BODY_BYTES": "2048",
        },
    )
    try:
        server.start()
        assert (tmp_path / "data" / "LOCK").exists()
        assert not variable_dir.exists()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{variable_port}/health/live", timeout=2)
        with httpx.Client(base_url=server.url, timeout=10) as anonymous:
            assert anonymous.get("/v1/contexts/flags").status_code == 401
        with server.client() as client:
            padding = {"token_budget": 1000, "metadata": {"padding": "x" * 3000}}
            assert client.put("/v1/contexts/flags", json=padding).status_code == 200
            padding["metadata"] = {"padding": "x" * 5000}
            too_large = client.put("/v1/contexts/flags", json=padding)
            assert too_large.status_code == 413
            assert "4096" in too_large.json()["message"]
    finally:
        server.kill9()
