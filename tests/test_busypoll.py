"""The busy-poll budget (``dquic._busypoll.BusyPoll``): how it grows and shrinks with how waits
end, and the ``busy_poll`` option's checks. The drivers' use of it is tested over real sockets in
``tests/io/test_busy_poll.py``."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dquic._busypoll import DEFAULT_LIMIT, BusyPoll, can_poll, check_limit

LIMIT = 0.0001


def test_starts_polling_for_the_whole_limit():
    assert BusyPoll(LIMIT).budget == LIMIT
    assert DEFAULT_LIMIT > 0


def test_disabled_never_polls_and_never_learns():
    for bp in (BusyPoll(0.0), BusyPoll(LIMIT, enabled=False)):
        assert bp.budget == 0.0 and bp.limit == 0.0
        bp.slept(LIMIT / 2)  # an answer that polling would have caught
        assert bp.budget == 0.0


def test_catching_keeps_the_budget():
    bp = BusyPoll(LIMIT)
    bp.slept(None)
    budget = bp.budget
    bp.caught()
    assert bp.budget == budget


def test_late_answers_shrink_the_budget_to_zero():
    bp = BusyPoll(LIMIT)
    seen = [bp.budget]
    for _ in range(5):
        bp.slept(10 * LIMIT)  # an answer long after the limit: polling was wasted
        seen.append(bp.budget)
    assert seen == [LIMIT, LIMIT / 2, LIMIT / 4, LIMIT / 8, LIMIT / 16, 0.0]
    bp.slept(None)  # nothing came at all: the same
    assert bp.budget == 0.0


def test_answers_within_the_limit_grow_it_back():
    bp = BusyPoll(LIMIT)
    for _ in range(6):
        bp.slept(None)
    assert bp.budget == 0.0
    bp.slept(LIMIT * 0.9)  # polling the whole limit would have caught it
    assert bp.budget == LIMIT / 8
    for expected in (LIMIT / 4, LIMIT / 2, LIMIT, LIMIT):
        bp.slept(LIMIT / 3)
        assert bp.budget == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.just("caught"),
                          st.floats(min_value=0.0, max_value=1.0, allow_nan=False)), max_size=60))
def test_budget_stays_within_zero_and_the_limit(events):
    bp = BusyPoll(LIMIT)
    for ev in events:
        if ev == "caught":
            bp.caught()
        else:
            bp.slept(ev)
        assert 0.0 <= bp.budget <= LIMIT
        # never a sliver: either off or at least a sixteenth of the limit
        assert bp.budget == 0.0 or bp.budget >= LIMIT / 16


def test_option_checks():
    assert check_limit(None) == 0.0
    assert check_limit(0) == 0.0
    assert check_limit(0.0002) == 0.0002
    for bad in (-0.001, math.nan, 0.5):
        with pytest.raises(ValueError):
            check_limit(bad)
    for bad in ("0.001", True, [0.001]):
        with pytest.raises(TypeError):
            check_limit(bad)


def test_can_poll_answers():
    assert isinstance(can_poll(), bool)


def test_poll_ready_waits_without_sleeping_until_ready_or_time():
    import socket
    import time

    from dquic._pollwait import AVAILABLE, CONTENDED, READY_A, READY_B, READY_W, poll_ready

    if not AVAILABLE:
        assert poll_ready(-1, -1, -1, 0.001) == -1
        return
    a, b = socket.socketpair()
    try:
        t0 = time.monotonic()
        got = poll_ready(a.fileno(), -1, -1, 0.002)  # nothing to read: the time runs out
        if got == 0:
            assert time.monotonic() - t0 >= 0.002
        else:  # (on a busy machine a yield may let another task run first)
            assert got == CONTENDED
        b.send(b"x")
        assert poll_ready(-1, a.fileno(), -1, 1.0) == READY_B  # readable, in the second slot
        a.recv(1)
        assert poll_ready(a.fileno(), -1, b.fileno(), 1.0) == READY_W  # b is writable
        b.send(b"y")
        assert poll_ready(a.fileno(), -1, -1, 1.0) == READY_A
        a.recv(1)
        assert poll_ready(a.fileno(), -1, -1, 0.0) in (0, CONTENDED)
    finally:
        a.close()
        b.close()


def test_contended_stops_polling():
    bp = BusyPoll(LIMIT)
    bp.contended()
    assert bp.budget == 0.0
    bp.slept(LIMIT / 2)  # answers within the limit grow it back
    assert bp.budget == LIMIT / 8


def test_poll_ready_gives_way_to_a_task_that_wants_the_cpu():
    """Pinned to one CPU beside a process that spins on it, the poll's first yields let that
    process run: ``poll_ready`` reports the CPU wanted (``CONTENDED``) instead of polling on."""
    import os
    import subprocess
    import sys

    from dquic._pollwait import AVAILABLE

    if not AVAILABLE or not hasattr(os, "sched_setaffinity"):
        pytest.skip("needs the compiled wait and sched_setaffinity (Linux)")
    code = r"""
import os, socket, subprocess, sys, time
cpu = min(os.sched_getaffinity(0))
os.sched_setaffinity(0, {cpu})
spin = "import os, time\nos.sched_setaffinity(0, {%d})\nt = time.monotonic()\nwhile time.monotonic() - t < 5: pass" % cpu
busy = subprocess.Popen([sys.executable, "-c", spin])
try:
    time.sleep(0.3)
    from dquic._pollwait import poll_ready
    a, b = socket.socketpair()
    print(poll_ready(a.fileno(), -1, -1, 1.0))  # CONTENDED
finally:
    busy.kill()
    busy.wait()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "-2", out.stdout + out.stderr
