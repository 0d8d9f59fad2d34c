"""``fastpaca``: the admin command line of a Fastpaca server (docs/cli.md).

Every request goes through the SDK's :class:`~fastpaca.Fastpaca` client. Tables
and data go to stdout, errors, notes and progress bars to stderr; the exit
status tells scripts what went wrong (:mod:`fastpaca.cli._errors`).
"""

from ._app import build_parser, main
from ._errors import (
    EXIT_AUTH,
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)

__all__ = [
    "EXIT_AUTH",
    "EXIT_ERROR",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "build_parser",
    "main",
]
