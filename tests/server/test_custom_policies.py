"""Custom policies from the ``fastpaca.policies`` entry points, on real server processes.

The example package in examples/custom-policy is made importable with its
entry point (a ``.dist-info`` beside it on ``PYTHONPATH``, as ``pip install``
would leave it), so the server loads it exactly as it loads an installed one.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server._api import Api, connect, new_id, text_message
from tests.support.server import REPO, ServerProcess

EXAMPLE = REPO / "examples" / "custom-policy"


def _site(tmp: Path, entry: str = "keep_tagged = fastpaca_keep_tagged:keep_tagged") -> Path:
    site = tmp / "site"
    site.mkdir(parents=True)
    shutil.copy(EXAMPLE / "fastpaca_keep_tagged.py", site)
    info = site / "fastpaca_keep_tagged-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fastpaca-keep-tagged\nVersion: 0.1.0\n"
    )
    (info / "entry_points.txt").write_text(f"[fastpaca.policies]\n{entry}\n")
    return site


@pytest.fixture(scope="module")
def plugged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("plugins")
    process = ServerProcess(tmp / "data", env={"PYTHONPATH": str(_site(tmp))}).start()
    api = connect(process)
    yield api
    api.close()
    process.stop()


def test_a_custom_policy_runs_when_the_window_crosses_its_trigger(plugged: Api) -> None:
    context_id = new_id("custom")
    policy = {"strategy": "keep_tagged", "config": {"recent": 2, "tags": ["important"]}}
    created = plugged.create(context_id, token_budget=120, trigger_ratio=0.5, policy=policy)
    assert created["policy"] == policy
    plugged.append(context_id, text_message("rules", role="system"))
    plugged.append(
        context_id, text_message("the user's name is Ada", metadata={"tag": "important"})
    )
    for n in range(8):
        plugged.append(context_id, text_message(f"chatter number {n}"))
    window = plugged.window(context_id)
    texts = [m["parts"][0]["text"] for m in window["messages"]]
    assert texts[:2] == ["rules", "the user's name is Ada"]  # pinned, tagged
    assert "chatter number 7" in texts and "chatter number 0" not in texts
    assert window["used_tokens"] <= 120
    records = plugged.get(f"/v1/contexts/{context_id}/compactions").json()["records"]
    assert any(
        a["reason"] == "custom" and a["policy"] == "keep_tagged"
        for r in records
        for a in r["actions"]
    )
    assert len(plugged.log(context_id)) == 10  # the log is never touched


def test_a_strategy_nobody_installed_is_refused(plugged: Api) -> None:
    response = plugged.put(
        f"/v1/contexts/{new_id('custom')}",
        json={"token_budget": 100, "policy": {"strategy": "keep_tagged_v2"}},
    )
    assert response.status_code == 400
    assert "keep_tagged" in response.json()["message"]  # the installed ones are listed


def test_a_policy_that_cannot_be_loaded_stops_the_node(tmp_path: Path) -> None:
    site = _site(tmp_path, "broken = fastpaca_keep_tagged:does_not_exist")
    process = ServerProcess(tmp_path / "data", env={"PYTHONPATH": str(site)})
    status, output = process.run_to_exit()
    assert status == 1
    assert "custom policy 'broken'" in output and "cannot be loaded" in output


def test_a_custom_policy_may_not_take_a_built_in_name(tmp_path: Path) -> None:
    site = _site(tmp_path, "budget = fastpaca_keep_tagged:keep_tagged")
    process = ServerProcess(tmp_path / "data", env={"PYTHONPATH": str(site)})
    status, output = process.run_to_exit()
    assert status == 1 and "name of a built-in strategy" in output
