"""The server's log: one JSON object per line on stderr (``--log-format json``,
the default) or one line of text (``--log-format text``).

Every record has ``ts`` (ISO 8601, UTC), ``level``, ``logger`` and ``msg``,
then the fields passed with ``extra=``, the id of the HTTP request being
served (``request_id``, from :data:`request_id`) and, in JSON, the node's id;
``exception`` holds the traceback when there is one. Nothing here decides
what is logged: callers never pass message content or secrets.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import sys
from collections.abc import Mapping
from typing import Any, TextIO

FORMATS = ("json", "text")
LEVELS = ("debug", "info", "warning", "error", "critical")

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "fastpaca_request_id", default=None
)
"""The id of the request being served (set by the request-log middleware); tasks
a handler starts inherit it, so their records carry it too."""

# Attributes of every LogRecord (this Python's): any other one came with ``extra=``.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def _timestamp(created: float) -> str:
    moment = dt.datetime.fromtimestamp(created, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's ``extra=`` fields, and the current request's id."""
    found = {
        key: value
        for key, value in vars(record).items()
        if key not in _RECORD_FIELDS and not key.startswith("_")
    }
    current = request_id.get()
    if current is not None:
        found.setdefault("request_id", current)
    return found


class JsonFormatter(logging.Formatter):
    """One JSON object per record (one line: newlines inside values are escaped)."""

    def __init__(self, fields: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.fields = dict(fields or {})
        """Added to every record that does not have them (the node's id)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        # The four above are never replaced; a record's own field wins over a fixed one.
        for key, value in [*_fields(record).items(), *self.fields.items()]:
            data.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exception"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        try:
            return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
        except (TypeError, ValueError):  # odd keys or a cycle: never lose the record
            text = {str(key): str(value) for key, value in data.items()}
            return json.dumps(text, ensure_ascii=False, separators=(",", ":"))


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    """``time LEVEL logger message key=value …`` (the ``extra=`` fields), then the traceback."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        extras = " ".join(f"{key}={_text_value(value)}" for key, value in _fields(record).items())
        return f"{line} {extras}" if extras else line


def setup(
    log_format: str = "json",
    level: str = "info",
    *,
    node: str | None = None,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every record at ``level`` or above to ``stream`` (stderr) in ``log_format``;
    replaces the root logger's handlers. Python warnings are logged too."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    fields = {"node": node} if node else {}
    handler.setFormatter(JsonFormatter(fields) if log_format == "json" else TextFormatter())
    logging.basicConfig(handlers=[handler], level=level.upper(), force=True)
    logging.captureWarnings(True)
    return handler
