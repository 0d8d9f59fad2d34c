"""The inspector page (``/ui/``) in a real browser against real server processes.

Contexts are seeded over HTTP; every check compares what the page shows with
what the API answers for the same context. One headless Chromium serves the
whole module (``conftest.py``); each test loads the page afresh.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from tests.support.server import ServerProcess
from tests.ui.conftest import open_page, screenshot, wait_for

JSON = dict[str, Any]
API_KEY = "inspector-test-key"
PAGE = 50  # the page's tail page size (app.js)
HOSTILE = '<img src=x onerror="window.__xss = 1"> & <b>not bold</b>'
DATA_PART = {"type": "data-weather", "data": {"city": "Paris", "temp": 21}}
DASH = "\u2013"  # the en dash of the page's seq runs (#1-#9 with it)
STORED_KEY = "return sessionStorage.getItem('fastpaca.inspector.apiKey')"


def text(value: str, role: str = "user") -> JSON:
    return {"role": role, "parts": [{"type": "text", "text": value}]}


def fmt(number: float) -> str:
    """A number as the page shows it: en-US grouping, at most two decimals."""
    rounded = round(number, 2)
    return f"{int(rounded):,}" if rounded == int(rounded) else f"{rounded:,}"


def percent(part: int, whole: int) -> str:
    """A CSS percentage as the page computes it (two decimals)."""
    value = math.floor(part / whole * 10000 + 0.5) / 100
    return f"{value:g}%"


def runs(seqs: list[int]) -> str:
    return ", ".join(seq_range(a, b) for a, b in _runs(seqs))


def seq_range(first: int, last: int) -> str:
    return f"#{first}" if first == last else f"#{first}{DASH}#{last}"


def _runs(seqs: list[int]) -> list[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if found and seq == found[-1][1] + 1:
            found[-1] = (found[-1][0], seq)
        else:
            found.append((seq, seq))
    return found


BOB = {"user": "bob"}


def last_n(limit: int) -> JSON:
    return {"strategy": "last_n", "config": {"limit": limit}}


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def create(http: httpx.Client, context_id: str, **config: Any) -> None:
    response = http.put(f"/v1/contexts/{context_id}", json=config)
    assert response.status_code == 200, response.text


def append(http: httpx.Client, context_id: str, *messages: JSON) -> JSON:
    response = http.post(f"/v1/contexts/{context_id}/messages", json={"messages": list(messages)})
    assert response.status_code == 201, response.text
    body: JSON = response.json()
    return body


def get(http: httpx.Client, path: str) -> JSON:
    response = http.get(path)
    assert response.status_code == 200, response.text
    body: JSON = response.json()
    return body


@pytest.fixture(scope="module")
def seeded(http: httpx.Client) -> dict[str, str]:
    """Three contexts under one fresh prefix; ``chat`` is a ``last_n`` context of 30
    messages keeping 10, ``long`` has 120 messages (three tail pages), ``quiet`` two.
    Last activity: long, then quiet, then chat (neither id nor creation order)."""
    prefix = f"ui{uuid.uuid4().hex[:8]}"
    ids = {name: f"{prefix}-{name}" for name in ("chat", "long", "quiet")}
    create(
        http,
        ids["chat"],
        token_budget=1000,
        policy=last_n(10),
        metadata={"user": "ada", "topic": "geography"},
    )
    for seq in range(1, 31):
        role = "user" if seq % 2 else "assistant"
        if seq == 29:
            parts = [{"type": "text", "text": HOSTILE}, DATA_PART]
            append(http, ids["chat"], {"role": role, "parts": parts})
        else:
            append(http, ids["chat"], text(f"chat message {seq}", role))
    create(http, ids["long"], token_budget=100_000, policy=last_n(30))
    for start in range(0, 120, 40):
        append(http, ids["long"], *(text(f"long message {start + i + 1}") for i in range(40)))
    create(http, ids["quiet"], token_budget=500, policy={"strategy": "budget"}, metadata=BOB)
    append(http, ids["quiet"], text("hello"), text("hi", "assistant"))
    time.sleep(0.02)
    append(http, ids["long"], text("the newest activity"))
    return ids


def page_data(driver: WebDriver, testid: str) -> list[JSON]:
    """``seq``, ``state`` and text of the page's messages with this ``data-testid``."""
    script = """
        return [...document.querySelectorAll(`[data-testid="${arguments[0]}"]`)].map((e) => ({
          seq: e.dataset.seq, state: e.dataset.state ?? null, segment: e.dataset.segment ?? null,
          note: e.querySelector('[data-testid=log-note]')?.textContent ?? '',
          text: e.textContent,
          json: [...e.querySelectorAll('code.part')].map((c) => c.textContent),
        }));
    """
    found: list[JSON] = driver.execute_script(script, testid)
    return found


def by_testid(driver: WebDriver, testid: str) -> Any:
    return driver.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]')


def shown_text(driver: WebDriver, testid: str) -> str:
    found: str = driver.execute_script(
        "return document.querySelector(`[data-testid='${arguments[0]}']`)?.textContent ?? null",
        testid,
    )
    return found


def listed(driver: WebDriver, prefix: str) -> list[str]:
    ids: list[str] = driver.execute_script(
        "return [...document.querySelectorAll('[data-testid=context-row]')].map(r => r.dataset.id)"
    )
    return [context_id for context_id in ids if context_id.startswith(prefix)]


def log_seqs_ready(driver: WebDriver, count: int) -> list[JSON] | None:
    """The log's messages once ``count`` are shown and each has its state."""
    messages = page_data(driver, "log-message")
    if len(messages) == count and all(m["state"] for m in messages):
        return messages
    return None


def seqs_of(driver: WebDriver, testid: str) -> list[str]:
    return [m["seq"] for m in page_data(driver, testid)]


def log_entry(driver: WebDriver, seq: str) -> JSON:
    return next(m for m in page_data(driver, "log-message") if m["seq"] == seq)


def feed_state(driver: WebDriver) -> str | None:
    state: str | None = by_testid(driver, "feed-status").get_attribute("data-state")
    return state


def wait_live(driver: WebDriver) -> None:
    wait_for(driver, lambda d: feed_state(d) == "live", "the live feed")


def context_row(driver: WebDriver, context_id: str) -> Any:
    return driver.find_element(
        By.CSS_SELECTOR, f'[data-testid=context-row][data-id="{context_id}"]'
    )


def shown_count(count: int) -> Callable[[WebDriver], bool]:
    """A wait condition: the log shows ``count`` messages."""
    return lambda driver: len(page_data(driver, "log-message")) == count


def open_context(driver: WebDriver, server: ServerProcess, context_id: str) -> None:
    open_page(driver, f"{server.url}/ui/#/contexts/{context_id}")
    wait_for(driver, lambda d: shown_text(d, "budget-used"), "the context to load")


def search(driver: WebDriver, value: str) -> None:
    box = by_testid(driver, "search")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.BACKSPACE)
    if value:
        box.send_keys(value)


# --- 1. the list ---------------------------------------------------------------------


def test_the_list_is_by_last_activity_and_the_search_filters_it(
    page: WebDriver, server: ServerProcess, http: httpx.Client, seeded: dict[str, str]
) -> None:
    prefix = seeded["chat"].rsplit("-", 1)[0]
    updated = {cid: get(http, f"/v1/contexts/{cid}")["updated_at"] for cid in seeded.values()}
    expected = sorted(seeded.values(), key=lambda cid: updated[cid], reverse=True)
    assert expected == [seeded["long"], seeded["quiet"], seeded["chat"]]  # not the id order

    open_page(page, f"{server.url}/ui/")
    assert wait_for(page, lambda d: listed(d, prefix) == expected, "the seeded contexts")
    row = context_row(page, seeded["chat"])
    chat = get(http, f"/v1/contexts/{seeded['chat']}")
    window = f"{chat['window_messages']} msgs · {fmt(chat['used_tokens'])}/1,000 tok"
    assert "30 msgs" in row.text and window in row.text, row.text
    assert '{"user":"ada","topic":"geography"}' in row.text
    screenshot(page, "list")

    search(page, f"{prefix}-QU")  # the id, case-insensitively
    wait_for(page, lambda d: listed(d, prefix) == [seeded["quiet"]], "the id search")
    search(page, "user=ada")  # one metadata field
    wait_for(page, lambda d: listed(d, prefix) == [seeded["chat"]], "the metadata filter")
    search(page, "GEOGRAPH")  # a metadata value
    wait_for(page, lambda d: listed(d, prefix) == [seeded["chat"]], "the metadata search")
    search(page, f"{prefix}-nothing-like-this")
    wait_for(page, lambda d: listed(d, prefix) == [], "an empty result")
    assert shown_text(page, "list-note") == "No context matches."
    screenshot(page, "list-search")

    search(page, "")
    wait_for(page, lambda d: listed(d, prefix) == expected, "the whole list again")
    context_row(page, seeded["quiet"]).click()
    wait_for(page, lambda d: d.current_url.endswith(f"#/contexts/{seeded['quiet']}"), "the link")
    wait_for(page, lambda d: len(page_data(d, "window-message")) == 2, "the opened context")


# --- 2. one context --------------------------------------------------------------------


def test_a_deep_link_shows_the_window_in_the_log_with_why_the_rest_left(
    page: WebDriver, server: ServerProcess, http: httpx.Client, seeded: dict[str, str]
) -> None:
    context_id = seeded["chat"]
    context = get(http, f"/v1/contexts/{context_id}")
    window = get(http, f"/v1/contexts/{context_id}/context")
    records = get(http, f"/v1/contexts/{context_id}/compactions")["records"]
    in_window = {m["seq"] for m in window["messages"]}
    assert in_window == set(range(21, 31)) and len(records) == 1

    open_context(page, server, context_id)
    log = wait_for(page, lambda d: log_seqs_ready(d, 30), "the whole log, annotated")
    assert [int(m["seq"]) for m in log] == list(range(1, 31))
    record = records[0]
    (action,) = record["actions"]
    for message in log:
        seq = int(message["seq"])
        if seq in in_window:
            assert message["state"] == "window", message
            assert message["note"] == ""
        else:
            assert message["state"] == "dropped", message
            assert f"compaction #{record['number']} (last_n, step 0)" in message["note"]
            assert action["reason"] == "over_message_limit" and action["reason"] in message["note"]
            assert action["detail"] in message["note"]
    shown = page_data(page, "window-message")
    assert [int(m["seq"]) for m in shown] == [m["seq"] for m in window["messages"]]
    assert all(m["segment"] == "log" for m in shown)
    segments = page.find_elements(By.CSS_SELECTOR, "[data-testid=segment]")
    assert [s.text for s in segments] == [
        f"log #21{DASH}#30 · 10 msgs · {window['used_tokens']} tok"
    ]

    # The budget bar: used, trigger (trigger_ratio times token_budget), budget.
    assert shown_text(page, "budget-used") == fmt(context["used_tokens"])
    assert shown_text(page, "budget-trigger") == fmt(context["trigger_ratio"] * 1000) == "700"
    assert shown_text(page, "budget-total") == fmt(context["token_budget"]) == "1,000"
    fill, trigger = page.execute_script(
        "const bar = document.querySelector('[data-testid=budget-bar]');"
        "return [bar.querySelector('.bar-fill').style.width,"
        " bar.querySelector('.bar-trigger').style.left];"
    )
    assert (fill, trigger) == (percent(context["used_tokens"], 1000), "70%")
    counters = dict(
        page.execute_script(
            "return [...document.querySelectorAll('[data-field]')]"
            ".map(e => [e.dataset.field, e.textContent])"
        )
    )
    assert counters["version"] == str(context["version"])
    assert counters["last_seq"].startswith("30 messages")
    assert counters["window_messages"].startswith("10 messages")
    assert counters["policy"] == 'last_n {"limit":10}'

    # API strings are text: the markup in message 29 is shown, not run; other parts are JSON.
    hostile = next(m for m in log if m["seq"] == "29")
    assert HOSTILE in hostile["text"]
    assert hostile["json"] == [json.dumps(DATA_PART, separators=(",", ":"))]
    markup = "[data-testid=main] img, [data-testid=log-message] .parts b"
    assert page.find_elements(By.CSS_SELECTOR, markup) == []
    assert page.execute_script("return window.__xss === undefined")
    screenshot(page, "context")

    page.execute_script("document.querySelector('[data-testid=log]').scrollTop = 0")
    page.execute_script("document.querySelector('[data-testid=records-box]').open = true")
    assert shown_text(page, "log-start") == "Start of the log."
    assert len(page.find_elements(By.CSS_SELECTOR, "[data-testid=record]")) == 1
    screenshot(page, "context-dropped")


def test_scrolling_up_loads_older_pages_of_the_log(
    page: WebDriver, server: ServerProcess, seeded: dict[str, str]
) -> None:
    open_context(page, server, seeded["long"])
    first = wait_for(page, lambda d: log_seqs_ready(d, PAGE), "the newest page")
    assert [int(m["seq"]) for m in first] == list(range(122 - PAGE, 122))
    assert by_testid(page, "log-start").get_attribute("data-more") == "true"
    for count in (2 * PAGE, 121):
        page.execute_script("document.querySelector('[data-testid=log]').scrollTop = 0")
        wait_for(page, shown_count(count), f"{count} messages shown")
    seqs = [int(m["seq"]) for m in page_data(page, "log-message")]
    assert seqs == list(range(1, 122))
    assert by_testid(page, "log-start").get_attribute("data-more") == "false"
    dropped = [m for m in page_data(page, "log-message") if m["state"] == "dropped"]
    assert [int(m["seq"]) for m in dropped] == list(range(1, 92))


# --- 3. live updates --------------------------------------------------------------------


def test_live_updates_reach_the_log_and_the_window_without_a_reload(
    page: WebDriver, server: ServerProcess, http: httpx.Client
) -> None:
    context_id = f"ui-live-{uuid.uuid4().hex[:8]}"
    create(http, context_id, token_budget=1000, policy=last_n(10))
    append(http, context_id, *(text(f"before {i}") for i in range(1, 13)))
    open_context(page, server, context_id)
    wait_for(page, lambda d: log_seqs_ready(d, 12), "the log")
    wait_live(page)
    page.execute_script("window.__sameDocument = true")

    append(http, context_id, text("appended while you watch"))  # seq 13: #3 leaves the window
    log = wait_for(page, lambda d: log_seqs_ready(d, 13), "the new message in the log")
    assert log[-1]["seq"] == "13" and "appended while you watch" in log[-1]["text"]
    window = get(http, f"/v1/contexts/{context_id}/context")
    assert [m["seq"] for m in window["messages"]] == list(range(4, 14))
    wait_for(
        page,
        lambda d: seqs_of(d, "window-message") == [str(s) for s in range(4, 14)],
        "the new window",
    )
    wait_for(page, lambda d: log_entry(d, "3")["state"] == "dropped", "#3 greyed")
    assert shown_text(page, "budget-used") == fmt(window["used_tokens"])

    # A compaction (POST …/compact) replaces the window: a replacement segment, the rest greyed.
    kept = window["messages"][-1]
    summary = text("Summary so far: twelve greetings.", "system")
    compact = {"replacement": [summary, kept]}
    response = http.post(f"/v1/contexts/{context_id}/compact", json=compact)
    assert response.status_code == 200, response.text
    shown = wait_for(
        page,
        lambda d: (found := page_data(d, "window-message")) and len(found) == 2 and found,
        "the compacted window",
    )
    assert [(m["seq"], m["segment"]) for m in shown] == [("", "replacement"), ("13", "log")]
    note = wait_for(page, lambda d: log_entry(d, "12")["note"], "why #12 left")
    assert "(client, POST /compact): replaced" in note
    assert page.execute_script("return window.__sameDocument === true")  # never reloaded
    screenshot(page, "live")


def test_the_feed_reconnects_after_the_server_drops_it(
    page: WebDriver, fresh_server: ServerProcess
) -> None:
    fresh_server.start()
    context_id = "ui-reconnect"
    with fresh_server.client() as client:
        create(client, context_id, token_budget=1000)
        append(client, context_id, text("first"))
    open_context(page, fresh_server, context_id)
    wait_live(page)

    fresh_server.kill9()  # the connection drops without a goodbye
    wait_for(page, lambda d: feed_state(d) != "live", "the drop")
    fresh_server.start()
    with fresh_server.client() as client:
        append(client, context_id, text("after the restart"))
    log = wait_for(page, lambda d: log_seqs_ready(d, 2), "the message sent while away")
    assert "after the restart" in log[1]["text"] and log[1]["state"] == "window"
    wait_live(page)


# --- 4. preview ---------------------------------------------------------------------------


def test_the_preview_shows_the_window_another_config_would_make(
    page: WebDriver, server: ServerProcess, http: httpx.Client, seeded: dict[str, str]
) -> None:
    context_id = seeded["chat"]
    version = get(http, f"/v1/contexts/{context_id}")["version"]
    open_context(page, server, context_id)
    by_testid(page, "preview").find_element(By.TAG_NAME, "summary").click()
    assert by_testid(page, "preview-strategy").get_attribute("value") == "last_n"
    assert by_testid(page, "preview-budget").get_attribute("value") == "1000"

    strategy = by_testid(page, "preview-strategy")
    strategy.send_keys(Keys.CONTROL, "a")
    strategy.send_keys("budget", Keys.TAB)  # the change fills in the strategy's defaults
    assert json.loads(by_testid(page, "preview-config").get_attribute("value")) == {
        "target_ratio": 0.5
    }
    budget = by_testid(page, "preview-budget")
    budget.send_keys(Keys.CONTROL, "a")
    budget.send_keys("60")
    by_testid(page, "preview-run").click()
    wait_for(
        page, lambda d: by_testid(d, "preview-result").get_attribute("data-state") == "done", "it"
    )

    body = {
        "policy": {"strategy": "budget", "config": {"target_ratio": 0.5}},
        "token_budget": 60,
        "trigger_ratio": 0.7,
        "tokenizer": "o200k_base",
    }
    response = http.post(f"/v1/contexts/{context_id}/preview", json=body)
    assert response.status_code == 200, response.text
    expected = response.json()
    seqs = [m["seq"] for m in expected["messages"]]
    assert seqs != list(range(21, 31))  # another window than the stored one
    shown = page_data(page, "preview-message")
    assert [int(m["seq"]) for m in shown] == seqs
    assert shown_text(page, "preview-used") == fmt(expected["used_tokens"])
    assert shown_text(page, "preview-count") == str(len(seqs))
    dropped = ", ".join(
        f"{seq_range(r['from_seq'], r['to_seq'])} ({r['count']})" for r in expected["dropped"]
    )
    assert shown_text(page, "preview-dropped") == dropped
    now, would = set(range(21, 31)), set(seqs)
    diff = [f"would add {runs(sorted(would - now))}"] if would - now else []
    diff += [f"would drop {runs(sorted(now - would))}"] if now - would else []
    assert shown_text(page, "preview-diff") == "; ".join(diff)
    page.execute_script("document.querySelector('[data-testid=preview-result]').scrollIntoView()")
    screenshot(page, "preview")

    # A config the server refuses: its error, in the API's words.
    config = by_testid(page, "preview-config")
    config.send_keys(Keys.CONTROL, "a")
    config.send_keys('{"target_ratio": 7}')
    by_testid(page, "preview-run").click()
    error = wait_for(page, lambda d: shown_text(d, "preview-error"), "the refusal")
    assert error.startswith("400 invalid_request: ") and "target_ratio" in error
    config.send_keys(Keys.CONTROL, "a")
    config.send_keys("{not json")
    by_testid(page, "preview-run").click()
    assert shown_text(page, "preview-error").startswith("The config is not JSON: ")
    assert get(http, f"/v1/contexts/{context_id}")["version"] == version  # nothing changed


# --- 5. a server with an API key -------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("keyed") / "data", api_key=API_KEY).start()
    yield process
    process.stop()


def test_a_keyed_server_asks_for_the_key_and_refuses_a_wrong_one(
    page: WebDriver, keyed_server: ServerProcess
) -> None:
    context_id = "ui-keyed"
    with keyed_server.client() as client:
        create(client, context_id, token_budget=800, metadata={"team": "core"})
        append(client, context_id, text("secret hello"), text("secret answer", "assistant"))
        context = get(client, f"/v1/contexts/{context_id}")
    # The page itself needs no key; its data does.
    assert httpx.get(f"{keyed_server.url}/ui/").status_code == 200
    assert httpx.get(f"{keyed_server.url}/v1/contexts").status_code == 401

    open_page(page, f"{keyed_server.url}/ui/#/contexts/{context_id}")
    wait_for(page, lambda d: by_testid(d, "key-form").is_displayed(), "the key form")
    assert not by_testid(page, "key-error").is_displayed()  # no key was sent yet
    assert shown_text(page, "budget-used") == ""
    screenshot(page, "key-form")

    by_testid(page, "key-input").send_keys("wrong-key", Keys.ENTER)
    wait_for(page, lambda d: by_testid(d, "key-error").is_displayed(), "the refusal")
    assert "refused" in shown_text(page, "key-error")
    assert shown_text(page, "budget-used") == ""
    screenshot(page, "key-refused")

    by_testid(page, "key-input").send_keys(API_KEY, Keys.ENTER)
    wait_for(page, lambda d: shown_text(d, "budget-used") == fmt(context["used_tokens"]), "data")
    assert not by_testid(page, "key-panel").is_displayed()
    assert [m["seq"] for m in wait_for(page, lambda d: log_seqs_ready(d, 2), "log")] == ["1", "2"]
    wait_live(page)
    assert page.execute_script(STORED_KEY) == API_KEY

    with keyed_server.client() as client:  # the feed, read with the key, is live
        append(client, context_id, text("secret follow-up"))
    wait_for(page, lambda d: log_seqs_ready(d, 3), "the live message")

    page.execute_script("location.hash = '#/'")  # the list, with the stored key
    wait_for(page, lambda d: listed(d, "ui-keyed") == [context_id], "the list")
    by_testid(page, "forget-key").click()
    wait_for(page, lambda d: by_testid(d, "key-form").is_displayed(), "the form again")
    assert page.execute_script(STORED_KEY) is None
