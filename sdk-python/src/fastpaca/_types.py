"""The shapes the API sends and returns, as in ``spec/openapi.yaml``.

Messages stay plain dicts (UIMessage-shaped, key order kept) so that a window
goes to a model, or back to ``compact``, exactly as it was read. Results are
frozen dataclasses with the spec's field names; unknown fields a newer server
adds are ignored. ``tests/sdk/test_spec_drift.py`` compares all of this with the
spec.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict, get_args

__all__ = [
    "ERROR_CODES",
    "STRATEGIES",
    "TOKENIZERS",
    "AnthropicWindow",
    "AppendResult",
    "AppendedMessage",
    "CompactResult",
    "CompactionAction",
    "CompactionPage",
    "CompactionRecord",
    "ContextInfo",
    "DroppedRun",
    "ErrorCode",
    "Event",
    "LastCompaction",
    "Message",
    "MessageInput",
    "MessagePage",
    "OpenAIWindow",
    "Part",
    "Pin",
    "Policy",
    "Preview",
    "PreviewConfig",
    "RefusedMessage",
    "Segment",
    "SeqRange",
    "StoredMessage",
    "Strategy",
    "TokenBreakdown",
    "Tokenizer",
    "Window",
    "WindowFormat",
]

Strategy = Literal[
    "last_n",
    "skip_parts",
    "budget",
    "time_window",
    "strip_tool_results",
    "pipeline",
    "summarize",
    "manual",
]
"""The server's built-in window policies (``policy.strategy``). Any other name is a
custom policy installed on the server (the ``fastpaca.policies`` entry points)."""
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)

Pin = Literal["system", "none"]
"""``policy.config.pin``: ``system`` (the default) keeps system messages in the window,
``none`` lets the policy drop them (``metadata.pinned: true`` always stays)."""

Tokenizer = Literal["o200k_base", "cl100k_base"]
"""Tokenizers a context can count with."""
TOKENIZERS: tuple[Tokenizer, ...] = ("o200k_base", "cl100k_base")

ErrorCode = Literal[
    "invalid_json",
    "unknown_field",
    "invalid_context_id",
    "invalid_request",
    "message_exceeds_budget",
    "unit_exceeds_budget",
    "pinned_exceeds_budget",
    "replacement_exceeds_budget",
    "unknown_seq",
    "kept_message_mismatch",
    "budget_too_small",
    "metadata_too_large",
    "unauthorized",
    "forbidden",
    "rate_limited",
    "quota_exceeded",
    "not_found",
    "method_not_allowed",
    "version_conflict",
    "context_tombstoned",
    "context_purged",
    "idempotency_key_reused",
    "tokenizer_immutable",
    "budget_below_pinned",
    "membership_change_refused",
    "tokenizer_changed",
    "body_too_large",
    "internal_error",
    "unavailable",
    "not_ready",
    "archive_unavailable",
    "too_many_connections",
    "deadline_exceeded",
    "insufficient_storage",
    "shutting_down",
    "overloaded",
    "summarizer_not_configured",
]
"""Every ``error`` code the server documents (``APIStatusError.code``)."""
ERROR_CODES: frozenset[str] = frozenset(get_args(ErrorCode))

Part = dict[str, Any]
"""One message part: ``{"type": "text", "text": …}``, ``{"type": "tool_call", "id",
"name", "payload"}``, ``{"type": "tool_result", "tool_call_id", "payload"}``,
``{"type": "reasoning", "text"}``, or any other type (stored as given)."""

MessageInput = Mapping[str, Any]
"""A message to append: ``role``, ``parts`` and optionally ``id``, ``metadata``,
``token_count``. A :class:`Message` literal or any mapping of that shape."""


class _MessageRequired(TypedDict):
    role: str
    parts: list[Part]


class Message(_MessageRequired, total=False):
    """A message to store (UIMessage-shaped): ``role`` and ``parts``, optionally ``id``,
    ``metadata`` and ``token_count`` (used verbatim instead of the server's count)."""

    id: str | None
    metadata: dict[str, Any] | None
    token_count: int | None


class StoredMessage(TypedDict):
    """A message as the server returns it (log pages and the window).

    ``seq`` is ``None`` only for window messages that came from a compaction.
    """

    seq: int | None
    id: str
    role: str
    parts: list[Part]
    metadata: dict[str, Any] | None
    token_count: int
    created_at: str


class _PolicyRequired(TypedDict):
    strategy: Strategy | str


class Policy(_PolicyRequired, total=False):
    """``{"strategy": …, "config": {…}}``; ``config`` keys depend on the strategy:

    - ``last_n``: ``limit``; ``skip_parts``: ``limit``, ``skip_kinds``;
    - ``budget``: ``target_ratio``; ``time_window``: ``max_age_seconds`` (required);
    - ``strip_tool_results``: ``keep``, ``placeholder``, ``exclude_tools``,
      ``clear_at_least``, ``target_ratio``;
    - ``pipeline``: ``steps`` (required), a list of step policies (``last_n``,
      ``skip_parts``, ``budget``, ``time_window``, ``strip_tool_results``, each
      ``{"strategy": …, "config": {…}}`` without ``pin``);
    - ``summarize``: ``target_ratio``, ``instructions`` (the server needs a
      summarizer: 400 ``summarizer_not_configured`` otherwise);
    - ``manual``: nothing;
    - any other ``strategy``: a custom policy on the server, with a free ``config``.

    Every strategy's ``config`` also takes ``pin`` (:data:`Pin`)."""

    config: dict[str, Any]


def _pick(cls: type[Any], body: Mapping[str, Any]) -> dict[str, Any]:
    names = {f for f in cls.__dataclass_fields__ if f != "raw"}
    return {name: body[name] for name in names if name in body}


@dataclass(frozen=True)
class LastCompaction:
    """When the newest compaction of a context ran, and which policy (``client`` for
    ``compact``)."""

    at: str
    policy: str

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> LastCompaction:
        """Build from ``Context.last_compaction``."""
        return cls(**_pick(cls, body))


@dataclass(frozen=True)
class PurgeRecord:
    """When a purged context was purged, and by whom: the API key's name,
    ``retention`` (the server's ``--tombstone-retention``), or ``None`` on a server
    without keys."""

    purged_at: str
    purged_by: str | None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> PurgeRecord:
        """Build from ``Context.purge``."""
        return cls(**_pick(cls, body))


@dataclass(frozen=True)
class ContextInfo:
    """A context's config, metadata, status, version and counts (``GET /contexts/{id}``).

    ``window_messages`` is the number of messages in the window; ``compactions``
    counts the window's compactions (policy runs that changed it, ``compact``,
    summaries), ``last_compaction`` the newest one (``None`` before the first);
    ``summary_failures`` and ``last_summary_error`` tell about the ``summarize``
    policy's failed summaries. ``archived_seq``: every message up to this seq is in
    the server's archive (PostgreSQL; 0 when the server has none). ``status`` is
    ``purged`` after ``delete(purge=True)``; ``purge`` then says when and by whom.
    """

    id: str
    token_budget: int
    trigger_ratio: float
    policy: Policy
    tokenizer: Tokenizer
    metadata: dict[str, Any]
    status: Literal["active", "tombstoned", "purged"]
    version: int
    last_seq: int
    used_tokens: int
    needs_compaction: bool
    created_at: str
    updated_at: str
    window_messages: int
    archived_seq: int
    compactions: int
    last_compaction: LastCompaction | None
    summary_failures: int
    last_summary_error: str | None
    purge: PurgeRecord | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ContextInfo:
        """Build from a decoded response body."""
        values = _pick(cls, body)
        last = body.get("last_compaction")
        values["last_compaction"] = LastCompaction.from_json(last) if last is not None else None
        purge = body.get("purge")  # servers without erasure send none
        values["purge"] = PurgeRecord.from_json(purge) if purge is not None else None
        return cls(**values, raw=dict(body))


@dataclass(frozen=True)
class ContextPage:
    """One page of ``GET /v1/contexts`` (iterate it for its contexts).

    Attributes:
        contexts: the page's contexts, in the order asked for.
        has_more: more contexts follow.
        next_cursor: pass as ``cursor`` (with the same order and filters) for the
            next page; ``None`` on the last page.
    """

    contexts: list[ContextInfo]
    has_more: bool
    next_cursor: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __iter__(self) -> Iterator[ContextInfo]:
        return iter(self.contexts)

    def __len__(self) -> int:
        return len(self.contexts)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ContextPage:
        """Build from a decoded ``ContextPage`` body."""
        return cls(
            contexts=[ContextInfo.from_json(item) for item in body["contexts"]],
            has_more=body["has_more"],
            next_cursor=body["next_cursor"],
            raw=dict(body),
        )


@dataclass(frozen=True)
class ClusterMember:
    """One member of the server's Raft cluster, as the node asked sees it."""

    id: str | None
    raft_address: str | None
    http_url: str | None
    reachable: bool
    leader: bool


@dataclass(frozen=True)
class ClusterInfo:
    """The server's view of its Raft cluster (``GET /v1/cluster``); a single node is a
    cluster of one. ``groups`` are the Raft groups, as the server sends them."""

    node_id: str
    leader: str | None
    ready: bool
    members: list[ClusterMember]
    groups: list[dict[str, Any]]
    commit_index: int
    applied_index: int
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ClusterInfo:
        """Build from a decoded response body."""
        picked = _pick(cls, body)
        picked["members"] = [ClusterMember(**_pick(ClusterMember, m)) for m in body["members"]]
        return cls(**picked, raw=dict(body))


@dataclass(frozen=True)
class AppendedMessage:
    """One stored message of an append: its ``seq``, ``id``, count and time."""

    seq: int
    id: str
    token_count: int
    created_at: str

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> AppendedMessage:
        """Build from one entry of ``AppendResult.messages``."""
        return cls(**_pick(cls, body))


@dataclass(frozen=True)
class AppendResult:
    """The answer to an append.

    ``seq`` and ``token_estimate`` are set when exactly one message was stored (as
    the original Fastpaca answers); a batch of several has only ``messages``.
    ``replayed`` is true when the server returned the stored first result of this
    idempotency key (the ``Idempotent-Replayed`` header).
    """

    version: int
    last_seq: int
    used_tokens: int
    needs_compaction: bool
    messages: list[AppendedMessage]
    seq: int | None = None
    token_estimate: int | None = None
    replayed: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any], *, replayed: bool = False) -> AppendResult:
        """Build from a decoded response body."""
        values = _pick(cls, body)
        values["messages"] = [AppendedMessage.from_json(item) for item in body["messages"]]
        return cls(**values, replayed=replayed, raw=dict(body))


@dataclass(frozen=True)
class Segment:
    """A run of the window: ``log`` (consecutive log messages ``from_seq``…``to_seq``),
    ``replacement`` (messages that came from a compaction) or ``summary`` (one summary
    the ``summarize`` policy wrote, standing for log messages ``from_seq``…``to_seq``)."""

    type: Literal["log", "replacement", "summary"]
    count: int
    tokens: int
    from_seq: int | None = None
    to_seq: int | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Segment:
        """Build from one entry of ``Window.segments``."""
        return cls(**_pick(cls, body))


@dataclass(frozen=True)
class Window:
    """The LLM window (``GET …/context``): pass ``messages`` to the model and
    ``version`` as ``if_version`` to the next write."""

    version: int
    messages: list[StoredMessage]
    used_tokens: int
    budget_tokens: int
    needs_compaction: bool
    segments: list[Segment]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Window:
        """Build from a decoded response body."""
        values = _pick(cls, body)
        values["segments"] = [Segment.from_json(item) for item in body["segments"]]
        return cls(**values, raw=dict(body))


WindowFormat = Literal["ui", "openai", "anthropic"]
"""``ctx.context(format=…)``: the window as stored (``ui``), or converted to a provider's
request messages (``openai``: Chat Completions; ``anthropic``: Messages API)."""


@dataclass(frozen=True)
class OpenAIWindow:
    """The window as OpenAI Chat Completions messages (``ctx.context(format="openai")``):
    ``client.chat.completions.create(model=…, messages=window.messages)``.

    The conversion is ``fastpaca_openai.to_openai_messages``'s, done by the server;
    ``used_tokens`` and ``segments`` describe the stored messages."""

    version: int
    format: Literal["openai"]
    messages: list[dict[str, Any]]
    used_tokens: int
    budget_tokens: int
    needs_compaction: bool
    segments: list[Segment]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> OpenAIWindow:
        """Build from a decoded response body."""
        values = _pick(cls, body)
        values["segments"] = [Segment.from_json(item) for item in body["segments"]]
        return cls(**values, raw=dict(body))


@dataclass(frozen=True)
class AnthropicWindow:
    """The window as Anthropic Messages API ``system`` and ``messages``
    (``ctx.context(format="anthropic")``); ``system`` is ``None`` when the window has
    no system text. :meth:`request` gives both as ``messages.create`` keywords.

    The conversion is ``fastpaca_anthropic.to_anthropic_messages``'s, done by the
    server; ``used_tokens`` and ``segments`` describe the stored messages."""

    version: int
    format: Literal["anthropic"]
    messages: list[dict[str, Any]]
    used_tokens: int
    budget_tokens: int
    needs_compaction: bool
    segments: list[Segment]
    system: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> AnthropicWindow:
        """Build from a decoded response body."""
        values = _pick(cls, body)
        values["segments"] = [Segment.from_json(item) for item in body["segments"]]
        return cls(**values, raw=dict(body))

    def request(self) -> dict[str, Any]:
        """``{"system": …, "messages": […]}`` (``system`` only when there is one), for
        ``client.messages.create(model=…, max_tokens=…, **window.request())``."""
        if self.system is None:
            return {"messages": self.messages}
        return {"system": self.system, "messages": self.messages}


@dataclass(frozen=True)
class CompactResult:
    """The answer to a compaction."""

    version: int
    used_tokens: int
    needs_compaction: bool
    message_count: int
    replayed: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any], *, replayed: bool = False) -> CompactResult:
        """Build from a decoded response body."""
        return cls(**_pick(cls, body), replayed=replayed, raw=dict(body))


SeqRange = tuple[int, int]
"""``(from_seq, to_seq)``: a run of log messages, both ends included."""


def _ranges(body: Any) -> list[SeqRange]:
    return [(int(first), int(last)) for first, last in body]


@dataclass(frozen=True)
class CompactionAction:
    """What one policy step of a compaction did.

    Attributes:
        step: the step of a ``pipeline`` (0 for a plain policy; ``None`` for the
            final trim to the budget).
        policy: the step's strategy (``client`` for ``compact``).
        reason: ``over_trigger``, ``over_message_limit``, ``expired``,
            ``parts_skipped``, ``tool_output_cleared``, ``custom``, ``over_budget``,
            ``summarized`` or ``replaced``.
        removed: the seq ranges that left the window.
        changed: the seq ranges whose window copy changed (parts stripped, tool
            output cleared).
        removed_unlogged: messages without a seq (replacements, summaries) that
            left the window, when there were any.
        summary: the number of the summary the messages were folded into
            (``summarized``).
    """

    step: int | None
    policy: str
    reason: Literal[
        "over_trigger",
        "over_message_limit",
        "expired",
        "parts_skipped",
        "tool_output_cleared",
        "custom",
        "over_budget",
        "summarized",
        "replaced",
    ]
    removed: list[SeqRange]
    changed: list[SeqRange]
    tokens_before: int
    tokens_after: int
    detail: str
    removed_unlogged: int | None = None
    summary: int | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> CompactionAction:
        """Build from one entry of ``CompactionRecord.actions``."""
        values = _pick(cls, body)
        values["removed"] = _ranges(body["removed"])
        values["changed"] = _ranges(body["changed"])
        return cls(**values)


@dataclass(frozen=True)
class CompactionRecord:
    """Why messages left the window: one record of ``GET …/compactions``.

    ``runs`` compactions in a row for the same reason (``last_n`` at its limit)
    share one record: ``first_version`` is the first one's version, ``version``
    and ``at`` the newest's. ``cause`` is what ran the policy (``append``,
    ``config``, ``compact``, ``summary``); a failed summary has ``outcome``
    ``failed`` and its ``error``.
    """

    number: int
    version: int
    first_version: int
    at: str
    cause: Literal["append", "config", "compact", "summary", "redact"]
    policy: str
    outcome: Literal["applied", "failed"]
    runs: int
    tokens_before: int
    tokens_after: int
    actions: list[CompactionAction]
    error: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> CompactionRecord:
        """Build from one record (``CompactionPage.records``, a ``compaction_record``
        event's ``record``)."""
        values = _pick(cls, body)
        values["actions"] = [CompactionAction.from_json(item) for item in body["actions"]]
        return cls(**values, raw=dict(body))


class CompactionPage(list[CompactionRecord]):
    """One page of a context's compaction records, oldest first.

    Attributes:
        compactions: how many compactions the context has had (the server keeps
            the newest 100 records).
        has_more: more records follow this page.
    """

    def __init__(
        self, records: list[CompactionRecord], *, compactions: int, has_more: bool
    ) -> None:
        super().__init__(records)
        self.compactions = compactions
        self.has_more = has_more

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> CompactionPage:
        """Build from a decoded ``CompactionPage`` body."""
        return cls(
            [CompactionRecord.from_json(record) for record in body["records"]],
            compactions=body["compactions"],
            has_more=body["has_more"],
        )

    def __repr__(self) -> str:
        return (
            f"CompactionPage({list.__repr__(self)}, compactions={self.compactions}, "
            f"has_more={self.has_more})"
        )


@dataclass(frozen=True)
class PreviewConfig:
    """The config a preview ran with: the one asked for, the context's own for the rest."""

    token_budget: int
    trigger_ratio: float
    policy: Policy
    tokenizer: Tokenizer


@dataclass(frozen=True)
class TokenBreakdown:
    """One window message's tokens, and its parts' (``part_tokens``)."""

    seq: int | None
    id: str
    role: str
    token_count: int
    part_tokens: list[int]


@dataclass(frozen=True)
class DroppedRun:
    """A run of log messages ``from_seq``…``to_seq`` the previewed window would not hold."""

    from_seq: int
    to_seq: int
    count: int


@dataclass(frozen=True)
class RefusedMessage:
    """A log message the previewed config could never hold, with the error ``code`` an
    append would get (``message_exceeds_budget``, …)."""

    seq: int
    code: str


@dataclass(frozen=True)
class Preview:
    """The window a context would have under another config (``ctx.preview``).

    ``messages`` and ``segments`` are that window; ``breakdown`` has each of its
    messages' tokens; ``dropped`` the runs of log messages it would not hold;
    ``changed`` the seqs whose window copy would differ from the log; ``refused``
    the messages the config could never hold. Nothing changes on the server.
    """

    config: PreviewConfig
    used_tokens: int
    needs_compaction: bool
    messages: list[StoredMessage]
    breakdown: list[TokenBreakdown]
    dropped: list[DroppedRun]
    changed: list[int]
    refused: list[RefusedMessage]
    segments: list[Segment]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Preview:
        """Build from a decoded response body."""
        values = _pick(cls, body)
        values["config"] = PreviewConfig(**_pick(PreviewConfig, body["config"]))
        values["breakdown"] = [
            TokenBreakdown(**_pick(TokenBreakdown, item)) for item in body["breakdown"]
        ]
        values["dropped"] = [DroppedRun(**_pick(DroppedRun, item)) for item in body["dropped"]]
        values["refused"] = [
            RefusedMessage(**_pick(RefusedMessage, item)) for item in body["refused"]
        ]
        values["segments"] = [Segment.from_json(item) for item in body["segments"]]
        return cls(**values, raw=dict(body))


class MessagePage(list[StoredMessage]):
    """One page of the log: a list of messages, oldest first, with paging facts.

    Attributes:
        last_seq: the ``seq`` of the newest message of the context.
        has_more: for ``tail``, older messages exist before this page; for
            ``messages``, more messages follow it within the range.
    """

    def __init__(self, messages: list[StoredMessage], *, last_seq: int, has_more: bool) -> None:
        super().__init__(messages)
        self.last_seq = last_seq
        self.has_more = has_more

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> MessagePage:
        """Build from a decoded ``Page`` body."""
        return cls(list(body["messages"]), last_seq=body["last_seq"], has_more=body["has_more"])

    def __repr__(self) -> str:
        return (
            f"MessagePage({list.__repr__(self)}, last_seq={self.last_seq}, "
            f"has_more={self.has_more})"
        )


@dataclass(frozen=True)
class Event:
    """One event of a context's live feed (``GET …/events``, Server-Sent Events).

    Attributes:
        type: ``message`` (``data["seq"]``, ``data["message"]``),
            ``compaction_record`` (the window was compacted, or a summary failed:
            ``data["record"]``, also as :attr:`record`), ``context`` (the context
            changed: ``cause``, ``last_seq``, ``used_tokens``, ``needs_compaction``),
            ``compaction`` (the window was replaced: ``segments``), ``tombstoned``
            (the last event) or ``gap`` (versions ``expected`` … ``actual - 1`` are
            no longer kept: re-read them).
        version: the context version the event belongs to; every event of a
            version but the last is a ``message`` or a ``compaction_record``, and
            the last one's version is the ``cursor`` to resume from.
        data: the whole decoded JSON event.
    """

    type: str
    version: int
    data: dict[str, Any]

    @property
    def record(self) -> CompactionRecord | None:
        """A ``compaction_record`` event's record (``None`` for other events)."""
        if self.type != "compaction_record" or not isinstance(self.data.get("record"), dict):
            return None
        return CompactionRecord.from_json(self.data["record"])
