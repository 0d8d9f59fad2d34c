"""API keys: every /v1 route needs the bearer key; health and metrics stay open."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server._api import Api, assert_error, check_response, connect, new_id, text_message
from tests.support.server import ServerProcess

KEY = "secret"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("keyed") / "data"
    process = ServerProcess(data_dir, api_key=KEY).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def api(keyed_server: ServerProcess) -> Iterator[Api]:
    """A client that sends the right key."""
    client = connect(keyed_server)
    yield client
    client.close()


@pytest.fixture(scope="module")
def anonymous(keyed_server: ServerProcess) -> Iterator[httpx.Client]:
    client = httpx.Client(base_url=keyed_server.url, timeout=30)
    yield client
    client.close()


@pytest.fixture(scope="module")
def context_id(api: Api) -> str:
    context_id = new_id()
    api.create(context_id)
    api.append(context_id, text_message("hello"))
    return context_id


ROUTES = [
    ("PUT", "", {"json": {"token_budget": 50}}),
    ("GET", "", {}),
    ("DELETE", "", {}),
    ("PATCH", "/metadata", {"json": {"metadata": {"a": 1}}}),
    ("POST", "/messages", {"json": {"message": text_message("intruder")}}),
    ("GET", "/messages", {}),
    ("GET", "/tail", {}),
    ("GET", "/context", {}),
    ("POST", "/compact", {"json": {"replacement": []}}),
]

WRONG_HEADERS = {
    "missing": {},
    "wrong_key": {"Authorization": f"Bearer {KEY}x"},
    "prefix_of_key": {"Authorization": f"Bearer {KEY[:-1]}"},
    "no_scheme": {"Authorization": KEY},
    "basic_scheme": {"Authorization": f"Basic {KEY}"},
    "empty": {"Authorization": ""},
    "bearer_only": {"Authorization": "Bearer"},
    "key_header": {"X-API-Key": KEY},
}


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r[0]}{r[1] or '/'}")
@pytest.mark.parametrize("headers", list(WRONG_HEADERS.values()), ids=list(WRONG_HEADERS))
def test_v1_routes_need_the_key(
    api: Api,
    anonymous: httpx.Client,
    context_id: str,
    route: tuple[str, str, dict],
    headers: dict[str, str],
) -> None:
    method, path, kwargs = route
    before = api.context(context_id)
    response = anonymous.request(
        method, f"/v1/contexts/{context_id}{path}", headers=headers, **kwargs
    )
    check_response(response)
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert api.context(context_id) == before


def test_an_unauthorized_put_creates_nothing(api: Api, anonymous: httpx.Client) -> None:
    context_id = new_id()
    response = anonymous.put(f"/v1/contexts/{context_id}", json={"token_budget": 10})
    check_response(response)
    assert_error(response, 401, "unauthorized")
    assert_error(api.get(f"/v1/contexts/{context_id}"), 404, "not_found")


def test_unknown_v1_routes_need_the_key_too(anonymous: httpx.Client) -> None:
    assert_error(anonymous.get("/v1/nope"), 401, "unauthorized")
    assert_error(anonymous.get("/v1"), 401, "unauthorized")


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r[0]}{r[1] or '/'}")
def test_the_right_key_works(api: Api, route: tuple[str, str, dict]) -> None:
    method, path, kwargs = route
    context_id = new_id()
    api.create(context_id, policy={"strategy": "manual"})
    response = api.request(method, f"/v1/contexts/{context_id}{path}", **kwargs)
    assert response.status_code in (200, 201), response.text


def test_the_key_is_sent_as_a_bearer_token(keyed_server: ServerProcess) -> None:
    with httpx.Client(
        base_url=keyed_server.url, headers={"Authorization": f"Bearer {KEY}"}
    ) as client:
        response = client.put(f"/v1/contexts/{new_id()}", json={"token_budget": 10})
        check_response(response)
        assert response.status_code == 200


@pytest.mark.parametrize("path", ["/health/live", "/health/ready", "/metrics"])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}], ids=["none", "wrong"])
def test_operations_routes_are_open(
    anonymous: httpx.Client, path: str, headers: dict[str, str]
) -> None:
    response = anonymous.get(path, headers=headers)
    check_response(response)
    assert response.status_code == 200


@pytest.mark.parametrize(
    "token",
    [b"\xff\xfe\xfd", KEY.encode() + b"\xc3", b"\xed\xa0\x80"],
    ids=["latin", "tail", "surr"],
)
def test_a_token_that_is_not_utf8_is_unauthorized(
    keyed_server: ServerProcess, token: bytes
) -> None:
    """Raw bytes in the header (not UTF-8) used to crash the auth check with a 500."""
    with socket.create_connection(("127.0.0.1", keyed_server.port), timeout=10) as sock:
        sock.sendall(
            b"GET /v1/contexts/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Authorization: Bearer " + token + b"\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401"), answer[:300]
    assert json.loads(body)["error"] == "unauthorized"
