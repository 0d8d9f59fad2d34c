"""Fixtures of the inspector tests: one headless Chromium per module, driven by Selenium.

The browser is Debian's ``chromium`` with its ``chromium-driver``, named
explicitly so that Selenium Manager never looks for (or downloads) another.
Screenshots go to ``test-results/ui/`` at the repository's root.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver as Chrome
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.server import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = REPO / "test-results" / "ui"
WAIT = 10.0
"""Seconds any one wait for the page may take."""


def _missing_browser() -> str | None:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if not missing:
        return None
    return (
        f"the inspector's browser tests need Debian's chromium and chromium-driver "
        f"({', '.join(missing)} not found): `make install` installs them"
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Chrome]:
    """A headless Chromium for the module (a fresh tab state per test: see ``open_page``)."""
    problem = _missing_browser()
    if problem is not None:
        pytest.fail(problem)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "1")  # never let Selenium Manager reach the network
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser: Chrome) -> Iterator[Chrome]:
    """The module's browser; after the test, its console must hold no CSP violation
    and no uncaught script error."""
    console(browser)  # start from an empty console
    yield browser
    problems = [
        entry["message"]
        for entry in console(browser)
        if "Content Security Policy" in entry["message"] or "Uncaught" in entry["message"]
    ]
    assert not problems, problems


def console(driver: Chrome) -> list[dict[str, Any]]:
    """The browser console's entries since the last call (reading empties it)."""
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return entries


def open_page(driver: WebDriver, url: str) -> None:
    """Load ``url`` as a new document (not a hash change of the page already shown)."""
    driver.get("about:blank")
    driver.get(url)


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    """``condition``'s first truthy value within :data:`WAIT` seconds."""
    return WebDriverWait(driver, WAIT, poll_frequency=0.05).until(condition, f"waiting for {what}")


def screenshot(driver: WebDriver, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    assert driver.save_screenshot(str(path)), path
    return path
