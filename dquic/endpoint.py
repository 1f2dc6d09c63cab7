"""The sans-IO endpoint: many connections behind one UDP socket.

An ``Endpoint`` routes each incoming datagram to its connection by destination connection ID
(PROTOCOL.md §17), so a connection keeps working when its peer's address changes; it creates
server-side connections for new clients, answers unknown versions with Version Negotiation, and
forgets connections once they terminate. Like ``Connection`` it never touches a socket or a clock:
drive it with ``receive_datagram`` / ``handle_timer`` / ``datagrams_to_send`` / ``get_timer`` /
``next_event`` (the same calling protocol, so the network simulator drives it directly).
"""
from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from . import _codec as codec
from .config import Configuration
from .connection import Connection
from .errors import ProtocolError
from .events import Event
from .tokens import ResetTokens, RetryTokens, retry_integrity_tag

__all__ = ["Endpoint", "ConnectionAccepted"]

MIN_INITIAL_DATAGRAM = 1200
#: A stateless reset is sent only in answer to datagrams at least this long (it must be shorter
#: than what triggered it, and still look like a short-header packet: RFC 9000 §10.3).
MIN_RESET_TRIGGER = 42


@dataclass(frozen=True)
class ConnectionAccepted(Event):
    """A new peer started a connection with this (server) endpoint."""

    address: Tuple


class Endpoint:
    """Demultiplexes datagrams to connections; accepts new connections when ``accept`` is true.

    ``config`` is the template for every connection (``is_client`` is set per connection);
    the connections it accepts share one server copy of it as their ``config``.

    Address validation (PROTOCOL.md §18): a new client is sent a stateless Retry (no connection
    state, no Diffie-Hellman) when ``require_retry`` is set or when ``retry_threshold`` handshakes
    are already in progress; handshakes beyond ``max_handshakes`` and connections beyond
    ``max_connections`` are dropped. Datagrams for unknown connection IDs are answered with a
    stateless reset (at most ``max_resets_per_second``).
    """

    def __init__(
        self,
        config: Optional[Configuration] = None,
        *,
        accept: bool = False,
        max_connections: int = 4096,
        max_handshakes: int = 256,
        retry_threshold: Optional[int] = None,
        require_retry: bool = False,
        max_resets_per_second: float = 100.0,
        random_bytes: Callable[[int], bytes] = os.urandom,
        token_key: Optional[bytes] = None,
        reset_key: Optional[bytes] = None,
    ) -> None:
        self.config = config or Configuration()
        self.accept = accept
        self.max_connections = max_connections
        self.max_handshakes = max_handshakes
        self._random = random_bytes
        self._by_cid: Dict[bytes, Connection] = {}
        self._connections: List[Connection] = []
        self._events: Deque[Tuple[Connection, Event]] = deque()
        self._stateless_out: List[Tuple[bytes, Tuple]] = []
        self.require_retry = require_retry
        self.retry_threshold = max_handshakes // 2 if retry_threshold is None else retry_threshold
        self._retry_tokens = RetryTokens(token_key)
        self._reset_tokens = ResetTokens(reset_key)
        self._reset_budget = max_resets_per_second
        self._reset_rate = max_resets_per_second
        self._reset_budget_time = 0.0
        self._accept_config: Optional[Configuration] = None  # see _server_config
        self._accept_config_of: Optional[Configuration] = None
        self.datagrams_dropped = 0
        self.retries_sent = 0
        self.resets_sent = 0
        if accept and self.config.connection_id_length < 4:
            raise ValueError("a server endpoint needs connection IDs of at least 4 bytes")
        if self.config.encryption:
            # loaded now (about 10 ms), not inside the first handshake, where the time would
            # inflate that connection's first RTT sample and so its start
            from . import handshake  # noqa: F401

    # ------------------------------------------------------------------------------------
    @property
    def connections(self) -> List[Connection]:
        """Live connections (not yet terminated)."""
        return list(self._connections)

    def connect(self, addr: Tuple, now: float, config: Optional[Configuration] = None) -> Connection:
        """Open a client connection to ``addr``; call ``datagrams_to_send(now)`` next."""
        cfg = (config or self.config).copy(is_client=True)
        conn = Connection(cfg, addr, random_bytes=self._random, reset_token=self._reset_tokens)
        self._trace(conn, now)
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
                        self._stateless_out.append((codec.encode_version_negotiation(
                            hdr.scid, hdr.dcid, [codec.DQUIC_VERSION_1]), addr))
                    else:
                        self.datagrams_dropped += 1
                    return
                if (not self.accept or hdr.packet_type != codec.PACKET_INITIAL
                        or len(data) < MIN_INITIAL_DATAGRAM or len(dcid) < 8
                        or len(self._connections) >= self.max_connections):
                    self.datagrams_dropped += 1
                    return
                retry = None
                if hdr.token:
                    retry = self._retry_tokens.validate(hdr.token, addr, now)
                    if retry is None:
                        self.datagrams_dropped += 1  # forged, expired or for another address
                        return
                elif self.require_retry or self._handshaking() >= self.retry_threshold:
                    self._send_retry(hdr, addr, now)
                    return
                if self._handshaking() >= self.max_handshakes:
                    self.datagrams_dropped += 1
                    return
                conn = self._accept(hdr, addr, now, retry)
        else:
            dcid = bytes(data[1:1 + cid_len])
            conn = self._by_cid.get(dcid)
            if conn is None:
                self._on_unknown_short(data, dcid, addr, now)
                return
        conn.receive_datagram(data, addr, now)
        self._after(conn)

    def receive_segments(self, data: bytes, segment_size: int, addr: Tuple, now: float) -> None:
        """Route datagrams of ``segment_size`` bytes packed back to back in ``data`` (the last
        may be shorter), as UDP generic receive offload (GRO) delivers them: the same as
        ``receive_datagram`` on each, with runs for one connection handed over in one call."""
        n = len(data)
        if segment_size <= 0 or segment_size >= n:
            self.receive_datagram(data, addr, now)
            return
        view = memoryview(data)
        cid_len = self.config.connection_id_length
        by_cid = self._by_cid
        off = 0
        while off < n:
            if not data[off] & 0x80 and n - off > cid_len:
                conn = by_cid.get(bytes(view[off + 1:off + 1 + cid_len]))
                if conn is not None:
                    done = conn.receive_segments(view[off:], segment_size, addr, now)
                    if done:
                        off += done
                        self._after(conn)
                        continue
            end = min(off + segment_size, n)
            self.receive_datagram(bytes(view[off:end]), addr, now)
            off = end

    def _handshaking(self) -> int:
        # half-open: the client has not yet shown it holds the keys (and so its address)
        return sum(1 for c in self._connections if not c.handshake_confirmed)

    def _server_config(self) -> Configuration:
        """The configuration of accepted connections: ``config`` as a server's, one copy shared
        by all of them (a copy holds ~1.6 KB), made again when ``config`` was replaced or
        changed since."""
        cfg = self._accept_config
        if cfg is None or self._accept_config_of != self.config:
            self._accept_config_of = self.config.copy()
            cfg = self._accept_config = self.config.copy(is_client=False)
        return cfg

    def _accept(self, hdr, addr: Tuple, now: float, retry: Optional[Tuple[bytes, bytes]]) -> Connection:
        cfg = self._server_config()
        if retry is not None:
            odcid, rscid = retry
        else:
            odcid, rscid = bytes(hdr.dcid), None
        conn = Connection(cfg, addr, peer_cid=bytes(hdr.scid), original_dcid=odcid,
                          retry_source_cid=rscid, random_bytes=self._random,
                          reset_token=self._reset_tokens)
        self._trace(conn, now)
        self._add(conn)
        self._by_cid[bytes(hdr.dcid)] = conn  # until the client switches to our CID
        self._events.append((conn, ConnectionAccepted(addr)))
        return conn

    def _trace(self, conn: Connection, now: float) -> None:
        if conn.config.qlog_dir:
            from .qlog import QlogTrace

            conn.attach_qlog(QlogTrace.for_connection(conn.config.qlog_dir, conn.original_dcid,
                                                      conn.is_client), now)

    def _send_retry(self, hdr, addr: Tuple, now: float) -> None:
        """Stateless Retry (RFC 9000 §8.1.2): the client must come back with the token."""
        rscid = self._random(self.config.connection_id_length)
        token = self._retry_tokens.issue(addr, bytes(hdr.dcid), rscid, now)
        body = codec.encode_retry(codec.DQUIC_VERSION_1, bytes(hdr.scid), rscid, token)
        self._stateless_out.append((body + retry_integrity_tag(bytes(hdr.dcid), body), addr))
        self.retries_sent += 1

    def _on_unknown_short(self, data: bytes, dcid: bytes, addr: Tuple, now: float) -> None:
        # a stateless reset from a peer that lost our connection? (RFC 9000 §10.3.1)
        for conn in self._connections:
            if conn.is_stateless_reset(data):
                conn.on_stateless_reset(now)
                self._after(conn)
                return
        self.datagrams_dropped += 1
        if not self.accept or len(data) < MIN_RESET_TRIGGER:
            return
        # answer with a stateless reset, rate limited, always shorter than the trigger
        self._reset_budget = min(self._reset_rate, self._reset_budget
                                 + (now - self._reset_budget_time) * self._reset_rate)
        self._reset_budget_time = now
        if self._reset_budget < 1.0:
            return
        self._reset_budget -= 1.0
        size = min(len(data) - 1, 64)
        filler = bytearray(self._random(size - 16))
        filler[0] = 0x40 | (filler[0] & 0x3F)
        self._stateless_out.append((bytes(filler) + self._reset_tokens(dcid), addr))
        self.resets_sent += 1

    def _after(self, conn: Connection) -> None:
        if conn.cid_changes:
            self._sync_cids(conn)
        evs = conn.take_events()
        if evs:
            self._events.extend([(conn, ev) for ev in evs])
        if conn.is_terminated:
            self._forget(conn)

    def _forget(self, conn: Connection) -> None:
        if conn._qlog is not None:
            conn._qlog.close()
        for cid in [c for c, k in self._by_cid.items() if k is conn]:
            del self._by_cid[cid]
        try:
            self._connections.remove(conn)
        except ValueError:
            pass

    # ------------------------------------------------------------------------------------
    def datagrams_to_send(self, now: float) -> List[Tuple[bytes, Tuple]]:
        """Everything every connection wants to send now, as ``(datagram, address)``."""
        out = self._stateless_out
        self._stateless_out = []
        for conn in list(self._connections):
            out.extend(conn.datagrams_to_send(now))
            self._after(conn)
        return out

    def trains_to_send(self, now: float, max_bytes: int = 65000,
                       max_segments: int = 64) -> List[Tuple[Any, int, Tuple]]:
        """``datagrams_to_send`` as trains for segmentation offload: ``(data, segment_size,
        address)``, ``data`` holding datagrams of ``segment_size`` bytes back to back (the last
        may be shorter); see ``Connection.datagram_trains``."""
        out = [(d, len(d), a) for d, a in self._stateless_out]
        self._stateless_out = []
        for conn in list(self._connections):
            out.extend(conn.datagram_trains(now, max_bytes, max_segments))
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

    def take_events(self) -> List[Tuple[Connection, Event]]:
        """All pending ``(connection, event)`` pairs at once, oldest first (empty if none)."""
        if not self._events:
            return []
        out = list(self._events)
        self._events.clear()
        return out
