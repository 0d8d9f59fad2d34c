"""Schemathesis over the spec against a real server, in a pytest process of its own.

The tests are in :mod:`tests.server._schemathesis_suite` (what they check and
why is described there). They run in a child pytest because Schemathesis
patches Hypothesis process-wide: in this session, the falsifying examples of
the other Hypothesis tests would print empty. The child's report, with a
``curl`` reproduction per failure, becomes this test's failure message.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUITE = Path(__file__).with_name("_schemathesis_suite.py")
REPORT_CHARS = 40_000


@pytest.mark.timeout(300)
def test_the_server_answers_as_the_spec_says() -> None:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-o",
        "addopts=",  # this session's `-p no:schemathesis` must not reach the child
        "-p",
        "no:cacheprovider",
        "-q",
        "-rfE",
        str(SUITE.relative_to(REPO)),
    ]
    child = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=280)
    report = (child.stdout + child.stderr)[-REPORT_CHARS:]
    assert child.returncode == 0, f"{' '.join(command[2:])} failed:\n{report}"
