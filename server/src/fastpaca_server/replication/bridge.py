"""Where pysyncobj's thread meets asyncio: one place, ``call_soon_threadsafe``."""

from __future__ import annotations

import asyncio
from typing import Any


def settle_from_thread(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any, error: Any
) -> None:
    """Complete ``future`` (owned by ``loop``) from another thread, exactly once."""

    def settle() -> None:
        if future.done():
            return
        future.set_result((result, error))

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:
        pass  # the loop is closed: nobody waits for this result any more
