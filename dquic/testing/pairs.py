"""Two sans-IO endpoints wired back to back, without a simulator: no link, no loss, the
caller's clock.

``core_pair`` makes a client and a server ``CoreConnection`` that know each other's connection
IDs (what an ``Endpoint`` would arrange for the server), the client already connecting;
``exchange`` moves datagrams between any two sans-IO endpoints (connections or ``Endpoint``\\ s)
until a condition holds or neither has anything to send. Tests and benchmarks of the core use
them to reach an established connection in a few lines.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

from ..config import Configuration
from ..connection import CoreConnection

__all__ = ["core_pair", "exchange"]


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

    Without ``until`` it stops after the first round in which neither side sent anything (the
    time then is one step past it). With ``until`` it also stops, without the step, as soon as
    ``until()`` holds after a round; the caller checks ``until()`` again to tell success from
    a stall. No timers are run: the endpoints' own ``handle_timer`` is the caller's business.
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
