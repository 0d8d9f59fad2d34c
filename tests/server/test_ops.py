"""Health and Prometheus metrics."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.server._api import Api, connect, metric_value, text_message
from tests.support.server import ServerProcess

METRIC_NAMES = [
    "fastpaca_http_requests_total",
    "fastpaca_http_request_duration_seconds",
    "fastpaca_appended_messages_total",
    "fastpaca_appended_tokens_total",
    "fastpaca_window_messages",
    "fastpaca_window_tokens",
]
MESSAGES_ROUTE = "/v1/contexts/{context_id}/messages"


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[Api]:
    client = connect(server)
    yield client
    client.close()


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
