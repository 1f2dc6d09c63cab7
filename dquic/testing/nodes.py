"""Small sans-IO nodes for exercising the simulator (and anything else that routes datagrams).

They implement the :class:`~dquic.testing.sim.Node` interface and record what they see, so tests
can assert on deliveries without writing their own endpoints.
"""
from __future__ import annotations

import struct
from typing import List, Optional, Tuple

from .sim import Address

__all__ = ["SinkNode", "EchoNode", "BlastNode"]

_SEQ = struct.Struct("!Q")


class SinkNode:
    """Receives and records datagrams; never sends, never sets a timer.

    ``received`` holds ``(now, addr, data)`` for each delivery when ``record`` is true; the
    counters ``count`` and ``bytes`` are always kept.
    """

    def __init__(self, record: bool = True) -> None:
        self.record = record
        self.received: List[Tuple[float, Address, bytes]] = []
        self.count = 0
        self.bytes = 0

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.count += 1
        self.bytes += len(data)
        if self.record:
            self.received.append((now, addr, data))

    def datagrams_to_send(self, now: float) -> List[Tuple[bytes, Address]]:
        return []

    def get_timer(self) -> Optional[float]:
        return None

    def handle_timer(self, now: float) -> None:
        pass

    def sequence_numbers(self) -> List[int]:
        """Sequence numbers of recorded datagrams sent by :class:`BlastNode`, arrival order."""
        return [_SEQ.unpack_from(data)[0] for _, _, data in self.received if len(data) >= 8]


class EchoNode(SinkNode):
    """Sends every datagram it receives straight back to its sender."""

    def __init__(self, record: bool = True) -> None:
        super().__init__(record)
        self._out: List[Tuple[bytes, Address]] = []

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        super().receive_datagram(data, addr, now)
        self._out.append((data, addr))

    def datagrams_to_send(self, now: float) -> List[Tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out


class BlastNode(SinkNode):
    """Sends ``count`` numbered datagrams of ``size`` bytes (>= 8) to ``dest``.

    The first 8 bytes carry the sequence number (big-endian). With ``interval=0`` all datagrams
    are returned by the first ``datagrams_to_send`` call; otherwise one goes out every
    ``interval`` seconds of virtual time, starting at ``start``, driven by the node's timer.
    It also records whatever it receives (as a :class:`SinkNode`).
    """

    def __init__(self, dest: Address, count: int, size: int = 1200, interval: float = 0.0,
                 start: float = 0.0, record: bool = True) -> None:
        if size < 8:
            raise ValueError("size must be >= 8 to carry the sequence number")
        super().__init__(record)
        self.dest = dest
        self.total = count
        self.size = size
        self.interval = interval
        self.next_seq = 0
        self._next_time: Optional[float] = start if count else None
        self._padding = b"\x00" * (size - 8)
        self._fired = False

    def _datagram(self) -> bytes:
        data = _SEQ.pack(self.next_seq) + self._padding
        self.next_seq += 1
        return data

    @property
    def done(self) -> bool:
        """True once every datagram has been handed to the network."""
        return self.next_seq >= self.total

    def datagrams_to_send(self, now: float) -> List[Tuple[bytes, Address]]:
        due = self._next_time
        if due is None or now < due:
            return []
        if self.interval == 0.0:
            self._next_time = None
            dest = self.dest
            return [(self._datagram(), dest) for _ in range(self.total - self.next_seq)]
        if not self._fired:
            return []
        self._fired = False
        out = [(self._datagram(), self.dest)]
        self._next_time = None if self.next_seq >= self.total else due + self.interval
        return out

    def get_timer(self) -> Optional[float]:
        return self._next_time if self.interval else None

    def handle_timer(self, now: float) -> None:
        if self._next_time is not None and now >= self._next_time:
            self._fired = True
