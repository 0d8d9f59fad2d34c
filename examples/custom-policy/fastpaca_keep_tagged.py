"""A custom Fastpaca window policy: keep the messages tagged important, and the newest.

Registered under the strategy name ``keep_tagged`` by this package's
``pyproject.toml``::

    [project.entry-points."fastpaca.policies"]
    keep_tagged = "fastpaca_keep_tagged:keep_tagged"

Once the window crosses its trigger, the server calls ``keep_tagged(window,
config)``. It returns the messages to keep (a subsequence of ``window``): every
message whose ``metadata.tag`` is in ``config["tags"]`` (default
``["important"]``), and the newest ``config["recent"]`` messages (default 4).
The server then puts back pinned messages, removes tool results whose call is
gone, and trims to the trigger if the window is still over it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def keep_tagged(window: Sequence[Any], config: dict[str, Any]) -> list[Any]:
    tags = set(config.get("tags", ["important"]))
    recent = int(config.get("recent", 4))
    newest = {id(message) for message in window[len(window) - recent :]} if recent else set()
    kept = []
    for message in window:
        metadata = message.metadata or {}
        if id(message) in newest or metadata.get("tag") in tags:
            kept.append(message)
    return kept
