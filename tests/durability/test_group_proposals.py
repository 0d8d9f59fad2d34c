"""Writes submitted together are proposed as one Raft entry and answered one by one.

One journal record and one flush for the whole group, each command still
applied on its own: a refusal (here a stale ``if_version``) fails only its
own request, the others get consecutive seqs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import attrs
import pytest
from fastpaca_server.core import AppendResult, Conflict
from fastpaca_server.replication import ReplicatedStore
from fastpaca_server.replication.node import MAX_GROUP

from tests.durability.helpers import append_command, manual_context

GROUP = 12


def test_commands_submitted_together_share_one_entry_and_keep_their_own_outcomes(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        store = ReplicatedStore(str(tmp_path), log_compaction_entries=100_000)
        try:
            await store.wait_ready()
            await store.submit(manual_context("group"))
            entries, flushes = len(store.journal), store.journal.flush_count
            commands = [append_command("group", f"g-{n}") for n in range(GROUP)]
            commands[5] = attrs.evolve(commands[5], if_version=999)  # refused on its own
            outcomes = await asyncio.gather(
                *(store.submit(command) for command in commands), return_exceptions=True
            )
            assert len(store.journal) == entries + 1  # one Raft entry for the group
            assert store.journal.flush_count == flushes + 1  # and one flush
            refused = outcomes.pop(5)
            assert isinstance(refused, Conflict) and refused.code == "version_conflict"
            assert all(isinstance(outcome, AppendResult) for outcome in outcomes)
            seqs = [outcome.messages[0].seq for outcome in outcomes]  # type: ignore[union-attr]
            assert seqs == list(range(1, GROUP))
        finally:
            store.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("size", [1, 300])
def test_a_group_never_exceeds_its_command_limit(tmp_path: Path, size: int) -> None:
    """More than MAX_GROUP commands at once become several entries, none larger."""

    async def scenario() -> None:
        store = ReplicatedStore(str(tmp_path), log_compaction_entries=100_000)
        try:
            await store.wait_ready()
            await store.submit(manual_context("many"))
            entries = len(store.journal)
            commands = [append_command("many", f"m-{n}") for n in range(size)]
            await asyncio.gather(*(store.submit(command) for command in commands))
            assert len(store.journal) - entries == -(-size // MAX_GROUP)
        finally:
            store.close()

    asyncio.run(scenario())
