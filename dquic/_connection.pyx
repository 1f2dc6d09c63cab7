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

What stays here: the handshake and its keys, receiving (opening packets, the frame loop and
its dispatch to the objects above, migration), the replay of a sent packet's records when
recovery declares it acknowledged or lost (each record goes to the object it concerns),
closing and draining, the timer table's filling and dispatch, and the Python API.

Per-packet path
---------------
Short-header packets are built in one reusable buffer: header, ACK and STREAM frame headers are
written with C calls and stream bytes are copied straight from the stream's send buffer. What a
sent packet carried is recorded in the packet object itself; when ``Recovery`` declares it
acknowledged or lost, the connection replays the records in packet order: STREAM byte ranges
are marked delivered or re-queued (lost data is always re-sent as byte ranges of its stream in
new packets, never by replaying a packet), a lost control frame is owed again, and the object is
recycled.

Received short-header packets are parsed in place: STREAM data goes from the datagram (or the
decrypted payload) straight into the stream's reassembly buffer, ACK frames are decoded without
frame objects. Rare frames go through the ``dquic._frames`` frame classes.

Stream bytes carry length-prefixed messages (PROTOCOL.md §8): ``send_message`` appends one,
``read_message`` returns the next message (or the next piece of a large one).
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize,
                            PyBytes_GET_SIZE)
from libc.math cimport ldexp
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from dquic._cids cimport CidState, cid_is_current
from dquic._codec cimport Buffer
from dquic._frames cimport parse_ack_ranges, parse_ecn, pull_stream_frame_header
from dquic._congestion cimport Pacer
from dquic._packet cimport finish_packet
from dquic._paths cimport PathState, amplification_room
from dquic._protection cimport PacketProtection
from dquic._recovery cimport Recovery, RttEstimator
from dquic._sender cimport Sender, trace_keys
from dquic._spaces cimport (F_ACK, FR_HANDSHAKE_DONE, FR_MAX_DATA, FR_MAX_STREAMS,
                            FR_PATH_CHALLENGE, FR_PING, OWE_HANDSHAKE_DONE, OWE_PING,
                            OWE_RESET_STREAM, OWE_STOP_SENDING, SP_APP, SP_HS, _Sent, _Space,
                            new_sent, q_list, recycle, space_received, write_ack)
from dquic._streams cimport RecvStream
from dquic._streamset cimport StreamSet, _Stream
from dquic._timers cimport (TIMER_ACK, TIMER_ACK_HANDSHAKE, TIMER_CLOSE, TIMER_HANDSHAKE,
                            TIMER_IDLE, TIMER_IDLE_RELEASE, TIMER_KEEP_ALIVE, TIMER_KINDS,
                            TIMER_LOSS, TIMER_OLD_KEYS, TIMER_PACING, TIMER_PATH_VALIDATION,
                            TIMER_STREAM_IDLE, earliest, timer_names)
from dquic._wire cimport pn_decode as _decode_pn

import hmac
import os
from collections import deque

from dquic import _codec as codec
from dquic import _frames as frames
from dquic._protection import DecryptionFailed, NullProtection
from dquic._paths import MAX_PENDING_PATH_RESPONSES
from dquic._spaces import FREE_SENT, MAX_CRYPTO_BUFFER, TRACE_NAMES
from dquic._streamset import MAX_STREAM_ID, _DropPacket
from dquic.congestion import create_controller
from dquic.errors import AuthenticationError, ErrorCode, ProtocolError
from dquic.events import (
    ConnectionTerminated,
    DatagramAcknowledged,
    DatagramLost,
    DatagramReceived,
    HandshakeCompleted,
    HandshakeFailed,
    MessageReceived,
    PathChanged,
    StopSendingReceived,
    StreamReset,
)
from dquic.tokens import retry_integrity_tag
from dquic.transport_params import TransportParameters

__all__ = ["CoreConnection", "ConnectionStats", "SPACE_HANDSHAKE", "SPACE_APPLICATION"]

SPACE_HANDSHAKE = 0
SPACE_APPLICATION = 1

#: An established connection with nothing received for this long (at least 3 PTO) gives back
#: the memory only moving data needs (see CoreConnection._release_idle).
IDLE_RELEASE_AFTER = 1.0

cdef enum:
    # connection states
    _HANDSHAKING = 0
    _ESTABLISHED = 1
    _CLOSING = 2
    _DRAINING = 3
    _TERMINATED = 4
    # frame types used on the fast paths (RFC 9000 §19)
    F_PADDING = 0x00
    F_PING = 0x01
    F_ACK_ECN = 0x03
    F_RESET_STREAM = 0x04
    F_CRYPTO = 0x06
    F_NEW_CONNECTION_ID = 0x18
    F_PATH_CHALLENGE = 0x1A
    F_PATH_RESPONSE = 0x1B
    F_CONNECTION_CLOSE = 0x1C
    F_CONNECTION_CLOSE_APP = 0x1D
    # the codec's default limit on ranges in a received ACK frame
    ACK_RANGES_LIMIT = 256


cdef int64_t PN_MAX = ((<int64_t>1) << 62) - 1

cdef object _PROTOCOL_VIOLATION = ErrorCode.PROTOCOL_VIOLATION
# handshake packets are not encrypted (the Noise messages they carry are): one stateless
# NullProtection serves every connection
cdef object _NULL_PROTECTION = NullProtection()

# ------------------------------------------------------------------------------ C helpers
cdef struct _DeferredStream:
    # a STREAM frame the first pass of _process_frames parsed, applied after the other frames
    Py_ssize_t at                     # its offset in the payload
    Py_ssize_t data                   # where its data starts
    uint64_t sid
    uint64_t off
    uint64_t length
    bint fin
    int ftype                         # as _stream_frame_at reports it


cdef inline void _note_work(CoreConnection conn):
    # tell the endpoint driving this connection (if any) that it has output to build: the
    # endpoint then polls only the connections that asked, not all of them
    cdef dict work = conn._work
    if work is not None:
        work[conn] = None


cdef inline void _flush_noted(CoreConnection conn):
    # the stream table scheduled a stream, or the sender has more to send than it built: ask
    # the driving endpoint to build output
    if conn._sset.noted or conn._tx.noted:
        conn._sset.noted = False
        conn._tx.noted = False
        _note_work(conn)



# --- scratch state shared by every connection -----------------------------------------------
# A packet is built in a send buffer from its header to its sealing within one call, and a
# sent-packet record is idle between its recycling and its reuse: neither needs to belong to a
# connection. Both are lent out under the GIL; a connection returns its send buffer at the end
# of datagrams_to_send / datagram_trains (any number of threads may be building packets at
# once: each holds its own buffer until then).
# STREAM frame headers are parsed with this Buffer pointed at the packet for the length of one
# C call (no Python code runs in between): one serves every connection
cdef Buffer _RECV_SCRATCH = Buffer(capacity=0)
_RECV_SCRATCH._writable = False
# ------------------------------------------------------------------------------ helpers
class _PlainHandshake:
    """Handshake used when encryption is disabled (tests, benchmarks of the bare transport).

    Same interface as ``dquic.handshake.ClientHandshake`` / ``ServerHandshake``: the client sends
    its transport parameters, the server answers with its own, and both sides use null packet
    protection. It authenticates nothing and must never be used on a real network.
    """

    def __init__(self, is_client, transport_params):
        self._is_client = is_client
        self._params = transport_params
        self.complete = False
        self.peer_static = None
        self.peer_transport_params = None

    def start(self):
        return b"\xff" + self._params

    def receive(self, message):
        if self.complete or not message or message[0] != 0xFF:
            raise ProtocolError("unexpected plain handshake message", ErrorCode.HANDSHAKE_FAILED)
        self.peer_transport_params = bytes(message[1:])
        self.complete = True
        return None if self._is_client else b"\xff" + self._params

    def protections(self, **_):
        return NullProtection(), NullProtection()


class ConnectionStats:
    """A snapshot of a connection's counters (cheap: read on demand)."""

    __slots__ = ("smoothed_rtt", "min_rtt", "latest_rtt", "rttvar", "cwnd", "bytes_in_flight",
                 "packets_sent", "packets_received", "packets_lost", "spurious_losses",
                 "bytes_sent", "bytes_received", "stream_bytes_sent", "stream_bytes_received",
                 "bytes_retransmitted", "bytes_lost", "packets_dropped", "duplicate_packets",
                 "send_window_used", "recv_window_used", "recv_window", "pto_count")

    def __init__(self, **values):
        for k in self.__slots__:
            setattr(self, k, values.get(k, 0))

    def as_dict(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __repr__(self):
        inner = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"ConnectionStats({inner})"


def _make_controller(config):
    cc = config.congestion_control
    if callable(cc):
        return cc(max_datagram_size=config.max_datagram_size)
    return create_controller(cc, max_datagram_size=config.max_datagram_size)


# ------------------------------------------------------------------------------ connection
cdef class CoreConnection:
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
        self._reset_token = reset_token or (lambda cid: random_bytes(16))
        self._state = _HANDSHAKING
        self._events = []
        # the path (RFC 9000 §8.2, §9); a server that sent a Retry has validated the address
        # through the token
        self._paths = PathState(peer_addr, self.is_client or retry_source_cid is not None)

        # configuration read on the per-packet paths
        self._cid_len = config.connection_id_length
        self._mds = config.max_datagram_size
        self._max_ack_ranges = config.max_ack_ranges
        self._ack_ranges_per_frame = config.ack_ranges_per_frame
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
        self._rbuf = _RECV_SCRATCH
        self._free_sent = FREE_SENT

    # ----------------------------------------------------------------------------------------
    # construction helpers
    def _make_transport_params(self):
        c = self.config
        p = TransportParameters(
            max_idle_timeout=int(c.idle_timeout * 1000),
            max_udp_payload_size=max(1200, c.max_datagram_size),
            initial_max_data=c.initial_max_data,
            initial_max_stream_data=c.initial_max_stream_data,
            initial_max_streams=c.max_streams,
            ack_delay_exponent=c.ack_delay_exponent,
            max_ack_delay=int(round(c.max_ack_delay * 1000)),
            active_connection_id_limit=c.active_connection_id_limit,
            initial_source_connection_id=self._cids.host_cid,
            max_datagram_frame_size=c.max_datagram_frame_size,
        )
        if not self.is_client:
            p.original_destination_connection_id = self.original_dcid
            p.retry_source_connection_id = self._retry_scid
            p.stateless_reset_token = self._reset_token(self._cids.host_cid)
        return p

    def _prologue(self):
        odcid = self.original_dcid or b""
        client_cid = self._cids.host_cid if self.is_client else self._cids.peer_cid
        return (b"dquic/1" + codec.DQUIC_VERSION_1.to_bytes(4, "big") + bytes([len(odcid)]) + odcid
                + bytes([len(client_cid)]) + client_cid)

    def _make_secure_handshake(self):
        from dquic.handshake import ClientHandshake, ServerHandshake

        c = self.config
        params = self._local_params.encode()
        if self.is_client:
            return ClientHandshake(identity=c.identity, server_key=c.server_key,
                                   trusted_peers=c.trusted_peers, psk=c.psk,
                                   transport_params=params, prologue=self._prologue(),
                                   cipher=c.cipher)
        if c.identity is None:
            raise ValueError("a server needs an identity (KeyPair)")
        return ServerHandshake(identity=c.identity, trusted_peers=c.trusted_peers, psk=c.psk,
                               transport_params=params, prologue=self._prologue())


    cdef int _set_app_protection(self, object seal, object open_) except -1:
        self._seal[SP_APP] = seal
        self._open[SP_APP] = open_
        self._app_seal = seal
        self._app_open = open_
        self._tx.app_seal = seal
        self._tx.app_seal_null = isinstance(seal, NullProtection)
        self._app_open_null = isinstance(open_, NullProtection)
        self._tx.app_tag = seal.tag_size
        return 0

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
    def _path_challenge(self):
        return self._paths.challenge

    @property
    def _bytes_received_on_path(self):
        return self._paths.bytes_received

    @property
    def stream_bytes_received(self):
        """Stream payload bytes received (duplicates included)."""
        return self._sset.stream_bytes_received

    # the stream table's state, for tests and tools
    @property
    def _streams(self):
        return self._sset.streams

    @property
    def _recv_window(self):
        return self._sset.recv_window

    @property
    def _send_queue(self):
        return self._sset.send_queue

    @property
    def _peer_opened(self):
        return self._sset.peer_opened

    @property
    def _finished(self):
        return self._sset.finished

    @property
    def _tomb_wait(self):
        return self._sset.tomb_wait

    @property
    def _peer_max_data(self):
        return self._sset.peer_max_data

    @property
    def _max_streams_local(self):
        return self._sset.max_streams_local

    @property
    def _data_received(self):
        return self._sset.data_received

    @property
    def _sbuf(self):
        return self._tx.sbuf

    @property
    def _datagrams(self):
        return self._tx.datagrams

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
    def _peer_cids(self):
        return self._cids.peer_cids

    @property
    def _retiring(self):
        return self._cids.retiring

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
        if self._state == _CLOSING:
            return self._close_frame is None or (self._close_sent_at >= 0
                                                 and not self._await_close_reply)
        return self._state > _CLOSING

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
        for s in self._sset.streams.values():
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
        return list(self._sset.streams)

    def stream_bytes(self, stream_id):
        """``(bytes_sent, bytes_acked)`` of our half of a stream (message prefixes included)."""
        s = self._sset.streams.get(stream_id)
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

    def stream_open_blocked(self, stream_id):
        """True when a message on ``stream_id`` written now would wait for stream credit: no
        half of ours on that id takes messages (none is live, or the live one is ending and no
        next one waits yet) and the peer's MAX_STREAMS is used up by halves open or waiting.
        Drivers block (back-pressure) while this holds (PROTOCOL.md §16.7); asking ends our
        halves that only wait for more messages, so that their credit comes back."""
        blocked = self._sset.stream_open_blocked(stream_id)
        _flush_noted(self)
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
        _note_work(self)

    def send_message(self, stream_id, data):
        """Queue ``data`` (any bytes-like object) as one message on ``stream_id``.

        Returns the number of payload bytes queued. The stream is opened on first use. Raises
        ValueError/TypeError for bad arguments and ``ConnectionClosed``-worthy RuntimeError if the
        connection is closing. Call ``datagrams_to_send(now)`` next.
        """
        if self._state >= _CLOSING:
            raise RuntimeError("connection is closing")
        n = self._sset.send_message(stream_id, data)
        _flush_noted(self)
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
        _flush_noted(self)

    def reset_stream(self, stream_id, error_code=0):
        """Abandon our half of a stream: queued data is dropped, the peer gets RESET_STREAM.

        A half the peer never saw (nothing of it was sent yet) is dropped without a frame: a
        RESET_STREAM would open it at the peer and take a stream credit (PROTOCOL.md §16.7)."""
        if self._state >= _CLOSING:
            raise RuntimeError("connection is closing")
        self._sset.reset_stream(stream_id, error_code)
        _flush_noted(self)

    def stop_sending(self, stream_id, error_code=0):
        """Ask the peer to stop sending on a stream (STOP_SENDING); data still arriving is dropped."""
        self._sset.stop_sending(stream_id, error_code)
        _flush_noted(self)

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
        _note_work(self)
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
        _note_work(self)

    def request_ack(self):
        """Ask the peer to acknowledge now: a PING goes out with the next packets, and a peer
        holding two ack-eliciting packets acknowledges at once instead of after its ACK delay
        (25 ms by default). For a driver waiting for data to be acknowledged (close, flush)
        when the peer may have nothing to send back. Does nothing before the handshake
        completes, once closing, or with nothing unacknowledged."""
        if self._state != _ESTABLISHED or self._app_seal is None or not self._sset.send_buffered:
            return
        self._tx.pending.once |= OWE_PING
        _note_work(self)

    def request_key_update(self):
        """Start a key update (RFC 9001 §6) now instead of waiting for the automatic one."""
        keys = getattr(self._seal[SP_APP], "request_key_update", None)
        if keys is None:
            raise RuntimeError("no key update possible before the handshake completes")
        keys()
        if self._qlog is not None:
            self._trace_keys(self._now_hint, "local_update")
        _note_work(self)

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

    def readable_streams(self):
        """Streams whose next message (or a piece of it) can be read now."""
        return self._sset.readable_streams()

    def read_message(self, stream_id, Py_ssize_t max_bytes):
        """Read up to ``max_bytes`` of the next message on a stream: ``(data, end_of_message)``,
        or None if nothing is readable. Reading opens flow-control window for the peer."""
        result = self._sset.read_message(stream_id, max_bytes)
        _flush_noted(self)
        return result

    def read_messages(self, list order, Py_ssize_t budget, dict out):
        """Take, stream by stream in ``order``, the next message of each into ``out`` (stream id
        -> bytes) while it is complete within what is left of ``budget`` (or is exactly that
        long): ``read_message`` for each without a Python call per stream. Stops at the first
        stream whose next message does not qualify (the caller handles it and the rest) or
        when the budget is spent. Returns ``(index in order where it stopped, budget left,
        last stream id read or -1)``."""
        result = self._sset.read_messages(order, budget, out)
        _flush_noted(self)
        return result

    def stream_finished(self, stream_id):
        """True once the peer's half of ``stream_id`` ended: its FIN arrived and every message
        was read, or the peer reset it."""
        s = self._sset.streams.get(stream_id)
        return s is not None and ((<_Stream>s).recv.is_finished or (<_Stream>s).recv._reset)

    def stream_send_complete(self, stream_id):
        """True once our half of ``stream_id`` needs nothing more: everything we sent, its FIN
        included, was acknowledged, or we reset it (or we never sent on it)."""
        s = self._sset.streams.get(stream_id)
        return s is None or (<_Stream>s).send.is_finished or (<_Stream>s).send._reset

    def message_ready(self, stream_id, Py_ssize_t max_bytes):
        """True if ``read_message(stream_id, max_bytes)`` would return a whole message, the end of
        one, or exactly ``max_bytes`` of one."""
        s = self._sset.streams.get(stream_id)
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
        if self._sset.idle_halves:
            self._sset.drop_stale_idle()
            if self._sset.idle_halves:
                t[TIMER_STREAM_IDLE] = self._sset.idle_times[0] + 3 * self._pto()
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
        if self._sset.idle_halves:
            self._sset.end_idle_halves()
        for s in self._sset.streams.values():
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
        return 0

    cdef double _effective_idle_timeout(self):
        cdef double idle = self._idle_timeout, peer = self._peer_idle_timeout
        if peer > 0.0:
            idle = min(idle, peer) if idle else peer
        if idle:
            idle = max(idle, 3 * self._pto())
        return idle

    cdef double _pto(self):
        cdef RttEstimator rtt = self._recovery.rtt
        return rtt.smoothed_rtt + max(4 * rtt.rttvar, 0.001) + self._peer_max_ack_delay

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
        _flush_noted(self)

    def _emit_terminated(self, ev):
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

    def _trace_keys(self, now, trigger):
        trace_keys(self._qlog, self._app_seal, now, trigger)

    def _trace_drop(self, now, size, trigger, packet_type=None, pn=None, reason=None):
        """Tell the trace about a packet this connection discarded (qlog packet_dropped)."""
        self._qlog.packet_dropped(now, size, trigger, packet_type=packet_type, pn=pn, reason=reason)

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
    # receiving
    def receive_datagram(self, data, addr, double now):
        """Process one UDP datagram from ``addr``. Malformed or unauthentic packets are dropped;
        a protocol violation by the authenticated peer closes the connection. Then call
        ``datagrams_to_send(now)``."""
        cdef Py_buffer view
        cdef bint have_view = False
        cdef const uint8_t* p
        cdef Py_ssize_t size, pos, start, end
        cdef uint8_t first
        cdef bint on_path
        cdef PathState paths = self._paths
        self._now_hint = now
        self._sset.now = now
        if self._state == _TERMINATED:
            return
        if not self._started:
            self._started = True
            self._created = now
            self._last_activity = now
        if PyBytes_CheckExact(data):
            p = <const uint8_t*>PyBytes_AS_STRING(data)
            size = PyBytes_GET_SIZE(data)
        else:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            have_view = True
            p = <const uint8_t*>view.buf
            size = view.len
        on_path = addr is paths.peer_addr or addr == paths.peer_addr
        try:
            self.bytes_received += size
            if on_path:
                paths.bytes_received += size
            pos = 0
            while pos < size:
                start = pos
                first = p[pos]
                if first & 0x80:
                    # long header (handshake space): rare, parsed with the codec's objects
                    buf = Buffer(data)
                    buf._pos = start
                    try:
                        hdr = codec.pull_header(buf, self._cid_len)
                    except ProtocolError:
                        self.packets_dropped += 1
                        return
                    end = hdr.payload_end
                    pos = end
                    ptype = hdr.packet_type
                    if ptype == codec.PACKET_VERSION_NEGOTIATION:
                        self._on_version_negotiation(hdr)
                        return
                    if ptype == codec.PACKET_RETRY:
                        self._on_retry(hdr, bytes(memoryview(data)[start:end]))
                        return
                    if ptype == codec.PACKET_ZERO_RTT:
                        self.packets_dropped += 1
                        continue
                    if not self._cids.knows(hdr.dcid) and not (
                            not self.is_client and hdr.dcid in (self.original_dcid, self._retry_scid)):
                        self.packets_dropped += 1
                        continue
                    self._receive_long(hdr, data, start, end, addr, now)
                else:
                    # short header (RFC 9000 §17.3.1): runs to the end of the datagram
                    if not (first & 0x40) or size - start - 1 < self._cid_len:
                        self.packets_dropped += 1
                        return
                    pos = size
                    if not self._short_dcid_ok(p + start + 1):
                        self.packets_dropped += 1
                        continue
                    self._receive_short(data, p, start, size, addr, now)
                if self._state >= _DRAINING:
                    return
        finally:
            if not on_path and (addr is paths.peer_addr or addr == paths.peer_addr):
                # this datagram moved the peer here: it counts toward the new path's
                # anti-amplification budget (else the PATH_CHALLENGE waits for another one)
                paths.bytes_received += size
            if have_view:
                PyBuffer_Release(&view)
            _flush_noted(self)

    def receive_segments(self, data, Py_ssize_t segment_size, addr, double now):
        """Process datagrams of ``segment_size`` bytes packed back to back in ``data`` (the
        last may be shorter), as UDP generic receive offload hands them over: the same as
        ``receive_datagram`` on each piece, without a Python call per datagram.

        Stops at the first piece that is not a short-header packet addressed to one of this
        connection's IDs and returns its offset (``len(data)`` when all were processed); the
        caller routes the rest one datagram at a time. Then call ``datagrams_to_send(now)``.
        """
        cdef Py_buffer view
        cdef const uint8_t* p
        cdef Py_ssize_t size, off, end
        cdef PathState paths = self._paths
        if segment_size <= 0:
            raise ValueError("segment_size must be > 0")
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            p = <const uint8_t*>view.buf
            size = view.len
            off = 0
            self._now_hint = now
            self._sset.now = now
            if self._state == _TERMINATED or not self._started:
                return 0
            path = addr is paths.peer_addr or addr == paths.peer_addr
            while off < size:
                end = off + segment_size
                if end > size:
                    end = size
                if (p[off] & 0xC0) != 0x40 or end - off - 1 < self._cid_len \
                        or not self._short_dcid_ok(p + off + 1):
                    return off
                self.bytes_received += end - off
                if path:
                    paths.bytes_received += end - off
                self._receive_short(data, p, off, end, addr, now)
                if not path and (addr is paths.peer_addr or addr == paths.peer_addr):
                    path = True  # this datagram moved the peer here (see receive_datagram)
                    paths.bytes_received += end - off
                off = end
                if self._state >= _DRAINING:
                    return size
            return size
        finally:
            PyBuffer_Release(&view)
            _flush_noted(self)

    cdef bint _awaits_validation(self):
        """Server whose client address is not validated and no path validation runs: an
        authenticated packet addressed to a connection ID we chose would validate it. (After a
        migration only PATH_RESPONSE validates the new address: the client's packets reach us
        with our connection IDs whatever source address an on-path attacker writes on them.)"""
        return self._paths.awaits_validation(self.is_client)

    cdef bint _dcid_chosen_by_us(self, const uint8_t* dcid):
        """``dcid`` is one of the connection IDs we issued (not the client-chosen original
        destination ID): only a peer that received our packets can know it."""
        cid = PyBytes_FromStringAndSize(<const char*>dcid, self._cid_len)
        return self._cids.knows(cid)

    cdef bint _short_dcid_ok(self, const uint8_t* dcid):
        if cid_is_current(self._cids, dcid):
            return True
        cid = PyBytes_FromStringAndSize(<const char*>dcid, self._cid_len)
        return self._cids.knows(cid) or (
            not self.is_client and cid in (self.original_dcid, self._retry_scid))

    cdef int _receive_short(self, object data, const uint8_t* p, Py_ssize_t start,
                            Py_ssize_t end, object addr, double now) except -1:
        cdef _Space space = self._app
        cdef Py_ssize_t rel = 1 + self._cid_len, plen = end - start, hlen
        cdef int pn_len, i
        cdef int64_t truncated, pn
        cdef uint8_t first
        cdef bint to_our_cid = False
        opener = self._app_open
        if space.discarded or opener is None:
            self.packets_dropped += 1
            if self._qlog is not None:
                self._trace_drop(now, plen, "rejected", codec.PACKET_SHORT, None, "no 1-RTT keys")
            return 0
        if self._awaits_validation():
            to_our_cid = self._dcid_chosen_by_us(p + start + 1)
        if self._app_open_null:
            # null protection: the packet number is in the clear
            first = p[start]
            pn_len = (first & 0x03) + 1
            pn = PN_MAX + 1
            if plen >= rel + pn_len:
                truncated = 0
                for i in range(pn_len):
                    truncated = (truncated << 8) | p[start + rel + i]
                pn = _decode_pn(truncated, pn_len * 8, space.largest_rx + 1)
            if pn > PN_MAX:
                # what NullProtection.decrypt_packet rejects as DecryptionFailed
                self.packets_dropped += 1
                if self._qlog is not None:
                    self._trace_drop(now, plen, "decryption_failure", codec.PACKET_SHORT)
                if self.is_stateless_reset(memoryview(data)[start:end]):
                    self.on_stateless_reset(now)
                return 0
            hlen = rel + pn_len
            return self._after_open(SP_APP, space, opener, pn, first, p + start + hlen,
                                    plen - hlen, data, start + hlen, False, None, plen, addr, now,
                                    to_our_cid)
        if type(opener) is PacketProtection:
            try:
                payload = (<PacketProtection>opener).c_open(p + start, plen, rel, space.largest_rx + 1, &pn, &first)
            except DecryptionFailed:
                self.packets_dropped += 1
                if self._qlog is not None:
                    self._trace_drop(now, plen, "decryption_failure", codec.PACKET_SHORT)
                if self.is_stateless_reset(memoryview(data)[start:end]):
                    self.on_stateless_reset(now)
                return 0
            except ProtocolError as exc:
                self._protocol_error(exc)
                return 0
            return self._after_open(SP_APP, space, opener, pn, first,
                                    <const uint8_t*>PyBytes_AS_STRING(payload),
                                    PyBytes_GET_SIZE(payload), payload, 0, False, None, plen, addr,
                                    now, to_our_cid)
        if start == 0 and PyBytes_CheckExact(data) and end == PyBytes_GET_SIZE(data):
            packet = data
        else:
            packet = bytes(memoryview(data)[start:end])
        try:
            plain_header, payload, pn = opener.decrypt_packet(packet, rel, space.largest_rx + 1)
        except DecryptionFailed:
            self.packets_dropped += 1  # forged, corrupted or for keys we no longer have: drop
            if self._qlog is not None:
                self._trace_drop(now, plen, "decryption_failure", codec.PACKET_SHORT)
            if self.is_stateless_reset(packet):
                self.on_stateless_reset(now)
            return 0
        except ProtocolError as exc:
            self._protocol_error(exc)  # e.g. AEAD_LIMIT_REACHED (RFC 9001 §6.6)
            return 0
        if not PyBytes_CheckExact(payload):
            payload = bytes(payload)
        return self._after_open(SP_APP, space, opener, pn, plain_header[0],
                                <const uint8_t*>PyBytes_AS_STRING(payload),
                                PyBytes_GET_SIZE(payload), payload, 0, False, None, plen, addr, now,
                                to_our_cid)

    cdef int _receive_long(self, object hdr, object data, Py_ssize_t start, Py_ssize_t end,
                           object addr, double now) except -1:
        cdef _Space space = self._hs
        opener = self._open[SP_HS]
        if space.discarded or opener is None:
            self.packets_dropped += 1
            return 0
        if (self.is_client and self._retry_scid is not None and not self._cids.peer_cid_set_by_server
                and hdr.scid != self._retry_scid):
            # after a Retry the server's connection uses the Retry's source connection ID;
            # another one is a connection the server made for an earlier copy of our first
            # packet (accepted without the Retry): ignore it (PROTOCOL.md §18)
            self.packets_dropped += 1
            return 0
        try:
            plain_header, payload, pn = opener.decrypt_packet(
                memoryview(data)[start:end], hdr.pn_offset - start, space.largest_rx + 1)
        except DecryptionFailed:
            self.packets_dropped += 1  # forged, corrupted or for keys we no longer have: drop
            if self._qlog is not None:
                self._trace_drop(now, end - start, "decryption_failure", hdr.packet_type)
            return 0
        except ProtocolError as exc:
            self._protocol_error(exc)
            return 0
        if not PyBytes_CheckExact(payload):
            payload = bytes(payload)
        return self._after_open(SP_HS, space, opener, pn, plain_header[0],
                                <const uint8_t*>PyBytes_AS_STRING(payload),
                                PyBytes_GET_SIZE(payload), payload, 0, True, hdr, end - start,
                                addr, now,
                                self._awaits_validation() and self._cids.knows(hdr.dcid))

    cdef int _after_open(self, int space_id, _Space space, object opener, int64_t pn, int first,
                         const uint8_t* payload, Py_ssize_t plen, object pobj, Py_ssize_t poff,
                         bint is_long, object hdr, Py_ssize_t packet_len, object addr,
                         double now, bint to_our_cid) except -1:
        """An authenticated packet: duplicate check, frames, ACK bookkeeping, migration.

        ``to_our_cid``: the packet was addressed to a connection ID we chose while the client's
        address awaited validation (see ``_awaits_validation``)."""
        cdef bint eliciting = False, non_probing = False
        if pn < space.rx_floor or space.rx.contains(<uint64_t>pn):
            self.duplicate_packets += 1
            if self._qlog is not None:
                self._trace_drop(now, packet_len, "rejected",
                                 hdr.packet_type if is_long else codec.PACKET_SHORT, pn, "duplicate")
            return 0
        if (is_long and (first & 0x0C)) or (not is_long and (first & 0x18)):
            self._protocol_error(ProtocolError("reserved header bits set", _PROTOCOL_VIOLATION))
            return 0
        # the packet is authentic from here on
        self.packets_received += 1
        if self._state == _CLOSING:
            # answer with CONNECTION_CLOSE again: to the 1st, 2nd, 4th, 8th... packet that
            # arrives while closing (RFC 9000 §10.2.1: a rate that decreases)
            self._closing_rx += 1
            if self._closing_rx & (self._closing_rx - 1) == 0:
                self._close_resend = True
                _note_work(self)
        if (space_id == SP_APP and self._old_keys_deadline is None and not self._app_open_null
                and getattr(opener.keys, "has_old_keys", False)):
            self._old_keys_deadline = now + 3 * self._pto()
        self._last_activity = now
        self._tx.eliciting_since_receive = False
        if is_long and self.is_client and not self._cids.peer_cid_set_by_server:
            # RFC 9000 §7.2: the client switches to the server's chosen connection ID
            self._cids.peer_cid_set_by_server = True
            self._cids.server_chose(hdr.scid)
        if to_our_cid and self._awaits_validation():
            # the client used a connection ID we chose: it received one of our packets at
            # this address. Nothing else in a handshake-phase packet proves that: those
            # packets have no packet protection, and the original destination ID is the
            # client's own choice (PROTOCOL.md §18.1)
            self._paths.validated = True
        if space_id == SP_APP and not self.is_client and not self._handshake_confirmed:
            self._confirm_handshake()
        if self._qlog is not None:
            if space_id == SP_APP:
                self._trace_keys(now, "remote_update")
            try:
                decoded = frames.decode_frames(pobj[poff:poff + plen])
            except ProtocolError:
                decoded = []
            self._qlog.packet_received(now, hdr.packet_type if is_long else codec.PACKET_SHORT,
                                       pn, packet_len, decoded)
        if space_id == SP_APP:
            self._sset.rx_pn = pn
        try:
            self._process_frames(space_id, payload, plen, pobj, poff, now, is_long,
                                 &eliciting, &non_probing)
        except ProtocolError as exc:
            self._protocol_error(exc)
            return 0
        except _DropPacket:
            # a frame's stream incarnation cannot be told yet: the packet counts as not
            # received (no ACK), its sender sends the frames again (PROTOCOL.md §16.7). The
            # ACK that resolves the halves waiting goes out now
            self.packets_dropped += 1
            if self._sset.tomb_new is not None and not space.ack_pending:
                space.ack_pending = True
                space.ack_deadline = now
                _note_work(self)
            return 0
        if self._state >= _DRAINING:
            return 0
        # ACK bookkeeping (RFC 9000 §13.2)
        space_received(space, pn, eliciting, space_id == SP_HS, now, self._max_ack_ranges,
                          self._ack_eliciting_threshold, self._max_ack_delay)
        # migration (RFC 9000 §9.3): only the highest-numbered non-probing packet moves the path
        if (space_id == SP_APP and non_probing and pn == space.largest_rx
                and self._state == _ESTABLISHED
                and not (addr is self._paths.peer_addr or addr == self._paths.peer_addr)):
            self._on_peer_address_change(addr, now)
        return 0

    cdef int _process_frames(self, int space_id, const uint8_t* p, Py_ssize_t n, object pobj,
                             Py_ssize_t poff, double now, bint long_header, bint* eliciting,
                             bint* non_probing) except -1:
        """Decode and act on every frame of a payload ``p[:n]`` (which is ``pobj[poff:]``).

        STREAM and RESET_STREAM frames act after every other frame of the packet, in their
        order: a packet with one whose stream incarnation cannot be told yet is dropped before
        any of them changed a stream (_DropPacket, PROTOCOL.md §16.7)."""
        cdef Buffer rb = self._rbuf
        cdef Buffer fb
        cdef Py_ssize_t pos = 0, at, start = 0, nd = 0, i
        cdef _DeferredStream dfr[64]      # deferred STREAM frames, as the first pass parsed them
        cdef list dlist = None            # ... beyond 64, or once a RESET_STREAM is deferred
                                          # (offsets in p, parsed again: rare)
        cdef uint64_t ftype, sid, off, length, delay = 0
        cdef bint fin
        cdef list ranges
        if n <= 0:
            raise ProtocolError("packet without frames", _PROTOCOL_VIOLATION)
        while pos < n:
            ftype = p[pos]
            frame = None
            ranges = None
            start = pos
            if 0x08 <= ftype <= 0x0F:
                # STREAM: header parsed in C, data inserted straight from the packet
                rb._base = <unsigned char*>p
                rb._size = n
                rb._pos = pos + 1
                pull_stream_frame_header(rb, ftype, &sid, &off, &length, &fin)
                pos = rb._pos + <Py_ssize_t>length
            elif ftype == F_PADDING:
                pos += 1
                while pos < n and p[pos] == 0:
                    pos += 1
            elif ftype == F_PING:
                pos += 1
            else:
                if ftype == F_ACK or ftype == F_ACK_ECN:
                    # the codec's parser, straight from the packet (no frame object)
                    at = pos + 1
                    try:
                        ranges = parse_ack_ranges(p, n, &at, ACK_RANGES_LIMIT, &delay, False)
                        if ftype == F_ACK_ECN:
                            parse_ecn(p, n, &at)
                        pos = at
                    except ProtocolError:
                        ranges = None  # the codec below raises it again with the frame named
                if ranges is None:
                    # everything else (and any malformed frame) through the codec
                    fb = Buffer(pobj)
                    fb._pos = poff + pos
                    frame = frames.pull_frame(fb)
                    pos = fb._pos - poff
                    ftype = frame.wire_type
            if long_header and not (ftype <= F_ACK_ECN or ftype == F_CRYPTO
                                    or ftype == F_CONNECTION_CLOSE):
                raise ProtocolError(f"frame 0x{ftype:x} not allowed in a handshake packet",
                                    _PROTOCOL_VIOLATION, ftype)
            if not (ftype == F_ACK or ftype == F_ACK_ECN or ftype == F_PADDING
                    or ftype == F_CONNECTION_CLOSE or ftype == F_CONNECTION_CLOSE_APP):
                eliciting[0] = True
            if not (ftype == F_PADDING or ftype == F_PATH_CHALLENGE or ftype == F_PATH_RESPONSE
                    or ftype == F_NEW_CONNECTION_ID):
                non_probing[0] = True
            if frame is not None:
                if ftype == F_RESET_STREAM:
                    if self._sset.ambiguous(frame.stream_id):
                        raise _DropPacket()
                    if dlist is None:
                        dlist = [dfr[i].at for i in range(nd)]
                    dlist.append(frame)
                else:
                    self._dispatch_frame(space_id, frame, now)
            elif ranges is not None:
                self._on_ack_c(space_id, ranges, delay, now)
            elif 0x08 <= ftype <= 0x0F:
                if self._sset.ambiguous(sid):
                    raise _DropPacket()
                if dlist is not None:
                    dlist.append(start)
                elif nd < 64:
                    dfr[nd].at = start
                    dfr[nd].sid = sid
                    dfr[nd].off = off
                    dfr[nd].length = length
                    dfr[nd].data = pos - <Py_ssize_t>length
                    dfr[nd].fin = fin
                    dfr[nd].ftype = <int>(0x08 | (0x04 if off else 0) | (ftype & 0x02)
                                          | (0x01 if fin else 0))
                    nd += 1
                else:
                    dlist = [dfr[i].at for i in range(nd)]
                    dlist.append(start)
            if self._state >= _DRAINING:
                return 0
        if dlist is None:
            for i in range(nd):
                if self._state >= _DRAINING:
                    break
                self._sset.on_stream(dfr[i].sid, dfr[i].off, p + dfr[i].data,
                                  <Py_ssize_t>dfr[i].length, dfr[i].fin, dfr[i].ftype)
        else:
            for item in dlist:
                if self._state >= _DRAINING:
                    break
                if type(item) is int:
                    self._stream_frame_at(p, n, <Py_ssize_t>item)
                else:
                    self._sset.on_reset_stream(item, now)
        return 0

    cdef int _stream_frame_at(self, const uint8_t* p, Py_ssize_t n, Py_ssize_t pos) except -1:
        """Act on the STREAM frame at ``p[pos]`` (already checked by the first pass)."""
        cdef Buffer rb = self._rbuf
        cdef uint64_t ftype = p[pos], sid, off, length
        cdef bint fin
        rb._base = <unsigned char*>p
        rb._size = n
        rb._pos = pos + 1
        pull_stream_frame_header(rb, ftype, &sid, &off, &length, &fin)
        self._sset.on_stream(sid, off, p + rb._pos, <Py_ssize_t>length, fin,
                          <int>(0x08 | (0x04 if off else 0) | (ftype & 0x02) | (0x01 if fin else 0)))
        return 0

    cdef int _dispatch_frame(self, int space_id, object frame, double now) except -1:
        handler = _FRAME_HANDLERS.get(frame.wire_type)
        if handler is not None:
            handler(self, space_id, frame, now)
        return 0

    # --- frame handlers ---
    def _on_ack(self, space_id, frame, now):
        self._on_ack_c(space_id, list(frame.ranges), frame.ack_delay, now)

    cdef int _on_ack_c(self, int space_id, list ranges, uint64_t ack_delay, double now) except -1:
        cdef double delay = 0.0
        if space_id == SP_APP:
            delay = ldexp(<double>ack_delay, self._peer_ack_delay_exponent) / 1e6
        return self._tx.on_ack(space_id, ranges, delay, now)

    def _on_stream(self, space_id, frame, now):
        data = bytes(frame.data)
        self._sset.on_stream(frame.stream_id, frame.offset,
                             <const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data),
                             frame.fin, frame.frame_type)

    # the frames about streams and flow control are the stream table's (_streamset.pyx)
    def _on_reset_stream(self, space_id, frame, now):
        self._sset.on_reset_stream(frame, now)

    def _on_stop_sending(self, space_id, frame, now):
        self._sset.on_stop_sending(frame)

    def _on_max_data(self, space_id, frame, now):
        self._sset.on_max_data(frame)

    def _on_max_stream_data(self, space_id, frame, now):
        self._sset.on_max_stream_data(frame)

    def _on_max_streams(self, space_id, frame, now):
        self._sset.on_max_streams(frame)

    def _on_data_blocked(self, space_id, frame, now):
        self._sset.on_data_blocked(frame)

    def _on_stream_data_blocked(self, space_id, frame, now):
        self._sset.on_stream_data_blocked(frame)

    def _on_crypto(self, space_id, frame, now):
        cdef _Space space = self._spaces[space_id]
        if space.crypto_recv is None:
            space.crypto_recv = RecvStream(0, MAX_CRYPTO_BUFFER)
        try:
            space.crypto_recv.insert(frame.offset, frame.data, False)
        except ProtocolError as exc:
            if exc.error_code == ErrorCode.FLOW_CONTROL_ERROR:
                raise ProtocolError("crypto buffer exceeded", ErrorCode.CRYPTO_BUFFER_EXCEEDED) from None
            raise
        while space.crypto_recv.message_ready(MAX_CRYPTO_BUFFER):
            piece = space.crypto_recv.read_message(MAX_CRYPTO_BUFFER)
            if piece is None:
                break
            message, end = piece
            if not end:
                raise ProtocolError("handshake message too long", ErrorCode.CRYPTO_BUFFER_EXCEEDED)
            self._on_handshake_message(message, now)
            if self._state >= _CLOSING:
                return

    def _on_handshake_message(self, message, now):
        hs = self._handshake
        if hs is None or hs.complete:
            return  # a retransmission of a message already processed
        try:
            reply = hs.receive(message)
        except AuthenticationError as exc:
            self._protocol_error(ProtocolError(str(exc), ErrorCode.AUTHENTICATION_FAILED), auth=True)
            return
        except ProtocolError as exc:
            raise ProtocolError(str(exc), ErrorCode.HANDSHAKE_FAILED) from None
        if reply is not None:
            self._hs.crypto_send.write_message(reply)
        if hs.complete:
            self._on_handshake_complete(now)

    def _on_handshake_complete(self, now):
        cdef _Stream s
        hs = self._handshake
        params = TransportParameters.decode(hs.peer_transport_params or b"")
        # RFC 9000 §7.3: authenticate the connection IDs used during the handshake
        if params.initial_source_connection_id != self._cids.peer_cid:
            raise ProtocolError("initial_source_connection_id mismatch",
                                ErrorCode.TRANSPORT_PARAMETER_ERROR)
        if self.is_client and params.original_destination_connection_id != self.original_dcid:
            raise ProtocolError("original_destination_connection_id mismatch",
                                ErrorCode.TRANSPORT_PARAMETER_ERROR)
        if self.is_client and params.retry_source_connection_id != self._retry_scid:
            raise ProtocolError("retry_source_connection_id mismatch",
                                ErrorCode.TRANSPORT_PARAMETER_ERROR)
        self._peer_params = params
        self._peer_idle_timeout = params.max_idle_timeout / 1000.0
        self._cids.set_peer_reset_token(params.stateless_reset_token)
        self._sset.peer_max_data = params.initial_max_data
        self._sset.peer_stream_limit = params.initial_max_stream_data
        self._sset.peer_stream_credit = params.initial_max_streams
        self._peer_max_ack_delay = params.max_ack_delay / 1000.0
        self._recovery.max_ack_delay = self._peer_max_ack_delay
        self._peer_ack_delay_exponent = params.ack_delay_exponent
        self._peer_max_datagram_frame = params.max_datagram_frame_size
        for s in self._sset.streams.values():
            s.send_limit = max(s.send_limit, self._sset.peer_stream_limit)
        seal, open_ = hs.protections(key_update_interval=self.config.key_update_interval)
        self._set_app_protection(seal, open_)
        self.peer_key = hs.peer_static
        self._state = _ESTABLISHED
        # issue spare connection IDs for migration (RFC 9000 §5.1.1)
        self._cids.issue_spares(min(params.active_connection_id_limit, 8))
        self._events.append(HandshakeCompleted(hs.peer_static))
        if self._qlog is not None:
            self._trace_keys(now, "tls")
        for s in list(self._sset.streams.values()):
            if s.send.has_pending_c() or s.owed & (OWE_RESET_STREAM | OWE_STOP_SENDING):
                self._sset.schedule(s)

    def _confirm_handshake(self):
        """RFC 9001 §4.1.2: the server confirms on its first 1-RTT packet from the client; the
        client on HANDSHAKE_DONE. The handshake space is then discarded."""
        if self._handshake_confirmed or self._state < _ESTABLISHED:
            return
        self._handshake_confirmed = True
        self._recovery.handshake_confirmed = True
        if not self.is_client:
            self._tx.pending.once |= OWE_HANDSHAKE_DONE
        self._discard_space(SP_HS)
        # the handshake's state (its Noise objects are gone already, the 1-RTT keys live on
        # in _seal/_open) and both sides' transport parameters (what is needed of the
        # peer's was copied) are not needed any more
        self._handshake = None
        self._local_params = None
        self._peer_params = None

    def _discard_space(self, int space_id):
        cdef _Space space = self._spaces[space_id]
        if space.discarded:
            return
        space.discarded = True
        space.ack_deadline = -1.0
        space.ack_pending = False
        self._recovery.discard_space(space_id)
        self._tx.probes[space_id] = 0
        space.release()
        self._seal[space_id] = None
        self._open[space_id] = None

    def _on_handshake_done(self, space_id, frame, now):
        if not self.is_client:
            raise ProtocolError("HANDSHAKE_DONE from a client", ErrorCode.PROTOCOL_VIOLATION)
        self._confirm_handshake()

    def _on_ignore(self, space_id, frame, now):
        """PADDING, PING and the BLOCKED frames need no action beyond acknowledgement."""

    def _on_new_connection_id(self, space_id, frame, now):
        self._cids.on_new_connection_id(frame.sequence, bytes(frame.connection_id),
                                        bytes(frame.stateless_reset_token), frame.retire_prior_to)

    def _on_retire_connection_id(self, space_id, frame, now):
        self._cids.on_retire_connection_id(frame.sequence)

    def _on_path_challenge(self, space_id, frame, now):
        data = bytes(frame.data)  # 8 bytes (the codec checks)
        self._paths.on_challenge(<const unsigned char*>PyBytes_AS_STRING(data))

    def _on_path_response(self, space_id, frame, now):
        old = self._paths.on_response(bytes(frame.data))
        if old is not None:
            self._events.append(PathChanged(old, self._paths.peer_addr))

    def _on_connection_close(self, space_id, frame, now):
        if self._state >= _CLOSING:
            # the answer to our own CONNECTION_CLOSE (or both closed at once): the peer has
            # it, nothing more to say (RFC 9000 §10.2.1)
            self._enter_closing(_DRAINING, now)
            return
        reason = bytes(frame.reason).decode("utf-8", "replace")
        self._emit_terminated(ConnectionTerminated(frame.error_code, reason, by_peer=True,
                                                   application=frame.application))
        if self._state == _ESTABLISHED:
            # one CONNECTION_CLOSE (NO_ERROR) in answer before draining (RFC 9000 §10.2.2
            # allows it): it tells a peer whose close() waits that its close arrived
            self._close_frame = (0, 0, b"", False)
            self._close_reply_owed = True
            _note_work(self)
        self._enter_closing(_DRAINING, now)

    def _on_datagram(self, space_id, frame, now):
        limit = self.config.max_datagram_frame_size
        if not limit or len(frame.data) + 4 > limit:
            raise ProtocolError("DATAGRAM frame too large or not accepted",
                                ErrorCode.PROTOCOL_VIOLATION, frame.frame_type)
        self._events.append(DatagramReceived(bytes(frame.data)))

    def _on_retry(self, hdr, packet):
        """Client: the server asks us to prove our address (RFC 9000 §17.2.5.2)."""
        if (not self.is_client or self._state != _HANDSHAKING or self._retry_scid is not None
                or self.packets_received or hdr.dcid != self._cids.host_cid or not hdr.token):
            self.packets_dropped += 1
            return
        if retry_integrity_tag(self.original_dcid, packet[:-16]) != bytes(hdr.integrity_tag):
            self.packets_dropped += 1
            return
        self._retry_scid = bytes(hdr.scid)
        self._tx.retry_token = bytes(hdr.token)
        self._cids.server_chose(self._retry_scid)
        # the server kept nothing: send the first handshake message again, same offsets
        cs = self._hs.crypto_send
        cs.on_lost(0, cs.offset_sent, False)

    def peer_reset_tokens(self):
        """Stateless reset tokens the peer gave us (one per connection ID of the peer)."""
        return self._cids.peer_reset_tokens()

    @property
    def reset_token(self):
        """The stateless reset token of the peer's connection ID we use now (None if the peer
        gave none): the only one a reset can carry (RFC 9000 §10.3.1)."""
        return self._cids.reset_token

    def is_stateless_reset(self, datagram):
        """True if ``datagram`` ends with the reset token of the peer connection ID in use
        (tokens of IDs we have not used, or retired, do not count: RFC 9000 §10.3.1)."""
        if len(datagram) < 21 or self._state >= _DRAINING:
            return False
        token = self.reset_token
        return token is not None and hmac.compare_digest(bytes(datagram[-16:]), token)

    def on_stateless_reset(self, now):
        """The peer lost its state for this connection: stop at once (RFC 9000 §10.3)."""
        if self._state >= _DRAINING:
            return
        self._emit_terminated(ConnectionTerminated(0, "stateless reset", by_peer=True))
        self._enter_closing(_DRAINING, now)

    def _on_version_negotiation(self, hdr):
        if not self.is_client or self._state != _HANDSHAKING or self.packets_received:
            return
        if codec.DQUIC_VERSION_1 in hdr.supported_versions:
            return  # RFC 9000 §6.2: ignore a VN that lists our version
        self._state = _TERMINATED
        self._emit_terminated(ConnectionTerminated(ErrorCode.CONNECTION_REFUSED,
                                                   "no common protocol version", by_peer=True))

    # ----------------------------------------------------------------------------------------
    # closing
    def _protocol_error(self, exc, auth=False):
        if self._state >= _CLOSING:
            return
        code = exc.error_code
        self._close_frame = (code, exc.frame_type or 0, str(exc).encode()[:256], False)
        self._enter_closing(_CLOSING, None)
        self._emit_terminated(ConnectionTerminated(code, str(exc), by_peer=False))

    def _enter_closing(self, int state, now):
        self._state = state
        self._close_deadline = None if now is None else now + 3 * self._pto()
        self._sset.send_queue = None
        self._tx.pacing_deadline = -1.0
        self._hs.ack_deadline = -1.0
        self._app.ack_deadline = -1.0

    # ----------------------------------------------------------------------------------------
    # path management
    def _on_peer_address_change(self, addr, now):
        old = self._paths.peer_addr
        challenge = bytes(self._random(8))
        if len(challenge) != 8:
            raise ValueError("random_bytes(8) must return 8 bytes")
        self._paths.move(addr, challenge, now + max(3 * self._pto(), 0.1))
        if old[0] != addr[0]:
            # a new network path: congestion state does not carry over (RFC 9000 §9.4)
            self._reset_congestion()
        self._cids.switch_peer_cid()

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
        _flush_noted(self)
        return out

    cdef int64_t _amplification_room(self):
        return amplification_room(self._paths)

    cdef object _send_close(self, double now):
        """The CONNECTION_CLOSE datagram due now (at most one per PTO while closing), or None."""
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
            # data to be acknowledged learns it from this packet (at most 32 ranges)
            ack_rec = new_sent()
            try:
                write_ack(self._tx.sbuf, self._app, SP_APP, now, ack_rec, 32,
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
            self._qlog.packet_sent(now, codec.PACKET_SHORT if space_id == SP_APP else (
                codec.PACKET_INITIAL if self.is_client and not self._cids.peer_cid_set_by_server
                else codec.PACKET_HANDSHAKE), pn, len(data), traced)
        if len(data) > self._amplification_room():
            return None
        self.bytes_sent += len(data)
        self._paths.bytes_sent += len(data)
        return data


_FRAME_HANDLERS = {
    frames.FRAME_PADDING: CoreConnection._on_ignore,
    frames.FRAME_PING: CoreConnection._on_ignore,
    frames.FRAME_ACK: CoreConnection._on_ack,
    frames.FRAME_ACK_ECN: CoreConnection._on_ack,
    frames.FRAME_RESET_STREAM: CoreConnection._on_reset_stream,
    frames.FRAME_STOP_SENDING: CoreConnection._on_stop_sending,
    frames.FRAME_CRYPTO: CoreConnection._on_crypto,
    frames.FRAME_NEW_TOKEN: CoreConnection._on_ignore,
    frames.FRAME_MAX_DATA: CoreConnection._on_max_data,
    frames.FRAME_MAX_STREAM_DATA: CoreConnection._on_max_stream_data,
    frames.FRAME_MAX_STREAMS: CoreConnection._on_max_streams,
    frames.FRAME_DATA_BLOCKED: CoreConnection._on_data_blocked,
    frames.FRAME_STREAM_DATA_BLOCKED: CoreConnection._on_stream_data_blocked,
    frames.FRAME_STREAMS_BLOCKED: CoreConnection._on_ignore,
    frames.FRAME_NEW_CONNECTION_ID: CoreConnection._on_new_connection_id,
    frames.FRAME_RETIRE_CONNECTION_ID: CoreConnection._on_retire_connection_id,
    frames.FRAME_PATH_CHALLENGE: CoreConnection._on_path_challenge,
    frames.FRAME_PATH_RESPONSE: CoreConnection._on_path_response,
    frames.FRAME_CONNECTION_CLOSE: CoreConnection._on_connection_close,
    frames.FRAME_CONNECTION_CLOSE_APP: CoreConnection._on_connection_close,
    frames.FRAME_HANDSHAKE_DONE: CoreConnection._on_handshake_done,
    frames.FRAME_DATAGRAM: CoreConnection._on_datagram,
    frames.FRAME_DATAGRAM_LEN: CoreConnection._on_datagram,
}
for _t in range(0x08, 0x10):
    _FRAME_HANDLERS[_t] = CoreConnection._on_stream
