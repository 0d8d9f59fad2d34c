"""Pure core of Fastpaca: models, window policies and the state machine (no I/O)."""

from .errors import Conflict, DomainError, InvalidInput, NotFound
from .models import (
    AppendMessages,
    AppendResult,
    Command,
    Compact,
    CompactResult,
    ContextConfig,
    Message,
    MessageInput,
    PatchMetadata,
    Policy,
    PutContext,
    PutMember,
    Tombstone,
    command_from_json,
    command_to_json,
)
from .state import Context, StateMachine, replay_commands

__all__ = [
    "AppendMessages",
    "AppendResult",
    "Command",
    "Compact",
    "CompactResult",
    "Conflict",
    "Context",
    "ContextConfig",
    "DomainError",
    "InvalidInput",
    "Message",
    "MessageInput",
    "NotFound",
    "PatchMetadata",
    "Policy",
    "PutContext",
    "PutMember",
    "StateMachine",
    "Tombstone",
    "command_from_json",
    "command_to_json",
    "replay_commands",
]
