"""A context's live feed (``GET …/events``, Server-Sent Events): decoding and resuming.

The server's shape (docs/api.md, "Live events"): each event is one SSE
message whose ``event:`` is its type and whose ``data:`` is a JSON object
with ``type`` and ``version``. A version's events (a batch append's
``message`` events, a ``compaction_record`` when the window was compacted,
then its closing ``context``) come together, and only the closing event
carries ``id:`` (the version). A feed the server ends
early (a slow consumer, a shutdown) ends with ``event: error``.

:class:`EventFeed` hands out whole versions only and remembers the last one,
so a feed that drops is resumed from exactly there: nothing is missed and
nothing is yielded twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ._exceptions import FastpacaError
from ._types import Event

__all__ = [
    "CLOSING_TYPES",
    "NON_CLOSING_TYPES",
    "EventFeed",
    "SSEDecoder",
    "ServerSentEvent",
    "to_event",
]

CLOSING_TYPES = frozenset({"context", "compaction", "tombstoned", "gap"})
"""Event types that end a version: the cursor moves to their version."""
NON_CLOSING_TYPES = frozenset({"message", "compaction_record"})
"""Event types that come before their version's closing event (held back until it)."""

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class ServerSentEvent:
    """One raw SSE message."""

    event: str | None
    data: str
    id: str | None


class SSEDecoder:
    """Turns the text of an ``text/event-stream`` body into :class:`ServerSentEvent` s."""

    def __init__(self) -> None:
        self._event: str | None = None
        self._data: list[str] = []
        self._id: str | None = None
        self._buffer = ""
        self.last_event_id: str | None = None

    def decode(self, line: str) -> ServerSentEvent | None:
        """Feed one line (without its line ending); returns an event at a blank line."""
        if not line:
            if not self._data and self._event is None:
                return None
            message = ServerSentEvent(event=self._event, data="\n".join(self._data), id=self._id)
            self._event, self._data, self._id = None, [], None
            return message
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
            self.last_event_id = value
        return None

    def iter_lines(self, lines: Iterable[str]) -> Iterator[ServerSentEvent]:
        """Decode a whole stream of lines."""
        for line in lines:
            message = self.decode(line)
            if message is not None:
                yield message

    def feed_text(self, text: str) -> list[ServerSentEvent]:
        """Decode a piece of the body as it arrives.

        Only CR, LF and CRLF end a line (``str.splitlines``, and so httpx's
        ``iter_lines``, would also split at U+2028 and other characters that
        may sit inside an event's data).
        """
        self._buffer += text
        messages: list[ServerSentEvent] = []
        while True:
            match = _LINE_END.search(self._buffer)
            # A CR at the end may be the first half of a CRLF: wait for more.
            if match is None or (match.group() == "\r" and match.end() == len(self._buffer)):
                return messages
            line, self._buffer = self._buffer[: match.start()], self._buffer[match.end() :]
            message = self.decode(line)
            if message is not None:
                messages.append(message)


def to_event(message: ServerSentEvent) -> Event | None:
    """The :class:`Event` an SSE message carries, or ``None`` for one without data."""
    if not message.data:
        return None
    try:
        data = json.loads(message.data)
    except ValueError as error:
        raise FastpacaError(f"an event's data is not JSON: {message.data[:200]!r}") from error
    if not isinstance(data, dict):
        raise FastpacaError(f"an event's data is not a JSON object: {message.data[:200]!r}")
    event_type = data.get("type", message.event)
    version = data.get("version")
    if version is None and message.id is not None and message.id.isdigit():
        version = int(message.id)
    if not isinstance(event_type, str) or not isinstance(version, int):
        raise FastpacaError(f"an event without type or version: {message.data[:200]!r}")
    return Event(type=event_type, version=version, data=data)


class EventFeed:
    """The state of one ``ctx.events()`` across its connections.

    :meth:`take` holds a version's events back until its closing event, then
    releases them together and moves :attr:`cursor` to that version; a
    connection that ends in the middle of a version has its part dropped
    (:meth:`reset`), and the resumed feed sends that version again, whole.
    """

    def __init__(self, cursor: int | None) -> None:
        self.cursor = cursor
        """The version to resume after (``None``: from the start)."""
        self.done = False
        """The feed is over (the context is tombstoned)."""
        self.ended_by_server: dict[str, Any] | None = None
        """The data of the ``error`` event that ended the last connection, if any."""
        self._pending: list[Event] = []

    def take(self, message: ServerSentEvent) -> list[Event]:
        if message.event == "error":
            self.ended_by_server = json.loads(message.data) if message.data else {}
            return []
        event = to_event(message)
        if event is None:
            return []
        if (
            self.cursor is not None
            and event.version <= self.cursor
            and event.type not in ("tombstoned", "gap")
        ):
            return []  # already handed out (a server never sends these; be safe)
        self._pending.append(event)
        if event.type not in CLOSING_TYPES:
            return []
        ready, self._pending = self._pending, []
        self.cursor = max(self.cursor or 0, event.version)
        self.done = event.type == "tombstoned"
        return ready

    def reset(self) -> None:
        """The connection ended: drop the events of an unfinished version."""
        self._pending = []
