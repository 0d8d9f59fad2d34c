"""Erasure on real processes: a purge or a redact leaves no trace on disk.

``DELETE …?purge=true`` and ``POST …/messages/{seq}/redact`` are followed by a
forced log compaction on every node, so within moments no file under the data
directory (journal, snapshot, anything) holds the erased text, in UTF-8 or
JSON-escaped, on a single node and on every node of a three-node cluster, and
a kill -9 and restart brings none of it back. Both need the ``admin`` scope;
``--tombstone-retention`` purges old tombstones by itself.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fastpaca_server.access import hash_key

from tests.support.cluster import Cluster
from tests.support.polling import until
from tests.support.server import ServerProcess

ADMIN_KEY = "erasure-admin-key"
WRITE_KEY = "erasure-write-key"
ERASED_WITHIN = 15.0
"""Seconds the forced compaction may take to reach the disk (it takes well under one)."""

_T = TypeVar("_T")


def until_erased(check: Callable[[], _T], what: str) -> _T:
    return until(check, what, ERASED_WITHIN)


def _marker(kind: str) -> str:
    """Unique text with a non-ASCII letter: its JSON-escaped form differs from its UTF-8."""
    return f"{kind}-{uuid.uuid4().hex}-ünïcödé"


def _forms(marker: str) -> list[bytes]:
    """Every way the marker may sit in a file: UTF-8, and JSON-escaped (``\\u00fc``)."""
    return [marker.encode(), json.dumps(marker)[1:-1].encode()]


def files_with(data_dir: Path, *markers: str) -> list[str]:
    """Files under ``data_dir`` (read whole, byte for byte) that hold any of ``markers``."""
    found = []
    for path in sorted(data_dir.rglob("*")):
        if not path.is_file():
            continue
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # replaced while we looked (a journal rewrite)
            continue
        if any(form in data for marker in markers for form in _forms(marker)):
            found.append(str(path.relative_to(data_dir)))
    return found


def _keys_file(root: Path) -> Path:
    keys = {
        "keys": [
            {"name": "ops", "scopes": ["read", "write", "admin"], "sha256": hash_key(ADMIN_KEY)},
            {"name": "app", "scopes": ["read", "write"], "sha256": hash_key(WRITE_KEY)},
        ]
    }
    path = root / "keys.json"
    path.write_text(json.dumps(keys))
    return path


def _client(server: ServerProcess, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def _text(text: str, **extra: Any) -> dict[str, Any]:
    return {"role": "user", "parts": [{"type": "text", "text": text}], **extra}


def _fill(client: httpx.Client, context_id: str, marker: str, meta_marker: str) -> None:
    """A context whose messages, window (a compaction's replacement) and metadata hold
    the markers; a summary-free window, then more messages after the compaction."""
    put = {"token_budget": 100_000, "metadata": {"owner": meta_marker}}
    assert client.put(f"/v1/contexts/{context_id}", json=put).is_success
    for n in range(3):
        answer = client.post(
            f"/v1/contexts/{context_id}/messages",
            json={"message": _text(f"{marker} says {n}", metadata={"note": meta_marker})},
        )
        assert answer.status_code == 201, answer.text
    replacement = [{"role": "assistant", "parts": [{"type": "text", "text": f"gist: {marker}"}]}]
    compacted = client.post(f"/v1/contexts/{context_id}/compact", json={"replacement": replacement})
    assert compacted.is_success, compacted.text
    after = client.post(f"/v1/contexts/{context_id}/messages", json={"message": _text(marker)})
    assert after.status_code == 201, after.text


def _assert_purged(client: httpx.Client, context_id: str, by: str | None) -> None:
    context = client.get(f"/v1/contexts/{context_id}").json()
    assert (context["status"], context["metadata"], context["last_seq"]) == ("purged", {}, 4)
    assert context["purge"]["purged_by"] == by
    assert client.get(f"/v1/contexts/{context_id}/messages").json()["messages"] == []
    assert client.get(f"/v1/contexts/{context_id}/tail").json()["messages"] == []
    assert client.get(f"/v1/contexts/{context_id}/context").json()["messages"] == []
    assert client.get(f"/v1/contexts/{context_id}/export").text == ""
    refused = client.post(f"/v1/contexts/{context_id}/messages", json={"message": _text("x")})
    assert (refused.status_code, refused.json()["error"]) == (409, "context_tombstoned")


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path / "data", "--keys-file", str(_keys_file(tmp_path)), "--tombstone-retention", "1"
    ).start()
    yield server
    server.kill9()


def test_a_purge_leaves_no_trace_on_disk_and_survives_kill9(keyed: ServerProcess) -> None:
    marker, meta_marker = _marker("purge-me"), _marker("meta")
    other = _marker("keep-me")
    with _client(keyed, ADMIN_KEY) as admin, _client(keyed, WRITE_KEY) as app:
        _fill(app, "doomed", marker, meta_marker)
        _fill(app, "kept", other, other)
        assert files_with(keyed.data_dir, marker, meta_marker), "the markers never hit the disk"

        # The write scope may neither purge nor redact.
        for request in (
            app.build_request("DELETE", "/v1/contexts/doomed", params={"purge": "true"}),
            app.build_request("POST", "/v1/contexts/doomed/messages/1/redact"),
        ):
            answer = app.send(request)
            assert (answer.status_code, answer.json()["error"]) == (403, "forbidden")
            assert "'admin' scope" in answer.json()["message"]
        assert app.get("/v1/contexts/doomed").json()["status"] == "active"

        purged = admin.delete("/v1/contexts/doomed", params={"purge": "true"})
        assert purged.is_success, purged.text
        again = admin.delete("/v1/contexts/doomed", params={"purge": "true"})
        assert again.json()["version"] == purged.json()["version"]
        until_erased(
            lambda: not files_with(keyed.data_dir, marker, meta_marker),
            f"the purged text leaves {files_with(keyed.data_dir, marker, meta_marker)}",
        )
        _assert_purged(app, "doomed", "ops")
        assert files_with(keyed.data_dir, other), "another context's messages were lost"

    keyed.kill9()
    keyed.start()
    with _client(keyed, ADMIN_KEY) as admin:
        _assert_purged(admin, "doomed", "ops")
        assert [
            m["parts"][0]["text"] for m in admin.get("/v1/contexts/kept/tail").json()["messages"]
        ][-1] == other
    assert not files_with(keyed.data_dir, marker, meta_marker)


def test_a_redact_erases_one_message_and_keeps_the_others(keyed: ServerProcess) -> None:
    secret, kept = _marker("secret"), _marker("kept")
    with _client(keyed, ADMIN_KEY) as admin:
        assert admin.put("/v1/contexts/chat", json={"token_budget": 100_000}).is_success
        texts = [f"hello {kept}", f"my card is {secret}", f"bye {kept}"]
        for text in texts:
            answer = admin.post("/v1/contexts/chat/messages", json={"message": _text(text)})
            assert answer.status_code == 201, answer.text
        before = admin.get("/v1/contexts/chat").json()
        redacted = admin.post("/v1/contexts/chat/messages/2/redact")
        assert redacted.is_success, redacted.text
        assert redacted.json()["version"] == before["version"] + 1
        same = admin.post("/v1/contexts/chat/messages/2/redact")
        assert same.json()["version"] == redacted.json()["version"]
        until_erased(
            lambda: not files_with(keyed.data_dir, secret),
            f"the redacted text leaves {files_with(keyed.data_dir, secret)}",
        )
        assert files_with(keyed.data_dir, kept), "the other messages' texts must stay"

        log = admin.get("/v1/contexts/chat/messages").json()["messages"]
        assert [m["seq"] for m in log] == [1, 2, 3]
        assert log[1]["parts"] == [{"type": "redacted"}]
        assert [log[0]["parts"][0]["text"], log[2]["parts"][0]["text"]] == [texts[0], texts[2]]
        window = admin.get("/v1/contexts/chat/context").json()
        assert [m["parts"] for m in window["messages"]][1] == [{"type": "redacted"}]
        assert window["used_tokens"] < before["used_tokens"]
        assert window["used_tokens"] == sum(m["token_count"] for m in window["messages"])
        missing = admin.post("/v1/contexts/chat/messages/9/redact")
        assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    keyed.kill9()
    keyed.start()
    with _client(keyed, ADMIN_KEY) as admin:
        log = admin.get("/v1/contexts/chat/messages").json()["messages"]
        assert log[1]["parts"] == [{"type": "redacted"}]
    assert not files_with(keyed.data_dir, secret)


def test_tombstones_are_purged_after_the_retention(keyed: ServerProcess) -> None:
    marker = _marker("old")
    with _client(keyed, WRITE_KEY) as app:
        assert app.put("/v1/contexts/old", json={"token_budget": 1000}).is_success
        assert app.post("/v1/contexts/old/messages", json={"message": _text(marker)}).is_success
        assert app.delete("/v1/contexts/old").json()["status"] == "tombstoned"
        context = until_erased(
            lambda: (c := app.get("/v1/contexts/old").json())["status"] == "purged" and c,
            "the tombstone is purged by the retention (--tombstone-retention 1)",
        )
        assert context["purge"]["purged_by"] == "retention"
        listed = app.get("/v1/contexts", params={"status": "purged"}).json()["contexts"]
        assert [c["id"] for c in listed] == ["old"]
    until_erased(
        lambda: not files_with(keyed.data_dir, marker), "the retention's purge reaches disk"
    )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    nodes = Cluster(tmp_path, 3, "--submit-timeout", "5").start()
    yield nodes
    nodes.stop()


def test_a_purge_is_erased_from_every_node_of_a_cluster(cluster: Cluster) -> None:
    marker, meta_marker = _marker("purge-me"), _marker("meta")
    leader = cluster.settled()
    follower = next(node for node in cluster.nodes if node is not leader)
    with httpx.Client(base_url=follower.url, timeout=30) as client:
        _fill(client, "doomed", marker, meta_marker)
        for node in cluster.nodes:  # every node has it on disk
            until_erased(lambda n=node: files_with(n.data_dir, marker), f"{node.data_dir} has it")
        assert client.delete("/v1/contexts/doomed", params={"purge": "true"}).is_success
    for node in cluster.nodes:
        until_erased(
            lambda n=node: not files_with(n.data_dir, marker, meta_marker),
            f"{cluster.name(node)} erases it: {files_with(node.data_dir, marker, meta_marker)}",
        )
        with httpx.Client(base_url=node.url, timeout=30) as client:
            _assert_purged(client, "doomed", None)
    cluster.restart(follower)
    with httpx.Client(base_url=follower.url, timeout=30) as client:
        _assert_purged(client, "doomed", None)
    assert not files_with(follower.data_dir, marker, meta_marker)
