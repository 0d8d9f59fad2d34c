"""examples/cluster/run_cluster.py end to end: three nodes, the leader killed, nothing lost.

The script starts its own cluster (three server processes on free loopback ports,
data in a temporary directory), so the test only runs it, bounded, and reads what
it printed: the killed leader, a different new leader, every message of the
conversation read back from a survivor; and that it left no process or directory
behind.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.server import REPO

SCRIPT = REPO / "examples" / "cluster" / "run_cluster.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_cluster_example", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTPACA_")}
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # the script stops its nodes on SIGTERM
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        pytest.fail(f"run_cluster.py did not finish within {timeout:g}s:\n{output}")
    return subprocess.CompletedProcess(process.args, process.returncode, output, "")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone as far as the test cares.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def test_run_cluster_survives_the_leader_dying() -> None:
    example = load_script()
    done = run_script()
    output = done.stdout
    assert done.returncode == 0, output

    started = re.findall(r"started (n\d): api \S+, raft \S+, pid (\d+)", output)
    assert [name for name, _ in started] == ["n1", "n2", "n3"], output
    killed = re.search(r"killed leader (n\d) \(SIGKILL", output)
    new = re.search(r"new leader: (n\d)", output)
    assert killed and new, output
    assert killed.group(1) != new.group(1)
    assert re.search(rf"^leader: {killed.group(1)} ", output, re.MULTILINE), output

    expected = example.BEFORE_FAILOVER + example.AFTER_FAILOVER
    read_back = re.search(r"the conversation read from (n\d) \((\d+) messages\):\n", output)
    assert read_back, output
    assert read_back.group(1) != killed.group(1)
    assert int(read_back.group(2)) == len(expected)
    listing = output[read_back.end() :]
    for seq, (role, text) in enumerate(expected, start=1):
        assert f"seq={seq} {role:<9} {text}" in listing, (seq, output)
    assert f"all {len(expected)} messages are there" in output

    # It cleaned up: no node process left, no temporary directory.
    for _, pid in started:
        assert not pid_alive(int(pid)), f"node pid {pid} is still running"
    root = re.search(r"data directories and logs in (\S+)", output)
    assert root and not Path(root.group(1)).exists()
