"""The sans-IO endpoint: many connections behind one UDP socket.

An ``Endpoint`` routes each incoming datagram to its connection by destination connection ID
(PROTOCOL.md §10), so a connection keeps working when its peer's address changes; it creates
server-side connections for new clients, answers unknown versions with Version Negotiation, and
forgets connections once they terminate. Like ``Connection`` it never touches a socket or a clock:
drive it with ``receive_datagram`` / ``handle_timer`` / ``datagrams_to_send`` / ``get_timer`` /
``next_event`` (the same calling protocol, so the network simulator drives it directly).
"""
from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, Dict, List, Optional, Tuple

from . import _codec as codec
from .config import Configuration
from .connection import Connection
from .errors import ProtocolError
from .events import Event

__all__ = ["Endpoint", "ConnectionAccepted"]

MIN_INITIAL_DATAGRAM = 1200


@dataclass(frozen=True)
class ConnectionAccepted(Event):
    """A new peer started a connection with this (server) endpoint."""

    address: Tuple


class Endpoint:
    """Demultiplexes datagrams to connections; accepts new connections when ``accept`` is true.

    ``config`` is the template for every connection (``is_client`` is set per connection).
    """

    def __init__(
        self,
        config: Optional[Configuration] = None,
        *,
        accept: bool = False,
        max_connections: int = 4096,
        max_handshakes: int = 256,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.config = config or Configuration()
        self.accept = accept
        self.max_connections = max_connections
        self.max_handshakes = max_handshakes
        self._random = random_bytes
        self._by_cid: Dict[bytes, Connection] = {}
        self._connections: List[Connection] = []
        self._events: Deque[Tuple[Connection, Event]] = deque()
        self._vn_pending: List[Tuple[bytes, Tuple]] = []
        self.datagrams_dropped = 0
        if accept and self.config.connection_id_length < 4:
            raise ValueError("a server endpoint needs connection IDs of at least 4 bytes")

    # ------------------------------------------------------------------------------------
    @property
    def connections(self) -> List[Connection]:
        """Live connections (not yet terminated)."""
        return list(self._connections)

    def connect(self, addr: Tuple, now: float, config: Optional[Configuration] = None) -> Connection:
        """Open a client connection to ``addr``; call ``datagrams_to_send(now)`` next."""
        cfg = (config or self.config).copy(is_client=True)
        conn = Connection(cfg, addr, random_bytes=self._random)
        self._add(conn)
        conn.connect(now)
        return conn

    def _add(self, conn: Connection) -> None:
        self._connections.append(conn)
        self._sync_cids(conn)

    def _sync_cids(self, conn: Connection) -> None:
        changes = conn.cid_changes
        if not changes:
            return
        for op, cid in changes:
            if op == "add":
                self._by_cid[cid] = conn
            elif self._by_cid.get(cid) is conn:
                del self._by_cid[cid]
        changes.clear()

    # ------------------------------------------------------------------------------------
    def receive_datagram(self, data: bytes, addr: Tuple, now: float) -> None:
        """Route one datagram; unknown or malformed ones are dropped (counted)."""
        if not data:
            self.datagrams_dropped += 1
            return
        cid_len = self.config.connection_id_length
        first = data[0]
        if first & 0x80:
            try:
                hdr = codec.pull_header(codec.Buffer(data), cid_len)
            except ProtocolError:
                self.datagrams_dropped += 1
                return
            dcid = hdr.dcid
            conn = self._by_cid.get(dcid)
            if conn is None:
                if hdr.version != codec.DQUIC_VERSION_1:
                    if hdr.version != 0 and self.accept and len(data) >= MIN_INITIAL_DATAGRAM:
                        self._vn_pending.append((codec.encode_version_negotiation(
                            hdr.scid, hdr.dcid, [codec.DQUIC_VERSION_1]), addr))
                    else:
                        self.datagrams_dropped += 1
                    return
                if (not self.accept or hdr.packet_type != codec.PACKET_INITIAL
                        or len(data) < MIN_INITIAL_DATAGRAM or len(dcid) < 8
                        or len(self._connections) >= self.max_connections
                        or self._handshaking() >= self.max_handshakes):
                    self.datagrams_dropped += 1
                    return
                conn = self._accept(hdr, addr, now)
        else:
            conn = self._by_cid.get(bytes(data[1:1 + cid_len]))
            if conn is None:
                self.datagrams_dropped += 1
                return
        conn.receive_datagram(data, addr, now)
        self._after(conn)

    def _handshaking(self) -> int:
        return sum(1 for c in self._connections if not c.handshake_complete)

    def _accept(self, hdr, addr: Tuple, now: float) -> Connection:
        cfg = self.config.copy(is_client=False)
        conn = Connection(cfg, addr, peer_cid=bytes(hdr.scid), original_dcid=bytes(hdr.dcid),
                          random_bytes=self._random)
        self._add(conn)
        self._by_cid[bytes(hdr.dcid)] = conn  # until the client switches to our CID
        self._events.append((conn, ConnectionAccepted(addr)))
        return conn

    def _after(self, conn: Connection) -> None:
        self._sync_cids(conn)
        while True:
            ev = conn.next_event()
            if ev is None:
                break
            self._events.append((conn, ev))
        if conn.is_terminated:
            self._forget(conn)

    def _forget(self, conn: Connection) -> None:
        for cid in [c for c, k in self._by_cid.items() if k is conn]:
            del self._by_cid[cid]
        try:
            self._connections.remove(conn)
        except ValueError:
            pass

    # ------------------------------------------------------------------------------------
    def datagrams_to_send(self, now: float) -> List[Tuple[bytes, Tuple]]:
        """Everything every connection wants to send now, as ``(datagram, address)``."""
        out = self._vn_pending
        self._vn_pending = []
        for conn in list(self._connections):
            out.extend(conn.datagrams_to_send(now))
            self._after(conn)
        return out

    def get_timer(self) -> Optional[float]:
        """Earliest deadline of any connection."""
        best = None
        for conn in self._connections:
            t = conn.get_timer()
            if t is not None and (best is None or t < best):
                best = t
        return best

    def handle_timer(self, now: float) -> None:
        """Run the timers of every connection whose deadline has passed."""
        for conn in list(self._connections):
            t = conn.get_timer()
            if t is not None and t <= now:
                conn.handle_timer(now)
                self._after(conn)

    def next_event(self) -> Optional[Tuple[Connection, Event]]:
        """Pop the next ``(connection, event)``, or None."""
        return self._events.popleft() if self._events else None
