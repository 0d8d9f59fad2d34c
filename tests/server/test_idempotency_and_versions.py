"""Idempotent retries, if_version checks and concurrent writers on a real server."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from tests.server._api import Api, assert_error, connect, new_id, state, text_message
from tests.support.server import ServerProcess


def messages_url(context_id: str) -> str:
    return f"/v1/contexts/{context_id}/messages"


def test_retry_with_the_same_key_returns_the_original_result(api: Api) -> None:
    context_id = api.create()["id"]
    body = {"message": text_message("pay me once"), "idempotency_key": "key-1"}
    first = api.post(messages_url(context_id), json=body)
    assert first.status_code == 201
    after_first = state(api, context_id)

    for _ in range(3):
        retry = api.post(messages_url(context_id), json=body)
        assert retry.status_code == 201
        assert retry.content == first.content
        assert retry.json() == first.json()
    assert state(api, context_id) == after_first
    assert [m["parts"][0]["text"] for m in api.log(context_id)] == ["pay me once"]


def test_retry_replays_even_after_later_writes(api: Api) -> None:
    context_id = api.create()["id"]
    body = {"messages": [text_message("a"), text_message("b")], "idempotency_key": "batch"}
    first_response = api.post(messages_url(context_id), json=body)
    assert "Idempotent-Replayed" not in first_response.headers
    first = first_response.json()
    api.append(context_id, text_message("c"))
    after = state(api, context_id)

    retry = api.post(messages_url(context_id), json=body)
    assert retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json() == first
    assert state(api, context_id) == after
    assert len(api.log(context_id)) == 3


def test_the_same_key_with_a_different_body_is_refused(api: Api) -> None:
    context_id = api.create()["id"]
    api.append(context_id, text_message("original"), idempotency_key="shared")
    before = state(api, context_id)
    for body in (
        {"message": text_message("different"), "idempotency_key": "shared"},
        {"message": text_message("original", "assistant"), "idempotency_key": "shared"},
        {"messages": [text_message("original"), text_message("x")], "idempotency_key": "shared"},
        {"message": text_message("original"), "idempotency_key": "shared", "if_version": 1},
    ):
        response = api.post(messages_url(context_id), json=body)
        assert_error(response, 409, "idempotency_key_reused")
    assert state(api, context_id) == before
    assert [m["parts"][0]["text"] for m in api.log(context_id)] == ["original"]


def test_keys_are_per_context(api: Api) -> None:
    first = api.create()["id"]
    second = api.create()["id"]
    api.append(first, text_message("one"), idempotency_key="k")
    result = api.append(second, text_message("two"), idempotency_key="k")
    assert result["last_seq"] == 1
    assert api.log(second)[0]["parts"][0]["text"] == "two"


def test_if_version_mismatch_is_refused_and_stores_nothing(api: Api) -> None:
    context_id = api.create()["id"]
    api.append(context_id, text_message("one"))
    version, last_seq = state(api, context_id)
    for stale in (0, version - 1, version + 1, 2**62):
        response = api.post(
            messages_url(context_id), json={"message": text_message("nope"), "if_version": stale}
        )
        assert_error(response, 409, "version_conflict")
    assert state(api, context_id) == (version, last_seq)

    ok = api.append(context_id, text_message("two"), if_version=version)
    assert ok["last_seq"] == last_seq + 1
    assert ok["version"] > version
    # The version it was checked against is now stale.
    response = api.post(
        messages_url(context_id), json={"message": text_message("again"), "if_version": version}
    )
    assert_error(response, 409, "version_conflict")


def test_get_window_checks_if_version(api: Api) -> None:
    context_id = api.create()["id"]
    version = api.append(context_id, text_message("x"))["version"]
    assert api.window(context_id, if_version=version)["version"] == version
    response = api.get(f"/v1/contexts/{context_id}/context", params={"if_version": version - 1})
    assert_error(response, 409, "version_conflict")


def test_idempotent_compaction(api: Api) -> None:
    context_id = api.create(policy={"strategy": "manual"})["id"]
    api.append(context_id, text_message("long story"))
    body = {"replacement": [text_message("summary", "system")], "idempotency_key": "compact-1"}
    first = api.post(f"/v1/contexts/{context_id}/compact", json=body)
    assert first.status_code == 200
    after = state(api, context_id)
    retry = api.post(f"/v1/contexts/{context_id}/compact", json=body)
    assert retry.status_code == 200
    assert retry.json() == first.json()
    assert state(api, context_id) == after
    other = api.post(
        f"/v1/contexts/{context_id}/compact",
        json={"replacement": [], "idempotency_key": "compact-1"},
    )
    assert_error(other, 409, "idempotency_key_reused")
    assert state(api, context_id) == after


def run_together(count: int, work) -> list:
    """Run ``work(index, barrier)`` on ``count`` threads released together."""
    barrier = threading.Barrier(count)
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda index: work(index, barrier), range(count)))


def test_concurrent_conditional_writers_one_wins_per_version(
    api: Api, server: ServerProcess
) -> None:
    context_id = api.create()["id"]
    writers = 20
    clients = [connect(server) for _ in range(writers)]
    try:
        for round_number in range(5):
            version, last_seq = state(api, context_id)
            bodies = [
                {"message": text_message(f"round {round_number} writer {n}"), "if_version": version}
                for n in range(writers)
            ]

            def write(index: int, barrier: threading.Barrier, bodies: list[dict] = bodies) -> int:
                barrier.wait()
                response = clients[index].post(messages_url(context_id), json=bodies[index])
                if response.status_code == 409:
                    assert_error(response, 409, "version_conflict")
                return response.status_code

            statuses = run_together(writers, write)
            assert sorted(statuses) == [201] + [409] * (writers - 1)
            assert state(api, context_id)[1] == last_seq + 1
    finally:
        for client in clients:
            client.close()
    log = api.log(context_id)
    assert [m["seq"] for m in log] == [1, 2, 3, 4, 5]
    assert [m["parts"][0]["text"].split(" writer")[0] for m in log] == [
        f"round {n}" for n in range(5)
    ]


def test_concurrent_plain_appends_get_gap_free_seqs(api: Api, server: ServerProcess) -> None:
    context_id = new_id()
    api.create(context_id)
    writers, per_writer = 10, 20
    clients = [connect(server) for _ in range(writers)]

    def write(index: int, barrier: threading.Barrier) -> list[tuple[int, str]]:
        barrier.wait()
        acknowledged = []
        for n in range(per_writer):
            batch = [text_message(f"w{index}-{n}-{k}") for k in range(1 + n % 3)]
            response = clients[index].post(messages_url(context_id), json={"messages": batch})
            assert response.status_code == 201, response.text
            result = response.json()
            seqs = [m["seq"] for m in result["messages"]]
            # A batch is contiguous even when other writers interleave.
            assert seqs == list(range(seqs[0], seqs[0] + len(batch)))
            acknowledged.extend(zip(seqs, [m["parts"][0]["text"] for m in batch], strict=True))
        return acknowledged

    try:
        results = run_together(writers, write)
    finally:
        for client in clients:
            client.close()
    acknowledged = sorted(pair for writer in results for pair in writer)
    total = len(acknowledged)
    assert [seq for seq, _ in acknowledged] == list(range(1, total + 1))
    log = api.log(context_id)
    assert [(m["seq"], m["parts"][0]["text"]) for m in log] == acknowledged
    assert api.context(context_id)["last_seq"] == total
