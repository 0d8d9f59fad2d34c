"""The PostgreSQL archive: every message of every context, written behind the log.

:class:`ArchiveStore` is a small layer over an ``asyncpg`` pool:

* :meth:`~ArchiveStore.write` stores a batch of messages and context rows in
  one transaction. Messages go in with one ``INSERT … SELECT … FROM unnest(…)
  ON CONFLICT DO NOTHING`` (fast for thousands of rows, and idempotent: a batch
  written twice, or by two leaders, is stored once); context rows are upserted
  only when the incoming ``version`` is at least the stored one.
* reads return each message's ``raw`` JSON exactly as it was written (a
  ``text`` column: ``jsonb`` reorders keys); ``parts``, ``metadata`` and the
  other columns are there to be queried.
* every failure to reach PostgreSQL (refused or dropped connections, server
  shutdown, timeouts, too many connections, serialisation failures) is raised
  as :class:`ArchiveUnavailable`, whose message names the host, port and
  database and never the password. The pool reconnects by itself: the same
  store works again once PostgreSQL is back, and a call that fails on a
  connection that died while idle (PostgreSQL restarted) is retried once on a
  fresh one. Retrying a write is safe (it is idempotent); its count of new rows
  may then be low.

Timestamps are milliseconds since the epoch in the API and ``timestamptz``
(UTC) in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
import attrs

from ..core.models import REDACTED_PART, redacted_raw

SCHEMA_VERSION = 1
"""The newest schema version :meth:`ArchiveStore.migrate` knows."""

MIGRATION_LOCK = 0x66617374_70616361
"""``pg_advisory_xact_lock`` key that serialises migrations ("fastpaca")."""

_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """
        CREATE TABLE messages (
            context_id text NOT NULL,
            seq bigint NOT NULL,
            id text NOT NULL,
            role text NOT NULL,
            parts jsonb NOT NULL,
            metadata jsonb,
            token_count integer NOT NULL,
            part_tokens integer[] NOT NULL,
            created_at timestamptz NOT NULL,
            raw text NOT NULL,
            inserted_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (context_id, seq)
        )
        """,
        """
        CREATE TABLE contexts (
            context_id text PRIMARY KEY,
            config jsonb NOT NULL,
            metadata jsonb NOT NULL,
            status text NOT NULL,
            version bigint NOT NULL,
            last_seq bigint NOT NULL,
            archived_seq bigint NOT NULL,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL
        )
        """,
    ),
}

_SCHEMA_TABLE = """
CREATE TABLE IF NOT EXISTS fastpaca_schema (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

_EPOCH = "TIMESTAMPTZ 'epoch' + {} * INTERVAL '1 millisecond'"
_TO_MS = "(extract(epoch FROM {}) * 1000)::bigint"

_INSERT_MESSAGES = f"""
INSERT INTO messages (context_id, seq, id, role, parts, metadata, token_count, part_tokens,
                      created_at, raw)
SELECT m.context_id, m.seq, m.id, m.role, m.parts::jsonb, m.metadata::jsonb, m.token_count,
       m.part_tokens::integer[], {_EPOCH.format("m.created_ms")}, m.raw
FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::integer[], $8::text[], $9::bigint[], $10::text[])
     AS m(context_id, seq, id, role, parts, metadata, token_count, part_tokens, created_ms, raw)
ON CONFLICT (context_id, seq) DO NOTHING
"""

_UPSERT_CONTEXTS = f"""
INSERT INTO contexts (context_id, config, metadata, status, version, last_seq, archived_seq,
                      created_at, updated_at)
SELECT c.context_id, c.config::jsonb, c.metadata::jsonb, c.status, c.version, c.last_seq,
       c.archived_seq, {_EPOCH.format("c.created_ms")}, {_EPOCH.format("c.updated_ms")}
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
            $7::bigint[], $8::bigint[], $9::bigint[])
     AS c(context_id, config, metadata, status, version, last_seq, archived_seq, created_ms,
          updated_ms)
ON CONFLICT (context_id) DO UPDATE SET
    config = EXCLUDED.config,
    metadata = EXCLUDED.metadata,
    status = EXCLUDED.status,
    version = EXCLUDED.version,
    last_seq = EXCLUDED.last_seq,
    archived_seq = EXCLUDED.archived_seq,
    created_at = EXCLUDED.created_at,
    updated_at = EXCLUDED.updated_at
WHERE contexts.version <= EXCLUDED.version
"""

_DELETE_MESSAGES = "DELETE FROM messages WHERE context_id = $1"
_LOCK_REDACTED = """
SELECT seq, raw FROM messages WHERE context_id = $1 AND seq = ANY($2::bigint[])
ORDER BY seq FOR UPDATE
"""
_UPDATE_REDACTED = """
UPDATE messages SET parts = $3::jsonb, raw = $4, token_count = $5, part_tokens = $6::integer[]
WHERE context_id = $1 AND seq = $2
"""
_REDACTED_PARTS = json.dumps([REDACTED_PART], separators=(",", ":"))

_READ_AFTER = """
SELECT raw FROM messages WHERE context_id = $1 AND seq > $2 ORDER BY seq LIMIT $3
"""
_READ_BETWEEN = """
SELECT raw FROM messages WHERE context_id = $1 AND seq > $2 AND seq < $3 ORDER BY seq LIMIT $4
"""
_READ_LAST = """
SELECT raw FROM messages WHERE context_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3
"""
_ITER_CHUNK = """
SELECT seq, raw FROM messages
WHERE context_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4
"""
_GET_CONTEXT = f"""
SELECT context_id, config::text, metadata::text, status, version, last_seq, archived_seq,
       {_TO_MS.format("created_at")}, {_TO_MS.format("updated_at")}
FROM contexts WHERE context_id = $1
"""


class ArchiveUnavailable(Exception):
    """PostgreSQL cannot be reached, or did not answer in time (try again later)."""


@attrs.frozen
class ArchivedMessage:
    """A message to archive: its rendered JSON ``raw`` (compact UTF-8, as the API
    renders it; ``seq`` must match), each part's token count and its time (ms)."""

    context_id: str
    seq: int
    raw: bytes
    part_tokens: list[int]
    created_at: int


@attrs.frozen
class ArchivedContext:
    """A context's row in the archive; times in ms since the epoch."""

    context_id: str
    config: dict[str, Any]
    metadata: dict[str, Any]
    status: str
    version: int
    last_seq: int
    archived_seq: int
    created_at: int
    updated_at: int


class _Transaction(Protocol):
    async def __aenter__(self) -> object: ...

    async def __aexit__(self, *exc_info: object) -> bool | None: ...


class _Connection(Protocol):
    """The part of ``asyncpg.Connection`` the store uses (asyncpg has no stubs)."""

    async def execute(self, query: str, *args: object) -> str: ...

    async def fetch(self, query: str, *args: object) -> list[Any]: ...

    async def fetchval(self, query: str, *args: object) -> Any: ...

    def transaction(self) -> _Transaction: ...


class _Pool(Protocol):
    """The part of ``asyncpg.Pool`` the store uses."""

    def acquire(self, *, timeout: float | None = None) -> AbstractAsyncContextManager[Any]: ...

    async def close(self) -> None: ...

    def terminate(self) -> None: ...


_T = TypeVar("_T")

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,  # 08: connection lost, refused, …
    asyncpg.exceptions.OperatorInterventionError,  # 57: shutdown, starting up, canceled
    asyncpg.exceptions.InsufficientResourcesError,  # 53: too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # 40: serialisation failure, deadlock
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,  # 28: role, password
    asyncpg.exceptions.InvalidCatalogNameError,  # 3D000: no such database
    asyncpg.exceptions.InterfaceError,  # only the bare class: see _is_unavailable
)

_STALE: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.AdminShutdownError,
    ConnectionResetError,
    BrokenPipeError,
)
"""Errors of a pooled connection that died while idle: worth one retry."""


def _is_unavailable(error: BaseException) -> bool:
    if isinstance(error, asyncpg.exceptions.InterfaceError):
        # The bare InterfaceError is "connection is closed" / "pool is closing";
        # its subclasses (DataError: a bad argument, …) are bugs, not outages.
        return type(error) is asyncpg.exceptions.InterfaceError
    return isinstance(error, _UNAVAILABLE)


def _is_stale(error: BaseException) -> bool:
    if type(error) is asyncpg.exceptions.InterfaceError:
        return "closed" in str(error) and "pool" not in str(error)
    return isinstance(error, _STALE)


def _describe(dsn: str) -> tuple[str, list[str]]:
    """``host:port/database`` for messages, and the secrets to keep out of them."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "PostgreSQL (unparsable DSN)", [dsn]
    userinfo, _, hosts = parts.netloc.rpartition("@")
    secrets: list[str] = []
    if ":" in userinfo:
        password = userinfo.split(":", 1)[1]
        secrets += [password, unquote(password)]
    for key, values in parse_qs(parts.query).items():
        if "pass" in key.lower():  # password=…, sslpassword=…, passfile=…
            secrets += values
    if parts.scheme not in ("postgres", "postgresql"):  # not a URL: key=value pairs?
        secrets += re.findall(r"pass\w*\s*=\s*'?([^\s']+)", dsn, flags=re.IGNORECASE)
    database = unquote(parts.path.lstrip("/")) or "(default database)"
    where = f"{hosts or 'localhost'}/{database}"
    return where, sorted({secret for secret in secrets if secret}, key=len, reverse=True)


def _jsonb_text(value: Any) -> str:
    """JSON text PostgreSQL's jsonb accepts: it rejects ``\\u0000`` and lone
    surrogates, which JSON (and so a message) may hold; those become U+FFFD in
    the queryable copy (``raw`` keeps the original)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if "\\u0000" in text:
        return json.dumps(_scrub(value), ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode()
    except UnicodeEncodeError:
        return json.dumps(_scrub(value), ensure_ascii=False, separators=(",", ":"))
    return text


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
"""NUL and lone surrogates (json.loads pairs up the others): PostgreSQL text rejects them."""


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    if isinstance(value, dict):
        return {_scrub(key): _scrub(item) for key, item in value.items()}
    return value


def _int_array(values: Iterable[int]) -> str:
    return "{" + ",".join(str(int(value)) for value in values) + "}"


def _message_columns(messages: Sequence[ArchivedMessage]) -> list[list[Any]]:
    columns: list[list[Any]] = [[] for _ in range(10)]
    (context_ids, seqs, ids, roles, parts, metadata, token_counts, part_tokens, created, raws) = (
        columns
    )
    for message in sorted(messages, key=lambda m: (m.context_id, m.seq)):
        where = f"archived message {message.context_id}/{message.seq}"
        try:
            raw = message.raw.decode("utf-8")
            data = json.loads(raw)
            seq = data["seq"]
            # Text columns reject NUL too: the queryable copies are scrubbed like jsonb.
            message_id, role = _scrub(str(data["id"])), _scrub(str(data["role"]))
            parts_text = _jsonb_text(data["parts"])
            meta = data.get("metadata")
            token_count = int(data["token_count"])
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{where}: not a rendered message ({error!r})") from error
        if seq != message.seq:
            raise ValueError(f"{where}: raw has seq {seq!r}")
        context_ids.append(message.context_id)
        seqs.append(message.seq)
        ids.append(message_id)
        roles.append(role)
        parts.append(parts_text)
        metadata.append(None if meta is None else _jsonb_text(meta))
        token_counts.append(token_count)
        part_tokens.append(_int_array(message.part_tokens))
        created.append(message.created_at)
        raws.append(raw)
    return columns


def _context_columns(contexts: Sequence[ArchivedContext]) -> list[list[Any]]:
    newest: dict[str, ArchivedContext] = {}
    for context in contexts:  # one row per context in a statement: the newest version
        kept = newest.get(context.context_id)
        if kept is None or context.version >= kept.version:
            newest[context.context_id] = context
    columns: list[list[Any]] = [[] for _ in range(9)]
    for context_id in sorted(newest):
        context = newest[context_id]
        values = (
            context.context_id,
            _jsonb_text(context.config),
            _jsonb_text(context.metadata),
            context.status,
            context.version,
            context.last_seq,
            context.archived_seq,
            context.created_at,
            context.updated_at,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return columns


def _inserted(status: str) -> int:
    """Rows of an ``INSERT 0 <n>`` command status."""
    return int(status.rsplit(" ", 1)[-1])


class ArchiveStore:
    """Messages and context rows in PostgreSQL over an asyncpg pool.

    Create with :meth:`open` (which checks that PostgreSQL answers), run
    :meth:`migrate` once per process, :meth:`close` when done.
    """

    def __init__(self, pool: _Pool, where: str, secrets: list[str], timeout: float) -> None:
        self._pool = pool
        self._where = where
        self._secrets = secrets
        self._timeout = timeout
        self._closed = False

    @classmethod
    async def open(
        cls, dsn: str, *, min_size: int = 1, max_size: int = 4, timeout: float = 10.0
    ) -> ArchiveStore:
        """A pool on ``dsn`` (``postgresql://user:password@host:port/database``).

        ``timeout`` (seconds) bounds connecting, waiting for a pooled connection
        and each statement. Raises :class:`ArchiveUnavailable` if PostgreSQL
        cannot be reached or refuses the connection.
        """
        where, secrets = _describe(dsn)
        try:
            pool = await asyncio.wait_for(
                asyncpg.create_pool(
                    dsn,
                    min_size=min_size,
                    max_size=max_size,
                    timeout=timeout,
                    command_timeout=timeout,
                    server_settings={"application_name": "fastpaca-archive"},
                ),
                timeout=timeout * 2,
            )
        except Exception as error:  # anything here means: no archive at this DSN
            raise ArchiveUnavailable(_message(where, secrets, error, "cannot connect")) from None
        store = cls(pool, where, secrets, timeout)
        try:
            await store._fetchval("SELECT 1")
        except BaseException:
            pool.terminate()
            raise
        return store

    async def close(self) -> None:
        """Close the pool (waits up to ``timeout`` for connections in use)."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.wait_for(self._pool.close(), self._timeout)
        except Exception:  # timed out, or PostgreSQL gone: drop the connections
            self._pool.terminate()

    # -- plumbing ----------------------------------------------------------

    def _unavailable(self, error: BaseException) -> ArchiveUnavailable:
        return ArchiveUnavailable(_message(self._where, self._secrets, error, "unavailable"))

    async def _run(self, operation: Callable[[_Connection], Awaitable[_T]]) -> _T:
        """``operation`` on a pooled connection; outages become ArchiveUnavailable."""
        if self._closed:
            raise ArchiveUnavailable(f"PostgreSQL archive at {self._where}: the store is closed")
        for attempt in (1, 2):
            try:
                async with self._pool.acquire(timeout=self._timeout) as connection:
                    return await operation(connection)
            except Exception as error:
                if not _is_unavailable(error):
                    raise
                if attempt == 1 and _is_stale(error):
                    continue  # a connection that died while idle: once more, on a new one
                raise self._unavailable(error) from None
        raise AssertionError("unreachable")

    async def _fetch(self, sql: str, *args: object) -> list[Any]:
        return await self._run(lambda connection: connection.fetch(sql, *args))

    async def _fetchval(self, sql: str, *args: object) -> Any:
        return await self._run(lambda connection: connection.fetchval(sql, *args))

    # -- schema ------------------------------------------------------------

    async def migrate(self) -> None:
        """Bring the schema to :data:`SCHEMA_VERSION`: idempotent, and safe from
        several nodes at once (a transaction-level advisory lock serialises them)."""

        async def run(connection: _Connection) -> None:
            async with connection.transaction():
                await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
                await connection.execute(_SCHEMA_TABLE)
                current = await connection.fetchval(
                    "SELECT coalesce(max(version), 0) FROM fastpaca_schema"
                )
                for version in sorted(_MIGRATIONS):
                    if version <= current:
                        continue
                    for statement in _MIGRATIONS[version]:
                        await connection.execute(statement)
                    await connection.execute(
                        "INSERT INTO fastpaca_schema (version) VALUES ($1)", version
                    )

        await self._run(run)

    async def schema_version(self) -> int:
        """The schema version applied (0: none)."""

        async def run(connection: _Connection) -> int:
            if await connection.fetchval("SELECT to_regclass('fastpaca_schema')") is None:
                return 0
            value = await connection.fetchval(
                "SELECT coalesce(max(version), 0) FROM fastpaca_schema"
            )
            return int(value)

        return await self._run(run)

    # -- writes ------------------------------------------------------------

    async def write(
        self, messages: Sequence[ArchivedMessage], contexts: Sequence[ArchivedContext] = ()
    ) -> int:
        """Store ``messages`` (those already stored are skipped) and upsert
        ``contexts`` (a row is replaced only by one of the same or a newer
        ``version``), in one transaction. Returns how many messages were new."""
        message_columns = _message_columns(messages) if messages else None
        context_columns = _context_columns(contexts) if contexts else None
        if message_columns is None and context_columns is None:
            return 0

        async def run(connection: _Connection) -> int:
            inserted = 0
            async with connection.transaction():
                if message_columns is not None:
                    inserted = _inserted(
                        await connection.execute(_INSERT_MESSAGES, *message_columns)
                    )
                if context_columns is not None:
                    await connection.execute(_UPSERT_CONTEXTS, *context_columns)
            return inserted

        return await self._run(run)

    async def purge(self, context_id: str) -> int:
        """Delete every message row of ``context_id`` (a purge; idempotent).
        Returns how many rows went."""

        async def run(connection: _Connection) -> int:
            status = await connection.execute(_DELETE_MESSAGES, context_id)
            return int(status.rsplit(" ", 1)[-1])

        return await self._run(run)

    async def redact(
        self, context_id: str, seqs: Sequence[int], token_count: int, part_tokens: Sequence[int]
    ) -> int:
        """Replace the parts of the rows at ``seqs`` by the redaction marker (``parts``,
        ``raw``, ``token_count``, ``part_tokens``), in one transaction; rows already
        redacted, or not archived yet, are left. Returns how many rows changed."""

        async def run(connection: _Connection) -> int:
            changed = 0
            async with connection.transaction():
                rows = await connection.fetch(_LOCK_REDACTED, context_id, list(seqs))
                for seq, raw in rows:
                    new = redacted_raw(raw.encode(), token_count).decode()
                    if new == raw:
                        continue
                    await connection.execute(
                        _UPDATE_REDACTED,
                        context_id,
                        seq,
                        _REDACTED_PARTS,
                        new,
                        token_count,
                        [int(count) for count in part_tokens],
                    )
                    changed += 1
            return changed

        return await self._run(run)

    # -- reads -------------------------------------------------------------

    async def read_range(
        self, context_id: str, after_seq: int, before_seq: int | None, limit: int
    ) -> list[bytes]:
        """Raw JSON of the messages with ``after_seq < seq < before_seq`` (no upper
        bound when ``before_seq`` is None), in seq order, at most ``limit``."""
        if limit <= 0:
            return []
        if before_seq is None:
            rows = await self._fetch(_READ_AFTER, context_id, after_seq, limit)
        else:
            if before_seq <= after_seq + 1:
                return []
            rows = await self._fetch(_READ_BETWEEN, context_id, after_seq, before_seq, limit)
        return [row[0].encode() for row in rows]

    async def read_last(self, context_id: str, before_seq: int, limit: int) -> list[bytes]:
        """Raw JSON of the ``limit`` messages with the highest seqs below
        ``before_seq``, oldest first (newest-first paging)."""
        if limit <= 0:
            return []
        rows = await self._fetch(_READ_LAST, context_id, before_seq, limit)
        return [row[0].encode() for row in reversed(rows)]

    async def iter_range(
        self, context_id: str, after_seq: int, until_seq: int, chunk: int = 1000
    ) -> AsyncIterator[list[bytes]]:
        """Raw JSON of the messages with ``after_seq < seq <= until_seq`` (inclusive),
        in seq order, in lists of at most ``chunk``. Keyset pagination: each chunk is
        a query of its own on a connection held only while it runs."""
        if chunk <= 0:
            raise ValueError("chunk must be positive")
        cursor = after_seq
        while cursor < until_seq:
            rows = await self._fetch(_ITER_CHUNK, context_id, cursor, until_seq, chunk)
            if not rows:
                return
            yield [row[1].encode() for row in rows]
            if len(rows) < chunk:
                return
            cursor = rows[-1][0]

    async def get_context(self, context_id: str) -> ArchivedContext | None:
        """The context's archived row, or None."""
        rows = await self._fetch(_GET_CONTEXT, context_id)
        if not rows:
            return None
        row = rows[0]
        return ArchivedContext(
            context_id=row[0],
            config=json.loads(row[1]),
            metadata=json.loads(row[2]),
            status=row[3],
            version=row[4],
            last_seq=row[5],
            archived_seq=row[6],
            created_at=row[7],
            updated_at=row[8],
        )

    async def count(self, context_id: str) -> int:
        """How many messages of the context are archived."""
        value = await self._fetchval(
            "SELECT count(*) FROM messages WHERE context_id = $1", context_id
        )
        return int(value)

    async def max_seq(self, context_id: str) -> int:
        """The highest archived seq of the context (0: none)."""
        value = await self._fetchval(
            "SELECT coalesce(max(seq), 0) FROM messages WHERE context_id = $1", context_id
        )
        return int(value)


def _message(where: str, secrets: list[str], error: BaseException, what: str) -> str:
    detail = str(error).strip() or "no detail"
    for secret in secrets:
        detail = detail.replace(secret, "***")
    if len(detail) > 300:
        detail = detail[:300] + "…"
    return f"PostgreSQL archive at {where} {what}: {type(error).__name__}: {detail}"
