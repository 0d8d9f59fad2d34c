"""Keys, scopes, tenants and their limits (``--keys-file``) against real server processes."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastpaca import Fastpaca, RateLimitError
from fastpaca_server.access import hash_key

from tests.support.server import ServerProcess

OPERATOR = "operator-key-0123456789"
KEYS = {
    "acme-rw": ("acme", ["read", "write"]),
    "acme-ro": ("acme", ["read"]),
    "globex-rw": ("globex", ["read", "write"]),
    "ops": (None, ["read", "write", "admin"]),
    "tight-rw": ("tight", ["read", "write"]),
    "slow-rw": ("slow", ["read", "write"]),
}
TENANTS = {
    "tight": {"max_contexts": 3, "max_message_bytes": 400, "max_tokens_stored": 300},
    "slow": {"requests_per_second": 0.5, "burst": 2},
}


def secret(name: str) -> str:
    """The key's text (what clients send); the file holds only its SHA-256."""
    return f"{name}-secret-key-abcdef"


def keys_file_content(names: list[str], tenants: dict[str, Any] = TENANTS) -> str:
    keys = []
    for name in names:
        tenant, scopes = KEYS[name]
        entry: dict[str, Any] = {"name": name, "scopes": scopes, "sha256": hash_key(secret(name))}
        if tenant is not None:
            entry["tenant"] = tenant
        keys.append(entry)
    return json.dumps({"tenants": tenants, "keys": keys})


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("tenants")
    keys_file = root / "keys.json"
    keys_file.write_text(keys_file_content(list(KEYS)))
    process = ServerProcess(root / "data", "--keys-file", str(keys_file), api_key=OPERATOR)
    process.start()
    yield process
    process.stop()


def as_key(server: ServerProcess, name: str | None) -> httpx.Client:
    headers = {} if name is None else {"Authorization": f"Bearer {secret(name)}"}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


def text(value: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"type": "text", "text": value}]}


def status_of(client: httpx.Client, method: str, path: str, **kwargs: Any) -> tuple[int, str]:
    response = client.request(method, path, **kwargs)
    error = response.json().get("error", "") if response.status_code >= 400 else ""
    return response.status_code, error


def test_a_tenant_sees_and_writes_only_its_namespace(keyed: ServerProcess) -> None:
    with as_key(keyed, "acme-rw") as acme, as_key(keyed, "globex-rw") as globex:
        assert acme.put("/v1/contexts/acme:chat", json={"token_budget": 1000}).status_code == 200
        message = {"message": text("acme's secret plan")}
        assert acme.post("/v1/contexts/acme:chat/messages", json=message).status_code == 201
        assert (
            globex.put("/v1/contexts/globex:chat", json={"token_budget": 1000}).status_code == 200
        )
        base = "/v1/contexts/acme:chat"
        refused = [
            ("GET", base, {}),
            ("GET", f"{base}/tail", {}),
            ("GET", f"{base}/messages", {}),
            ("GET", f"{base}/context", {}),
            ("GET", f"{base}/export", {}),
            ("GET", f"{base}/compactions", {}),
            ("GET", f"{base}/events", {}),
            ("GET", f"{base}/stream", {}),
            ("POST", f"{base}/preview", {"json": {}}),
            ("PUT", base, {"json": {"token_budget": 5}}),
            ("POST", f"{base}/messages", {"json": message}),
            ("POST", f"{base}/compact", {"json": {"replacement": []}}),
            ("PATCH", f"{base}/metadata", {"json": {"metadata": {"x": 1}}}),
            ("DELETE", base, {}),
            ("PUT", "/v1/contexts/acme:new", {"json": {"token_budget": 5}}),
            ("PUT", "/v1/contexts/no-namespace", {"json": {"token_budget": 5}}),
        ]
        for method, path, kwargs in refused:
            assert status_of(globex, method, path, **kwargs) == (403, "forbidden"), (method, path)
        listed = globex.get("/v1/contexts", params={"status": "all"}).json()["contexts"]
        assert [c["id"] for c in listed] == ["globex:chat"]
        assert globex.get("/v1/contexts", params={"prefix": "acme:"}).json()["contexts"] == []
        # Nothing of acme's changed, and its owner still reads it.
        context = acme.get(base).json()
        assert (context["version"], context["last_seq"], context["status"]) == (2, 1, "active")
        assert [c["id"] for c in acme.get("/v1/contexts").json()["contexts"]] == ["acme:chat"]
    with as_key(keyed, "ops") as ops:  # an operator's key sees every tenant
        ids = {c["id"] for c in ops.get("/v1/contexts", params={"limit": 1000}).json()["contexts"]}
        assert {"acme:chat", "globex:chat"} <= ids


def test_scopes_401_and_403(keyed: ServerProcess) -> None:
    with as_key(keyed, "acme-ro") as reader:
        assert reader.get("/v1/contexts").status_code == 200
        assert status_of(reader, "PUT", "/v1/contexts/acme:ro", json={"token_budget": 9}) == (
            403,
            "forbidden",
        )
        assert status_of(reader, "POST", "/v1/contexts/acme:chat/preview", json={})[0] == 200
    with as_key(keyed, "acme-rw") as writer:
        member = {"raft_address": "127.0.0.1:7000"}
        assert status_of(writer, "POST", "/v1/cluster/members", json=member) == (403, "forbidden")
        assert writer.get("/v1/cluster").status_code == 200
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": secret("acme-rw")}):
        with httpx.Client(base_url=keyed.url, headers=headers) as anonymous:
            response = anonymous.get("/v1/contexts")
            assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    with httpx.Client(base_url=keyed.url, headers={"Authorization": f"Bearer {OPERATOR}"}) as op:
        assert op.get("/v1/contexts/acme:chat").status_code == 200  # --api-key: every scope
    with httpx.Client(base_url=keyed.url) as anonymous:  # health and the page stay open
        assert anonymous.get("/health/ready").status_code == 200


def test_the_request_rate_of_a_tenant(keyed: ServerProcess) -> None:
    with as_key(keyed, "slow-rw") as slow:
        statuses = [slow.get("/v1/contexts").status_code for _ in range(4)]
        assert statuses[:2] == [200, 200] and 429 in statuses[2:]
        response = slow.get("/v1/contexts")
        assert response.status_code == 429 and response.json()["error"] == "rate_limited"
        assert 1 <= int(response.headers["Retry-After"]) <= 2
        time.sleep(float(response.headers["Retry-After"]))
        assert slow.get("/v1/contexts").status_code == 200
    with as_key(keyed, "acme-rw") as other:  # another tenant is not slowed down
        assert all(other.get("/v1/contexts").status_code == 200 for _ in range(10))
    metrics = httpx.get(f"{keyed.url}/metrics").text
    assert 'fastpaca_tenant_limited_total{limit="requests_per_second",tenant="slow"}' in metrics


def test_quotas_refuse_writes_and_change_nothing(keyed: ServerProcess) -> None:
    with as_key(keyed, "tight-rw") as tight:
        # max_contexts 3, even when ten creations race.
        def create(n: int, results: list[int]) -> None:
            with as_key(keyed, "tight-rw") as client:
                put = client.put(f"/v1/contexts/tight:{n}", json={"token_budget": 10_000})
                results.append(put.status_code)

        results: list[int] = []
        threads = [threading.Thread(target=create, args=(n, results)) for n in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert sorted(results) == [200] * 3 + [429] * 7
        created = [c["id"] for c in tight.get("/v1/contexts").json()["contexts"]]
        assert len(created) == 3
        first = created[0]
        refused = tight.put("/v1/contexts/tight:extra", json={"token_budget": 10})
        assert refused.status_code == 429 and refused.json()["error"] == "quota_exceeded"
        assert refused.headers["Retry-After"] == "60"
        # An existing context's PUT is no creation: allowed.
        assert tight.put(f"/v1/contexts/{first}", json={"token_budget": 9000}).status_code == 200

        # max_message_bytes 400: one message too large, in a batch or in a compaction.
        big = {"messages": [text("ok"), text("x" * 500)]}
        assert status_of(tight, "POST", f"/v1/contexts/{first}/messages", json=big) == (
            429,
            "quota_exceeded",
        )
        compact = {"replacement": [text("y" * 500)]}
        assert status_of(tight, "POST", f"/v1/contexts/{first}/compact", json=compact) == (
            429,
            "quota_exceeded",
        )
        # max_tokens_stored 300 over the tenant's contexts.
        path = f"/v1/contexts/{first}/messages"
        stored = 0
        for n in range(100):
            response = tight.post(path, json={"message": text(f"message number {n} " * 4)})
            if response.status_code != 201:
                break
            stored += response.json()["messages"][0]["token_count"]
        assert response.status_code == 429 and response.json()["error"] == "quota_exceeded"
        assert 300 - 40 < stored <= 300
        before = tight.get(f"/v1/contexts/{first}").json()
        other = created[1]
        assert status_of(
            tight, "POST", f"/v1/contexts/{other}/messages", json={"message": text("z" * 200)}
        ) == (
            429,
            "quota_exceeded",
        )
        assert tight.get(f"/v1/contexts/{first}").json() == before
        assert tight.get(f"/v1/contexts/{other}").json()["last_seq"] == 0

    # The SDK does not retry a quota: one request, a RateLimitError with the code.
    sent: list[httpx.Request] = []
    http = httpx.Client(event_hooks={"request": [sent.append]})
    sdk = Fastpaca(base_url=keyed.url, api_key=secret("tight-rw"), http_client=http)
    with sdk, pytest.raises(RateLimitError) as raised:
        sdk.context(first).append(text("more " * 50))
    assert raised.value.code == "quota_exceeded" and len(sent) == 1
    metrics = httpx.get(f"{keyed.url}/metrics").text
    for limit in ("max_contexts", "max_message_bytes", "max_tokens_stored"):
        assert f'fastpaca_tenant_limited_total{{limit="{limit}",tenant="tight"}}' in metrics


def test_keys_are_read_again_on_sighup(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(keys_file_content(["acme-rw"]))
    server = ServerProcess(tmp_path / "data", "--keys-file", str(keys_file)).start()
    try:
        assert "acme-rw-secret" not in keys_file.read_text()  # stored hashed
        with as_key(server, "acme-rw") as acme, as_key(server, "globex-rw") as globex:
            assert acme.get("/v1/contexts").status_code == 200
            assert globex.get("/v1/contexts").status_code == 401

            def reload_and_wait(expected_globex: int) -> None:
                assert server.process is not None
                server.process.send_signal(signal.SIGHUP)
                deadline = time.monotonic() + 10
                while globex.get("/v1/contexts").status_code != expected_globex:
                    assert time.monotonic() < deadline, "the keys were not reloaded"
                    time.sleep(0.05)

            keys_file.write_text(keys_file_content(["globex-rw"]))
            reload_and_wait(200)
            assert acme.get("/v1/contexts").status_code == 401  # removed keys stop working

            keys_file.write_text("{not json")  # a broken file: the keys in force stay
            assert server.process is not None
            server.process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while "keys file not reloaded" not in server.output():
                assert time.monotonic() < deadline, "no log line for the broken file"
                time.sleep(0.05)
            assert globex.get("/v1/contexts").status_code == 200
    finally:
        server.stop()


def test_a_broken_keys_file_stops_the_node_at_start(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({"keys": [{"name": "x", "scopes": ["root"], "sha256": "0"}]}))
    server = ServerProcess(tmp_path / "data", "--keys-file", str(keys_file))
    status, output = server.run_to_exit()
    assert status == 1
    assert "keys[0].scopes" in output and "Traceback" not in output
