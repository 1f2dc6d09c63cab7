"""bench/paired.py, the tool that runs a command in two source trees at once, each on its own
CPU, then with the CPUs swapped. Skipped where bench/ is not next to tests/ (an installed
wheel), off Linux (CPU affinity) or with fewer than two CPUs to pin to."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

PAIRED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench",
                      "paired.py")

pytestmark = pytest.mark.skipif(
    not os.path.exists(PAIRED) or not hasattr(os, "sched_getaffinity")
    or len(os.sched_getaffinity(0)) < 2,
    reason="needs the source tree's bench/ and two CPUs this process may use")


def test_each_tree_runs_the_command_on_each_cpu(tmp_path):
    trees = [tmp_path / "a", tmp_path / "b"]
    for t in trees:
        t.mkdir()
        (t / "which.py").write_text(f"NAME = {t.name!r}\n")
    # the command sees its own tree first on the import path, and reports its CPU
    probe = ("import os, which; "
             "print('rate', which.NAME, sorted(os.sched_getaffinity(0)), os.getcwd())")
    out = subprocess.run([sys.executable, PAIRED, str(trees[0]), str(trees[1]), "--rounds", "1",
                          "--grep", "rate", "--", sys.executable, "-c", probe],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 4
    cpus = sorted(os.sched_getaffinity(0))[:2]
    seen = set()
    for line in lines:
        label, rest = line.split(": ", 1)
        tree = "a" if label.startswith("old@") else "b"
        cpu = int(label.split("@cpu")[1])
        assert rest.startswith(f"rate {tree} [{cpu}] ") and rest.endswith(str(tmp_path / tree))
        seen.add((tree, cpu))
    assert seen == {(t, c) for t in "ab" for c in cpus}  # both trees on both CPUs


def test_a_command_is_required():
    out = subprocess.run([sys.executable, PAIRED, "x", "y"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode != 0 and "command" in out.stderr
