"""Shared pieces of the durability tests: commands, server variants, HTTP state capture."""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
from fastpaca_server.core import (
    AppendMessages,
    Command,
    ContextConfig,
    MessageInput,
    Policy,
    PutContext,
    command_to_json,
)
from fastpaca_server.replication.journal import DurableJournal, Entry, read_entries
from fastpaca_server.replication.node import JOURNAL_FILE
from pysyncobj.syncobj import _COMMAND_TYPE

from tests.support.server import REPO, ServerProcess

HERE = Path(__file__).resolve().parent


def script_env() -> dict[str, str]:
    """Environment for our subprocess scripts: the repository importable, no FASTPACA_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTPACA_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def journal_entries(data_dir: Path | str) -> list[Entry]:
    """The entries of a data directory's journal, as a restart would read them."""
    entries, _, _ = read_entries(str(Path(data_dir) / JOURNAL_FILE))
    return entries


# --- commands for in-process stores -------------------------------------------


def manual_context(context_id: str) -> PutContext:
    """A context whose window is never rewritten (cheap to apply)."""
    config = ContextConfig(token_budget=10_000_000, policy=Policy("manual", {}))
    return PutContext(context_id, int(time.time() * 1000), config, {})


def append_command(context_id: str, message_id: str, key: str | None = None) -> AppendMessages:
    """Append one text message with a unique id (and, by default, a unique key)."""
    return AppendMessages(
        context_id=context_id,
        at=int(time.time() * 1000),
        messages=[
            MessageInput(
                id=message_id,
                role="user",
                parts=[{"type": "text", "text": f"payload of {message_id}"}],
                metadata=None,
                token_count=5,
                part_tokens=[5],
            )
        ],
        tokenizer="o200k_base",
        idempotency_key=f"key-{message_id}" if key is None else key,
    )


def raft_entry(command: Command) -> bytes:
    """``command`` as pysyncobj journals a call of ``_RaftNode.apply_command``.

    A REGULAR command type byte, then the pickled ``(method id, args)``; the
    method id is 0 because ``apply_command`` is the node's only replicated
    method. The payload is the canonical JSON that ``ReplicatedStore.submit``
    proposes.
    """
    payload = json.dumps(command_to_json(command), separators=(",", ":"), ensure_ascii=False)
    return bytes([_COMMAND_TYPE.REGULAR]) + pickle.dumps((0, (payload,)))


def write_journal(data_dir: Path | str, commands: Iterable[Command]) -> int:
    """A fresh data directory's journal holding ``commands``; returns how many.

    Laid out as a one-member node writes it: pysyncobj's no-op at index 1
    (term 0), then one entry per command in term 1. No commit index is
    stored, so a node that opens it replays everything once it leads.
    """
    os.makedirs(data_dir, exist_ok=True)
    journal = DurableJournal(str(Path(data_dir) / JOURNAL_FILE))
    journal.add(bytes([_COMMAND_TYPE.NO_OP]), 1, 0)
    count = 0
    for count, command in enumerate(commands, start=1):
        journal.add(raft_entry(command), 1 + count, 1)
    journal._destroy()
    return count


# --- server processes -----------------------------------------------------------


class VariantServer(ServerProcess):
    """The real server, started through ``variant_server.py`` with ``patches`` applied."""

    def __init__(self, data_dir: Path | str, *args: str, patches: list[str]) -> None:
        super().__init__(data_dir, *args)
        self.patches = patches

    def launch(self) -> VariantServer:
        command = [sys.executable, str(HERE / "variant_server.py")]
        for name in self.patches:
            command += ["--patch", name]
        command += [
            "--",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            *self.args,
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self._log_start = log.tell()
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=script_env()
        )
        log.close()
        return self


# --- HTTP ------------------------------------------------------------------------


def text_message(message_id: str, text: str, role: str = "user") -> dict[str, Any]:
    return {"id": message_id, "role": role, "parts": [{"type": "text", "text": text}]}


def read_log(client: httpx.Client, context_id: str) -> list[dict[str, Any]]:
    """The whole message log of a context, paged through ``/messages`` ([] if it is gone)."""
    messages: list[dict[str, Any]] = []
    while True:
        response = client.get(
            f"/v1/contexts/{context_id}/messages",
            params={"after_seq": len(messages), "limit": 1000},
        )
        if response.status_code == 404 and not messages:
            return []
        assert response.status_code == 200, response.text
        page = response.json()
        messages += page["messages"]
        if not page["has_more"]:
            return messages


def capture_state(client: httpx.Client, context_ids: list[str]) -> dict[str, Any]:
    """Everything a client can read about ``context_ids``: contexts, logs, windows, tails."""
    state: dict[str, Any] = {}
    for context_id in context_ids:
        base = f"/v1/contexts/{context_id}"
        context = client.get(base)
        window = client.get(f"{base}/context")
        small_window = client.get(f"{base}/context", params={"budget_tokens": 200})
        tail = client.get(f"{base}/tail", params={"offset": 3, "limit": 40})
        state[context_id] = {
            "context": (context.status_code, context.json()),
            "log": read_log(client, context_id),
            "window": (window.status_code, window.json()),
            "small_window": (small_window.status_code, small_window.json()),
            "tail": (tail.status_code, tail.json()),
        }
    return state


# --- concurrent appends with a history of what was acknowledged ---------------------


class Attempt:
    """One append request (retried with the same idempotency key until acknowledged)."""

    def __init__(self, key: str, context_id: str) -> None:
        self.key = key
        self.context_id = context_id
        self.message_id = f"msg-{key}"
        self.body: dict[str, Any] = {
            "message": text_message(self.message_id, f"text of {key} ✓ " + "x" * (len(key) * 7)),
            "idempotency_key": key,
        }
        self.ack: dict[str, Any] | None = None  # the first 201 body
        self.tries = 0

    @property
    def acked_seq(self) -> int | None:
        return None if self.ack is None else int(self.ack["messages"][0]["seq"])


class AppendWorkload:
    """Threads appending to ``context_ids`` with unique keys while the server comes and goes.

    A failed request (connection refused or reset, timeout, 503) is retried with
    the same key until it is acknowledged or the workload stops; a refusal (any
    other 4xx) is recorded as an error. Given several servers (the nodes of a
    cluster), each thread starts on its own and moves to the next after a
    failure.
    """

    def __init__(
        self, server: ServerProcess | list[ServerProcess], context_ids: list[str], threads: int
    ) -> None:
        self.servers = server if isinstance(server, list) else [server]
        self.context_ids = context_ids
        self.attempts: list[Attempt] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)
        ]

    def start(self) -> AppendWorkload:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
            assert not thread.is_alive()

    def acknowledged(self) -> int:
        with self._lock:
            return sum(1 for attempt in self.attempts if attempt.ack is not None)

    def _run(self, number: int) -> None:
        clients = [httpx.Client(base_url=server.url, timeout=10) for server in self.servers]
        try:
            self._append(number, clients)
        finally:
            for client in clients:
                client.close()

    def _append(self, number: int, clients: list[httpx.Client]) -> None:
        current = number % len(clients)
        count = 0
        while not self._stop.is_set():
            key = f"t{number}-{count:05d}"
            attempt = Attempt(key, self.context_ids[(number + count) % len(self.context_ids)])
            with self._lock:
                self.attempts.append(attempt)
            count += 1
            sent = self._send(attempt, clients, current)
            if sent is None:
                return
            current = sent

    def _send(self, attempt: Attempt, clients: list[httpx.Client], current: int) -> int | None:
        """Send ``attempt`` until it is acknowledged, refused for good (an error) or the
        workload stops, starting on ``clients[current]``; the client to go on with (the
        next one after a failure), ``None`` to end the thread."""
        while not self._stop.is_set():
            attempt.tries += 1
            client = clients[current]
            try:
                response = client.post(
                    f"/v1/contexts/{attempt.context_id}/messages", json=attempt.body
                )
            except httpx.HTTPError:
                current = (current + 1) % len(clients)
                time.sleep(0.02)
                continue
            if response.status_code == 201:
                attempt.ack = response.json()
                break
            if response.status_code != 503:
                self.errors.append(f"{attempt.key}: {response.status_code} {response.text}")
                break
            current = (current + 1) % len(clients)
            time.sleep(0.02)
        return current


def check_history(client: httpx.Client, workload: AppendWorkload) -> list[str]:
    """Problems with the stored logs against what was acknowledged (empty: all good).

    Every acknowledged append is stored exactly once, at its acknowledged seq,
    with identical content; seqs are gap-free; nothing was stored that no
    request asked for.
    """
    problems: list[str] = []
    stored: dict[str, tuple[str, dict[str, Any]]] = {}
    for context_id in workload.context_ids:
        if client.get(f"/v1/contexts/{context_id}").status_code != 200:
            problems.append(f"context {context_id} is lost")
        log = read_log(client, context_id)
        seqs = [message["seq"] for message in log]
        if seqs != list(range(1, len(log) + 1)):
            problems.append(f"{context_id}: seqs are not 1..{len(log)}")
        for message in log:
            if message["id"] in stored:
                problems.append(f"{message['id']} is stored twice")
            stored[message["id"]] = (context_id, message)
    attempts = {attempt.message_id: attempt for attempt in workload.attempts}
    for message_id in stored:
        if message_id not in attempts:
            problems.append(f"{message_id} is stored but was never sent")
    for attempt in workload.attempts:
        if attempt.ack is None:
            continue
        found = stored.get(attempt.message_id)
        if found is None:
            problems.append(f"acknowledged {attempt.key} (seq {attempt.acked_seq}) is lost")
            continue
        context_id, message = found
        sent = attempt.body["message"]
        if (
            context_id != attempt.context_id
            or message["seq"] != attempt.acked_seq
            or message["role"] != sent["role"]
            or message["parts"] != sent["parts"]
        ):
            problems.append(
                f"acknowledged {attempt.key} at {attempt.context_id}#{attempt.acked_seq} "
                f"is stored as {context_id}#{message['seq']} {message['parts']}"
            )
    return problems


# --- stopping a node (SIGTERM) ---------------------------------------------------------

RETRY_TRIES = 2000
"""Tries of one append by :class:`RetryingWriters` (20 ms apart: longer than a restart)."""
RETRYABLE = {
    "503 shutting_down",
    "503 not_ready",
    "503 unavailable",
    "ConnectError",
    "RemoteProtocolError",
    "ReadError",
    "WriteError",
}
"""The failures a writer may see around a stop (each retried with the same key)."""
DRAINED = re.compile(
    r"drained in [\d.]+ s: (\d+) in-flight requests finished, (\d+) cancelled "
    r"\((\d+) event feeds ended, (\d+) new requests refused"
)


def sigterm(server: ServerProcess) -> float:
    assert server.process is not None
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    return started


def wait_exit(server: ServerProcess, started: float, limit: float) -> tuple[int, float]:
    """The exit status and the seconds from ``started``; fails if that exceeds ``limit``."""
    assert server.process is not None
    try:
        status = server.process.wait(max(0.1, started + limit - time.monotonic()))
    except subprocess.TimeoutExpired:
        server.kill9()
        raise AssertionError(f"still running {limit:g} s after SIGTERM: {server.log()}") from None
    return status, time.monotonic() - started


def drained(server: ServerProcess) -> dict[str, int]:
    """The numbers of the process's one ``drained …`` line."""
    lines = DRAINED.findall(server.output())
    assert len(lines) == 1, server.output()[-3000:]
    finished, cancelled, feeds, refused = (int(value) for value in lines[0])
    return {"finished": finished, "cancelled": cancelled, "feeds": feeds, "refused": refused}


class RetryingWriters(AppendWorkload):
    """Appends with unique keys, each retried with its key until acknowledged (on the
    next node, given several); every failure is classified, and anything that is not
    retryable is an error."""

    def __init__(
        self, server: ServerProcess | list[ServerProcess], context_ids: list[str], threads: int
    ) -> None:
        super().__init__(server, context_ids, threads)
        self.seen: Counter[str] = Counter()

    def _send(self, attempt: Attempt, clients: list[httpx.Client], current: int) -> int | None:
        key = attempt.key
        for _ in range(RETRY_TRIES):
            if self._stop.is_set():
                break
            attempt.tries += 1
            client = clients[current]
            try:
                response = client.post(
                    f"/v1/contexts/{attempt.context_id}/messages", json=attempt.body
                )
            except httpx.TimeoutException as error:
                self.errors.append(f"{key}: no answer (a hang): {error!r}")
                return None
            except httpx.TransportError as error:
                self._saw(type(error).__name__)
                current = (current + 1) % len(clients)
                time.sleep(0.02)
                continue
            if response.status_code == 201:
                attempt.ack = response.json()
                break
            code = response.json().get("error") if response.content else None
            if response.status_code == 503 and response.headers.get("Retry-After"):
                self._saw(f"503 {code}")
                current = (current + 1) % len(clients)
                time.sleep(0.02)
                continue
            self.errors.append(f"{key}: {response.status_code} {response.text[:300]}")
            return None
        return current

    def _saw(self, what: str) -> None:
        with self._lock:
            self.seen[what] += 1


def wait_for_acknowledgements(workload: AppendWorkload, count: int) -> None:
    deadline = time.monotonic() + 30
    while workload.acknowledged() < count:
        assert time.monotonic() < deadline, f"fewer than {count} appends acknowledged"
        assert not workload.errors, workload.errors[:5]
        time.sleep(0.01)
