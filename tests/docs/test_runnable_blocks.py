"""The code blocks marked runnable in README.md and docs/*.md run against a real server.

A block is marked by an HTML comment on the line before its fence (GitHub does not
show it)::

    <!-- runnable -->
    ```sh
    curl -s -w '\\n' http://127.0.0.1:4000/v1/contexts/demo-chat/context
    ```

Shell blocks (``sh``, ``bash``) run under ``bash -euo pipefail`` with ``curl``
made to fail on an HTTP error status; Python blocks run in ``.venv/bin/python``.
``http://127.0.0.1:4000`` and ``localhost:4000`` in a block are rewritten to the
test server, and ``FASTPACA_URL`` points at it. The blocks of a file run in file
order (a later block may use a context an earlier one created), each file in a
working directory of its own.

Words after ``runnable`` in the marker change what is checked:

- ``http-error``: the block shows an error answer on purpose, so ``curl`` keeps
  its exit status 0 on an HTTP error;
- ``output``: the block's output must match the next ``json`` block, value for
  value, except that timestamps match any timestamp and a value shortened with
  ``…`` matches any value with the same ``xxx_`` prefix.

A block that needs what a test cannot provide (a real model API key, PostgreSQL,
a cluster, ``make serve`` itself) stays unmarked.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import REPO, ServerProcess

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
VENV_BIN = REPO / ".venv" / "bin"
PYTHON = VENV_BIN / "python"
BLOCK_TIMEOUT = 30.0

MARKER = re.compile(r"^\s*<!--\s*runnable\b(?P<options>[^>]*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
SHELL = {"sh", "bash", "shell"}
PYTHON_LANGS = {"python", "py"}
SCRIPT_LANGS = {"ts", "typescript", "js", "javascript"}
OPTIONS = {"http-error", "output"}
LOCAL_URL = re.compile(r"(https?://)?(?:localhost|127\.0\.0\.1):4000\b")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
# curl fails on an HTTP error status (and still prints the error body)
FAILING_CURL = 'curl() { command curl --fail-with-body "$@"; }\n'


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    options: frozenset[str]
    expected: str | None  # the next json block, for the "output" option

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def _fence_body(lines: list[str], start: int) -> tuple[str, str, int] | None:
    """(lang, code without the fence's indent, index after the closing fence) at ``start``."""
    opening = FENCE.match(lines[start]) if start < len(lines) else None
    if opening is None:
        return None
    indent = opening["indent"]
    body: list[str] = []
    for index in range(start + 1, len(lines)):
        if lines[index].strip() == "```":
            return opening["lang"], "".join(body), index + 1
        line = lines[index]
        body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
    raise AssertionError(f"{lines[start]!r} at line {start + 1} is never closed")


def collect(path: Path) -> list[Block]:
    """Every block of ``path`` marked runnable, in file order.

    A marker that is not followed by a fence, or with an unknown option, fails.
    """
    lines = path.read_text().splitlines(keepends=True)
    blocks: list[Block] = []
    for index, line in enumerate(lines):
        marker = MARKER.match(line)
        if marker is None:
            continue
        where = f"{path.relative_to(REPO)}:{index + 1}"
        options = frozenset(marker["options"].split())
        assert options <= OPTIONS, f"{where}: unknown marker options {sorted(options - OPTIONS)}"
        fenced = _fence_body(lines, index + 1)
        assert fenced is not None, f"{where}: a runnable marker must be right before a fence"
        lang, code, after = fenced
        assert lang in SHELL | PYTHON_LANGS | SCRIPT_LANGS, f"{where}: cannot run {lang!r}"
        expected = None
        if "output" in options:
            rest = after
            while rest < len(lines) and not FENCE.match(lines[rest]):
                assert not MARKER.match(lines[rest]), f"{where}: no json block before the next"
                rest += 1
            following = _fence_body(lines, rest)
            assert following and following[0] == "json", f"{where}: no json block follows"
            expected = following[1]
        blocks.append(Block(path, index + 2, lang, code, options, expected))
    return blocks


BLOCKS = [block for path in DOC_FILES for block in collect(path)]


def rewrite_urls(code: str, url: str) -> str:
    """Point every ``127.0.0.1:4000`` / ``localhost:4000`` (with or without scheme) at ``url``."""
    host_port = url.split("://", 1)[1]
    return LOCAL_URL.sub(lambda m: f"{m[1] or ''}{host_port}", code)


def run_block(block: Block, url: str, cwd: Path, timeout: float = BLOCK_TIMEOUT) -> str:
    """Run one block against the server at ``url``; its output. Fails unless it exits 0."""
    code = rewrite_urls(block.code, url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTPACA_")}
    env["FASTPACA_URL"] = url
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    if block.lang in SHELL:
        if "http-error" not in block.options:
            code = FAILING_CURL + code
        command = ["bash", "-euo", "pipefail", "-c", code]
    elif block.lang in PYTHON_LANGS:
        command = [str(PYTHON), "-c", code]
    else:
        pytest.skip(f"{block.lang} blocks are not run")
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a timeout kills its children too
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise AssertionError(f"{block.id} ran longer than {timeout}s") from None
    assert process.returncode == 0, (
        f"{block.id} exited with {process.returncode}\n"
        f"--- stdout\n{stdout[-3000:]}\n--- stderr\n{stderr[-3000:]}"
    )
    if block.expected is not None:
        check_output(block, stdout)
    return stdout


def json_documents(text: str) -> list[Any]:
    decoder = json.JSONDecoder()
    documents: list[Any] = []
    position = 0
    text = text.strip()
    while position < len(text):
        document, position = decoder.raw_decode(text, position)
        documents.append(document)
        while position < len(text) and text[position].isspace():
            position += 1
    return documents


def matches(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and expected.keys() == actual.keys()
            and all(matches(value, actual[key]) for key, value in expected.items())
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(matches(e, a) for e, a in zip(expected, actual, strict=True))
        )
    if isinstance(expected, str) and isinstance(actual, str):
        if TIMESTAMP.match(expected):
            return TIMESTAMP.match(actual) is not None
        if "…" in expected:
            prefix = expected.split("…", 1)[0]
            kind = prefix.split("_", 1)[0] + "_" if "_" in prefix else ""
            return actual.startswith(kind)
    return type(expected) is type(actual) and expected == actual


def check_output(block: Block, stdout: str) -> None:
    assert block.expected is not None
    expected = json_documents(block.expected)
    try:
        actual = json_documents(stdout)
    except json.JSONDecodeError as error:
        raise AssertionError(f"{block.id} printed no JSON ({error}): {stdout[-2000:]}") from None
    assert matches(expected, actual), (
        f"{block.id}: the output differs from the json block after it\n"
        f"--- documented\n{json.dumps(expected, ensure_ascii=False)}\n"
        f"--- actual\n{json.dumps(actual, ensure_ascii=False)}"
    )


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("docs-server") / "data").start()
    yield process
    process.stop()


class FileRuns:
    """Runs the blocks of each file in order, running earlier ones first when skipped."""

    def __init__(self, server: ServerProcess, root: Path) -> None:
        self.server = server
        self.root = root
        self.done: dict[Path, int] = {}  # file → how many of its blocks have run

    def run(self, block: Block) -> None:
        blocks = [b for b in BLOCKS if b.path == block.path]
        position = blocks.index(block)
        cwd = self.root / block.id.split(":")[0].replace("/", "_")
        cwd.mkdir(exist_ok=True)
        for earlier in blocks[self.done.get(block.path, 0) : position]:
            if earlier.lang in SHELL | PYTHON_LANGS:
                run_block(earlier, self.server.url, cwd)
        self.done[block.path] = position + 1
        run_block(block, self.server.url, cwd)


@pytest.fixture(scope="module")
def file_runs(docs_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> FileRuns:
    return FileRuns(docs_server, tmp_path_factory.mktemp("docs-cwd"))


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_block_runs(block: Block, file_runs: FileRuns) -> None:
    file_runs.run(block)


def test_every_runnable_marker_is_in_a_file_this_test_reads() -> None:
    skip = {".venv", "node_modules", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
    marked = set()
    for path in REPO.rglob("*.md"):
        if skip.isdisjoint(path.relative_to(REPO).parts) and "<!-- runnable" in path.read_text(
            errors="replace"
        ):
            marked.add(path)
    assert marked <= set(DOC_FILES), f"runnable blocks nobody runs: {sorted(marked)}"
    assert len(BLOCKS) >= 10, "the docs have lost their runnable blocks"


# The harness itself: a broken block must fail.


def _block(lang: str, code: str, *options: str, expected: str | None = None) -> Block:
    return Block(REPO / "README.md", 0, lang, code, frozenset(options), expected)


@pytest.mark.parametrize(
    ("lang", "code", "options"),
    [
        ("sh", "echo fine\nfalse\necho never\n", ()),
        ("sh", "echo $UNSET_VARIABLE_OF_THE_DOCS_TEST\n", ()),
        ("bash", "false | cat\n", ()),
        ("sh", "curl -s http://127.0.0.1:4000/v1/contexts/no-such-context-anywhere\n", ()),
        ("python", "raise SystemExit(3)\n", ()),
        ("python", "import fastpaca\nfastpaca.Fastpaca().context('nowhere-at-all').get()\n", ()),
    ],
    ids=["shell-exit", "shell-unset", "shell-pipefail", "curl-404", "python-exit", "python-404"],
)
def test_a_broken_block_fails(
    lang: str, code: str, options: tuple[str, ...], docs_server: ServerProcess, tmp_path: Path
) -> None:
    with pytest.raises(AssertionError, match="exited with"):
        run_block(_block(lang, code, *options), docs_server.url, tmp_path)


def test_a_block_that_hangs_fails(docs_server: ServerProcess, tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="ran longer"):
        run_block(_block("sh", "sleep 5\n"), docs_server.url, tmp_path, timeout=0.5)


def test_an_answer_that_drifted_from_its_json_block_fails(
    docs_server: ServerProcess, tmp_path: Path
) -> None:
    code = "curl -s -w '\\n' http://127.0.0.1:4000/health/live\n"
    run_block(_block("sh", code, "output", expected='{"status": "ok"}'), docs_server.url, tmp_path)
    with pytest.raises(AssertionError, match="differs"):
        block = _block("sh", code, "output", expected='{"status": "down"}')
        run_block(block, docs_server.url, tmp_path)
    errors = "curl -s http://127.0.0.1:4000/v1/contexts/no-such-context-anywhere\n"
    run_block(_block("sh", errors, "http-error"), docs_server.url, tmp_path)


def test_urls_are_rewritten() -> None:
    code = "curl localhost:4000/a http://127.0.0.1:4000/b 'http://localhost:4000/c' :40001"
    assert rewrite_urls(code, "http://127.0.0.1:5555") == (
        "curl 127.0.0.1:5555/a http://127.0.0.1:5555/b 'http://127.0.0.1:5555/c' :40001"
    )
