"""Two sans-IO endpoints wired back to back, without a simulator: no link, no loss, the
caller's clock.

``core_pair`` makes a client and a server ``CoreConnection`` that know each other's connection
IDs (what an ``Endpoint`` would arrange for the server), the client already connecting;
``exchange`` moves datagrams between any two sans-IO endpoints (connections or ``Endpoint``\\ s)
until a condition holds or neither has anything to send; ``run_due_timers`` runs the timers
that expired. Tests and benchmarks of the core use them to reach an established connection
in a few lines. ``Wire`` joins two endpoints by a
lossless path with a fixed one-way delay and tells the caller when the next thing happens (an
arrival or a timer), for event-driven runs over virtual time.
"""
from __future__ import annotations

import heapq
from typing import Any, Callable, List, Optional, Tuple

from ..config import Configuration
from ..connection import CoreConnection

__all__ = ["Wire", "core_pair", "exchange", "run_due_timers"]


def core_pair(client_config: Configuration, server_config: Configuration, client_addr: Tuple,
              server_addr: Tuple, now: float = 0.0) -> Tuple[CoreConnection, CoreConnection]:
    """A client ``CoreConnection`` to ``server_addr`` that has called ``connect(now)`` and the
    server ``CoreConnection`` for it (peer at ``client_addr``): ``(client, server)``."""
    client = CoreConnection(client_config, server_addr)
    server = CoreConnection(server_config, client_addr, peer_cid=client.host_cid,
                            original_dcid=client.original_dcid)
    client.connect(now)
    return client, server


def exchange(server: Any, client: Any, client_addr: Tuple, server_addr: Tuple, now: float,
             rounds: int = 30, step: float = 0.001,
             until: Optional[Callable[[], bool]] = None) -> float:
    """Move datagrams client -> server, then server -> client, at most ``rounds`` times,
    ``step`` seconds of virtual time apart; returns the time reached.

    It stops after the first round in which neither side sent anything (the time then is one
    step past it) and, given ``until``, as soon as ``until()`` holds after a round (without the
    step); the caller checks ``until()`` again to tell success from a stall. No timers are run:
    the endpoints' own ``handle_timer`` is the caller's business.
    """
    for _ in range(rounds):
        moved = False
        for data, _ in client.datagrams_to_send(now):
            server.receive_datagram(data, client_addr, now)
            moved = True
        for data, _ in server.datagrams_to_send(now):
            client.receive_datagram(data, server_addr, now)
            moved = True
        if until is not None and until():
            return now
        now += step
        if not moved:
            break
    return now


def run_due_timers(now: float, *endpoints: Any) -> List[Any]:
    """Call ``handle_timer(now)`` on each of the sans-IO ``endpoints`` (connections or
    ``Endpoint``\\ s) whose timer expired by ``now``, in order; returns those it ran."""
    ran = []
    for ep in endpoints:
        t = ep.get_timer()
        if t is not None and t <= now:
            ep.handle_timer(now)
            ran.append(ep)
    return ran


class Wire:
    """A lossless, order-keeping path of ``one_way`` seconds each way between a client and a
    server endpoint (any objects with the sans-IO endpoint methods), on the caller's clock.

    Each turn: ``collect(now)`` puts what both endpoints send now on the wire (a datagram to any
    address but the other side's is a RuntimeError: these two talk only to each other);
    ``next_time()`` is the earliest arrival or timer; ``advance(now)`` delivers what arrived by
    ``now`` and then runs the timers that expired.
    """

    def __init__(self, client: Any, client_addr: Tuple, server: Any, server_addr: Tuple,
                 one_way: float) -> None:
        self.client, self.client_addr = client, client_addr
        self.server, self.server_addr = server, server_addr
        self.one_way = one_way
        self._queue: List[Tuple[float, int, bool, bytes]] = []  # (arrival, seq, to_server, data)
        self._seq = 0

    def collect(self, now: float) -> None:
        for sender, to_server, dest in ((self.client, True, self.server_addr),
                                        (self.server, False, self.client_addr)):
            for data, addr in sender.datagrams_to_send(now):
                if addr != dest:
                    raise RuntimeError(f"a datagram to {addr}, not to the other side {dest}")
                self._seq += 1
                heapq.heappush(self._queue, (now + self.one_way, self._seq, to_server, data))

    def next_time(self) -> Optional[float]:
        times = [t for t in (self.client.get_timer(), self.server.get_timer()) if t is not None]
        if self._queue:
            times.append(self._queue[0][0])
        return min(times) if times else None

    def advance(self, now: float) -> None:
        queue = self._queue
        while queue and queue[0][0] <= now:
            _, _, to_server, data = heapq.heappop(queue)
            if to_server:
                self.server.receive_datagram(data, self.client_addr, now)
            else:
                self.client.receive_datagram(data, self.server_addr, now)
        run_due_timers(now, self.client, self.server)
