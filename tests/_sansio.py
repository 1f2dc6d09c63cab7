"""A helper shared by the sans-IO tests (importable from tests/ as a plain module)."""
from __future__ import annotations

from typing import Tuple


def exchange(server, client, client_addr: Tuple, server_addr: Tuple, now: float,
             rounds: int = 30, step: float = 0.001) -> float:
    """Move datagrams between two endpoints until neither has anything to send (at most
    ``rounds`` exchanges, ``step`` seconds of virtual time each); returns the time reached."""
    for _ in range(rounds):
        moved = False
        for data, _ in client.datagrams_to_send(now):
            server.receive_datagram(data, client_addr, now)
            moved = True
        for data, _ in server.datagrams_to_send(now):
            client.receive_datagram(data, server_addr, now)
            moved = True
        now += step
        if not moved:
            break
    return now
