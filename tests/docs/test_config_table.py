"""docs/deployment.md's configuration table and metrics table match the server."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.support.server import REPO

DEPLOYMENT = REPO / "docs" / "deployment.md"
METRICS_SOURCE = REPO / "server" / "src" / "fastpaca_server" / "api" / "metrics.py"


def help_flags() -> list[str]:
    """The options ``fastpaca-server --help`` lists (as tests/server/test_ops.py parses them)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FASTPACA_")}
    result = subprocess.run(
        [sys.executable, "-m", "fastpaca_server", "--help"],
        env=clean,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    options = result.stdout.split("options:", 1)[1]
    return sorted(set(re.findall(r"^  (-[-\w]+)", options, re.MULTILINE)))


def table_flags(text: str) -> list[str]:
    return sorted(set(re.findall(r"^\| `(--[a-z-]+)`", text, re.MULTILINE)))


def test_every_flag_is_in_the_table_and_nothing_else() -> None:
    text = DEPLOYMENT.read_text()
    section = text.split("## Configuration", 1)[1]
    assert help_flags() == sorted(["-h", *table_flags(section)]), "the table differs from --help"


def test_every_row_names_its_variable() -> None:
    section = DEPLOYMENT.read_text().split("## Configuration", 1)[1]
    for row in re.findall(r"^\| `--.*$", section, re.MULTILINE):
        flag, variable = re.findall(r"`([^`]+)`", row)[:2]
        expected = "FASTPACA_" + flag.removeprefix("--").replace("-", "_").upper()
        assert variable.startswith(expected), row


def test_the_tables_agree_with_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    assert table_flags(readme) == table_flags(DEPLOYMENT.read_text())


def test_every_metric_named_exists() -> None:
    source = METRICS_SOURCE.read_text()
    defined = set(re.findall(r'"(fastpaca_[a-z_]+)"', source))
    section = DEPLOYMENT.read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(fastpaca_[a-z_]+)", section))
    assert named, "no metrics in docs/deployment.md"
    for name in named:
        assert name in defined or name.removesuffix("_total") in defined, name
