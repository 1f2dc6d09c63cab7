# C-level layout of dquic._streamset: one connection's streams (see _streamset.pyx).
cimport cython
from cpython.exc cimport PyErr_Clear, PyErr_Occurred
from cpython.ref cimport PyObject
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

from dquic._codec cimport Buffer
from dquic._recovery cimport RttEstimator
from dquic._spaces cimport OWE_RESET_STREAM, _Sent, _Space
from dquic._streams cimport FlowWindow, RecvStream, SendStream, contiguous_end_c


@cython.final
cdef class _Stream:
    # Laid out by use (a stream a message means each step finds its stream cold in the cache):
    # what nearly every step reads first, the flags as bytes, then the lifecycle numbers.
    cdef public uint64_t stream_id
    cdef public SendStream send
    cdef public RecvStream recv
    cdef public uint8_t readable_signalled
    cdef public uint8_t readable_listed  # in StreamSet.readable
    cdef public uint8_t in_table         # the stream table's entry for stream_id
    cdef public uint8_t send_opened
    cdef public uint8_t recv_opened
    cdef public uint8_t queued
    cdef public uint8_t closed_counted   # the peer's half was read to its end (credit given)
    cdef public uint8_t counted          # our half consumed one of the peer's MAX_STREAMS credits
    # lifecycle (PROTOCOL.md §16.7): each half has incarnations, numbered by *_gen
    cdef public uint8_t pinned           # a byte stream: never finished automatically
    cdef public uint8_t credit_wait      # in StreamSet.credit_waiters
    cdef public uint8_t busy             # a message came while our half was ending (see end_now)
    cdef public uint8_t recv_done        # the peer's half is complete (all bytes and FIN, or reset)
    cdef int32_t tab_slot                # the stream table's index slot of its entry (in_table)
    cdef public uint32_t owed            # 1 << FR_x for each frame owed: RESET_STREAM,
                                         # STOP_SENDING, MAX_STREAM_DATA
    cdef public uint32_t send_gen
    cdef public uint32_t recv_gen
    cdef public uint32_t idle_gen        # its send_gen when listed in idle_halves
    cdef public uint64_t send_limit
    cdef public int64_t recv_c           # the largest packet number received when it completed
    cdef public int64_t recv_w           # its watermark once resolved, else -1
    cdef public int64_t recv_min_pn      # peer frames for this half below this may be older
    cdef public int64_t send_min_pn      # peer control frames for our half below this are old
    cdef public int64_t recv_next_hi     # the largest packet number that carried a frame of it
    cdef public int64_t blocked_reported
    cdef public double idle_since        # when it was listed in StreamSet.idle_halves, or -1
    cdef public SendStream send_next     # messages written after our half was closed
    cdef public RecvStream recv_next     # the next incarnation, while this one is still read
    cdef public uint64_t reset_code      # the error code of the RESET_STREAM owed
    cdef public uint64_t stop_code       # the error code of the STOP_SENDING owed

    cdef void start(self, uint64_t stream_id, uint64_t send_limit) noexcept


# One entry of a connection's stream table, in the order the ids were added
cdef struct StreamEntry:
    uint64_t sid
    PyObject* obj                                # a _Stream (owned), NULL once removed


# One item of a Ring: an object (owned) and what it is listed with
cdef struct RingItem:
    PyObject* obj
    uint64_t a
    uint64_t b
    uint64_t c
    double t


# A first-in first-out queue of objects with C fields, no tuple per item and no Python call per
# operation: the stream set's lists of streams (send round robin, finished halves, ...).
@cython.final
cdef class Ring:
    cdef RingItem* items
    cdef Py_ssize_t head
    cdef readonly Py_ssize_t n
    cdef Py_ssize_t cap                          # a power of two (0 before the first push)

    cdef int push(self, object obj, uint64_t a=*, uint64_t b=*, uint64_t c=*, double t=*) except -1
    cdef void drop(self) noexcept                # remove the first item

    cdef inline RingItem* first(self) noexcept:
        return &self.items[self.head]

    cdef inline RingItem* at(self, Py_ssize_t i) noexcept:
        return &self.items[(self.head + i) & (self.cap - 1)]


# The stream table of one connection and everything about its streams: their lifecycle
# (PROTOCOL.md §16.7), stream and connection flow control, stream credit, the round robin of
# streams with something to send, and the STREAM-related frames both ways.
@cython.final
cdef class Pool:
    cdef PyObject** items                         # owned references, the last one taken first
    cdef readonly Py_ssize_t n
    cdef Py_ssize_t cap

    cdef int put(self, object obj) except -1
    cdef object take(self)                        # an object nothing else refers to, or None


@cython.final
cdef class StreamSet:
    # the stream table: stream id -> _Stream (``streams`` is a read-only mapping view of it),
    # a hash index (open addressing, linear probing) into entries kept in insertion order
    cdef StreamEntry* tab_entries
    cdef int32_t* tab_index                      # TAB_EMPTY, TAB_DUMMY or an entry's position
    cdef Py_ssize_t tab_used                     # entries taken, removed ones included
    cdef Py_ssize_t tab_live                     # entries not removed
    cdef Py_ssize_t tab_usable                   # entries allocated
    cdef uint64_t tab_missed                     # an id just looked up and not found ...
    cdef bint tab_miss_valid                     # ... while this holds (a put ends it)
    cdef int64_t tab_miss_slot                   # ... and a free slot on its probe path (-1: unknown)
    cdef uint64_t tab_mask                       # index slots - 1 (a power of two minus one)
    cdef PyObject* last                          # one-entry cache in front of the table: a _Stream
                                                 # in it (borrowed: tab_del clears it), or NULL
    cdef public Ring send_queue                  # streams with something to send (None: empty)
    cdef public list events                      # the connection's event list (shared)
    cdef public _Space app                       # the application space (largest_rx)
    cdef public RttEstimator rtt                 # the connection's (flow-control window tuning)
    cdef public double now                       # the time of the call being processed
    cdef public bint noted                       # something was scheduled: the driver should build output
    cdef public uint32_t owed                    # OWE_MAX_DATA / OWE_MAX_STREAMS owed to the peer
    # connection flow control (RFC 9000 §4)
    cdef public FlowWindow recv_window
    cdef public uint64_t data_received           # sum of highest offsets received
    cdef public uint64_t peer_max_data
    cdef public uint64_t data_sent               # sum of highest offsets sent (connection credit used)
    cdef public int64_t data_blocked_reported
    cdef public uint64_t send_buffered           # bytes written to our halves, not yet acknowledged
    cdef public long long stream_bytes_received
    cdef public uint64_t window_max              # a new receive half's window: up to this ...
    cdef public uint64_t window_initial          # ... starting here
    cdef public uint64_t peer_stream_limit       # the peer's initial MAX_STREAM_DATA for our halves
    # stream credit (MAX_STREAMS)
    cdef public uint64_t peer_stream_credit
    cdef public uint64_t peer_streams_window     # the peer's initial MAX_STREAMS
    cdef public uint64_t peer_opened
    cdef public uint64_t max_streams_local
    cdef uint64_t streams_announced              # the MAX_STREAMS value last written
    cdef uint64_t credit_batch                   # credit this far above it is announced at once
    cdef bint credit_lazy                        # credit not announced yet: it goes with the next
                                                 # packet sent (give_credit)
    cdef public int64_t streams_blocked_reported
    cdef public uint64_t streams_counted
    cdef public int64_t streams_waiting          # our live halves not yet opened (no credit yet)
    cdef public Ring credit_waiters              # streams waiting for stream credit
    # lifecycle (PROTOCOL.md §16.7)
    cdef public Ring idle_halves                 # _Stream, t when listed: our halves all acknowledged, oldest first
    cdef public Ring finished                    # _Stream, a = recv_gen: peer halves read to their end
    cdef public Py_ssize_t finished_max          # how many of them are always remembered
    cdef public int64_t credit_owed              # stream credits held back until one resolves
    cdef public int64_t unresolved               # finished peer halves not yet resolved
    cdef public Ring tomb                        # _Stream, a = recv_gen, b = recv_c: complete peer halves
                                                 # awaiting resolution, in completion order (None: none)
    cdef public int64_t tomb_hi                  # the largest recv_c pushed on it
    cdef public int64_t stale_below              # frames for halves without state below: old
    cdef public int64_t rx_pn                    # packet number of the 1-RTT packet being processed
    cdef public bint refuse                      # ... which cannot be recorded: no stream frame may act
    cdef public bint message_events              # a MessageReceived per stream that becomes readable;
    cdef public bint readable_noted              # ... else only this flag (CoreConnection.move_events)
    cdef public bint applying                    # its stream frames are being applied ...
    cdef public bint trim_due                    # ... and trim_finished waits for the end of it
    cdef public uint32_t gen_seq                 # last incarnation number given to a stream half
    # released stream state kept for reuse (bounded; emptied when the connection goes quiet):
    # an entry is taken only when nothing else refers to it
    cdef Pool stream_pool                        # _Stream
    cdef Pool send_pool                          # SendStream
    cdef Pool recv_pool                          # RecvStream
    cdef readonly list readable                  # streams that became readable (a superset of
                                                 # the readable ones: readable_streams prunes it)
    cdef public dict lost_streams                # pn -> ((sid, gen, offset, length, fin), ...) of 1-RTT packets declared lost
    cdef public list lost_streams_pns            # their packet numbers, ascending

    cdef bint stream_open_blocked(self, object stream_id) except -1
    cdef object send_message(self, object stream_id, object data)
    cdef int end_stream(self, object stream_id) except -1
    cdef int reset_stream(self, object stream_id, object error_code) except -1
    cdef int stop_sending(self, object stream_id, object error_code) except -1
    cdef list readable_streams(self)
    cdef bint any_readable(self)
    cdef int signal_readable(self, _Stream s) except -1
    cdef int prune_readable(self) except -1
    cdef object read_message(self, object stream_id, Py_ssize_t max_bytes)
    cdef object take_piece(self, _Stream s, Py_ssize_t max_bytes, bint* end)
    cdef tuple read_messages(self, list order, Py_ssize_t budget, dict out)
    cdef tuple pull_messages(self, list out, Py_ssize_t budget, Py_ssize_t piece, object wanted,
                             bint first_free)
    cdef int on_consumed(self, _Stream s, uint64_t consumed) except -1
    cdef _Stream lookup(self, uint64_t stream_id)
    cdef _Stream find(self, uint64_t stream_id)
    cdef _Stream find_key(self, object key)
    cdef int tab_put(self, uint64_t stream_id, _Stream s) except -1
    cdef int tab_del(self, _Stream s) except -1
    cdef int tab_resize(self, Py_ssize_t live) except -1
    cdef list stream_list(self)
    cdef _Stream new_stream(self, uint64_t stream_id, bint local=*)
    cdef SendStream new_send(self, uint64_t stream_id)
    cdef RecvStream new_recv(self, uint64_t stream_id)
    cdef int pool_send(self, SendStream x) except -1
    cdef int pool_recv(self, RecvStream r) except -1
    cdef int drop_pools(self) except -1
    cdef _Stream local_stream(self, object stream_id)
    cdef SendStream writable_half(self, _Stream s)
    cdef int send_complete(self, _Stream s) except -1
    cdef int after_ack(self, _Stream s) except -1
    cdef bint pressure(self)
    cdef bint end_now(self, _Stream s)
    cdef int drop_stale_idle(self) except -1
    cdef int end_idle_halves(self, double now=*, double span=*) except -1
    cdef int maybe_release(self, _Stream s) except -1
    cdef void schedule(self, _Stream s)
    cdef int check_recv_closed(self, _Stream s) except -1
    cdef int give_credit(self, uint64_t n) except -1
    cdef int drop_unread(self, _Stream s, uint64_t code) except -1
    cdef int trim_finished(self) except -1
    cdef int forget_recv(self, _Stream s) except -1
    cdef int recv_complete(self, _Stream s) except -1
    cdef int floor_moved(self, int64_t floor) except -1

    cdef inline void credit_announced(self) noexcept:
        # a MAX_STREAMS frame with the current limit was written (the packet builder)
        self.credit_lazy = False
        self.streams_announced = self.max_streams_local

    cdef inline int64_t largest_seen(self) noexcept:
        # the largest 1-RTT packet number received, the one being processed included
        return self.app.largest_rx if self.app.largest_rx > self.rx_pn else self.rx_pn
    cdef int open_recv(self, _Stream s, int64_t min_pn) except -1
    cdef _Stream route(self, uint64_t stream_id, uint64_t end, bint* nxt)
    cdef int forget_resolved(self) except -1
    cdef bint ambiguous(self, uint64_t stream_id) except -1
    cdef int late_acks(self, list ranges) except -1
    cdef int on_stream(self, uint64_t stream_id, uint64_t offset, const uint8_t* data,
                    Py_ssize_t length, bint fin, int frame_type) except -1
    cdef int on_control_frame(self, object frame, double now) except -1
    cdef int on_reset_stream(self, object frame, double now) except -1
    cdef int on_stop_sending(self, object frame) except -1
    cdef int on_max_data(self, object frame) except -1
    cdef int on_max_stream_data(self, object frame) except -1
    cdef int on_max_streams(self, object frame) except -1
    cdef int on_streams_blocked(self, object frame) except -1
    cdef int requeue_blocked(self) except -1
    cdef int on_data_blocked(self, object frame) except -1
    cdef int on_stream_data_blocked(self, object frame) except -1
    cdef int write_frames(self, Buffer buf, Py_ssize_t end, _Sent rec) except -1


cdef inline RecvStream live_half(_Stream s, bint nxt):
    """The receive half a peer frame ``StreamSet.route`` found ``s`` for is about (the next
    incarnation's when ``nxt``), or None when there is none or it was reset: the frame then
    changes nothing."""
    cdef RecvStream r
    if s is None:
        return None
    r = s.recv_next if nxt else s.recv
    return None if r._reset else r


cdef inline uint64_t held(SendStream x) noexcept:
    """Bytes a send half holds: written and not yet acknowledged as a prefix."""
    return 0 if x._reset else x.write_offset - x._base


cdef inline bint data_complete(RecvStream r) noexcept:
    """Every byte of the peer's half and its end arrived (or it was reset)."""
    return r._reset or (r.final_size >= 0 and contiguous_end_c(r) >= <uint64_t>r.final_size)


cdef inline bint recv_closed(RecvStream r) noexcept:
    """The peer's half is over: reset, or FIN received and everything read."""
    return r._reset or (r.final_size >= 0 and r.read_offset == <uint64_t>r.final_size)


cdef extern from "Python.h":
    # declared without an error check: exact_id looks at the error itself
    unsigned long long _long_as_u64 "PyLong_AsUnsignedLongLong"(object) noexcept


cdef inline bint exact_id(object key, uint64_t* out) noexcept:
    """``key`` is an ``int`` (not a subclass) in 0..2**62-1: its value in ``out``. The check
    an application's stream id takes on every call, without a Python comparison."""
    cdef unsigned long long v
    if type(key) is not int:
        return False
    v = _long_as_u64(key)
    if v == <unsigned long long>-1 and PyErr_Occurred():
        PyErr_Clear()  # negative or beyond 64 bits
        return False
    if v > ((<unsigned long long>1) << 62) - 1:
        return False
    out[0] = <uint64_t>v
    return True
