"""Fastpaca for Python: the REST API one to one, plus ``ctx.stream(fn)``.

Quick start (a server from ``make serve``)::

    from fastpaca import Fastpaca

    client = Fastpaca()  # $FASTPACA_URL or http://127.0.0.1:4000
    ctx = client.context("demo-chat", budget=8000)
    ctx.append({"role": "user", "parts": [{"type": "text", "text": "Hi"}]})
    window = ctx.context()  # window.messages go to the model

:class:`AsyncFastpaca` is the async twin. Errors are one tree under
:class:`FastpacaError` (see :mod:`fastpaca._exceptions`).
"""

from ._base_client import NOT_GIVEN, NotGiven
from ._client import AsyncFastpaca, Fastpaca
from ._context import AsyncContext, Context
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    FastpacaError,
    InternalServerError,
    ModelStreamError,
    NotFoundError,
    RateLimitError,
    ServiceUnavailableError,
)
from ._parts import ai_sdk_tool, field_of, paired_tool_call_ids, part_payload, to_plain
from ._stream import (
    AssembledMessage,
    AsyncContextStream,
    ContextStream,
    MessageBuilder,
    OnAbandon,
    StreamAccumulator,
    StreamStatus,
    TextAccumulator,
    accumulator_for,
    parse_tool_arguments,
)
from ._types import (
    ERROR_CODES,
    STRATEGIES,
    TOKENIZERS,
    AppendedMessage,
    AppendResult,
    ClusterInfo,
    ClusterMember,
    CompactResult,
    ContextInfo,
    ErrorCode,
    Event,
    Message,
    MessageInput,
    MessagePage,
    Part,
    Policy,
    Segment,
    StoredMessage,
    Strategy,
    Tokenizer,
    Window,
)
from ._version import __version__

__all__ = [
    "ERROR_CODES",
    "NOT_GIVEN",
    "STRATEGIES",
    "TOKENIZERS",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AppendResult",
    "AppendedMessage",
    "AssembledMessage",
    "AsyncContext",
    "AsyncContextStream",
    "AsyncFastpaca",
    "AuthenticationError",
    "BadRequestError",
    "ClusterInfo",
    "ClusterMember",
    "CompactResult",
    "ConflictError",
    "Context",
    "ContextInfo",
    "ContextStream",
    "ErrorCode",
    "Event",
    "Fastpaca",
    "FastpacaError",
    "InternalServerError",
    "Message",
    "MessageBuilder",
    "MessageInput",
    "MessagePage",
    "ModelStreamError",
    "NotFoundError",
    "NotGiven",
    "OnAbandon",
    "Part",
    "Policy",
    "RateLimitError",
    "Segment",
    "ServiceUnavailableError",
    "StoredMessage",
    "Strategy",
    "StreamAccumulator",
    "StreamStatus",
    "TextAccumulator",
    "Tokenizer",
    "Window",
    "__version__",
    "accumulator_for",
    "ai_sdk_tool",
    "field_of",
    "paired_tool_call_ids",
    "parse_tool_arguments",
    "part_payload",
    "to_plain",
]
