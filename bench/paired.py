"""Compare two builds of dquic on a shared machine: run the same command in both source trees at
the same time, each pinned to its own CPU, then again with the CPUs swapped.

On a machine shared with other jobs, one run of a benchmark can move by 10 % from one minute to
the next, so builds measured one after the other differ by more than most changes do. Two
builds that run at once meet the same load; swapping the CPUs cancels what differs between the
two cores. Each build needs its compiled modules in place (``python setup.py build_ext
--inplace`` in each tree; ``git worktree add`` makes a second tree of another commit).

``python bench/paired.py OLD_TREE NEW_TREE [--rounds 2] -- COMMAND...`` runs ``COMMAND``
(e.g. ``python -m pytest bench/test_bench_messages.py -k asyncio --benchmark-only -s -q``)
with each tree as working directory and first on ``sys.path`` (``PYTHONPATH``), prints each
run's output lines that contain ``--grep`` (default ``/s``: lines with a rate) prefixed with
the tree's label and CPU, and keeps the commands' exit statuses. Linux only (CPU affinity);
each run is bounded by ``--timeout`` seconds.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import List, Tuple


def _start(tree: str, cpu: int, command: List[str]) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = tree + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.Popen(command, cwd=tree, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))


def _finish(proc: subprocess.Popen, timeout: float) -> Tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return -9, out
    return proc.returncode, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--grep", default="/s")
    ap.add_argument("--timeout", type=float, default=900.0)
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        ap.error("a command to run is needed after --")
    cut = argv.index("--")
    args = ap.parse_args(argv[:cut])
    command = argv[cut + 1:]
    if not command:
        ap.error("a command to run is needed after --")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        ap.error("two CPUs are needed")
    trees = (("old", os.path.abspath(args.old)), ("new", os.path.abspath(args.new)))
    status = 0
    for _ in range(args.rounds):
        for swap in (False, True):
            order = (cpus[1], cpus[0]) if swap else (cpus[0], cpus[1])
            procs = [(label, cpu, _start(tree, cpu, command))
                     for (label, tree), cpu in zip(trees, order)]
            for label, cpu, proc in procs:
                rc, out = _finish(proc, args.timeout)
                status = status or rc
                lines = [line for line in out.splitlines() if args.grep in line]
                for line in lines or [f"(exit status {rc}, no line with {args.grep!r})"]:
                    print(f"{label}@cpu{cpu}: {line}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
