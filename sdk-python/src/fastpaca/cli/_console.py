"""Where the CLI writes: tables and data to stdout, errors, notes and progress to stderr.

Output meant for pipes (``export``, ``window``, ``--json``) is written as plain
bytes/text to stdout, never through rich. rich writes the tables (to stdout) and
the error lines and progress bars (to stderr); it colours only a terminal and
honours ``NO_COLOR`` (and ``FORCE_COLOR``) itself.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

__all__ = ["Output", "ProgressReporter", "dump_json_line"]

PIPE_WIDTH = 200
"""Width of tables written to something that is not a terminal (and no ``$COLUMNS``)."""


def _width(stream: TextIO) -> int | None:
    """``None`` (rich asks the terminal) for a terminal; else ``$COLUMNS`` or a wide default,
    so a table piped to a file is not wrapped at 80 columns."""
    if stream.isatty():
        return None
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else PIPE_WIDTH


def dump_json_line(value: Any) -> str:
    """One JSON value on one line (keys in their order, UTF-8 as is)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class Output:
    """The two consoles of one run, and the plain stdout for data."""

    def __init__(self, stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self.stdout = stdout if stdout is not None else sys.stdout
        self.stderr = stderr if stderr is not None else sys.stderr
        self.out = Console(file=self.stdout, highlight=False, width=_width(self.stdout))
        self.err = Console(file=self.stderr, highlight=False, width=_width(self.stderr))

    def error(self, code: str | None, message: str) -> None:
        """``error: <code>: <message>`` on stderr (one line, no markup taken from the text)."""
        line = Text("error", style="bold red")
        line.append(f": {code}: {message}" if code else f": {message}")
        self.err.print(line, soft_wrap=True)

    def note(self, message: str) -> None:
        """An informational line on stderr."""
        self.err.print(Text(message, style="dim"), soft_wrap=True)

    def warn(self, message: str) -> None:
        """A warning line on stderr."""
        line = Text("warning", style="bold yellow")
        line.append(f": {message}")
        self.err.print(line, soft_wrap=True)

    def show(self, renderable: RenderableType = "") -> None:
        """A table (or any rich renderable) on stdout. Off a terminal its lines lose the
        trailing padding rich adds, so piped tables ``grep`` and ``diff`` cleanly."""
        if self.out.is_terminal:
            self.out.print(renderable)
            return
        with self.out.capture() as capture:
            self.out.print(renderable)
        text = "\n".join(line.rstrip() for line in capture.get().splitlines())
        self.stdout.write(text + "\n")

    def write_data(self, text: str) -> None:
        """Plain text to stdout (no rich: no markup, colours or wrapping)."""
        self.stdout.write(text)

    def write_bytes(self, data: bytes) -> None:
        """Raw bytes to stdout (exactly these bytes, whatever the locale)."""
        self.stdout.flush()
        buffer = getattr(self.stdout, "buffer", None)
        if buffer is None:  # a text-only stream (tests): decode
            self.stdout.write(data.decode("utf-8"))
        else:
            buffer.write(data)

    def flush(self) -> None:
        self.stdout.flush()
        buffer = getattr(self.stdout, "buffer", None)
        if buffer is not None:
            buffer.flush()

    def progress_wanted(self, flag: bool | None) -> bool:
        """``--progress``/``--no-progress``, else only when stderr is a terminal."""
        return flag if flag is not None else self.stderr.isatty()

    @contextmanager
    def progress(
        self, enabled: bool, description: str, total: int | None
    ) -> Iterator[ProgressReporter]:
        """A progress bar on stderr (or a reporter that shows nothing)."""
        if not enabled:
            yield ProgressReporter(None, None, total)
            return
        # --progress on a stderr that is not a terminal still draws the bar there.
        console = Console(
            file=self.stderr,
            highlight=False,
            force_terminal=True if not self.stderr.isatty() else None,
            width=_width(self.stderr),
        )
        columns = (
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("messages"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(escape(description), total=total)
            reporter = ProgressReporter(progress, task, total)
            yield reporter
            if reporter.total is None:  # stdin: the total is known at the end
                progress.update(task, total=reporter.completed, completed=reporter.completed)


class ProgressReporter:
    """Advances one progress bar; does nothing when there is none."""

    def __init__(self, progress: Progress | None, task: Any, total: int | None) -> None:
        self._progress = progress
        self._task = task
        self.total = total
        self.completed = 0

    def advance(self, count: int = 1) -> None:
        self.completed += count
        if self._progress is None:
            return
        if self.total is not None and self.completed > self.total:
            self.total = self.completed  # the context grew while it was read
            self._progress.update(self._task, total=self.total)
        self._progress.update(self._task, completed=self.completed)
