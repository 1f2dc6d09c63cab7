# cython: language_level=3
"""Packet-number spaces and the record of what each sent packet carried (compiled).

Theory of operation
-------------------
A connection has two packet-number spaces (PROTOCOL.md §12.1): HANDSHAKE and APPLICATION. A
``_Space`` keeps what the receiving side of one needs for ACK frames (the packet numbers
received, as a ``RangeSet``; the largest and when it arrived; whether an ACK is owed and by
when), the next packet number to send, the largest of ours the peer acknowledged, and the
space's crypto stream halves. ``write_ack`` writes its ACK frame into a packet being built.

What a sent packet carried is recorded in the packet object itself: ``_Sent`` is a
``SentPacket`` (what ``Recovery`` tracks) with a small C array of typed frame records
(``FrameRecord``, kinds in the .pxd), more in a C array of its own when a packet carries many
frames, and the ACK frame it carried as two fields. When recovery declares a packet acknowledged
or lost the connection replays its records in packet order (``record_at``), then gives the
object back (``recycle``) to a free list shared by every connection (``new_sent`` takes from
it). ``_Sent.frames_for_trace`` is the one place records are read for a qlog trace.

The floor (RFC 9000 §13.2.4, PROTOCOL.md §13). A space remembers the packet numbers it
received from its floor F up, and treats every packet numbered below F as a duplicate. F only
rises, and every packet received below it was listed in an ACK frame of ours that the peer has
acknowledged, so the peer processed that ACK before it sent the acknowledgement: stream halves of
the peer that completed below F are resolved by it (PROTOCOL.md §16.7). An ACK frame lists every
range kept when it can (``ack_full``); when the peer acknowledges one, F rises to the largest
packet number it listed + 1, but no higher than a packet that arrived after that ACK was written
with a number it spanned (a *fill*, late: the ACK could not list it). Fills are kept, with the
sequence number of the next ACK at their arrival, until F passes them. Bounds: ``max_ranges``
ranges and FILLS_MAX fills; a packet that would exceed them is processed as if its stream
frames could not be accepted yet and is not acknowledged (its sender sends it again), so a peer
that never acknowledges our ACKs cannot grow this state.

Control frames owed to the peer are a ``Pending`` (a bit per frame owed once, small queues of
64-bit values: ``q_push``/``q_pop``); the frame writer that pays them off is
``dquic._packet``.

Nothing here knows the connection: it cimports this module, never the reverse.
"""
cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.string cimport memmove

from dquic._codec cimport Buffer
from dquic._ranges cimport RangeSet
from dquic._recovery cimport SentPacket
from dquic._streams cimport RecvStream, SendStream

__all__ = ["MAX_CRYPTO_BUFFER", "TRACE_NAMES", "FREE_SENT"]

MAX_CRYPTO_BUFFER = 16 * 1024

# An ACK frame lists at most this many ranges: the most a receiver decodes (ACK_RANGES_LIMIT)
cdef Py_ssize_t MAX_FRAME_RANGES = 256

#: Each frame kind's name in qlog traces, by FrameKind (wire types: FRAME_WIRE_TYPE in the .pxd)
TRACE_NAMES = ("stream", "crypto", "datagram", "handshake_done", "max_data", "max_streams",
               "max_stream_data", "reset_stream", "stop_sending", "new_connection_id",
               "retire_connection_id", "ping", "path_challenge", "path_response", "data_blocked",
               "stream_data_blocked", "streams_blocked")
cdef tuple _TRACE_NAMES = TRACE_NAMES

#: Recycled _Sent records (at most FREE_SENT_MAX), shared by every connection: a record is idle
#: between its recycling and its reuse, so it need not belong to a connection.
FREE_SENT = []
cdef list _FREE_SENT = FREE_SENT


@cython.no_gc  # holds only leaf objects (keys, buffers): no cycle can pass through it
cdef class _Space:
    """Per packet-number-space state: receive bookkeeping for ACKs, crypto stream halves.

    Only the handshake space starts with crypto streams (the application space makes its
    receiving half if a CRYPTO frame ever arrives in it); once a space is discarded its
    bookkeeping is released (``release``)."""

    def __init__(self, Py_ssize_t max_ranges, bint crypto=True):
        if max_ranges < 1:
            raise ValueError("max_ranges must be >= 1")
        self.rx = RangeSet()
        self.rx_floor = 0  # packet numbers below this are treated as duplicates
        self.max_ranges = max_ranges if max_ranges < MAX_FRAME_RANGES else MAX_FRAME_RANGES
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
        self.ack_hi_max = -1
        self.acks_written = 0
        self.fills = NULL
        self.nfills = 0
        self.fills_cap = 0

    def __dealloc__(self):
        PyMem_Free(self.fills)

    def release(self):
        """Drop what only a live space needs (after ``discarded`` is set): its received
        packet numbers and crypto streams. Nothing reads them once the space is discarded."""
        self.rx = None
        self.crypto_send = None
        self.crypto_recv = None
        PyMem_Free(self.fills)
        self.fills = NULL
        self.nfills = self.fills_cap = 0

    cdef int add_fill(self, int64_t pn) except -1:
        """Packet ``pn`` arrived after an ACK spanning its number was written (the caller
        checked there is room: space_can_record)."""
        cdef int cap
        cdef uint64_t* f
        if self.nfills == self.fills_cap:
            cap = 2 * self.fills_cap if self.fills_cap else 8
            f = <uint64_t*>PyMem_Realloc(self.fills, 2 * cap * sizeof(uint64_t))
            if f is NULL:
                raise MemoryError()
            self.fills = f
            self.fills_cap = cap
        self.fills[2 * self.nfills] = self.acks_written
        self.fills[2 * self.nfills + 1] = <uint64_t>pn
        self.nfills += 1
        return 0

    cdef int64_t raise_floor(self, _Sent rec) except -2:
        """The peer has the ACK of ``rec``, which listed every range we kept when it was
        written: every packet received from the floor to its largest was in it, except fills
        that arrived after it was written. The floor rises to the lowest of those, or past the
        ACK's largest; ranges and fills below it are forgotten. The new floor, or -1."""
        cdef int64_t floor = rec.ack_hi + 1, pn
        cdef int i, j
        for i in range(self.nfills):
            pn = <int64_t>self.fills[2 * i + 1]
            if self.fills[2 * i] > rec.ack_seq and pn < floor:
                floor = pn
        if floor <= self.rx_floor:
            return -1
        self.rx_floor = floor
        self.rx.subtract_range(0, <uint64_t>floor)
        j = 0
        for i in range(self.nfills):
            if <int64_t>self.fills[2 * i + 1] >= floor:
                self.fills[2 * j] = self.fills[2 * i]
                self.fills[2 * j + 1] = self.fills[2 * i + 1]
                j += 1
        self.nfills = j
        if j == 0 and self.fills_cap:
            PyMem_Free(self.fills)
            self.fills = NULL
            self.fills_cap = 0
        return floor


cdef inline int _vsize(uint64_t v) noexcept:
    return 1 if v < 64 else 2 if v < 16384 else 4 if v < 1073741824 else 8


cdef int write_ack(Buffer buf, _Space space, int space_id, double now, _Sent rec,
                   Py_ssize_t budget, int ack_delay_exponent, bint trace) except -1:
    """ACK frame of ``space`` from the received ranges, newest first (RFC 9000 §19.3): every
    range kept if they fit in ``budget`` bytes (and MAX_FRAME_RANGES), else as many of the newest
    as do; noted in ``rec`` (with the ranges for a trace when ``trace``). The space owes no ACK
    afterwards."""
    cdef RangeSet rx = space.rx
    cdef Py_ssize_t n = rx.count(), lowest, i, size
    cdef uint64_t prev_start, largest, delay_field, gap, length
    cdef double delay
    if n == 0:
        space.ack_pending = False  # (everything received is below the floor: nothing to list)
        space.ack_deadline = -1.0
        return 0
    delay = now - space.largest_rx_time
    if delay < 0.0:
        delay = 0.0
    largest = rx.stop_at(n - 1) - 1
    delay_field = (<uint64_t>(delay * 1e6)) >> ack_delay_exponent
    size = (1 + _vsize(largest) + _vsize(delay_field) + 2
            + _vsize(largest - rx.start_at(n - 1)))  # (a 2-byte range count at most)
    lowest = n - 1
    prev_start = rx.start_at(n - 1)
    i = n - 2
    while i >= 0 and n - i <= MAX_FRAME_RANGES:
        size += (_vsize(prev_start - rx.stop_at(i) - 1)
                 + _vsize(rx.stop_at(i) - 1 - rx.start_at(i)))
        if size > budget:
            break
        lowest = i
        prev_start = rx.start_at(i)
        i -= 1
    buf.c_push_uint(F_ACK, 1)
    buf.c_push_varint(largest)
    buf.c_push_varint(delay_field)
    buf.c_push_varint(<uint64_t>(n - 1 - lowest))
    buf.c_push_varint(largest - rx.start_at(n - 1))
    prev_start = rx.start_at(n - 1)
    i = n - 2
    while i >= lowest:
        buf.c_push_varint(prev_start - rx.stop_at(i) - 1)
        buf.c_push_varint(rx.stop_at(i) - 1 - rx.start_at(i))
        prev_start = rx.start_at(i)
        i -= 1
    rec.ack_space = space_id
    rec.ack_hi = <int64_t>largest
    rec.ack_seq = space.acks_written
    rec.ack_full = lowest == 0
    space.acks_written += 1
    if <int64_t>largest > space.ack_hi_max:
        space.ack_hi_max = <int64_t>largest
    if trace:
        # the ranges only a trace needs: kept on the record until the packet is reported
        rec.frames = {"frame_type": "ack", "ack_delay": round(delay * 1000.0, 3),
                      "acked_ranges": [[rx.start_at(i), rx.stop_at(i) - 1]
                                       if rx.stop_at(i) - 1 > rx.start_at(i)
                                       else [rx.start_at(i)] for i in range(lowest, n)]}
    space.ack_pending = False
    space.unacked_eliciting = 0
    space.ack_deadline = -1.0
    return 0


# --- a sent packet's frame records ----------------------------------------------------------
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
            # its ranges are known while the packet is being traced (write_ack)
            out.append(self.frames if type(self.frames) is dict else {"frame_type": "ack"})
        for i in range(self.nrec):
            out.append(_trace_frame(record_at(self, i)))
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
        return {"frame_type": "unknown", "frame_type_value": FRAME_WIRE_TYPE[kind]}
    return {"frame_type": name}


cdef FrameRecord* more_record(_Sent rec) except NULL:
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


cdef _Sent new_sent():
    """An empty sent-packet record: a recycled one if any."""
    cdef _Sent rec
    if _FREE_SENT:
        return <_Sent>_FREE_SENT.pop()
    rec = _Sent.__new__(_Sent)
    rec.nrec = 0
    rec.ack_space = -1
    rec.ack_full = False
    return rec


cdef void recycle(_Sent pkt):
    """Give a record back (recovery is done with it, or it was never sent)."""
    pkt.nrec = 0
    pkt.ack_space = -1
    pkt.ack_full = False
    if pkt.more_cap > MORE_RECORDS_KEPT:
        PyMem_Free(pkt.more)
        pkt.more = NULL
        pkt.more_cap = 0
    if len(_FREE_SENT) < FREE_SENT_MAX:
        _FREE_SENT.append(pkt)


# --- queues of owed frames ------------------------------------------------------------------
cdef int q_push(U64Queue* q, uint64_t v) except -1:
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


cdef void q_pop(U64Queue* q) noexcept:
    """Drop the oldest value (there is one); an emptied queue gives its storage back."""
    q.n -= 1
    if q.n:
        memmove(q.items, q.items + 1, q.n * sizeof(uint64_t))
    else:
        q_clear(q)


cdef void q_clear(U64Queue* q) noexcept:
    PyMem_Free(q.items)
    q.items = NULL
    q.n = 0
    q.cap = 0


cdef list q_list(U64Queue* q):
    return [q.items[i] for i in range(q.n)]
