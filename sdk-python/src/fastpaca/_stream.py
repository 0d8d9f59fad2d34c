"""``ctx.stream(fn)``: window → model → the same chunks to the caller → one append.

The core knows no model provider. A provider's chunks are assembled by a
:class:`StreamAccumulator`: the stream feeds it every chunk (``add``) and, when
the model's stream ends normally, asks it for the finished assistant message
(``finish``), which is appended once, with an idempotency key fixed when the
stream was created.

Which accumulator? ``accumulator=`` when given. Otherwise it is chosen from
the first chunk: ``str`` chunks get :class:`TextAccumulator`; a chunk whose
class lives in ``openai``, ``anthropic`` or ``langchain_core`` is handed to
``fastpaca_openai``, ``fastpaca_anthropic`` or ``langchain_fastpaca`` (imported
only then, and only if installed), whose ``accumulator_for(chunk)`` picks one.

Endings:

* **completed** — the model's stream ended normally: the assembled message is
  appended (``stream.result`` holds the :class:`~fastpaca.AppendResult`).
* **failed** — the model call, the stream, or an in-band error event raised:
  the error propagates, nothing is appended.
* **abandoned** — the caller stopped early and closed the stream (``close()``,
  or leaving a ``with`` block): by default (``on_abandon="discard"``) nothing is
  appended. With ``on_abandon="append_partial"`` the text and reasoning that
  arrived are appended, marked ``metadata.partial = true``; tool calls are
  dropped (their arguments may be cut off, and a call without a result would
  break the next model request). A stream dropped without closing appends
  nothing.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Iterator,
    Mapping,
)
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    Literal,
    Protocol,
    TypeVar,
    cast,
    runtime_checkable,
)

from ._types import AppendResult, Message, Part, StoredMessage, Window

if TYPE_CHECKING:
    from ._context import AsyncContext, Context

__all__ = [
    "AssembledMessage",
    "AsyncContextStream",
    "ContextStream",
    "MessageBuilder",
    "OnAbandon",
    "StreamAccumulator",
    "StreamStatus",
    "TextAccumulator",
    "accumulator_for",
    "parse_tool_arguments",
]

ChunkT = TypeVar("ChunkT")

OnAbandon = Literal["discard", "append_partial"]
"""What an abandoned stream appends: nothing, or the partial text marked as such."""

StreamStatus = Literal["streaming", "completed", "failed", "abandoned"]

StreamSource = Iterable[ChunkT] | AbstractContextManager[Iterable[ChunkT]]
"""What ``fn`` may return to a sync stream: an iterable of chunks (an OpenAI
``Stream``, a generator) or a context manager that yields one (Anthropic's
``client.messages.stream(...)``)."""

AsyncStreamSource = (
    AsyncIterable[ChunkT] | Iterable[ChunkT] | AbstractAsyncContextManager[AsyncIterable[ChunkT]]
)
"""What ``fn`` may return (or return an awaitable of) to an async stream."""


@dataclass
class AssembledMessage:
    """The finished assistant message an accumulator hands back.

    Attributes:
        parts: the message parts, in the order they arrived.
        token_count: the provider's count of generated tokens (completion/output
            tokens), or ``None`` when the stream carried no usage; the server then
            counts the message itself.
        role: the message role.
        metadata: message metadata the accumulator wants stored (the caller's
            ``metadata=`` is merged over it).
    """

    parts: list[Part] = field(default_factory=list)
    token_count: int | None = None
    role: str = "assistant"
    metadata: dict[str, Any] | None = None


@runtime_checkable
class StreamAccumulator(Protocol):
    """Assembles one assistant message from a model's stream chunks.

    ``add`` is called with every chunk, in order; it may raise
    :class:`~fastpaca.ModelStreamError` for a chunk that reports a failure.
    ``finish`` is called once: at the normal end of the stream, or, for
    ``on_abandon="append_partial"``, when an abandoned stream is closed (so it must
    cope with a stream cut short).
    """

    def add(self, chunk: Any) -> None:
        """Take one chunk."""
        ...

    def finish(self) -> AssembledMessage:
        """The message assembled from every chunk so far."""
        ...


def parse_tool_arguments(arguments: str) -> Any:
    """A tool call's arguments from their JSON text: ``""`` is ``{}``; text that is
    not valid JSON (a model may produce it, or the stream was cut) is kept as the
    string itself."""
    if not arguments.strip():
        return {}
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


@dataclass
class _Slot:
    kind: Literal["text", "reasoning", "tool_call", "part"]
    key: Hashable
    text: str = ""
    call_id: str | None = None
    name: str | None = None
    arguments: str = ""
    extras: dict[str, Any] = field(default_factory=dict)
    part: Part | None = None


class MessageBuilder:
    """Builds message parts from stream deltas, in the order the parts first appear.

    Text and reasoning deltas without a ``key`` extend the previous part when it
    is of the same kind, else start a new one; with a ``key`` (a content index,
    an item id) they extend that part. Tool calls are keyed; their argument
    pieces are joined and parsed at :meth:`parts`. Accumulators for a provider
    translate its chunks into these calls.
    """

    def __init__(self) -> None:
        self._slots: list[_Slot] = []
        self._keyed: dict[tuple[str, Hashable], _Slot] = {}

    def _keyed_slot(self, kind: Literal["text", "reasoning", "tool_call"], key: Hashable) -> _Slot:
        slot = self._keyed.get((kind, key))
        if slot is None:
            slot = _Slot(kind=kind, key=key)
            self._keyed[(kind, key)] = slot
            self._slots.append(slot)
        return slot

    def _textual(self, kind: Literal["text", "reasoning"], delta: str, key: Hashable) -> _Slot:
        if key is None:
            last = self._slots[-1] if self._slots else None
            if last is None or last.kind != kind or last.key is not None:
                last = _Slot(kind=kind, key=None)
                self._slots.append(last)
            last.text += delta
            return last
        slot = self._keyed_slot(kind, key)
        slot.text += delta
        return slot

    def append_text(self, delta: str, *, key: Hashable = None) -> None:
        """Add generated text."""
        self._textual("text", delta, key)

    def append_reasoning(self, delta: str, *, key: Hashable = None) -> None:
        """Add reasoning (thinking) text."""
        self._textual("reasoning", delta, key)

    def update_part(
        self, kind: Literal["text", "reasoning", "tool_call"], key: Hashable, **fields: Any
    ) -> None:
        """Set extra fields on a keyed part (e.g. a reasoning signature)."""
        self._keyed_slot(kind, key).extras.update(fields)

    def start_tool_call(
        self, key: Hashable, *, call_id: str | None = None, name: str | None = None
    ) -> None:
        """Open (or update) the tool call ``key``; the first id and name given stick."""
        slot = self._keyed_slot("tool_call", key)
        if call_id and not slot.call_id:
            slot.call_id = call_id
        if name and not slot.name:
            slot.name = name

    def append_tool_arguments(self, key: Hashable, delta: str) -> None:
        """Add a piece of a tool call's JSON arguments."""
        self._keyed_slot("tool_call", key).arguments += delta

    def set_tool_arguments(self, key: Hashable, arguments: str) -> None:
        """Replace a tool call's arguments with their complete JSON text."""
        self._keyed_slot("tool_call", key).arguments = arguments

    def add_part(self, part: Part) -> None:
        """Add a finished part as it is."""
        self._slots.append(_Slot(kind="part", key=None, part=dict(part)))

    def parts(self) -> list[Part]:
        """The parts so far. Empty text/reasoning parts and nameless tool calls are left
        out; tool calls become ``{"type": "tool_call", "id", "name", "payload"}``."""
        parts: list[Part] = []
        for slot in self._slots:
            if slot.kind in ("text", "reasoning"):
                if slot.text or slot.extras:
                    parts.append({"type": slot.kind, "text": slot.text, **slot.extras})
            elif slot.kind == "tool_call":
                if not slot.name:
                    continue
                part: Part = {"type": "tool_call"}
                if slot.call_id:
                    part["id"] = slot.call_id
                part["name"] = slot.name
                part["payload"] = parse_tool_arguments(slot.arguments)
                part.update(slot.extras)
                parts.append(part)
            elif slot.part is not None:
                parts.append(slot.part)
        return parts


class TextAccumulator:
    """Accumulator for streams of ``str`` chunks (any text generator)."""

    def __init__(self) -> None:
        self._builder = MessageBuilder()

    def add(self, chunk: Any) -> None:
        """Take one text chunk."""
        if not isinstance(chunk, str):
            raise TypeError(f"TextAccumulator takes str chunks, not {type(chunk).__name__}")
        self._builder.append_text(chunk)

    def finish(self) -> AssembledMessage:
        """The text so far as one text part."""
        return AssembledMessage(parts=self._builder.parts())


_ADAPTERS: dict[str, tuple[str, str]] = {
    "openai": ("fastpaca_openai", "fastpaca-openai"),
    "anthropic": ("fastpaca_anthropic", "fastpaca-anthropic"),
    "langchain_core": ("langchain_fastpaca", "langchain-fastpaca"),
}


def accumulator_for(chunk: Any) -> StreamAccumulator:
    """Pick an accumulator for a stream from its first chunk (see the module docstring)."""
    if isinstance(chunk, str):
        return TextAccumulator()
    chunk_type = type(chunk)
    root = chunk_type.__module__.partition(".")[0]
    adapter = _ADAPTERS.get(root)
    if adapter is None:
        raise TypeError(
            f"ctx.stream cannot assemble chunks of type {chunk_type.__module__}."
            f"{chunk_type.__qualname__}; pass accumulator= (a fastpaca.StreamAccumulator)"
        )
    module_name, distribution = adapter
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise TypeError(
            f"ctx.stream got {root} chunks; install {distribution} (module {module_name}) "
            f"or pass accumulator="
        ) from error
    accumulator: StreamAccumulator | None = module.accumulator_for(chunk)
    if accumulator is None:
        raise TypeError(
            f"{module_name} has no accumulator for chunks of type {chunk_type.__qualname__}; "
            f"pass accumulator="
        )
    return accumulator


class _StreamState:
    """What the sync and async streams share: accumulating and building the message."""

    def __init__(
        self,
        *,
        window: Window,
        accumulator: StreamAccumulator | None,
        if_version: int | None,
        idempotency_key: str,
        metadata: Mapping[str, Any] | None,
        on_abandon: OnAbandon,
    ) -> None:
        if on_abandon not in ("discard", "append_partial"):
            raise ValueError("on_abandon must be 'discard' or 'append_partial'")
        self.window = window
        self.status: StreamStatus = "streaming"
        self.result: AppendResult | None = None
        self.message: Message | None = None
        self.idempotency_key = idempotency_key
        self._accumulator = accumulator
        self._if_version = if_version
        self._metadata = dict(metadata) if metadata else None
        self._on_abandon = on_abandon

    def _add(self, chunk: Any) -> None:
        if self._accumulator is None:
            self._accumulator = accumulator_for(chunk)
        self._accumulator.add(chunk)

    def _build(self, *, partial: bool) -> Message | None:
        assembled = self._accumulator.finish() if self._accumulator else AssembledMessage()
        parts = assembled.parts
        metadata: dict[str, Any] = dict(assembled.metadata or {})
        if self._metadata:
            metadata.update(self._metadata)
        if partial:
            parts = [part for part in parts if part.get("type") in ("text", "reasoning")]
            if not parts:
                return None
            metadata["partial"] = True
        elif not parts:
            parts = [{"type": "text", "text": ""}]
        message: Message = {"role": assembled.role, "parts": parts}
        if metadata:
            message["metadata"] = metadata
        if assembled.token_count is not None and not partial:
            message["token_count"] = assembled.token_count
        return message


def _close_source(source: Any, manager: Any, error: BaseException | None) -> None:
    if manager is not None:
        manager.__exit__(
            type(error) if error else None, error, error.__traceback__ if error else None
        )
        return
    close = getattr(source, "close", None)
    if callable(close):
        close()


class ContextStream(_StreamState, Generic[ChunkT]):
    """The model's stream, passed through; appends the assembled answer when it ends.

    Iterate it for the model's own chunks. Use it in a ``with`` block (or call
    :meth:`close`) so that a stream you stop early is closed, and, with
    ``on_abandon="append_partial"``, its partial answer appended.

    Attributes:
        window: the :class:`~fastpaca.Window` the model was given.
        status: ``streaming``, ``completed``, ``failed`` or ``abandoned``.
        message: the assistant message appended (or that the append was tried with).
        result: the :class:`~fastpaca.AppendResult`, once appended.
        idempotency_key: the key the append carries.
    """

    def __init__(
        self,
        *,
        context: Context,
        window: Window,
        source: StreamSource[ChunkT],
        accumulator: StreamAccumulator | None,
        if_version: int | None,
        idempotency_key: str,
        metadata: Mapping[str, Any] | None,
        on_abandon: OnAbandon,
    ) -> None:
        super().__init__(
            window=window,
            accumulator=accumulator,
            if_version=if_version,
            idempotency_key=idempotency_key,
            metadata=metadata,
            on_abandon=on_abandon,
        )
        self._context = context
        self._manager: Any = None
        self._source: Any = source
        if hasattr(source, "__iter__"):
            self._iterator: Iterator[ChunkT] = iter(cast(Iterable[ChunkT], source))
        elif hasattr(source, "__enter__"):
            self._manager = source
            self._source = source.__enter__()
            self._iterator = iter(self._source)
        else:
            raise TypeError(
                f"ctx.stream's fn must return an iterable of chunks, not {type(source).__name__}"
            )

    def __iter__(self) -> Iterator[ChunkT]:
        return self

    def __next__(self) -> ChunkT:
        if self.status != "streaming":
            raise StopIteration
        try:
            chunk = next(self._iterator)
            self._add(chunk)
        except StopIteration:
            self._end_source(None)
            self._complete()
            raise
        except BaseException as error:
            self.status = "failed"
            self._end_source(error)
            raise
        return chunk

    def _end_source(self, error: BaseException | None) -> None:
        manager, self._manager = self._manager, None
        _close_source(self._source, manager, error)

    def _complete(self) -> None:
        self.message = self._build(partial=False)
        assert self.message is not None
        self.status = "failed"
        self.result = self._context.append(
            self.message, if_version=self._if_version, idempotency_key=self.idempotency_key
        )
        self.status = "completed"

    def until_done(self) -> AppendResult | None:
        """Read the rest of the stream (appending the answer) and return the result."""
        for _ in self:
            pass
        return self.result

    def close(self) -> None:
        """Stop a stream that is still running: it counts as abandoned (see ``on_abandon``)."""
        if self.status != "streaming":
            return
        self.status = "abandoned"
        self._end_source(None)
        if self._on_abandon == "append_partial":
            self.message = self._build(partial=True)
            if self.message is not None:
                self.result = self._context.append(
                    self.message, if_version=self._if_version, idempotency_key=self.idempotency_key
                )

    def __enter__(self) -> ContextStream[ChunkT]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
        elif self.status == "streaming":
            self.status = "abandoned"
            self._end_source(exc)


async def _aclose_source(source: Any, manager: Any, error: BaseException | None) -> None:
    if manager is not None:
        await manager.__aexit__(
            type(error) if error else None, error, error.__traceback__ if error else None
        )
        return
    close = getattr(source, "aclose", None) or getattr(source, "close", None)
    if callable(close):
        result = close()
        if inspect.isawaitable(result):
            await result


class _SyncIteratorAdapter(Generic[ChunkT]):
    """Lets an async stream iterate a plain iterable."""

    def __init__(self, iterable: Iterable[ChunkT]) -> None:
        self._iterator = iter(iterable)

    def __aiter__(self) -> _SyncIteratorAdapter[ChunkT]:
        return self

    async def __anext__(self) -> ChunkT:
        try:
            return next(self._iterator)
        except StopIteration:
            raise StopAsyncIteration from None


class AsyncContextStream(_StreamState, Generic[ChunkT]):
    """The async twin of :class:`ContextStream`: ``async for`` it, ``async with`` it,
    ``await stream.close()`` to stop early."""

    def __init__(
        self,
        *,
        context: AsyncContext,
        window: Window,
        accumulator: StreamAccumulator | None,
        if_version: int | None,
        idempotency_key: str,
        metadata: Mapping[str, Any] | None,
        on_abandon: OnAbandon,
    ) -> None:
        super().__init__(
            window=window,
            accumulator=accumulator,
            if_version=if_version,
            idempotency_key=idempotency_key,
            metadata=metadata,
            on_abandon=on_abandon,
        )
        self._context = context
        self._manager: Any = None
        self._source: Any = None
        self._iterator: AsyncIterator[ChunkT] | None = None

    async def _start(
        self,
        source: AsyncStreamSource[ChunkT] | Awaitable[AsyncStreamSource[ChunkT]],
    ) -> None:
        value: Any = source
        if inspect.isawaitable(value):
            value = await value
        self._source = value
        if hasattr(value, "__aiter__"):
            self._iterator = value.__aiter__()
        elif hasattr(value, "__aenter__"):
            self._manager = value
            self._source = await value.__aenter__()
            self._iterator = self._source.__aiter__()
        elif hasattr(value, "__iter__"):
            self._iterator = _SyncIteratorAdapter(value)
        else:
            raise TypeError(
                f"ctx.stream's fn must return an (async) iterable of chunks, "
                f"not {type(value).__name__}"
            )

    def __aiter__(self) -> AsyncIterator[ChunkT]:
        return self

    async def __anext__(self) -> ChunkT:
        if self.status != "streaming" or self._iterator is None:
            raise StopAsyncIteration
        try:
            chunk = await self._iterator.__anext__()
            self._add(chunk)
        except StopAsyncIteration:
            await self._end_source(None)
            await self._complete()
            raise
        except BaseException as error:
            self.status = "failed"
            await self._end_source(error)
            raise
        return chunk

    async def _end_source(self, error: BaseException | None) -> None:
        manager, self._manager = self._manager, None
        await _aclose_source(self._source, manager, error)

    async def _complete(self) -> None:
        self.message = self._build(partial=False)
        assert self.message is not None
        self.status = "failed"
        self.result = await self._context.append(
            self.message, if_version=self._if_version, idempotency_key=self.idempotency_key
        )
        self.status = "completed"

    async def until_done(self) -> AppendResult | None:
        """Read the rest of the stream (appending the answer) and return the result."""
        async for _ in self:
            pass
        return self.result

    async def close(self) -> None:
        """Stop a stream that is still running: it counts as abandoned (see ``on_abandon``)."""
        if self.status != "streaming":
            return
        self.status = "abandoned"
        await self._end_source(None)
        if self._on_abandon == "append_partial":
            self.message = self._build(partial=True)
            if self.message is not None:
                self.result = await self._context.append(
                    self.message, if_version=self._if_version, idempotency_key=self.idempotency_key
                )

    aclose = close
    """The same as :meth:`close` (the name ``contextlib.aclosing`` calls)."""

    async def __aenter__(self) -> AsyncContextStream[ChunkT]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.close()
        elif self.status == "streaming":
            self.status = "abandoned"
            await self._end_source(exc)


StreamFunction = Callable[[list[StoredMessage]], StreamSource[ChunkT]]
AsyncStreamFunction = Callable[
    [list[StoredMessage]], AsyncStreamSource[ChunkT] | Awaitable[AsyncStreamSource[ChunkT]]
]
