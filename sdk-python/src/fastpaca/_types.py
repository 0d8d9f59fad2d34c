"""The shapes the API sends and returns, as in ``spec/openapi.yaml``.

Messages stay plain dicts (UIMessage-shaped, key order kept) so that a window
goes to a model, or back to ``compact``, exactly as it was read. Results are
frozen dataclasses with the spec's field names; unknown fields a newer server
adds are ignored. ``tests/sdk/test_spec_drift.py`` compares all of this with the
spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict, get_args

__all__ = [
    "ERROR_CODES",
    "STRATEGIES",
    "TOKENIZERS",
    "AppendResult",
    "AppendedMessage",
    "CompactResult",
    "ContextInfo",
    "ErrorCode",
    "Event",
    "Message",
    "MessageInput",
    "MessagePage",
    "Part",
    "Policy",
    "Segment",
    "StoredMessage",
    "Strategy",
    "Tokenizer",
    "Window",
]

Strategy = Literal["last_n", "skip_parts", "budget", "time_window", "manual"]
"""Window policies (``policy.strategy``)."""
STRATEGIES: tuple[Strategy, ...] = ("last_n", "skip_parts", "budget", "time_window", "manual")

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
    "not_found",
    "method_not_allowed",
    "version_conflict",
    "context_tombstoned",
    "idempotency_key_reused",
    "tokenizer_immutable",
    "budget_below_pinned",
    "membership_change_refused",
    "tokenizer_changed",
    "body_too_large",
    "internal_error",
    "unavailable",
    "not_ready",
    "too_many_connections",
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
    strategy: Strategy


class Policy(_PolicyRequired, total=False):
    """``{"strategy": …, "config": {…}}``; ``config`` keys depend on the strategy
    (``limit`` for ``last_n``; ``limit`` and ``skip_kinds`` for ``skip_parts``;
    ``target_ratio`` for ``budget``; ``max_age_seconds`` for ``time_window``)."""

    config: dict[str, Any]


def _pick(cls: type[Any], body: Mapping[str, Any]) -> dict[str, Any]:
    names = {f for f in cls.__dataclass_fields__ if f != "raw"}
    return {name: body[name] for name in names if name in body}


@dataclass(frozen=True)
class ContextInfo:
    """A context's config, metadata, status, version and counts (``GET /contexts/{id}``)."""

    id: str
    token_budget: int
    trigger_ratio: float
    policy: Policy
    tokenizer: Tokenizer
    metadata: dict[str, Any]
    status: Literal["active", "tombstoned"]
    version: int
    last_seq: int
    used_tokens: int
    needs_compaction: bool
    created_at: str
    updated_at: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ContextInfo:
        """Build from a decoded response body."""
        return cls(**_pick(cls, body), raw=dict(body))


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
    """A run of the window: ``log`` (consecutive log messages ``from_seq``…``to_seq``)
    or ``replacement`` (messages that came from a compaction)."""

    type: Literal["log", "replacement"]
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
        type: ``message`` (``data["seq"]``, ``data["message"]``), ``context`` (the
            context changed: ``cause``, ``last_seq``, ``used_tokens``,
            ``needs_compaction``), ``compaction`` (the window was replaced:
            ``segments``), ``tombstoned`` (the last event) or ``gap`` (versions
            ``expected`` … ``actual - 1`` are no longer kept: re-read them).
        version: the context version the event belongs to; every event of a
            version but the last is a ``message``, and the last one's version is
            the ``cursor`` to resume from.
        data: the whole decoded JSON event.
    """

    type: str
    version: int
    data: dict[str, Any]
