"""The ``fastpaca`` command: its parser, and :func:`main`, which runs one command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

import httpx

from fastpaca import Fastpaca, FastpacaError, __version__

from . import _cluster, _contexts, _keys, _tail, _transfer, _window
from ._console import Output
from ._errors import EXIT_ERROR, EXIT_INTERRUPTED, CLIError, describe, exit_status

__all__ = ["Handler", "build_parser", "main"]

Handler = Callable[[argparse.Namespace, Fastpaca, Output], int]

DESCRIPTION = """\
The admin command line of a Fastpaca server: list and inspect contexts, follow
their messages, export and import their history, read the LLM window and the
cluster's state. See docs/cli.md."""

EPILOG = """\
server:
  --url and --api-key may also come after the command. Defaults: $FASTPACA_URL
  (else http://127.0.0.1:4000) and $FASTPACA_API_KEY.

exit statuses:
  0 success, 1 API error, 2 usage error, 3 not found, 4 authentication failed,
  5 cannot connect / server unavailable, 130 interrupted."""


def positive_int(text: str) -> int:
    """An argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an integer ≥ 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def batch_size(text: str) -> int:
    """An argparse type: an append batch, 1 to 1,000 messages (the server's limit)."""
    value = positive_int(text)
    if value > _transfer.MAX_BATCH:
        raise argparse.ArgumentTypeError(f"at most {_transfer.MAX_BATCH}, not {value}")
    return value


def key_value(text: str) -> tuple[str, str]:
    """An argparse type: ``KEY=VALUE``."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    return key, value


def _server_options(parser: argparse.ArgumentParser, *, after_command: bool) -> None:
    # After the command the options default to "not given" (SUPPRESS), so they only
    # override the ones given before it when they are there.
    default = argparse.SUPPRESS if after_command else None
    parser.add_argument(
        "--url",
        default=default,
        metavar="URL",
        help="the server (default: $FASTPACA_URL, else http://127.0.0.1:4000)",
    )
    parser.add_argument(
        "--api-key",
        default=default,
        metavar="KEY",
        help="the API key, sent as a Bearer token (default: $FASTPACA_API_KEY)",
    )


def _progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar on stderr (default: only when stderr is a terminal)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree (each command's function is its ``handler`` default)."""
    parser = argparse.ArgumentParser(
        prog="fastpaca",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _server_options(parser, after_command=False)
    parser.add_argument("--version", action="version", version=f"fastpaca {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    _server_options(common, after_command=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    contexts = commands.add_parser(
        "contexts",
        aliases=["context"],
        help="list contexts, show one",
        description="List the server's contexts, or show one.",
    )
    actions = contexts.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list",
        parents=[common],
        help="a table of contexts",
        description="A table of the server's contexts (newest change first by default).",
    )
    listing.add_argument("--prefix", help="only ids that start with PREFIX")
    listing.add_argument(
        "--search", metavar="TEXT", help="only contexts whose id or metadata contains TEXT"
    )
    listing.add_argument(
        "--metadata",
        type=key_value,
        action="append",
        metavar="KEY=VALUE",
        help="only contexts whose metadata KEY is VALUE (repeatable: all must match)",
    )
    listing.add_argument(
        "--status",
        choices=["active", "tombstoned", "all"],
        help="active (the server's default), tombstoned or all",
    )
    listing.add_argument(
        "--order",
        choices=["recent", "id"],
        default="recent",
        help="recent (last updated first, the default) or id",
    )
    listing.add_argument(
        "--limit",
        type=non_negative_int,
        default=_contexts.DEFAULT_LIST_LIMIT,
        metavar="N",
        help=f"show at most N contexts (default {_contexts.DEFAULT_LIST_LIMIT}; 0: all)",
    )
    listing.add_argument(
        "--json", action="store_true", help="JSON Lines of the context objects, for scripts"
    )
    listing.set_defaults(handler=_contexts.run_list)

    show = actions.add_parser(
        "show",
        parents=[common],
        help="one context: config, counts, window",
        description="One context's config, counts and a summary of its LLM window.",
    )
    show.add_argument("id", metavar="ID", help="the context id")
    show.add_argument(
        "--rows",
        type=non_negative_int,
        default=_contexts.DEFAULT_WINDOW_ROWS,
        metavar="N",
        help=f"list the newest N window messages (default {_contexts.DEFAULT_WINDOW_ROWS}; 0: all)",
    )
    show.add_argument(
        "--json", action="store_true", help="the context object as JSON (no window summary)"
    )
    show.set_defaults(handler=_contexts.run_show)

    tail = commands.add_parser(
        "tail",
        parents=[common],
        help="the newest messages; -f follows new ones",
        description=(
            "The newest messages of a context, oldest first, one line each (seq, role, "
            "text). With -f, new messages are printed as they arrive until Ctrl-C."
        ),
    )
    tail.add_argument("id", metavar="ID", help="the context id")
    tail.add_argument(
        "-n",
        "--lines",
        type=non_negative_int,
        default=_tail.DEFAULT_LINES,
        metavar="N",
        help=f"how many of the newest messages (default {_tail.DEFAULT_LINES})",
    )
    tail.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new messages (Ctrl-C ends)"
    )
    tail.set_defaults(handler=_tail.run_tail)

    export = commands.add_parser(
        "export",
        parents=[common],
        help="the whole history as JSON Lines",
        description=(
            "The whole history of a context as JSON Lines, byte for byte what "
            "GET /v1/contexts/{id}/export answers, to stdout or to a file."
        ),
    )
    export.add_argument("id", metavar="ID", help="the context id")
    export.add_argument(
        "-o", "--output", metavar="FILE", help="write to FILE (replaced once complete)"
    )
    _progress_option(export)
    export.set_defaults(handler=_transfer.run_export)

    importing = commands.add_parser(
        "import",
        parents=[common],
        help="append an export file's messages to a context",
        description=(
            "Append the messages of an export file (JSON Lines; - for stdin) to a "
            "context, keeping their ids, roles, parts, metadata and token counts; "
            "the context is created when it does not exist."
        ),
    )
    importing.add_argument("file", metavar="FILE", help="an export file, or - for stdin")
    importing.add_argument(
        "--context", metavar="ID", help="the context (default: the file name without extension)"
    )
    importing.add_argument(
        "--budget",
        type=positive_int,
        metavar="N",
        help=(
            "token budget of a context the import creates "
            f"(default {_transfer.DEFAULT_IMPORT_BUDGET})"
        ),
    )
    importing.add_argument(
        "--policy",
        metavar="NAME",
        help="policy (strategy name) of a context the import creates (default: the server's)",
    )
    importing.add_argument(
        "--batch",
        type=batch_size,
        default=_transfer.DEFAULT_BATCH,
        metavar="N",
        help=f"messages per append (1-{_transfer.MAX_BATCH}, default {_transfer.DEFAULT_BATCH})",
    )
    importing.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted import: skip the messages the context already has",
    )
    _progress_option(importing)
    importing.set_defaults(handler=_transfer.run_import)

    cluster = commands.add_parser(
        "cluster", help="the cluster's state", description="The server's cluster."
    )
    cluster_actions = cluster.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = cluster_actions.add_parser(
        "status",
        parents=[common],
        help="node, leader, members, groups",
        description="The node, its leader, the cluster's members and Raft groups.",
    )
    status.add_argument("--json", action="store_true", help="the server's answer as JSON")
    status.set_defaults(handler=_cluster.run_status)

    window = commands.add_parser(
        "window",
        parents=[common],
        help="the LLM window as JSON",
        description=(
            "The LLM window of a context (what the model is sent) as pretty JSON: the "
            "server's answer to GET /v1/contexts/{id}/context."
        ),
    )
    window.add_argument("id", metavar="ID", help="the context id")
    window.add_argument(
        "--format",
        choices=["ui", "openai", "anthropic"],
        default="ui",
        help="ui (as stored, the default), openai (Chat Completions) or anthropic (Messages)",
    )
    window.add_argument(
        "--budget",
        type=positive_int,
        metavar="N",
        help="trim a copy of the window to N tokens",
    )
    window.set_defaults(handler=_window.run_window)

    keys = commands.add_parser(
        "keys",
        help="API keys for a server's --keys-file",
        description=(
            "A server's keys file stores the SHA-256 of each API key, never the key. "
            "These commands send no request."
        ),
    )
    key_actions = keys.add_subparsers(dest="action", metavar="ACTION", required=True)
    new_key = key_actions.add_parser("new", help="a new random key and its sha256")
    new_key.set_defaults(handler=_keys.run_new)
    hashed = key_actions.add_parser(
        "hash", help="the sha256 of the key read from stdin (for the keys file)"
    )
    hashed.set_defaults(handler=_keys.run_hash)
    return parser


def _quiet_broken_pipe() -> None:
    """The reader of stdout went away (``| head``): no more output, no traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _check_url(parser: argparse.ArgumentParser, url: str | None) -> None:
    """``--url`` (or ``$FASTPACA_URL``) must be an http(s) URL with a host: a usage error
    (status 2) otherwise, not a traceback at the first request."""
    url = url or os.environ.get("FASTPACA_URL")
    if not url:
        return
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        parser.error(f"--url/$FASTPACA_URL: not an http(s) URL: {url!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``fastpaca`` command; its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_url(parser, args.url)
    output = Output()
    handler: Handler = args.handler
    base_url: str | None = args.url
    api_key: str | None = args.api_key
    client = Fastpaca(base_url=base_url, api_key=api_key)
    try:
        with client:
            status = handler(args, client, output)
        output.flush()
        return status
    except CLIError as error:
        output.error(error.code, error.message)
        return error.exit_status
    except FastpacaError as error:
        output.error(*describe(error, client.base_url))
        return exit_status(error)
    except KeyboardInterrupt:
        output.err.print()
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_broken_pipe()
        return EXIT_ERROR
