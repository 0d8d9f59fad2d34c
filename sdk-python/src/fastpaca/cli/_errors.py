"""Exit statuses, and how an error becomes one line on stderr and a status.

====  =====================================================================
0     success
1     an API error (any other 4xx/5xx), or a refusal of the CLI's own (an
      import into a context that already has messages, a malformed file)
2     a usage error (unknown option, bad value, missing argument)
3     not found (404: no such context)
4     authentication (401, 403: a missing or wrong API key)
5     the server cannot be reached or is unavailable (connection refused,
      timeout, 503)
130   interrupted (Ctrl-C), except ``tail -f``, which ends with 0
====  =====================================================================
"""

from __future__ import annotations

from fastpaca import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    FastpacaError,
    NotFoundError,
    ServiceUnavailableError,
)

__all__ = [
    "EXIT_AUTH",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "CLIError",
    "describe",
    "exit_status",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_AUTH = 4
EXIT_UNAVAILABLE = 5
EXIT_INTERRUPTED = 130


class CLIError(Exception):
    """A failure the CLI itself reports: ``error: <code>: <message>`` and ``exit_status``."""

    def __init__(self, message: str, *, code: str | None = None, exit_status: int = EXIT_ERROR):
        super().__init__(message)
        self.message = message
        self.code = code
        self.exit_status = exit_status


def exit_status(error: FastpacaError) -> int:
    """The exit status for an SDK error."""
    if isinstance(error, APIConnectionError | ServiceUnavailableError):
        return EXIT_UNAVAILABLE
    if isinstance(error, NotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(error, AuthenticationError):
        return EXIT_AUTH
    if isinstance(error, APIStatusError) and error.status_code == 403:
        return EXIT_AUTH
    return EXIT_ERROR


def describe(error: FastpacaError, base_url: str) -> tuple[str, str]:
    """``(code, message)`` for the ``error: <code>: <message>`` line."""
    if isinstance(error, APIStatusError):
        code = error.code or f"http_{error.status_code}"
        body = error.body
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            return code, body["message"]
        return code, str(error)
    if isinstance(error, APITimeoutError):
        return "timeout", f"the server at {base_url} did not answer in time"
    if isinstance(error, APIConnectionError):
        detail = str(error).removeprefix("Connection error: ")
        return "cannot_connect", f"cannot reach the server at {base_url} ({detail})"
    return "error", str(error)
