# C-level layout of dquic._spaces: packet-number spaces and the record of what each sent
# packet carried (see _spaces.pyx). The connection cimports it; nothing here knows the connection.
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from dquic._codec cimport Buffer
from dquic._ranges cimport RangeSet
from dquic._recovery cimport SentPacket
from dquic._streams cimport RecvStream, SendStream


# What a sent packet carried: one record per frame that its acknowledgement or loss acts on,
# in packet order. `kind` names the frame; a, b, c are its integer fields in wire order, and a
# field the frame does not have carries what the connection needs to act (a datagram's id, a
# crypto frame's packet-number space).
cdef enum FrameKind:
    FR_STREAM = 0                  # a stream id, b offset, c length, fin
    FR_CRYPTO = 1                  # a offset, b length, c space
    FR_DATAGRAM = 2                # a length, b datagram id
    FR_HANDSHAKE_DONE = 3
    FR_MAX_DATA = 4                # a maximum
    FR_MAX_STREAMS = 5             # a maximum
    FR_MAX_STREAM_DATA = 6         # a stream id, b maximum
    FR_RESET_STREAM = 7            # a stream id, b error code, c final size
    FR_STOP_SENDING = 8            # a stream id, b error code
    FR_NEW_CONNECTION_ID = 9       # a sequence, b retire prior to, c connection ID length
    FR_RETIRE_CONNECTION_ID = 10   # a sequence
    # frames written but not recorded: nothing happens when they are acknowledged or lost
    FR_UNRECORDED = 11
    FR_PING = 11
    FR_PATH_CHALLENGE = 12
    FR_PATH_RESPONSE = 13
    FR_DATA_BLOCKED = 14           # a limit
    FR_STREAM_DATA_BLOCKED = 15    # a stream id, b limit
    FR_STREAMS_BLOCKED = 16        # a limit
    FR_KINDS = 17

# Each frame kind's wire type and how many of its record's fields (a, b, c) follow the type as
# varints (the writer: _packet.put_frame; names for traces: _spaces.TRACE_NAMES).
cdef extern from *:
    """
    #if defined(__GNUC__)
    #define DQUIC_MAYBE_UNUSED __attribute__((unused))
    #else
    #define DQUIC_MAYBE_UNUSED
    #endif
    static const unsigned char dquic_frame_wire_type[17] DQUIC_MAYBE_UNUSED = {
        0x08, 0x06, 0x31, 0x1E, 0x10, 0x12, 0x11, 0x04, 0x05, 0x18, 0x19,
        0x01, 0x1A, 0x1B, 0x14, 0x15, 0x16};
    static const unsigned char dquic_frame_wire_fields[17] DQUIC_MAYBE_UNUSED = {
        3, 2, 1, 0, 1, 1, 2, 3, 2, 3, 1,
        0, 0, 0, 1, 2, 1};
    """
    const unsigned char FRAME_WIRE_TYPE "dquic_frame_wire_type"[17]
    const unsigned char FRAME_WIRE_FIELDS "dquic_frame_wire_fields"[17]

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
    # Sender.build_app_packet)
    OWE_CONTROL = OWE_HANDSHAKE_DONE | OWE_MAX_DATA | OWE_MAX_STREAMS | OWE_PATH_CHALLENGE

cdef enum:
    SP_HS = 0
    SP_APP = 1
    # frame records a sent packet holds inline (_Sent.recs), and how many more it may keep
    # room for while it waits to be reused
    INLINE_RECORDS = 8
    MORE_RECORDS_KEPT = 32
    # recycled sent-packet records kept (for all connections)
    FREE_SENT_MAX = 4096
    # frame type of ACK (RFC 9000 §19.3)
    F_ACK = 0x02


cdef struct FrameRecord:
    uint64_t a
    uint64_t b
    uint64_t c
    uint8_t kind
    uint8_t fin
    uint32_t gen                   # stream frames: the incarnation of the half (_Stream)


# A FIFO of 64-bit values: storage made on first use and given back once emptied.
cdef struct U64Queue:
    uint64_t* items
    uint32_t n
    uint32_t cap


# Control frames the connection owes its peer (a stream's own are in _Stream.owed, those about
# connection IDs in _cids.CidState, PATH_CHALLENGE/RESPONSE in _paths.PathState). Loss of a
# recorded frame puts it back here; the frame writers pay it off (_packet.pay, put_frame).
cdef struct Pending:
    uint32_t once                  # 1 << FR_x for each frame owed once: HANDSHAKE_DONE,
                                   # MAX_DATA, MAX_STREAMS, PING


cdef class _Space:
    cdef public RangeSet rx              # packet numbers received from rx_floor up
    cdef public int64_t rx_floor         # the floor: see _spaces.pyx
    cdef public Py_ssize_t max_ranges    # the most ranges rx keeps (a packet needing more waits)
    cdef public int64_t largest_rx
    cdef public double largest_rx_time
    cdef public bint ack_pending
    cdef public int unacked_eliciting
    cdef public double ack_deadline      # < 0: no ACK deadline armed
    cdef public int64_t next_pn
    cdef public SendStream crypto_send
    cdef public RecvStream crypto_recv
    cdef public bint discarded
    cdef public int64_t largest_acked
    cdef public int64_t ack_hi_max       # the largest packet number listed by an ACK written
    cdef public uint64_t acks_written    # ACK frames written (their sequence numbers)
    cdef uint64_t* fills                 # late packets: pairs (acks_written at arrival, number)
    cdef public int nfills
    cdef int fills_cap

    cdef int add_fill(self, int64_t pn) except -1
    cdef int64_t raise_floor(self, _Sent rec) except -2


# A sent packet with its frame records: the first ones in a small C array, any more in a
# C array of its own, and the ACK it carried as two fields. Instances are recycled (recycle)
# once recovery hands them back.
cdef class _Sent(SentPacket):
    cdef int nrec                        # records written
    cdef FrameRecord recs[8]             # the first INLINE_RECORDS of them
    cdef FrameRecord* more               # the rest (made on first need, kept for reuse)
    cdef int more_cap
    cdef int ack_space                   # -1: no ACK frame
    cdef int64_t ack_hi                  # the largest packet number it listed
    cdef uint64_t ack_seq                # its sequence number in its space (acks_written)
    cdef bint ack_full                   # it listed every range its space kept


cdef FrameRecord* more_record(_Sent rec) except NULL
cdef _Sent new_sent()
cdef void recycle(_Sent pkt)

cdef enum:
    FILLS_MAX = 64                 # late packets a space remembers (see _spaces.pyx)
cdef int write_ack(Buffer buf, _Space space, int space_id, double now, _Sent rec,
                   Py_ssize_t budget, int ack_delay_exponent, bint trace) except -1

cdef int q_push(U64Queue* q, uint64_t v) except -1
cdef void q_pop(U64Queue* q) noexcept
cdef void q_clear(U64Queue* q) noexcept
cdef list q_list(U64Queue* q)


cdef inline int add_record(_Sent rec, int kind, uint64_t a, uint64_t b, uint64_t c,
                           bint fin, uint32_t gen=0) except -1:
    cdef FrameRecord* r
    if rec.nrec < INLINE_RECORDS:
        r = &rec.recs[rec.nrec]
    else:
        r = more_record(rec)
    r.kind = <uint8_t>kind
    r.a = a
    r.b = b
    r.c = c
    r.fin = fin
    r.gen = gen
    rec.nrec += 1
    return 0


cdef inline FrameRecord* record_at(_Sent pkt, int i) noexcept:
    if i < INLINE_RECORDS:
        return &pkt.recs[i]
    return &pkt.more[i - INLINE_RECORDS]


# ACK bookkeeping of a space, inline: run for every packet received
cdef inline bint space_can_record(_Space self, int64_t pn) noexcept:
    """May packet ``pn`` (at or above the floor, not received before) be recorded? Not when it
    would take the space past its bounds (``max_ranges`` ranges, FILLS_MAX late packets): it is
    then processed as one whose stream frames cannot be accepted yet, and not acknowledged."""
    cdef RangeSet rx = self.rx
    cdef Py_ssize_t n = rx.count()
    if pn <= self.ack_hi_max and self.nfills >= FILLS_MAX:
        return False
    if n < self.max_ranges:
        return True
    # a packet next to a range kept extends it (or joins two) and adds none
    return (<uint64_t>pn == rx.stop_at(n - 1) or (pn > 0 and rx.contains(<uint64_t>pn - 1))
            or rx.contains(<uint64_t>pn + 1))


cdef inline int space_received(_Space self, int64_t pn, bint eliciting, bint immediate, double now,
                               int threshold, double max_ack_delay) except -1:
    """ACK bookkeeping for a packet processed (RFC 9000 §13.2): ``pn`` is remembered for
    our ACK frames (a late one, below what an ACK already listed, also as a fill), and an
    ack-eliciting one arms the ACK deadline: at once when ``immediate`` (the handshake space),
    out of order, or after ``threshold`` of them; else after ``max_ack_delay``."""
    cdef bint out_of_order = pn != self.largest_rx + 1
    self.rx.add_range(<uint64_t>pn, <uint64_t>pn + 1)
    if pn <= self.ack_hi_max:
        self.add_fill(pn)
    if pn > self.largest_rx:
        self.largest_rx = pn
        self.largest_rx_time = now
    if eliciting:
        self.ack_pending = True
        self.unacked_eliciting += 1
        if immediate or out_of_order or self.unacked_eliciting >= threshold:
            self.ack_deadline = now
        elif self.ack_deadline < 0.0:
            self.ack_deadline = now + max_ack_delay
    return 0


cdef inline int64_t space_ack_acked(_Space self, _Sent rec) except -2:
    """The peer acknowledged a packet of ours carrying an ACK frame of this space: the floor
    may rise (RFC 9000 §13.2.4; see _spaces.pyx). The new floor, or -1 if it stays."""
    if not rec.ack_full or rec.ack_hi < self.rx_floor:
        return -1
    return self.raise_floor(rec)
