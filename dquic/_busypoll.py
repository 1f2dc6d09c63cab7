"""Adaptive busy polling: how long a waiting call keeps looking at the socket before it sleeps.

A call that waits for an answer can sleep in ``select``/``epoll`` at once, or first poll the
socket without sleeping for a short while. Sleeping has a price: the CPU goes idle (on a
virtual machine it halts, and the host may run something else on it), and the answer then
waits for the wake-up and is processed with cold caches. On the development machine (2 vCPUs of
a virtual machine whose idle CPUs halt at once) a blocking UDP ping-pong between two processes
makes 11,000-14,000 round trips/s, the same ping-pong with both sides polling 117,000-144,000,
and the compiled core's work for one round trip costs 2.8 times as much CPU right after a sleep
as in a tight loop. Polling costs CPU while nothing arrives, so it pays only when the answer
comes soon.

``BusyPoll`` decides how long to poll, in the manner of the Linux guest halt-poll governor: a
budget between 0 and ``limit`` that grows (doubling, from an eighth of the limit) when a wait
ended with something arriving within ``limit`` of its start (polling that long would have
caught it), and halves when nothing came within ``limit`` (down to 0 below a sixteenth of the
limit). A request/response exchange on a short path therefore polls, while a connection whose
peer answers late, or an endpoint waiting for traffic that comes seldom, stops polling after a
few waits and sleeps at once again: polling wastes at most ``limit`` per wait, and only while
waits keep ending within ``limit``.

The drivers yield the CPU as they poll (``sched_yield``), so a process sharing the CPU (the
peer, on the same machine) runs at once; a yield that let another task run (it took more than
20 us) ends the polling and sets the budget to 0, so an endpoint on a machine whose CPUs are all
wanted (more busy processes than CPUs) gives its CPU away instead of polling on it. On a machine
with one CPU they never poll. The
blocking driver polls in C with the GIL released (``dquic._pollwait``), so the other threads of
the process (a second endpoint, the application's) run meanwhile; the asyncio driver keeps the
loop from sleeping instead, and yields the CPU (and the GIL) every fourth loop iteration.
"""
from __future__ import annotations

import os

from ._pollwait import AVAILABLE

__all__ = ["BusyPoll", "DEFAULT_LIMIT", "can_poll", "check_limit"]

#: Default longest polling per wait, seconds (``busy_poll`` of ``DQUIC`` and ``dquic.aio``).
DEFAULT_LIMIT = 0.0002


#: Whether polling could pay at all (read once: ``os.cpu_count`` reads a sysfs file per call,
#: which a process making a ``DQUIC`` per connection would pay each time).
_CAN_POLL = AVAILABLE and (os.cpu_count() or 1) > 1


def can_poll() -> bool:
    """True if the machine has more than one CPU (polling could then pay) and the compiled
    wait exists here (``_pollwait``: not on Windows)."""
    return _CAN_POLL


def check_limit(value: object) -> float:
    """``busy_poll`` as given by a user: seconds >= 0 (0 or None: never poll)."""
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("busy_poll must be a number of seconds (0 or None: off)")
    limit = float(value)
    if not limit >= 0.0:  # (also rejects NaN)
        raise ValueError("busy_poll must be >= 0 seconds")
    if limit > 0.01:
        raise ValueError("busy_poll above 0.01 s would spin for a whole scheduler tick")
    return limit


class BusyPoll:
    """The polling budget of one driver (module docstring). ``budget`` is how long the next
    wait polls; the driver reports how each wait ended with ``caught`` (polling found
    something), ``contended`` (polling gave the CPU to another task) or ``slept(waited)`` (it
    slept after polling ``budget``, or at once; ``waited`` is the time from the start of the
    wait until something arrived, None if nothing did)."""

    __slots__ = ("limit", "budget")

    def __init__(self, limit: float, enabled: bool = True) -> None:
        self.limit = limit if enabled else 0.0
        self.budget = self.limit  # start polling: the first waits tell whether it pays

    def caught(self) -> None:
        """Polling found something: keep the budget."""

    def contended(self) -> None:
        """Polling gave way: another task wanted the CPU (a yield let it run). Stop polling;
        waits answered within the limit grow the budget again."""
        self.budget = 0.0

    def slept(self, waited) -> None:
        """The wait slept; ``waited`` seconds after its start something arrived (None: nothing
        did, the wait ended at its timeout)."""
        limit = self.limit
        if not limit:
            return
        if waited is not None and waited <= limit:
            # polling a little longer would have caught it
            budget = self.budget * 2.0
            self.budget = limit if budget > limit else max(budget, limit / 8.0)
        else:
            budget = self.budget / 2.0
            self.budget = 0.0 if budget < limit / 16.0 else budget

