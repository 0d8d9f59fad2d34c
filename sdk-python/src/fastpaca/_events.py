"""Server-Sent Events decoding for a context's live feed (``GET …/events``).

The documented shape: each event is one SSE message whose ``id:`` is the
context version it brought the context to, and whose ``data:`` is a JSON object
with at least ``type`` (``message.appended``, ``window.compacted``, …) and
``version``. Comments (``:`` lines, keep-alives) and events without data are
skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ._exceptions import FastpacaError
from ._types import Event

__all__ = ["SSEDecoder", "ServerSentEvent", "to_event"]


@dataclass(frozen=True)
class ServerSentEvent:
    """One raw SSE message."""

    event: str | None
    data: str
    id: str | None


class SSEDecoder:
    """Turns lines of an ``text/event-stream`` body into :class:`ServerSentEvent` s."""

    def __init__(self) -> None:
        self._event: str | None = None
        self._data: list[str] = []
        self._id: str | None = None
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
