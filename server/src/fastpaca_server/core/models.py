"""Value types of the core: messages, context configuration, commands, results.

Everything here is plain data (attrs classes) converted to and from JSON-like
structures with :data:`converter` (cattrs). Commands are complete values: the
node that receives a request stamps the time, generated ids, token counts and
the idempotency key into the command before it is proposed, so applying a
command never reads a clock, a random source or the environment.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from datetime import UTC, datetime
from typing import Any, Literal

import attrs
import cattrs

JSONObject = dict[str, Any]


def canonical_json(value: Any) -> bytes:
    """Compact, key-sorted UTF-8 JSON: sizes, fingerprints and digests use it."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def ordered_json(value: Any) -> bytes:
    """Compact UTF-8 JSON that keeps every object's key order (snapshots use it).

    Messages must come back byte for byte as they were sent: providers' prompt
    caches key on exact bytes, so key order is part of a message.
    """
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def content_digest(role: str, parts: list[JSONObject], metadata: JSONObject | None) -> str:
    """What identifies a message's content (key order aside): kept messages are matched by it."""
    content = {"role": role, "parts": parts, "metadata": metadata or None}
    return hashlib.sha256(canonical_json(content)).hexdigest()


STRATEGIES = (
    "last_n",
    "skip_parts",
    "budget",
    "time_window",
    "strip_tool_results",
    "pipeline",
    "summarize",
    "manual",
)
"""Built-in strategies (custom ones come from the ``fastpaca.policies`` entry points)."""
STEP_STRATEGIES = ("last_n", "skip_parts", "budget", "time_window", "strip_tool_results")
"""Strategies a ``pipeline`` may list as steps."""
TOKENIZERS = ("o200k_base", "cl100k_base")
DEFAULT_TRIGGER_RATIO = 0.7
DEFAULT_TARGET_RATIO = 0.5
"""``budget``: the share of the token budget a triggered window is trimmed down to."""
DEFAULT_LAST_N_LIMIT = 200
DEFAULT_SKIP_KINDS = ("tool", "dynamic-tool", "reasoning")
MAX_TOKEN_BUDGET = 10_000_000
MAX_POLICY_LIMIT = 100_000
MAX_AGE_SECONDS = 10 * 365 * 24 * 3600
"""``time_window``: the longest ``max_age_seconds`` (ten years)."""
DEFAULT_KEEP_TOOL_RESULTS = 3
"""``strip_tool_results``: the newest tool results that keep their output."""
DEFAULT_PLACEHOLDER = "[tool output cleared]"
MAX_PIPELINE_STEPS = 16
COMPACTION_RECORDS_PER_CONTEXT = 100
"""Compaction records each context keeps (the newest; ``compactions`` counts all)."""
PIN_SYSTEM = 1
"""``Message.pinned`` bit: a system message (pinned unless the policy says ``pin: none``)."""
PIN_FLAG = 2
"""``Message.pinned`` bit: ``metadata.pinned`` is true (always pinned)."""
IDEMPOTENCY_KEYS_PER_CONTEXT = 10_000
MAX_METADATA_BYTES = 64 * 1024

ContextStatus = Literal["active", "tombstoned", "purged"]
"""``purged``: tombstoned and erased (``DELETE …?purge=true``); the id is never reused."""
REDACTED_PART: JSONObject = {"type": "redacted"}
"""What a redacted message's parts become (``POST …/messages/{seq}/redact``)."""


def redacted_raw(raw: bytes, token_count: int) -> bytes:
    """A rendered message (``Message.raw``, an archive row's ``raw``) with its parts
    replaced by the redaction marker: the bytes :meth:`Message.redacted` renders."""
    data = json.loads(raw)
    data["parts"] = [dict(REDACTED_PART)]
    data["token_count"] = token_count
    return ordered_json(data)


def raw_seq(raw: bytes) -> int:
    """The seq of a rendered message (its JSON starts with ``{"seq":N,``)."""
    return int(raw[7 : raw.index(b",")])


@functools.lru_cache(maxsize=256)
def timestamp(ms: int) -> str:
    """Milliseconds since the epoch as an RFC 3339 UTC timestamp (pure: no clock)."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _part_ids(parts: list[JSONObject], kind: str, key: str) -> tuple[str, ...] | None:
    ids = tuple(str(p[key]) for p in parts if p.get("type") == kind and key in p)
    return ids or None


_SINGLE_COUNTS: dict[int, tuple[int]] = {}
"""Shared one-element ``part_tokens`` tuples (most messages have one part)."""


def _counts(part_tokens: list[int] | tuple[int, ...]) -> tuple[int, ...]:
    if len(part_tokens) == 1 and 0 <= part_tokens[0] < 4096:
        value = part_tokens[0]
        shared = _SINGLE_COUNTS.get(value)
        if shared is None:
            shared = _SINGLE_COUNTS[value] = (value,)
        return shared
    return tuple(part_tokens)


class Message:
    """A message as the core keeps it, in the log or in the window: the bytes it
    is rendered as, and the few facts the window rules need.

    ``raw`` is the message's JSON exactly as the API renders it (``seq``,
    ``id``, ``role``, ``parts``, ``metadata``, ``token_count``,
    ``created_at``; compact, UTF-8, key order as received). Reads join these
    bytes instead of serialising objects, a message costs its JSON plus about
    100 bytes of RAM, and a window renders to the same bytes before and after
    a restart. ``id``, ``parts`` and ``metadata`` are parsed back from ``raw``
    when asked for (compactions, skip_parts, events: never on the append or
    read path of a plain message).

    ``seq`` is ``None`` only for window messages that came from a compaction
    replacement (they are not part of the log). ``part_tokens`` holds the
    tokenizer's count for each part, so a policy that strips parts can
    recompute the message's size without a tokenizer. ``calls`` and
    ``results`` are the ids of its ``tool_call`` and ``tool_result`` parts
    (``None`` when it has none). ``pinned`` holds :data:`PIN_SYSTEM` for a system
    message and :data:`PIN_FLAG` for ``metadata.pinned: true`` (0: neither); a
    window's pin mask says which of the two keep a message from being dropped.
    Messages are immutable.
    """

    __slots__ = (
        "_part_tokens",
        "calls",
        "created_at",
        "pinned",
        "raw",
        "results",
        "role",
        "seq",
        "token_count",
    )

    seq: int | None
    token_count: int
    created_at: int
    role: str
    raw: bytes
    pinned: int
    calls: tuple[str, ...] | None
    results: tuple[str, ...] | None
    _part_tokens: tuple[int, ...]

    def __init__(
        self,
        *,
        seq: int | None,
        id: str,
        role: str,
        parts: list[JSONObject],
        metadata: JSONObject | None,
        token_count: int,
        part_tokens: list[int] | tuple[int, ...],
        created_at: int,
    ) -> None:
        rendered = {
            "seq": seq,
            "id": id,
            "role": role,
            "parts": parts,
            "metadata": metadata,
            "token_count": token_count,
            "created_at": timestamp(created_at),
        }
        self._set(ordered_json(rendered), seq, token_count, created_at, role, part_tokens)
        self._derive(parts, metadata)

    def _set(
        self,
        raw: bytes,
        seq: int | None,
        token_count: int,
        created_at: int,
        role: str,
        part_tokens: list[int] | tuple[int, ...],
    ) -> None:
        setter = object.__setattr__
        setter(self, "raw", raw)
        setter(self, "seq", seq)
        setter(self, "token_count", token_count)
        setter(self, "created_at", created_at)
        setter(self, "role", sys.intern(role))
        setter(self, "_part_tokens", _counts(part_tokens))

    def _derive(self, parts: list[JSONObject], metadata: JSONObject | None) -> None:
        setter = object.__setattr__
        pinned = PIN_SYSTEM if self.role == "system" else 0
        if metadata is not None and metadata.get("pinned") is True:
            pinned |= PIN_FLAG
        if parts == [REDACTED_PART]:
            pinned = 0  # an erased message holds nothing worth keeping in the window
        setter(self, "pinned", pinned)
        setter(self, "calls", _part_ids(parts, "tool_call", "id"))
        setter(self, "results", _part_ids(parts, "tool_result", "tool_call_id"))

    @classmethod
    def from_raw(
        cls, raw: bytes, part_tokens: list[int] | tuple[int, ...], created_at: int
    ) -> Message:
        """A message from its rendered bytes (a snapshot): parsed once for the window facts."""
        data = json.loads(raw)
        message = cls.__new__(cls)
        message._set(raw, data["seq"], data["token_count"], created_at, data["role"], part_tokens)
        message._derive(data["parts"], data["metadata"])
        return message

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Message is immutable (cannot set {name!r})")

    def _data(self) -> JSONObject:
        data: JSONObject = json.loads(self.raw)
        return data

    @property
    def id(self) -> str:
        value: str = self._data()["id"]
        return value

    @property
    def parts(self) -> list[JSONObject]:
        value: list[JSONObject] = self._data()["parts"]
        return value

    @property
    def metadata(self) -> JSONObject | None:
        value: JSONObject | None = self._data()["metadata"]
        return value

    @property
    def part_tokens(self) -> list[int]:
        return list(self._part_tokens)

    def to_json(self) -> JSONObject:
        """The message as the API renders it (a new object each call)."""
        return self._data()

    def with_parts(self, keep: list[int]) -> Message:
        """This message with only the parts at ``keep`` (its token count reduced by
        the removed parts' counts); same seq, id, role, metadata and time."""
        data = self._data()
        counts = self._part_tokens
        kept = set(keep)
        removed = sum(counts[i] for i in range(len(counts)) if i not in kept)
        return Message(
            seq=self.seq,
            id=data["id"],
            role=self.role,
            parts=[data["parts"][i] for i in keep],
            metadata=data["metadata"],
            token_count=max(0, self.token_count - removed),
            part_tokens=[counts[i] for i in keep],
            created_at=self.created_at,
        )

    def with_replaced(self, replaced: dict[int, tuple[JSONObject, int]]) -> Message:
        """This message with the parts at the keys of ``replaced`` swapped for the
        given ``(part, token count)`` (its total adjusted by the difference)."""
        data = self._data()
        parts = list(data["parts"])
        counts = list(self._part_tokens)
        total = self.token_count
        for index, (part, tokens) in replaced.items():
            total += tokens - counts[index]
            parts[index] = part
            counts[index] = tokens
        return Message(
            seq=self.seq,
            id=data["id"],
            role=self.role,
            parts=parts,
            metadata=data["metadata"],
            token_count=max(0, total),
            part_tokens=counts,
            created_at=self.created_at,
        )

    @property
    def is_redacted(self) -> bool:
        """Whether this message's parts are the redaction marker."""
        return b'"parts":[{"type":"redacted"}]' in self.raw and self.parts == [REDACTED_PART]

    def redacted(self, token_count: int, part_tokens: list[int]) -> Message:
        """This message with its parts replaced by the redaction marker (same seq, id,
        role, metadata and time; ``token_count`` and ``part_tokens`` the marker's)."""
        data = self._data()
        return Message(
            seq=self.seq,
            id=data["id"],
            role=self.role,
            parts=[dict(REDACTED_PART)],
            metadata=data["metadata"],
            token_count=token_count,
            part_tokens=part_tokens,
            created_at=self.created_at,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self.raw == other.raw and self._part_tokens == other._part_tokens

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Message({self.raw.decode()}, part_tokens={list(self._part_tokens)})"


@attrs.frozen
class MessageInput:
    """A message ready to be stored: validated, with its tokens counted."""

    id: str
    role: str
    parts: list[JSONObject]
    metadata: JSONObject | None
    token_count: int
    part_tokens: list[int]

    def stored(self, seq: int | None, at: int) -> Message:
        """The :class:`Message` kept for this input at ``seq`` (``None``: a replacement)."""
        return Message(
            seq=seq,
            id=self.id,
            role=self.role,
            parts=self.parts,
            metadata=self.metadata,
            token_count=self.token_count,
            part_tokens=self.part_tokens,
            created_at=at,
        )


@attrs.frozen
class KeptMessage:
    """A replacement entry that keeps a log message (sent back with its ``seq``).

    ``digest`` is :func:`content_digest` of what the client sent, so applying
    the compaction can check that the client kept the message it thinks it
    kept (the window's version of it, or the log's).
    """

    seq: int
    digest: str
    id: str | None = None


@attrs.frozen
class Policy:
    """A window policy: ``strategy`` plus its ``config`` (validated per strategy)."""

    strategy: str = "last_n"
    config: JSONObject = attrs.field(factory=lambda: {"limit": DEFAULT_LAST_N_LIMIT})


@attrs.frozen
class ContextConfig:
    token_budget: int
    trigger_ratio: float = DEFAULT_TRIGGER_RATIO
    policy: Policy = attrs.field(factory=Policy)
    tokenizer: str = "o200k_base"


# --- commands -------------------------------------------------------------


@attrs.frozen
class PutContext:
    """Create a context, or replace the config (and metadata, when given) of one."""

    context_id: str
    at: int
    config: ContextConfig
    metadata: JSONObject | None = None
    kind: Literal["put_context"] = "put_context"


@attrs.frozen
class AppendMessages:
    """Append one message or an atomic batch."""

    context_id: str
    at: int
    messages: list[MessageInput]
    tokenizer: str
    idempotency_key: str | None = None
    fingerprint: str | None = None
    if_version: int | None = None
    kind: Literal["append_messages"] = "append_messages"


@attrs.frozen
class Compact:
    """Replace the LLM window wholesale; the log is untouched."""

    context_id: str
    at: int
    replacement: list[MessageInput | KeptMessage]
    tokenizer: str
    idempotency_key: str | None = None
    fingerprint: str | None = None
    if_version: int | None = None
    kind: Literal["compact"] = "compact"


@attrs.frozen
class PatchMetadata:
    """Merge metadata (JSON merge patch: ``null`` removes a key)."""

    context_id: str
    at: int
    patch: JSONObject
    if_version: int | None = None
    kind: Literal["patch_metadata"] = "patch_metadata"


@attrs.frozen
class Tombstone:
    """Tombstone a context: history stays readable, appends are refused."""

    context_id: str
    at: int
    kind: Literal["tombstone"] = "tombstone"


@attrs.frozen
class Purge:
    """Tombstone a context and erase it: every message, the window, the metadata and
    the compaction records go; the id, the counters, the config and a purge record
    (``at``, ``by``: the API key's name, ``retention``, or ``None``) stay."""

    context_id: str
    at: int
    by: str | None = None
    kind: Literal["purge"] = "purge"


@attrs.frozen
class Redact:
    """Replace the parts of message ``seq`` by the redaction marker.

    ``token_count`` and ``part_tokens`` are the marker's counts with the context's
    tokenizer (stamped by the API). ``archived_tokens`` is the message's token
    count read from the archive when it is no longer in the hot tail (the core
    cannot read it), so the tokens stored stay exact.
    """

    context_id: str
    at: int
    seq: int
    token_count: int
    part_tokens: list[int]
    archived_tokens: int | None = None
    kind: Literal["redact"] = "redact"


@attrs.frozen
class Summarize:
    """The outcome of a leader's summary job: a new summary, or why there is none.

    With ``summary``, the window's units that begin at or before ``to_seq``
    (and the previous summary) leave the window and the summary takes their
    place, after the pinned messages that stay. ``base`` is the context's
    compaction count when the job read the window: if any compaction ran
    since, the summary is stale and refused. With ``error`` instead, only the
    failure is recorded (the budget fallback keeps the window in budget).
    """

    context_id: str
    at: int
    base: int
    to_seq: int
    summary: MessageInput | None = None
    error: str | None = None
    kind: Literal["summarize"] = "summarize"


@attrs.frozen
class MarkArchived:
    """The archive holds every message of the context up to ``archived_seq``.

    The leader proposes it after a batch landed in Postgres. The watermark only
    rises, and the hot tail in memory is trimmed to the newest ``tail_keep``
    messages, never below the watermark. It changes no version: the log, the
    window and the config are what they were.
    """

    context_id: str
    archived_seq: int
    tail_keep: int
    kind: Literal["mark_archived"] = "mark_archived"


Command = (
    PutContext
    | AppendMessages
    | Compact
    | PatchMetadata
    | Tombstone
    | Summarize
    | MarkArchived
    | Purge
    | Redact
)


@attrs.frozen
class PutMember:
    """Record a cluster member's id and addresses (not a context command).

    Each node proposes its own record once it has joined, so every node can
    name the leader and reach its peers' APIs (``GET /v1/cluster``).
    """

    node_id: str
    raft_address: str
    http_url: str
    kind: Literal["put_member"] = "put_member"


# --- results --------------------------------------------------------------


@attrs.frozen
class AppendedMessage:
    seq: int
    id: str
    token_count: int
    created_at: int


@attrs.frozen
class AppendResult:
    """What an append answers. ``replayed`` is true when an idempotency key matched."""

    version: int
    last_seq: int
    messages: list[AppendedMessage]
    used_tokens: int
    needs_compaction: bool
    replayed: bool = False
    window_messages: int = attrs.field(default=0, eq=False)
    """Messages in the window after the append (for metrics; not part of the
    answer, and 0 on a replay, which is rebuilt from the log)."""
    compaction: JSONObject | None = attrs.field(default=None, eq=False)
    """The record of the compaction this append set off (events; not part of the answer)."""
    archived: int = attrs.field(default=0, eq=False)
    """A replay whose first ``archived`` messages left the hot tail: the API reads them
    from the archive (``messages`` holds the rest)."""


@attrs.frozen
class CompactResult:
    version: int
    used_tokens: int
    needs_compaction: bool
    message_count: int
    replayed: bool = False
    compaction: JSONObject | None = attrs.field(default=None, eq=False)
    """The compaction's record (for events; not part of the answer)."""


@attrs.frozen
class SummarizeResult:
    """What a :class:`Summarize` did: ``applied`` (the window changed), ``stale``
    (a compaction ran since the job read the window) or ``failed`` (recorded)."""

    version: int
    outcome: Literal["applied", "stale", "failed"]
    used_tokens: int
    needs_compaction: bool
    last_seq: int
    compaction: JSONObject | None = attrs.field(default=None, eq=False)


converter = cattrs.Converter(forbid_extra_keys=True)


def command_to_json(command: Command) -> JSONObject:
    """A command as JSON-ready data (appends, the hot path, without cattrs' generic walk)."""
    if isinstance(command, AppendMessages):
        return {
            "context_id": command.context_id,
            "at": command.at,
            "messages": [
                {
                    "id": m.id,
                    "role": m.role,
                    "parts": m.parts,
                    "metadata": m.metadata,
                    "token_count": m.token_count,
                    "part_tokens": m.part_tokens,
                }
                for m in command.messages
            ],
            "tokenizer": command.tokenizer,
            "idempotency_key": command.idempotency_key,
            "fingerprint": command.fingerprint,
            "if_version": command.if_version,
            "kind": command.kind,
        }
    data: JSONObject = converter.unstructure(command)
    return data


_APPEND_FIELDS = frozenset(attrs.fields_dict(AppendMessages))
_INPUT_FIELDS = frozenset(attrs.fields_dict(MessageInput))


def command_from_json(data: JSONObject) -> Command:
    """The command ``data`` holds (appends without cattrs' generic walk; the
    journal holds only what :func:`command_to_json` wrote)."""
    if data.get("kind") == "append_messages" and data.keys() == _APPEND_FIELDS:
        messages = data["messages"]
        if all(type(m) is dict and m.keys() == _INPUT_FIELDS for m in messages):
            return AppendMessages(
                context_id=data["context_id"],
                at=data["at"],
                messages=[MessageInput(**m) for m in messages],
                tokenizer=data["tokenizer"],
                idempotency_key=data["idempotency_key"],
                fingerprint=data["fingerprint"],
                if_version=data["if_version"],
            )
    kinds: dict[str, type[Command]] = {
        "put_context": PutContext,
        "append_messages": AppendMessages,
        "compact": Compact,
        "patch_metadata": PatchMetadata,
        "tombstone": Tombstone,
        "summarize": Summarize,
        "mark_archived": MarkArchived,
        "purge": Purge,
        "redact": Redact,
    }
    command_type = kinds[data["kind"]]
    return converter.structure(data, command_type)
