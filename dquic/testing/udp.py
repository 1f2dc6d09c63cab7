"""Sans-IO endpoints over real UDP sockets on loopback, driven by one selector loop: for load
generators and tests that want real sockets (the kernel's ports, a real NAT-like rebinding)
without the sync or asyncio driver.

``SocketEndpoint`` puts an :class:`~dquic.endpoint.Endpoint` on its own non-blocking socket on
127.0.0.1, registered with a selector (the selector key's ``data`` is the ``SocketEndpoint``);
subclasses react to events in ``on_event``. ``drive`` runs any number of them until a condition
holds, waking for datagrams and for the endpoints' timers only.
"""
from __future__ import annotations

import selectors
import socket
import time
from typing import Any, Callable, Optional, Sequence

from ..endpoint import Endpoint
from ..events import Event

__all__ = ["SocketEndpoint", "drive"]


class SocketEndpoint:
    """An ``Endpoint`` (``ep``) on a non-blocking UDP socket (``sock``) registered with ``sel``.

    ``read_batch``: datagrams read per readiness event at most (the others wait for the next
    turn of the loop, so one busy socket cannot starve the rest).
    """

    def __init__(self, endpoint: Endpoint, sel: selectors.BaseSelector, read_batch: int = 64) -> None:
        self.ep = endpoint
        self.sel = sel
        self.read_batch = read_batch
        self.sock: Optional[socket.socket] = None
        self.bind()

    def bind(self) -> None:
        """A fresh socket on 127.0.0.1 in place of the current one: a new source port, as a NAT
        rebinding would give."""
        if self.sock is not None:
            self.sel.unregister(self.sock)
            self.sock.close()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.sel.register(self.sock, selectors.EVENT_READ, self)

    def flush(self, now: float) -> None:
        """Send what the endpoint has (a datagram the kernel cannot take now is dropped, as
        a full network queue would)."""
        assert self.sock is not None
        for data, addr in self.ep.datagrams_to_send(now):
            try:
                self.sock.sendto(data, addr)
            except BlockingIOError:
                pass

    def read(self, now: float) -> None:
        """Hand the endpoint up to ``read_batch`` waiting datagrams."""
        assert self.sock is not None
        for _ in range(self.read_batch):
            try:
                data, addr = self.sock.recvfrom(65536)
            except BlockingIOError:
                break
            self.ep.receive_datagram(data, addr, now)

    def on_event(self, conn: Any, event: Event) -> None:
        """One event of the endpoint (override; the default ignores it)."""

    def service(self, now: float) -> None:
        """Run an expired timer, deliver the events, send what resulted."""
        t = self.ep.get_timer()
        if t is not None and t <= now:
            self.ep.handle_timer(now)
        while (item := self.ep.next_event()) is not None:
            self.on_event(*item)
        self.flush(now)

    def close(self) -> None:
        """Unregister and close the socket (the endpoint's connections are the caller's)."""
        if self.sock is not None:
            self.sel.unregister(self.sock)
            self.sock.close()
            self.sock = None


def drive(nodes: Sequence[SocketEndpoint], sel: selectors.BaseSelector, until: Callable[[], bool],
          max_time: float, on_tick: Optional[Callable[[], None]] = None, *,
          max_wait: float = 0.01) -> bool:
    """Wait for datagrams (at most ``max_wait`` s, less when a timer is due sooner) and service
    every node, until ``until()`` holds (True) or ``max_time`` seconds passed (False).
    ``on_tick`` runs after each turn of the loop."""
    deadline = time.monotonic() + max_time
    while not until():
        now = time.monotonic()
        if now > deadline:
            return False
        timers = [t for n in nodes if (t := n.ep.get_timer()) is not None]
        wait = min([max_wait] + [max(0.0, t - now) for t in timers])
        for key, _ in sel.select(wait):
            key.data.read(time.monotonic())
        now = time.monotonic()
        for n in nodes:
            n.service(now)
        if on_tick is not None:
            on_tick()
    return True
