"""Custom window policies from the ``fastpaca.policies`` entry point group.

A package registers a policy under the strategy name it answers to::

    [project.entry-points."fastpaca.policies"]
    keep_tagged = "my_policies:keep_tagged"

The object is a function ``(window, config) -> window``: ``window`` is the
list of window messages (``seq``, ``role``, ``token_count``, ``created_at``,
``parts``, ``metadata``, …), ``config`` the ``policy.config`` the context was
given; it returns the messages to keep, a subsequence of its input (see
docs/policies.md). It must be pure: every node of a cluster applies it, and
must get the same window, so every node needs the same version installed.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from .core.models import STRATEGIES
from .core.state import CUSTOM_POLICIES

GROUP = "fastpaca.policies"
logger = logging.getLogger(__name__)


class PolicyPluginError(Exception):
    """An entry point of ``fastpaca.policies`` cannot be used (the node refuses to start)."""


def load_policies() -> list[str]:
    """Register every installed custom policy; returns their names.

    A policy that fails to load stops the node: a node without a policy the
    others apply would build a different window from the same log.
    """
    loaded = []
    for point in entry_points(group=GROUP):
        if point.name in STRATEGIES:
            raise PolicyPluginError(
                f"custom policy {point.name!r} ({point.value}) has the name of a built-in strategy"
            )
        try:
            policy = point.load()
        except Exception as error:
            raise PolicyPluginError(
                f"custom policy {point.name!r} ({point.value}) cannot be loaded: "
                f"{type(error).__name__}: {error}"
            ) from error
        if not callable(policy):
            raise PolicyPluginError(f"custom policy {point.name!r} ({point.value}) is not callable")
        CUSTOM_POLICIES[point.name] = policy
        loaded.append(point.name)
    if loaded:
        logger.info("custom policies: %s", ", ".join(sorted(loaded)))
    return sorted(loaded)
