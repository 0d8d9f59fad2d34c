"""Die right after a snapshot was written, before the journal is compacted.

``python snapshot_crash.py DATA_DIR COMPACTION_ENTRIES``: runs a
:class:`ReplicatedStore` whose ``DurableJournal.deleteEntriesTo`` ends the
process (``os._exit(9)``) the first time pysyncobj calls it, i.e. after the
snapshot is on disk and its checker reported success, before the journal
entries it covers are removed. Meanwhile many writers append to one context;
each acknowledged append is printed as ``ack SEQ MESSAGE_ID`` (flushed) as
soon as ``submit`` returns, so the parent knows exactly what was promised.

``deleteEntriesTo`` first waits a moment: pysyncobj fires the callbacks of
the entries it applied in this tick *before* it compacts, and a real server's
event loop answers those requests while the Raft thread compacts. The pause
changes nothing on disk; it only lets those acknowledgements reach stdout.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from fastpaca_server.replication import DurableJournal, ReplicatedStore

from tests.durability.helpers import append_command, manual_context

CONTEXT = "snap"
WRITERS = 48
PAUSE_BEFORE_DEATH = 0.5


def say(line: str) -> None:
    # one write per line: the Raft thread and the event loop both print
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def die_instead_of_compacting(self: DurableJournal, entryTo: int) -> None:
    say(f"dying before deleteEntriesTo({entryTo}) of {len(self)} entries")
    time.sleep(PAUSE_BEFORE_DEATH)
    os._exit(9)


async def main(data_dir: str, compaction_entries: int) -> None:
    DurableJournal.deleteEntriesTo = die_instead_of_compacting  # type: ignore[method-assign]
    store = ReplicatedStore(data_dir, log_compaction_entries=compaction_entries)
    await store.wait_ready()
    await store.submit(manual_context(CONTEXT))

    async def writer(number: int) -> None:
        count = 0
        while True:
            message_id = f"w{number:02d}-{count:06d}"
            result: Any = await store.submit(append_command(CONTEXT, message_id))
            say(f"ack {result.messages[0].seq} {message_id}")
            count += 1

    await asyncio.gather(*(writer(n) for n in range(WRITERS)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
