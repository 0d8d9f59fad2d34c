"""Where pysyncobj's thread meets asyncio: one place, ``call_soon_threadsafe``."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

_T = TypeVar("_T")


def settle_all_from_thread(
    loop: asyncio.AbstractEventLoop, outcomes: list[tuple[asyncio.Future[Any], Any, Any]]
) -> None:
    """Complete each ``(future, result, error)`` from another thread: one wake-up for all."""

    def settle() -> None:
        for future, result, error in outcomes:
            if not future.done():
                future.set_result((result, error))

    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(settle)


class ThreadToLoopQueue(Generic[_T]):
    """Items put on any thread, handed in order to ``consume`` on ``loop``'s thread.

    :meth:`put` never blocks on the consumer (the Raft thread calls it): it
    appends under a short lock and wakes the loop only when no hand-over is
    already scheduled, so a burst of items costs one ``call_soon_threadsafe``.
    Items put before a callback scheduled with ``call_soon_threadsafe`` on the
    same thread are consumed before that callback runs (the loop runs its
    callbacks first in, first out).
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, consume: Callable[[list[_T]], None]
    ) -> None:
        self._loop = loop
        self._consume = consume
        self._lock = threading.Lock()
        self._items: list[_T] = []
        self._scheduled = False

    def put(self, item: _T) -> None:
        with self._lock:
            self._items.append(item)
            if self._scheduled:
                return
            self._scheduled = True
        # A closed loop raises RuntimeError: the app is gone, nobody consumes.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._hand_over)

    def _hand_over(self) -> None:
        with self._lock:
            items, self._items = self._items, []
            self._scheduled = False
        self._consume(items)
