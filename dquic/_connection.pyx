# cython: language_level=3
"""The sans-IO connection: one dquic connection's whole protocol state machine (compiled).

Theory of operation
-------------------
A ``CoreConnection`` never touches a socket, a thread or a clock. Its driver (the endpoint, the
blocking ``DQUIC`` class, the asyncio API or the network simulator) feeds it what happens and asks
it what to do:

* ``receive_datagram(data, addr, now)`` when a datagram for this connection arrives;
* ``handle_timer(now)`` when the deadline from ``get_timer()`` has passed;
* commands from the application: ``send_message``, ``end_stream``, ``reset_stream``,
  ``stop_sending``, ``send_datagram``, ``close``.

After each of those the driver calls ``datagrams_to_send(now)`` and sends every ``(data, addr)``
it returns, then re-arms its timer from ``get_timer()``, and drains ``next_event()``.

Packets live in two packet-number spaces (PROTOCOL.md §12.1): HANDSHAKE (long-header packets that
carry the Noise handshake in CRYPTO frames) and APPLICATION (short-header 1-RTT packets sealed
with the keys the handshake produced). Each space tracks the packet numbers it received (a
``RangeSet`` that becomes ACK frames) and the packets it sent (``Recovery``, RFC 9002).

Per-packet path
---------------
Short-header packets are built in one reusable buffer: header, ACK and STREAM frame headers are
written with C calls and stream bytes are copied straight from the stream's send buffer. What a
sent packet carried is recorded in the packet object itself (``_Sent``, a ``SentPacket`` with a
small C array of typed frame records, ``FrameRecord``); when ``Recovery`` declares it
acknowledged or lost, the connection replays the records in packet order: STREAM byte ranges
are marked delivered or re-queued (lost data is always re-sent as byte ranges of its stream in
new packets, never by replaying a packet), a lost control frame is owed again, and the object is
recycled.

Control frames owed to the peer are one structure (``Pending``: a bit per frame owed once,
small queues for connection IDs and path responses; a stream's own bits are in ``_Stream.owed``).
Every frame but STREAM, ACK and CONNECTION_CLOSE is written by ``_put_frame`` (fits, written,
recorded) and the owed ones by ``_pay`` (and then no longer owed).

Received short-header packets are parsed in place: STREAM data goes from the datagram (or the
decrypted payload) straight into the stream's reassembly buffer, ACK frames are decoded without
frame objects. Rare frames go through the ``dquic._frames`` frame classes.

Stream bytes carry length-prefixed messages (PROTOCOL.md §8): ``send_message`` appends one,
``read_message`` returns the next message (or the next piece of a large one).
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize, PyByteArray_Resize
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize,
                            PyBytes_GET_SIZE)
from cpython.mem cimport PyMem_Free, PyMem_Realloc
cimport cython
from libc.math cimport ldexp
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memmove, memset

from dquic._codec cimport Buffer, c_varint_size
from dquic._frames cimport (c_push_stream_frame_header, parse_ack_ranges, parse_ecn,
                            pull_stream_frame_header)
from dquic._congestion cimport CongestionController, Pacer
from dquic._ranges cimport RangeSet
from dquic._protection cimport PacketProtection
from dquic._recovery cimport Recovery, RttEstimator, SentPacket
from dquic._streams cimport FlowWindow, RecvStream, SendStream
from dquic._wire cimport (be_read, be_write, pn_decode as _decode_pn, pn_length as _pn_length,
                         varint_len as _varint_len, varint_prefixed_payload_len as _payload_len,
                         varint_write)

import hmac
import os
from bisect import bisect_left, insort
from collections import deque

from dquic import _codec as codec
from dquic import _frames as frames
from dquic._protection import DecryptionFailed, NullProtection
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

MAX_STREAM_ID = (1 << 62) - 1
MAX_CRYPTO_BUFFER = 16 * 1024
MAX_PENDING_PATH_RESPONSES = 4
#: 1-RTT packets declared lost whose stream data is remembered for a late acknowledgement
#: (_late_acks); beyond it the oldest are forgotten
MAX_LOST_STREAM_PACKETS = 1024
#: An established connection with nothing received for this long (at least 3 PTO) gives back
#: the memory only moving data needs (see CoreConnection._release_idle).
IDLE_RELEASE_AFTER = 1.0

cdef enum:
    SP_HS = 0
    SP_APP = 1
    # connection states
    _HANDSHAKING = 0
    _ESTABLISHED = 1
    _CLOSING = 2
    _DRAINING = 3
    _TERMINATED = 4
    # frame types used on the fast paths (RFC 9000 §19)
    F_PADDING = 0x00
    F_PING = 0x01
    F_ACK = 0x02
    F_ACK_ECN = 0x03
    F_RESET_STREAM = 0x04
    F_CRYPTO = 0x06
    F_NEW_CONNECTION_ID = 0x18
    F_PATH_CHALLENGE = 0x1A
    F_PATH_RESPONSE = 0x1B
    F_CONNECTION_CLOSE = 0x1C
    F_CONNECTION_CLOSE_APP = 0x1D
    # recycled sent-packet records kept (for all connections)
    FREE_SENT_MAX = 4096
    # idle send buffers kept (one per thread building packets at the same time), and their
    # size: the largest max_datagram_size (Configuration.validate: at most 65527)
    SEND_SCRATCH_MAX = 16
    SEND_SCRATCH_SIZE = 65536
    # frame records a sent packet holds inline (_Sent.recs), and how many more it may keep
    # room for while it waits to be reused
    INLINE_RECORDS = 8
    MORE_RECORDS_KEPT = 32
    # the codec's default limit on ranges in a received ACK frame
    ACK_RANGES_LIMIT = 256

# the connection's timers (the timer table, see _fill_timers)
cdef enum:
    TIMER_LOSS = 0             # loss detection / probe timeout (RFC 9002 §6)
    TIMER_ACK_HANDSHAKE = 1    # delayed ACK, handshake space
    TIMER_ACK = 2              # delayed ACK, application space
    TIMER_PACING = 3           # the pacer lets the next packet go
    TIMER_HANDSHAKE = 4        # the handshake must be done by then
    TIMER_IDLE = 5             # idle timeout (RFC 9000 §10.1)
    TIMER_KEEP_ALIVE = 6       # send a PING
    TIMER_PATH_VALIDATION = 7  # PATH_CHALLENGE unanswered
    TIMER_OLD_KEYS = 8         # drop the keys of the previous key phase
    TIMER_CLOSE = 9            # closing or draining period over
    TIMER_STREAM_IDLE = 10     # end our halves whose messages were all acknowledged 3 PTO ago
    TIMER_IDLE_RELEASE = 11    # quiet for a while: give back idle memory (_release_idle)
    TIMER_KINDS = 12

# frames owed (Pending.once, _Stream.owed): one bit per frame kind
cdef enum:
    OWE_HANDSHAKE_DONE = 1 << FR_HANDSHAKE_DONE
    OWE_MAX_DATA = 1 << FR_MAX_DATA
    OWE_MAX_STREAMS = 1 << FR_MAX_STREAMS
    OWE_MAX_STREAM_DATA = 1 << FR_MAX_STREAM_DATA
    OWE_RESET_STREAM = 1 << FR_RESET_STREAM
    OWE_STOP_SENDING = 1 << FR_STOP_SENDING
    OWE_PING = 1 << FR_PING
    OWE_PATH_CHALLENGE = 1 << FR_PATH_CHALLENGE
    # what makes a packet worth building by itself (a PING waits for a packet, see
    # _build_app_packet)
    OWE_CONTROL = OWE_HANDSHAKE_DONE | OWE_MAX_DATA | OWE_MAX_STREAMS | OWE_PATH_CHALLENGE

TIMER_NAMES = ("loss", "ack_handshake", "ack", "pacing", "handshake", "idle", "keep_alive",
               "path_validation", "old_keys", "close", "stream_idle", "idle_release")

cdef uint64_t VARINT_MAX = ((<uint64_t>1) << 62) - 1
cdef uint64_t UINT64_NONE = 0xFFFFFFFFFFFFFFFF
# smallest ack-eliciting 1-RTT packet sent (endpoint.MIN_RESET_TRIGGER)
cdef Py_ssize_t MIN_ELICITING_PACKET = 42
cdef int64_t PN_MAX = ((<int64_t>1) << 62) - 1
cdef uint64_t DQUIC_VERSION_1 = codec.DQUIC_VERSION_1

cdef object _PROTOCOL_VIOLATION = ErrorCode.PROTOCOL_VIOLATION
cdef object _FLOW_CONTROL_ERROR = ErrorCode.FLOW_CONTROL_ERROR
# handshake packets are not encrypted (the Noise messages they carry are): one stateless
# NullProtection serves every connection
cdef object _NULL_PROTECTION = NullProtection()

# Each frame kind (FrameKind, see the .pxd): its wire type, how many of its record's fields
# (a, b, c) follow the type as varints, and its name in qlog traces.
_FRAME_KINDS = (
    (FR_STREAM, 0x08, 3, "stream"),  # (type bits and fields: _write_stream_frames)
    (FR_CRYPTO, 0x06, 2, "crypto"),
    (FR_DATAGRAM, 0x31, 1, "datagram"),
    (FR_HANDSHAKE_DONE, 0x1E, 0, "handshake_done"),
    (FR_MAX_DATA, 0x10, 1, "max_data"),
    (FR_MAX_STREAMS, 0x12, 1, "max_streams"),
    (FR_MAX_STREAM_DATA, 0x11, 2, "max_stream_data"),
    (FR_RESET_STREAM, 0x04, 3, "reset_stream"),
    (FR_STOP_SENDING, 0x05, 2, "stop_sending"),
    (FR_NEW_CONNECTION_ID, 0x18, 3, "new_connection_id"),
    (FR_RETIRE_CONNECTION_ID, 0x19, 1, "retire_connection_id"),
    (FR_PING, 0x01, 0, "ping"),
    (FR_PATH_CHALLENGE, 0x1A, 0, "path_challenge"),
    (FR_PATH_RESPONSE, 0x1B, 0, "path_response"),
    (FR_DATA_BLOCKED, 0x14, 1, "data_blocked"),
    (FR_STREAM_DATA_BLOCKED, 0x15, 2, "stream_data_blocked"),
    (FR_STREAMS_BLOCKED, 0x16, 1, "streams_blocked"),
)
cdef uint8_t _WIRE_TYPE[FR_KINDS]
cdef uint8_t _WIRE_FIELDS[FR_KINDS]
cdef tuple _TRACE_NAMES = tuple(k[3] for k in sorted(_FRAME_KINDS))
for _k in _FRAME_KINDS:
    _WIRE_TYPE[_k[0]] = _k[1]
    _WIRE_FIELDS[_k[0]] = _k[2]
del _k


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


cdef inline bint _message_ready1(RecvStream r) noexcept:
    """``RecvStream.message_ready(1)``: a message, its end or at least one byte is readable."""
    cdef uint64_t length, avail, want
    cdef int size
    if r._reset or r._stopped:
        return False
    avail = r._contiguous_end() - r._read_offset
    if r._msg_total >= 0:
        want = r._msg_remaining
    else:
        if not r._peek_prefix(&length, &size):
            return False
        avail -= <uint64_t>size
        want = length
    if want > 1:
        want = 1
    return avail >= want


cdef inline uint64_t _held(SendStream x) noexcept:
    """Bytes a send half holds: written and not yet acknowledged as a prefix."""
    return 0 if x._reset else x._write_offset - x._base


cdef inline bint _data_complete(RecvStream r) noexcept:
    """Every byte of the peer's half and its end arrived (or it was reset)."""
    return r._reset or (r._final_size >= 0 and r._contiguous_end() >= <uint64_t>r._final_size)


class _DropPacket(Exception):
    """A frame whose stream incarnation cannot be told yet (PROTOCOL.md §16.7): the packet is
    treated as never received, so its sender sends its frames again."""


cdef inline bint _recv_closed(RecvStream r) noexcept:
    """The peer's half is over: reset, or FIN received and everything read."""
    return r._reset or (r._final_size >= 0 and r._read_offset == <uint64_t>r._final_size)


cdef inline void _cid_change(CoreConnection conn, object item):
    # the list is made on first use and dropped once emptied: most connections are idle with
    # nothing to report, and an empty list costs ~72 bytes
    if conn.cid_changes is None:
        conn.cid_changes = []
    conn.cid_changes.append(item)


cdef int _q_push(U64Queue* q, uint64_t v) except -1:
    cdef uint32_t cap
    cdef uint64_t* items
    if q.n == q.cap:
        cap = 2 * q.cap if q.cap else 4
        items = <uint64_t*>PyMem_Realloc(q.items, cap * sizeof(uint64_t))
        if items is NULL:
            raise MemoryError()
        q.items = items
        q.cap = cap
    q.items[q.n] = v
    q.n += 1
    return 0


cdef void _q_pop(U64Queue* q) noexcept:
    """Drop the oldest value (there is one); an emptied queue gives its storage back."""
    q.n -= 1
    if q.n:
        memmove(q.items, q.items + 1, q.n * sizeof(uint64_t))
    else:
        _q_clear(q)


cdef void _q_clear(U64Queue* q) noexcept:
    PyMem_Free(q.items)
    q.items = NULL
    q.n = 0
    q.cap = 0


cdef list _q_list(U64Queue* q):
    return [q.items[i] for i in range(q.n)]


cdef inline void _note_work(CoreConnection conn):
    # tell the endpoint driving this connection (if any) that it has output to build: the
    # endpoint then polls only the connections that asked, not all of them
    cdef dict work = conn._work
    if work is not None:
        work[conn] = None


cdef inline bint _peer_only(_Stream s) noexcept:
    """Everything ``s`` holds came from the peer: we never opened our sending half."""
    return not s.send_opened and not (s.owed & OWE_RESET_STREAM) and not s.send._reset


# --- scratch state shared by every connection -----------------------------------------------
# A packet is built in a send buffer from its header to its sealing within one call, and a
# sent-packet record is idle between its recycling and its reuse: neither needs to belong to a
# connection. Both are lent out under the GIL; a connection returns its send buffer at the end
# of datagrams_to_send / datagram_trains (any number of threads may be building packets at
# once: each holds its own buffer until then).
cdef list _SEND_SCRATCH = []          # idle send buffers
cdef list _FREE_SENT = []             # recycled _Sent records (at most FREE_SENT_MAX)
# STREAM frame headers are parsed with this Buffer pointed at the packet for the length of one
# C call (no Python code runs in between): one serves every connection
cdef Buffer _RECV_SCRATCH = Buffer(capacity=0)
_RECV_SCRATCH._writable = False
# The half of a stream id not in use (the peer's half of an id only we send on, and ours of an
# id only the peer sends on): one shared empty placeholder, never written to; the half's first
# use replaces it (_writable_half, _open_recv)
cdef SendStream _NO_SEND = SendStream(0, 0)
cdef RecvStream _NO_RECV = RecvStream(0, 0)


cdef Buffer _take_scratch(Py_ssize_t size):
    # every send buffer holds the largest datagram; lent out, it shows only ``size`` bytes, so
    # writing past a connection's max_datagram_size still fails as with a buffer of its own
    cdef Buffer b
    if _SEND_SCRATCH:
        b = <Buffer>_SEND_SCRATCH.pop()
    else:
        b = Buffer(capacity=SEND_SCRATCH_SIZE)
    b._size = size if size < SEND_SCRATCH_SIZE else SEND_SCRATCH_SIZE  # never past the storage
    return b


cdef inline void _give_scratch(Buffer b):
    b._size = SEND_SCRATCH_SIZE
    if len(_SEND_SCRATCH) < SEND_SCRATCH_MAX:
        _SEND_SCRATCH.append(b)


# --- a sent packet's frame records ----------------------------------------------------------
cdef inline int _add_record(_Sent rec, int kind, uint64_t a, uint64_t b, uint64_t c,
                            bint fin, uint32_t gen=0) except -1:
    cdef FrameRecord* r
    if rec.nrec < INLINE_RECORDS:
        r = &rec.recs[rec.nrec]
    else:
        r = _more_record(rec)
    r.kind = <uint8_t>kind
    r.a = a
    r.b = b
    r.c = c
    r.fin = fin
    r.gen = gen
    rec.nrec += 1
    return 0


cdef FrameRecord* _more_record(_Sent rec) except NULL:
    """Room for the record after the inline ones and those in ``rec.more``."""
    cdef int i = rec.nrec - INLINE_RECORDS, cap
    cdef FrameRecord* more
    if i >= rec.more_cap:
        cap = 2 * rec.more_cap if rec.more_cap else INLINE_RECORDS
        more = <FrameRecord*>PyMem_Realloc(rec.more, cap * sizeof(FrameRecord))
        if more is NULL:
            raise MemoryError()
        rec.more = more
        rec.more_cap = cap
    return &rec.more[i]


cdef inline FrameRecord* _record_at(_Sent pkt, int i) noexcept:
    if i < INLINE_RECORDS:
        return &pkt.recs[i]
    return &pkt.more[i - INLINE_RECORDS]


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


@cython.no_gc  # holds only leaf objects (keys, buffers): no cycle can pass through it
cdef class _Space:
    """Per packet-number-space state: receive bookkeeping for ACKs, crypto stream halves.

    Only the handshake space starts with crypto streams (the application space makes its
    receiving half if a CRYPTO frame ever arrives in it); once a space is discarded its
    bookkeeping is released (``release``)."""

    def __init__(self, Py_ssize_t max_ranges, bint crypto=True):
        self.rx = RangeSet(max_ranges=max_ranges)
        self.rx_floor = 0  # packet numbers below this are treated as duplicates
        self.largest_rx = -1
        self.largest_rx_time = 0.0
        self.ack_pending = False  # something to acknowledge
        self.unacked_eliciting = 0  # ack-eliciting packets received since our last ACK
        self.ack_deadline = -1.0
        self.next_pn = 0
        self.crypto_send = SendStream(0) if crypto else None
        self.crypto_recv = RecvStream(0, MAX_CRYPTO_BUFFER) if crypto else None
        self.discarded = False
        self.largest_acked = -1  # largest of our packet numbers the peer acknowledged

    def release(self):
        """Drop what only a live space needs (after ``discarded`` is set): its received
        packet numbers and crypto streams. Nothing reads them once the space is discarded."""
        self.rx = None
        self.crypto_send = None
        self.crypto_recv = None


@cython.no_gc  # holds only leaf objects (keys, buffers): no cycle can pass through it
cdef class _Stream:
    """Both halves of one stream id plus their flow-control state."""

    def __init__(self, uint64_t stream_id, uint64_t window_max, uint64_t window_initial,
                 uint64_t send_limit):
        self.stream_id = stream_id
        self.send = SendStream(stream_id, 0)  # unbounded here: drivers apply back-pressure
        # the receive half owns its auto-tuned flow-control window (MAX_STREAM_DATA)
        self.recv = RecvStream(stream_id, window_max, window_initial)
        self.send_limit = send_limit  # peer's MAX_STREAM_DATA for our half
        self.readable_signalled = False
        self.send_opened = False
        self.recv_opened = False
        self.owed = 0  # frames owed to the peer (OWE_RESET_STREAM, ...), with their codes:
        self.reset_code = 0
        self.stop_code = 0
        self.blocked_reported = -1
        self.queued = False
        self.closed_counted = False
        self.counted = False  # our half consumed one of the peer's MAX_STREAMS credits
        self.pinned = False
        self.credit_wait = False
        self.send_gen = 0
        self.send_next = None
        self.send_min_pn = 0
        self.recv_gen = 0
        self.recv_done = False
        self.recv_w = -1
        self.recv_c = -1
        self.recv_lo = 0
        self.recv_next_lo = 0
        self.idle_since = -1.0
        self.recv_min_pn = 0
        self.recv_next = None


cdef class _Sent(SentPacket):
    """A ``SentPacket`` carrying the record of its frames (see the .pxd)."""

    def __dealloc__(self):
        PyMem_Free(self.more)

    def __repr__(self):
        return (f"_Sent(pn={self.packet_number}, space={self.space}, bytes={self.sent_bytes}, "
                f"ack={self.ack_space >= 0}, frames={self.frames_for_trace()!r})")

    def frames_for_trace(self):
        """What the packet carried, in packet order (its ACK first), as qlog frames: the one
        place where records are read for a trace (see _trace_frame)."""
        cdef int i
        out = []
        if self.ack_space >= 0:
            # its ranges are known while the packet is being traced (CoreConnection._write_ack)
            out.append(self.frames if type(self.frames) is dict else {"frame_type": "ack"})
        for i in range(self.nrec):
            out.append(_trace_frame(_record_at(self, i)))
        return out


cdef dict _trace_frame(FrameRecord* r):
    """A frame record as a qlog frame (draft-ietf-quic-qlog-quic-events-04). What a record does
    not keep is left out where the draft allows; a NEW_CONNECTION_ID, whose
    connection ID and token are not kept, is an "unknown" frame naming its wire type."""
    cdef int kind = r.kind
    name = _TRACE_NAMES[kind]
    if kind == FR_STREAM:
        d = {"frame_type": name, "stream_id": r.a, "offset": r.b, "length": r.c}
        if r.fin:
            d["fin"] = True  # written only when true
        return d
    if kind == FR_CRYPTO:
        return {"frame_type": name, "offset": r.a, "length": r.b}
    if kind == FR_DATAGRAM:
        return {"frame_type": name, "length": r.a}
    if kind == FR_MAX_DATA:
        return {"frame_type": name, "maximum": r.a}
    if kind == FR_MAX_STREAMS:
        return {"frame_type": name, "maximum": r.a, "stream_type": "bidirectional"}
    if kind == FR_MAX_STREAM_DATA:
        return {"frame_type": name, "stream_id": r.a, "maximum": r.b}
    if kind == FR_RESET_STREAM:
        return {"frame_type": name, "stream_id": r.a, "error_code": min(r.b, 0xFFFFFFFF),
                "final_size": r.c}
    if kind == FR_STOP_SENDING:
        return {"frame_type": name, "stream_id": r.a, "error_code": min(r.b, 0xFFFFFFFF)}
    if kind == FR_RETIRE_CONNECTION_ID:
        return {"frame_type": name, "sequence_number": r.a}
    if kind == FR_NEW_CONNECTION_ID:
        return {"frame_type": "unknown", "frame_type_value": _WIRE_TYPE[kind]}
    return {"frame_type": name}


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
        self.peer_addr = peer_addr
        self._state = _HANDSHAKING
        self._events = []

        # configuration read on the per-packet paths
        self._cid_len = config.connection_id_length
        self._mds = config.max_datagram_size
        self._max_ack_ranges = config.max_ack_ranges
        self._ack_ranges_per_frame = config.ack_ranges_per_frame
        self._ack_eliciting_threshold = config.ack_eliciting_threshold
        self._ack_delay_exponent = config.ack_delay_exponent
        self._max_ack_delay = config.max_ack_delay
        self._stream_window_max = config.max_stream_data_window
        self._stream_window_initial = config.initial_max_stream_data

        # connection IDs (RFC 9000 §5.1): ours (peer puts them in DCID) and the peer's
        cid_len = config.connection_id_length
        # connection IDs we issue come from the configuration (random, or QUIC-LB: quic_lb.py)
        self.host_cid = host_cid if host_cid is not None else config.new_connection_id(random_bytes)
        self._host_cids = {0: self.host_cid}  # sequence -> cid
        self._host_cid_seq = 0
        self.cid_changes = [("add", self.host_cid)]
        self._retry_scid = retry_source_cid  # server: the Retry we sent; client: the one we got
        self._retry_token = b""
        if self.is_client:
            self.original_dcid = original_dcid or random_bytes(max(8, cid_len))
            self.peer_cid = self.original_dcid
        else:
            self.original_dcid = original_dcid
            self.peer_cid = peer_cid or b""
        self._peer_cids = {0: (self.peer_cid, None)}
        self._peer_cid_seq = 0
        self._retired_below = 0  # peer CIDs with lower sequence numbers are retired
        self._retiring = None  # a set once the first peer ID is retired
        self._lost_streams = None  # made on the first lost 1-RTT packet with stream data
        self._lost_streams_pns = None
        self._peer_cid_set_by_server = not self.is_client

        # packet-number spaces, loss recovery, congestion control
        self._hs = _Space(config.max_ack_ranges)
        self._app = _Space(config.max_ack_ranges, False)
        self._spaces = [self._hs, self._app]
        self._cc = _make_controller(config)
        self._recovery = Recovery(self._cc, max_ack_delay=0.0, initial_rtt=config.initial_rtt)
        self._pacer = Pacer(config.max_datagram_size) if config.pacing else None
        self._pacing_deadline = -1.0
        self._probes[0] = 0
        self._probes[1] = 0

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
        self._app_tag = 0
        self._handshake_confirmed = False
        self.peer_key = None

        # streams and flow control
        self._streams = {}
        self._last_stream = None
        # streams with something to send, round robin (a deque; None while empty)
        self._send_queue = None
        self._peer_max_data = 0
        self._peer_stream_limit = 0  # initial MAX_STREAM_DATA for our halves
        self._data_sent = 0  # sum of highest offsets sent, all streams (connection credit used)
        self._data_blocked_reported = -1
        self._recv_window = FlowWindow(config.initial_max_data, config.max_data_window)
        self._data_received = 0  # sum of highest offsets received
        self._peer_stream_credit = 0  # MAX_STREAMS from the peer
        self._peer_opened = 0  # stream ids the peer started sending on
        self._max_streams_local = config.max_streams  # what we allow the peer (cumulative)
        self._streams_blocked_reported = -1
        self._streams_counted = 0
        self._streams_waiting = 0
        self._credit_waiters = None
        self._idle_halves = None
        self._idle_times = None
        self._send_buffered = 0
        # the peer's halves read to their end, oldest first: the newest max_streams stay known,
        # older resolved ones are forgotten (PROTOCOL.md §16.7; a deque, None while empty)
        self._finished = None
        self._finished_max = config.max_streams
        self._credit_owed = 0
        self._unresolved = 0
        self._tomb_new = None
        self._tomb_wait = None
        self._tomb_lo = 0
        self._stale_below = 0
        self._rx_pn = 0
        self._gen_seq = 0

        # unreliable datagrams (RFC 9221)
        self._datagrams = None  # (id, data) waiting to be sent (a deque; None while empty)
        self._datagram_seq = 0

        # paths (RFC 9000 §8.2, §9)
        self._bytes_received_on_path = 0
        self._bytes_sent_on_path = 0
        # a server that sent a Retry has validated the address through the token
        self._address_validated = self.is_client or retry_source_cid is not None
        self._path_challenge = None  # (data, addr, deadline); OWE_PATH_CHALLENGE until sent
        self._previous_addr = None
        self._old_keys_deadline = None  # when to drop pre-key-update keys

        # timers (absolute virtual times)
        self._started = False
        self._created = 0.0
        self._last_activity = 0.0
        self._last_eliciting_sent = 0.0
        self._eliciting_since_receive = False
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
        self.stream_bytes_received = 0

        # packet scratch buffers and recycled sent-packet records, shared by all connections
        # (see _take_scratch): the send buffer is borrowed while packets are being built
        self._sbuf = None
        self._rbuf = _RECV_SCRATCH
        self._free_sent = _FREE_SENT
        # (self._pending, the control frames owed to the peer, starts zeroed: nothing owed)

    def __dealloc__(self):
        _q_clear(&self._pending.new_cids)
        _q_clear(&self._pending.retire_cids)
        _q_clear(&self._pending.path_responses)

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
            initial_source_connection_id=self.host_cid,
            max_datagram_frame_size=c.max_datagram_frame_size,
        )
        if not self.is_client:
            p.original_destination_connection_id = self.original_dcid
            p.retry_source_connection_id = self._retry_scid
            p.stateless_reset_token = self._reset_token(self.host_cid)
        return p

    def _prologue(self):
        odcid = self.original_dcid or b""
        client_cid = self.host_cid if self.is_client else self.peer_cid
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
        self._app_seal_null = isinstance(seal, NullProtection)
        self._app_open_null = isinstance(open_, NullProtection)
        self._app_tag = seal.tag_size
        return 0

    # ----------------------------------------------------------------------------------------
    # public state
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
        """True once the connection owes its peer nothing more: the peer closed first
        (draining), it terminated, or our CONNECTION_CLOSE went out and, after a graceful
        ``close()`` of an established connection, the peer's CONNECTION_CLOSE answered it (or
        the closing period ended without one; PROTOCOL.md §11). Until then a lost
        CONNECTION_CLOSE, and the acknowledgement it carries, can still be sent again; after
        it the closing or draining period only answers stray packets and an application
        need not wait for it."""
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
        for s in self._streams.values():
            retx += s.send._bytes_retransmitted
        return ConnectionStats(
            smoothed_rtt=rtt.smoothed_rtt, min_rtt=rtt.min_rtt, latest_rtt=rtt.latest_rtt,
            rttvar=rtt.rttvar, cwnd=self._cc.congestion_window,
            bytes_in_flight=self._cc.bytes_in_flight, packets_sent=r.packets_sent,
            packets_received=self.packets_received, packets_lost=r.packets_lost,
            spurious_losses=r.spurious_losses, bytes_sent=self.bytes_sent,
            bytes_received=self.bytes_received, stream_bytes_sent=self._data_sent,
            stream_bytes_received=self.stream_bytes_received,
            bytes_retransmitted=retx,
            bytes_lost=r.bytes_lost, packets_dropped=self.packets_dropped,
            duplicate_packets=self.duplicate_packets,
            send_window_used=(self._data_sent / self._peer_max_data) if self._peer_max_data else 0.0,
            recv_window_used=(self._data_received / self._recv_window._limit)
            if self._recv_window._limit else 0.0,
            recv_window=self._recv_window._limit, pto_count=r.pto_count,
        )

    @property
    def _owed(self):
        """The control frames this connection owes its peer (not those of its streams), by
        qlog name: True for a frame owed once, the values queued for the others (connection
        ID sequence numbers, PATH_CHALLENGE data to echo). For tests and tools."""
        cdef int kind
        out = {}
        for kind in (FR_HANDSHAKE_DONE, FR_MAX_DATA, FR_MAX_STREAMS, FR_PING, FR_PATH_CHALLENGE):
            if self._pending.once & ((<uint32_t>1) << kind):
                out[_TRACE_NAMES[kind]] = True
        if self._pending.new_cids.n:
            out["new_connection_id"] = _q_list(&self._pending.new_cids)
        if self._pending.retire_cids.n:
            out["retire_connection_id"] = _q_list(&self._pending.retire_cids)
        if self._pending.path_responses.n:
            out["path_response"] = [v.to_bytes(8, "big")
                                    for v in _q_list(&self._pending.path_responses)]
        return out

    def streams(self):
        """Ids of the streams this connection has state for."""
        return list(self._streams)

    def stream_bytes(self, stream_id):
        """``(bytes_sent, bytes_acked)`` of our half of a stream (message prefixes included)."""
        s = self._streams.get(stream_id)
        if s is None:
            return (0, 0)
        return ((<_Stream>s).send._offset_sent, (<_Stream>s).send._base)

    @property
    def send_buffered(self):
        """Bytes of stream data written but not yet acknowledged (for back-pressure)."""
        return self._send_buffered

    def stream_open_blocked(self, stream_id):
        """True when a message on ``stream_id`` written now would wait for stream credit: no
        half of ours on that id takes messages (none is live, or the live one is ending and no
        next one waits yet) and the peer's MAX_STREAMS is used up by halves open or waiting.
        Drivers block (back-pressure) while this holds (PROTOCOL.md §16.7); asking ends our
        halves that only wait for more messages, so that their credit comes back."""
        cdef _Stream s
        obj = self._streams.get(stream_id)
        if obj is not None:
            s = <_Stream>obj
            if s.send_next is not None or (s.send_opened and not (s.send._finished or s.send._reset)):
                return False
        if self._pressure():
            # credit is wanted: halves that only wait for more messages end now
            self._end_idle_halves()
            return True
        return False

    @property
    def peer_allows_no_streams(self):
        """True once the handshake is done and the peer allows no stream half at all
        (initial_max_streams 0 and no MAX_STREAMS since): no message can ever be sent."""
        return self._state == _ESTABLISHED and self._peer_stream_credit == 0

    def pin_stream(self, stream_id):
        """Keep ``stream_id`` as one byte stream: our half ends only with ``end_stream`` (no
        automatic end once its messages are acknowledged) and its state stays until the
        connection ends. For byte-stream use (asyncio ``open_stream``), where the end of the
        peer's half is the end of the data."""
        cdef _Stream s = self._get_stream(stream_id, True)
        s.pinned = True

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
        cdef _Stream stream = self._local_stream(stream_id)
        cdef SendStream half = self._writable_half(stream)
        cdef uint64_t h0 = _held(half)
        n = half.write_message(data)
        self._send_buffered += _held(half) - h0
        stream.idle_since = -1.0  # its entry in _idle_halves, if any, no longer applies
        if half is stream.send:
            self._schedule(stream)
        return _payload_len(n)

    def send_stream_data(self, stream_id, data, end_stream=False):
        """Queue ``data`` as one message; with ``end_stream`` also finish our half of the stream."""
        n = self.send_message(stream_id, data)
        if end_stream:
            self.end_stream(stream_id)
        return n

    def end_stream(self, stream_id):
        """Finish our half of a stream (FIN after the queued messages)."""
        cdef _Stream stream = self._send_stream(stream_id)
        cdef SendStream half = self._writable_half(stream)
        half.finish()
        if half is stream.send:
            self._schedule(stream)

    def reset_stream(self, stream_id, error_code=0):
        """Abandon our half of a stream: queued data is dropped, the peer gets RESET_STREAM.

        A half the peer never saw (nothing of it was sent yet) is dropped without a frame: a
        RESET_STREAM would open it at the peer and take a stream credit (PROTOCOL.md §16.7)."""
        if self._state >= _CLOSING:
            raise RuntimeError("connection is closing")
        cdef _Stream stream = self._get_stream(stream_id, True)
        cdef SendStream send = stream.send
        if stream.send_next is not None:
            # messages queued behind an ending incarnation: that one never opened
            self._send_buffered -= _held(stream.send_next)
            stream.send_next = None
            self._streams_waiting -= 1
        elif stream.send_opened and not send._reset and not send.is_finished:
            self._send_buffered -= _held(send)
            send.reset(error_code)
            if stream.counted:
                stream.owed |= OWE_RESET_STREAM
                stream.reset_code = error_code
                self._schedule(stream)
            else:
                self._streams_waiting -= 1
                self._send_complete(stream)
        self._maybe_release(stream)

    def stop_sending(self, stream_id, error_code=0):
        """Ask the peer to stop sending on a stream (STOP_SENDING); data still arriving is dropped."""
        cdef _Stream stream = self._get_stream(stream_id, True)
        cdef RecvStream r = stream.recv
        if stream.recv_opened and not stream.closed_counted and not r._reset:
            r.stop()
            if _data_complete(r):
                # every byte arrived: the peer's half may be complete on its side (then it
                # sends no RESET_STREAM); what is unread is dropped here, no frame is needed
                self._drop_unread(stream, error_code)
                return
        stream.stop_code = error_code
        stream.owed |= OWE_STOP_SENDING
        self._schedule(stream)

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
        self._datagram_seq += 1
        if self._datagrams is None:
            self._datagrams = deque()
        self._datagrams.append((self._datagram_seq, data))
        _note_work(self)
        while len(self._datagrams) > self.config.max_datagram_queue:
            dropped, _ = self._datagrams.popleft()
            self._events.append(DatagramLost(dropped))
        return self._datagram_seq

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
        # a graceful close of an established connection waits for the peer's answer (close_sent)
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
        if self._state != _ESTABLISHED or self._app_seal is None or not self._send_buffered:
            return
        self._pending.once |= OWE_PING
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
        self._events = []
        return out

    def readable_streams(self):
        """Streams whose next message (or a piece of it) can be read now."""
        cdef _Stream s
        out = []
        for sid, s in self._streams.items():
            if _message_ready1(s.recv):
                out.append(sid)
        return out

    def stream_finished(self, stream_id):
        """True once the peer's half of ``stream_id`` ended: its FIN arrived and every message
        was read, or the peer reset it."""
        s = self._streams.get(stream_id)
        return s is not None and ((<_Stream>s).recv.is_finished or (<_Stream>s).recv._reset)

    def stream_send_complete(self, stream_id):
        """True once our half of ``stream_id`` needs nothing more: everything we sent, its FIN
        included, was acknowledged, or we reset it (or we never sent on it)."""
        s = self._streams.get(stream_id)
        return s is None or (<_Stream>s).send.is_finished or (<_Stream>s).send._reset

    def message_ready(self, stream_id, Py_ssize_t max_bytes):
        """True if ``read_message(stream_id, max_bytes)`` would return a whole message, the end of
        one, or exactly ``max_bytes`` of one."""
        s = self._streams.get(stream_id)
        return s is not None and (<_Stream>s).recv.message_ready(max_bytes)

    def read_message(self, stream_id, Py_ssize_t max_bytes):
        """Read up to ``max_bytes`` of the next message on a stream: ``(data, end_of_message)``,
        or None if nothing is readable. Reading opens flow-control window for the peer."""
        cdef _Stream s
        cdef uint64_t before
        obj = self._streams.get(stream_id)
        if obj is None:
            return None
        s = <_Stream>obj
        before = s.recv._read_offset
        result = s.recv.read_message(max_bytes)
        if s.recv._read_offset != before:
            self._on_consumed(s, s.recv._read_offset - before)
        if result is not None and not _message_ready1(s.recv):
            s.readable_signalled = False
        return result

    def read_messages(self, list order, Py_ssize_t budget, dict out):
        """Take, stream by stream in ``order``, the next message of each into ``out`` (stream id
        -> bytes) while it is complete within what is left of ``budget`` (or is exactly that
        long): ``read_message`` for each without a Python call per stream. Stops at the first
        stream whose next message does not qualify (the caller handles it and the rest) or
        when the budget is spent. Returns ``(index in order where it stopped, budget left,
        last stream id read or -1)``."""
        cdef Py_ssize_t i, n = len(order)
        cdef _Stream s
        cdef uint64_t before
        cdef object last = -1
        for i in range(n):
            if budget <= 0:
                return i, budget, last
            sid = order[i]
            obj = self._streams.get(sid)
            if obj is None:
                return i, budget, last
            s = <_Stream>obj
            if not s.recv.message_ready(budget):
                return i, budget, last
            before = s.recv._read_offset
            result = s.recv.read_message(budget)
            if s.recv._read_offset != before:
                self._on_consumed(s, s.recv._read_offset - before)
            if result is None:
                return i, budget, last
            if not _message_ready1(s.recv):
                s.readable_signalled = False
            data = (<tuple>result)[0]
            out[sid] = data
            budget -= len(data)
            last = sid
        return n, budget, last

    cdef int _on_consumed(self, _Stream s, uint64_t consumed) except -1:
        cdef double rtt = self._recovery.rtt.smoothed_rtt
        cdef RecvStream r = s.recv
        # RecvStream.should_update_window(): no credit once the final size is known
        if not (r._reset or r._stopped or r._final_size >= 0) and r._fw.should_update_c():
            r._fw.update_c(self._now_hint, rtt)
            s.owed |= OWE_MAX_STREAM_DATA
            self._schedule(s)
        self._recv_window.consumed_c(consumed)
        if self._recv_window.should_update_c():
            self._recv_window.update_c(self._now_hint, rtt)
            self._pending.once |= OWE_MAX_DATA
            _note_work(self)
        self._check_recv_closed(s)
        return 0

    # ----------------------------------------------------------------------------------------
    # streams
    cdef _Stream _lookup(self, uint64_t stream_id):
        cdef _Stream s = self._last_stream
        if s is not None and s.stream_id == stream_id:
            return s
        obj = self._streams.get(stream_id)
        if obj is None:
            return None
        s = <_Stream>obj
        self._last_stream = s
        return s

    cdef _Stream _new_stream(self, uint64_t stream_id, bint local=True):
        """State for a new id: made by us (``local``: our half is the one about to be used)
        or by a peer frame (its half). The other half is a shared empty placeholder until used."""
        cdef _Stream s = _Stream.__new__(_Stream)
        s.stream_id = stream_id
        if local:
            s.send = SendStream(stream_id, 0)  # unbounded here: drivers apply back-pressure
            s.recv = _NO_RECV
        else:
            s.send = _NO_SEND
            s.recv = RecvStream(stream_id, self._stream_window_max, self._stream_window_initial)
        s.send_limit = self._peer_stream_limit
        s.blocked_reported = -1
        s.recv_w = -1
        s.recv_c = -1
        s.idle_since = -1.0
        self._streams[stream_id] = s
        self._last_stream = s
        return s

    cdef _Stream _local_stream(self, object stream_id):
        obj = self._streams.get(stream_id)
        if obj is not None:
            return <_Stream>obj
        if not isinstance(stream_id, int) or isinstance(stream_id, bool):
            raise TypeError("stream id must be an int")
        if not 0 <= stream_id <= MAX_STREAM_ID:
            raise ValueError("stream id must be 0 <= id < 2**62")
        return self._new_stream(stream_id)

    def _get_stream(self, stream_id, local):
        return self._local_stream(stream_id)

    def _send_stream(self, stream_id):
        if self._state >= _CLOSING:
            raise RuntimeError("connection is closing")
        return self._local_stream(stream_id)

    cdef SendStream _writable_half(self, _Stream s):
        """The send half a new message of ``s`` goes to: the live incarnation, a new one if
        none is live, or the next one while the live one is ending (PROTOCOL.md §16.7)."""
        cdef SendStream x = s.send
        if not s.send_opened:
            if x is _NO_SEND or x._write_offset or x._finished or x._reset:
                x = SendStream(s.stream_id, 0)
                s.send = x
                s.blocked_reported = -1
                s.send_limit = self._peer_stream_limit
            # incarnations are numbered across the connection: records of one whose stream
            # object was released never match a later one
            self._gen_seq += 1
            s.send_gen = self._gen_seq
            s.send_opened = True
            s.counted = False
            self._streams_waiting += 1
            if self._idle_halves and self._pressure():
                self._end_idle_halves()
            return x
        if x._finished or x._reset:
            if s.send_next is None:
                s.send_next = SendStream(s.stream_id, 0)
                self._streams_waiting += 1
            return s.send_next
        return x

    cdef int _send_complete(self, _Stream s) except -1:
        """Our live half needs nothing more (its bytes and FIN, or its RESET_STREAM, were
        acknowledged; or it ended before the peer saw it): the next incarnation goes live, or
        the half goes idle. Control frames of the peer in packets numbered below
        ``send_min_pn`` concern an earlier incarnation."""
        cdef SendStream nxt = s.send_next
        cdef int64_t floor = self._app.largest_rx
        if self._rx_pn > floor:
            floor = self._rx_pn
        s.send_min_pn = floor + 1
        s.owed &= ~OWE_RESET_STREAM
        if nxt is not None:
            s.send_next = None
            s.send = nxt
            self._gen_seq += 1
            s.send_gen = self._gen_seq
            s.counted = False  # already among the waiting halves since send_next was made
            s.blocked_reported = -1
            s.send_limit = self._peer_stream_limit
            self._schedule(s)
        else:
            s.send_opened = False
            self._maybe_release(s)
        return 0

    cdef int _after_ack(self, _Stream s) except -1:
        """After an acknowledgement for our live half: a message half with every byte
        acknowledged and nothing queued ends (FIN); a half whose FIN and bytes are all
        acknowledged is complete."""
        cdef SendStream x = s.send
        if x._reset or not s.send_opened:
            return 0
        if x._finished:
            if x._fin_acked and x._base == x._write_offset:
                self._send_complete(s)
        elif (x._base == x._write_offset and x._write_offset != 0 and x._msg_remaining == 0
                and not s.pinned):
            # every message acknowledged: the half may end. It does at once if its credit is
            # wanted, else when it is (_end_idle_halves) or after a quiet period; until then a
            # new message continues it without a round trip
            if self._pressure():
                x.finish()
                self._schedule(s)
            elif s.idle_since < 0.0:
                s.idle_since = self._now_hint
                s.idle_gen = s.send_gen
                if self._idle_halves is None:
                    self._idle_halves = deque()
                    self._idle_times = deque()
                self._idle_halves.append(s)
                self._idle_times.append(self._now_hint)
        return 0

    cdef bint _pressure(self):
        """Every stream credit the peer gave is taken by our halves, open or waiting."""
        return (<int64_t>self._streams_counted + self._streams_waiting
                >= <int64_t>self._peer_stream_credit)

    cdef int _drop_stale_idle(self) except -1:
        """Forget the oldest listings of halves that took messages since (a half in use is
        listed again each time its messages are all acknowledged): the idle timer then waits
        for a half really idle, not for a stale listing."""
        cdef _Stream s
        q = self._idle_halves
        times = self._idle_times
        while q:
            s = <_Stream>q[0]
            if s.idle_since == <double>times[0]:
                return 0
            q.popleft()
            times.popleft()
        self._idle_halves = self._idle_times = None
        return 0

    cdef int _end_idle_halves(self, double now=-1.0) except -1:
        """End (FIN) our halves whose messages were all acknowledged (all of them, or with
        ``now`` those idle for 3 PTO: the deadline of TIMER_STREAM_IDLE) and that took nothing
        since: their credit comes back once the
        peer has the FIN. Ending them only after 3 PTO of quiet (or at once when their credit
        is wanted) lets a stream used back and forth keep one incarnation."""
        cdef _Stream s
        cdef SendStream x
        cdef double span = 3 * self._pto()
        cdef double since
        q = self._idle_halves
        times = self._idle_times
        while q:
            since = times[0]
            if now >= 0.0 and since + span > now:
                return 0
            s = q.popleft()
            times.popleft()
            x = s.send
            if s.idle_since != since:
                continue  # it took messages since (and may be listed again, later)
            s.idle_since = -1.0
            if (s.send_gen == s.idle_gen and s.send_opened and not x._finished and not x._reset
                    and x._base == x._write_offset and x._msg_remaining == 0):
                x.finish()
                self._schedule(s)
        # an empty deque costs more than the connection's streams
        self._idle_halves = self._idle_times = None
        return 0

    cdef int _maybe_release(self, _Stream s) except -1:
        """Drop the state of a stream both of whose halves are idle."""
        if (not s.send_opened and s.send_next is None and not s.recv_opened and not s.owed
                and not s.queued and not s.pinned and not s.credit_wait
                and self._streams.get(s.stream_id) is s):
            del self._streams[s.stream_id]
            if self._last_stream is s:
                self._last_stream = None
        return 0

    cdef void _schedule(self, _Stream s):
        if not s.queued:
            s.queued = True
            if self._send_queue is None:
                self._send_queue = deque()
            self._send_queue.append(s)
        _note_work(self)

    cdef int _check_recv_closed(self, _Stream s) except -1:
        """Once the peer's half of ``s`` was read to its end (or reset): its credit goes back
        and the next incarnation, if one arrived meanwhile, takes its place; else the half is
        remembered among the newest ``max_streams`` finished ones (PROTOCOL.md §16.7). The
        credit of a half finished while more than ``max_streams`` finished halves are still
        unresolved is held back until one resolves: what a peer opens and finishes costs
        bounded memory even if it never acknowledges anything."""
        cdef int64_t w
        if not s.recv_opened or s.closed_counted or not _recv_closed(s.recv):
            return 0
        s.closed_counted = True
        if s.recv_next is not None:
            # the next incarnation opened (and was counted) once this one was resolved
            w = s.recv_w
            s.recv = s.recv_next
            s.recv_next = None
            self._gen_seq += 1
            s.recv_gen = self._gen_seq
            s.recv_done = False
            s.recv_w = -1
            s.recv_min_pn = w
            s.recv_lo = s.recv_next_lo
            s.closed_counted = False
            s.readable_signalled = False
            self._give_credit(1)
            if _data_complete(s.recv):
                self._recv_complete(s)
            if _message_ready1(s.recv):
                s.readable_signalled = True
                self._events.append(MessageReceived(s.stream_id))
            return self._check_recv_closed(s)
        if self._finished is None:
            self._finished = deque()
        self._finished.append((s, s.recv_gen))
        if s.recv_w < 0:
            self._unresolved += 1
            if self._unresolved > self._finished_max:
                self._credit_owed += 1
            else:
                self._give_credit(1)
        else:
            self._give_credit(1)
        self._trim_finished()
        return 0

    cdef int _give_credit(self, uint64_t n) except -1:
        self._max_streams_local += n
        self._pending.once |= OWE_MAX_STREAMS
        _note_work(self)
        return 0

    cdef int _drop_unread(self, _Stream s, uint64_t code) except -1:
        """The application stopped reading a half whose bytes all arrived: it ends here as if
        reset; its unread bytes count as consumed for connection flow control."""
        cdef RecvStream r = s.recv
        cdef uint64_t unread = <uint64_t>r._final_size - r._read_offset
        r.reset(code, r._final_size)
        s.owed &= ~OWE_STOP_SENDING
        if unread:
            self._recv_window.consumed_c(unread)
            if self._recv_window.should_update_c():
                self._recv_window.update_c(self._now_hint, self._recovery.rtt.smoothed_rtt)
                self._pending.once |= OWE_MAX_DATA
                _note_work(self)
        if not s.recv_done:
            self._recv_complete(s)
        self._check_recv_closed(s)
        return 0

    cdef int _trim_finished(self) except -1:
        """Forget the oldest finished peer halves beyond the newest ``max_streams``, as far as
        they are resolved (an unresolved one stops the walk: its credit may be held back)."""
        cdef _Stream s
        while self._finished is not None and len(self._finished) > self._finished_max:
            s, gen = self._finished[0]
            if (s.recv_gen == gen and s.recv_opened and s.closed_counted
                    and self._streams.get(s.stream_id) is s):
                if s.recv_w < 0:
                    break
                self._finished.popleft()
                if not s.pinned:
                    self._forget_recv(s)
            else:
                self._finished.popleft()  # reopened or released since
        if self._finished is not None and not self._finished:
            self._finished = None
        return 0

    cdef int _forget_recv(self, _Stream s) except -1:
        """Drop a finished and resolved peer half. Frames for an id without a live half in
        packets numbered below ``_stale_below`` may be late ones of a forgotten incarnation."""
        if s.recv_w > self._stale_below:
            self._stale_below = s.recv_w
        s.recv_opened = False
        s.closed_counted = False
        s.recv_done = False
        s.recv_w = -1
        s.readable_signalled = False
        s.recv = _NO_RECV  # the next incarnation gets a new one
        self._maybe_release(s)
        return 0

    cdef int _recv_complete(self, _Stream s) except -1:
        """Every byte of the peer's half and its end arrived: from now on a frame for this id
        is a late copy or the next incarnation's, told apart once the half is resolved (the
        peer acknowledged a packet of ours whose ACK frame covered all we received)."""
        s.recv_done = True
        s.recv_c = self._app.largest_rx if self._app.largest_rx > self._rx_pn else self._rx_pn
        if self._tomb_new is None:
            self._tomb_new = []
            self._tomb_lo = s.recv_lo
        elif s.recv_lo < self._tomb_lo:
            self._tomb_lo = s.recv_lo
        self._tomb_new.append((s, s.recv_gen))
        return 0

    cdef int _resolve(self, uint64_t acked_pn, uint64_t ack_lo) except -1:
        """The peer acknowledged our packet ``acked_pn``, whose ACK frame listed every packet
        we had received from ``ack_lo`` up: halves complete before it was sent, all of whose
        frames came in packets from ``ack_lo`` up, are resolved. Every frame of
        theirs the peer sent was in a packet numbered below the one being processed (it had
        all of them acknowledged before it sent this one); frames in this packet and later
        ones belong to a new incarnation (PROTOCOL.md §16.7)."""
        cdef _Stream s
        cdef int64_t w = self._rx_pn
        while (self._tomb_wait and self._tomb_wait[0][0] <= acked_pn
                and self._tomb_wait[0][1] >= ack_lo):
            _, _, batch = self._tomb_wait.popleft()
            for s, gen in batch:
                if (s.recv_gen != gen or not s.recv_done or s.recv_w >= 0
                        or self._streams.get(s.stream_id) is not s):
                    continue
                s.recv_w = w
                if s.closed_counted:
                    self._unresolved -= 1
                    if self._credit_owed > 0:
                        self._credit_owed -= 1
                        self._give_credit(1)
        if not self._tomb_wait:
            self._tomb_wait = None
        self._trim_finished()
        return 0

    cdef int _open_recv(self, _Stream s, int64_t min_pn) except -1:
        """A new incarnation of the peer's half of ``s`` (counts against our MAX_STREAMS)."""
        if self._peer_opened >= self._max_streams_local:
            raise ProtocolError(f"stream {s.stream_id} exceeds the stream limit",
                                ErrorCode.STREAM_LIMIT_ERROR)
        self._peer_opened += 1
        if s.recv_gen != 0 or s.recv is _NO_RECV:
            s.recv = RecvStream(s.stream_id, self._stream_window_max, self._stream_window_initial)
        self._gen_seq += 1
        s.recv_gen = self._gen_seq
        s.recv_opened = True
        s.recv_done = False
        s.recv_w = -1
        s.closed_counted = False
        s.readable_signalled = False
        s.recv_min_pn = min_pn
        s.recv_lo = self._rx_pn
        return 0

    cdef _Stream _route(self, uint64_t stream_id, uint64_t end, bint* nxt):
        """The stream whose receive half a peer STREAM or RESET_STREAM frame (in the 1-RTT
        packet ``_rx_pn``, reaching offset ``end``) belongs to, opening a half if it starts one;
        ``nxt[0]`` is set when the frame is for the incarnation after the one still being read.
        Raises _DropPacket when the frame may be a late copy of an earlier incarnation; None
        when it must be one: it would start a new incarnation beyond the stream credit a new
        half has (PROTOCOL.md §16.7)."""
        cdef _Stream s = self._lookup(stream_id)
        cdef int64_t pn = self._rx_pn
        cdef int64_t w
        nxt[0] = False
        if s is None or not s.recv_opened:
            if pn < self._stale_below:
                raise _DropPacket()
            if end > self._stream_window_initial and self._stale_below > 0:
                return None
            if s is None:
                s = self._new_stream(stream_id, False)
            self._open_recv(s, self._stale_below)
            return s
        if not s.recv_done:
            if pn < s.recv_min_pn:
                raise _DropPacket()
            if pn < s.recv_lo:
                s.recv_lo = pn
            return s
        if pn <= s.recv_c:
            # the peer reopens an id only once we acknowledged the complete half, in a
            # packet numbered above every one we had then: this frame is of this incarnation
            return s
        w = s.recv_w
        if w < 0 or pn < w:
            raise _DropPacket()
        # the next incarnation
        if end > self._stream_window_initial:
            return None
        if s.closed_counted:
            # the finished one is only remembered: the new one replaces it
            self._open_recv(s, w)
            return s
        if s.recv_next is None:
            if self._peer_opened >= self._max_streams_local:
                raise ProtocolError(f"stream {stream_id} exceeds the stream limit",
                                    ErrorCode.STREAM_LIMIT_ERROR)
            self._peer_opened += 1
            s.recv_next = RecvStream(stream_id, self._stream_window_max, self._stream_window_initial)
            s.recv_next_lo = pn
        elif _data_complete(s.recv_next):
            raise _DropPacket()  # a third incarnation waits until the second one is read
        elif pn < s.recv_next_lo:
            s.recv_next_lo = pn
        nxt[0] = True
        return s

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
        if self._pacing_deadline >= 0.0:
            t[TIMER_PACING] = self._pacing_deadline
        if self._started:
            if self._handshake_pending():
                t[TIMER_HANDSHAKE] = self._created + self.config.handshake_timeout
            idle = self._effective_idle_timeout()
            if idle:
                t[TIMER_IDLE] = self._last_activity + idle
            ka = self.config.keep_alive
            if ka and self._state == _ESTABLISHED:
                t[TIMER_KEEP_ALIVE] = self._last_eliciting_sent + ka
        if self._path_challenge is not None:
            t[TIMER_PATH_VALIDATION] = self._path_challenge[2]
        if self._old_keys_deadline is not None:
            t[TIMER_OLD_KEYS] = self._old_keys_deadline
        if self._idle_halves:
            self._drop_stale_idle()
            if self._idle_halves:
                t[TIMER_STREAM_IDLE] = self._idle_times[0] + 3 * self._pto()
        if self._idle_release_pending():
            t[TIMER_IDLE_RELEASE] = self._idle_release_time()
        return 0

    def get_timer(self):
        """The absolute time at which ``handle_timer`` must be called, or None."""
        cdef double t[TIMER_KINDS]
        cdef double best = -1.0
        cdef int i
        self._fill_timers(t)
        for i in range(TIMER_KINDS):
            if t[i] >= 0.0 and (best < 0.0 or t[i] < best):
                best = t[i]
        return best if best >= 0.0 else None

    @property
    def timers(self):
        """The armed timers by kind: ``{name: deadline}`` (for diagnostics and traces)."""
        cdef double t[TIMER_KINDS]
        cdef int i
        self._fill_timers(t)
        return {TIMER_NAMES[i]: t[i] for i in range(TIMER_KINDS) if t[i] >= 0.0}

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
        if self._idle_halves:
            self._end_idle_halves()
        for s in self._streams.values():
            s.send.release_idle_c()
            s.recv.release_idle_c()
        if self._app.rx is not None:
            self._app.rx.shrink_c()
        if type(self._app_seal) is PacketProtection:
            (<PacketProtection>self._app_seal).keys.release_contexts()
        # a quiet period long after any loss: an acknowledgement of those packets now would
        # come far later than any the peer sends (it acknowledges within max_ack_delay)
        self._lost_streams = self._lost_streams_pns = None
        if self._finished is not None:
            self._forget_resolved()
        return 0

    cdef int _forget_resolved(self) except -1:
        """A quiet connection forgets every finished peer half already resolved (raising the
        watermark as _trim_finished does for the oldest): any frame the peer sends from now on
        is in a packet numbered above them all, so nothing can be taken for a late copy that is
        not one, and an idle connection keeps no list of finished streams."""
        cdef _Stream s
        kept = None
        for s, gen in self._finished:
            if (s.recv_gen == gen and s.recv_opened and s.closed_counted
                    and self._streams.get(s.stream_id) is s):
                if s.recv_w < 0:
                    if kept is None:
                        kept = deque()
                    kept.append((s, gen))  # unresolved: its credit may be held back
                elif not s.pinned:
                    self._forget_recv(s)
        self._finished = kept
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
        here: ``datagrams_to_send`` sends what they were waiting for."""
        cdef double t[TIMER_KINDS]
        cdef _Sent pkt
        cdef int probe_space
        self._now_hint = now
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
            self._end_idle_halves(now)
        if 0.0 <= t[TIMER_LOSS] <= now:
            lost, probe_space = self._recovery.on_loss_detection_timeout(now)
            if self._qlog is not None:  # (a PTO changes pto_count even when nothing was lost)
                self._trace_recovery(now, lost[0].space if lost else SP_APP, lost)
            for pkt in lost:
                self._on_packet_lost(pkt)
            if probe_space >= 0:
                self._probes[probe_space] = max(self._probes[probe_space], self._recovery.probes_needed)
                self._requeue_for_probe(probe_space)
        if 0.0 <= t[TIMER_KEEP_ALIVE] <= now:
            self._pending.once |= OWE_PING
        if 0.0 <= t[TIMER_IDLE_RELEASE] <= now:
            self._release_idle()

    def _emit_terminated(self, ev):
        if self._app_seal is None:
            # it ended before its handshake completed: say so, with the key the peer presented
            # (a refused client's key is kept by the handshake: dquic.handshake presented_key)
            self._events.append(HandshakeFailed(
                self.peer_addr, ev.error_code, ev.reason, ev.by_peer, ev.application, ev.timeout,
                getattr(self._handshake, "presented_key", None)))
        self._events.append(ev)
        if self._qlog is not None:
            self._qlog.connection_closed(self._now_hint, ev.error_code, ev.reason, ev.by_peer,
                                         application=ev.application, timeout=ev.timeout)

    def _trace_keys(self, now, trigger):
        """Tell the trace when the 1-RTT keys are new: installed by the handshake (generation
        0) or updated (RFC 9001 §6); the trace writes only a generation it has not seen."""
        keys = getattr(self._app_seal, "keys", None)
        if keys is not None:
            self._qlog.keys_updated(now, keys.generation, trigger)

    def _trace_drop(self, now, size, trigger, packet_type=None, pn=None, reason=None):
        """Tell the trace about a packet this connection discarded (qlog packet_dropped)."""
        self._qlog.packet_dropped(now, size, trigger, packet_type=packet_type, pn=pn, reason=reason)

    def attach_qlog(self, trace, now):
        """Trace this connection to ``trace`` (a ``dquic.qlog.QlogTrace``) from now on."""
        self._qlog = trace
        trace.connection_started(now, None, self.peer_addr)

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
        self._now_hint = now
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
        on_path = addr is self.peer_addr or addr == self.peer_addr
        try:
            self.bytes_received += size
            if on_path:
                self._bytes_received_on_path += size
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
                    if hdr.dcid not in self._host_cids.values() and not (
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
            if not on_path and (addr is self.peer_addr or addr == self.peer_addr):
                # this datagram moved the peer here: it counts toward the new path's
                # anti-amplification budget (else the PATH_CHALLENGE waits for another one)
                self._bytes_received_on_path += size
            if have_view:
                PyBuffer_Release(&view)

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
        if segment_size <= 0:
            raise ValueError("segment_size must be > 0")
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            p = <const uint8_t*>view.buf
            size = view.len
            off = 0
            self._now_hint = now
            if self._state == _TERMINATED or not self._started:
                return 0
            path = addr is self.peer_addr or addr == self.peer_addr
            while off < size:
                end = off + segment_size
                if end > size:
                    end = size
                if (p[off] & 0xC0) != 0x40 or end - off - 1 < self._cid_len \
                        or not self._short_dcid_ok(p + off + 1):
                    return off
                self.bytes_received += end - off
                if path:
                    self._bytes_received_on_path += end - off
                self._receive_short(data, p, off, end, addr, now)
                if not path and (addr is self.peer_addr or addr == self.peer_addr):
                    path = True  # this datagram moved the peer here (see receive_datagram)
                    self._bytes_received_on_path += end - off
                off = end
                if self._state >= _DRAINING:
                    return size
            return size
        finally:
            PyBuffer_Release(&view)

    cdef bint _awaits_validation(self):
        """Server whose client address is not validated and no path validation runs: an
        authenticated packet addressed to a connection ID we chose would validate it. (After a
        migration only PATH_RESPONSE validates the new address: the client's packets reach us
        with our connection IDs whatever source address an on-path attacker writes on them.)"""
        return not self._address_validated and not self.is_client and self._path_challenge is None

    cdef bint _dcid_chosen_by_us(self, const uint8_t* dcid):
        """``dcid`` is one of the connection IDs we issued (not the client-chosen original
        destination ID): only a peer that received our packets can know it."""
        cid = PyBytes_FromStringAndSize(<const char*>dcid, self._cid_len)
        return cid in self._host_cids.values()

    cdef bint _short_dcid_ok(self, const uint8_t* dcid):
        hc = self.host_cid
        if (PyBytes_CheckExact(hc) and PyBytes_GET_SIZE(hc) == self._cid_len
                and memcmp(dcid, PyBytes_AS_STRING(hc), self._cid_len) == 0):
            return True
        cid = PyBytes_FromStringAndSize(<const char*>dcid, self._cid_len)
        return cid in self._host_cids.values() or (
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
        if (self.is_client and self._retry_scid is not None and not self._peer_cid_set_by_server
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
                                self._awaits_validation() and hdr.dcid in self._host_cids.values())

    cdef int _after_open(self, int space_id, _Space space, object opener, int64_t pn, int first,
                         const uint8_t* payload, Py_ssize_t plen, object pobj, Py_ssize_t poff,
                         bint is_long, object hdr, Py_ssize_t packet_len, object addr,
                         double now, bint to_our_cid) except -1:
        """An authenticated packet: duplicate check, frames, ACK bookkeeping, migration.

        ``to_our_cid``: the packet was addressed to a connection ID we chose while the client's
        address awaited validation (see ``_awaits_validation``)."""
        cdef bint eliciting = False, non_probing = False, out_of_order
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
        self._eliciting_since_receive = False
        if is_long and self.is_client and not self._peer_cid_set_by_server:
            # RFC 9000 §7.2: the client switches to the server's chosen connection ID
            self._peer_cid_set_by_server = True
            self.peer_cid = hdr.scid
            self._peer_cids[0] = (hdr.scid, None)
        if to_our_cid and self._awaits_validation():
            # the client used a connection ID we chose: it received one of our packets at
            # this address. Nothing else in a handshake-phase packet proves that: those
            # packets have no packet protection, and the original destination ID is the
            # client's own choice (PROTOCOL.md §18.1)
            self._address_validated = True
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
            self._rx_pn = pn
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
            if self._tomb_new is not None and not space.ack_pending:
                space.ack_pending = True
                space.ack_deadline = now
                _note_work(self)
            return 0
        if self._state >= _DRAINING:
            return 0
        # ACK bookkeeping (RFC 9000 §13.2)
        out_of_order = pn != space.largest_rx + 1
        space.rx.add_range(<uint64_t>pn, <uint64_t>pn + 1)
        if space.rx.count() >= self._max_ack_ranges:
            if <int64_t>space.rx.start_at(0) > space.rx_floor:
                space.rx_floor = <int64_t>space.rx.start_at(0)
        if pn > space.largest_rx:
            space.largest_rx = pn
            space.largest_rx_time = now
        if eliciting:
            space.ack_pending = True
            space.unacked_eliciting += 1
            if (space_id == SP_HS or out_of_order
                    or space.unacked_eliciting >= self._ack_eliciting_threshold):
                space.ack_deadline = now
            elif space.ack_deadline < 0.0:
                space.ack_deadline = now + self._max_ack_delay
        # migration (RFC 9000 §9.3): only the highest-numbered non-probing packet moves the path
        if (space_id == SP_APP and non_probing and pn == space.largest_rx
                and self._state == _ESTABLISHED
                and not (addr is self.peer_addr or addr == self.peer_addr)):
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
                    if self._ambiguous(frame.stream_id):
                        raise _DropPacket()
                    if dlist is None:
                        dlist = [dfr[i].at for i in range(nd)]
                    dlist.append(frame)
                else:
                    self._dispatch_frame(space_id, frame, now)
            elif ranges is not None:
                self._on_ack_c(space_id, ranges, delay, now)
            elif 0x08 <= ftype <= 0x0F:
                if self._ambiguous(sid):
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
                self._on_stream_c(dfr[i].sid, dfr[i].off, p + dfr[i].data,
                                  <Py_ssize_t>dfr[i].length, dfr[i].fin, dfr[i].ftype)
        else:
            for item in dlist:
                if self._state >= _DRAINING:
                    break
                if type(item) is int:
                    self._stream_frame_at(p, n, <Py_ssize_t>item)
                else:
                    self._on_reset_stream(space_id, item, now)
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
        self._on_stream_c(sid, off, p + rb._pos, <Py_ssize_t>length, fin,
                          <int>(0x08 | (0x04 if off else 0) | (ftype & 0x02) | (0x01 if fin else 0)))
        return 0

    cdef bint _ambiguous(self, uint64_t stream_id) except -1:
        """Would a STREAM or RESET_STREAM frame for ``stream_id`` in the packet being processed
        (``_rx_pn``) be one whose incarnation cannot be told yet? (The tests of _route, without
        its effects.)"""
        cdef _Stream s = self._lookup(stream_id)
        cdef int64_t pn = self._rx_pn
        if s is None or not s.recv_opened:
            return pn < self._stale_below
        if not s.recv_done:
            return pn < s.recv_min_pn
        if pn <= s.recv_c:
            return False
        if s.recv_w < 0 or pn < s.recv_w:
            return True
        return (not s.closed_counted and s.recv_next is not None
                and _data_complete(s.recv_next))

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
        cdef _Space space
        cdef _Sent pkt
        if space_id == SP_APP:
            delay = ldexp(<double>ack_delay, self._peer_ack_delay_exponent) / 1e6
        acked, lost = self._recovery.on_ack_received(space_id, ranges, delay, now)
        if self._qlog is not None:
            self._trace_recovery(now, space_id, lost)
        space = self._app if space_id == SP_APP else self._hs
        for pkt in acked:
            if pkt.packet_number > space.largest_acked:
                space.largest_acked = pkt.packet_number
            self._on_packet_acked(pkt)
            # recovery holds no reference to an acknowledged packet any more: reuse it (a lost
            # one stays tracked by recovery, which may still report it acknowledged later)
            self._recycle(pkt)
        for pkt in lost:
            self._on_packet_lost(pkt)
        if space_id == SP_APP and self._lost_streams:
            self._late_acks(ranges)
        return 0

    cdef int _late_acks(self, list ranges) except -1:
        """Stream data of 1-RTT packets declared lost and since forgotten by recovery, that
        this ACK shows arrived after all: acknowledged now, so it is not sent again. Recovery
        recognises an acknowledgement of a lost packet only for about four PTOs; past that, data
        resent after the peer completed and resolved its half would be read as the next
        incarnation's (PROTOCOL.md §16.7)."""
        cdef list pns = self._lost_streams_pns
        cdef dict recs = self._lost_streams
        cdef Py_ssize_t i, j
        cdef _Stream s
        cdef uint64_t h0
        for r in ranges:
            i = bisect_left(pns, r[0])
            j = bisect_left(pns, r[1], i)
            if i == j:
                continue
            for pn in pns[i:j]:
                for sid, gen, off, length, fin in recs.pop(pn):
                    s = self._lookup(sid)
                    if s is not None and s.send_gen == gen and not s.send._reset:
                        h0 = _held(s.send)
                        s.send.on_acked_c(off, length, fin)
                        self._send_buffered -= h0 - _held(s.send)
                        self._after_ack(s)
            del pns[i:j]
        if not pns:
            self._lost_streams = self._lost_streams_pns = None
        return 0

    def _trace_recovery(self, now, space_id, lost):
        """Losses, then the recovery metrics and congestion state (the trace writes only what
        changed): after each ACK and loss-detection timeout, while tracing."""
        ptype = codec.PACKET_SHORT if space_id == SP_APP else codec.PACKET_HANDSHAKE
        for pkt in lost:
            self._qlog.packet_lost(now, ptype, pkt.packet_number)
        recovery = self._recovery
        rtt = recovery.rtt
        cc = self._cc
        self._qlog.metrics_updated(now, cwnd=cc.congestion_window,
                                   bytes_in_flight=cc.bytes_in_flight,
                                   smoothed_rtt=rtt.smoothed_rtt, min_rtt=rtt.min_rtt,
                                   latest_rtt=rtt.latest_rtt, rttvar=rtt.rttvar,
                                   ssthresh=cc.ssthresh, pto_count=recovery.pto_count)
        self._qlog.congestion_state_updated(
            now, cc.congestion_state(recovery.app_limited_until != 0),
            persistent_congestion_events=cc.persistent_congestion_events)

    def _on_stream(self, space_id, frame, now):
        data = bytes(frame.data)
        self._on_stream_c(frame.stream_id, frame.offset,
                          <const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data),
                          frame.fin, frame.frame_type)

    cdef int _on_stream_c(self, uint64_t stream_id, uint64_t offset, const uint8_t* data,
                          Py_ssize_t length, bint fin, int frame_type) except -1:
        cdef bint nxt
        cdef _Stream s = self._route(stream_id, offset + <uint64_t>length, &nxt)
        cdef RecvStream r
        cdef int64_t new
        if s is None:
            return 0
        r = s.recv_next if nxt else s.recv
        if r._reset:
            return 0
        new = r.insert_c(offset, data, length, fin)
        if new:
            self._data_received += <uint64_t>new
            if self._data_received > self._recv_window._limit:
                raise ProtocolError("connection flow control limit exceeded",
                                    _FLOW_CONTROL_ERROR, frame_type)
        self.stream_bytes_received += length
        if nxt:
            return 0  # read once the current incarnation is
        if r._stopped:
            if _data_complete(r):
                self._drop_unread(s, s.stop_code)
            return 0
        if not s.readable_signalled and _message_ready1(r):
            s.readable_signalled = True
            self._events.append(MessageReceived(s.stream_id))
        if not s.recv_done and _data_complete(r):
            self._recv_complete(s)
        self._check_recv_closed(s)
        return 0

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
        if params.initial_source_connection_id != self.peer_cid:
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
        self._peer_cids[0] = (self.peer_cid, params.stateless_reset_token)
        if params.stateless_reset_token:
            _cid_change(self, ("reset", params.stateless_reset_token))
        self._peer_max_data = params.initial_max_data
        self._peer_stream_limit = params.initial_max_stream_data
        self._peer_stream_credit = params.initial_max_streams
        self._peer_max_ack_delay = params.max_ack_delay / 1000.0
        self._recovery.max_ack_delay = self._peer_max_ack_delay
        self._peer_ack_delay_exponent = params.ack_delay_exponent
        self._peer_max_datagram_frame = params.max_datagram_frame_size
        for s in self._streams.values():
            s.send_limit = max(s.send_limit, self._peer_stream_limit)
        seal, open_ = hs.protections(key_update_interval=self.config.key_update_interval)
        self._set_app_protection(seal, open_)
        self.peer_key = hs.peer_static
        self._state = _ESTABLISHED
        # issue spare connection IDs for migration (RFC 9000 §5.1.1)
        limit = min(params.active_connection_id_limit, 8)
        while len(self._host_cids) < limit:
            self._issue_cid()
        self._events.append(HandshakeCompleted(hs.peer_static))
        if self._qlog is not None:
            self._trace_keys(now, "tls")
        for s in list(self._streams.values()):
            if s.send.has_pending_c() or s.owed & (OWE_RESET_STREAM | OWE_STOP_SENDING):
                self._schedule(s)

    def _confirm_handshake(self):
        """RFC 9001 §4.1.2: the server confirms on its first 1-RTT packet from the client; the
        client on HANDSHAKE_DONE. The handshake space is then discarded."""
        if self._handshake_confirmed or self._state < _ESTABLISHED:
            return
        self._handshake_confirmed = True
        self._recovery.handshake_confirmed = True
        if not self.is_client:
            self._pending.once |= OWE_HANDSHAKE_DONE
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
        self._probes[space_id] = 0
        space.release()
        self._seal[space_id] = None
        self._open[space_id] = None

    def _on_handshake_done(self, space_id, frame, now):
        if not self.is_client:
            raise ProtocolError("HANDSHAKE_DONE from a client", ErrorCode.PROTOCOL_VIOLATION)
        self._confirm_handshake()

    def _on_reset_stream(self, space_id, frame, now):
        cdef bint nxt
        cdef _Stream s = self._route(frame.stream_id, frame.final_size, &nxt)
        cdef RecvStream r
        if s is None:
            return
        r = s.recv_next if nxt else s.recv
        if r._reset:
            return
        before = r._highest
        r.reset(frame.error_code, frame.final_size)
        grown = max(0, frame.final_size - before)
        self._data_received += grown
        if self._data_received > self._recv_window._limit:
            raise ProtocolError("connection flow control limit exceeded", ErrorCode.FLOW_CONTROL_ERROR)
        # the bytes the peer will never send count as consumed for connection flow control
        unread = frame.final_size - r._read_offset
        if unread > 0:
            self._recv_window.on_consumed(unread)
            if self._recv_window.should_update():
                # the credit those bytes held must go back to the peer, or it may stall
                self._recv_window.update(now, self._recovery.rtt.smoothed_rtt)
                self._pending.once |= OWE_MAX_DATA
        self._events.append(StreamReset(frame.stream_id, frame.error_code))
        if not nxt:
            if not s.recv_done:
                self._recv_complete(s)
            self._check_recv_closed(s)

    def _on_stop_sending(self, space_id, frame, now):
        cdef _Stream s = self._lookup(frame.stream_id)
        if s is None or not s.send_opened or not s.counted or self._rx_pn < s.send_min_pn:
            # our sending half of that stream was never opened toward the peer (only we open
            # it), or the frame is about an earlier incarnation: nothing to stop, no state to
            # create, no RESET_STREAM to send (PROTOCOL.md §16.6, §16.7)
            return
        self._events.append(StopSendingReceived(frame.stream_id, frame.error_code))
        if not s.send._reset and not s.send.is_finished:
            self._send_buffered -= _held(s.send)
            s.send.reset(frame.error_code)
            s.owed |= OWE_RESET_STREAM
            s.reset_code = frame.error_code
            self._schedule(s)

    def _on_max_data(self, space_id, frame, now):
        if frame.maximum > self._peer_max_data:
            self._peer_max_data = frame.maximum
            self._requeue_blocked()

    def _on_max_stream_data(self, space_id, frame, now):
        cdef _Stream s = self._lookup(frame.stream_id)
        if s is None or not s.send_opened or self._rx_pn < s.send_min_pn:
            return  # credit for a sending half we never opened: ignored (PROTOCOL.md §16.6)
        if frame.maximum > s.send_limit:
            s.send_limit = frame.maximum
            if s.send.has_pending_c():
                self._schedule(s)

    def _on_max_streams(self, space_id, frame, now):
        cdef _Stream s
        cdef int64_t room
        if frame.maximum <= self._peer_stream_credit:
            return
        self._peer_stream_credit = frame.maximum
        # wake as many halves waiting for credit as the new credit lets open, oldest first
        room = <int64_t>self._peer_stream_credit - <int64_t>self._streams_counted
        q = self._credit_waiters
        while q and room > 0:
            s = <_Stream>q.popleft()
            s.credit_wait = False
            if s.send_opened and not s.counted and self._streams.get(s.stream_id) is s:
                self._schedule(s)
                room -= 1
            else:
                self._maybe_release(s)
        if not q:
            self._credit_waiters = None

    def _requeue_blocked(self):
        cdef _Stream s
        for s in self._streams.values():
            if s.send.has_pending_c():
                self._schedule(s)

    def _on_data_blocked(self, space_id, frame, now):
        if self._recv_window._limit > frame.limit:
            self._pending.once |= OWE_MAX_DATA  # our update was lost: repeat it

    def _on_stream_data_blocked(self, space_id, frame, now):
        cdef _Stream s = self._lookup(frame.stream_id)
        if (s is not None and s.recv_opened and s.recv.max_offset > frame.limit
                and not s.recv.is_finished):
            s.owed |= OWE_MAX_STREAM_DATA
            self._schedule(s)

    def _on_ignore(self, space_id, frame, now):
        """PADDING, PING and the BLOCKED frames need no action beyond acknowledgement."""

    def _on_new_connection_id(self, space_id, frame, now):
        if not self.peer_cid:
            raise ProtocolError("NEW_CONNECTION_ID to a peer using zero-length IDs",
                                ErrorCode.PROTOCOL_VIOLATION)
        seq = frame.sequence
        known = self._peer_cids.get(seq)
        if known is not None:
            if known[0] != bytes(frame.connection_id):
                raise ProtocolError("NEW_CONNECTION_ID reuses a sequence number",
                                    ErrorCode.PROTOCOL_VIOLATION)
            return
        if seq >= self._peer_cid_seq_floor():
            # its reset token counts only once we use the ID (RFC 9000 §10.3.1: not for IDs
            # we have not used): _switch_peer_cid reports it then
            self._peer_cids[seq] = (bytes(frame.connection_id), bytes(frame.stateless_reset_token))
        if frame.retire_prior_to > 0:
            for old in [q for q in self._peer_cids if q < frame.retire_prior_to]:
                cid, token = self._peer_cids.pop(old)
                if token:
                    _cid_change(self, ("unreset", token))
                self._retire_peer_cid(old)
                if cid == self.peer_cid:
                    self._switch_peer_cid()
            self._retired_below = max(self._retired_below, frame.retire_prior_to)
        if len(self._peer_cids) > self.config.active_connection_id_limit:
            raise ProtocolError("too many connection IDs", ErrorCode.CONNECTION_ID_LIMIT_ERROR)

    def _peer_cid_seq_floor(self):
        return self._retired_below

    def _switch_peer_cid(self):
        """Move to an unused peer connection ID (after retirement or on a new path)."""
        for seq in sorted(self._peer_cids):
            if seq > self._peer_cid_seq:
                old_seq = self._peer_cid_seq
                self._peer_cid_seq = seq
                self.peer_cid, token = self._peer_cids[seq]
                if token:
                    _cid_change(self, ("reset", token))
                if old_seq in self._peer_cids:
                    token = self._peer_cids.pop(old_seq)[1]
                    if token:
                        _cid_change(self, ("unreset", token))
                    self._retire_peer_cid(old_seq)
                return True
        return False

    def _retire_peer_cid(self, seq):
        """Owe RETIRE_CONNECTION_ID for the peer's ID ``seq`` until it is acknowledged. A peer
        that makes us retire IDs faster than it acknowledges the retirements would grow that
        list without end: past 4x active_connection_id_limit (at least 16) unacknowledged
        retirements the connection closes with CONNECTION_ID_LIMIT_ERROR (RFC 9000 §5.1.2)."""
        if self._retiring is None:
            self._retiring = set()
        self._retiring.add(seq)
        if len(self._retiring) > max(16, 4 * self.config.active_connection_id_limit):
            raise ProtocolError("the peer retires connection IDs faster than it acknowledges "
                                "the retirements", ErrorCode.CONNECTION_ID_LIMIT_ERROR)
        _q_push(&self._pending.retire_cids, seq)

    def _on_retire_connection_id(self, space_id, frame, now):
        seq = frame.sequence
        if seq > self._host_cid_seq:
            raise ProtocolError("RETIRE_CONNECTION_ID for an unissued ID", ErrorCode.PROTOCOL_VIOLATION)
        cid = self._host_cids.get(seq)
        if cid is None:
            return
        if len(self._host_cids) == 1:
            return  # never retire the last one
        del self._host_cids[seq]
        _cid_change(self, ("remove", cid))
        if cid == self.host_cid:
            self.host_cid = next(iter(self._host_cids.values()))
        self._issue_cid()

    def _issue_cid(self):
        self._host_cid_seq += 1
        cid = self.config.new_connection_id(self._random)
        self._host_cids[self._host_cid_seq] = cid
        _q_push(&self._pending.new_cids, self._host_cid_seq)
        _cid_change(self, ("add", cid))

    def _on_path_challenge(self, space_id, frame, now):
        data = bytes(frame.data)  # 8 bytes (the codec checks)
        if self._pending.path_responses.n < MAX_PENDING_PATH_RESPONSES:
            _q_push(&self._pending.path_responses,
                    be_read(<const unsigned char*>PyBytes_AS_STRING(data), 8))

    def _on_path_response(self, space_id, frame, now):
        pc = self._path_challenge
        if pc is not None and bytes(frame.data) == pc[0]:
            self._path_challenge = None
            self._pending.once &= ~OWE_PATH_CHALLENGE
            self._address_validated = True
            old = self._previous_addr
            self._previous_addr = None
            if old is not None and old != self.peer_addr:
                self._events.append(PathChanged(old, self.peer_addr))

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
                or self.packets_received or hdr.dcid != self.host_cid or not hdr.token):
            self.packets_dropped += 1
            return
        if retry_integrity_tag(self.original_dcid, packet[:-16]) != bytes(hdr.integrity_tag):
            self.packets_dropped += 1
            return
        self._retry_scid = bytes(hdr.scid)
        self._retry_token = bytes(hdr.token)
        self.peer_cid = self._retry_scid
        self._peer_cids[0] = (self.peer_cid, None)
        # the server kept nothing: send the first handshake message again, same offsets
        cs = self._hs.crypto_send
        cs.on_lost(0, cs.offset_sent, False)

    def peer_reset_tokens(self):
        """Stateless reset tokens the peer gave us (one per connection ID of the peer)."""
        return [tok for _, tok in self._peer_cids.values() if tok]

    @property
    def reset_token(self):
        """The stateless reset token of the peer's connection ID we use now (None if the peer
        gave none): the only one a reset can carry (RFC 9000 §10.3.1)."""
        entry = self._peer_cids.get(self._peer_cid_seq)
        return None if entry is None else entry[1]

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

    # --- acknowledgement and loss of what we sent ---
    # A packet's records are replayed in packet order: STREAM records here (the per-packet
    # path), the others by _record_acked / _record_lost, one branch per kind.
    cdef int _on_packet_acked(self, _Sent pkt) except -1:
        cdef int i
        cdef FrameRecord* r
        cdef _Stream s
        cdef _Space sp
        if pkt.ack_space >= 0:
            # RFC 9000 §13.2.4: the peer has our ACK; stop acknowledging below its smallest
            sp = self._app if pkt.ack_space == SP_APP else self._hs
            if <int64_t>pkt.ack_floor > sp.rx_floor:
                sp.rx.subtract_range(0, pkt.ack_floor)
                sp.rx_floor = <int64_t>pkt.ack_floor
        cdef uint64_t h0
        if pkt.declared_lost and pkt.space == SP_APP and self._lost_streams is not None:
            # a loss recovery took back in time: its stream data is acknowledged here
            if self._lost_streams.pop(pkt.packet_number, None) is not None:
                self._lost_streams_pns.remove(pkt.packet_number)
                if not self._lost_streams_pns:
                    self._lost_streams = self._lost_streams_pns = None
        for i in range(pkt.nrec):
            r = _record_at(pkt, i)
            if r.kind == FR_STREAM:
                s = self._lookup(r.a)
                if s is not None and s.send_gen == r.gen:
                    h0 = _held(s.send)
                    s.send.on_acked_c(r.b, r.c, r.fin)
                    self._send_buffered -= h0 - _held(s.send)
                    self._after_ack(s)
            else:
                self._record_acked(r, pkt.declared_lost)
        if pkt.ack_space == SP_APP and self._tomb_wait:
            self._resolve(<uint64_t>pkt.packet_number, pkt.ack_lo)
        return 0

    cdef int _record_acked(self, FrameRecord* r, bint declared_lost) except -1:
        """A frame other than STREAM arrived: CRYPTO data is delivered, a datagram reported, a
        retirement done (the other kinds need nothing)."""
        cdef _Space sp
        cdef _Stream s
        if r.kind == FR_CRYPTO:
            sp = self._spaces[r.c]
            sp.crypto_send.on_acked_c(r.a, r.b, False)
        elif r.kind == FR_RESET_STREAM:
            s = self._lookup(r.a)
            if s is not None and s.send_gen == r.gen and s.send_opened and s.send._reset:
                self._send_complete(s)
        elif r.kind == FR_DATAGRAM and not declared_lost:
            # a datagram declared lost was already reported as such; one verdict per datagram
            self._events.append(DatagramAcknowledged(r.b))
        elif r.kind == FR_RETIRE_CONNECTION_ID and self._retiring is not None:
            self._retiring.discard(r.a)
        return 0

    cdef int _on_packet_lost(self, _Sent pkt) except -1:
        cdef int i
        cdef FrameRecord* r
        cdef _Stream s
        cdef list streams = None
        for i in range(pkt.nrec):
            r = _record_at(pkt, i)
            if r.kind == FR_STREAM:
                s = self._lookup(r.a)
                if s is not None and s.send_gen == r.gen and not s.send._reset:
                    s.send.on_lost_c(r.b, r.c, r.fin)
                    self._schedule(s)
                    if streams is None:
                        streams = []
                    streams.append((r.a, r.gen, r.b, r.c, r.fin))
            else:
                self._record_lost(r)
        if streams is not None and pkt.space == SP_APP:
            # kept until acknowledged late (_late_acks) or pushed out by newer ones
            if self._lost_streams is None:
                self._lost_streams = {}
                self._lost_streams_pns = []
            self._lost_streams[pkt.packet_number] = tuple(streams)
            insort(self._lost_streams_pns, pkt.packet_number)
            if len(self._lost_streams_pns) > MAX_LOST_STREAM_PACKETS:
                del self._lost_streams[self._lost_streams_pns.pop(0)]
        if (pkt.ack_space == SP_APP and self._tomb_wait
                and self._tomb_wait[0][0] <= <uint64_t>pkt.packet_number):
            # halves waiting to be resolved by that ACK: another one must reach the peer
            self._app.ack_pending = True
            self._pending.once |= OWE_PING
            _note_work(self)
        return 0

    cdef int _record_lost(self, FrameRecord* r) except -1:
        """A frame other than STREAM was lost: what it carried is owed again, unless that no
        longer applies (a frame announcing a limit is sent anew with the limit then current)."""
        cdef _Stream s
        cdef _Space sp
        cdef int kind = r.kind
        if kind == FR_CRYPTO:
            sp = self._spaces[r.c]
            if not sp.discarded:
                sp.crypto_send.on_lost_c(r.a, r.b, False)
        elif kind == FR_HANDSHAKE_DONE or kind == FR_MAX_DATA or kind == FR_MAX_STREAMS:
            self._pending.once |= (<uint32_t>1) << kind
        elif kind == FR_MAX_STREAM_DATA or kind == FR_RESET_STREAM or kind == FR_STOP_SENDING:
            s = self._lookup(r.a)
            if s is None:
                return 0
            if kind == FR_MAX_STREAM_DATA:
                # no more credit is needed once the final size is known
                if s.recv_gen != r.gen or not s.recv_opened or s.recv._final_size >= 0:
                    return 0
            elif kind == FR_RESET_STREAM:
                if s.send_gen != r.gen or not s.send_opened or not s.send._reset:
                    return 0
                s.reset_code = r.b
            else:
                if s.recv_gen != r.gen or not s.recv_opened or s.recv_done:
                    return 0
                s.stop_code = r.b
            s.owed |= (<uint32_t>1) << kind
            self._schedule(s)
        elif kind == FR_NEW_CONNECTION_ID:
            if r.a in self._host_cids:
                _q_push(&self._pending.new_cids, r.a)
        elif kind == FR_RETIRE_CONNECTION_ID:
            if self._retiring is not None and r.a in self._retiring:  # not acked by another copy
                _q_push(&self._pending.retire_cids, r.a)
        elif kind == FR_DATAGRAM:
            self._events.append(DatagramLost(r.b))
        return 0

    cdef void _recycle(self, _Sent pkt):
        pkt.nrec = 0
        pkt.ack_space = -1
        pkt.ack_lo = UINT64_NONE
        if pkt.more_cap > MORE_RECORDS_KEPT:
            PyMem_Free(pkt.more)
            pkt.more = NULL
            pkt.more_cap = 0
        if len(self._free_sent) < FREE_SENT_MAX:
            self._free_sent.append(pkt)

    def _requeue_for_probe(self, space_id):
        """PTO (RFC 9002 §6.2.4): make the probe carry data still unacknowledged if there is any."""
        cdef SendStream cs
        if space_id == SP_HS and not self._hs.discarded:
            cs = self._hs.crypto_send
            if cs._offset_sent:
                cs.on_lost_c(0, cs._offset_sent, False)  # re-send whatever is not acknowledged

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
        self._send_queue = None
        self._pacing_deadline = -1.0
        self._hs.ack_deadline = -1.0
        self._app.ack_deadline = -1.0

    # ----------------------------------------------------------------------------------------
    # path management
    def _on_peer_address_change(self, addr, now):
        old = self.peer_addr
        self._previous_addr = old if self._previous_addr is None else self._previous_addr
        self.peer_addr = addr
        self._bytes_received_on_path = 0
        self._bytes_sent_on_path = 0
        if old[0] != addr[0]:
            # a new network path: congestion state does not carry over (RFC 9000 §9.4)
            self._reset_congestion()
        self._address_validated = False
        challenge = bytes(self._random(8))
        if len(challenge) != 8:
            raise ValueError("random_bytes(8) must return 8 bytes")
        self._path_challenge = (challenge, addr, now + max(3 * self._pto(), 0.1))
        self._pending.once |= OWE_PATH_CHALLENGE
        self._switch_peer_cid()

    def _path_validation_failed(self):
        # RFC 9000 §9.3.2: go back to the last validated path
        self._path_challenge = None
        self._pending.once &= ~OWE_PATH_CHALLENGE
        if self._previous_addr is not None:
            self.peer_addr = self._previous_addr
            self._previous_addr = None
        self._address_validated = True

    def _reset_congestion(self):
        new = _make_controller(self.config)
        self._cc = new
        self._recovery.set_congestion_controller(new, reset_rtt=True)

    def change_address(self):
        """Client: after our local address changed, move to a fresh connection ID so the new
        path is not linkable to the old one (the peer validates the new path)."""
        self._switch_peer_cid()

    # ----------------------------------------------------------------------------------------
    # sending
    def datagrams_to_send(self, double now):
        """Build what should be sent now: a list of ``(datagram, address)``.

        Call after every input (datagram, timer, command). Then re-read ``get_timer()``.
        """
        cdef Py_ssize_t mds = self._mds, total = 0
        cdef int i
        self._now_hint = now
        out = []
        if self._state == _TERMINATED or not self._started:
            return out
        if self._state >= _CLOSING:
            self._send_close(now, out)
            self._return_scratch()
            return out
        self._pacing_deadline = -1.0
        addr = self.peer_addr
        # handshake space first: it is small and unblocks everything else
        if not self._hs.discarded:
            for i in range(8):
                d = self._build_handshake_datagram(now, mds)
                if d is None:
                    break
                out.append((d, addr))
                total += len(d)
            else:
                _note_work(self)  # more than one call's worth: ask to be polled again
        if self._app_seal is not None:
            for i in range(256):
                d = self._build_app_packet(now, mds)
                if d is None:
                    break
                out.append((d, addr))
                total += len(d)
            else:
                _note_work(self)
            self._check_app_limited(mds)
        self._count_sent(total)
        self._return_scratch()
        return out

    def datagram_trains(self, double now, Py_ssize_t max_bytes=65000, Py_ssize_t max_segments=64):
        """What ``datagrams_to_send`` would return, as trains for segmentation offload: a
        list of ``(data, segment_size, address)``, ``data`` holding one or more datagrams back
        to back, each ``segment_size`` bytes except the last (which may be shorter), at most
        ``max_segments`` of them and ``max_bytes`` in all. 1-RTT packets are sealed straight
        into the train (no object per packet); handshake and closing packets come one per
        train. Call after every input, like ``datagrams_to_send``."""
        cdef Py_ssize_t mds = self._mds, total = 0, off = 0, seg = 0, count = 0, n, room
        cdef unsigned char* base = NULL
        cdef int i
        cdef bint close_train
        out = []
        self._now_hint = now
        if self._state == _TERMINATED or not self._started:
            return out
        if self._state >= _CLOSING or not self._hs.discarded or self._app_seal is None:
            for d, a in self.datagrams_to_send(now):
                out.append((d, len(d), a))
            return out
        room = mds + self._app_tag + 64  # a packet never exceeds mds; slack for safety
        if max_bytes < room:
            max_bytes = room
        if max_segments < 1:
            max_segments = 1
        self._pacing_deadline = -1.0
        addr = self.peer_addr
        train = None
        for i in range(256):
            if train is None:
                train = PyByteArray_FromStringAndSize(NULL, max_bytes)
                base = <unsigned char*>PyByteArray_AS_STRING(train)
                off = 0
                count = 0
            d = self._build_app_packet(now, mds, base + off)
            if d is None:
                break
            n = <Py_ssize_t>d
            total += n
            close_train = False
            if count == 0 or n == seg:
                if count == 0:
                    seg = n
                off += n
                count += 1
            elif n < seg:
                off += n  # a shorter datagram ends a train
                count += 1
                close_train = True
            else:
                # longer than the train's size: it starts the next train
                PyByteArray_Resize(train, off)
                out.append((train, seg, addr))
                new = PyByteArray_FromStringAndSize(<const char*>(base + off), max_bytes)
                train = new
                base = <unsigned char*>PyByteArray_AS_STRING(train)
                off = n
                seg = n
                count = 1
            if close_train or count >= max_segments or off + room > max_bytes:
                PyByteArray_Resize(train, off)
                out.append((train, seg, addr))
                train = None
        else:
            _note_work(self)
        if train is not None and count:
            PyByteArray_Resize(train, off)
            out.append((train, seg, addr))
        self._check_app_limited(mds)
        self._count_sent(total)
        self._return_scratch()
        return out

    cdef void _return_scratch(self):
        if self._sbuf is not None:
            _give_scratch(self._sbuf)
            self._sbuf = None

    cdef int _check_app_limited(self, Py_ssize_t mds) except -1:
        # nothing left to send while the window has room: the application, not the network,
        # limits the rate (delivery-rate estimation)
        if not self._send_queue and not self._datagrams and self._cc.can_send(mds):
            self._recovery.on_app_limited()
        # queues emptied by what was just built go back to None (a deque holds ~600 bytes
        # even when empty; most connections are idle most of the time)
        if self._send_queue is not None and not self._send_queue:
            self._send_queue = None
        if self._datagrams is not None and not self._datagrams:
            self._datagrams = None
        return 0

    cdef int _count_sent(self, Py_ssize_t total) except -1:
        # (bytes sent on the current path are counted packet by packet in _record_sent: the
        # anti-amplification room must shrink within one batch)
        if total:
            self.bytes_sent += total
        return 0

    cdef int64_t _amplification_room(self):
        if self._address_validated:
            return (<int64_t>1) << 62
        return 3 * self._bytes_received_on_path - self._bytes_sent_on_path

    def _send_close(self, double now, list out):
        cdef int64_t pn
        cdef int pn_len
        cdef Py_ssize_t length_off, hdr_end
        if self._state == _DRAINING and self._close_reply_owed:
            self._close_reply_owed = False  # the one answer to the peer's CONNECTION_CLOSE
        elif self._state != _CLOSING or self._close_frame is None:
            return
        elif self._close_sent_at >= 0 and not self._close_resend:
            return
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
        self._start_packet(space_id, self._mds, &pn, &pn_len, &length_off)
        hdr_end = self._sbuf._pos
        traced = [frame]
        if space_id == SP_APP and self._state == _CLOSING and self._await_close_reply:
            # a graceful close acknowledges what we received: a peer that waits for its last
            # data to be acknowledged learns it from this packet (at most 32 ranges)
            ranges = self._ack_ranges_per_frame
            if ranges <= 0 or ranges > 32:
                self._ack_ranges_per_frame = 32
            rec = self._new_sent()
            try:
                self._write_ack(self._app, SP_APP, now, rec)
                if self._qlog is not None and rec.ack_space >= 0:
                    traced.insert(0, rec.frames)
            finally:
                self._ack_ranges_per_frame = ranges
                rec.frames = None
                self._recycle(rec)
        frames.push_frame(self._sbuf, frame)
        if space_id == SP_HS and self.is_client:
            self._pad_to(1200)
        data = self._finish_packet(space_id, hdr_end, length_off, pn, pn_len)
        if self._qlog is not None:
            self._qlog.packet_sent(now, codec.PACKET_SHORT if space_id == SP_APP else (
                codec.PACKET_INITIAL if self.is_client and not self._peer_cid_set_by_server
                else codec.PACKET_HANDSHAKE), pn, len(data), traced)
        if len(data) <= self._amplification_room():
            out.append((data, self.peer_addr))
            self.bytes_sent += len(data)
            self._bytes_sent_on_path += len(data)

    cdef int _start_packet(self, int space_id, Py_ssize_t limit, int64_t* pn_out, int* pn_len_out,
                           Py_ssize_t* length_off) except -1:
        """Write a packet header into the send buffer (borrowed until the end of this
        datagrams_to_send / datagram_trains); the payload follows."""
        cdef _Space space = self._app if space_id == SP_APP else self._hs
        cdef Buffer buf = self._sbuf
        if buf is None:
            buf = self._sbuf = _take_scratch(self._mds)
        cdef int64_t pn = space.next_pn
        cdef int pn_len
        cdef uint64_t trunc
        space.next_pn += 1
        pn_len = _pn_length(pn, space.largest_acked)
        trunc = (<uint64_t>pn) & ((((<uint64_t>1) << (8 * pn_len))) - 1)
        buf._pos = 0
        if space_id == SP_HS:
            # the client's packets are INITIAL until the server's first packet arrives
            ptype = (codec.PACKET_INITIAL if self.is_client and not self._peer_cid_set_by_server
                     else codec.PACKET_HANDSHAKE)
            length_off[0] = codec.push_long_header(
                buf, ptype, DQUIC_VERSION_1, self.peer_cid, self.host_cid,
                self._retry_token if ptype == codec.PACKET_INITIAL else b"", trunc, pn_len)
        else:
            # short header (RFC 9000 §17.3.1); the sealer sets the key-phase bit
            buf.c_push_uint(0x40 | (pn_len - 1), 1)
            buf.c_push_object(self.peer_cid)
            buf.c_push_uint(trunc, pn_len)
            length_off[0] = -1
        pn_out[0] = pn
        pn_len_out[0] = pn_len
        return 0

    def _pad_to(self, Py_ssize_t total):
        cdef Buffer buf = self._sbuf
        cdef Py_ssize_t room = total - self._seal[SP_HS].tag_size - buf._pos
        cdef unsigned char* p
        if room > 0:
            p = buf.c_push_ptr(room)
            memset(p, 0, room)

    cdef object _finish_packet(self, int space_id, Py_ssize_t hdr_end, Py_ssize_t length_off,
                               int64_t pn, int pn_len, unsigned char* dst=NULL):
        """Pad for the header-protection sample, seal and return the packet's bytes; with
        ``dst`` (room for the packet plus the AEAD tag), write the packet there instead and
        return its length."""
        cdef Buffer buf = self._sbuf
        cdef Py_ssize_t payload_len = buf._pos - hdr_end, pad, n
        cdef unsigned char* p
        # header protection samples 16 bytes starting 4 after the packet number (RFC 9001 §5.4.2)
        if payload_len + pn_len < 4:
            pad = 4 - payload_len - pn_len
            p = buf.c_push_ptr(pad)
            memset(p, 0, pad)
        if space_id == SP_APP and self._app_seal_null:
            if dst != NULL:
                memcpy(dst, buf._base, buf._pos)
                return buf._pos
            return PyBytes_FromStringAndSize(<const char*>buf._base, buf._pos)
        sealer = self._seal[space_id]
        if length_off >= 0:
            codec.patch_length(buf, length_off, pn_len + buf._pos - hdr_end + sealer.tag_size)
        if type(sealer) is PacketProtection:
            if dst != NULL:
                return (<PacketProtection>sealer).c_seal_into(
                    buf._base, hdr_end, buf._base + hdr_end, buf._pos - hdr_end, pn, dst)
            return (<PacketProtection>sealer).c_seal(buf._base, hdr_end, buf._base + hdr_end, buf._pos - hdr_end, pn)
        header = PyBytes_FromStringAndSize(<const char*>buf._base, hdr_end)
        payload = PyBytes_FromStringAndSize(<const char*>(buf._base + hdr_end), buf._pos - hdr_end)
        data = sealer.encrypt_packet(header, payload, pn)
        if dst != NULL:
            n = len(data)
            memcpy(dst, <const char*>data, n)
            return n
        return data

    cdef int _write_ack(self, _Space space, int space_id, double now, _Sent rec) except -1:
        """ACK frame from the received ranges, newest first (RFC 9000 §19.3)."""
        cdef Buffer buf = self._sbuf
        cdef RangeSet rx = space.rx
        cdef Py_ssize_t n = rx.count(), lowest, i
        cdef uint64_t prev_start
        cdef double delay
        if n == 0:
            return 0
        lowest = 0
        if 0 < self._ack_ranges_per_frame < n:
            lowest = n - self._ack_ranges_per_frame
        delay = now - space.largest_rx_time
        if delay < 0.0:
            delay = 0.0
        buf.c_push_uint(F_ACK, 1)
        buf.c_push_varint(rx.stop_at(n - 1) - 1)
        buf.c_push_varint((<uint64_t>(delay * 1e6)) >> self._ack_delay_exponent)
        buf.c_push_varint(<uint64_t>(n - 1 - lowest))
        buf.c_push_varint(rx.stop_at(n - 1) - 1 - rx.start_at(n - 1))
        prev_start = rx.start_at(n - 1)
        i = n - 2
        while i >= lowest:
            buf.c_push_varint(prev_start - rx.stop_at(i) - 1)
            buf.c_push_varint(rx.stop_at(i) - 1 - rx.start_at(i))
            prev_start = rx.start_at(i)
            i -= 1
        rec.ack_space = space_id
        rec.ack_floor = rx.start_at(0)
        if self._qlog is not None:
            # the ranges only a trace needs: kept on the record until _record_sent reports it
            rec.frames = {"frame_type": "ack", "ack_delay": round(delay * 1000.0, 3),
                          "acked_ranges": [[rx.start_at(i), rx.stop_at(i) - 1]
                                           if rx.stop_at(i) - 1 > rx.start_at(i)
                                           else [rx.start_at(i)] for i in range(lowest, n)]}
        rec.ack_lo = rx.start_at(lowest)
        space.ack_pending = False
        space.unacked_eliciting = 0
        space.ack_deadline = -1.0
        return 0

    cdef _Sent _new_sent(self):
        cdef _Sent rec
        if self._free_sent:
            return <_Sent>self._free_sent.pop()
        rec = _Sent.__new__(_Sent)
        rec.nrec = 0
        rec.ack_space = -1
        rec.ack_lo = UINT64_NONE
        return rec

    cdef int _record_sent(self, _Sent rec, int space_id, int64_t pn, Py_ssize_t size,
                          bint eliciting, double now) except -1:
        rec.packet_number = pn
        rec.space = space_id
        rec.time_sent = now
        rec.sent_bytes = size
        self._bytes_sent_on_path += size
        rec.ack_eliciting = eliciting
        rec.in_flight = eliciting
        rec.is_probe = False
        # recovery's own per-packet state starts fresh on a recycled record
        rec.declared_lost = False
        rec.delivered = 0
        rec.delivered_time = 0.0
        rec.first_sent_time = 0.0
        rec.is_app_limited = False
        rec._episode = 0
        self._recovery.on_packet_sent(rec)
        if (self._tomb_new is not None and space_id == SP_APP and rec.ack_space == SP_APP
                and rec.ack_lo <= <uint64_t>self._tomb_lo):
            # this ACK lists every packet that carried a frame of the peer's halves complete
            # so far: they are resolved once it is acknowledged
            if self._tomb_wait is None:
                self._tomb_wait = deque()
            self._tomb_wait.append((<uint64_t>pn, <uint64_t>self._tomb_lo, self._tomb_new))
            self._tomb_new = None
            if not eliciting:
                self._pending.once |= OWE_PING  # so that the peer acknowledges it soon
        if self._qlog is not None:
            ptype = codec.PACKET_SHORT if space_id == SP_APP else (
                codec.PACKET_INITIAL if self.is_client and not self._peer_cid_set_by_server
                else codec.PACKET_HANDSHAKE)
            self._qlog.packet_sent(now, ptype, pn, size, rec.frames_for_trace())
            if space_id == SP_APP:
                self._trace_keys(now, "local_update")
        rec.frames = None
        if eliciting:
            self._last_eliciting_sent = now
            if not self._eliciting_since_receive:
                # RFC 9000 §10.1: the first ack-eliciting packet after a receipt restarts idle
                self._eliciting_since_receive = True
                self._last_activity = now
            if self._pacer is not None:
                self._pacer.on_sent(size, now)
        return 0

    cdef object _build_handshake_datagram(self, double now, Py_ssize_t mds):
        cdef _Space space = self._hs
        cdef SendStream crypto = space.crypto_send
        cdef bint ack_due, probe, eliciting = False
        cdef int64_t room, pn
        cdef Py_ssize_t limit, hdr_end, length_off, avail, tag
        cdef int pn_len
        cdef _Sent rec
        ack_due = space.ack_pending and space.ack_deadline >= 0.0 and space.ack_deadline <= now
        probe = self._probes[SP_HS] > 0
        if not (ack_due or crypto.has_pending_c() or probe):
            return None
        room = self._amplification_room()
        if room <= 64:
            return None  # anti-amplification: wait for more bytes from the unvalidated client
        limit = mds if mds < room else <Py_ssize_t>room
        self._start_packet(SP_HS, limit, &pn, &pn_len, &length_off)
        hdr_end = self._sbuf._pos
        tag = self._seal[SP_HS].tag_size
        rec = self._new_sent()
        if space.ack_pending:
            self._write_ack(space, SP_HS, now, rec)
        while crypto.has_pending_c():
            avail = limit - tag - self._sbuf._pos - 1 - 8 - 2
            if avail < 16:
                break
            chunk = crypto.next_chunk(avail, 1 << 62)
            if chunk is None:
                break
            off, data, _fin = chunk
            # (always fits: avail leaves room for the frame's type, offset and length)
            self._put_frame(limit - tag, rec, FR_CRYPTO, off, len(data), SP_HS,
                            <const unsigned char*>PyBytes_AS_STRING(data), len(data))
            eliciting = True
        if self._probes[SP_HS] > 0:
            self._probes[SP_HS] -= 1
            if not eliciting:
                eliciting = self._put_frame(limit - tag, rec, FR_PING)
        if self.is_client and eliciting:
            self._pad_to(1200)  # anti-amplification (RFC 9000 §14.1)
        data = self._finish_packet(SP_HS, hdr_end, length_off, pn, pn_len)
        self._record_sent(rec, SP_HS, pn, len(data), eliciting, now)
        return data

    cdef object _build_app_packet(self, double now, Py_ssize_t mds, unsigned char* dst=NULL):
        cdef _Space space = self._app
        cdef bint ack_due, probe, control, path_frames, have_data, cc_ok, eliciting
        cdef Py_ssize_t limit = mds, hdr_end, length_off, end, acked_end, pad
        cdef int64_t room, pn
        cdef int pn_len
        cdef double t
        cdef _Sent rec
        ack_due = space.ack_pending and space.ack_deadline >= 0.0 and space.ack_deadline <= now
        probe = self._probes[SP_APP] > 0
        control = self._has_control_frames()
        # path validation frames are small and not held back by congestion control: the
        # window may still be full of packets sent on the previous path (RFC 9000 §9.4)
        path_frames = (self._pending.path_responses.n > 0
                       or (self._pending.once & OWE_PATH_CHALLENGE) != 0)
        have_data = ((self._send_queue is not None and len(self._send_queue) > 0)
                     or (self._datagrams is not None and len(self._datagrams) > 0))
        if not (ack_due or probe or control or have_data or self._pending.once & OWE_PING):
            return None
        room = self._amplification_room()
        if room < limit:
            if room < 64:
                return None
            limit = <Py_ssize_t>room
        # congestion control and pacing gate ack-eliciting packets (probes bypass: RFC 9002 §7.5)
        cc_ok = probe or self._cc.can_send(limit)
        if cc_ok and not probe and self._pacer is not None:
            self._pacer.update(self._cc.congestion_window, self._recovery.rtt.smoothed_rtt,
                               self._cc.in_slow_start(), self._cc.pacing_rate())
            t = self._pacer.next_send_time(now)
            if t > now:
                cc_ok = False
                if control or have_data:
                    self._pacing_deadline = t
        if not cc_ok and not ack_due and not path_frames:
            return None
        self._start_packet(SP_APP, limit, &pn, &pn_len, &length_off)
        hdr_end = self._sbuf._pos
        end = limit - self._app_tag
        rec = self._new_sent()
        if space.ack_pending:
            self._write_ack(space, SP_APP, now, rec)
        acked_end = self._sbuf._pos  # every frame after the ACK elicits one
        if cc_ok:
            if control:
                self._write_control_frames(end, rec)
            if self._datagrams is not None and len(self._datagrams):
                self._write_datagrams(end, rec)
            if self._send_queue is not None and len(self._send_queue):
                self._write_stream_frames(end, rec)
            if probe:
                self._probes[SP_APP] -= 1
            if (probe or self._pending.once & OWE_PING) and self._sbuf._pos == acked_end:
                self._put_frame(end, rec, FR_PING)
            self._pending.once &= ~OWE_PING
        elif path_frames:
            self._write_path_frames(end, rec)
        eliciting = self._sbuf._pos > acked_end
        if eliciting and self._sbuf._pos + self._app_tag < MIN_ELICITING_PACKET:
            # long enough for a peer that lost the connection to answer with a stateless reset
            # (RFC 9000 §10.3; endpoint.MIN_RESET_TRIGGER): small packets (a lone FIN, a PING)
            # are common once message streams end by themselves
            pad = MIN_ELICITING_PACKET - self._app_tag - self._sbuf._pos
            memset(self._sbuf.c_push_ptr(pad), 0, pad)
        if self._sbuf._pos == hdr_end:
            # nothing fitted: undo the packet number
            space.next_pn -= 1
            self._recycle(rec)
            return None
        data = self._finish_packet(SP_APP, hdr_end, -1, pn, pn_len, dst)
        self._record_sent(rec, SP_APP, pn, len(data) if dst == NULL else <Py_ssize_t>data, eliciting, now)
        return data

    # --- frame writers ---
    # Every frame but STREAM, ACK and CONNECTION_CLOSE goes into a packet through _put_frame;
    # the frames owed (Pending, _Stream.owed) through _pay.
    cdef int _put_frame(self, Py_ssize_t end, _Sent rec, int kind, uint64_t a=0, uint64_t b=0,
                        uint64_t c=0, const unsigned char* tail=NULL,
                        Py_ssize_t tail_len=0) except -1:
        """Write the frame ``kind``: its type, its first fields (a, b, c: as many as the
        kind has, see _FRAME_KINDS) as varints, then ``tail``, if it fits before ``end``; and
        record it in ``rec`` (kinds before FR_UNRECORDED). Returns 1 if written, 0 if not."""
        cdef Buffer buf = self._sbuf
        cdef uint64_t v[3]
        cdef int n[3]
        cdef int i, fields = _WIRE_FIELDS[kind]
        cdef Py_ssize_t size = 1 + tail_len
        cdef unsigned char* p
        v[0] = a
        v[1] = b
        v[2] = c
        for i in range(fields):
            n[i] = _varint_len(v[i])
            if n[i] == 0:
                raise ValueError(f"{_TRACE_NAMES[kind]} field {v[i]} exceeds 2**62-1")
            size += n[i]
        if (kind == FR_MAX_STREAMS or kind == FR_STREAMS_BLOCKED) and a > ((<uint64_t>1) << 60):
            raise ValueError(f"{_TRACE_NAMES[kind]} {a} exceeds 2**60")
        if buf._pos + size > end:
            return 0
        p = buf.c_push_ptr(size)
        p[0] = _WIRE_TYPE[kind]
        p += 1
        for i in range(fields):
            varint_write(p, v[i], n[i])
            p += n[i]
        if tail_len:
            memcpy(p, tail, tail_len)
        if kind < FR_UNRECORDED:
            _add_record(rec, kind, a, b, c, False)
        return 1

    cdef int _pay(self, uint32_t* owed, int kind, Py_ssize_t end, _Sent rec, uint64_t a=0,
                  uint64_t b=0, uint64_t c=0, const unsigned char* tail=NULL,
                  Py_ssize_t tail_len=0) except -1:
        """The frame ``kind``, if it is owed (its bit in ``owed[0]``): written and recorded
        (_put_frame), and then no longer owed. Returns 1 if it stays owed for want of room."""
        cdef uint32_t bit = (<uint32_t>1) << kind
        if not (owed[0] & bit):
            return 0
        if not self._put_frame(end, rec, kind, a, b, c, tail, tail_len):
            return 1
        owed[0] &= ~bit
        return 0

    cdef bint _has_control_frames(self):
        return ((self._pending.once & OWE_CONTROL) != 0 or self._pending.new_cids.n > 0
                or self._pending.retire_cids.n > 0 or self._pending.path_responses.n > 0)

    cdef int _write_control_frames(self, Py_ssize_t end, _Sent rec) except -1:
        cdef uint32_t* owed = &self._pending.once
        cdef U64Queue* q = &self._pending.new_cids
        self._pay(owed, FR_HANDSHAKE_DONE, end, rec)
        self._pay(owed, FR_MAX_DATA, end, rec, self._recv_window._limit)
        self._pay(owed, FR_MAX_STREAMS, end, rec, self._max_streams_local)
        self._write_path_frames(end, rec)
        while q.n:
            seq = q.items[0]
            cid = self._host_cids.get(seq)
            if cid is not None:
                tail = bytes(cid) + bytes(self._reset_token(cid))
                if not (1 <= len(cid) <= 20 and len(tail) == len(cid) + 16):
                    raise ValueError("a connection ID is 1..20 bytes, a reset token 16")
                if not self._put_frame(end, rec, FR_NEW_CONNECTION_ID, seq, 0, len(cid),
                                       <const unsigned char*>PyBytes_AS_STRING(tail), len(tail)):
                    break
            _q_pop(q)
        q = &self._pending.retire_cids
        while q.n and self._put_frame(end, rec, FR_RETIRE_CONNECTION_ID, q.items[0]):
            _q_pop(q)
        return 0

    cdef int _write_path_frames(self, Py_ssize_t end, _Sent rec) except -1:
        """PATH_RESPONSE for challenges received, PATH_CHALLENGE for a new path."""
        cdef U64Queue* q = &self._pending.path_responses
        cdef unsigned char data[8]
        while q.n:
            be_write(data, q.items[0], 8)
            if not self._put_frame(end, rec, FR_PATH_RESPONSE, 0, 0, 0, data, 8):
                break
            _q_pop(q)
        if self._pending.once & OWE_PATH_CHALLENGE:
            challenge = self._path_challenge[0]
            self._pay(&self._pending.once, FR_PATH_CHALLENGE, end, rec, 0, 0, 0,
                      <const unsigned char*>PyBytes_AS_STRING(challenge), 8)
        return 0

    cdef int _write_datagrams(self, Py_ssize_t end, _Sent rec) except -1:
        cdef Py_ssize_t n
        while self._datagrams:
            dg_id, data = self._datagrams[0]
            n = PyBytes_GET_SIZE(data)
            if not self._put_frame(end, rec, FR_DATAGRAM, <uint64_t>n, dg_id, 0,
                                   <const unsigned char*>PyBytes_AS_STRING(data), n):
                break
            self._datagrams.popleft()
        return 0

    cdef int _write_stream_frames(self, Py_ssize_t end, _Sent rec) except -1:
        """Fill the packet from the streams with something to send, round robin."""
        cdef Buffer buf = self._sbuf
        cdef bint fin
        cdef Py_ssize_t rounds, header, avail, length
        cdef int64_t conn_credit
        cdef uint64_t sid, flow_limit, before, off
        cdef _Stream s
        cdef SendStream send
        cdef int n0
        queue = self._send_queue
        rounds = len(queue)
        while rounds > 0 and end - buf._pos > 24 and len(queue) > 0:
            rounds -= 1
            s = <_Stream>queue[0]
            sid = s.stream_id
            send = s.send
            # control frames of this stream (one that does not fit keeps the stream first);
            # each record carries the incarnation of the half it concerns
            if s.owed:
                n0 = rec.nrec
                if self._pay(&s.owed, FR_RESET_STREAM, end, rec, sid, s.reset_code,
                             send._final_size):
                    break
                if rec.nrec != n0:
                    _record_at(rec, rec.nrec - 1).gen = s.send_gen
                    n0 = rec.nrec
                if self._pay(&s.owed, FR_STOP_SENDING, end, rec, sid, s.stop_code):
                    break
                if rec.nrec != n0:
                    _record_at(rec, rec.nrec - 1).gen = s.recv_gen
                    n0 = rec.nrec
                if self._pay(&s.owed, FR_MAX_STREAM_DATA, end, rec, sid, s.recv._fw._limit):
                    break
                if rec.nrec != n0:
                    _record_at(rec, rec.nrec - 1).gen = s.recv_gen
            if send.has_pending_c():
                # stream credit (MAX_STREAMS): the first frame of an incarnation consumes one
                if send._offset_sent == 0 and not send._fin_sent and not s.counted:
                    if self._streams_counted >= self._peer_stream_credit:
                        if (self._streams_blocked_reported != <int64_t>self._peer_stream_credit
                                and self._put_frame(end, rec, FR_STREAMS_BLOCKED,
                                                    self._peer_stream_credit)):
                            self._streams_blocked_reported = self._peer_stream_credit
                        queue.popleft()
                        s.queued = False
                        if self._idle_halves:
                            self._end_idle_halves()
                        if not s.credit_wait:
                            # woken by MAX_STREAMS (_on_max_streams), oldest first
                            s.credit_wait = True
                            if self._credit_waiters is None:
                                self._credit_waiters = deque()
                            self._credit_waiters.append(s)
                        continue
                conn_credit = <int64_t>self._peer_max_data - <int64_t>self._data_sent
                if conn_credit < 0:
                    conn_credit = 0
                flow_limit = send._offset_sent + <uint64_t>conn_credit
                if s.send_limit < flow_limit:
                    flow_limit = s.send_limit
                if (not send._finished and not s.pinned and send._msg_remaining == 0
                        and self._pressure()):
                    # credit is wanted: the half ends with the messages it has (FIN with
                    # the last of them), not a round trip later
                    send.finish()
                header = 1 + _varint_len(sid) + _varint_len(send._offset_sent) + 2
                avail = end - buf._pos - header
                if avail > 0:
                    if avail > 16383:
                        avail -= 2  # a 4-byte Length field
                    before = send._offset_sent
                    if send.next_chunk_c(avail, flow_limit, &off, &length, &fin):
                        if not s.counted:
                            s.counted = True
                            self._streams_counted += 1
                            self._streams_waiting -= 1
                        c_push_stream_frame_header(buf, sid, off, length, fin)
                        if length:
                            buf.c_push_raw(send.data_at(off), length)
                        _add_record(rec, FR_STREAM, sid, off, length, fin, s.send_gen)
                        self._data_sent += send._offset_sent - before
                if send.has_pending_c() and end - buf._pos <= header + 1:
                    break  # packet full: keep this stream first for the next packet
                if (send.has_pending_c() and send._retx.count() == 0
                        and send._offset_sent >= flow_limit):
                    # flow-control blocked: tell the peer once per limit (RFC 9000 §4.1)
                    if (send._offset_sent >= s.send_limit
                            and s.blocked_reported != <int64_t>s.send_limit):
                        if self._put_frame(end, rec, FR_STREAM_DATA_BLOCKED, sid, s.send_limit):
                            s.blocked_reported = s.send_limit
                    elif (self._data_blocked_reported != <int64_t>self._peer_max_data
                            and self._data_sent >= self._peer_max_data
                            and self._put_frame(end, rec, FR_DATA_BLOCKED, self._peer_max_data)):
                        self._data_blocked_reported = self._peer_max_data
                    queue.popleft()
                    s.queued = False
                    continue
            queue.popleft()
            if send.has_pending_c():
                queue.append(s)  # round robin
            else:
                s.queued = False
                if not s.send_opened:
                    self._maybe_release(s)
        return 0


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
