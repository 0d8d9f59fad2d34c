"""Where pysyncobj's thread meets asyncio: one place, ``call_soon_threadsafe``."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


def settle_from_thread(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any, error: Any
) -> None:
    """Complete ``future`` (owned by ``loop``) from another thread, exactly once."""

    def settle() -> None:
        if future.done():
            return
        future.set_result((result, error))

    # A closed loop raises RuntimeError: nobody waits for this result any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(settle)
