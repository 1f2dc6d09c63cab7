"""The blocking, socket-like ``DQUIC`` API over a real UDP socket.

``DQUIC`` is what the original seed project offered (``bind``, ``send_to``, ``receive_from``,
``close``) on top of the sans-IO core (``dquic.endpoint.Endpoint``): one UDP socket, any number
of connections, each identified to the application by its peer's address.

Threading model
---------------
The sans-IO core is driven by one thread at a time: an API call that has to wait
(``receive_from`` with nothing ready, ``send_to`` during the handshake or under back-pressure)
drives it itself, so a reply is read, processed and handed over in the thread that asked for
it; a call that only queues work sends it on the way out. Each ``DQUIC`` also owns an I/O
thread that takes the driver's role whenever no API call has held it for ``IDLE_HANDOVER``
seconds, so ACKs, retransmissions, handshakes and keep-alives proceed while the application is
busy elsewhere. The role, its hand-over and the driving steps are ``dquic._drive.Drive``; this
module keeps the connections as the application sees them. All core state is behind the
instance lock; the driver's socket calls run without it and release the GIL.

Messages
--------
Each value in a ``send_to`` dict is one message on its stream; ``receive_from`` hands out the
next message (or a ``max_bytes`` piece of a large one) of each stream of one peer. Received
data stays in the core's stream buffers until ``receive_from`` reads it, so flow control slows a
sender down when the application does not read: memory per connection stays bounded by the
configured windows.

Addresses
---------
A peer is named by its address, so an address belongs to one connection at a time. A new
connection from an address whose connection is still live (the peer restarted, or somebody sent
an Initial from that address: it takes no key) gets the address only once its handshake is
confirmed, which needs the peer to have received our handshake reply there; the connection it
replaces is then closed. Until then ``send_to``, ``receive_from`` and ``connections`` keep to
the established connection, and a new connection that never confirms ends at the handshake
timeout.
"""
from __future__ import annotations

import collections
import errno
import logging
import os
import socket
import time
from bisect import bisect_right
from typing import Any, Callable, Dict, Generic, List, Optional, Tuple, TypeVar

from ._app import split_options, termination_error, validate_messages
from ._busypoll import DEFAULT_LIMIT as DEFAULT_BUSY_POLL, check_limit
# (the driving steps' tunables stay importable from here)
from ._drive import IDLE_HANDOVER, RECV_BATCH, STEP_INTERVAL, Drive  # noqa: F401
from ._socket import (UDPSocket, Waker, check_address, no_larger_route, normalize_address,
                      numeric_address, resolve_address, route_mtu)
from .config import Configuration
from .endpoint import ConnectionAccepted, Endpoint
from .errors import (
    ConnectionClosed,
    ConnectionRefused,
    EndpointClosed,
    ConnectionTimeout,
    DQUICError,
    ErrorCode,
    UndeliveredData,
)
from .events import (ConnectionTerminated, HandshakeCompleted, HandshakeFailed, MessageReceived,
                     PathChanged)
from .keys import KeyPair

#: Raised (``DQUICError``, errno ``ENOBUFS``) by a send when the peer allows no stream at all.
_NO_STREAMS = "the peer allows no streams (its max_streams is 0): no message can be sent"

__all__ = ["DQUIC", "Connection", "ConnectionRefused", "EndpointClosed", "UndeliveredData"]

logger = logging.getLogger("dquic")

#: Ended outgoing connections remembered to report their error to the next send_to.
MAX_TOMBSTONES = 1024
_monotonic = time.monotonic
#: A ``send_to`` this soon after the previous one returned is part of a burst (``nodelay``).
CORK_GAP = 20e-6
_FRAME_OVERHEAD = 8  # a message's STREAM frame header and length prefix, about
_CORK_OVERHEAD = 48  # a 1-RTT packet's header, ACK and AEAD tag, about


# ----------------------------------------------------------------------------------------------
_T = TypeVar("_T")


class _SeedCounter(Generic[_T]):
    """A counter of the seed's ``Connection``: read from the core (under the instance lock) for
    a connection of a ``DQUIC``; for a standalone ``Connection``, a plain attribute starting at
    ``initial()`` (settable, as the seed's were)."""

    def __init__(self, live: Callable[[Any], _T], initial: Callable[[], _T]) -> None:
        self._live = live
        self._initial = initial
        self._name = ""

    def __set_name__(self, owner: Any, name: str) -> None:
        self._name = "_own_" + name

    def __get__(self, obj: Any, owner: Any = None) -> _T:
        if obj is None:
            return self  # type: ignore[return-value]  # the class's attribute: the descriptor
        core = obj._core()
        if core is None:
            own = obj.__dict__
            if self._name not in own:
                own[self._name] = self._initial()
            return own[self._name]
        with obj._owner._cond:
            return self._live(core)

    def __set__(self, obj: Any, value: _T) -> None:
        obj.__dict__[self._name] = value


def _stream_counts(core: Any, index: int) -> Dict[int, int]:
    """Stream id -> bytes sent (``index`` 0) or acknowledged (1), of the streams that sent."""
    out = {}
    for sid in core.streams():
        v = core.stream_bytes(sid)
        if v[0]:
            out[sid] = v[index]
    return out


class Connection:
    """One connection as the application sees it (the seed's ``Connection`` attributes).

    Built by ``DQUIC`` for every live connection (``DQUIC.connections``); its attributes then
    read the live core state. It can also be built standalone as the seed did,
    ``Connection(addr, conn_id)``, with zeroed counters; ``addr`` must be a ``(host, port)``
    tuple with a port in 0..65535 (``ValueError`` otherwise).

    Attributes: ``addr`` (peer address), ``conn_id`` (our connection ID for it),
    ``sent_packet_number`` / ``recv_packet_number`` (packets sent / received),
    ``stream_bytes_sent`` / ``stream_bytes_ack`` (dicts stream id -> bytes of stream data sent /
    acknowledged by the peer, message length prefixes included), ``stats`` (the core's
    ``ConnectionStats`` snapshot, None when standalone), ``is_established``, ``peer_key``.
    """

    def __init__(self, addr: Tuple, conn_id: Any = None, *, _peer: Any = None,
                 _owner: Any = None) -> None:
        try:
            check_address(addr)
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        self._addr = tuple(addr)
        self._conn_id = conn_id
        self._peer = _peer  # with _owner (the DQUIC): a live connection
        self._owner = _owner

    def _core(self):
        return None if self._peer is None else self._peer.conn

    @property
    def addr(self) -> Tuple:
        return self._peer.addr if self._peer is not None else self._addr

    @addr.setter
    def addr(self, value: Tuple) -> None:
        check_address(value)
        self._addr = tuple(value)

    @property
    def conn_id(self) -> Any:
        return self._conn_id

    @conn_id.setter
    def conn_id(self, value: Any) -> None:
        self._conn_id = value

    sent_packet_number = _SeedCounter[int](lambda core: core.stats.packets_sent, int)
    recv_packet_number = _SeedCounter[int](lambda core: core.packets_received, int)
    stream_bytes_sent = _SeedCounter[Dict[int, int]](lambda core: _stream_counts(core, 0), dict)
    stream_bytes_ack = _SeedCounter[Dict[int, int]](lambda core: _stream_counts(core, 1), dict)

    @property
    def stats(self):
        core = self._core()
        if core is None:
            return None
        with self._owner._cond:
            return core.stats

    @property
    def is_established(self) -> bool:
        return self._peer is not None and self._peer.established and not self._peer.terminated

    @property
    def peer_key(self) -> Optional[bytes]:
        core = self._core()
        return None if core is None else core.peer_key

    @property
    def send_buffered(self) -> int:
        """Bytes queued on this connection and not yet acknowledged."""
        core = self._core()
        if core is None:
            return 0
        with self._owner._cond:
            return core.send_buffered

    def close(self, abandon: bool = False) -> None:
        """Close this connection (``DQUIC.disconnect`` of its address): queued data is
        delivered first, up to ``linger``; ``UndeliveredData`` if some was not. A standalone
        ``Connection`` (not from ``DQUIC.connections``) has nothing to close."""
        if self._owner is not None and self._peer is not None:
            with self._owner._cond:
                self._owner._check_open()
                if self._peer.terminated:
                    return
                self._owner._disconnect(self._peer, abandon)

    def __repr__(self) -> str:
        return f"Connection(addr={self.addr!r}, conn_id={self.conn_id!r})"


# ----------------------------------------------------------------------------------------------
class _Peer:
    """The driver's state for one core connection."""

    __slots__ = ("conn", "addr", "outgoing", "established", "terminated", "error", "last_sid",
                 "facade", "created", "stage")

    def __init__(self, conn: Any, addr: Tuple, outgoing: bool, now: float) -> None:
        self.conn = conn
        self.addr = addr
        self.outgoing = outgoing
        self.established = False
        self.terminated = False
        self.error: Optional[BaseException] = None
        self.last_sid = -1
        self.facade: Optional[Connection] = None
        self.created = now
        # stream id -> [bytearray, end_of_message]: an unfinished piece moved out of the core
        # (None while empty: most peers never stage anything)
        self.stage: Optional[Dict[int, list]] = None


#: Options of ``DQUIC`` itself; every other option is a ``Configuration`` field.
_OWN_OPTIONS = ("linger", "max_connections", "socket_buffer", "dual_stack", "offload",
                "on_handshake_failed", "busy_poll", "nodelay")


class DQUIC:
    """A UDP socket that speaks dquic: reliable, encrypted, message-oriented streams.

    ``DQUIC(**options)`` takes any ``Configuration`` field (identity, trusted_peers, server_key,
    handshake_timeout, idle_timeout, congestion_control, initial_max_data, ...,
    encryption) plus:

    * ``linger`` (default 10 s): how long ``close()`` waits for queued data to be acknowledged;
    * ``max_connections`` (default 4096): connections this instance keeps at once;
    * ``socket_buffer`` (default 8 MiB): SO_SNDBUF/SO_RCVBUF asked of the kernel;
    * ``dual_stack`` (default False): an IPv6 socket also reaches IPv4 peers;
    * ``offload`` (default True): UDP segmentation offload on Linux (GSO sends, GRO receives),
      falling back by itself where the kernel or device refuses it;
    * ``busy_poll`` (default ``dquic._busypoll.DEFAULT_LIMIT``, 0.2 ms; 0 or None: off): a
      call that waits (``receive_from``, a ``send_to`` under back-pressure) after this
      endpoint sent something first polls the socket for up to this long before it sleeps,
      while recent waits show that answers come that soon and no other task wants the CPU
      (an answer that comes before the CPU sleeps costs no wake-up; see
      ``dquic._busypoll``); never on a machine with one CPU, nor on Windows;
    * ``nodelay`` (default False): send what each ``send_to`` queued at once. By default a
      ``send_to`` that follows the previous one within ``CORK_GAP`` (20 us: the application
      writes in a burst) leaves its messages to go with the next call's, packed into one
      datagram, until they would fill one; they go at the latest with the next call of any kind
      (a ``receive_from`` sends them before it waits) or from the I/O thread within
      ``IDLE_HANDOVER`` (2 ms, or once it gets the interpreter while the application computes
      in Python). A burst of small messages on many stream ids then costs a datagram per
      packet's worth instead of one each (as TCP coalesces small writes; this is
      TCP_NODELAY's counterpart: set it when the last message of a burst must not wait);
    * ``on_handshake_failed`` (default None): called with a ``dquic.events.HandshakeFailed``
      for each connection a peer opened whose handshake failed (a client refused by
      ``trusted_peers``, with the key it presented in ``peer_key``; a client that refused this
      side's key; a malformed or abandoned handshake). It runs in the thread driving the
      socket, without the instance lock: keep it short and do not call this ``DQUIC`` from
      it. ``handshake_failures`` counts them; each is also logged at INFO on the
      ``dquic.connection`` logger.

    Every instance accepts connections and opens them: ``send_to`` an address it has no
    connection with starts a handshake. A server without an ``identity`` gets a fresh key pair
    when a peer first connects to it (encrypted but unauthenticated, like opportunistic TLS; an
    instance that only connects out makes none); pin keys with ``server_key`` or
    ``trusted_peers`` to authenticate.

    Call ``bind()`` (servers) or just ``send_to()``; ``receive_from()`` returns what peers sent;
    ``close()`` (or ``with DQUIC() as d:``) delivers what is queued and releases everything.
    """

    def __init__(self, **options: Any) -> None:
        fields, own = split_options(options, _OWN_OPTIONS)
        self.linger = float(own.get("linger", 10.0))
        if self.linger < 0:
            raise ValueError("linger must be >= 0")
        max_connections = int(own.get("max_connections", 4096))
        self._socket_buffer = int(own.get("socket_buffer", 8 << 20))
        self._dual_stack = bool(own.get("dual_stack", False))
        self._offload = bool(own.get("offload", True))
        busy_poll = check_limit(own.get("busy_poll", DEFAULT_BUSY_POLL))
        self._cork_gap = 0.0 if own.get("nodelay", False) else CORK_GAP
        self._on_handshake_failed: Optional[Callable[[HandshakeFailed], Any]] = own.get("on_handshake_failed")
        if self._on_handshake_failed is not None and not callable(self._on_handshake_failed):
            raise TypeError("on_handshake_failed must be callable")
        self._failed_handshakes: List[HandshakeFailed] = []  # to report outside the lock
        self.handshake_failures = 0
        cfg = Configuration(is_client=False, **fields)
        self._client_identity = cfg.identity
        cfg.validate()
        self._config = cfg
        # what a burst of send_to calls packs before it sends (a datagram's payload, about)
        self._cork_bytes = cfg.max_datagram_size - _CORK_OVERHEAD
        self._client_config = cfg.copy(is_client=True, identity=self._client_identity)
        # without an identity, a key pair is made when a peer first connects to this instance
        # (or the identity property is read): an instance that only connects out never pays
        # for one
        self._endpoint = Endpoint(cfg, accept=True, max_connections=max_connections,
                                  make_identity=KeyPair.generate)
        self._peers: Dict[Any, _Peer] = {}  # core connection -> peer state
        self._by_addr: Dict[Tuple, _Peer] = {}  # peer address -> the peer state send_to uses
        # connections a peer opened from an address that already has a live connection: they
        # get the address once their handshake is confirmed (see _settle_contenders)
        self._contenders: Dict[_Peer, None] = {}
        self._ready: "collections.OrderedDict[_Peer, None]" = collections.OrderedDict()
        # who drives the core (an API call or the I/O thread), the hand-over and the steps
        # (without an on_handshake_failed callback there is nothing to do after a step)
        self._drive = Drive(self._ready, self._process_events, self._on_unreachable,
                            None if self._on_handshake_failed is None
                            else self._report_failed_handshakes, self._io_failed, busy_poll)
        self._cond = self._drive.cond  # the instance lock (API threads wait on it)
        self._addr_cache: Dict[Tuple, Tuple[int, Tuple]] = {}
        self._consumed = False
        self._tombstones = 0
        # connections this side opened that ended with an error nobody was told of yet: the
        # next send_to to that address reports it, or a receive_from with nothing to read
        self._unreported: Dict["_Peer", None] = {}
        # the fileno() descriptor (made on first use) and whether it is readable now
        self._readable: Optional[Waker] = None
        self._readable_set = False
        self._timeout: Optional[float] = None
        self._closed = False
        self._bound = False  # bind() made the socket (close() then waits for every answer)

    # ------------------------------------------------------------------------------------
    # socket-like surface
    @property
    def identity(self):
        """This instance's static key pair (generated if none was given; None without
        encryption)."""
        cfg = self._config
        if cfg.identity is None and cfg.encryption:
            with self._cond:
                if cfg.identity is None:
                    cfg.identity = KeyPair.generate()
        return cfg.identity

    @property
    def sock(self) -> Optional[socket.socket]:
        """The underlying UDP socket (None before ``bind``/``send_to``). Do not read from it."""
        return None if self._drive.sock is None else self._drive.sock.sock

    @property
    def local_address(self) -> Optional[Tuple]:
        """The bound ``(host, port)``, or None before the socket exists."""
        with self._cond:
            sock = self._drive.sock
            return None if sock is None or sock.closed else sock.local_address

    @property
    def connections(self) -> List[Connection]:
        """Public views of the live connections: one per address, the one ``send_to`` uses (a
        newer connection from an address already in use is listed once it has replaced the
        older one, see ``_settle_contenders``)."""
        with self._cond:
            out = []
            for p in self._peers.values():
                if p.terminated or p in self._contenders:
                    continue
                if p.facade is None:
                    p.facade = Connection(p.addr, p.conn.host_cid, _peer=p, _owner=self)
                out.append(p.facade)
            return out

    @property
    def datagrams_in(self) -> int:
        """UDP datagrams received (as of the last driving step)."""
        return self._drive.datagrams_in

    @property
    def datagrams_out(self) -> int:
        """UDP datagrams sent."""
        return self._drive.datagrams_out

    def settimeout(self, value: Optional[float]) -> None:
        """Timeout of blocking calls in seconds (None: block forever; 0: don't block)."""
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("timeout must be >= 0 or None")
        self._timeout = value

    def gettimeout(self) -> Optional[float]:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        """``setblocking(False)`` is ``settimeout(0.0)``, ``setblocking(True)`` is
        ``settimeout(None)``, as for a socket. A call that would have to wait then raises
        ``BlockingIOError`` (errno ``EAGAIN``)."""
        self.settimeout(None if flag else 0.0)

    def getblocking(self) -> bool:
        """False if calls never wait (timeout 0), as for a socket."""
        return self._timeout != 0.0

    def fileno(self) -> int:
        """A descriptor that is readable while ``receive_from`` would return without waiting
        (messages are ready, or a connection's error is waiting to be reported), for
        ``select``/``selectors``/``add_reader`` loops. It is not the UDP socket: the protocol
        keeps running in the background (ACKs, retransmissions) whether or not the
        application reads."""
        with self._cond:
            self._check_open()
            if self._readable is None:
                self._readable = Waker()
                self._readable_set = False
                self._update_readable()
            return self._readable.fileno()

    def _update_readable(self) -> None:
        """Keep the ``fileno()`` descriptor's readiness in step with ``receive_from`` (lock
        held; level-triggered: set while something is ready, cleared once all was read)."""
        ready_peers = self._ready
        while ready_peers:
            peer = next(iter(ready_peers))
            if peer.stage or peer.conn.any_readable():
                break
            del ready_peers[peer]  # everything it had was read
            self._maybe_forget(peer)
        ready = bool(ready_peers) or (bool(self._unreported) and not self._live_peers())
        if ready and not self._readable_set:
            self._readable_set = True
            self._readable.wake()
        elif not ready and self._readable_set:
            self._readable_set = False
            self._readable.drain()

    def __enter__(self) -> "DQUIC":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        # with an exception already on its way out, undelivered data is logged, not raised
        self.close(abandon=exc_type is not None)

    def __repr__(self) -> str:
        state = "closed" if self._closed else (repr(self.local_address) if self._drive.sock else "unbound")
        return f"<DQUIC {state} connections={len(self._peers)}>"

    def bind(self, address: Tuple) -> None:
        """Bind the UDP socket to ``address`` (``(host, port)``; port 0 picks a free one).

        Creates the socket (IPv6 if ``address`` is IPv6) and starts the I/O thread. Call before
        the first ``send_to`` if peers must reach a known port.
        """
        self._check_open()
        family, addr = resolve_address(address, passive=True)
        with self._cond:
            self._check_open()
            if self._drive.sock is not None:
                raise DQUICError(errno.EINVAL, "already bound (bind before the first send_to)")
            sock = UDPSocket(family, self._socket_buffer, dual_stack=self._dual_stack,
                             offload=self._offload)
            try:
                sock.bind(addr)
            except BaseException:
                sock.close()
                raise
            self._bound = True
            self._start(sock)

    # ------------------------------------------------------------------------------------
    def send_to(self, address: Tuple, ser_obj_dict: Dict[int, Any]) -> int:
        """Send each value of ``ser_obj_dict`` as one message on its stream id to ``address``.

        Returns the number of payload bytes queued (the sum of the values' lengths). Opens a
        connection first if there is none with ``address`` (blocking until the handshake
        completes: ``ConnectionTimeout``, ``AuthenticationError`` or ``ConnectionRefused`` if it
        fails). Blocks while the connection already buffers ``max_send_buffer`` unacknowledged
        bytes, or while a message needs a new stream half and the peer's ``max_streams`` are all
        in use (back-pressure), at most for the ``settimeout`` timeout (``TimeoutError``: the
        messages before the one that did not fit were queued; with ``settimeout(0)`` /
        ``setblocking(False)`` it raises ``BlockingIOError`` instead, ``EINPROGRESS`` while the
        handshake is under way and ``EAGAIN`` when the buffer is full). Raises ``TypeError`` /
        ``ValueError`` for bad arguments before anything is sent, ``ConnectionClosed`` if the
        peer closed the connection (the next ``send_to`` opens a new one), and ``DQUICError``
        (``ENOBUFS``) if the peer allows no stream at all (its ``max_streams`` is 0).
        """
        items, total = validate_messages(ser_obj_dict)
        drive = self._drive
        if drive.closing or self._closed or drive.error is not None:
            self._check_open()
        family, addr = self._resolve(address)
        timeout = self._timeout
        start = _monotonic()
        deadline = None if timeout is None else start + timeout
        corked = False
        with drive.lock:
            if drive.closing or self._closed or drive.error is not None:
                self._check_open()
            sock = drive.sock
            if sock is None:
                self._start(UDPSocket(family, self._socket_buffer, dual_stack=self._dual_stack,
                                      offload=self._offload), lazy=True)
            elif sock.family != family and not (sock.dual_stack and family == socket.AF_INET):
                raise DQUICError(errno.EAFNOSUPPORT,
                                 f"this DQUIC socket is {sock.family.name}; cannot reach {addr}")
            drive.active += 1
            peer = None
            try:
                peer = self._by_addr.get(addr)
                if peer is None or not peer.established or peer.terminated:
                    # (an established connection, the common case, needs none of this)
                    peer = self._peer_for(addr)
                    self._wait_established(peer, deadline)
                    self._raise_if_failed(peer)
                limit = self._config.max_send_buffer
                conn = peer.conn
                i = 0
                while True:
                    # as many as may go now in one call; then wait for what stopped it
                    try:
                        i = conn.send_messages(items, i, limit)
                    except RuntimeError:
                        self._raise_if_failed(peer)
                        raise ConnectionClosed("connection is closing") from None
                    if i == len(items):
                        break
                    sid, _, n = items[i]
                    buffered = conn.send_buffered
                    if buffered and buffered + n > limit:
                        self._await_send(peer, deadline, "send_to timed out waiting for the peer "
                                                         "to acknowledge data")
                    elif conn.stream_open_blocked(sid):
                        # a new stream half needs one of the peer's stream credits (max_streams):
                        # wait for one to come back, as for room in the send buffer
                        if conn.peer_allows_no_streams:
                            raise DQUICError(errno.ENOBUFS, _NO_STREAMS)
                        self._await_send(peer, deadline, "send_to timed out waiting for the peer "
                                                         "to allow another stream (max_streams)")
                # (``nodelay`` in the class docstring)
                corked = drive.hold_or_kick(start, total + _FRAME_OVERHEAD * len(items),
                                            self._cork_gap, self._cork_bytes)
            except TimeoutError as exc:
                if timeout == 0.0 and type(exc) is TimeoutError:
                    # non-blocking (settimeout(0) / setblocking(False)), as for a socket
                    if peer is None or not peer.established:
                        raise BlockingIOError(errno.EINPROGRESS, "handshake in progress: send "
                                                                 "again once it completes") from None
                    raise BlockingIOError(errno.EAGAIN, "the send buffer is full") from None
                raise
            finally:
                drive.end_call(flush=not corked)
                drive.last_send = _monotonic()
        return total

    def _await_send(self, peer: "_Peer", deadline: Optional[float], message: str) -> None:
        """A send waits (lock held): drive the core or wait for the driver until an
        acknowledgement or new credit may have made room, then raise how the connection
        ended if it did; ``TimeoutError(message)`` at ``deadline``."""
        self._drive.send_waiters += 1  # woken as acknowledgements arrive
        try:
            self._drive.drive_or_wait(deadline, message)
        finally:
            self._drive.send_waiters -= 1
        self._raise_if_failed(peer)

    def receive_from(self, max_bytes: int) -> Tuple[Tuple, Dict[int, bytes]]:
        """Wait for data from any peer: ``(peer_address, {stream_id: bytes})``.

        The dict holds the next message of each stream of that peer that has one complete (at
        most one per stream, ``max_bytes`` in total); a message longer than ``max_bytes`` comes
        in ``max_bytes`` pieces over successive calls. Peers and streams are served in turn.
        Blocks until something is ready, or raises ``TimeoutError`` after the ``settimeout``
        timeout (``BlockingIOError``, errno ``EAGAIN``, with a timeout of 0). When nothing is left to read, no connection is open any more, and one this
        side opened ended with an error not yet reported (the server closed or restarted, the
        handshake was refused, ...), raises that error (``ConnectionClosed``,
        ``AuthenticationError``, ``ConnectionTimeout``, ``ConnectionRefused``) once, instead
        of waiting for data that cannot come.
        """
        if type(max_bytes) is not int and (not isinstance(max_bytes, int)
                                           or isinstance(max_bytes, bool)):
            raise TypeError("max_bytes must be an int")
        if max_bytes <= 0:
            raise ValueError("max_bytes must be > 0")
        timeout = self._timeout
        deadline = None if timeout is None else _monotonic() + timeout
        drive = self._drive
        with drive.lock:
            if drive.closing or self._closed or drive.error is not None:
                self._check_open()
            drive.active += 1
            drive.receiving += 1
            try:
                if drive.deferred_flush:
                    drive.kick()  # what the last deferral held back goes now
                while True:
                    result = self._collect(max_bytes) if self._ready else None
                    if self._readable is not None:
                        self._update_readable()
                    if self._consumed:
                        # reading may have opened flow-control window to announce: that goes
                        # with the next packet (the reply the application is about to send, or
                        # the next step), or within IDLE_HANDOVER
                        self._consumed = False
                        drive.deferred_flush = True  # (drive.defer_flush())
                    if result is not None:
                        return result
                    if self._unreported and not self._live_peers():
                        self._raise_unreported()
                    try:
                        drive.drive_or_wait(deadline, "timed out")
                    except TimeoutError:
                        if timeout == 0.0:
                            raise BlockingIOError(errno.EAGAIN, "no message is ready") from None
                        raise
                    if drive.closing or self._closed or drive.error is not None:
                        self._check_open()
            finally:
                drive.receiving -= 1
                drive.end_call(flush=False)

    def flush(self, timeout: Optional[float] = -1.0) -> None:
        """Wait until every connection's queued data has been acknowledged by its peer.

        ``timeout`` in seconds (None: no limit; default: the ``settimeout`` value). Raises
        ``UndeliveredData`` (its ``undelivered`` maps peer address -> unacknowledged bytes) when
        the time runs out or a connection with unacknowledged data ends; the data stays queued
        on connections that are still open."""
        if timeout == -1.0:
            timeout = self._timeout
        deadline = None if timeout is None else _monotonic() + timeout
        with self._cond:
            self._check_open()
            self._drive.active += 1
            self._drive.send_waiters += 1  # woken as acknowledgements arrive
            asked = False
            try:
                while True:
                    busy = self._unacknowledged()
                    if not asked:
                        asked = True  # acknowledge now, not after the peers' ACK delay
                        for p in busy:
                            p.conn.request_ack()
                    lost = {p.addr: n for p, n in busy.items() if p.terminated}
                    if lost:
                        raise UndeliveredData(lost, f"{sum(lost.values())} bytes were not "
                                                    f"acknowledged before the connection ended")
                    if not busy:
                        return
                    try:
                        self._drive.drive_or_wait(deadline, "flush timed out")
                    except TimeoutError:
                        left = {p.addr: n for p, n in self._unacknowledged().items()}
                        if left:
                            raise UndeliveredData(left, f"flush timed out with {sum(left.values())} "
                                                        f"bytes unacknowledged") from None
                        return
            finally:
                self._drive.send_waiters -= 1
                self._drive.end_call()

    def disconnect(self, address: Tuple, abandon: bool = False) -> None:
        """Close the connection with ``address``, leaving the socket and other connections
        open: what was queued for that peer is delivered first (waiting up to ``linger``
        seconds for its acknowledgement), then CONNECTION_CLOSE is sent. The next ``send_to``
        to that address opens a new connection. If data was still unacknowledged when the wait
        ended, ``UndeliveredData`` is raised (with ``abandon``, or ``linger`` 0, it is only
        dropped). No connection with ``address``: nothing happens."""
        self._check_open()
        _, addr = self._resolve(address)
        with self._cond:
            self._check_open()
            peer = self._by_addr.get(addr)
            if peer is None or peer.terminated:
                return
            self._disconnect(peer, abandon)

    def _disconnect(self, peer: "_Peer", abandon: bool) -> None:
        """``disconnect`` for one peer (lock held)."""
        drive = self._drive
        drive.active += 1
        left = 0
        try:
            if not abandon and self.linger > 0:
                deadline = _monotonic() + self.linger
                drive.send_waiters += 1  # woken as acknowledgements arrive
                peer.conn.request_ack()  # now, not after the peer's ACK delay
                try:
                    while not peer.terminated and peer.conn.send_buffered:
                        try:
                            drive.drive_or_wait(deadline, "disconnect timed out")
                        except TimeoutError:
                            break
                finally:
                    drive.send_waiters -= 1
            left = peer.conn.send_buffered if not peer.terminated else 0
            if self._by_addr.get(peer.addr) is peer:
                del self._by_addr[peer.addr]  # the next send_to connects afresh
            self._contenders.pop(peer, None)
            if not peer.terminated and not peer.conn.is_closed:
                peer.conn.close(0, "")
                drive.kick()
        finally:
            drive.end_call()
        if left and not abandon:
            raise UndeliveredData({peer.addr: left}, f"disconnect from {peer.addr} abandoned {left} "
                                                     f"unacknowledged bytes (linger {self.linger} s)")

    def _unacknowledged(self) -> Dict["_Peer", int]:
        """Peers with queued data not yet acknowledged -> bytes (lock held). Connections that
        ended with data still queued are included (their data will never be acknowledged)."""
        out = {}
        for p in self._peers.values():
            n = p.conn.send_buffered
            if n and (not p.terminated or p.error is not None):
                out[p] = n
        return out

    def close(self, abandon: bool = False) -> None:
        """Deliver queued data (waiting up to ``linger`` seconds for acknowledgements), close
        every connection, stop the I/O thread and close the socket. Idempotent; any later call
        raises ``EndpointClosed`` (an ``OSError`` with errno ``EBADF``).

        Each connection's CONNECTION_CLOSE is then answered by its peer before the socket
        closes (within what is left of ``linger``; a lost one goes out again). A socket that
        ``bind()`` made is closed when ``close()`` returns; one that ``send_to`` made is left
        to the I/O thread once the closes are sent: it closes the socket when the answers came
        (an exiting interpreter waits for it, within ``linger``).

        If data was still unacknowledged when the wait ended (``linger`` ran out, or is 0),
        the socket is closed all the same and ``UndeliveredData`` is raised, listing the
        bytes each peer had not acknowledged, unless ``abandon`` is true (then it is only
        logged at WARNING on the ``dquic`` logger)."""
        undelivered: Dict[Tuple, int] = {}
        drive = self._drive
        background = False  # the I/O thread finishes the closes and closes the socket
        with self._cond:
            if drive.closing:
                while not self._closed and drive.thread is not None and drive.thread.is_alive():
                    drive.wait(0.05)
                return
            drive.begin_close()  # a thread driving inside an API call returns (EndpointClosed)
            drive.ensure_io()  # (started lazily: a call that made the socket failed early)
            thread = drive.thread
            if thread is not None and thread.is_alive():
                deadline = _monotonic() + self.linger
                drive.send_waiters += 1  # woken as acknowledgements arrive
                try:
                    asked = False
                    while drive.error is None:
                        busy = [p for p in self._peers.values()
                                if not p.terminated and p.established and p.conn.send_buffered]
                        remaining = deadline - _monotonic()
                        if not busy or remaining <= 0:
                            break
                        if not asked:
                            # peers that have nothing to send back would acknowledge only
                            # after their ACK delay: ask them to do it now
                            asked = True
                            for p in busy:
                                p.conn.request_ack()
                            drive.wake()
                        drive.wait(min(remaining, 0.5))
                finally:
                    drive.send_waiters -= 1
                closed = []
                for p in list(self._peers.values()):
                    if not p.terminated:
                        left = p.conn.send_buffered
                        if left:
                            undelivered[p.addr] = undelivered.get(p.addr, 0) + left
                        p.conn.close(0, "")
                        closed.append(p.conn)
                if closed:
                    # within linger, until each peer answered our CONNECTION_CLOSE (close_settled):
                    # while we wait, a lost one (and the acknowledgement it carries) goes out
                    # again when the peer's next packet arrives
                    # (this thread drives while it waits, if nobody else does: the close goes
                    # out and its answer is read here, without a hand-over to the I/O thread).
                    # A socket no application bound (send_to made it) waits only until the
                    # closes are sent and leaves the answers to the I/O thread, which then
                    # closes the socket: nobody can want its port back.
                    early = not self._bound
                    drive.send_waiters += 1  # woken as datagrams arrive
                    try:
                        while drive.error is None:
                            remaining = deadline - _monotonic()
                            if early and all(c.close_sent for c in closed):
                                unsettled = [c for c in closed if not c.close_settled]
                                if not unsettled:
                                    break
                                drive.let_go()
                                if remaining > 0 and drive.finish_in_background(unsettled, deadline):
                                    background = True
                                    break
                                early = False  # (the thread cannot: wait for the answers here)
                            elif not early and all(c.close_settled for c in closed):
                                break
                            if remaining <= 0:
                                break
                            try:
                                drive.drive_or_wait(_monotonic() + min(remaining, 0.02), "")
                            except TimeoutError:
                                pass
                    finally:
                        drive.send_waiters -= 1
                        drive.let_go()  # the I/O thread sends what is left and ends
                if background:
                    thread = None  # it closes the socket when the answers came
                elif drive.detach_io():
                    thread = None  # it ends on its own, touching nothing: no need to wait
                else:
                    drive.stop_io()
        if thread is not None:
            thread.join(5.0)
        with self._cond:
            if not background:
                drive.close()
            if self._readable is not None:
                self._readable.close()
                self._readable = None
            self._closed = True
            self._cond.notify_all()
        if undelivered:
            error = UndeliveredData(undelivered, f"close() abandoned {sum(undelivered.values())} "
                                                 f"unacknowledged bytes queued for "
                                                 f"{len(undelivered)} peer(s) (linger {self.linger} s)")
            logger.warning("%s: %s", self, error.strerror)
            if not abandon:
                raise error

    # ------------------------------------------------------------------------------------
    # helpers for the API threads (called with the lock held unless noted)
    def _check_open(self) -> None:
        if self._drive.closing or self._closed:
            raise EndpointClosed()
        if self._drive.error is not None:
            raise DQUICError(errno.EIO, f"I/O thread failed: {self._drive.error!r}")

    def _resolve(self, address: Tuple) -> Tuple[int, Tuple]:
        """Resolve without the lock (may query DNS); prefer the socket's family. Numeric
        ``(str, int)`` addresses are remembered (a bounded cache: no parsing per call)."""
        cacheable = (type(address) is tuple and len(address) == 2 and type(address[0]) is str
                     and type(address[1]) is int)
        if cacheable:
            hit = self._addr_cache.get(address)
            if hit is not None:
                return hit
        sock = self._drive.sock
        family = None if sock is None else sock.family
        numeric = numeric_address(address, family)
        if numeric is None:
            return resolve_address(address, family)
        if cacheable:
            if len(self._addr_cache) >= 1024:
                self._addr_cache.clear()
            self._addr_cache[address] = numeric
        return numeric

    def _peer_for(self, addr: Tuple) -> _Peer:
        """The connection to ``addr``, opening one if needed (lock held)."""
        peer = self._by_addr.get(addr)
        if peer is not None and peer.terminated:
            # report how the previous connection ended, once; the next call reconnects
            del self._by_addr[addr]
            self._unreported.pop(peer, None)
            self._maybe_forget(peer)
            if peer.error is not None:
                raise peer.error
            peer = None
        if peer is None:
            now = _monotonic()
            conn = self._endpoint.connect(addr, now, config=self._client_config)
            peer = _Peer(conn, addr, True, now)
            self._peers[conn] = peer
            self._by_addr[addr] = peer
            self._drive.kick()
        return peer

    def _raise_if_failed(self, peer: _Peer) -> None:
        if peer.terminated:
            if self._by_addr.get(peer.addr) is peer:
                del self._by_addr[peer.addr]
                self._maybe_forget(peer)
            self._unreported.pop(peer, None)
            raise peer.error or ConnectionClosed("connection closed")
        self._check_open()

    def _wait_established(self, peer: _Peer, deadline: Optional[float]) -> None:
        if peer.established:
            return
        self._drive.establishing += 1
        try:
            self._await_handshake(peer, deadline)
        finally:
            self._drive.establishing -= 1

    def _await_handshake(self, peer: _Peer, deadline: Optional[float]) -> None:
        hs_deadline = peer.created + self._config.handshake_timeout + 0.5
        while not peer.established:
            self._raise_if_failed(peer)
            now = _monotonic()
            if now >= hs_deadline:
                # the core's own handshake timer should have fired; do not wait past it
                self._fail(peer, ConnectionTimeout(errno.ETIMEDOUT, f"handshake with {peer.addr} timed out"))
                raise peer.error  # type: ignore[misc]  # set by _fail
            limit = hs_deadline if deadline is None else min(deadline, hs_deadline)
            if deadline is not None and now >= deadline:
                raise TimeoutError("send_to timed out during the handshake")
            try:
                self._drive.drive_or_wait(limit, "send_to timed out during the handshake")
            except TimeoutError:
                pass  # the checks above say which deadline passed

    def _live_peers(self) -> bool:
        """True if any connection is still open (lock held)."""
        return any(not p.terminated for p in self._peers.values())

    def _raise_unreported(self) -> None:
        """Raise (once) the error of a connection this side opened that has ended, when a
        ``receive_from`` has nothing else to return (lock held)."""
        peer = next(iter(self._unreported))
        del self._unreported[peer]
        if self._readable is not None:
            self._update_readable()
        if self._by_addr.get(peer.addr) is peer:
            del self._by_addr[peer.addr]  # reported: the next send_to connects afresh
            self._maybe_forget(peer)
        raise peer.error or ConnectionClosed(f"connection to {peer.addr} closed")

    def _fail(self, peer: _Peer, error: BaseException) -> None:
        """Give up on a connection locally (lock held)."""
        if peer.terminated:
            return
        peer.terminated = True
        peer.error = error
        if peer.outgoing and self._by_addr.get(peer.addr) is peer:
            self._unreported[peer] = None
        if not peer.conn.is_closed:
            peer.conn.close(ErrorCode.CONNECTION_REFUSED if isinstance(error, ConnectionRefused) else 0,
                            "")
        self._drive.alert()

    def _collect(self, max_bytes: int) -> Optional[Tuple[Tuple, Dict[int, bytes]]]:
        """Take the next deliverable messages of one peer, rotating peers and streams.

        A piece of a message longer than the remaining budget is delivered only once the budget
        is filled (or the message ends). Because the peer cannot send more than our stream's
        flow-control window, bytes of such an unfinished piece are moved out of the core into
        the peer's staging buffer (opening the window) until the piece is complete; staging
        per stream never exceeds the ``max_bytes`` the application asked for.
        """
        ready = self._ready
        for _ in range(len(ready)):
            peer = next(iter(ready))
            ready.move_to_end(peer)
            conn = peer.conn
            stage = peer.stage
            streams = conn.readable_streams()
            if stage:
                streams = list(set(streams).union(stage))
            if not streams:
                del ready[peer]
                self._maybe_forget(peer)
                continue
            if len(streams) > 1:
                # in turn: from the stream after the last one served
                streams.sort()
                i = bisect_right(streams, peer.last_sid)  # (a walk in Python cost 30-80 us here)
                order = streams[i:] + streams[:i] if i else streams
            else:
                order = streams
            out: Dict[int, bytes] = {}
            budget = max_bytes
            if not stage:
                # whole messages that fit, in one call; the rest (pieces to stage) below
                done, budget, last = conn.read_messages(order, budget, out)
                if done:
                    self._consumed = True
                    peer.last_sid = last
                    order = order[done:]
            for sid in order:
                if budget <= 0:
                    break
                staged = stage.get(sid) if stage else None
                if staged is None:
                    if conn.message_ready(sid, budget):
                        piece = conn.read_message(sid, budget)
                        self._consumed = True
                        if piece is not None:
                            out[sid] = piece[0]
                            budget -= len(piece[0])
                            peer.last_sid = sid
                        continue
                    if stage is None:
                        stage = peer.stage = {}
                    staged = stage[sid] = [bytearray(), False]
                buf = staged[0]
                # top up the staged piece from the core (at most up to the budget)
                while not staged[1] and len(buf) < budget:
                    piece = conn.read_message(sid, budget - len(buf))
                    if piece is None:
                        break
                    self._consumed = True
                    buf += piece[0]
                    staged[1] = piece[1]
                if staged[1] or len(buf) >= budget:
                    if len(buf) > budget:
                        data = bytes(buf[:budget])
                        del buf[:budget]
                    else:
                        data = bytes(buf)
                        del stage[sid]
                    out[sid] = data
                    budget -= len(data)
                    peer.last_sid = sid
                elif not buf:
                    del stage[sid]
            if stage is not None and not stage:
                peer.stage = None
            if out:
                if not peer.stage and not conn.any_readable():
                    # all it had was read: the next call need not look at it again
                    del ready[peer]
                    if peer.terminated:
                        self._maybe_forget(peer)
                return peer.addr, out
        return None

    def _maybe_forget(self, peer: _Peer) -> None:
        if peer.terminated and peer not in self._ready and self._peers.get(peer.conn) is peer:
            del self._peers[peer.conn]

    # ------------------------------------------------------------------------------------
    # what the driver tells this instance (dquic._drive.Drive's hooks)
    def _start(self, sock: UDPSocket, lazy: bool = False) -> None:
        """Adopt ``sock`` and start the I/O thread (lock held): with ``lazy`` (a ``send_to``
        made the socket), once that call first gives up the driver's role (``Drive.start``)."""
        # path MTU discovery up to the local route's MTU, where datagrams cannot fragment
        self._endpoint.route_mtu = route_mtu if sock.dont_fragment else no_larger_route
        # which connections have something to read is all _process_events needs: no event
        # per stream (MessageReceived), one entry per connection in endpoint.readable
        self._endpoint.message_events = False
        self._drive.start(sock, self._endpoint, lazy)

    def _io_failed(self, exc: BaseException) -> None:
        """The I/O thread died of ``exc`` (lock held): every open connection ends with it."""
        for p in self._peers.values():
            if not p.terminated:
                p.terminated = True
                p.error = DQUICError(errno.EIO, f"I/O thread failed: {exc!r}")

    def _report_failed_handshakes(self) -> None:
        """Hand the handshake failures gathered by ``_process_events`` to the application's
        ``on_handshake_failed`` (after each driving step; lock not held)."""
        if not self._failed_handshakes:
            return
        with self._cond:
            failures, self._failed_handshakes = self._failed_handshakes, []
        callback = self._on_handshake_failed
        if callback is None:
            return
        for ev in failures:
            try:
                callback(ev)
            except Exception:  # a report must never stop the socket
                logger.exception("dquic on_handshake_failed callback failed")

    def _on_unreachable(self, addr: Tuple, err: int) -> bool:
        """ICMP said ``addr`` is unreachable: fail a connection still in its handshake."""
        peer = self._by_addr.get(addr)
        if peer is None or peer.established or peer.terminated or not peer.outgoing:
            return False
        if err == errno.ECONNREFUSED:
            error: BaseException = ConnectionRefused(err, f"connection to {addr} refused (port unreachable)")
        else:
            error = ConnectionRefused(err, f"{addr} unreachable: {os.strerror(err)}")
        self._fail(peer, error)
        return True

    def _process_events(self) -> bool:
        """Turn core events into peer state (lock held). True if waiters should wake."""
        ep = self._endpoint
        events = ep.events
        notify = False
        while events:
            conn, ev = events.popleft()
            peer = self._peers.get(conn)
            if type(ev) is MessageReceived:
                if peer is not None:
                    self._ready[peer] = None
                    notify = True
            elif isinstance(ev, HandshakeCompleted):
                if peer is not None:
                    peer.established = True
                    notify = True
            elif isinstance(ev, ConnectionAccepted):
                addr = normalize_address(ev.address)
                peer = _Peer(conn, addr, False, _monotonic())
                self._peers[conn] = peer
                holder = self._by_addr.get(addr)
                if holder is None or holder.terminated:
                    self._by_addr[addr] = peer
                else:
                    # One unauthenticated datagram (anybody can send an Initial from any
                    # address) never takes an address away from a live connection: the new
                    # connection must first show that it receives at that address.
                    self._contenders[peer] = None
            elif isinstance(ev, ConnectionTerminated):
                if peer is not None:
                    self._on_terminated(peer, ev)
                    notify = True
            elif type(ev) is HandshakeFailed:
                if peer is not None and not peer.outgoing:
                    self.handshake_failures += 1
                    if self._on_handshake_failed is not None:
                        self._failed_handshakes.append(ev)
            elif isinstance(ev, PathChanged):
                if peer is not None:
                    new = normalize_address(ev.new_addr)
                    if self._by_addr.get(peer.addr) is peer:
                        del self._by_addr[peer.addr]
                    self._contenders.pop(peer, None)
                    peer.addr = new
                    self._by_addr[new] = peer
        if ep.readable:
            # the connections with something new to read (after the events: an accepted
            # connection's peer state is made by its ConnectionAccepted)
            for conn in ep.readable:
                peer = self._peers.get(conn)
                if peer is not None:
                    self._ready[peer] = None
                    notify = True
            ep.readable.clear()
        if self._contenders:
            self._settle_contenders()
        if notify and self._readable is not None:
            self._update_readable()
        return notify

    def _settle_contenders(self) -> None:
        """A connection a peer opened from an address that already had a live connection gets
        the address (``send_to``, ``connections``) once its handshake is confirmed (the server
        received an authenticated 1-RTT packet: the client got our handshake reply at that
        address, so the peer restarted or reconnected); the connection it replaces is closed,
        unless this side opened it. Until then the established connection keeps the address,
        and a contender that never confirms (a spoofed Initial) ends at the handshake timeout
        without having disturbed it. A contender also gets an address whose connection ended."""
        for peer in list(self._contenders):
            if peer.terminated:
                del self._contenders[peer]
                continue
            holder = self._by_addr.get(peer.addr)
            if peer.conn.handshake_confirmed or holder is None or holder.terminated:
                del self._contenders[peer]
                self._by_addr[peer.addr] = peer
                if (holder is not None and holder is not peer and not holder.terminated
                        and not holder.outgoing and not holder.conn.is_closed):
                    holder.conn.close(0, "replaced by a newer connection from the same address")
                    self._drive.queue_flush()  # the driver sends the close

    def _on_terminated(self, peer: _Peer, ev: ConnectionTerminated) -> None:
        if peer.terminated:
            return
        peer.terminated = True
        self._contenders.pop(peer, None)
        peer.error = termination_error(ev, peer.established, peer.addr)
        # How it ended is kept (a "tombstone" in _by_addr, reported once by the next send_to to
        # that address) only for connections this side opened and only when worth reporting:
        # a clean idle timeout with nothing owed, or a connection a peer opened to us, is
        # forgotten at once (the next send_to simply connects again), and tombstones are capped.
        if self._by_addr.get(peer.addr) is peer:
            quiet = ev.timeout and peer.established and not peer.conn.send_buffered
            if quiet or not peer.outgoing:
                del self._by_addr[peer.addr]
            else:
                self._tombstones += 1
                self._unreported[peer] = None
                if self._tombstones > MAX_TOMBSTONES:
                    for addr, p in list(self._by_addr.items()):
                        if p.terminated and p is not peer:
                            del self._by_addr[addr]
                            self._unreported.pop(p, None)
                            self._maybe_forget(p)
                    self._tombstones = 1
        if peer not in self._ready:
            # keep the state while undelivered data remains readable
            if not peer.conn.any_readable() and not peer.stage:
                if self._by_addr.get(peer.addr) is not peer:
                    self._peers.pop(peer.conn, None)
            else:
                self._ready[peer] = None
