"""The inspector on a ``summarize`` context: the summary segment with its seq range,
the summary message marked as such, and the messages it folded greyed with why.

The summary is made by a real server calling an OpenAI-compatible endpoint over
HTTP (``tests/support/fake_openai.py``), as in tests/server/test_summarize.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By

from tests.support.fake_openai import FakeOpenAI
from tests.support.server import ServerProcess
from tests.ui.conftest import open_page, screenshot, wait_for

DASH = "\u2013"


@pytest.fixture(scope="module")
def summarizing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with FakeOpenAI() as fake:
        data = tmp_path_factory.mktemp("ui-summary") / "data"
        process = ServerProcess(
            data,
            "--summarizer-base-url",
            fake.base_url,
            "--summarizer-model",
            "fake-summarizer",
        ).start()
        yield process
        process.stop()


def summarized(client: httpx.Client, context_id: str) -> dict[str, Any]:
    """Talk until the window holds a summary and no summary job is pending; the window."""
    policy = {"strategy": "summarize", "config": {"target_ratio": 0.4}}
    body = {"token_budget": 600, "trigger_ratio": 0.6, "policy": policy}
    assert client.put(f"/v1/contexts/{context_id}", json=body).status_code == 200
    deadline = time.monotonic() + 30
    for n in range(60):
        pair = [
            {"role": "user", "parts": [{"type": "text", "text": f"question {n} about topic {n}?"}]},
            {"role": "assistant", "parts": [{"type": "text", "text": f"answer {n}: chapter {n}."}]},
        ]
        appended = client.post(f"/v1/contexts/{context_id}/messages", json={"messages": pair})
        assert appended.status_code == 201, appended.text
        window = client.get(f"/v1/contexts/{context_id}/context").json()
        if any(s["type"] == "summary" for s in window["segments"]):
            while client.get(f"/v1/contexts/{context_id}").json()["needs_compaction"]:
                assert time.monotonic() < deadline, "the summary job never finished"
                time.sleep(0.05)
            return dict(client.get(f"/v1/contexts/{context_id}/context").json())
        time.sleep(0.1)
        assert time.monotonic() < deadline
    raise AssertionError("no summary after 60 turns")


def test_a_summary_segment_is_shown_with_its_seq_range(
    summarizing: ServerProcess, page: Any, tmp_path: Path
) -> None:
    context_id = f"ui-sum-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=summarizing.url, timeout=30) as client:
        window = summarized(client, context_id)
    segment = next(s for s in window["segments"] if s["type"] == "summary")
    first, last = segment["from_seq"], segment["to_seq"]
    label = f"summary of #{first}{DASH}#{last}"

    open_page(page, f"{summarizing.url}/ui/#/contexts/{context_id}")
    chips = wait_for(
        page,
        lambda d: (
            [s.text for s in d.find_elements(By.CSS_SELECTOR, "[data-testid=segment]")] or None
        ),
        "the window's segments",
    )
    assert any(chip.startswith(label) for chip in chips), chips
    badge = wait_for(
        page,
        lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=summary-badge]") or None,
        "the summary message's badge",
    )
    assert badge[0].text == label
    folded = page.execute_script(
        "return [...document.querySelectorAll('[data-testid=log-message]')].map((e) => ["
        " Number(e.dataset.seq), e.dataset.state,"
        " e.querySelector('[data-testid=log-note]')?.textContent ?? '']);"
    )
    covered = [entry for entry in folded if first <= entry[0] <= last]
    assert covered, folded
    assert all(state == "dropped" and "summar" in note for _, state, note in covered), covered
    screenshot(page, "summary")
