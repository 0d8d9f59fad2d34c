"""``GET /v1/contexts/{id}/export``: the whole history as JSON Lines.

The body is one JSON object per line, each ending with ``\\n`` (a JSON text has
no raw line break inside, so a line is always one message). :class:`LineSplitter`
cuts the body into lines as its bytes arrive; :class:`ExportProgress` lets a
broken download start again and skip the lines already handed out (the log only
grows, so a new export begins with the same lines).
"""

from __future__ import annotations

import json
from typing import cast

from ._exceptions import FastpacaError
from ._types import StoredMessage

__all__ = ["ExportProgress", "LineSplitter", "parse_line"]


class LineSplitter:
    """Split a byte stream at ``\\n`` into lines of text (UTF-8, without the ``\\n``).

    Only ``\\n`` (or ``\\r\\n``) ends a line, not U+2028 or the other characters
    ``str.splitlines`` breaks at, and a line is decoded once it is whole, so a
    character split across two chunks is decoded right. Empty lines are skipped.
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[str]:
        """The lines ``chunk`` completes."""
        *whole, self._buffer = (self._buffer + chunk).split(b"\n")
        return [line.removesuffix(b"\r").decode("utf-8") for line in whole if line.strip()]

    def finish(self) -> list[str]:
        """The last line, when the body did not end with ``\\n``."""
        rest, self._buffer = self._buffer, b""
        return [rest.removesuffix(b"\r").decode("utf-8")] if rest.strip() else []


class ExportProgress:
    """How far an export got across the connections it took."""

    def __init__(self) -> None:
        self.handed_out = 0
        """Lines handed to the caller so far."""
        self._seen = 0

    def start(self) -> None:
        """A new connection: its body starts from the first line again."""
        self._seen = 0

    def is_new(self) -> bool:
        """Count one line of the current body; whether it was not handed out before."""
        self._seen += 1
        if self._seen <= self.handed_out:
            return False
        self.handed_out += 1
        return True


def parse_line(line: str) -> StoredMessage:
    """One export line as the message it is."""
    try:
        message = json.loads(line)
    except ValueError as error:
        raise FastpacaError(f"an export line is not JSON: {line[:200]!r}") from error
    if not isinstance(message, dict):
        raise FastpacaError(f"an export line is not a JSON object: {line[:200]!r}")
    return cast(StoredMessage, message)
