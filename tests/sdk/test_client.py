"""Every method of the sync client against a real server."""

from __future__ import annotations

import time

import pytest
from fastpaca import (
    AppendResult,
    BadRequestError,
    ConflictError,
    ContextInfo,
    Fastpaca,
    MessagePage,
    NotFoundError,
    Window,
)

from tests.support.server import ServerProcess


def user(text: str) -> dict:
    return {"role": "user", "parts": [{"type": "text", "text": text}]}


def test_context_without_options_makes_no_request() -> None:
    with Fastpaca(base_url="http://127.0.0.1:9") as offline:  # nothing listens on port 9
        ctx = offline.context("never-created")
    assert ctx.id == "never-created"
    assert ctx.info is None


def test_context_with_options_puts_the_config(client: Fastpaca, context_id: str) -> None:
    ctx = client.context(
        context_id,
        budget=4000,
        trigger=0.5,
        policy={"strategy": "skip_parts", "config": {"limit": 10}},
        metadata={"user": "ada"},
        tokenizer="cl100k_base",
    )
    assert isinstance(ctx.info, ContextInfo)
    assert ctx.info.token_budget == 4000
    assert ctx.info.trigger_ratio == 0.5
    assert ctx.info.policy["strategy"] == "skip_parts"
    assert ctx.info.policy["config"]["limit"] == 10
    assert ctx.info.tokenizer == "cl100k_base"
    assert ctx.info.metadata == {"user": "ada"}
    assert ctx.info.version == 1
    info = ctx.get()
    assert info == ctx.info
    assert info.raw["id"] == context_id


def test_policy_may_be_given_by_name(client: Fastpaca, context_id: str) -> None:
    ctx = client.context(context_id, budget=100, policy="manual")
    assert ctx.info is not None
    assert ctx.info.policy == {"strategy": "manual", "config": {}}


def test_base_url_with_v1_and_environment_defaults(
    server: ServerProcess, context_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Fastpaca(base_url=server.url + "/v1/") as legacy:
        assert legacy.base_url == server.url
        legacy.context(context_id, budget=100)
    monkeypatch.setenv("FASTPACA_URL", server.url)
    with Fastpaca() as from_environment:
        assert from_environment.context(context_id).get().id == context_id


def test_append_answers_seq_version_and_token_estimate(client: Fastpaca, context_id: str) -> None:
    ctx = client.context(context_id, budget=1000)
    result = ctx.append(user("What is the capital of France?"))
    assert isinstance(result, AppendResult)
    assert (result.seq, result.version, result.token_estimate) == (1, 2, 11)
    assert result.last_seq == 1 and result.used_tokens == 11 and not result.needs_compaction
    assert result.messages[0].seq == 1 and result.messages[0].id.startswith("msg_")
    assert not result.replayed


def test_append_options(client: Fastpaca, context_id: str) -> None:
    ctx = client.context(context_id, budget=1000)
    message = {"id": "m-1", "role": "user", "parts": [{"type": "text", "text": "Hi"}]}
    first = ctx.append(message, token_count=42, idempotency_key="turn-1")
    assert first.token_estimate == 42
    assert "token_count" not in message  # the caller's dict is not changed
    again = ctx.append(message, token_count=42, idempotency_key="turn-1")
    assert again.replayed and again.seq == first.seq and again.version == first.version
    with pytest.raises(ConflictError) as conflict:
        ctx.append(user("stale"), if_version=first.version - 1)
    assert conflict.value.code == "version_conflict"
    ctx.append(user("fresh"), if_version=first.version)
    stored = ctx.tail()
    assert [m["id"] for m in stored][:1] == ["m-1"]
    assert stored[0]["token_count"] == 42
    assert len(stored) == 2


def test_append_refuses_a_list(client: Fastpaca, context_id: str) -> None:
    ctx = client.context(context_id, budget=1000)
    with pytest.raises(TypeError, match="append_many"):
        ctx.append([user("a")])  # type: ignore[arg-type]


def test_append_many_is_one_atomic_batch(client: Fastpaca, context_id: str) -> None:
    ctx = client.context(context_id, budget=1000)
    result = ctx.append_many([user("a"), user("b"), user("c")])
    assert result.seq is None and result.token_estimate is None
    assert [m.seq for m in result.messages] == [1, 2, 3]
    assert result.version == 2 and result.last_seq == 3
    one = ctx.append_many([user("d")], if_version=2, idempotency_key="batch-2")
    assert one.seq == 4 and one.version == 3


def test_context_returns_the_window(client: Fastpaca, context_id: str) -> None:
    ctx = client.context(context_id, budget=1000)
    ctx.append({"role": "system", "parts": [{"type": "text", "text": "Be terse."}]})
    ctx.append(user("one two three four five six"))
    ctx.append(user("seven"))
    window = ctx.context()
    assert isinstance(window, Window)
    assert [m["seq"] for m in window.messages] == [1, 2, 3]
    assert window.budget_tokens == 1000 and window.version == 4
    assert window.used_tokens == sum(m["token_count"] for m in window.messages)
    assert window.segments[0].type == "log" and window.segments[0].from_seq == 1
    trimmed = ctx.context(budget_tokens=window.messages[0]["token_count"] + 6)
    assert [m["seq"] for m in trimmed.messages] == [1, 3]
    assert trimmed.budget_tokens == window.messages[0]["token_count"] + 6
    with pytest.raises(ConflictError):
        ctx.context(if_version=1)
    assert ctx.context(if_version=4).version == 4


def test_compact_keeps_messages_sent_back_as_read(client: Fastpaca, context_id: str) -> None:
    ctx = client.context(context_id, budget=1000)
    ctx.append_many([user("a"), user("b"), user("c")])
    window = ctx.context()
    summary = {"role": "user", "parts": [{"type": "text", "text": "Summary: a"}]}
    result = ctx.compact([summary, *window.messages[1:]], if_version=window.version)
    assert result.message_count == 3 and result.version == window.version + 1
    after = ctx.context()
    assert after.messages[0]["seq"] is None
    assert [m["seq"] for m in after.messages[1:]] == [2, 3]
    assert after.messages[1:] == window.messages[1:]
    assert [s.type for s in after.segments] == ["replacement", "log"]
    assert ctx.tail().last_seq == 3  # the log is untouched
    with pytest.raises(ConflictError):
        ctx.compact([], if_version=window.version)
    replay = ctx.compact([], idempotency_key="empty-it")
    assert ctx.compact([], idempotency_key="empty-it").replayed
    assert replay.message_count == 0 and ctx.context().messages == []


def test_tail_pages_newest_first(client: Fastpaca, context_id: str) -> None:
    ctx = client.context(context_id, budget=100_000)
    ctx.append_many([user(str(n)) for n in range(1, 121)])
    page = ctx.tail()
    assert isinstance(page, MessagePage) and isinstance(page, list)
    assert len(page) == 100  # the default page size, as the original SDK's
    assert page[0]["seq"] == 21 and page[-1]["seq"] == 120
    assert page.has_more and page.last_seq == 120
    older = ctx.tail(offset=100, limit=30)
    assert [m["seq"] for m in older] == list(range(1, 21)) and not older.has_more
    assert "has_more=True" in repr(page)


def test_messages_pages_by_seq_range(client: Fastpaca, context_id: str) -> None:
    ctx = client.context(context_id, budget=100_000)
    ctx.append_many([user(str(n)) for n in range(1, 61)])
    first = ctx.messages()
    assert [m["seq"] for m in first] == list(range(1, 51)) and first.has_more
    middle = ctx.messages(after_seq=10, before_seq=15, limit=3)
    assert [m["seq"] for m in middle] == [11, 12, 13] and middle.has_more
    assert [m["seq"] for m in ctx.messages(after_seq=50)] == list(range(51, 61))


def test_iter_history_pages_through_everything(client: Fastpaca, context_id: str) -> None:
    ctx = client.context(context_id, budget=10_000_000)
    for start in range(0, 2100, 1000):
        ctx.append_many([user(str(n)) for n in range(start + 1, min(start + 1000, 2100) + 1)])
    seqs = [message["seq"] for message in ctx.iter_history()]
    assert seqs == list(range(1, 2101))
    assert [m["seq"] for m in ctx.iter_history(after_seq=2095)] == list(range(2096, 2101))


def test_metadata_and_update_metadata(client: Fastpaca, context_id: str) -> None:
    ctx = client.context(context_id, budget=100, metadata={"user": "ada", "draft": True})
    assert ctx.metadata() == {"user": "ada", "draft": True}
    info = ctx.update_metadata({"topic": "geography", "draft": None})
    assert info.metadata == {"user": "ada", "topic": "geography"}
    with pytest.raises(ConflictError):
        ctx.update_metadata({"x": 1}, if_version=1)
    assert ctx.update_metadata({"x": 1}, if_version=info.version).metadata["x"] == 1


def test_delete_tombstones(client: Fastpaca, context_id: str) -> None:
    ctx = client.context(context_id, budget=100)
    ctx.append(user("kept"))
    info = ctx.delete()
    assert info.status == "tombstoned"
    assert ctx.tail()[0]["parts"][0]["text"] == "kept"
    with pytest.raises(ConflictError) as conflict:
        ctx.append(user("refused"))
    assert conflict.value.code == "context_tombstoned"
    other = client.context(context_id + "-2", budget=100)
    assert client.delete_context(other.id).status == "tombstoned"


def test_redact_and_purge(client: Fastpaca, context_id: str) -> None:
    ctx = client.context(context_id, budget=100, metadata={"user": "ada"})
    ctx.append_many([user("public"), user("secret"), user("public too")])
    info = ctx.redact(2)
    assert ctx.redact(2).version == info.version  # a redacted message stays as it is
    assert [m["parts"] for m in ctx.tail()][1] == [{"type": "redacted"}]
    with pytest.raises(NotFoundError):
        ctx.redact(9)
    purged = ctx.delete(purge=True)
    assert (purged.status, purged.metadata, purged.last_seq) == ("purged", {}, 3)
    assert purged.purge is not None and purged.purge.purged_by is None
    assert list(ctx.tail()) == []
    with pytest.raises(ConflictError) as conflict:
        ctx.redact(1)
    assert conflict.value.code == "context_purged"
    other = client.context(context_id + "-2", budget=100)
    assert client.delete_context(other.id, purge=True).status == "purged"
    assert other.id in [c.id for c in client.list_contexts(status="purged", prefix=context_id)]


def test_list_and_iterate_contexts(client: Fastpaca, context_id: str) -> None:
    for n in range(5):
        metadata = {"team": "red" if n % 2 else "blue", "rank": n, "title": f"Chat Nº{n}"}
        client.context(f"{context_id}-{n}", budget=100, metadata=metadata)
    time.sleep(0.01)  # activity is in milliseconds: these two are the newest, in order
    client.context(f"{context_id}-1").append(user("newest activity"))
    time.sleep(0.01)
    client.delete_context(f"{context_id}-4")

    page = client.list_contexts(prefix=context_id, limit=2)
    assert [c.id for c in page] == [f"{context_id}-0", f"{context_id}-1"]
    assert page.has_more and page.next_cursor and len(page) == 2
    assert page.contexts[1] == client.context(f"{context_id}-1").get()
    listed = [c.id for c in client.iter_contexts(prefix=context_id, page_size=1)]
    assert listed == [f"{context_id}-{n}" for n in range(4)]  # the tombstoned one is not active
    everything = client.iter_contexts(prefix=context_id, status="all", order="recent")
    assert [c.id for c in everything][:2] == [f"{context_id}-4", f"{context_id}-1"]
    red = client.list_contexts(prefix=context_id, metadata={"team": "red", "rank": 3})
    assert [c.id for c in red] == [f"{context_id}-3"]
    assert [c.id for c in client.list_contexts(prefix=context_id, q="chat nº2")] == [
        f"{context_id}-2"
    ]
    with pytest.raises(BadRequestError):
        client.list_contexts(cursor=page.next_cursor, order="recent")  # an id-order cursor


def test_cluster_view_of_a_single_node(client: Fastpaca) -> None:
    cluster = client.cluster()
    assert cluster.ready and cluster.leader == cluster.node_id
    assert [(m.id, m.leader, m.reachable) for m in cluster.members] == [
        (cluster.node_id, True, True)
    ]
    assert cluster.groups[0]["leader"] == cluster.node_id
    assert 0 < cluster.applied_index <= cluster.commit_index


def test_unknown_context(client: Fastpaca, context_id: str) -> None:
    with pytest.raises(NotFoundError) as missing:
        client.context(context_id).get()
    assert missing.value.code == "not_found" and missing.value.status_code == 404


def test_window_bytes_survive_the_round_trip(client: Fastpaca, context_id: str) -> None:
    ctx = client.context(context_id, budget=1000)
    part = {"type": "tool_call", "name": "lookup", "id": "c1", "payload": {"z": 1, "a": [2, 1]}}
    ctx.append({"role": "assistant", "parts": [part], "metadata": {"b": 1, "a": 2}})
    stored = ctx.context().messages[0]
    assert list(stored["parts"][0]) == ["type", "name", "id", "payload"]
    assert list(stored["parts"][0]["payload"]) == ["z", "a"]
    assert list(stored["metadata"] or {}) == ["b", "a"]
