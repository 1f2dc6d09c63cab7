# cython: language_level=3
"""The sans-IO connection: one dquic connection's protocol state machine (compiled), the
coordinator of the modules that each hold one concept of it.

Theory of operation
-------------------
A ``CoreConnection`` never touches a socket, a thread or a clock. Its driver (the endpoint, the
blocking ``DQUIC`` class, the asyncio API or the network simulator) feeds it what happens and asks
it what to do:

* ``receive_datagram(data, addr, now)`` when a datagram for this connection arrives (or
  ``receive_segments`` for a run of them from UDP GRO);
* ``handle_timer(now)`` when the deadline from ``get_timer()`` has passed;
* commands from the application: ``send_message``, ``end_stream``, ``reset_stream``,
  ``stop_sending``, ``send_datagram``, ``close``.

After each of those the driver calls ``datagram_trains(now)`` (the transmit API: ``(data,
segment_size, address)``, one datagram or a train for segmentation offload) or its one-datagram
form ``datagrams_to_send(now)`` and sends what it returns, then re-arms its timer from
``get_timer()``, and drains ``next_event()``.

Module map
----------
The connection holds one object or structure per concept and is the only one that knows them
all; none of them cimports the connection:

* ``_spaces``: the packet-number spaces (``_Space``: packets received, ACK bookkeeping, crypto
  streams; ``write_ack``) and the record of what each sent packet carried (``_Sent``,
  ``FrameRecord``), recycled through a free list; ``Pending``, the control frames owed once;
* ``_packet``: building and sealing packets (scratch send buffers, headers, padding, sealing
  into bytes or straight into a train) and the frame writer ``put_frame``/``pay``;
* ``_sender``: what goes into each packet and the sending of it (``Sender``: the handshake
  datagrams, the 1-RTT packets in their frame order, trains, the record handed to recovery;
  the control frames owed once, probes, pacing deadline, unreliable datagrams waiting);
* ``_cids``: connection IDs both ways (``CidState``: NEW/RETIRE_CONNECTION_ID, reset tokens);
* ``_paths``: the peer's address, anti-amplification and path validation (``PathState``);
* ``_streamset``: the stream table (``StreamSet``): stream lifecycle, stream and connection
  flow control, stream credit, the round robin of streams with data, STREAM-related frames;
* ``_timers.pxd``: the timer table (one deadline per kind; the next is one minimum);
* ``_recovery``/``_congestion``: RFC 9002 loss detection, congestion control and pacing.

The connection is the top of a class chain, one module per link: ``ConnectionSetup``
(``_establish``: the connection's state, declared in ``_establish.pxd``, and its establishment:
transport parameters, the handshake carried in CRYPTO frames and its keys, confirmation, Retry,
Version Negotiation) <- ``PacketReceiver`` (``_receive``: opening packets, the frame loop and its
dispatch to the objects above) <- ``CoreConnection`` (here: construction, closing and draining,
migration, the timer table's filling and dispatch, sending's entry points and the Python API).

Per-packet path
---------------
Short-header packets are built in one reusable buffer (``_sender``, ``_packet``): header, ACK
and STREAM frame headers are written with C calls and stream bytes are copied straight from the
stream's send buffer. What a sent packet carried is recorded in the packet object itself
(``_spaces``); when ``Recovery`` declares it acknowledged or lost, the sender replays the records
in packet order: STREAM byte ranges
are marked delivered or re-queued (lost data is always re-sent as byte ranges of its stream in
new packets, never by replaying a packet), a lost control frame is owed again, and the object is
recycled.

Received short-header packets are parsed in place (``_receive``): STREAM data goes from the datagram (or the
decrypted payload) straight into the stream's reassembly buffer, ACK frames are decoded without
frame objects. Rare frames go through the ``dquic._frames`` frame classes.

Stream bytes carry length-prefixed messages (PROTOCOL.md §8): ``send_message`` appends one,
``read_message`` returns the next message (or the next piece of a large one).
"""
from libc.stdint cimport int64_t, uint32_t, uint64_t

from dquic._cids cimport CidState
from dquic._codec cimport Buffer
from dquic._congestion cimport Pacer
from dquic._establish cimport (_CLOSING, _DRAINING, _ESTABLISHED, _HANDSHAKING, _TERMINATED,
                               flush_noted, note_work)
from dquic._packet cimport finish_packet
from dquic._paths cimport PathState, amplification_room
from dquic._protection cimport PacketProtection
from dquic._receive cimport PacketReceiver
from dquic._recovery cimport Recovery
from dquic._sender cimport Sender
from dquic._spaces cimport (FR_HANDSHAKE_DONE, FR_MAX_DATA, FR_MAX_STREAMS, FR_PATH_CHALLENGE,
                            FR_PING, OWE_PING, SP_APP, SP_HS, _Sent, _Space, new_sent, q_list,
                            recycle, write_ack)
from dquic._streamset cimport StreamSet, _Stream, exact_id
from dquic._timers cimport (TIMER_ACK, TIMER_ACK_HANDSHAKE, TIMER_CLOSE, TIMER_HANDSHAKE,
                            TIMER_IDLE, TIMER_IDLE_RELEASE, TIMER_KEEP_ALIVE, TIMER_KINDS,
                            TIMER_LOSS, TIMER_OLD_KEYS, TIMER_PACING, TIMER_PATH_VALIDATION,
                            TIMER_STREAM_IDLE, earliest, timer_names)

import hmac
import os
from collections import deque

from dquic import _codec as codec
from dquic import _frames as frames
from dquic._establish import _PlainHandshake
from dquic._paths import MAX_PENDING_PATH_RESPONSES
from dquic._protection import NullProtection
from dquic._receive import RECV_SCRATCH
from dquic._spaces import FREE_SENT, MAX_CRYPTO_BUFFER, TRACE_NAMES
from dquic._streamset import MAX_STREAM_ID
from dquic.congestion import create_controller
from dquic.errors import ErrorCode
from dquic.events import ConnectionTerminated, DatagramLost, HandshakeFailed

__all__ = ["CoreConnection", "ConnectionStats", "SPACE_HANDSHAKE", "SPACE_APPLICATION",
           "MOVED_EVENTS", "MOVED_CID_CHANGES", "MOVED_TERMINATED", "MOVED_CONFIRMED",
           "MOVED_READABLE", "validate_messages"]

SPACE_HANDSHAKE = 0
SPACE_APPLICATION = 1

# what CoreConnection.move_events reports (bit flags)
cdef enum:
    MOVED_EVENTS_C = 1
    MOVED_CID_CHANGES_C = 2
    MOVED_TERMINATED_C = 4
    MOVED_CONFIRMED_C = 8
    MOVED_READABLE_C = 16
MOVED_EVENTS = MOVED_EVENTS_C
MOVED_CID_CHANGES = MOVED_CID_CHANGES_C
MOVED_TERMINATED = MOVED_TERMINATED_C
MOVED_CONFIRMED = MOVED_CONFIRMED_C
MOVED_READABLE = MOVED_READABLE_C

#: An established connection with nothing received for this long (at least 3 PTO) gives back
#: the memory only moving data needs (see CoreConnection._release_idle).
IDLE_RELEASE_AFTER = 1.0

# handshake packets are not encrypted (the Noise messages they carry are): one stateless
# NullProtection serves every connection
cdef object _NULL_PROTECTION = NullProtection()


# --- scratch state shared by every connection -----------------------------------------------
# A packet is built in a send buffer from its header to its sealing within one call, and a
# sent-packet record is idle between its recycling and its reuse: neither needs to belong to a
# connection. Both are lent out under the GIL; a connection returns its send buffer at the end
# of datagrams_to_send / datagram_trains (any number of threads may be building packets at
# once: each holds its own buffer until then). The receive path's scratch Buffer: _receive.
# ------------------------------------------------------------------------------ helpers

class ConnectionStats:
    """A snapshot of a connection's counters (cheap: read on demand)."""

    __slots__ = ("smoothed_rtt", "min_rtt", "latest_rtt", "rttvar", "cwnd", "bytes_in_flight",
                 "packets_sent", "packets_received", "packets_lost", "spurious_losses",
                 "bytes_sent", "bytes_received", "stream_bytes_sent", "stream_bytes_received",
                 "bytes_retransmitted", "bytes_lost", "packets_dropped", "duplicate_packets",
                 "send_window_used", "recv_window_used", "recv_window", "pto_count",
                 "datagram_size", "pmtu_probes_lost")

    def __init__(self, **values):
        for k in self.__slots__:
            setattr(self, k, values.get(k, 0))

    def as_dict(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __repr__(self):
        inner = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"ConnectionStats({inner})"


def validate_messages(messages):
    """Check a ``{stream_id: bytes-like}`` dict completely before anything is sent (what
    ``send_messages`` takes): ``([(stream_id, buffer, nbytes)], total bytes)``. TypeError /
    ValueError name the first bad id or value (``dquic._app``'s checks, the drivers' own)."""
    cdef list items = []
    cdef Py_ssize_t total = 0, n
    cdef uint64_t v
    if type(messages) is not dict and not isinstance(messages, dict):
        raise TypeError("send_to needs a dict {stream_id: bytes-like}")
    for sid, value in (<dict>messages).items():
        if type(value) is bytes and exact_id(sid, &v):
            # the common case, checked here without a Python call (a request path runs this
            # for every message)
            n = len(<bytes>value)
            items.append((sid, value, n))
            total += n
            continue
        from dquic._app import as_buffer, check_stream_id
        check_stream_id(sid)
        value, n = as_buffer(value, f"stream {sid}: ")
        items.append((sid, value, n))
        total += n
    return items, total


def _make_controller(config):
    cc = config.congestion_control
    if callable(cc):
        return cc(max_datagram_size=config.max_datagram_size)
    return create_controller(cc, max_datagram_size=config.max_datagram_size)


# ------------------------------------------------------------------------------ connection
def _reset_tokens_under(key):
    """Stateless reset tokens (16 bytes) of connection IDs, derived from ``key``."""
    return lambda cid: hmac.new(key, bytes(cid), "sha256").digest()[:16]


cdef class CoreConnection(PacketReceiver):
    """One dquic connection, sans-IO (see the module docstring for the calling protocol).

    Clients are created by the application (usually through an endpoint) with
    ``CoreConnection(config, peer_addr, ...)`` and then ``connect(now)``. Servers' connections are
    created by the endpoint when a new client's first packet arrives.
    """

    def __init__(self, config, peer_addr, *, host_cid=None, peer_cid=None, original_dcid=None,
                 retry_source_cid=None, random_bytes=os.urandom, reset_token=None,
                 handshake=None):
        config.validate()
        self.config = config
        self.is_client = config.is_client
        self._random = random_bytes
        if reset_token is None:
            # a connection on its own (no endpoint): one random key, so the token of each of
            # its IDs stays the same however often its NEW_CONNECTION_ID is sent
            reset_token = _reset_tokens_under(bytes(random_bytes(32)))
        self._reset_token = reset_token
        self._state = _HANDSHAKING
        self._events = []
        # the path (RFC 9000 §8.2, §9); a server that sent a Retry has validated the address
        # through the token
        self._paths = PathState(peer_addr, self.is_client or retry_source_cid is not None)

        # configuration read on the per-packet paths
        self._cid_len = config.connection_id_length
        self._mds = config.max_datagram_size
        self._ack_eliciting_threshold = config.ack_eliciting_threshold
        self._ack_delay_exponent = config.ack_delay_exponent
        self._max_ack_delay = config.max_ack_delay

        # connection IDs (RFC 9000 §5.1): ours (peer puts them in DCID) and the peer's; those
        # we issue come from the configuration (random, or QUIC-LB: quic_lb.py)
        cid_len = config.connection_id_length
        if host_cid is None:
            host_cid = config.new_connection_id(random_bytes)
        self._retry_scid = retry_source_cid  # server: the Retry we sent; client: the one we got
        if self.is_client:
            self.original_dcid = original_dcid or random_bytes(max(8, cid_len))
            peer_cid = self.original_dcid
        else:
            self.original_dcid = original_dcid
            peer_cid = peer_cid or b""
        self._cids = CidState(config, random_bytes, host_cid, peer_cid, not self.is_client)

        # packet-number spaces, loss recovery, congestion control
        self._hs = _Space(config.max_ack_ranges)
        self._app = _Space(config.max_ack_ranges, False)
        self._spaces = [self._hs, self._app]
        self._cc = _make_controller(config)
        self._recovery = Recovery(self._cc, max_ack_delay=0.0, initial_rtt=config.initial_rtt)
        self._pacer = Pacer(config.max_datagram_size) if config.pacing else None

        # transport parameters
        self._local_params = self._make_transport_params()
        self._peer_params = None  # until the handshake is confirmed
        self._peer_idle_timeout = 0.0  # the peer's max_idle_timeout in seconds (0: none)
        self._peer_max_ack_delay = 0.025
        self._peer_ack_delay_exponent = 3
        self._peer_max_datagram_frame = 0

        # handshake and packet protection
        if handshake is None:
            if config.encryption:
                handshake = self._make_secure_handshake()
            else:
                handshake = _PlainHandshake(self.is_client, self._local_params.encode())
        self._handshake = handshake
        self._seal = [_NULL_PROTECTION, None]
        self._open = [_NULL_PROTECTION, None]
        self._app_seal = None
        self._app_open = None
        self._handshake_confirmed = False
        self.peer_key = None

        # streams and flow control
        self._sset = StreamSet(config, self._events, self._app, self._recovery.rtt)
        # building packets (and unreliable datagrams waiting to go, RFC 9221)
        self._tx = Sender(config, self.is_client, self._seal, self._hs, self._app, self._cids,
                          self._paths, self._sset, self._recovery, self._pacer, self._reset_token,
                          self._events)

        self._old_keys_deadline = None  # when to drop pre-key-update keys

        # timers (absolute virtual times)
        self._started = False
        self._created = 0.0
        self._last_activity = 0.0
        self._idle_timeout = config.idle_timeout
        self._close_deadline = None
        self._close_frame = None
        self._close_sent_at = -1.0
        self._local_close = False
        self._await_close_reply = False
        self._close_reply_owed = False
        self._close_resend = False
        self._closing_rx = 0
        self._now_hint = 0.0
        self._idle_released_at = -1.0  # _last_activity when idle memory was last released

        self._qlog = None
        # statistics
        self.packets_received = 0
        self.packets_dropped = 0
        self.duplicate_packets = 0
        self.bytes_sent = 0
        self.bytes_received = 0

        # scratch state shared by all connections: the receive buffer and the free list of
        # sent-packet records (the send buffer is borrowed while packets are built: Sender)
        self._rbuf = RECV_SCRATCH
        self._free_sent = FREE_SENT

    # ----------------------------------------------------------------------------------------
    # construction helpers

    # ----------------------------------------------------------------------------------------
    # public state
    @property
    def host_cid(self):
        """Our connection ID the peer addresses us with (the last one we know it used)."""
        return self._cids.host_cid

    @property
    def peer_cid(self):
        """The peer's connection ID we address it with now."""
        return self._cids.peer_cid

    @property
    def peer_addr(self):
        """The peer's address: where packets go (it moves when the peer migrates)."""
        return self._paths.peer_addr

    @property
    def stream_bytes_received(self):
        """Stream payload bytes received (duplicates included)."""
        return self._sset.stream_bytes_received

    # the stream table's state, for tests and tools
    @property
    def _streams(self):
        return self._sset.streams

    @property
    def cid_changes(self):
        """Routing changes for the endpoint, oldest first: ``("add"|"remove", cid)`` for our
        IDs, ``("reset"|"unreset", token)`` for the peer's reset tokens; None while there is
        nothing to report. The endpoint sets it back to None once it applied them."""
        return self._cids.changes

    @cid_changes.setter
    def cid_changes(self, value):
        self._cids.changes = value

    @property
    def _host_cids(self):
        return self._cids.host_cids

    @property
    def is_established(self):
        """True once the handshake completed and until the connection starts closing."""
        return self._state == _ESTABLISHED

    @property
    def is_closed(self):
        """True once the connection is closing, draining or terminated: it sends no more data."""
        return self._state >= _CLOSING

    @property
    def close_sent(self):
        """True once the connection owes its peer nothing more on this endpoint's part: our
        CONNECTION_CLOSE went out (closing), the peer closed first (draining), or it
        terminated. The closing period that follows answers stray packets, so an endpoint
        that keeps its socket open may forget the application's side now; one that closes its
        socket waits for ``close_settled``."""
        if self._state == _CLOSING:
            return self._close_frame is None or self._close_sent_at >= 0
        return self._state > _CLOSING

    @property
    def close_settled(self):
        """``close_sent``, and after a graceful ``close()`` of an established connection the
        peer's CONNECTION_CLOSE answered ours (or the closing period ended without one;
        PROTOCOL.md §19). Until then a lost CONNECTION_CLOSE, and the acknowledgement it
        carries, is sent again when the peer's next packet arrives: a driver about to close
        its socket waits for this (within its linger time)."""
        return self.close_sent and not (self._state == _CLOSING and self._await_close_reply)

    @property
    def is_terminated(self):
        """True when nothing remains to do: the driver may forget the connection."""
        return self._state == _TERMINATED

    @property
    def handshake_confirmed(self):
        """True once the peer proved it has the 1-RTT keys (RFC 9001 §4.1.2)."""
        return self._handshake_confirmed

    @property
    def handshake_complete(self):
        return self._state >= _ESTABLISHED or (self._handshake is not None
                                                 and self._handshake.complete)

    @property
    def stats(self):
        r = self._recovery
        rtt = r.rtt
        cdef _Stream s
        retx = 0
        for s in self._sset.stream_list():
            retx += s.send._bytes_retransmitted
        return ConnectionStats(
            smoothed_rtt=rtt.smoothed_rtt, min_rtt=rtt.min_rtt, latest_rtt=rtt.latest_rtt,
            rttvar=rtt.rttvar, cwnd=self._cc.congestion_window,
            bytes_in_flight=self._cc.bytes_in_flight, packets_sent=r.packets_sent,
            packets_received=self.packets_received, packets_lost=r.packets_lost,
            spurious_losses=r.spurious_losses, bytes_sent=self.bytes_sent,
            bytes_received=self.bytes_received, stream_bytes_sent=self._sset.data_sent,
            stream_bytes_received=self._sset.stream_bytes_received,
            bytes_retransmitted=retx,
            bytes_lost=r.bytes_lost, packets_dropped=self.packets_dropped,
            duplicate_packets=self.duplicate_packets,
            send_window_used=(self._sset.data_sent / self._sset.peer_max_data) if self._sset.peer_max_data else 0.0,
            recv_window_used=(self._sset.data_received / self._sset.recv_window._limit)
            if self._sset.recv_window._limit else 0.0,
            recv_window=self._sset.recv_window._limit, pto_count=r.pto_count,
            datagram_size=self._tx.mds, pmtu_probes_lost=r.pmtu_probes_lost,
        )

    @property
    def _owed(self):
        """The control frames this connection owes its peer (not those of its streams), by
        qlog name: True for a frame owed once, the values queued for the others (connection
        ID sequence numbers, PATH_CHALLENGE data to echo). For tests and tools."""
        cdef int kind
        out = {}
        for kind in (FR_HANDSHAKE_DONE, FR_MAX_DATA, FR_MAX_STREAMS, FR_PING, FR_PATH_CHALLENGE):
            if (self._tx.pending.once | self._paths.owed | self._sset.owed) & ((<uint32_t>1) << kind):
                out[TRACE_NAMES[kind]] = True
        if self._cids.new_cids.n:
            out["new_connection_id"] = q_list(&self._cids.new_cids)
        if self._cids.retire_cids.n:
            out["retire_connection_id"] = q_list(&self._cids.retire_cids)
        if self._paths.responses.n:
            out["path_response"] = [v.to_bytes(8, "big")
                                    for v in q_list(&self._paths.responses)]
        return out

    def streams(self):
        """Ids of the streams this connection has state for."""
        return [s.stream_id for s in self._sset.stream_list()]

    def stream_bytes(self, stream_id):
        """``(bytes_sent, bytes_acked)`` of our half of a stream (message prefixes included)."""
        s = self._sset.find_key(stream_id)
        if s is None:
            return (0, 0)
        return ((<_Stream>s).send._offset_sent, (<_Stream>s).send._base)

    @property
    def send_buffered(self):
        """Bytes of stream data written but not yet acknowledged (for back-pressure)."""
        return self._sset.send_buffered

    @property
    def peer_allows_no_streams(self):
        """True once the handshake is done and the peer allows no stream half at all
        (initial_max_streams 0 and no MAX_STREAMS since): no message can ever be sent."""
        return self._state == _ESTABLISHED and self._sset.peer_stream_credit == 0

    def pin_stream(self, stream_id):
        """Keep ``stream_id`` as one byte stream: our half ends only with ``end_stream`` (no
        automatic end once its messages are acknowledged) and its state stays until the
        connection ends. For byte-stream use (asyncio ``open_stream``), where the end of the
        peer's half is the end of the data."""
        cdef _Stream s = self._sset.local_stream(stream_id)
        s.pinned = True

    def set_route_mtu(self, payload):
        """The largest UDP payload the local route to the peer takes (the interface MTU less
        the IP and UDP headers), as a driver learns it from its socket. Path MTU discovery
        then searches up to it (at most ``config.mtu_discovery_max``) instead of stopping at
        1452 bytes (PROTOCOL.md §14.7). None (unknown) changes nothing."""
        if payload is not None:
            self._tx.pmtu_route(int(payload))

    @property
    def datagram_size(self):
        """The size of the datagrams this connection sends now (path MTU discovery raises it
        from ``config.max_datagram_size``)."""
        return self._tx.mds

    def stream_open_blocked(self, stream_id):
        """True when a message on ``stream_id`` written now would wait for stream credit: no
        half of ours on that id takes messages (none is live, or the live one is ending and no
        next one waits yet) and the peer's MAX_STREAMS is used up by halves open or waiting.
        Drivers block (back-pressure) while this holds (PROTOCOL.md §16.7); asking ends our
        halves that only wait for more messages, so that their credit comes back."""
        blocked = self._sset.stream_open_blocked(stream_id)
        flush_noted(self)
        return blocked

    # ----------------------------------------------------------------------------------------
    # commands
    def connect(self, double now):
        """Client: start the handshake. Call ``datagrams_to_send(now)`` next."""
        if not self.is_client:
            raise RuntimeError("connect() is for clients")
        if self._started:
            raise RuntimeError("connect() called twice")
        self._started = True
        self._created = now
        self._last_activity = now
        self._hs.crypto_send.write_message(self._handshake.start())
        note_work(self)

    def send_messages(self, list items, Py_ssize_t start, uint64_t limit):
        """``send_message`` for ``items[start:]``, a list of ``(stream_id, data, nbytes)`` (as
        a driver's checks made them), in one call, stopping before the first item that must
        wait: one that would take the bytes written and not yet acknowledged past ``limit``
        (unless none are), or whose stream must wait for stream credit
        (``stream_open_blocked``). Returns the index of that item, or ``len(items)``."""
        cdef Py_ssize_t i, n = len(items)
        cdef uint64_t nbytes
        cdef tuple item
        if self._state >= _CLOSING:
            raise RuntimeError("connection is closing")
        try:
            for i in range(start, n):
                item = <tuple>items[i]
                nbytes = item[2]
                if self._sset.send_buffered and self._sset.send_buffered + nbytes > limit:
                    return i
                if self._sset.stream_open_blocked(item[0]):
                    return i
                self._sset.send_message(item[0], item[1])
            return n
        finally:
            flush_noted(self)

    def send_message(self, stream_id, data):
        """Queue ``data`` (any bytes-like object) as one message on ``stream_id``.

        Returns the number of payload bytes queued. The stream is opened on first use. Raises
        ValueError/TypeError for bad arguments and ``ConnectionClosed``-worthy RuntimeError if the
        connection is closing. Call ``datagrams_to_send(now)`` next.
        """
        if self._state >= _CLOSING:
            raise RuntimeError("connection is closing")
        n = self._sset.send_message(stream_id, data)
        flush_noted(self)
        return n

    def send_stream_data(self, stream_id, data, end_stream=False):
        """Queue ``data`` as one message; with ``end_stream`` also finish our half of the stream."""
        n = self.send_message(stream_id, data)
        if end_stream:
            self.end_stream(stream_id)
        return n

    def end_stream(self, stream_id):
        """Finish our half of a stream (FIN after the queued messages)."""
        if self._state >= _CLOSING:
            raise RuntimeError("connection is closing")
        self._sset.end_stream(stream_id)
        flush_noted(self)

    def reset_stream(self, stream_id, error_code=0):
        """Abandon our half of a stream: queued data is dropped, the peer gets RESET_STREAM.

        A half the peer never saw (nothing of it was sent yet) is dropped without a frame: a
        RESET_STREAM would open it at the peer and take a stream credit (PROTOCOL.md §16.7)."""
        if self._state >= _CLOSING:
            raise RuntimeError("connection is closing")
        self._sset.reset_stream(stream_id, error_code)
        flush_noted(self)

    def stop_sending(self, stream_id, error_code=0):
        """Ask the peer to stop sending on a stream (STOP_SENDING); data still arriving is dropped."""
        self._sset.stop_sending(stream_id, error_code)
        flush_noted(self)

    def send_datagram(self, data):
        """Queue an unreliable datagram (RFC 9221); returns its id for the ack/loss events.

        Raises ValueError if the peer does not accept datagrams of that size.
        """
        data = bytes(data)
        if self._state > _ESTABLISHED:
            raise RuntimeError("connection is closing")
        limit = (self._peer_max_datagram_frame if self._state == _ESTABLISHED
                 else self.config.max_datagram_frame_size)
        if len(data) + 4 > limit:
            raise ValueError(f"datagram of {len(data)} bytes exceeds the peer's limit")
        if len(data) > self.config.max_datagram_size - 64:
            raise ValueError("datagram does not fit in one packet")
        self._tx.datagram_seq += 1
        if self._tx.datagrams is None:
            self._tx.datagrams = deque()
        self._tx.datagrams.append((self._tx.datagram_seq, data))
        note_work(self)
        while len(self._tx.datagrams) > self.config.max_datagram_queue:
            dropped, _ = self._tx.datagrams.popleft()
            self._events.append(DatagramLost(dropped))
        return self._tx.datagram_seq

    def close(self, error_code=0, reason="", application=True):
        """Close the connection: CONNECTION_CLOSE goes out, then the closing period (3 PTO).

        Data not yet acknowledged is abandoned; drivers that promise delivery wait for
        ``send_buffered == 0`` first. Call ``datagrams_to_send(now)`` next.
        """
        if self._state >= _CLOSING:
            return
        if not self.handshake_complete:
            application = False
            if error_code == 0:
                error_code = ErrorCode.APPLICATION_ERROR if reason else ErrorCode.NO_ERROR
        self._local_close = True
        # a graceful close of an established connection waits for the peer's answer (close_settled)
        self._await_close_reply = self._state == _ESTABLISHED and error_code == 0
        self._close_frame = (int(error_code), 0, reason.encode("utf-8", "replace")[:512], application)
        self._enter_closing(_CLOSING, None)
        self._emit_terminated(ConnectionTerminated(int(error_code), reason, by_peer=False,
                                                   application=application))
        note_work(self)

    def request_ack(self):
        """Ask the peer to acknowledge now: a PING goes out with the next packets, and a peer
        holding two ack-eliciting packets acknowledges at once instead of after its ACK delay
        (25 ms by default). For a driver waiting for data to be acknowledged (close, flush)
        when the peer may have nothing to send back. Does nothing before the handshake
        completes, once closing, or with nothing unacknowledged."""
        if self._state != _ESTABLISHED or self._app_seal is None or not self._sset.send_buffered:
            return
        self._tx.pending.once |= OWE_PING
        note_work(self)

    def request_key_update(self):
        """Start a key update (RFC 9001 §6) now instead of waiting for the automatic one."""
        keys = getattr(self._seal[SP_APP], "request_key_update", None)
        if keys is None:
            raise RuntimeError("no key update possible before the handshake completes")
        keys()
        if self._qlog is not None:
            self._trace_keys(self._now_hint, "local_update")
        note_work(self)

    # ----------------------------------------------------------------------------------------
    # reading
    def next_event(self):
        """Pop the next event, or None. Drain after every call that moves the connection."""
        return self._events.pop(0) if self._events else None

    def take_events(self):
        """All pending events at once, oldest first (a list; empty if none): the same as
        calling ``next_event`` until it returns None."""
        out = self._events
        if not out:
            return []
        self._events = self._sset.events = self._tx.events = []
        return out

    def move_events(self, events):
        """For an endpoint, after each call that moved this connection: append the pending
        events to ``events`` (a deque or list) as ``(connection, event)`` pairs (as
        ``take_events`` would hand them out) and say in one int what else needs a look:
        ``MOVED_EVENTS`` (1) events were moved, ``MOVED_CID_CHANGES`` (2) ``cid_changes`` has
        routing changes, ``MOVED_TERMINATED`` (4) the connection terminated,
        ``MOVED_CONFIRMED`` (8) the handshake is confirmed, ``MOVED_READABLE`` (16) a stream
        became readable while ``message_events`` is off. One call instead of five attribute
        reads and a list on the endpoint's per-datagram path."""
        cdef int flags = 0
        cdef list evs = self._events
        if evs:
            self._events = self._sset.events = self._tx.events = []
            events.extend([(self, ev) for ev in evs])
            flags |= MOVED_EVENTS_C
        if self._sset.readable_noted:
            self._sset.readable_noted = False
            flags |= MOVED_READABLE_C
        if self._cids.changes:
            flags |= MOVED_CID_CHANGES_C
        if self._state == _TERMINATED:
            flags |= MOVED_TERMINATED_C
        if self._handshake_confirmed:
            flags |= MOVED_CONFIRMED_C
        return flags

    @property
    def message_events(self):
        """Whether a stream that becomes readable makes a ``MessageReceived`` event (the
        default). A driver that reads with ``read_messages``/``pull_messages`` and needs only
        to know *which connections* have something to read turns it off: ``move_events``
        then reports ``MOVED_READABLE`` instead (``Endpoint(message_events=False)``), with
        no event object per stream."""
        return self._sset.message_events

    @message_events.setter
    def message_events(self, bint on):
        self._sset.message_events = on

    def readable_streams(self):
        """Streams whose next message (or a piece of it) can be read now."""
        return self._sset.readable_streams()

    def any_readable(self):
        """True if ``readable_streams()`` would list a stream (without making the list)."""
        return self._sset.any_readable()

    def read_message(self, stream_id, Py_ssize_t max_bytes):
        """Read up to ``max_bytes`` of the next message on a stream: ``(data, end_of_message)``,
        or None if nothing is readable. Reading opens flow-control window for the peer."""
        result = self._sset.read_message(stream_id, max_bytes)
        flush_noted(self)
        return result

    def read_messages(self, list order, Py_ssize_t budget, dict out):
        """Take, stream by stream in ``order``, the next message of each into ``out`` (stream id
        -> bytes) while it is complete within what is left of ``budget`` (or is exactly that
        long): ``read_message`` for each without a Python call per stream. Stops at the first
        stream whose next message does not qualify (the caller handles it and the rest) or
        when the budget is spent. Returns ``(index in order where it stopped, budget left,
        last stream id read or -1)``."""
        result = self._sset.read_messages(order, budget, out)
        flush_noted(self)
        return result

    def pull_messages(self, list out, Py_ssize_t budget, Py_ssize_t piece, wanted=None,
                      bint first_free=True):
        """Move the whole messages of every readable stream, each at most ``piece`` bytes,
        into ``out`` as ``(stream_id, bytes)``, stream by stream in the order
        ``readable_streams`` gives, each stream's in order, while ``budget`` (bytes) lasts:
        past it a stream goes on only if it is in ``wanted`` (a container of stream ids);
        with ``first_free`` one message may come even over the budget. One call instead of
        ``read_message`` per message (``dquic.aio`` takes arriving messages so).

        Returns ``(bytes moved, ids, held, pending)``: ``ids`` (a list, or None) are the
        streams whose next message could not come so and cannot complete in the core (longer
        than ``piece``, or than the stream's flow-control window lets arrive before some of it
        is read): the caller reads their pieces with ``read_message``; ``held`` is True when
        the budget left messages behind; ``pending`` when a shorter message stays to complete
        as its other packets arrive (no new ``MessageReceived`` says when: the stream was
        readable all along, so the caller looks again after the next input)."""
        result = self._sset.pull_messages(out, budget, piece, wanted, first_free)
        flush_noted(self)
        return result

    def stream_finished(self, stream_id):
        """True once the peer's half of ``stream_id`` ended: its FIN arrived and every message
        was read, or the peer reset it."""
        s = self._sset.find_key(stream_id)
        return s is not None and ((<_Stream>s).recv.is_finished or (<_Stream>s).recv._reset)

    def stream_send_complete(self, stream_id):
        """True once our half of ``stream_id`` needs nothing more: everything we sent, its FIN
        included, was acknowledged, or we reset it (or we never sent on it)."""
        s = self._sset.find_key(stream_id)
        return s is None or (<_Stream>s).send.is_finished or (<_Stream>s).send._reset

    def message_ready(self, stream_id, Py_ssize_t max_bytes):
        """True if ``read_message(stream_id, max_bytes)`` would return a whole message, the end of
        one, or exactly ``max_bytes`` of one."""
        s = self._sset.find_key(stream_id)
        return s is not None and (<_Stream>s).recv.message_ready(max_bytes)

    # ----------------------------------------------------------------------------------------
    # timers
    cdef int _fill_timers(self, double* t) except -1:
        """The timer table: each kind's deadline (< 0: not armed), read from the state that
        owns it (recovery, the spaces, the pacer, the lifecycle), so there is one source of
        truth per deadline and the next deadline is one minimum over the table."""
        cdef int i
        cdef double idle
        for i in range(TIMER_KINDS):
            t[i] = -1.0
        if self._state == _TERMINATED:
            return 0
        if self._state >= _CLOSING:
            if self._close_deadline is not None:
                t[TIMER_CLOSE] = self._close_deadline
            return 0
        lt = self._recovery.get_loss_detection_timer()
        if lt is not None:
            t[TIMER_LOSS] = lt
        if not self._hs.discarded and self._hs.ack_deadline >= 0.0:
            t[TIMER_ACK_HANDSHAKE] = self._hs.ack_deadline
        if not self._app.discarded and self._app.ack_deadline >= 0.0:
            t[TIMER_ACK] = self._app.ack_deadline
        if self._tx.pacing_deadline >= 0.0:
            t[TIMER_PACING] = self._tx.pacing_deadline
        if self._started:
            if self._handshake_pending():
                t[TIMER_HANDSHAKE] = self._created + self.config.handshake_timeout
            idle = self._effective_idle_timeout()
            if idle:
                t[TIMER_IDLE] = self._last_activity + idle
            ka = self.config.keep_alive
            if ka and self._state == _ESTABLISHED:
                t[TIMER_KEEP_ALIVE] = self._tx.last_eliciting_sent + ka
        if self._paths.challenge is not None:
            t[TIMER_PATH_VALIDATION] = self._paths.deadline()
        if self._old_keys_deadline is not None:
            t[TIMER_OLD_KEYS] = self._old_keys_deadline
        if self._sset.idle_halves is not None:
            self._sset.drop_stale_idle()
            if self._sset.idle_halves is not None:
                t[TIMER_STREAM_IDLE] = self._sset.idle_halves.first().t + 3 * self._pto()
        if self._idle_release_pending():
            t[TIMER_IDLE_RELEASE] = self._idle_release_time()
        return 0

    def get_timer(self):
        """The absolute time at which ``handle_timer`` must be called, or None."""
        cdef double t[TIMER_KINDS]
        cdef double best
        self._fill_timers(t)
        best = earliest(t)
        return best if best >= 0.0 else None

    @property
    def timers(self):
        """The armed timers by kind: ``{name: deadline}`` (for diagnostics and traces)."""
        cdef double t[TIMER_KINDS]
        cdef int i
        self._fill_timers(t)
        names = timer_names()
        return {names[i]: t[i] for i in range(TIMER_KINDS) if t[i] >= 0.0}

    cdef bint _handshake_pending(self):
        """The handshake timeout applies: still handshaking, or (server) complete but not
        confirmed. For NK/IK/NX the server's side completes as soon as it replied, without any
        sign that the client received that reply: a connection from a spoofed address stays
        there, and must end at the handshake timeout, not at the idle timeout."""
        return self._state == _HANDSHAKING or (
            self._state == _ESTABLISHED and not self.is_client and not self._handshake_confirmed)

    cdef bint _idle_release_pending(self):
        # established, and something happened since idle memory was last given back
        return (self._state == _ESTABLISHED and self._handshake_confirmed
                and self._idle_released_at != self._last_activity)

    cdef double _idle_release_time(self):
        cdef double delay = 3 * self._pto()
        if delay < IDLE_RELEASE_AFTER:
            delay = IDLE_RELEASE_AFTER
        return self._last_activity + delay

    cdef int _release_idle(self) except -1:
        """Nothing arrived for a while: give back what only moving data needs (emptied stream
        buffers, unused range capacity, the libcrypto contexts of the 1-RTT keys). All of it
        is made again on demand; this runs once per quiet period."""
        cdef _Stream s
        self._idle_released_at = self._last_activity
        if self._sset.idle_halves is not None:
            self._sset.end_idle_halves()
        for s in self._sset.stream_list():
            s.send.release_idle_c()
            s.recv.release_idle_c()
        if self._app.rx is not None:
            self._app.rx.shrink_c()
        if type(self._app_seal) is PacketProtection:
            (<PacketProtection>self._app_seal).keys.release_contexts()
        # a quiet period long after any loss: an acknowledgement of those packets now would
        # come far later than any the peer sends (it acknowledges within max_ack_delay)
        self._sset.lost_streams = self._sset.lost_streams_pns = None
        if self._sset.finished is not None:
            self._sset.forget_resolved()
        self._sset.drop_pools()
        return 0

    cdef double _effective_idle_timeout(self):
        cdef double idle = self._idle_timeout, peer = self._peer_idle_timeout
        if peer > 0.0:
            idle = min(idle, peer) if idle else peer
        if idle:
            idle = max(idle, 3 * self._pto())
        return idle


    def handle_timer(self, double now):
        """Call when ``get_timer()``'s deadline has passed; then ``datagrams_to_send(now)``.

        Runs each expired timer of the table by kind. The ACK and pacing timers need nothing
        here: ``datagram_trains`` sends what they were waiting for."""
        cdef double t[TIMER_KINDS]
        self._now_hint = now
        self._sset.now = now
        self._fill_timers(t)
        if 0.0 <= t[TIMER_CLOSE] <= now:
            self._state = _TERMINATED
            if self._qlog is not None:
                self._qlog.close()
            return
        if 0.0 <= t[TIMER_HANDSHAKE] <= now:
            self._terminate_timeout("handshake timeout")
            return
        if 0.0 <= t[TIMER_IDLE] <= now:
            self._terminate_timeout("idle timeout")
            return
        if 0.0 <= t[TIMER_PATH_VALIDATION] <= now:
            self._path_validation_failed()
        if 0.0 <= t[TIMER_OLD_KEYS] <= now:
            # RFC 9001 §6.5: keep the previous keys about 3 PTO after a key update, no longer
            self._old_keys_deadline = None
            self._open[SP_APP].discard_old_keys()
        if 0.0 <= t[TIMER_STREAM_IDLE] <= now:
            self._sset.end_idle_halves(now, 3 * self._pto())
        if 0.0 <= t[TIMER_LOSS] <= now:
            self._tx.on_loss_timeout(now)
        if 0.0 <= t[TIMER_KEEP_ALIVE] <= now:
            self._tx.pending.once |= OWE_PING
        if 0.0 <= t[TIMER_IDLE_RELEASE] <= now:
            self._release_idle()
        flush_noted(self)

    cdef int _emit_terminated(self, object ev) except -1:
        if self._app_seal is None:
            # it ended before its handshake completed: say so, with the key the peer presented
            # (a refused client's key is kept by the handshake: dquic.handshake presented_key)
            self._events.append(HandshakeFailed(
                self._paths.peer_addr, ev.error_code, ev.reason, ev.by_peer, ev.application, ev.timeout,
                getattr(self._handshake, "presented_key", None)))
        self._events.append(ev)
        if self._qlog is not None:
            self._qlog.connection_closed(self._now_hint, ev.error_code, ev.reason, ev.by_peer,
                                         application=ev.application, timeout=ev.timeout)
        return 0

    def attach_qlog(self, trace, now):
        """Trace this connection to ``trace`` (a ``dquic.qlog.QlogTrace``) from now on."""
        self._qlog = trace
        self._tx.qlog = trace
        trace.connection_started(now, None, self._paths.peer_addr)

    def _terminate_timeout(self, reason):
        self._state = _TERMINATED
        self._emit_terminated(ConnectionTerminated(0, reason, by_peer=False, timeout=True))
        if self._qlog is not None:
            self._qlog.close()

    # ----------------------------------------------------------------------------------------
    # closing
    cdef int _protocol_error(self, object exc) except -1:
        if self._state >= _CLOSING:
            return 0
        code = exc.error_code
        self._close_frame = (code, exc.frame_type or 0, str(exc).encode()[:256], False)
        self._enter_closing(_CLOSING, None)
        self._emit_terminated(ConnectionTerminated(code, str(exc), by_peer=False))
        return 0

    cdef int _enter_closing(self, int state, object now) except -1:
        self._state = state
        self._close_deadline = None if now is None else now + 3 * self._pto()
        self._sset.send_queue = None
        self._tx.pacing_deadline = -1.0
        self._hs.ack_deadline = -1.0
        self._app.ack_deadline = -1.0
        return 0

    # ----------------------------------------------------------------------------------------
    # path management
    cdef int _on_peer_address_change(self, object addr, double now) except -1:
        old = self._paths.peer_addr
        challenge = bytes(self._random(8))
        if len(challenge) != 8:
            raise ValueError("random_bytes(8) must return 8 bytes")
        self._paths.move(addr, challenge, now + max(3 * self._pto(), 0.1))
        if old[0] != addr[0]:
            # a new network path: congestion state does not carry over (RFC 9000 §9.4), nor
            # its datagram size (path MTU discovery starts again there)
            self._reset_congestion()
            self._tx.pmtu_restart()
        self._cids.switch_peer_cid()
        return 0

    def _path_validation_failed(self):
        self._paths.validation_failed()

    def _reset_congestion(self):
        new = _make_controller(self.config)
        self._cc = new
        self._recovery.set_congestion_controller(new, reset_rtt=True)

    def change_address(self):
        """Client: after our local address changed, move to a fresh connection ID so the new
        path is not linkable to the old one (the peer validates the new path)."""
        self._cids.switch_peer_cid()

    # ----------------------------------------------------------------------------------------
    # sending
    def datagram_trains(self, double now, Py_ssize_t max_bytes=65000, Py_ssize_t max_segments=64):
        """Build what should be sent now: the transmit API. A list of ``(data, segment_size,
        address)``: ``data`` holds one or more datagrams back to back, each ``segment_size`` bytes
        except the last (which may be shorter), at most ``max_segments`` of them and
        ``max_bytes`` in all, for segmentation offload (one datagram when ``segment_size`` is
        its length). 1-RTT packets are sealed straight into the train (no object per packet);
        handshake and closing packets come one per train.

        Call after every input (datagram, timer, command). Then re-read ``get_timer()``."""
        return self._transmit(now, max_bytes, max_segments, True)

    def datagrams_to_send(self, double now):
        """``datagram_trains`` one datagram at a time, as ``(datagram, address)`` (``bytes``): for
        drivers that send datagram by datagram (the simulator, tests). Same calling protocol."""
        return self._transmit(now, 0, 1, False)

    cdef list _transmit(self, double now, Py_ssize_t max_bytes, Py_ssize_t max_segments,
                        bint trains):
        """The one implementation of both: transmits ``(data, segment_size, address)`` when
        ``trains``, else ``(datagram, address)`` (the packets: Sender.transmit)."""
        cdef Sender tx = self._tx
        cdef Py_ssize_t total
        out = []
        self._now_hint = now
        self._sset.now = now
        if self._state == _TERMINATED or not self._started:
            return out
        if self._state >= _CLOSING:
            d = self._send_close(now)
            if d is not None:
                addr = self._paths.peer_addr
                out.append((d, len(d), addr) if trains else (d, addr))
            tx.return_scratch()
            return out
        total = tx.transmit(now, max_bytes, max_segments, trains, out)
        if total:
            self.bytes_sent += total
        if tx.idle_restart >= 0.0:
            # RFC 9000 §10.1: the first ack-eliciting packet after a receipt restarts idle
            self._last_activity = tx.idle_restart
            tx.idle_restart = -1.0
        # more than one call's worth, or halves ended while packets were built (their FIN): ask
        # to be polled again
        flush_noted(self)
        return out

    cdef int64_t _amplification_room(self):
        return amplification_room(self._paths)

    cdef object _send_close(self, double now):
        """The CONNECTION_CLOSE datagram due now, or None: the first, again when the receive
        path asked (``_close_resend``: the 1st, 2nd, 4th... packet received while closing), or
        the one answer to the peer's (``_close_reply_owed``)."""
        cdef int64_t pn
        cdef int pn_len
        cdef Py_ssize_t length_off, hdr_end
        cdef _Sent ack_rec
        if self._state == _DRAINING and self._close_reply_owed:
            self._close_reply_owed = False  # the one answer to the peer's CONNECTION_CLOSE
        elif self._state != _CLOSING or self._close_frame is None:
            return None
        elif self._close_sent_at >= 0 and not self._close_resend:
            return None
        self._close_resend = False
        if self._close_deadline is None:
            self._close_deadline = now + 3 * self._pto()
        self._close_sent_at = now
        code, ftype, reason, app = self._close_frame
        space_id = SP_APP if self._seal[SP_APP] is not None else SP_HS
        if space_id == SP_HS and app:
            app = False
            code = ErrorCode.APPLICATION_ERROR
        frame = frames.ConnectionCloseFrame(code, None if app else ftype, reason, app)
        self._tx.begin_packet(space_id, self._mds, &pn, &pn_len, &length_off)
        hdr_end = self._tx.sbuf._pos
        traced = [frame]
        if space_id == SP_APP and self._state == _CLOSING and self._await_close_reply:
            # a graceful close acknowledges what we received: a peer that waits for its last
            # data to be acknowledged learns it from this packet (at most 256 bytes of ranges)
            ack_rec = new_sent()
            try:
                write_ack(self._tx.sbuf, self._app, SP_APP, now, ack_rec, 256,
                          self._ack_delay_exponent, self._qlog is not None)
                if self._qlog is not None and ack_rec.ack_space >= 0:
                    traced.insert(0, ack_rec.frames)
            finally:
                ack_rec.frames = None
                recycle(ack_rec)
        frames.push_frame(self._tx.sbuf, frame)
        if space_id == SP_HS and self.is_client:
            self._tx.pad_handshake()
        data = finish_packet(self._tx.sbuf, self._seal[space_id],
                             space_id == SP_APP and self._tx.app_seal_null, hdr_end, length_off,
                             pn, pn_len, NULL)
        if self._qlog is not None:
            self._qlog.packet_sent(now, self._tx.packet_type(space_id), pn, len(data), traced)
        if len(data) > self._amplification_room():
            return None
        self.bytes_sent += len(data)
        self._paths.bytes_sent += len(data)
        return data


