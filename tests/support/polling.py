"""Waiting in tests for something the server does in its own time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")


def until(
    check: Callable[[], _T], what: str = "the condition", timeout: float = 30.0, every: float = 0.05
) -> _T:
    """Call ``check`` every ``every`` seconds until it gives a true value, and return
    that; TimeoutError once ``timeout`` seconds have passed (``check`` is called once
    more after the deadline, so a slow machine gets its last look)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:g}s for {what}")
        time.sleep(every)
