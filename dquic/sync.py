"""The blocking, socket-like ``DQUIC`` API over a real UDP socket.

``DQUIC`` is what the original seed project offered (``bind``, ``send_to``, ``receive_from``,
``close``) on top of the sans-IO core (``dquic.endpoint.Endpoint``): one UDP socket, any number
of connections, each identified to the application by its peer's address.

Threading model
---------------
Each ``DQUIC`` owns one I/O thread, started when the socket is created (``bind()`` or the first
``send_to()``). The thread is the only code that touches the socket: it waits in ``select`` on
the UDP socket and a wake-up file descriptor with the core's next timer as timeout, drains up to
``RECV_BATCH`` datagrams, feeds them to the endpoint, runs due timers, sends what the endpoint
produced (keeping what the kernel refused for later) and turns the core's events into state
the API threads wait on. So ACKs, retransmissions, handshakes and keep-alives proceed while the
application is busy elsewhere.

API calls (from any number of application threads) take the instance lock, queue work in the
core, poke the wake-up descriptor and wait on a condition variable. Only the lock holder touches
the core; the socket calls of the I/O thread run without the lock and release the GIL.

Messages
--------
Each value in a ``send_to`` dict is one message on its stream; ``receive_from`` hands out the
next message (or a ``max_bytes`` piece of a large one) of each stream of one peer. Received
data stays in the core's stream buffers until ``receive_from`` reads it, so flow control slows a
sender down when the application does not read: memory per connection stays bounded by the
configured windows.
"""
from __future__ import annotations

import collections
import dataclasses
import errno
import os
import select
import socket
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from ._socket import UDPSocket, Waker, check_address, normalize_address, resolve_address
from .config import Configuration
from .endpoint import ConnectionAccepted, Endpoint
from .errors import (
    AuthenticationError,
    ConnectionClosed,
    ConnectionRefused,
    EndpointClosed,
    ConnectionTimeout,
    DQUICError,
    ErrorCode,
)
from .events import ConnectionTerminated, HandshakeCompleted, MessageReceived, PathChanged

__all__ = ["DQUIC", "Connection", "ConnectionRefused", "EndpointClosed"]

#: Datagrams read from the socket per wake-up before the endpoint processes them.
RECV_BATCH = 64
#: Stream ids are 62-bit (RFC 9000 §2.1).
MAX_STREAM_ID = (1 << 62) - 1
#: Ended outgoing connections remembered to report their error to the next send_to.
MAX_TOMBSTONES = 1024
_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(Configuration)) - {"is_client"}
_monotonic = time.monotonic


# ----------------------------------------------------------------------------------------------
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

    def __init__(self, addr: Tuple, conn_id: Any = None, *, _peer: Any = None, _lock: Any = None) -> None:
        try:
            check_address(addr)
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        self._addr = tuple(addr)
        self._conn_id = conn_id
        self._peer = _peer
        self._lock = _lock
        self._sent_pn = 0
        self._recv_pn = 0
        self._bytes_ack: Dict[int, int] = {}
        self._bytes_sent: Dict[int, int] = {}

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

    @property
    def sent_packet_number(self) -> int:
        core = self._core()
        if core is None:
            return self._sent_pn
        with self._lock:
            return core.stats.packets_sent

    @sent_packet_number.setter
    def sent_packet_number(self, value: int) -> None:
        self._sent_pn = value

    @property
    def recv_packet_number(self) -> int:
        core = self._core()
        if core is None:
            return self._recv_pn
        with self._lock:
            return core.packets_received

    @recv_packet_number.setter
    def recv_packet_number(self, value: int) -> None:
        self._recv_pn = value

    def _stream_counts(self, index: int) -> Dict[int, int]:
        core = self._core()
        with self._lock:
            out = {}
            for sid in core.streams():
                v = core.stream_bytes(sid)
                if v[0]:
                    out[sid] = v[index]
            return out

    @property
    def stream_bytes_sent(self) -> Dict[int, int]:
        if self._core() is None:
            return self._bytes_sent
        return self._stream_counts(0)

    @stream_bytes_sent.setter
    def stream_bytes_sent(self, value: Dict[int, int]) -> None:
        self._bytes_sent = value

    @property
    def stream_bytes_ack(self) -> Dict[int, int]:
        if self._core() is None:
            return self._bytes_ack
        return self._stream_counts(1)

    @stream_bytes_ack.setter
    def stream_bytes_ack(self, value: Dict[int, int]) -> None:
        self._bytes_ack = value

    @property
    def stats(self):
        core = self._core()
        if core is None:
            return None
        with self._lock:
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
        with self._lock:
            return core.send_buffered

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
        self.stage: Dict[int, list] = {}


def _validate_messages(ser_obj_dict: Any) -> Tuple[List[Tuple[int, Any, int]], int]:
    """Check a ``send_to`` dict completely; return ``([(stream_id, buffer, nbytes)], total)``."""
    if not isinstance(ser_obj_dict, dict):
        raise TypeError("send_to needs a dict {stream_id: bytes-like}")
    items = []
    total = 0
    for sid, value in ser_obj_dict.items():
        if not isinstance(sid, int) or isinstance(sid, bool):
            raise TypeError(f"stream id {sid!r} is not an int")
        if not 0 <= sid <= MAX_STREAM_ID:
            raise ValueError(f"stream id {sid} outside 0 <= id < 2**62")
        if isinstance(value, str):
            raise TypeError(f"stream {sid}: str is not bytes-like (encode it first)")
        try:
            view = memoryview(value)
        except TypeError:
            raise TypeError(f"stream {sid}: {type(value).__name__} is not a bytes-like object") from None
        if not view.c_contiguous:
            raise ValueError(f"stream {sid}: buffer is not C-contiguous")
        n = view.nbytes
        if view.ndim != 1 or view.format not in ("B", "b", "c"):
            view = view.cast("B") if n else b""
        items.append((sid, view, n))
        total += n
    return items, total


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
      falling back by itself where the kernel or device refuses it.

    Every instance accepts connections and opens them: ``send_to`` an address it has no
    connection with starts a handshake. A server without an ``identity`` gets a fresh key pair
    (encrypted but unauthenticated, like opportunistic TLS); pin keys with ``server_key`` or
    ``trusted_peers`` to authenticate.

    Call ``bind()`` (servers) or just ``send_to()``; ``receive_from()`` returns what peers sent;
    ``close()`` (or ``with DQUIC() as d:``) delivers what is queued and releases everything.
    """

    def __init__(self, **options: Any) -> None:
        self.linger = float(options.pop("linger", 10.0))
        if self.linger < 0:
            raise ValueError("linger must be >= 0")
        max_connections = int(options.pop("max_connections", 4096))
        self._socket_buffer = int(options.pop("socket_buffer", 8 << 20))
        self._dual_stack = bool(options.pop("dual_stack", False))
        self._offload = bool(options.pop("offload", True))
        unknown = set(options) - _CONFIG_FIELDS
        if unknown:
            raise TypeError(f"unknown DQUIC option(s): {', '.join(sorted(unknown))}")
        cfg = Configuration(is_client=False, **options)
        self._client_identity = cfg.identity
        if cfg.encryption and cfg.identity is None:
            from .keys import KeyPair

            cfg.identity = KeyPair.generate()
        cfg.validate()
        self._config = cfg
        self._client_config = cfg.copy(is_client=True, identity=self._client_identity)
        self._endpoint = Endpoint(cfg, accept=True, max_connections=max_connections)
        self._cond = threading.Condition(threading.Lock())
        self._peers: Dict[Any, _Peer] = {}  # core connection -> peer state
        self._by_addr: Dict[Tuple, _Peer] = {}  # peer address -> newest usable peer state
        self._ready: "collections.OrderedDict[_Peer, None]" = collections.OrderedDict()
        self._sock: Optional[UDPSocket] = None
        self._thread: Optional[threading.Thread] = None
        self._waker: Optional[Waker] = None
        self._wake_pending = False
        self._consumed = False
        self._tombstones = 0
        self._timeout: Optional[float] = None
        self._closing = False
        self._closed = False
        self._stop = False
        self._send_waiters = 0  # send_to calls blocked on back-pressure
        self._thread_error: Optional[BaseException] = None
        self.datagrams_in = 0
        self.datagrams_out = 0

    # ------------------------------------------------------------------------------------
    # socket-like surface
    @property
    def identity(self):
        """This instance's static key pair (generated if none was given)."""
        return self._config.identity

    @property
    def sock(self) -> Optional[socket.socket]:
        """The underlying UDP socket (None before ``bind``/``send_to``). Do not read from it."""
        return None if self._sock is None else self._sock.sock

    @property
    def local_address(self) -> Optional[Tuple]:
        """The bound ``(host, port)``, or None before the socket exists."""
        with self._cond:
            return None if self._sock is None or self._sock.closed else self._sock.local_address

    @property
    def connections(self) -> List[Connection]:
        """Public views of the live connections."""
        with self._cond:
            out = []
            for p in self._peers.values():
                if p.terminated:
                    continue
                if p.facade is None:
                    p.facade = Connection(p.addr, p.conn.host_cid, _peer=p, _lock=self._cond)
                out.append(p.facade)
            return out

    def settimeout(self, value: Optional[float]) -> None:
        """Timeout of blocking calls in seconds (None: block forever; 0: don't block)."""
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("timeout must be >= 0 or None")
        self._timeout = value

    def gettimeout(self) -> Optional[float]:
        return self._timeout

    def __enter__(self) -> "DQUIC":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else (repr(self.local_address) if self._sock else "unbound")
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
            if self._sock is not None:
                raise DQUICError(errno.EINVAL, "already bound (bind before the first send_to)")
            sock = UDPSocket(family, self._socket_buffer, dual_stack=self._dual_stack,
                             offload=self._offload)
            try:
                sock.bind(addr)
            except BaseException:
                sock.close()
                raise
            self._start(sock)

    # ------------------------------------------------------------------------------------
    def send_to(self, address: Tuple, ser_obj_dict: Dict[int, Any]) -> int:
        """Send each value of ``ser_obj_dict`` as one message on its stream id to ``address``.

        Returns the number of payload bytes queued (the sum of the values' lengths). Opens a
        connection first if there is none with ``address`` (blocking until the handshake
        completes: ``ConnectionTimeout``, ``AuthenticationError`` or ``ConnectionRefused`` if it
        fails). Blocks while the connection already buffers ``max_send_buffer`` unacknowledged
        bytes (back-pressure), at most for the ``settimeout`` timeout (``TimeoutError``: the
        messages before the one that did not fit were queued). Raises ``TypeError`` /
        ``ValueError`` for bad arguments before anything is sent, and ``ConnectionClosed`` if the
        peer closed the connection (the next ``send_to`` opens a new one).
        """
        items, total = _validate_messages(ser_obj_dict)
        self._check_open()
        family, addr = self._resolve(address)
        timeout = self._timeout
        deadline = None if timeout is None else _monotonic() + timeout
        with self._cond:
            self._check_open()
            if self._sock is None:
                self._start(UDPSocket(family, self._socket_buffer, dual_stack=self._dual_stack,
                                      offload=self._offload))
            elif self._sock.family != family and not (self._sock.dual_stack and family == socket.AF_INET):
                raise DQUICError(errno.EAFNOSUPPORT,
                                 f"this DQUIC socket is {self._sock.family.name}; cannot reach {addr}")
            peer = self._peer_for(addr)
            self._wait_established(peer, deadline)
            limit = self._config.max_send_buffer
            conn = peer.conn
            for sid, view, n in items:
                while True:
                    self._raise_if_failed(peer)
                    buffered = conn.send_buffered
                    if buffered == 0 or buffered + n <= limit:
                        break
                    # the I/O thread wakes us when acknowledgements arrive
                    self._send_waiters += 1
                    try:
                        self._wait(deadline, "send_to timed out waiting for the peer to acknowledge data")
                    finally:
                        self._send_waiters -= 1
                try:
                    conn.send_message(sid, view)
                except RuntimeError:
                    self._raise_if_failed(peer)
                    raise ConnectionClosed("connection is closing") from None
            self._wake()
        return total

    def receive_from(self, max_bytes: int) -> Tuple[Tuple, Dict[int, bytes]]:
        """Wait for data from any peer: ``(peer_address, {stream_id: bytes})``.

        The dict holds the next message of each stream of that peer that has one complete (at
        most one per stream, ``max_bytes`` in total); a message longer than ``max_bytes`` comes
        in ``max_bytes`` pieces over successive calls. Peers and streams are served in turn.
        Blocks until something is ready, or raises ``TimeoutError`` after the ``settimeout``
        timeout.
        """
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool):
            raise TypeError("max_bytes must be an int")
        if max_bytes <= 0:
            raise ValueError("max_bytes must be > 0")
        timeout = self._timeout
        deadline = None if timeout is None else _monotonic() + timeout
        with self._cond:
            while True:
                self._check_open()
                result = self._collect(max_bytes)
                if self._consumed:
                    self._consumed = False
                    self._wake()  # reading may have opened flow-control window to announce
                if result is not None:
                    return result
                self._wait(deadline, "timed out")

    def close(self) -> None:
        """Deliver queued data (waiting up to ``linger`` seconds for acknowledgements), close
        every connection, stop the I/O thread and close the socket. Idempotent; any later call
        raises ``EndpointClosed`` (an ``OSError`` with errno ``EBADF``)."""
        with self._cond:
            if self._closing:
                while not self._closed and self._thread is not None and self._thread.is_alive():
                    self._cond.wait(0.05)
                return
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
            if thread is not None and thread.is_alive():
                deadline = _monotonic() + self.linger
                while self._thread_error is None:
                    busy = [p for p in self._peers.values()
                            if not p.terminated and p.established and p.conn.send_buffered]
                    remaining = deadline - _monotonic()
                    if not busy or remaining <= 0:
                        break
                    self._cond.wait(min(remaining, 0.5))
                for p in list(self._peers.values()):
                    if not p.terminated:
                        p.conn.close(0, "")
                self._stop = True
                self._wake()
        if thread is not None:
            thread.join(5.0)
        with self._cond:
            if self._sock is not None:
                self._sock.close()
            if self._waker is not None:
                self._waker.close()
                self._waker = None
            self._closed = True
            self._cond.notify_all()

    # ------------------------------------------------------------------------------------
    # helpers for the API threads (called with the lock held unless noted)
    def _check_open(self) -> None:
        if self._closing or self._closed:
            raise EndpointClosed()
        if self._thread_error is not None:
            raise DQUICError(errno.EIO, f"I/O thread failed: {self._thread_error!r}")

    def _resolve(self, address: Tuple) -> Tuple[int, Tuple]:
        """Resolve without the lock (may query DNS); prefer the socket's family."""
        sock = self._sock
        family = None if sock is None else sock.family
        return resolve_address(address, family)

    def _wait(self, deadline: Optional[float], message: str) -> None:
        """One wait on the condition; TimeoutError once ``deadline`` has passed."""
        if deadline is None:
            self._cond.wait()
            return
        remaining = deadline - _monotonic()
        if remaining <= 0:
            raise TimeoutError(message)
        self._cond.wait(remaining)

    def _wake(self) -> None:
        """Make the I/O thread run an iteration (it then sends what the core queued)."""
        if self._wake_pending or self._waker is None:
            return
        self._wake_pending = True
        self._waker.wake()

    def _peer_for(self, addr: Tuple) -> _Peer:
        """The connection to ``addr``, opening one if needed (lock held)."""
        peer = self._by_addr.get(addr)
        if peer is not None and peer.terminated:
            # report how the previous connection ended, once; the next call reconnects
            del self._by_addr[addr]
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
            self._wake()
        return peer

    def _raise_if_failed(self, peer: _Peer) -> None:
        if peer.terminated:
            if self._by_addr.get(peer.addr) is peer:
                del self._by_addr[peer.addr]
                self._maybe_forget(peer)
            raise peer.error or ConnectionClosed("connection closed")
        self._check_open()

    def _wait_established(self, peer: _Peer, deadline: Optional[float]) -> None:
        hs_deadline = peer.created + self._config.handshake_timeout + 0.5
        while not peer.established:
            self._raise_if_failed(peer)
            now = _monotonic()
            if now >= hs_deadline:
                # the core's own handshake timer should have fired; do not wait past it
                self._fail(peer, ConnectionTimeout(errno.ETIMEDOUT, f"handshake with {peer.addr} timed out"))
                raise peer.error
            limit = hs_deadline if deadline is None else min(deadline, hs_deadline)
            if deadline is not None and now >= deadline:
                raise TimeoutError("send_to timed out during the handshake")
            self._cond.wait(limit - now)

    def _fail(self, peer: _Peer, error: BaseException) -> None:
        """Give up on a connection locally (lock held)."""
        if peer.terminated:
            return
        peer.terminated = True
        peer.error = error
        if not peer.conn.is_closed:
            peer.conn.close(ErrorCode.CONNECTION_REFUSED if isinstance(error, ConnectionRefused) else 0,
                            "")
        self._wake()
        self._cond.notify_all()

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
            streams.sort()
            last = peer.last_sid
            i = 0
            while i < len(streams) and streams[i] <= last:
                i += 1
            order = streams[i:] + streams[:i] if i else streams
            out: Dict[int, bytes] = {}
            budget = max_bytes
            for sid in order:
                if budget <= 0:
                    break
                staged = stage.get(sid)
                if staged is None:
                    if conn.message_ready(sid, budget):
                        piece = conn.read_message(sid, budget)
                        self._consumed = True
                        if piece is not None:
                            out[sid] = piece[0]
                            budget -= len(piece[0])
                            peer.last_sid = sid
                        continue
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
            if out:
                return peer.addr, out
        return None

    def _maybe_forget(self, peer: _Peer) -> None:
        if peer.terminated and peer not in self._ready and self._peers.get(peer.conn) is peer:
            del self._peers[peer.conn]

    # ------------------------------------------------------------------------------------
    # the I/O thread
    def _start(self, sock: UDPSocket) -> None:
        """Adopt ``sock`` and start the I/O thread (lock held)."""
        self._sock = sock
        self._waker = Waker()
        self._thread = threading.Thread(target=self._run, name="dquic-io", daemon=True)
        self._thread.start()

    def _drain_wake(self) -> None:
        self._waker.drain()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # pragma: no cover - reported to the API threads
            with self._cond:
                self._thread_error = exc
                for p in self._peers.values():
                    if not p.terminated:
                        p.terminated = True
                        p.error = DQUICError(errno.EIO, f"I/O thread failed: {exc!r}")
                self._cond.notify_all()
            raise

    def _loop(self) -> None:
        sock = self._sock
        fd = sock.fileno()
        wake_fd = self._waker.fileno()
        ep = self._endpoint
        cond = self._cond
        pending: List[Tuple[bytes, Tuple]] = []
        pending_i = 0
        idle_spins = 0
        select_ = select.select
        while True:
            with cond:
                timer = ep.get_timer()
                stop = self._stop
            if stop and not pending:
                # one last pass below sends the CONNECTION_CLOSE packets, then exit
                pass
            now = _monotonic()
            if timer is None:
                timeout = None
            else:
                timeout = timer - now
                if timeout <= 0:
                    timeout = 0.0 if idle_spins < 3 else 0.001
            if stop:
                timeout = 0.0
            wlist = [fd] if pending else []
            readable, writable, _ = select_([fd, wake_fd], wlist, [], timeout)
            if wake_fd in readable:
                self._drain_wake()
            batch = sock.recv_batch(RECV_BATCH) if fd in readable else []
            now = _monotonic()
            with cond:
                if wake_fd in readable:
                    self._wake_pending = False
                notify = False
                for data, addr, seg in batch:
                    if seg:
                        ep.receive_segments(data, seg, addr, now)
                    else:
                        ep.receive_datagram(data, addr, now)
                if batch:
                    self.datagrams_in += len(batch)
                    # new data to hand out, or acknowledgements a blocked send_to waits for
                    notify = bool(self._ready) or self._send_waiters > 0
                for addr, err in sock.unreachable():
                    notify |= self._on_unreachable(addr, err)
                t = ep.get_timer()
                if t is not None and t <= now:
                    ep.handle_timer(now)
                if not pending:
                    out = ep.datagrams_to_send(now)
                    if out:
                        pending, pending_i = out, 0
                notify |= self._process_events()
                stopping = self._stop
                if notify:
                    cond.notify_all()
            if pending:
                pending_i = sock.send_batch(pending, pending_i)
                self.datagrams_out = sock.datagrams_sent
                if pending_i >= len(pending):
                    pending, pending_i = [], 0
            idle_spins = 0 if (batch or pending_i or readable) else idle_spins + 1
            if stopping:
                if pending:
                    # bounded effort to flush the last packets (CONNECTION_CLOSE)
                    for _ in range(100):
                        select_([], [fd], [], 0.01)
                        pending_i = sock.send_batch(pending, pending_i)
                        if pending_i >= len(pending):
                            break
                return

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
        notify = False
        while True:
            item = ep.next_event()
            if item is None:
                return notify
            conn, ev = item
            peer = self._peers.get(conn)
            if isinstance(ev, MessageReceived):
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
                # the newest connection from an address wins (e.g. the peer restarted)
                self._by_addr[addr] = peer
            elif isinstance(ev, ConnectionTerminated):
                if peer is not None:
                    self._on_terminated(peer, ev)
                    notify = True
            elif isinstance(ev, PathChanged):
                if peer is not None:
                    new = normalize_address(ev.new_addr)
                    if self._by_addr.get(peer.addr) is peer:
                        del self._by_addr[peer.addr]
                    peer.addr = new
                    self._by_addr[new] = peer

    def _on_terminated(self, peer: _Peer, ev: ConnectionTerminated) -> None:
        if peer.terminated:
            return
        peer.terminated = True
        code = ev.error_code
        if ev.timeout:
            what = "handshake" if not peer.established else "idle"
            peer.error = ConnectionTimeout(errno.ETIMEDOUT, f"{what} timeout with {peer.addr}")
        elif code == ErrorCode.AUTHENTICATION_FAILED or (
                code == ErrorCode.HANDSHAKE_FAILED and not ev.application and not peer.established):
            peer.error = AuthenticationError(errno.EACCES, f"handshake with {peer.addr} failed: {ev.reason}")
        elif ev.by_peer:
            peer.error = ConnectionClosed(f"connection closed by {peer.addr} (code {code}): {ev.reason}",
                                          code, ev.reason)
        elif code:
            peer.error = ConnectionClosed(f"connection to {peer.addr} failed (code {code}): {ev.reason}",
                                          code, ev.reason)
        else:
            peer.error = ConnectionClosed(f"connection to {peer.addr} closed", code, ev.reason)
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
                if self._tombstones > MAX_TOMBSTONES:
                    for addr, p in list(self._by_addr.items()):
                        if p.terminated and p is not peer:
                            del self._by_addr[addr]
                            self._maybe_forget(p)
                    self._tombstones = 1
        if peer not in self._ready:
            # keep the state while undelivered data remains readable
            if not peer.conn.readable_streams() and not peer.stage:
                if self._by_addr.get(peer.addr) is not peer:
                    self._peers.pop(peer.conn, None)
            else:
                self._ready[peer] = None
