"""The sans-IO endpoint: many connections behind one UDP socket.

An ``Endpoint`` routes each incoming datagram to its connection by destination connection ID
(PROTOCOL.md §17), so a connection keeps working when its peer's address changes; it creates
server-side connections for new clients, answers unknown versions with Version Negotiation, and
forgets connections once they terminate. Like ``CoreConnection`` it never touches a socket or a clock:
drive it with ``receive_datagram`` / ``handle_timer`` / ``datagrams_to_send`` / ``get_timer`` /
``next_event`` (the same calling protocol, so the network simulator drives it directly).

Cost follows events, not the number of connections
---------------------------------------------------
No call visits every connection. Three structures keep it so:

* **Timer heap.** Each connection with a deadline has one entry ``[key, seq, conn, due]`` in a
  binary heap: ``due`` is the connection's current ``get_timer()``, ``key`` <= ``due`` the
  heap position. The endpoint re-reads a connection's deadline after polling it for output
  (input and timers put a connection in the work set, so a poll always follows). A deadline that moves earlier gets a new entry
  (the old one is marked dead); one that moves later only updates ``due``, and the entry is
  moved down when it reaches the top. So a connection whose idle deadline advances with every
  packet costs no heap operation per packet, and ``get_timer`` is the top entry, exact.
* **Work set.** Connections with output to build: the endpoint adds those it has just given
  input, and a connection adds itself (``CoreConnection._work``) when the application queues
  something on it or when one call could not send all it had. ``datagrams_to_send`` /
  ``trains_to_send`` poll only these.
* **Maps kept incrementally**: connection ID -> connection and the peer's stateless-reset
  token -> connection (both from ``CoreConnection.cid_changes``), and the half-open connections
  (those whose handshake is not yet confirmed), for the Retry and handshake limits.

An idle connection is in none of the busy structures; it costs nothing until its own deadline
(idle timeout, keep-alive) reaches the top of the heap.
"""
from __future__ import annotations

import base64
import hmac
import logging
import os
from collections import deque
from heapq import heapify, heappop, heappush, heapreplace
from itertools import islice
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from . import _codec as codec
from .config import Configuration
from .connection import (MOVED_CID_CHANGES, MOVED_CONFIRMED, MOVED_EVENTS, MOVED_READABLE,
                         MOVED_TERMINATED, CoreConnection)
from .errors import ErrorCode, ProtocolError
from .events import (ConnectionTerminated, Event, HandshakeCompleted, HandshakeFailed,
                     MessageReceived, PathChanged)
from .tokens import ResetTokens, RetryTokens, retry_integrity_tag

__all__ = ["Endpoint", "ConnectionAccepted", "reset_key_for", "connection_log"]

#: CoreConnection life-cycle records (INFO: established, failed handshakes with the key the peer
#: presented, closed and why, migrations; DEBUG: accepted, Retry and stateless reset sent).
#: Nothing per packet.
logger = logging.getLogger("dquic.connection")

MIN_INITIAL_DATAGRAM = 1200
#: A stateless reset is sent only in answer to datagrams at least this long (it must be shorter
#: than what triggered it, and still look like a short-header packet: RFC 9000 §10.3).
MIN_RESET_TRIGGER = 42
#: Label of the stateless-reset key derived from an endpoint's static key (``reset_key_for``).
RESET_KEY_LABEL = b"dquic/1 stateless reset key"


def reset_key_for(identity) -> bytes:
    """The stateless-reset key of an endpoint whose static key pair is ``identity``:
    HMAC-SHA256(private key, label). A server restarted with the same key file computes the
    same reset tokens, so it can reset the connections its previous process held (PROTOCOL.md
    §17); the key itself cannot be recovered from the tokens."""
    return hmac.new(identity.private, RESET_KEY_LABEL, "sha256").digest()


@dataclass(frozen=True)
class ConnectionAccepted(Event):
    """A new peer started a connection with this (server) endpoint."""

    address: Tuple


class ConnectionLog(logging.LoggerAdapter):
    """``dquic.connection`` records about one connection, prefixed with its peer address and
    connection ID (also in each record's ``peer`` and ``cid`` attributes)."""

    def process(self, msg, kwargs):
        extra = self.extra or {}
        kwargs["extra"] = {**kwargs.get("extra", {}), **extra}
        return "[%s %s] %s" % (extra.get("peer"), extra.get("cid"), msg), kwargs


def connection_log(conn: CoreConnection) -> ConnectionLog:
    """The logger adapter for ``conn``."""
    peer = conn.peer_addr
    host = "%s:%s" % (peer[0], peer[1]) if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
    return ConnectionLog(logger, {"peer": host, "cid": bytes(conn.host_cid).hex()})


def _code(ev) -> str:
    code = ev.error_code
    if not ev.application:
        try:
            name = ErrorCode(code).name
        except ValueError:
            name = None
        if name:
            code = "%s 0x%x" % (name, code)
    return "code %s%s" % (code, ", %r" % ev.reason if ev.reason else "")


def _b64_key(key: Optional[bytes]) -> str:
    return base64.b64encode(key).decode("ascii") if key else "not revealed"


def _log_events(conn: CoreConnection, events: List[Event]) -> None:
    ev: Any  # narrowed by `type(ev) is ...` below, which type checkers do not follow
    failed = False
    for ev in events:
        kind = type(ev)
        if kind is HandshakeCompleted:
            connection_log(conn).info(
                "established (%s, peer key %s)", "client" if conn.is_client else "server",
                _b64_key(ev.peer_key))
        elif kind is HandshakeFailed:
            # one record says it all (the ConnectionTerminated that follows is not logged)
            failed = True
            if ev.timeout:
                how = "handshake failed: the peer stopped answering (%s)" % ev.reason
            elif ev.by_peer:
                how = "handshake refused by the peer (%s)" % _code(ev)
            elif ev.error_code == ErrorCode.AUTHENTICATION_FAILED:
                how = "handshake refused (%s)" % _code(ev)
            else:
                how = "handshake failed (%s)" % _code(ev)
            connection_log(conn).info("%s; peer key %s", how, _b64_key(ev.peer_key))
        elif kind is ConnectionTerminated and failed:
            pass
        elif kind is ConnectionTerminated:
            if ev.timeout:
                how = ev.reason
            elif ev.reason == "stateless reset":
                how = "stateless reset from the peer (it lost the connection's state)"
            elif ev.by_peer:
                how = "closed by the peer (%s)" % _code(ev)
            elif ev.error_code:
                how = "failed (%s)" % _code(ev)
            else:
                how = "closed"
            connection_log(conn).info("%s", how)
        elif kind is PathChanged:
            connection_log(conn).info("peer moved from %s to %s (path validated)", ev.old_addr, ev.new_addr)


class Endpoint:
    """Demultiplexes datagrams to connections; accepts new connections when ``accept`` is true.

    ``config`` is the template for every connection (``is_client`` is set per connection);
    the connections it accepts share one server copy of it as their ``config``.

    Address validation (PROTOCOL.md §18): a new client is sent a stateless Retry (no connection
    state, no Diffie-Hellman) when ``require_retry`` is set or when ``retry_threshold`` handshakes
    are already in progress; handshakes beyond ``max_handshakes`` and connections beyond
    ``max_connections`` are dropped. Datagrams for unknown connection IDs are answered with a
    stateless reset (at most ``max_resets_per_second``), under ``reset_key``: by default one
    derived from ``config.identity`` (``reset_key_for``), so the tokens survive a restart with
    the same key; a random one when there is no identity. ``make_identity`` (a callable
    returning a ``KeyPair``) gives an encrypted endpoint without an identity one when it first
    accepts a connection. ``route_mtu`` (a callable: peer address -> the largest UDP payload
    the local route takes, or None; drivers pass ``dquic._socket.route_mtu``) bounds each new
    connection's path MTU discovery by the local route instead of 1452 bytes.
    ``message_events=False`` (what the drivers use) makes no ``MessageReceived`` event per
    stream: the connections with something new to read are listed in ``readable`` instead
    (a dict used as an ordered set, ``take_readable()`` empties it), one entry however many
    streams; every other event is as usual.
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
        make_identity: Optional[Callable[[], Any]] = None,
        route_mtu: Optional[Callable[[Tuple], Optional[int]]] = None,
        message_events: bool = True,
    ) -> None:
        self.config = config or Configuration()
        self.message_events = message_events
        #: Connections with something new to read (``message_events`` off), in the order
        #: they became readable; the driver empties it (``take_readable``).
        self.readable: Dict[CoreConnection, None] = {}
        # an encrypted endpoint without an identity gets one from make_identity when it first
        # accepts a connection (a client-only endpoint never pays for a key it does not use)
        self._make_identity = make_identity
        # the driver's look-up of the local route's MTU (its socket's ``route_mtu``): each new
        # connection's path MTU discovery searches up to it (PROTOCOL.md §14.7)
        self.route_mtu = route_mtu
        self.accept = accept
        self.max_connections = max_connections
        self.max_handshakes = max_handshakes
        self._random = random_bytes
        # live connections, in the order they were made (a dict used as an ordered set)
        self._connections: Dict[CoreConnection, None] = {}
        self._by_cid: Dict[bytes, CoreConnection] = {}
        self._by_token: Dict[bytes, CoreConnection] = {}
        # half-open connections -> the client-chosen DCID still routed to them (servers), or None
        self._half_open: Dict[CoreConnection, Optional[bytes]] = {}
        # connections with output to build (shared with each connection as ``_work``)
        self._work: Dict[CoreConnection, None] = {}
        # timer heap (module docstring): entries [key, seq, conn, due]; due None = dead entry
        self._heap: List[list] = []
        self._entry: Dict[CoreConnection, list] = {}
        self._seq = 0
        self._dead_entries = 0
        self._now = 0.0  # the latest time any call was given
        # connections touched since the last take_active() (None until a driver asks)
        self._touched: Optional[Dict[CoreConnection, None]] = None
        #: Pending ``(connection, event)`` pairs, oldest first, which ``take_events`` /
        #: ``next_event`` consume; a driver may test it for emptiness without a call.
        self.events: Deque[Tuple[CoreConnection, Event]] = deque()
        self._stateless_out: List[Tuple[bytes, Tuple]] = []
        # connections polled by trains_to_send(settle=False), their bookkeeping still to do
        self._unsettled: List[CoreConnection] = []
        # a handshake began since the last settle(): it makes the next one's ephemeral key
        self._prepare_key = False
        self.require_retry = require_retry
        self.retry_threshold = max_handshakes // 2 if retry_threshold is None else retry_threshold
        self._token_key = token_key
        self._retry_tokens_made: Optional[RetryTokens] = None  # made when first needed
        if reset_key is None and self.config.identity is not None:
            reset_key = reset_key_for(self.config.identity)
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
    def connections(self) -> List[CoreConnection]:
        """Live connections (not yet terminated)."""
        return list(self._connections)

    @property
    def connection_count(self) -> int:
        """How many connections are live (without building a list)."""
        return len(self._connections)

    @property
    def handshakes_in_progress(self) -> int:
        """Connections whose handshake is not yet confirmed."""
        return len(self._half_open)

    def connect(self, addr: Tuple, now: float, config: Optional[Configuration] = None) -> CoreConnection:
        """Open a client connection to ``addr``; call ``datagrams_to_send(now)`` next."""
        if config is not None and config.is_client:
            cfg = config  # (a client configuration the caller keeps for its connections)
        else:
            cfg = (config or self.config).copy(is_client=True)
        conn = CoreConnection(cfg, addr, random_bytes=self._random, reset_token=self._reset_tokens)
        if self.route_mtu is not None:
            conn.set_route_mtu(self.route_mtu(addr))
        self._now = now
        self._trace(conn, now)
        self._add(conn, None)
        self._prepare_key = cfg.encryption
        conn.connect(now)
        self._after(conn)
        return conn

    def _add(self, conn: CoreConnection, initial_dcid: Optional[bytes]) -> None:
        self._connections[conn] = None
        if not self.message_events:
            conn.message_events = False
        conn._work = self._work
        self._half_open[conn] = initial_dcid
        if initial_dcid is not None:
            self._by_cid[initial_dcid] = conn  # until the client switches to our CID
        self._sync_cids(conn)

    def _sync_cids(self, conn: CoreConnection) -> None:
        changes = conn.cid_changes
        if not changes:
            return
        by_cid = self._by_cid
        by_token = self._by_token
        for op, value in changes:
            if op == "add":
                by_cid[value] = conn
            elif op == "remove":
                if by_cid.get(value) is conn:
                    del by_cid[value]
            elif op == "reset":
                by_token[value] = conn
            elif by_token.get(value) is conn:  # "unreset"
                del by_token[value]
        conn.cid_changes = None  # made again on the next change

    # ------------------------------------------------------------------------------------
    def receive_datagram(self, data: bytes, addr: Tuple, now: float) -> None:
        """Route one datagram; unknown or malformed ones are dropped (counted)."""
        self._now = now
        if data and not data[0] & 0x80:
            # a short header (after the handshake, nearly every datagram): the DCID routes it
            cid_len = self.config.connection_id_length
            dcid = data[1:1 + cid_len]
            if type(dcid) is not bytes:
                dcid = bytes(dcid)
            conn = self._by_cid.get(dcid)
            if conn is None:
                self._on_unknown_short(data, dcid, addr, now)
                return
            conn.receive_datagram(data, addr, now)
            self._after(conn)
            return
        if not data:
            self.datagrams_dropped += 1
            return
        cid_len = self.config.connection_id_length
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
                retry = self._retry_tokens().validate(hdr.token, addr, now)
                if retry is None:
                    self.datagrams_dropped += 1  # forged, expired or for another address
                    return
            elif self.require_retry or len(self._half_open) >= self.retry_threshold:
                self._send_retry(hdr, addr, now)
                return
            if len(self._half_open) >= self.max_handshakes:
                self.datagrams_dropped += 1
                return
            conn = self._accept(hdr, addr, now, retry)
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
        self._now = now
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

    def _server_config(self) -> Configuration:
        """The configuration of accepted connections: ``config`` as a server's, one copy shared
        by all of them (a copy holds ~1.6 KB), made again when ``config`` was replaced or
        changed since."""
        if (self._make_identity is not None and self.config.identity is None
                and self.config.encryption):
            self.config.identity = self._make_identity()
        cfg = self._accept_config
        # (the fields' dicts compared: what the dataclass's __eq__ does, without its tuples)
        if cfg is None or self._accept_config_of.__dict__ != self.config.__dict__:
            self._accept_config_of = self.config.copy()
            cfg = self._accept_config = self.config.copy(is_client=False)
        return cfg

    def _accept(self, hdr, addr: Tuple, now: float, retry: Optional[Tuple[bytes, bytes]]) -> CoreConnection:
        cfg = self._server_config()
        if retry is not None:
            odcid, rscid = retry
        else:
            odcid, rscid = bytes(hdr.dcid), None
        # after a Retry the connection keeps the Retry's source connection ID as its own (the
        # client sends to it already, and ignores a server connection with another one: the
        # one this endpoint may have made for an earlier copy of the client's first packet)
        conn = CoreConnection(cfg, addr, host_cid=rscid, peer_cid=bytes(hdr.scid),
                              original_dcid=odcid, retry_source_cid=rscid, random_bytes=self._random,
                              reset_token=self._reset_tokens)
        if self.route_mtu is not None:
            conn.set_route_mtu(self.route_mtu(addr))
        self._trace(conn, now)
        self._add(conn, None if rscid is not None else bytes(hdr.dcid))
        self._prepare_key = cfg.encryption
        self.events.append((conn, ConnectionAccepted(addr)))
        if logger.isEnabledFor(logging.DEBUG):
            connection_log(conn).debug("accepted%s", " (address validated by Retry)" if retry else "")
        return conn

    def _trace(self, conn: CoreConnection, now: float) -> None:
        if conn.config.qlog_dir:
            from .qlog import QlogTrace

            conn.attach_qlog(QlogTrace.for_connection(conn.config.qlog_dir, conn.original_dcid,
                                                      conn.is_client), now)

    def _retry_tokens(self) -> RetryTokens:
        """The Retry token issuer (its key is made on first use: most endpoints never need it)."""
        tokens = self._retry_tokens_made
        if tokens is None:
            tokens = self._retry_tokens_made = RetryTokens(self._token_key)
        return tokens

    def _send_retry(self, hdr, addr: Tuple, now: float) -> None:
        """Stateless Retry (RFC 9000 §8.1.2): the client must come back with the token."""
        rscid = self.config.new_connection_id(self._random)  # the connection keeps it: routable
        token = self._retry_tokens().issue(addr, bytes(hdr.dcid), rscid, now)
        body = codec.encode_retry(codec.DQUIC_VERSION_1, bytes(hdr.scid), rscid, token)
        self._stateless_out.append((body + retry_integrity_tag(bytes(hdr.dcid), body), addr))
        self.retries_sent += 1
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("[%s] Retry sent (%d handshakes in progress)", addr, len(self._half_open))

    def _on_unknown_short(self, data: bytes, dcid: bytes, addr: Tuple, now: float) -> None:
        # a stateless reset from a peer that lost our connection? (RFC 9000 §10.3.1): one
        # look-up of the datagram's last 16 bytes among the tokens our peers gave us
        if len(data) >= 21:
            conn = self._by_token.get(bytes(data[-16:]))
            if conn is not None and conn.is_stateless_reset(data):
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
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("[%s] stateless reset sent for unknown connection ID %s", addr, dcid.hex())

    def _after(self, conn: CoreConnection, polled: bool = False) -> None:
        """Bookkeeping after the endpoint touched ``conn``: maps, events, then either the work
        set (input or a timer: output to build) or, once it was polled for output, its deadline
        in the heap. A connection in the work set needs no heap refresh yet: ``get_timer``
        answers "now" while the set is not empty, and the poll that follows re-reads the
        deadline once, after sending (which moves it again anyway)."""
        if self._touched is not None:
            self._touched[conn] = None
        events = self.events
        n = len(events)
        flags = conn.move_events(events)  # its events, as (conn, event) pairs, and what changed
        if flags & MOVED_READABLE:
            self.readable[conn] = None
        if (flags & MOVED_EVENTS and (len(events) - n > 1 or type(events[n][1]) is not MessageReceived)
                and logger.isEnabledFor(logging.INFO)):  # (data arriving is nothing to log)
            _log_events(conn, [ev for _, ev in islice(events, n, None)])
        if flags & ~(MOVED_EVENTS | MOVED_READABLE) != MOVED_CONFIRMED or self._half_open:
            # (not just data on a confirmed connection while no handshake is in progress)
            if flags & MOVED_CID_CHANGES:
                self._sync_cids(conn)
            if flags & MOVED_TERMINATED:
                self._forget(conn)
                return
            if flags & MOVED_CONFIRMED and conn in self._half_open:
                dcid = self._half_open.pop(conn)
                if dcid is not None and self._by_cid.get(dcid) is conn:
                    del self._by_cid[dcid]  # the client uses our connection IDs now
        if polled:
            due = conn.get_timer()
            entry = self._entry.get(conn)
            if entry is not None and due is not None and due >= entry[0]:
                entry[3] = due  # later (or the same): the common case of _set_deadline
            else:
                self._set_deadline(conn, due)
        else:
            self._work[conn] = None

    def _forget(self, conn: CoreConnection) -> None:
        if conn not in self._connections:
            return
        del self._connections[conn]
        if conn._qlog is not None:
            conn._qlog.close()
        by_cid = self._by_cid
        dcid = self._half_open.pop(conn, None)
        for cid in (dcid, conn.original_dcid, *conn._host_cids.values()):
            if cid is not None and by_cid.get(cid) is conn:
                del by_cid[cid]
        for token in conn.peer_reset_tokens():
            if self._by_token.get(token) is conn:
                del self._by_token[token]
        self._work.pop(conn, None)
        conn._work = None
        self._set_deadline(conn, None)

    # ------------------------------------------------------------------------------------
    # the timer heap (module docstring)
    def _set_deadline(self, conn: CoreConnection, due: Optional[float]) -> None:
        entry = self._entry.get(conn)
        if entry is not None:
            if due is not None and due >= entry[0]:
                entry[3] = due  # later (or the same): moved down when it reaches the top
                return
            entry[3] = None  # earlier, or none: this entry is dead
            self._dead_entries += 1
            del self._entry[conn]
        if due is None:
            return
        self._seq += 1
        entry = [due, self._seq, conn, due]
        self._entry[conn] = entry
        heappush(self._heap, entry)
        if self._dead_entries > 1024 and self._dead_entries > len(self._entry):
            self._heap = [e for e in self._heap if e[3] is not None]
            heapify(self._heap)
            self._dead_entries = 0

    def _top(self) -> Optional[list]:
        """The heap's first live entry, with its key equal to its connection's deadline."""
        heap = self._heap
        while heap:
            entry = heap[0]
            due = entry[3]
            if due is None:
                heappop(heap)
                self._dead_entries -= 1
            elif due > entry[0]:
                entry[0] = due  # its deadline moved later since it was pushed
                self._seq += 1
                entry[1] = self._seq
                heapreplace(heap, entry)
            else:
                return entry
        return None

    # ------------------------------------------------------------------------------------
    def trains_to_send(self, now: float, max_bytes: int = 65000, max_segments: int = 64,
                       settle: bool = True) -> List[Tuple[Any, int, Tuple]]:
        """What the connections with work want to send now: the transmit API, ``(data,
        segment_size, address)``, ``data`` holding datagrams of ``segment_size`` bytes back to
        back (the last may be shorter; see ``CoreConnection.datagram_trains``), stateless
        replies (version negotiation, Retry, stateless reset) one per transmit.

        With ``settle`` False the bookkeeping of the connections it polled (their events and
        deadlines) waits for ``settle()``, which the driver calls as soon as it has handed
        the trains to the socket: a request or a reply then leaves before that work. Until
        then the driver must not read ``events`` (``get_timer``, ``handle_timer``,
        ``take_events`` and this method settle first themselves)."""
        if self._unsettled:
            self.settle()
        self._now = now
        out: List[Any] = []
        if self._stateless_out:
            out = [(d, len(d), a) for d, a in self._stateless_out]
            self._stateless_out = []
        work = self._work
        if work:
            # the connections with output to build, taken out of the work set (one that
            # cannot send everything in one call adds itself back)
            conns = list(work)
            work.clear()
            for conn in conns:
                out.extend(conn.datagram_trains(now, max_bytes, max_segments))
                if settle:
                    self._after(conn, True)
            if not settle:
                self._unsettled = conns
        return out

    def settle(self) -> None:
        """The bookkeeping ``trains_to_send(settle=False)`` left for later: the polled
        connections' events, routing changes and deadlines; and, once this endpoint has begun
        a handshake since the last call, the ephemeral key of the next one (a driver calls
        this after sending, so that key is made while the peers work, not while one waits
        for the first message of its handshake)."""
        conns = self._unsettled
        if conns:
            self._unsettled = []
            for conn in conns:
                self._after(conn, True)
        if self._prepare_key:
            self._prepare_key = False
            from ._noise import prepare_ephemeral  # (loaded already: a handshake began)

            prepare_ephemeral()

    def datagrams_to_send(self, now: float) -> List[Tuple[bytes, Tuple]]:
        """``trains_to_send`` one datagram at a time, as ``(datagram, address)``: for drivers
        that send datagram by datagram."""
        if self._unsettled:
            self.settle()
        self._now = now
        out: List[Any] = self._stateless_out
        self._stateless_out = []
        work = self._work
        if work:
            conns = list(work)
            work.clear()
            for conn in conns:
                out.extend(conn.datagrams_to_send(now))
                self._after(conn, True)
        return out

    def get_timer(self) -> Optional[float]:
        """When ``handle_timer`` (then ``datagrams_to_send``) must next be called: the earliest
        connection deadline, or at once (the latest time given) while connections have output
        to build."""
        if self._unsettled:
            self.settle()
        if self._work or self._stateless_out:
            return self._now
        entry = self._top()
        return None if entry is None else entry[0]

    def handle_timer(self, now: float) -> None:
        """Run the timers of the connections whose deadline has passed (only those); returns
        at once when none has (a driver may call it after every batch of input)."""
        self._now = now
        if self._unsettled:
            self.settle()
        heap = self._heap
        if not heap or heap[0][0] > now:
            return  # every key is at most its entry's deadline: nothing is due
        due = []
        while True:
            entry = self._top()
            if entry is None or entry[0] > now:
                break
            heappop(heap)
            conn = entry[2]
            del self._entry[conn]
            due.append(conn)
        for conn in due:
            conn.handle_timer(now)
            self._after(conn)

    def take_active(self) -> List[CoreConnection]:
        """The connections this endpoint gave input, ran timers of or polled for output since
        the previous call (terminated ones included), so that a driver can look at just those
        after a pass. The first call returns every live connection and starts the tracking."""
        touched = self._touched
        if touched is None:
            self._touched = {}
            return list(self._connections)
        if not touched:
            return []
        out = list(touched)
        touched.clear()
        return out

    def next_event(self) -> Optional[Tuple[CoreConnection, Event]]:
        """Pop the next ``(connection, event)``, or None."""
        if self._unsettled:
            self.settle()
        return self.events.popleft() if self.events else None

    def take_readable(self) -> List[CoreConnection]:
        """The connections listed in ``readable`` (``message_events`` off), oldest first, and
        empty it."""
        return self._take(self.readable)

    def take_events(self) -> List[Tuple[CoreConnection, Event]]:
        """All pending ``(connection, event)`` pairs at once, oldest first (empty if none)."""
        return self._take(self.events)

    def _take(self, pending: Any) -> list:
        # the items of ``events`` or ``readable``, settled first, and the container emptied
        if self._unsettled:
            self.settle()
        if not pending:
            return []
        out = list(pending)
        pending.clear()
        return out
