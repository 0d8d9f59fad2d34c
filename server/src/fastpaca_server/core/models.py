"""Value types of the core: messages, context configuration, commands, results.

Everything here is plain data (attrs classes) converted to and from JSON-like
structures with :data:`converter` (cattrs). Commands are complete values: the
node that receives a request stamps the time, generated ids, token counts and
the idempotency key into the command before it is proposed, so applying a
command never reads a clock, a random source or the environment.
"""

from __future__ import annotations

import hashlib
import json
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


STRATEGIES = ("last_n", "skip_parts", "manual")
TOKENIZERS = ("o200k_base", "cl100k_base")
DEFAULT_TRIGGER_RATIO = 0.7
DEFAULT_LAST_N_LIMIT = 200
DEFAULT_SKIP_KINDS = ("tool", "dynamic-tool", "reasoning")
MAX_TOKEN_BUDGET = 10_000_000
MAX_POLICY_LIMIT = 100_000
IDEMPOTENCY_KEYS_PER_CONTEXT = 10_000
MAX_METADATA_BYTES = 64 * 1024

ContextStatus = Literal["active", "tombstoned"]


@attrs.frozen
class Message:
    """A message as the core keeps it, in the log or in the window.

    ``seq`` is ``None`` only for window messages that came from a compaction
    replacement (they are not part of the log). ``part_tokens`` holds the
    tokenizer's count for each part, so a policy that strips parts can
    recompute the message's size without a tokenizer.
    """

    seq: int | None
    id: str
    role: str
    parts: list[JSONObject]
    metadata: JSONObject | None
    token_count: int
    part_tokens: list[int]
    created_at: int


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


Command = PutContext | AppendMessages | Compact | PatchMetadata | Tombstone


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


@attrs.frozen
class CompactResult:
    version: int
    used_tokens: int
    needs_compaction: bool
    message_count: int
    replayed: bool = False


converter = cattrs.Converter(forbid_extra_keys=True)


def command_to_json(command: Command) -> JSONObject:
    data: JSONObject = converter.unstructure(command)
    return data


def command_from_json(data: JSONObject) -> Command:
    kinds: dict[str, type[Command]] = {
        "put_context": PutContext,
        "append_messages": AppendMessages,
        "compact": Compact,
        "patch_metadata": PatchMetadata,
        "tombstone": Tombstone,
    }
    command_type = kinds[data["kind"]]
    return converter.structure(data, command_type)
