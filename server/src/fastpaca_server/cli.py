"""``fastpaca-server``: run one node. Every flag also reads a ``FASTPACA_*`` variable.

A flag wins over its variable. Start-up: lock the data directory, listen,
then open and replay the store in the background (``/v1`` answers 503
``not_ready`` until it is done). Anything that stops the node at start (the
data directory in use, a port in use, a corrupted journal or snapshot) ends
the process with one ``fastpaca-server: …`` line on stderr and status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import uvloop
from aiohttp import web

from . import logs
from .access import KeysFileError
from .api import create_app
from .api.keys import ACCESS, DRAIN, EVENTS, STORE
from .config import (
    DEFAULT_LATENCY_TARGET,
    DEFAULT_MAX_ARCHIVE_BACKLOG,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_INFLIGHT,
    ServerConfig,
)
from .plugins import PolicyPluginError
from .replication import DataDirectoryError, JournalCorrupted
from .replication.cluster import ClusterConfig, ClusterConfigError, check
from .replication.shards import MAX_GROUPS

PROG = "fastpaca-server"
logger = logging.getLogger("fastpaca_server")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _variable(name: str) -> str:
    return f"FASTPACA_{name}"


def _add(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    flag: str,
    name: str,
    default: str | None,
    meaning: str,
    convert: Callable[[str], Any] = str,
    *,
    secret: bool = False,
) -> None:
    """A flag whose default comes from ``FASTPACA_<name>``, else ``default``.

    The help shows the default in effect, and where it comes from; a secret
    shows only whether it is set.
    """
    variable = _variable(name)
    value = os.environ.get(variable, default)
    origin = f", from {variable}" if variable in os.environ else ""
    shown = (f"set{origin}" if value else "unset") if secret else f"{value}{origin}"
    parser.add_argument(
        flag,
        type=convert,
        default=value,  # a string default goes through ``convert`` too
        help=f"{meaning} [{variable}] (default: {shown})".replace("%", "%%"),
    )


def _flag(text: str) -> bool:
    if text.strip().lower() in _TRUE:
        return True
    if text.strip().lower() in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected 1/0, true/false, yes/no or on/off, not {text!r}")


def _choice(choices: Sequence[str]) -> Callable[[str], str]:
    def convert(text: str) -> str:
        if text.strip().lower() not in choices:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(choices)}, not {text!r}")
        return text.strip().lower()

    return convert


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Fastpaca: message logs and token-budgeted LLM windows over REST. "
        "Every flag can also be set with the FASTPACA_* variable named beside it; "
        "a flag wins over its variable.",
    )
    _add(parser, "--host", "HOST", "127.0.0.1", "address to listen on")
    _add(parser, "--port", "PORT", "4000", "port to listen on", int)
    _add(parser, "--data-dir", "DATA_DIR", "./data", "journal and snapshots (one process each)")
    _add(
        parser,
        "--api-key",
        "API_KEY",
        None,
        "require 'Authorization: Bearer KEY' on /v1 routes",
        secret=True,
    )
    _add(
        parser,
        "--keys-file",
        "KEYS_FILE",
        None,
        "JSON file of named API keys (stored as SHA-256) with tenants, scopes and per-tenant "
        "limits; read again on SIGHUP (docs/deployment.md)",
    )
    _add(
        parser,
        "--min-free-disk",
        "MIN_FREE_DISK",
        str(64 * 1024 * 1024),
        "writes get 507 insufficient_storage while the data directory's disk has fewer free "
        "bytes than this (0: never refuse)",
        int,
    )
    _add(
        parser,
        "--max-body-bytes",
        "MAX_BODY_BYTES",
        str(DEFAULT_MAX_BODY_BYTES),
        "larger request bodies get 413",
        int,
    )
    _add(
        parser,
        "--log-compaction-entries",
        "LOG_COMPACTION_ENTRIES",
        "100000",
        "snapshot and compact the Raft journal past this many entries",
        int,
    )
    _add(
        parser,
        "--submit-timeout",
        "SUBMIT_TIMEOUT",
        "10",
        "seconds to wait for a write to commit before answering 503",
        float,
    )
    _add(
        parser,
        "--request-timeout",
        "REQUEST_TIMEOUT",
        "30",
        "seconds a request may take before its response starts, else 503 deadline_exceeded "
        "(X-Request-Timeout sets it per request; 0: no deadline)",
        float,
    )
    _add(
        parser,
        "--max-inflight",
        "MAX_INFLIGHT",
        str(DEFAULT_MAX_INFLIGHT),
        "/v1 requests served at once (live feeds not counted); more get 503 overloaded "
        "with Retry-After: 1 at once (0: no limit)",
        int,
    )
    _add(
        parser,
        "--latency-target",
        "LATENCY_TARGET",
        f"{DEFAULT_LATENCY_TARGET * 1000:g}",
        "milliseconds: while the median time to answer is over it, the node serves fewer "
        "requests at once than --max-inflight (down to an eighth of it) and refuses the "
        "rest with 503 overloaded (0: the limit stays --max-inflight)",
        float,
    )
    _add(
        parser,
        "--log-format",
        "LOG_FORMAT",
        "json",
        "json (one object per line on stderr) or text",
        _choice(logs.FORMATS),
    )
    _add(
        parser,
        "--log-level",
        "LOG_LEVEL",
        "info",
        "debug (also health checks and /metrics), info, warning, error or critical",
        _choice(logs.LEVELS),
    )
    _add(
        parser,
        "--shutdown-grace",
        "SHUTDOWN_GRACE",
        "10",
        "on SIGTERM/SIGINT, seconds requests in flight get to finish before they are cancelled",
        float,
    )
    _add(
        parser,
        "--tombstone-retention",
        "TOMBSTONE_RETENTION",
        "0",
        "seconds after which a tombstoned context is purged automatically (its messages, "
        "window and metadata erased; 0: never)",
        float,
    )
    _add(
        parser,
        "--events-max-connections",
        "EVENTS_MAX_CONNECTIONS",
        "512",
        "open websocket and SSE streams on this node; more get 503",
        int,
    )
    _add(
        parser,
        "--events-heartbeat",
        "EVENTS_HEARTBEAT",
        "30",
        "seconds between stream heartbeats (websocket ping message, SSE comment)",
        float,
    )
    _add(
        parser,
        "--events-idle-timeout",
        "EVENTS_IDLE_TIMEOUT",
        "90",
        "close a websocket that sent nothing (no pong) for this many seconds",
        float,
    )
    _add(
        parser,
        "--events-queue",
        "EVENTS_QUEUE",
        "1024",
        "versions a stream may fall behind before it is closed as a slow consumer",
        int,
    )
    _add(
        parser,
        "--events-retain",
        "EVENTS_RETAIN",
        "1000",
        "versions of each context kept in memory for stream replay",
        int,
    )
    _add(
        parser,
        "--events-retain-total",
        "EVENTS_RETAIN_TOTAL",
        "100000",
        "events kept in memory for stream replay on the whole node",
        int,
    )
    cluster = parser.add_argument_group(
        "cluster",
        "run this node as one member of a Raft cluster (docs/cluster.md); without --peers "
        "the node is a cluster of one",
    )
    _add(cluster, "--node-id", "NODE_ID", "n1", "this node's name in GET /v1/cluster")
    _add(
        cluster,
        "--raft-bind",
        "RAFT_BIND",
        None,
        "host:port for Raft traffic (required with --peers)",
    )
    _add(
        cluster,
        "--peers",
        "PEERS",
        "",
        "the other members' Raft addresses, host:port,host:port (same set on every node)",
    )
    _add(
        cluster,
        "--raft-secret",
        "RAFT_SECRET",
        None,
        "shared secret encrypting Raft traffic; required unless every Raft address is loopback",
        secret=True,
    )
    _add(
        cluster,
        "--groups",
        "GROUPS",
        "1",
        "Raft groups to spread contexts over, each with its own leader and port "
        "(--raft-bind's port + group); fixed once the data directory exists",
        int,
    )
    _add(
        cluster,
        "--advertise-url",
        "ADVERTISE_URL",
        None,
        "this node's API URL as other nodes and clients reach it (default: http://HOST:PORT)",
    )
    archive = parser.add_argument_group(
        "archive", "the PostgreSQL archive (DATABASE_URL is read too, after FASTPACA_DATABASE_URL)"
    )
    _add(
        archive,
        "--database-url",
        "DATABASE_URL",
        os.environ.get("DATABASE_URL"),
        "postgresql://user:password@host:port/db: archive every message there (write-behind) "
        "and keep only the hot tail in memory",
        secret=True,
    )
    _add(
        archive,
        "--tail-keep",
        "TAIL_KEEP",
        "1000",
        "with the archive: messages of each context kept in memory (older ones are read "
        "from Postgres)",
        int,
    )
    _add(
        archive,
        "--archive-batch",
        "ARCHIVE_BATCH",
        "1000",
        "with the archive: most messages of one context written in one transaction",
        int,
    )
    _add(
        archive,
        "--max-archive-backlog",
        "MAX_ARCHIVE_BACKLOG",
        str(DEFAULT_MAX_ARCHIVE_BACKLOG),
        "with the archive: past this many messages not yet in Postgres, appends get 503 "
        "overloaded with Retry-After: 5; reads go on (0: no limit)",
        int,
    )
    summaries = parser.add_argument_group(
        "summaries", "the summarize policy (the API key is read from FASTPACA_SUMMARIZER_API_KEY)"
    )
    _add(
        summaries,
        "--summarizer-base-url",
        "SUMMARIZER_BASE_URL",
        None,
        "OpenAI-compatible API the summarize policy calls, e.g. https://api.openai.com/v1",
    )
    _add(summaries, "--summarizer-model", "SUMMARIZER_MODEL", None, "model that writes summaries")
    _add(
        summaries,
        "--summarizer-timeout",
        "SUMMARIZER_TIMEOUT",
        "30",
        "seconds a summary may take before it counts as failed",
        float,
    )
    variable = _variable("REPAIR_JOURNAL")
    try:
        repair = _flag(os.environ.get(variable, "0"))
    except argparse.ArgumentTypeError as error:
        parser.error(f"{variable}: {error}")
    origin = f", from {variable}" if variable in os.environ else ""
    parser.add_argument(
        "--repair-journal",
        action=argparse.BooleanOptionalAction,
        default=repair,
        help="if the journal is corrupted (damage with valid records after it), copy it to "
        "raft.journal.corrupt-<unix time> beside it, cut it at the damage and start; "
        f"without this the node refuses to start [{variable}=1] "
        f"(default: {'on' if repair else 'off'}{origin})",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> ServerConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.min_free_disk < 0:
        parser.error("--min-free-disk >= 0")
    if args.max_body_bytes < 1024 or args.log_compaction_entries < 2 or args.submit_timeout <= 0:
        parser.error(
            "--max-body-bytes >= 1024, --log-compaction-entries >= 2, --submit-timeout > 0"
        )
    if not 0 <= args.request_timeout < float("inf"):
        parser.error("--request-timeout >= 0 (seconds; 0: no deadline)")
    if not 0 <= args.shutdown_grace < float("inf"):
        parser.error("--shutdown-grace >= 0 (seconds)")
    if not 0 <= args.tombstone_retention < float("inf"):
        parser.error("--tombstone-retention >= 0 (seconds; 0: never)")
    events = (args.events_max_connections, args.events_queue, args.events_retain)
    if min(events) < 1 or args.events_retain_total < 0:
        parser.error(
            "--events-max-connections, --events-queue and --events-retain >= 1, "
            "--events-retain-total >= 0"
        )
    if not 0 < args.events_heartbeat < args.events_idle_timeout:
        parser.error("0 < --events-heartbeat < --events-idle-timeout")
    if bool(args.summarizer_base_url) != bool(args.summarizer_model):
        parser.error("the summarizer needs both --summarizer-base-url and --summarizer-model")
    if args.tail_keep < 0 or args.archive_batch < 1:
        parser.error("--tail-keep >= 0, --archive-batch >= 1")
    if args.max_inflight < 0 or args.max_archive_backlog < 0:
        parser.error("--max-inflight >= 0, --max-archive-backlog >= 0 (0: no limit)")
    if not 0 <= args.latency_target <= 60_000:  # also refuses nan
        parser.error("--latency-target must be between 0 and 60000 milliseconds (0: off)")
    if args.database_url and not args.database_url.startswith(("postgresql://", "postgres://")):
        parser.error("--database-url must be a postgresql:// URL")
    if args.summarizer_timeout <= 0:
        parser.error("--summarizer-timeout > 0")
    if not 1 <= args.groups <= MAX_GROUPS:
        parser.error(f"--groups must be between 1 and {MAX_GROUPS}")
    cluster = None
    peers = tuple(peer.strip() for peer in args.peers.split(",") if peer.strip())
    if peers or args.raft_bind:
        if not peers or not args.raft_bind:
            parser.error("a cluster needs both --raft-bind and --peers")
        try:
            cluster = check(
                ClusterConfig(
                    node_id=args.node_id,
                    raft_bind=args.raft_bind.strip(),
                    peers=peers,
                    secret=args.raft_secret or None,
                )
            )
        except ClusterConfigError as error:
            parser.error(str(error))
    return ServerConfig(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        api_key=args.api_key or None,
        keys_file=args.keys_file or None,
        min_free_disk=args.min_free_disk,
        max_body_bytes=args.max_body_bytes,
        log_compaction_entries=args.log_compaction_entries,
        submit_timeout=args.submit_timeout,
        shutdown_grace=args.shutdown_grace,
        repair_journal=args.repair_journal,
        events_max_connections=args.events_max_connections,
        events_heartbeat=args.events_heartbeat,
        events_idle_timeout=args.events_idle_timeout,
        events_queue=args.events_queue,
        events_retain=args.events_retain,
        events_retain_total=args.events_retain_total,
        node_id=args.node_id,
        groups=args.groups,
        cluster=cluster,
        advertise_url=args.advertise_url or None,
        database_url=args.database_url or None,
        tail_keep=args.tail_keep,
        tombstone_retention=args.tombstone_retention,
        archive_batch=args.archive_batch,
        max_archive_backlog=args.max_archive_backlog,
        summarizer_base_url=args.summarizer_base_url or None,
        summarizer_model=args.summarizer_model or None,
        summarizer_api_key=os.environ.get(_variable("SUMMARIZER_API_KEY")) or None,
        summarizer_timeout=args.summarizer_timeout,
        request_timeout=args.request_timeout,
        max_inflight=args.max_inflight,
        latency_target=args.latency_target / 1000,
        log_format=args.log_format,
        log_level=args.log_level,
    )


def _refuse(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
    return 1


def _start_failure(error: BaseException) -> str:
    """The one line that says why the node could not start."""
    if isinstance(error, JournalCorrupted):
        return (
            f"{error}. Nothing was changed. To keep the records before byte {error.offset} "
            "and drop the rest, start with --repair-journal (a copy of the damaged journal "
            "is kept beside it)"
        )
    if isinstance(error, DataDirectoryError):
        return f"{error}. Nothing was changed"
    return f"cannot open the data directory: {type(error).__name__}: {error}"


def _listen_failure(config: ServerConfig, error: OSError) -> str:
    host = f"[{config.host}]" if ":" in config.host else config.host
    if isinstance(error, socket.gaierror) or not error.errno:
        reason = error.strerror or str(error)
    else:
        reason = os.strerror(error.errno)
    reason = reason[:1].lower() + reason[1:]
    return f"cannot listen on {host}:{config.port}: {reason}"


RESPONSE_FLUSH_SECONDS = 0.5
"""After the drain, how long aiohttp waits for each connection (twice at most): by then
every request has been answered or cancelled, so this bounds only lingering connections."""
WORKER_WAIT_SECONDS = 0.5
"""After the store is closed: how long the exit waits for worker threads still busy."""
WORKER_PREFIX = "fastpaca-worker"


def _on_signal(stop: asyncio.Event, signum: int) -> None:
    """The first SIGINT/SIGTERM stops the node gracefully; a second one ends it at once."""
    if not stop.is_set():
        logger.info("%s: stopping (draining requests in flight)", signal.Signals(signum).name)
        stop.set()
        return
    # Every acknowledged write is already on disk: dying here loses nothing acknowledged.
    os.write(2, f"{PROG}: a second signal while stopping: exiting at once\n".encode())
    os._exit(1)


async def _workers_done(workers: ThreadPoolExecutor, timeout: float) -> bool:
    """Shut the worker pool down; whether its threads ended within ``timeout`` seconds.

    A cancelled request does not stop the thread doing its work (a large
    preview, window read or token count); nothing waits for that result any more.
    """
    workers.shutdown(wait=False, cancel_futures=True)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle() -> None:
        if not done.done():
            done.set_result(None)

    def join() -> None:
        workers.shutdown(wait=True)
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            loop.call_soon_threadsafe(settle)

    threading.Thread(target=join, name="join workers", daemon=True).start()
    try:
        await asyncio.wait_for(done, timeout)
    except TimeoutError:
        return False
    return True


def _exit_leaving_workers() -> None:
    """Exit now (status 0), without the interpreter's wait for busy worker threads."""
    busy = sum(1 for thread in threading.enumerate() if thread.name.startswith(WORKER_PREFIX))
    logger.warning(
        "%d worker threads are still busy with cancelled requests; exiting without them "
        "(the store is closed)",
        busy,
    )
    logging.shutdown()
    sys.stdout.flush()
    os._exit(0)


async def serve(config: ServerConfig) -> int:
    """Run the server until SIGINT/SIGTERM (status 0) or a start failure (status 1).

    On the first SIGINT/SIGTERM the node stops gracefully: it closes its
    listening socket, drains (:mod:`.api.drain`: requests in flight get
    ``--shutdown-grace`` seconds, new ones on open connections get 503
    ``shutting_down``, feeds end with ``shutting_down``), then closes the app:
    connections, the archive writer and summary jobs, the store (pysyncobj
    stopped, its Raft connections and the journal closed) and the data
    directory lock. A second signal meanwhile exits at once with status 1.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, _on_signal, stop, signum)
    # The pool of run_in_executor(None, ...): our own, so the exit can tell when it is idle.
    workers = ThreadPoolExecutor(thread_name_prefix=WORKER_PREFIX)
    loop.set_default_executor(workers)
    try:
        app = create_app(config)
    except (PolicyPluginError, KeysFileError) as error:
        return _refuse(str(error))
    loop.add_signal_handler(signal.SIGHUP, app[ACCESS].reload)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=RESPONSE_FLUSH_SECONDS)
    drained = False
    try:
        try:
            await runner.setup()  # locks the data directory, starts opening the store
        except DataDirectoryError as error:
            return _refuse(str(error))
        site = web.TCPSite(runner, config.host, config.port)
        try:
            await site.start()
        except OSError as error:
            return _refuse(_listen_failure(config, error))
        print(
            f"fastpaca listening on http://{config.host}:{config.port} "
            f"(data in {os.path.abspath(config.data_dir)})",
            flush=True,
        )
        opened = app[STORE].task
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({opened, stopping}, return_when=asyncio.FIRST_COMPLETED)
        failure = opened.exception() if opened.done() and not opened.cancelled() else None
        if failure is not None:
            stopping.cancel()
            return _refuse(_start_failure(failure))
        await stopping
        await site.stop()  # the listening socket first: new connections are refused at once
        report = await app[DRAIN].drain(config.shutdown_grace, app[EVENTS])
        logger.info("%s", report.line())
        drained = True
        return 0
    finally:
        await runner.cleanup()
        if drained and not await _workers_done(workers, WORKER_WAIT_SECONDS):
            _exit_leaving_workers()


SWITCH_INTERVAL_SECONDS = 0.001


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_args(argv)
    logs.setup(config.log_format, config.log_level, node=config.node_id)
    # A thread that wants the GIL waits up to the switch interval for it (5 ms
    # by default). The event loop competes with the Raft thread and with
    # worker threads (token counting, large windows); 1 ms keeps a small
    # request from queueing behind them for several intervals in a row.
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    # uvloop: the same asyncio API on libuv; appends at 64 connections went
    # from about 4.1k/s to 4.7k/s with it on this machine.
    sys.exit(uvloop.run(serve(config)))
