"""``fastpaca export ID`` and ``fastpaca import FILE``: a context's history as JSON Lines.

An export is byte for byte the server's ``GET /v1/contexts/{id}/export``: one
message per line, ``seq`` 1 to the newest, each as ``GET …/messages`` returns it.
An import appends such a file's messages to a context in batches, keeping each
message's ``id``, ``role``, ``parts``, ``metadata`` and ``token_count`` (``seq``
and ``created_at`` are the server's to assign), and checks that every message
gets the seq it has in the file.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from fastpaca import APIStatusError, Context, ContextInfo, Fastpaca, NotFoundError

from ._console import Output, ProgressReporter
from ._errors import EXIT_OK, EXIT_USAGE, CLIError

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_IMPORT_BUDGET",
    "KEPT_FIELDS",
    "MAX_BATCH",
    "run_export",
    "run_import",
]

DEFAULT_BATCH = 500
MAX_BATCH = 1000
"""The server's largest append batch."""
DEFAULT_IMPORT_BUDGET = 128_000
"""The token budget of a context an import creates when ``--budget`` is not given."""
KEPT_FIELDS = ("id", "role", "parts", "metadata", "token_count")
"""What an import sends of each exported message (``seq``, ``created_at`` are assigned)."""


# ---------------------------------------------------------------------------- export


def run_export(args: argparse.Namespace, client: Fastpaca, output: Output) -> int:
    context_id: str = args.id
    target: str | None = args.output
    ctx = client.context(context_id)
    info = ctx.get()  # a missing context fails here, before any file is touched
    enabled = output.progress_wanted(args.progress) and info.last_seq > 0
    with output.progress(enabled, f"export {context_id}", info.last_seq) as progress:
        if target is None or target == "-":
            _export_to(ctx, output.write_bytes, progress)
            output.flush()
        else:
            _export_to_file(ctx, Path(target), progress)
    return EXIT_OK


def _export_to(ctx: Context, write: Callable[[bytes], Any], progress: ProgressReporter) -> None:
    for line in ctx.export_lines():
        write((line + "\n").encode("utf-8"))
        progress.advance()


def _export_to_file(ctx: Context, target: Path, progress: ProgressReporter) -> None:
    """Write next to ``target`` and rename once complete: a failed export leaves no half
    file behind (and an older file of the same name untouched)."""
    directory = target.parent if str(target.parent) else Path(".")
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=directory)
    try:
        with os.fdopen(handle, "wb") as file:
            _export_to(ctx, file.write, progress)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


# ---------------------------------------------------------------------------- import


@dataclass(frozen=True)
class Line:
    """One message of an export file."""

    number: int
    """Its line number in the file."""
    seq: int
    body: dict[str, Any]
    """The message as it is appended (:data:`KEPT_FIELDS`)."""


def _invalid(where: str, number: int, why: str) -> CLIError:
    return CLIError(f"{where}, line {number}: {why}", code="invalid_file")


def read_lines(stream: Iterable[bytes], where: str) -> Iterator[Line]:
    """The messages of an export file, checked: JSON objects with ``role`` and ``parts``,
    ``seq`` 1, 2, 3, … in order (empty lines are skipped)."""
    expected = 1
    for number, raw in enumerate(stream, 1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except ValueError as error:
            raise _invalid(where, number, f"not JSON ({error})") from None
        if not isinstance(value, dict):
            raise _invalid(where, number, "not a JSON object")
        seq = value.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise _invalid(where, number, "no integer seq (is this an export file?)")
        if seq != expected:
            raise _invalid(where, number, f"seq {seq}, expected {expected} (seqs run 1, 2, 3, …)")
        if not isinstance(value.get("role"), str) or not isinstance(value.get("parts"), list):
            raise _invalid(where, number, "a message needs a role and a list of parts")
        body = {name: value[name] for name in KEPT_FIELDS if value.get(name) is not None}
        yield Line(number, seq, body)
        expected += 1


@dataclass
class ImportState:
    """Where an import stands on the server."""

    ctx: Context
    version: int
    last_seq: int


def _context_id(args: argparse.Namespace) -> str:
    given: str | None = args.context
    if given:
        return given
    path: str = args.file
    if path == "-":
        raise CLIError("importing from stdin needs --context ID", exit_status=EXIT_USAGE)
    return Path(path).stem


def _existing(ctx: Context) -> ContextInfo | None:
    try:
        return ctx.get()
    except NotFoundError:
        return None


def _idempotency_key(context_id: str, lines: list[Line]) -> str:
    """The same batch of the same file into the same context gets the same key; a
    different body under it is refused (409) instead of stored twice."""
    digest = hashlib.sha256(context_id.encode())
    for line in lines:
        digest.update(json.dumps(line.body, separators=(",", ":")).encode())
    return f"fastpaca-import-{lines[0].seq}-{lines[-1].seq}-{digest.hexdigest()[:32]}"


def _append(state: ImportState, lines: list[Line], progress: ProgressReporter) -> None:
    """Append ``lines`` as one batch (halved while the server finds the body too large),
    only at the version last seen, and check the seqs the server gave them."""
    try:
        result = state.ctx.append_many(
            [line.body for line in lines],
            if_version=state.version,
            idempotency_key=_idempotency_key(state.ctx.id, lines),
        )
    except APIStatusError as error:
        if error.status_code == 413 and len(lines) > 1:
            half = len(lines) // 2
            _append(state, lines[:half], progress)
            _append(state, lines[half:], progress)
            return
        if error.code == "version_conflict":
            raise CLIError(
                f"context {state.ctx.id!r} changed while importing (someone else wrote to it); "
                f"{state.last_seq} messages are in: rerun with --resume",
                code="version_conflict",
            ) from None
        raise
    assigned = [message.seq for message in result.messages]
    wanted = [line.seq for line in lines]
    if assigned != wanted:
        raise CLIError(
            f"the server stored seqs {assigned[0]}-{assigned[-1]} for the file's "
            f"{wanted[0]}-{wanted[-1]} (line {lines[0].number}): the context and the file "
            "disagree",
            code="seq_mismatch",
        )
    state.version, state.last_seq = result.version, result.last_seq
    progress.advance(len(lines))


def _batches(lines: Iterable[Line], size: int) -> Iterator[list[Line]]:
    batch: list[Line] = []
    for line in lines:
        batch.append(line)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _check_resume(lines: Iterable[Line], skip: int, stored_id: str | None) -> Iterator[Line]:
    """Drop the lines the context already has (seq ≤ ``skip``), checking that the
    context's newest message is the file's message of that seq."""
    reached = 0
    for line in lines:
        reached = line.seq
        if line.seq < skip:
            continue
        if line.seq == skip:
            if stored_id is not None and line.body.get("id") != stored_id:
                raise CLIError(
                    f"the context's message {skip} has id {stored_id!r}, the file's has "
                    f"{line.body.get('id')!r}: the context did not come from this file",
                    code="resume_mismatch",
                )
            continue
        yield line
    if reached < skip:
        raise CLIError(
            f"the context has {skip} messages, the file only {reached}: "
            "it did not come from this file",
            code="resume_mismatch",
        )


def _prepare(
    args: argparse.Namespace, client: Fastpaca, output: Output, context_id: str, count: int
) -> tuple[ImportState, str | None]:
    """The context to import into (created when missing), and the id of its newest
    message (to check a ``--resume`` against the file)."""
    ctx = client.context(context_id)
    info = _existing(ctx)
    budget: int | None = args.budget
    policy: str | None = args.policy
    if info is None:
        if budget is None:
            budget = DEFAULT_IMPORT_BUDGET
            output.note(
                f"creating context {context_id!r} with a budget of {budget} tokens "
                "(the default; --budget N sets another)"
            )
        else:
            output.note(f"creating context {context_id!r} with a budget of {budget} tokens")
        created = client.context(context_id, budget=budget, policy=policy)
        assert created.info is not None
        return ImportState(created, created.info.version, created.info.last_seq), None
    if info.status == "tombstoned":
        raise CLIError(
            f"context {context_id!r} is tombstoned: it takes no more messages",
            code="context_tombstoned",
        )
    if info.last_seq > 0 and not args.resume:
        raise CLIError(
            f"context {context_id!r} already has {info.last_seq} messages: import into a new "
            "context, or rerun an interrupted import with --resume",
            code="context_not_empty",
        )
    if budget is not None or policy is not None:
        output.warn(f"context {context_id!r} exists: --budget and --policy are ignored")
    stored_id = None
    if info.last_seq > 0:
        newest = ctx.messages(after_seq=info.last_seq - 1, limit=1)
        stored_id = newest[0]["id"] if newest else None
        output.note(
            f"resuming: the context has {info.last_seq} messages; importing from seq "
            f"{info.last_seq + 1}"
        )
    return ImportState(ctx, info.version, info.last_seq), stored_id


def _count_lines(path: Path) -> int:
    """Validate a whole file before anything is written; its number of messages."""
    with path.open("rb") as file:
        return sum(1 for _ in read_lines(file, str(path)))


def run_import(args: argparse.Namespace, client: Fastpaca, output: Output) -> int:
    context_id = _context_id(args)
    source: str = args.file
    size: int = args.batch
    if source == "-":
        count = -1  # unknown: stdin is read once
        where = "stdin"
    else:
        path = Path(source)
        try:
            count = _count_lines(path)
        except OSError as error:
            raise CLIError(f"cannot read {source}: {error.strerror or error}") from None
        where = str(path)
    state, stored_id = _prepare(args, client, output, context_id, count)
    first = state.last_seq
    total = max(count - first, 0) if count >= 0 else None
    enabled = output.progress_wanted(args.progress) and total != 0
    with contextlib.ExitStack() as stack:
        stream: BinaryIO = (
            sys.stdin.buffer if source == "-" else stack.enter_context(open(source, "rb"))
        )
        lines = _check_resume(read_lines(stream, where), first, stored_id)
        progress = stack.enter_context(output.progress(enabled, f"import {context_id}", total))
        for batch in _batches(lines, size):
            _append(state, batch, progress)
    imported = state.last_seq - first
    if imported == 0 and first == 0:
        output.write_data(f"nothing to import: {where} has no messages\n")
    elif imported == 0:
        output.write_data(f"nothing to import: context {context_id!r} has all {first} messages\n")
    else:
        output.write_data(
            f"imported {imported} messages into {context_id!r} (seq {first + 1}-{state.last_seq})\n"
        )
    return EXIT_OK
