"""Request ids, the JSON log (one line per request, no content) and request deadlines,
against real server processes (their stdout and stderr go to ``log_path``)."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastpaca_server import cli, logs

from tests.server._api import Api, assert_error, new_id, text_message
from tests.support.server import ServerProcess

GENERATED_ID = re.compile(r"[0-9a-f]{32}")
REQUEST_FIELDS = {"ts", "level", "logger", "msg", "request_id", "method", "route", "status"}
REQUEST_FIELDS |= {"latency_ms", "node"}
MESSAGES = "/v1/contexts/{context_id}/messages"
LISTENING = "fastpaca listening on "
WAIT_SECONDS = 5.0


def _marker(name: str) -> str:
    """A string that appears in one test's message content and nowhere else."""
    return f"MARK-{name}-{uuid.uuid4().hex}"


def records(server: ServerProcess) -> list[dict[str, Any]]:
    """The server's JSON log records (every line but the one saying where it listens)."""
    found = []
    for line in server.output().splitlines():
        if line.startswith(LISTENING):
            continue
        record = json.loads(line)  # any other line would be a test failure
        assert isinstance(record, dict), line
        found.append(record)
    return found


def request_lines(server: ServerProcess, request_id: str) -> list[dict[str, Any]]:
    """The ``request`` records of one request id, once there is one (a bounded wait)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        found = [
            record
            for record in records(server)
            if record["msg"] == "request" and record.get("request_id") == request_id
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def request_line(server: ServerProcess, request_id: str) -> dict[str, Any]:
    found = request_lines(server, request_id)
    assert len(found) == 1, f"{len(found)} log lines for {request_id}: {found}"
    return found[0]


def _ids(prefix: str) -> Iterator[str]:
    while True:
        yield f"{prefix}-{uuid.uuid4().hex[:12]}"


def _filler(kilobytes: int) -> str:
    """Text large enough that its tokens are counted on a worker thread (over 64 KiB)."""
    return " ".join(f"w{i}" for i in range(kilobytes * 1024 // 6))


# --- request ids --------------------------------------------------------------------


def test_a_sane_request_id_is_echoed_and_logged(server: ServerProcess, api: Api) -> None:
    for given in ("abc", "req-1.2_3:4/5+6=", "x" * 127 + "y", "!~", str(uuid.uuid4())):
        response = api.raw.get("/v1/contexts", headers={"X-Request-Id": given})
        assert response.status_code == 200
        assert response.headers["X-Request-Id"] == given
        assert request_line(server, given)["status"] == 200


def test_a_missing_or_bad_request_id_is_replaced(server: ServerProcess, api: Api) -> None:
    tag = uuid.uuid4().hex[:8]
    bad: list[str | bytes] = [
        "",
        f"has space {tag}",
        f"{tag}" + "x" * 121,  # 129 characters
        f"tab\t{tag}",
        f"café-{tag}".encode(),
        f"caf\xe9-{tag}".encode("latin-1"),
    ]
    seen = set()
    for value in [None, *bad]:
        headers = {} if value is None else {"X-Request-Id": value}
        response = api.raw.get("/v1/contexts", headers=headers)
        assert response.status_code == 200
        generated = response.headers["X-Request-Id"]
        assert GENERATED_ID.fullmatch(generated), (value, generated)
        seen.add(generated)
        assert request_line(server, generated)["route"] == "/v1/contexts"
    assert len(seen) == len(bad) + 1, "generated ids repeat"
    assert tag not in server.output(), "a refused request id reached the log"


def test_errors_and_unknown_routes_carry_the_id(server: ServerProcess, api: Api) -> None:
    ids = _ids("err")
    cases = [
        ("GET", "/no/such/route", 404, "not_found", "unmatched"),
        ("DELETE", "/health/live", 405, "method_not_allowed", "unmatched"),  # as in metrics
        ("GET", f"/v1/contexts/{new_id()}", 404, "not_found", "/v1/contexts/{context_id}"),
        ("PUT", "/v1/contexts/bad%20id", 400, "invalid_context_id", "/v1/contexts/{context_id}"),
    ]
    for method, path, status, code, route in cases:
        request_id = next(ids)
        response = api.raw.request(method, path, headers={"X-Request-Id": request_id})
        assert_error(response, status, code)
        assert response.headers["X-Request-Id"] == request_id
        line = request_line(server, request_id)
        assert (line["status"], line["route"], line["error"]) == (status, route, code)
        assert "context_id" not in line or line["context_id"] != "bad id"


# --- one JSON line per request -------------------------------------------------------


def test_every_request_logs_one_json_line_with_its_fields(server: ServerProcess, api: Api) -> None:
    marker = _marker("fields")
    context_id = f"acme:{new_id()}"
    plain_id = new_id()
    ids = _ids("fields")
    sent: list[tuple[str, httpx.Response, dict[str, Any]]] = []

    def call(method: str, path: str, expected: dict[str, Any], **kwargs: Any) -> None:
        request_id = next(ids)
        response = api.request(method, path, headers={"X-Request-Id": request_id}, **kwargs)
        assert response.headers["X-Request-Id"] == request_id
        sent.append((request_id, response, expected))

    base = f"/v1/contexts/{context_id}"
    tenant = {"context_id": context_id, "tenant": "acme"}
    call("PUT", base, {"route": "/v1/contexts/{context_id}", **tenant}, json={"token_budget": 1000})
    body = json.dumps({"message": text_message(marker), "idempotency_key": "k1"}).encode()
    request_id = next(ids)
    response = api.post(
        f"{base}/messages",
        content=body,
        headers={"X-Request-Id": request_id, "Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    sent.append((request_id, response, {"route": MESSAGES, "bytes_in": len(body), **tenant}))
    window = "/v1/contexts/{context_id}/context"
    call("GET", f"{base}/context", {"route": window, **tenant}, params={"format": "openai"})
    call("GET", f"{base}/messages", {"route": MESSAGES, **tenant}, params={"after_seq": 0})
    call("GET", "/v1/contexts", {"route": "/v1/contexts"}, params={"q": marker, "prefix": marker})
    preview = "/v1/contexts/{context_id}/preview"
    call("POST", f"{base}/preview", {"route": preview, **tenant}, json={"token_budget": 500})
    call("GET", f"/v1/contexts/{plain_id}", {"route": "/v1/contexts/{context_id}"})

    for request_id, response, expected in sent:
        line = request_line(server, request_id)
        assert set(line) >= REQUEST_FIELDS, line
        moment = datetime.fromisoformat(line["ts"].replace("Z", "+00:00"))
        assert line["ts"].endswith("Z") and moment.utcoffset() == UTC.utcoffset(None)
        assert abs(time.time() - moment.timestamp()) < 120
        assert (line["level"], line["msg"], line["node"]) == ("info", "request", "n1")
        assert line["logger"] == "fastpaca_server.api.requestlog"
        assert line["method"] == response.request.method
        assert line["status"] == response.status_code
        assert isinstance(line["latency_ms"], int | float) and line["latency_ms"] >= 0
        assert line["bytes_out"] == len(response.content)
        for key, value in expected.items():
            assert line[key] == value, (key, line)
        if "tenant" not in expected:
            assert "tenant" not in line, line
        if "context_id" not in expected and line["route"] == "/v1/contexts":
            assert "context_id" not in line
    plain = request_line(server, sent[-1][0])
    assert (plain["context_id"], plain["status"], plain["error"]) == (plain_id, 404, "not_found")
    # Message content and query-string values are never logged.
    assert marker not in server.output()


def test_content_never_reaches_the_log(server: ServerProcess, api: Api) -> None:
    marker = _marker("content")
    context_id = new_id()
    api.create(context_id, token_budget=100_000, metadata={"note": marker})
    api.append(context_id, text_message(f"{marker} one"), idempotency_key=f"{marker}-key")
    api.append(context_id, text_message(f"{marker} two"), text_message(f"{marker} three"))
    base = f"/v1/contexts/{context_id}"
    assert api.patch(f"{base}/metadata", json={"metadata": {"m": marker}}).status_code == 200
    assert marker in api.get(f"{base}/context").text
    assert marker in api.raw.get(f"{base}/export").text
    assert marker in api.get(f"{base}/tail").text
    compact = api.post(f"{base}/compact", json={"replacement": [text_message(f"{marker} sum")]})
    assert compact.status_code == 200, compact.text
    refused = api.raw.post(f"{base}/messages", json={"message": {"role": marker}})
    assert refused.status_code == 400
    last = next(_ids("content"))
    api.raw.get("/v1/contexts", headers={"X-Request-Id": last})
    request_line(server, last)  # everything before it is in the log by now
    assert marker not in server.output()


def test_health_and_metrics_are_not_logged_at_info(server: ServerProcess, api: Api) -> None:
    quiet = {path: next(_ids("quiet")) for path in ("/health/live", "/health/ready", "/metrics")}
    for path, request_id in quiet.items():
        response = api.raw.get(path, headers={"X-Request-Id": request_id})
        assert response.status_code == 200
        assert response.headers["X-Request-Id"] == request_id
    after = next(_ids("after"))
    api.raw.get("/v1/contexts", headers={"X-Request-Id": after})
    request_line(server, after)
    output = server.output()
    assert not [request_id for request_id in quiet.values() if request_id in output]


# --- streams ------------------------------------------------------------------------


def _websocket_handshake(
    server: ServerProcess, path: str, headers: dict[str, str]
) -> tuple[str, dict[str, str], bytes, socket.socket]:
    """Open a websocket by hand: the status line, the headers, what followed them, the socket."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_SECONDS)
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{server.port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed during the handshake: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status, *fields = head.decode().split("\r\n")
    parsed = {name.lower(): value.strip() for name, _, value in (f.partition(":") for f in fields)}
    return status, parsed, rest, sock


def _receive_until(sock: socket.socket, expected: bytes, already: bytes) -> bytes:
    data = already
    deadline = time.monotonic() + WAIT_SECONDS
    while expected not in data:
        assert time.monotonic() < deadline, f"{expected!r} never came: {data[-300:]!r}"
        chunk = sock.recv(65536)
        assert chunk, "the server closed the stream"
        data += chunk
    return data


def test_streams_echo_the_id_and_outlive_the_deadline(server: ServerProcess, api: Api) -> None:
    context_id = f"acme:{new_id()}"
    api.create(context_id)
    ws_id, sse_id = next(_ids("ws")), next(_ids("sse"))
    deadline = {"X-Request-Timeout": "0.2"}
    status, headers, rest, sock = _websocket_handshake(
        server, f"/v1/contexts/{context_id}/stream", {"X-Request-Id": ws_id, **deadline}
    )
    with sock:
        assert " 101 " in status, status
        assert headers["x-request-id"] == ws_id
        with (
            httpx.Client(base_url=server.url, timeout=WAIT_SECONDS) as client,
            client.stream(
                "GET",
                f"/v1/contexts/{context_id}/events",
                headers={"X-Request-Id": sse_id, **deadline},
            ) as sse,
        ):
            assert sse.status_code == 200
            assert sse.headers["X-Request-Id"] == sse_id
            time.sleep(0.6)  # past both deadlines: the streams go on
            marker = _marker("stream")
            api.append(context_id, text_message(marker))
            _receive_until(sock, marker.encode(), rest)
            lines = sse.iter_lines()
            started = time.monotonic()
            while marker not in next(lines):
                assert time.monotonic() - started < WAIT_SECONDS
    line = request_line(server, ws_id)  # the websocket ends when its client goes
    assert (line["status"], line["route"]) == (101, "/v1/contexts/{context_id}/stream")
    assert "error" not in line


# --- deadlines -----------------------------------------------------------------------

DEADLINES = ["0.001", "0.002", "0.005", "0.007", "0.01", "0.013", "0.016", "0.02", "0.03", "0.1"]
"""From before an 80 KB message's tokens are counted to after the write commits."""


@pytest.mark.parametrize("value", ["0", "-1", "abc", "600.5", "601", "1e3", "nan", "inf", "1,5"])
def test_an_invalid_request_timeout_is_400(api: Api, value: str) -> None:
    response = api.raw.get("/v1/contexts", headers={"X-Request-Timeout": value})
    body = assert_error(response, 400, "invalid_request")
    assert "X-Request-Timeout" in body["message"]
    assert GENERATED_ID.fullmatch(response.headers["X-Request-Id"])


@pytest.mark.parametrize("value", ["600", "0.5", ".5", "10.25"])
def test_a_valid_request_timeout_is_taken(api: Api, value: str) -> None:
    assert api.get("/v1/contexts", headers={"X-Request-Timeout": value}).status_code == 200


def test_a_slow_read_past_its_deadline_is_503(server: ServerProcess, api: Api) -> None:
    context_id = new_id()
    api.create(context_id, token_budget=10_000_000)
    for start in range(0, 3000, 1000):
        api.append(
            context_id, *(text_message(f"m {start + i} " + "lorem " * 16) for i in range(1000))
        )
    request_id = next(_ids("preview"))
    response = api.raw.post(  # a preview under another tokenizer counts every message again
        f"/v1/contexts/{context_id}/preview",
        json={"tokenizer": "cl100k_base"},
        headers={"X-Request-Timeout": "0.001", "X-Request-Id": request_id},
    )
    body = assert_error(response, 503, "deadline_exceeded")
    assert "0.001 s" in body["message"] and "idempotency key" in body["message"]
    assert response.headers["Retry-After"] == "1"
    assert response.headers["X-Request-Id"] == request_id
    line = request_line(server, request_id)
    assert (line["status"], line["error"]) == (503, "deadline_exceeded")
    assert line["route"] == "/v1/contexts/{context_id}/preview"
    # Without the header the server's default (30 s) applies.
    later = api.post(f"/v1/contexts/{context_id}/preview", json={"tokenizer": "cl100k_base"})
    assert later.status_code == 200


def test_a_write_past_its_deadline_is_503_and_its_retry_stores_it_once(
    server: ServerProcess, api: Api
) -> None:
    """Deadlines from before the tokens are counted to about when the write commits:
    some cut it before it is proposed, some may cut it after; every retry with the
    same idempotency key stores the message exactly once."""
    context_id = new_id()
    api.create(context_id, token_budget=10_000_000)
    filler = _filler(80)
    markers = []
    outcomes = []
    for i, timeout in enumerate(DEADLINES):
        marker = _marker(f"write{i}")
        markers.append(marker)
        body = {"message": text_message(f"{marker} {filler}"), "idempotency_key": marker[-12:]}
        request_id = next(_ids("write"))
        response = api.raw.post(
            f"/v1/contexts/{context_id}/messages",
            json=body,
            headers={"X-Request-Timeout": timeout, "X-Request-Id": request_id},
        )
        outcomes.append(response.status_code)
        assert response.status_code in (201, 503), response.text
        if response.status_code == 503:
            assert_error(response, 503, "deadline_exceeded")
            assert response.headers["Retry-After"] == "1"
            assert request_line(server, request_id)["error"] == "deadline_exceeded"
            retry = api.post(f"/v1/contexts/{context_id}/messages", json=body)
            assert retry.status_code == 201, retry.text
        again = api.post(f"/v1/contexts/{context_id}/messages", json=body)
        assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert outcomes[0] == 503, outcomes
    texts = [message["parts"][0]["text"] for message in api.log(context_id)]
    assert len(texts) == len(markers), outcomes
    for marker in markers:
        assert sum(text.startswith(marker) for text in texts) == 1, marker
    assert not [marker for marker in markers if marker in server.output()]


# --- text format, debug level, the server's default deadline ------------------------------


def test_text_format_debug_level_and_default_deadline(tmp_path: Path) -> None:
    key = f"secret-{uuid.uuid4().hex}"
    server = ServerProcess(
        tmp_path / "data",
        "--log-format",
        "text",
        "--log-level",
        "debug",
        "--node-id",
        "text-node",
        api_key=key,
        env={"FASTPACA_REQUEST_TIMEOUT": "0.001"},
    )
    try:
        server.start()
        marker = _marker("text")
        with server.client() as client:
            health = next(_ids("health"))
            assert client.get("/health/live", headers={"X-Request-Id": health}).is_success
            unauthorized = client.get("/v1/contexts", headers={"Authorization": "Bearer wrong"})
            assert unauthorized.status_code == 401
            assert GENERATED_ID.fullmatch(unauthorized.headers["X-Request-Id"])
            context_id = new_id()
            slow = {"X-Request-Timeout": "30"}
            created = client.put(
                f"/v1/contexts/{context_id}", json={"token_budget": 10_000_000}, headers=slow
            )
            assert created.status_code == 200, created.text
            body = {"message": text_message(f"{marker} {_filler(80)}"), "idempotency_key": "t"}
            path = f"/v1/contexts/{context_id}/messages"
            cut = client.post(path, json=body, headers={"X-Request-Id": "text-cut"})
            assert cut.status_code == 503 and cut.json()["error"] == "deadline_exceeded"
            stored = client.post(path, json=body, headers={"X-Request-Id": "text-ok", **slow})
            assert stored.status_code == 201, stored.text
        deadline = time.monotonic() + WAIT_SECONDS
        while "request_id=text-ok" not in server.output():
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.02)
        output = server.output()
        lines = output.splitlines()
        assert not [line for line in lines if line.startswith("{")], "JSON in the text log"
        (ok,) = [line for line in lines if "request_id=text-ok " in line]
        assert " INFO fastpaca_server.api.requestlog request " in ok
        assert f"route={MESSAGES} status=201 " in ok and "node=text-node" in ok
        (cut_line,) = [line for line in lines if "request_id=text-cut " in line]
        assert "status=503 " in cut_line and "error=deadline_exceeded" in cut_line
        (health_line,) = [line for line in lines if f"request_id={health} " in line]
        assert " DEBUG fastpaca_server.api.requestlog request " in health_line
        assert "route=/health/live status=200" in health_line
        assert "status=401 " in output and "error=unauthorized" in output
        assert key not in output and marker not in output
    finally:
        server.stop()


# --- flags and the formatter ----------------------------------------------------------------


def test_the_flags_read_their_variables_and_refuse_bad_values(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("LOG_FORMAT", "LOG_LEVEL", "REQUEST_TIMEOUT"):
        monkeypatch.delenv(f"FASTPACA_{name}", raising=False)
    config = cli.parse_args([])
    assert (config.log_format, config.log_level, config.request_timeout) == ("json", "info", 30)
    monkeypatch.setenv("FASTPACA_LOG_FORMAT", "text")
    monkeypatch.setenv("FASTPACA_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("FASTPACA_REQUEST_TIMEOUT", "0")
    config = cli.parse_args([])
    assert (config.log_format, config.log_level, config.request_timeout) == ("text", "warning", 0)
    assert cli.parse_args(["--log-format", "json"]).log_format == "json"
    for argv in (
        ["--log-format", "xml"],
        ["--log-level", "loud"],
        ["--request-timeout", "-1"],
        ["--request-timeout", "nan"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            cli.parse_args(argv)
        assert exit_info.value.code == 2
        assert argv[0] in capsys.readouterr().err


def test_the_json_formatter_keeps_extras_and_exceptions() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter({"node": "n9"}))
    logger = logging.getLogger(f"tests.request_log.{uuid.uuid4().hex}")
    logger.addHandler(handler)
    logger.propagate = False
    token = logs.request_id.set("rid-1")
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed %s", "here", extra={"context_id": "c1", "ts": "not kept"})
        logger.warning("line\nbreak", extra={"node": "own", "odd": {1, 2}})
    finally:
        logs.request_id.reset(token)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (first["level"], first["msg"], first["context_id"]) == ("error", "failed here", "c1")
    assert first["ts"] != "not kept" and first["ts"].endswith("Z")
    assert first["request_id"] == "rid-1" and first["node"] == "n9"
    assert "ValueError: boom" in first["exception"]
    assert (second["msg"], second["node"]) == ("line\nbreak", "own")
    assert "exception" not in second and second["odd"] in ("{1, 2}", "{2, 1}")
