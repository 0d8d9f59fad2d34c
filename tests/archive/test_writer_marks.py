"""The write-behind never loses a change that arrives while a batch is in flight."""

from __future__ import annotations

import asyncio

from fastpaca_server.archive.writer import ArchiveWriter


def test_a_change_during_a_batch_keeps_the_context_dirty() -> None:
    async def scenario() -> None:
        writer = ArchiveWriter("postgresql://unused@127.0.0.1:1/x", lambda: None, tail_keep=10)
        writer.mark_dirty(["c"])
        [(context_id, mark)] = list(writer._dirty.items())  # the batch reads the context
        writer.mark_dirty(["c"])  # an append lands while the batch is written
        writer._clean(context_id, mark)  # the batch is done
        assert "c" in writer._dirty, "the append would wait for the next change to be archived"
        writer._clean("c", writer._dirty["c"])
        assert "c" not in writer._dirty

    asyncio.run(scenario())
