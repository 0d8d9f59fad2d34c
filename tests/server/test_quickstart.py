"""The quick-start flow against a real server: create, append, read the window, tombstone."""

from __future__ import annotations

from tests.server._api import Api, assert_error, new_id, state, text_message


def test_quick_start_flow(api: Api) -> None:
    context_id = new_id("chat")
    created = api.put(
        f"/v1/contexts/{context_id}",
        json={
            "token_budget": 8000,
            "policy": {"strategy": "last_n", "config": {"limit": 50}},
            "metadata": {"user": "ada", "topic": "math"},
        },
    )
    assert created.status_code == 200
    context = created.json()
    assert context["id"] == context_id
    assert context["token_budget"] == 8000
    assert context["trigger_ratio"] == 0.7
    assert context["policy"] == {"strategy": "last_n", "config": {"limit": 50}}
    assert context["tokenizer"] == "o200k_base"
    assert context["metadata"] == {"user": "ada", "topic": "math"}
    assert context["status"] == "active"
    assert context["last_seq"] == 0
    assert context["used_tokens"] == 0
    assert context["needs_compaction"] is False
    created_version = context["version"]

    question = text_message("What is 2 + 2?", "user")
    answer = text_message("2 + 2 = 4.", "assistant", id="answer-1", metadata={"model": "m"})
    first = api.append(context_id, question)
    assert first["last_seq"] == 1
    assert [m["seq"] for m in first["messages"]] == [1]
    assert first["messages"][0]["id"].startswith("msg_")
    second = api.append(context_id, answer)
    assert second["last_seq"] == 2
    assert second["messages"][0]["id"] == "answer-1"
    assert second["version"] > first["version"] > created_version

    window = api.window(context_id)
    assert [m["role"] for m in window["messages"]] == ["user", "assistant"]
    assert [m["parts"] for m in window["messages"]] == [question["parts"], answer["parts"]]
    assert window["messages"][1]["metadata"] == {"model": "m"}
    assert window["used_tokens"] == sum(m["token_count"] for m in window["messages"])
    assert window["used_tokens"] == second["used_tokens"]
    assert window["budget_tokens"] == 8000
    assert window["needs_compaction"] is False
    assert window["version"] == second["version"]
    assert window["segments"] == [
        {"type": "log", "from_seq": 1, "to_seq": 2, "count": 2, "tokens": window["used_tokens"]}
    ]

    tail = api.get(f"/v1/contexts/{context_id}/tail").json()
    assert [m["seq"] for m in tail["messages"]] == [1, 2]
    assert tail["last_seq"] == 2
    assert tail["has_more"] is False
    assert tail["messages"] == window["messages"]

    context = api.context(context_id)
    assert {
        "id",
        "token_budget",
        "trigger_ratio",
        "policy",
        "tokenizer",
        "metadata",
        "status",
        "version",
        "last_seq",
        "used_tokens",
    } <= set(context)
    assert context["version"] == second["version"]
    assert context["last_seq"] == 2
    assert context["used_tokens"] == window["used_tokens"]


def test_put_is_idempotent_and_replaces_config(api: Api) -> None:
    context_id = new_id()
    body = {"token_budget": 1000, "metadata": {"a": 1}}
    first = api.put(f"/v1/contexts/{context_id}", json=body).json()
    again = api.put(f"/v1/contexts/{context_id}", json=body).json()
    assert again["version"] == first["version"]

    updated = api.put(
        f"/v1/contexts/{context_id}",
        json={"token_budget": 2000, "trigger_ratio": 0.5, "tokenizer": "cl100k_base"},
    ).json()
    assert updated["version"] > first["version"]
    assert updated["token_budget"] == 2000
    assert updated["trigger_ratio"] == 0.5
    assert updated["tokenizer"] == "cl100k_base"
    # Metadata is replaced only when it is sent.
    assert updated["metadata"] == {"a": 1}


def test_patch_metadata_merges_and_null_deletes(api: Api) -> None:
    context_id = new_id()
    created = api.create(context_id, metadata={"keep": 1, "drop": 2, "nested": {"x": 1, "y": 2}})
    url = f"/v1/contexts/{context_id}/metadata"

    patched = api.patch(
        url, json={"metadata": {"drop": None, "new": "v", "nested": {"y": None, "z": 3}}}
    )
    assert patched.status_code == 200
    context = patched.json()
    assert context["metadata"] == {"keep": 1, "new": "v", "nested": {"x": 1, "z": 3}}
    assert context["version"] > created["version"]
    assert api.context(context_id)["metadata"] == context["metadata"]

    # A patch that changes nothing leaves the version alone.
    unchanged = api.patch(url, json={"metadata": {"keep": 1, "absent": None}}).json()
    assert unchanged["version"] == context["version"]
    assert unchanged["metadata"] == context["metadata"]

    # if_version guards the patch.
    stale = api.patch(url, json={"metadata": {"x": 1}, "if_version": context["version"] - 1})
    assert_error(stale, 409, "version_conflict")
    current = api.patch(url, json={"metadata": {"x": 1}, "if_version": context["version"]})
    assert current.status_code == 200
    assert current.json()["metadata"]["x"] == 1


def test_delete_tombstones_but_keeps_history_readable(api: Api) -> None:
    context_id = new_id()
    api.create(context_id)
    api.append(context_id, text_message("hello"), text_message("hi there", "assistant"))
    before = api.context(context_id)

    deleted = api.delete(f"/v1/contexts/{context_id}")
    assert deleted.status_code == 200
    tombstoned = deleted.json()
    assert tombstoned["status"] == "tombstoned"
    assert tombstoned["version"] > before["version"]
    assert tombstoned["last_seq"] == 2

    # History stays readable.
    assert api.context(context_id)["status"] == "tombstoned"
    tail = api.get(f"/v1/contexts/{context_id}/tail").json()
    assert [m["parts"][0]["text"] for m in tail["messages"]] == ["hello", "hi there"]
    page = api.get(f"/v1/contexts/{context_id}/messages").json()
    assert [m["seq"] for m in page["messages"]] == [1, 2]
    assert len(api.window(context_id)["messages"]) == 2

    # Every write is refused and changes nothing.
    refused = [
        api.post(f"/v1/contexts/{context_id}/messages", json={"message": text_message("late")}),
        api.patch(f"/v1/contexts/{context_id}/metadata", json={"metadata": {"a": 1}}),
        api.put(f"/v1/contexts/{context_id}", json={"token_budget": 10}),
        api.post(f"/v1/contexts/{context_id}/compact", json={"replacement": []}),
    ]
    for response in refused:
        assert_error(response, 409, "context_tombstoned")
    assert state(api, context_id) == (tombstoned["version"], 2)

    # Deleting again is idempotent.
    again = api.delete(f"/v1/contexts/{context_id}")
    assert again.status_code == 200
    assert again.json()["version"] == tombstoned["version"]


def test_unknown_context_is_404(api: Api) -> None:
    missing = new_id("missing")
    for response in [
        api.get(f"/v1/contexts/{missing}"),
        api.get(f"/v1/contexts/{missing}/context"),
        api.get(f"/v1/contexts/{missing}/tail"),
        api.delete(f"/v1/contexts/{missing}"),
        api.post(f"/v1/contexts/{missing}/messages", json={"message": text_message("x")}),
    ]:
        assert_error(response, 404, "not_found")
