"""``GET /v1/contexts`` on a real node whose contexts are spread over Raft groups."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def grouped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("list") / "data"
    process = ServerProcess(data, "--groups", "4", api_key="list-key").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(grouped: ServerProcess) -> Iterator[httpx.Client]:
    headers = {"Authorization": "Bearer list-key"}
    with httpx.Client(base_url=grouped.url, headers=headers, timeout=30) as http:
        for n in range(40):
            metadata = {"tier": "gold" if n % 3 == 0 else "free", "n": n, "name": f"Jürgen {n}"}
            body = {"token_budget": 1000, "metadata": metadata}
            assert http.put(f"/v1/contexts/list:{n:02d}", json=body).status_code == 200
        yield http


def pages(client: httpx.Client, **params: Any) -> list[list[str]]:
    found: list[list[str]] = []
    cursor = None
    for _ in range(100):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = client.get("/v1/contexts", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        found.append([c["id"] for c in body["contexts"]])
        assert (body["next_cursor"] is not None) == body["has_more"]
        if not body["has_more"]:
            return found
        cursor = body["next_cursor"]
    raise AssertionError("paging did not end")


def ids(client: httpx.Client, **params: Any) -> list[str]:
    """Every id of every page."""
    return [context_id for page in pages(client, **params) for context_id in page]


def test_every_group_is_listed_once_in_id_order(client: httpx.Client) -> None:
    listed = pages(client, prefix="list:", limit=7)
    assert [len(page) for page in listed] == [7, 7, 7, 7, 7, 5]
    assert [i for page in listed for i in page] == [f"list:{n:02d}" for n in range(40)]


def test_recent_order_and_filters(client: httpx.Client) -> None:
    for n in (5, 30, 12):  # newest activity last
        message = {"role": "user", "parts": [{"type": "text", "text": "hi"}]}
        time.sleep(0.01)  # activity is in milliseconds
        response = client.post(f"/v1/contexts/list:{n:02d}/messages", json={"message": message})
        assert response.status_code == 201
    recent = pages(client, prefix="list:", order="recent", limit=2)[0]
    assert recent == ["list:12", "list:30"]
    gold = ids(client, prefix="list:", **{"metadata.tier": "gold"})
    assert gold == [f"list:{n:02d}" for n in range(0, 40, 3)]
    both = ids(client, **{"metadata.tier": "gold", "metadata.n": "9"})
    assert both == ["list:09"]
    assert ids(client, q="JÜRGEN 3") == ["list:03"] + [f"list:{n}" for n in range(30, 40)]


def test_a_filter_that_matches_nothing_is_an_empty_last_page(client: httpx.Client) -> None:
    body = client.get("/v1/contexts", params={"q": "no such context"}).json()
    assert body == {"contexts": [], "has_more": False, "next_cursor": None}


def test_tombstoned_contexts_by_status(client: httpx.Client) -> None:
    assert client.delete("/v1/contexts/list:39").status_code == 200
    assert "list:39" not in ids(client, prefix="list:3")
    assert ids(client, prefix="list:3", status="tombstoned") == ["list:39"]
    assert len(ids(client, prefix="list:3", status="all")) == 10


def test_paging_in_id_order_while_contexts_are_written(client: httpx.Client) -> None:
    """Writers bump versions and activity while a reader pages: under ``order=id``
    every context that exists throughout is listed exactly once."""
    stop = threading.Event()

    def write() -> None:
        n = 0
        with httpx.Client(base_url=str(client.base_url), headers=client.headers) as writer:
            while not stop.is_set() and n < 400:
                patch = {"metadata": {"touched": n}}
                writer.patch(f"/v1/contexts/list:{n % 39:02d}/metadata", json=patch)
                n += 1

    thread = threading.Thread(target=write)
    thread.start()
    try:
        listed = ids(client, prefix="list:", limit=3)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert listed == [f"list:{n:02d}" for n in range(39)]


def test_the_list_needs_the_key(grouped: ServerProcess) -> None:
    response = httpx.get(f"{grouped.url}/v1/contexts")
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"


def test_unknown_and_repeated_parameters(client: httpx.Client) -> None:
    for query in ["colour=red", "limit=1&limit=2", "metadata.a=1&metadata.a=2", "limit=1001"]:
        response = client.get(f"/v1/contexts?{query}")
        assert response.status_code == 400, query
        assert response.json()["error"] in {"unknown_field", "invalid_request"}


def test_a_cursor_from_another_order_is_refused(client: httpx.Client) -> None:
    first = client.get("/v1/contexts", params={"limit": 1}).json()
    response = client.get(
        "/v1/contexts", params={"cursor": first["next_cursor"], "order": "recent"}
    )
    assert response.status_code == 400 and "order=id" in response.json()["message"]
