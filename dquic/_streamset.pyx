# cython: language_level=3
"""The streams of one connection (compiled).

Theory of operation
-------------------
A ``StreamSet`` is a connection's stream table (``streams``: stream id -> ``_Stream``, both halves
of one id with their flow-control state) and everything that concerns streams: the round robin
of streams with something to send (``send_queue``, ``write_frames`` fills a packet from it),
connection-level flow control (``recv_window``, the peer's MAX_DATA), stream credit
(MAX_STREAMS both ways: ``peer_stream_credit`` for our halves, ``max_streams_local`` for the
peer's), and the lifecycle of halves (PROTOCOL.md §16.7).

Stream ids are never "closed" for good: each half has incarnations, numbered across the
connection (``gen_seq``), and a half whose messages were all acknowledged ends by itself (a FIN)
once its credit is wanted or after a quiet period (``idle_halves``), so an application may use
any id at any time. A peer half read to its end gives its credit back; it is remembered among
the newest ``max_streams`` finished ones until it is resolved (``resolve``: the peer acknowledged
an ACK of ours that covered every packet carrying its frames), after which a frame for that id
in a later packet is the next incarnation's, and one in an earlier packet a late copy
(``route``, ``ambiguous``; ``_DropPacket`` when a frame cannot be told yet).

The connection forwards what concerns streams: the application's commands (``send_message``,
``read_messages``, ...), STREAM, RESET_STREAM, STOP_SENDING, MAX_DATA, MAX_STREAM_DATA,
MAX_STREAMS and the BLOCKED frames, and the acknowledgement or loss of the stream frames it
sent. What the stream table needs of the connection is given at construction: the event list
(shared), the application space (its largest packet number received) and the RTT estimator
(window auto-tuning). It never calls the connection: ``noted`` tells it that a stream was
scheduled (the connection then asks its driver to build output), ``owed`` which of MAX_DATA and
MAX_STREAMS the connection's packets must carry.

What a stream costs
-------------------
With one message on each of many ids, every message opens and releases stream state on both
sides, so that state is made without Python containers on the way: the stream table is a hash
index (open addressing, a per-process keyed hash: peers choose the ids) over entries kept in the
order the ids were added (the order every walk over the streams takes, as with a dict); the
lists of streams (send round robin, finished and idle halves, halves awaiting resolution,
credit waiters) are ``Ring`` queues of objects with C fields; a released ``_Stream`` and its
halves wait in bounded pools and are renewed for the next id when nothing else refers to them
(``Py_REFCNT``), so a stale entry in a list can never see its object change identity; and
``readable_streams`` walks the streams that became readable, not the table. All of it is given
back when the connection goes quiet (``drop_pools``).
"""
cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_REFCNT, PyObject
from libc.string cimport memset
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

from dquic._codec cimport Buffer
from dquic._events cimport message_received
from dquic._frames cimport c_push_stream_frame_header
from dquic._packet cimport pay, put_frame
from dquic._recovery cimport RttEstimator
from dquic._spaces cimport (FR_DATA_BLOCKED, FR_MAX_STREAM_DATA, FR_RESET_STREAM, FR_STOP_SENDING,
                            FR_STREAM, FR_STREAM_DATA_BLOCKED, FR_STREAMS_BLOCKED, OWE_MAX_DATA,
                            OWE_MAX_STREAM_DATA, OWE_MAX_STREAMS, OWE_RESET_STREAM,
                            OWE_STOP_SENDING, _Sent, _Space, add_record, record_at)
from dquic._streams cimport (FlowWindow, RecvStream, SendStream, contiguous_end_c, message_ready_c,
                             peek_prefix_c)
from dquic._wire cimport varint_len as _varint_len, varint_prefixed_payload_len as _payload_len

import os
from bisect import bisect_left
from collections.abc import Mapping

from dquic.errors import ErrorCode, ProtocolError
from dquic.events import StopSendingReceived, StreamReset

__all__ = ["StreamSet", "MAX_STREAM_ID"]

MAX_STREAM_ID = (1 << 62) - 1

# The stream table's index: an empty slot, a slot whose entry was removed, else the entry's
# position. Peers choose stream ids: the hash is keyed per process, so they cannot aim at slots.
cdef enum:
    TAB_EMPTY = -1
    TAB_DUMMY = -2
cdef uint64_t MAX_ID = MAX_STREAM_ID
cdef uint64_t _TAB_KEY = int.from_bytes(os.urandom(8), "little")


cdef inline uint64_t _tab_hash(uint64_t x) noexcept:
    # a 64-bit finalizer (every input bit moves every output bit) over the keyed id
    x ^= _TAB_KEY
    x ^= x >> 30
    x *= <uint64_t>0xbf58476d1ce4e5b9
    x ^= x >> 27
    x *= <uint64_t>0x94d049bb133111eb
    x ^= x >> 31
    return x

cdef object _FLOW_CONTROL_ERROR = ErrorCode.FLOW_CONTROL_ERROR
# The half of a stream id not in use (the peer's half of an id only we send on, and ours of an
# id only the peer sends on): one shared empty placeholder, never written to; the half's first
# use replaces it (writable_half, open_recv)
cdef SendStream _NO_SEND = SendStream(0, 0)
cdef RecvStream _NO_RECV = RecvStream(0, 0)
# Released streams and halves kept for reuse per connection, at most (each pool): a connection
# that opens and releases one stream per message reuses them instead of allocating anew
cdef Py_ssize_t POOL_MAX = 1024


class _DropPacket(Exception):
    """A frame whose stream incarnation cannot be told yet (PROTOCOL.md §16.7): the packet is
    treated as never received, so its sender sends its frames again."""


@cython.no_gc  # holds only leaf objects (keys, buffers): no cycle can pass through it
cdef class _Stream:
    """Both halves of one stream id plus their flow-control state."""

    cdef void start(self, uint64_t stream_id, uint64_t send_limit) noexcept:
        """Every field but the halves as for a stream id just seen (a new object or a
        released one taken again, StreamSet.new_stream)."""
        self.stream_id = stream_id
        self.send_limit = send_limit  # peer's MAX_STREAM_DATA for our half
        self.readable_signalled = self.readable_listed = False
        self.send_opened = self.recv_opened = False
        self.owed = 0  # frames owed to the peer (OWE_RESET_STREAM, ...), with their codes:
        self.reset_code = self.stop_code = 0
        self.blocked_reported = -1
        self.queued = self.closed_counted = self.pinned = self.credit_wait = False
        self.busy = False
        self.counted = False  # our half consumed one of the peer's MAX_STREAMS credits
        self.idle_gen = self.send_gen = self.recv_gen = 0
        self.send_next = self.recv_next = None
        self.send_min_pn = self.recv_min_pn = self.recv_next_hi = 0
        self.recv_done = False
        self.recv_w = self.recv_c = -1
        self.idle_since = -1.0


cdef class Ring:
    """A first-in first-out queue of objects, each with C fields (``a``, ``b``, ``c``, ``t``):
    the stream set's lists of streams. Iterating gives ``(obj, a, b, c, t)`` (tests)."""

    def __dealloc__(self):
        cdef Py_ssize_t i
        for i in range(self.n):
            Py_DECREF(<object>self.at(i).obj)
        PyMem_Free(self.items)

    def __len__(self):
        return self.n

    def __iter__(self):
        cdef RingItem* it
        out = []
        for i in range(self.n):
            it = self.at(i)
            out.append((<object>it.obj, it.a, it.b, it.c, it.t))
        return iter(out)

    cdef int push(self, object obj, uint64_t a=0, uint64_t b=0, uint64_t c=0,
                  double t=0.0) except -1:
        cdef Py_ssize_t cap, i
        cdef RingItem* items
        cdef RingItem* it
        if self.n == self.cap:
            cap = 8 if self.cap == 0 else self.cap * 2
            items = <RingItem*>PyMem_Malloc(cap * sizeof(RingItem))
            if items is NULL:
                raise MemoryError()
            for i in range(self.n):
                items[i] = self.at(i)[0]
            PyMem_Free(self.items)
            self.items = items
            self.head = 0
            self.cap = cap
        it = self.at(self.n)
        Py_INCREF(obj)
        it.obj = <PyObject*>obj
        it.a = a
        it.b = b
        it.c = c
        it.t = t
        self.n += 1
        return 0

    cdef void drop(self) noexcept:
        cdef PyObject* obj = self.items[self.head].obj
        self.head = (self.head + 1) & (self.cap - 1)
        self.n -= 1
        Py_DECREF(<object>obj)


cdef class Pool:
    """Released objects kept for reuse, last in first out (the most recently used comes back
    first, while it is likely still in the cache), in a C array that grows by doubling and
    does not shrink: a pool that a busy connection fills and empties by hundreds per step
    does no reallocation (a list did, each time it crossed half its allocation). Bounded
    by the caller (``POOL_MAX``)."""

    def __dealloc__(self):
        cdef Py_ssize_t i
        for i in range(self.n):
            Py_DECREF(<object>self.items[i])
        PyMem_Free(self.items)

    def __len__(self):
        return self.n

    cdef int put(self, object obj) except -1:
        cdef Py_ssize_t cap
        cdef PyObject** items
        if self.n == self.cap:
            cap = 16 if self.cap == 0 else self.cap * 2
            items = <PyObject**>PyMem_Realloc(self.items, cap * sizeof(PyObject*))
            if items is NULL:
                raise MemoryError()
            self.items = items
            self.cap = cap
        Py_INCREF(obj)
        self.items[self.n] = <PyObject*>obj
        self.n += 1
        return 0

    cdef object take(self):
        """The most recent entry that nothing else refers to (so nobody can see it reused),
        or None; entries taken out on the way, referred to elsewhere, are let go."""
        cdef PyObject* p
        while self.n:
            self.n -= 1
            p = self.items[self.n]
            if Py_REFCNT(<object>p) == 1:
                obj = <object>p  # (a new reference; the pool's is given up below)
                Py_DECREF(obj)
                return obj
            Py_DECREF(<object>p)
        return None


cdef class StreamSet:
    """The streams of one connection (see the module docstring)."""

    def __init__(self, config, list events, _Space app, RttEstimator rtt):
        self.events = events
        self.app = app
        self.rtt = rtt
        self.now = 0.0
        self.noted = False
        self.owed = 0
        self.window_max = config.max_stream_data_window
        self.window_initial = config.initial_max_stream_data
        self.stream_bytes_received = 0
        self.lost_streams = None  # made on the first lost 1-RTT packet with stream data
        self.lost_streams_pns = None
        self.last = NULL
        self.tab_miss_slot = -1
        # streams with something to send, round robin (a Ring; None while empty)
        self.send_queue = None
        self.peer_max_data = 0
        self.peer_stream_limit = 0  # initial MAX_STREAM_DATA for our halves
        self.data_sent = 0  # sum of highest offsets sent, all streams (connection credit used)
        self.data_blocked_reported = -1
        self.recv_window = FlowWindow(config.initial_max_data, config.max_data_window)
        self.data_received = 0  # sum of highest offsets received
        self.peer_stream_credit = 0  # MAX_STREAMS from the peer
        self.peer_streams_window = 0
        self.peer_opened = 0  # stream ids the peer started sending on
        self.max_streams_local = config.max_streams  # what we allow the peer (cumulative)
        self.streams_announced = config.max_streams
        self.credit_batch = max(1, config.max_streams // 8)
        self.credit_lazy = False
        self.streams_blocked_reported = -1
        self.streams_counted = 0
        self.streams_waiting = 0
        self.credit_waiters = None
        self.idle_halves = None
        self.send_buffered = 0
        # the peer's halves read to their end, oldest first: the newest max_streams stay known,
        # older resolved ones are forgotten (PROTOCOL.md §16.7; a Ring, None while empty)
        self.finished = None
        self.finished_max = config.max_streams
        self.credit_owed = 0
        self.unresolved = 0
        self.tomb = None
        self.tomb_hi = -1
        self.stale_below = 0
        self.rx_pn = 0
        self.refuse = self.applying = self.trim_due = False
        self.gen_seq = 0
        # (lists made on first use: an idle connection keeps none)
        self.stream_pool = self.send_pool = self.recv_pool = None
        self.readable = None
        self.message_events = True
        self.readable_noted = False


    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.tab_entries is not NULL:
            for i in range(self.tab_used):
                if self.tab_entries[i].obj is not NULL:
                    Py_DECREF(<object>self.tab_entries[i].obj)
            PyMem_Free(self.tab_entries)
        PyMem_Free(self.tab_index)

    @property
    def last_stream(self):
        """The stream the last lookup found (the cache in front of the table), or None."""
        return None if self.last is NULL else <_Stream>self.last

    @property
    def streams(self):
        """The stream table as a read-only mapping (stream id -> its state), for tests, tools
        and the connection's rare walks over all streams."""
        return StreamView(self)

    # ------------------------------------------------------------------ the stream table
    cdef _Stream find(self, uint64_t stream_id):
        """The state of ``stream_id``, or None."""
        cdef uint64_t i
        cdef int32_t ix
        cdef int64_t free = -1
        cdef PyObject* last = self.last
        if last is not NULL and (<_Stream>last).stream_id == stream_id:
            return <_Stream>last
        if self.tab_index is NULL or (self.tab_miss_valid and self.tab_missed == stream_id):
            return None
        i = _tab_hash(stream_id) & self.tab_mask
        while True:
            ix = self.tab_index[i]
            if ix == TAB_EMPTY:
                # an id is often looked up twice in a row before it is added (a new stream:
                # the check before a frame is processed and the frame's own lookup), and then
                # added where the probe found room (tab_put)
                self.tab_missed = stream_id
                self.tab_miss_valid = True
                self.tab_miss_slot = <int64_t>i if free < 0 else free
                return None
            if ix >= 0:
                if self.tab_entries[ix].sid == stream_id:
                    # an id is mostly looked up several times in a row (a frame's check and
                    # its action, a read and the next one): the next lookup needs no probe
                    last = self.tab_entries[ix].obj
                    self.last = last
                    return <_Stream>last
            elif free < 0:
                free = <int64_t>i  # (a removed entry's slot)
            i = (i + 1) & self.tab_mask

    cdef _Stream find_key(self, object key):
        """``find`` for a key given by the application (anything: not an id is not found)."""
        cdef uint64_t v
        if exact_id(key, &v):
            return self.find(v)
        if type(key) is int or not isinstance(key, int) or key < 0 or key > MAX_STREAM_ID:
            return None
        return self.find(<uint64_t>key)

    cdef int tab_put(self, uint64_t stream_id, _Stream s) except -1:
        """Add ``stream_id`` (not in the table) with its state."""
        cdef uint64_t i
        cdef Py_ssize_t ix
        if self.tab_used >= self.tab_usable:
            self.tab_resize(self.tab_live + 1)
        if self.tab_miss_valid and self.tab_missed == stream_id and self.tab_miss_slot >= 0:
            i = <uint64_t>self.tab_miss_slot  # (the lookup that missed it found room)
        else:
            i = _tab_hash(stream_id) & self.tab_mask
            while self.tab_index[i] >= 0:
                i = (i + 1) & self.tab_mask
        ix = self.tab_used
        self.tab_index[i] = <int32_t>ix
        self.tab_entries[ix].sid = stream_id
        self.tab_miss_valid = False
        s.in_table = True
        s.tab_slot = <int32_t>i
        Py_INCREF(s)
        self.tab_entries[ix].obj = <PyObject*>s
        self.tab_used += 1
        self.tab_live += 1
        return 0

    cdef int tab_del(self, _Stream s) except -1:
        """Remove ``s`` (in the table) by the index slot it was put in (no probe)."""
        cdef int32_t i = s.tab_slot
        cdef int32_t ix = self.tab_index[i]
        cdef PyObject* obj = self.tab_entries[ix].obj
        self.tab_index[i] = TAB_DUMMY
        self.tab_entries[ix].obj = NULL
        s.in_table = False
        if self.last is obj:
            self.last = NULL
        # the id is not in the table now, and its old slot on its probe path is free
        self.tab_missed = s.stream_id
        self.tab_miss_valid = True
        self.tab_miss_slot = i
        self.tab_live -= 1
        # (the entry's place is not taken again before a rebuild: index slots of removed
        # entries are never more than the entries taken, so probing always meets an empty one)
        Py_DECREF(<object>obj)
        return 0

    cdef int tab_resize(self, Py_ssize_t live) except -1:
        """Rebuild the table for ``live`` entries and as many more (removed ones dropped,
        order kept): it grows with the streams and shrinks after them."""
        cdef Py_ssize_t size = 8, usable, i, n = 0
        cdef uint64_t j, mask
        cdef StreamEntry* entries
        cdef int32_t* index
        while size < live * 4:  # usable = half the slots >= 2 * live
            size *= 2
        usable = size // 2
        mask = <uint64_t>(size - 1)
        entries = <StreamEntry*>PyMem_Malloc(usable * sizeof(StreamEntry))
        index = <int32_t*>PyMem_Malloc(size * sizeof(int32_t))
        if entries is NULL or index is NULL:
            PyMem_Free(entries)
            PyMem_Free(index)
            raise MemoryError()
        memset(index, 0xff, size * sizeof(int32_t))  # TAB_EMPTY everywhere
        for i in range(self.tab_used):
            if self.tab_entries[i].obj is NULL:
                continue
            entries[n] = self.tab_entries[i]
            j = _tab_hash(entries[n].sid) & mask
            while index[j] >= 0:
                j = (j + 1) & mask
            index[j] = <int32_t>n
            (<_Stream>entries[n].obj).tab_slot = <int32_t>j
            n += 1
        PyMem_Free(self.tab_entries)
        PyMem_Free(self.tab_index)
        self.tab_entries = entries
        self.tab_index = index
        self.tab_used = n
        self.tab_usable = usable
        self.tab_mask = mask
        self.tab_miss_slot = -1  # (the slots moved)
        return 0

    def _table_state(self):
        """Check the stream table's invariants (AssertionError if one fails) and return its
        sizes: ``(live, used, usable, slots)`` (tests)."""
        cdef Py_ssize_t i, live = 0, dummies = 0, filled = 0
        cdef uint64_t j
        for i in range(self.tab_used):
            if self.tab_entries[i].obj is not NULL:
                live += 1
                sid = self.tab_entries[i].sid
                assert (<_Stream>self.tab_entries[i].obj).stream_id == sid, sid
                assert self.tab_index[(<_Stream>self.tab_entries[i].obj).tab_slot] == i, sid
                assert self.find(sid) is <object>self.tab_entries[i].obj, sid
        assert live == self.tab_live, (live, self.tab_live)
        # the caches in front of the table: a stream in it; an id not in it, with a free slot
        assert self.last is NULL or (<_Stream>self.last).in_table
        if self.tab_miss_valid and self.tab_index is not NULL:
            for i in range(self.tab_used):
                assert (self.tab_entries[i].obj is NULL
                        or self.tab_entries[i].sid != self.tab_missed), self.tab_missed
            if self.tab_miss_slot >= 0:
                assert self.tab_index[self.tab_miss_slot] < 0, self.tab_miss_slot
        if self.tab_index is not NULL:
            for j in range(self.tab_mask + 1):
                if self.tab_index[j] == TAB_DUMMY:
                    dummies += 1
                elif self.tab_index[j] >= 0:
                    filled += 1
                    assert self.tab_index[j] < self.tab_used
                    assert self.tab_entries[self.tab_index[j]].obj is not NULL
            assert filled == live, (filled, live)
            assert filled + dummies <= self.tab_used <= self.tab_usable < self.tab_mask + 1
        return (self.tab_live, self.tab_used, self.tab_usable,
                0 if self.tab_index is NULL else self.tab_mask + 1)

    cdef list stream_list(self):
        """The streams' states, in the order their ids were added (a copy: the table may
        change while it is walked)."""
        cdef Py_ssize_t i
        out = []
        for i in range(self.tab_used):
            if self.tab_entries[i].obj is not NULL:
                out.append(<object>self.tab_entries[i].obj)
        return out

    # ------------------------------------------------------------------ application commands
    cdef bint stream_open_blocked(self, object stream_id) except -1:
        """``CoreConnection.stream_open_blocked`` (its docstring)."""
        cdef _Stream s = self.find_key(stream_id)
        if s is not None:
            if s.send_next is not None or (s.send_opened and not (s.send._finished or s.send._reset)):
                return False
        if self.pressure():
            # credit is wanted: halves that only wait for more messages end now
            self.end_idle_halves()
            return True
        return False

    cdef object send_message(self, object stream_id, object data):
        """``CoreConnection.send_message`` (its docstring)."""
        cdef _Stream stream = self.local_stream(stream_id)
        cdef SendStream half = self.writable_half(stream)
        cdef uint64_t h0 = held(half)
        cdef Py_ssize_t n = half.write_message_c(data)
        self.send_buffered += held(half) - h0
        stream.idle_since = -1.0  # its entry in idle_halves, if any, no longer applies
        if half is stream.send:
            self.schedule(stream)
        return _payload_len(n)

    cdef int end_stream(self, object stream_id) except -1:
        """``CoreConnection.end_stream`` (its docstring)."""
        cdef _Stream stream = self.local_stream(stream_id)
        cdef SendStream half = self.writable_half(stream)
        half.finish()
        if half is stream.send:
            self.schedule(stream)
        return 0

    cdef int reset_stream(self, object stream_id, object error_code) except -1:
        """``CoreConnection.reset_stream`` (its docstring)."""
        cdef _Stream stream = self.local_stream(stream_id)
        cdef SendStream send = stream.send
        if stream.send_next is not None:
            # messages queued behind an ending incarnation: that one never opened
            self.send_buffered -= held(stream.send_next)
            stream.send_next = None
            self.streams_waiting -= 1
        elif stream.send_opened and not send._reset and not send.is_finished:
            self.send_buffered -= held(send)
            send.reset(error_code)
            if stream.counted:
                stream.owed |= OWE_RESET_STREAM
                stream.reset_code = error_code
                self.schedule(stream)
            else:
                self.streams_waiting -= 1
                self.send_complete(stream)
        self.maybe_release(stream)
        return 0

    cdef int stop_sending(self, object stream_id, object error_code) except -1:
        """``CoreConnection.stop_sending`` (its docstring)."""
        cdef _Stream stream = self.local_stream(stream_id)
        cdef RecvStream r = stream.recv
        if stream.recv_opened and not stream.closed_counted and not r._reset:
            r.stop()
            stream.readable_signalled = False
            if data_complete(r):
                # every byte arrived: the peer's half may be complete on its side (then it
                # sends no RESET_STREAM); what is unread is dropped here, no frame is needed
                self.drop_unread(stream, error_code)
                return 0
        stream.stop_code = error_code
        stream.owed |= OWE_STOP_SENDING
        self.schedule(stream)
        return 0

    cdef list readable_streams(self):
        """``CoreConnection.readable_streams`` (its docstring)."""
        cdef list listed = self.readable
        cdef list kept
        cdef Py_ssize_t i, n
        cdef _Stream s
        out = []
        if listed is None:
            return out
        n = len(listed)
        kept = []
        for i in range(n):
            s = <_Stream>listed[i]
            # readable_signalled is cleared by every way a half stops being readable (the
            # reads, a reset, stop_sending, its release), so the flag alone tells, without
            # touching the half, its ranges and its buffer (cold by now: a stream a message)
            if s.readable_signalled:
                out.append(s.stream_id)
                kept.append(s)
            else:
                s.readable_listed = False
        self.readable = kept if kept else None
        return out

    cdef bint any_readable(self):
        """``CoreConnection.any_readable`` (its docstring)."""
        cdef list listed = self.readable
        cdef Py_ssize_t i
        if listed is None:
            return False
        for i in range(len(listed)):
            if (<_Stream>listed[i]).readable_signalled:  # (see readable_streams)
                return True
        return False

    cdef int signal_readable(self, _Stream s) except -1:
        """The peer's half of ``s`` became readable: MessageReceived (or ``readable_noted``
        where the connection's ``message_events`` is off), and ``s`` is listed for
        ``readable_streams`` (which walks only the streams listed, not the whole table)."""
        s.readable_signalled = True
        if self.message_events:
            self.events.append(message_received(s.stream_id))
        else:
            self.readable_noted = True  # (a driver's endpoint: one flag, however many streams)
        if not s.readable_listed:
            s.readable_listed = True
            if self.readable is None:
                self.readable = []
            elif len(self.readable) > 2 * self.tab_live + 16:
                # a driver that reads on MessageReceived may never call readable_streams:
                # the list is pruned here too, so it stays within the streams' number
                self.prune_readable()
                if self.readable is None:
                    self.readable = []
            self.readable.append(s)
        return 0

    cdef int prune_readable(self) except -1:
        """Unlist the streams no longer readable (or no longer in the table)."""
        cdef list kept = []
        cdef _Stream s
        for obj in self.readable:
            s = <_Stream>obj
            if s.in_table and message_ready_c(s.recv, 1):
                kept.append(s)
            else:
                s.readable_listed = False
        self.readable = kept if kept else None
        return 0

    cdef object read_message(self, object stream_id, Py_ssize_t max_bytes):
        """``CoreConnection.read_message`` (its docstring)."""
        cdef _Stream s = self.find_key(stream_id)
        cdef bint end = False
        if s is None or (max_bytes > 0 and not message_ready_c(s.recv, 1)):
            return None  # (what RecvStream.read_message would answer, without calling it)
        data = self.take_piece(s, max_bytes, &end)
        return None if data is None else (data, end)

    cdef object take_piece(self, _Stream s, Py_ssize_t max_bytes, bint* end):
        """Read a piece of the peer's half of ``s`` (``RecvStream.read_piece_c``), then give
        back what it consumed (flow control, and the half's end) and clear the readable flag
        once nothing more is readable; the piece, or None."""
        cdef RecvStream r = s.recv
        cdef uint64_t before = r.read_offset
        data = r.read_piece_c(max_bytes, end)
        if r.read_offset != before:
            self.on_consumed(s, r.read_offset - before)
        if data is not None and not message_ready_c(s.recv, 1):
            s.readable_signalled = False
        return data

    cdef tuple read_messages(self, list order, Py_ssize_t budget, dict out):
        """``CoreConnection.read_messages`` (its docstring)."""
        cdef Py_ssize_t i, n = len(order)
        cdef _Stream s
        cdef bint end
        cdef object last = -1
        for i in range(n):
            if budget <= 0:
                return i, budget, last
            sid = order[i]
            s = self.find_key(sid)
            if s is None:
                return i, budget, last
            if not message_ready_c(s.recv, budget):
                return i, budget, last
            data = self.take_piece(s, budget, &end)
            if data is None:
                return i, budget, last
            out[sid] = data
            budget -= len(data)
            last = sid
        return n, budget, last

    cdef tuple pull_messages(self, list out, Py_ssize_t budget, Py_ssize_t piece,
                             object wanted, bint first_free):
        """``CoreConnection.pull_messages`` (its docstring)."""
        cdef list listed = self.readable
        cdef list rest = None
        cdef Py_ssize_t i, n, moved = 0
        cdef _Stream s
        cdef RecvStream r
        cdef uint64_t length, avail
        cdef int size
        cdef bint held = False, want, pending = False, end
        if listed is None:
            return 0, None, False, False
        self.readable = None  # streams still readable are listed again below, in order
        n = len(listed)
        for i in range(n):
            s = <_Stream>listed[i]
            r = s.recv
            s.readable_listed = False
            if not message_ready_c(r, 1):
                continue  # (as readable_streams: no longer readable, or released)
            want = wanted is not None and s.stream_id in wanted
            while True:
                # the next message, whole and at most ``piece`` long? (the read head is at a
                # message boundary: the caller stages no piece of this stream)
                if r._msg_total >= 0 or not peek_prefix_c(r, &length, &size):
                    break
                avail = contiguous_end_c(r) - r.read_offset - <uint64_t>size
                if length > <uint64_t>piece or avail < length:
                    break
                if budget <= 0 and not want and (out or not first_free):
                    held = True
                    break
                data = self.take_piece(s, piece, &end)
                out.append((s.stream_id, data))
                moved += len(data)
                budget -= len(data)
                # (reading a half to its end brings in the next incarnation, if one arrived)
                r = s.recv
            if message_ready_c(r, 1):
                # held back by the budget, or the start of a message: left listed. The caller
                # takes pieces (``rest``) only of a message that cannot complete here: longer
                # than ``piece``, or than the stream's flow-control window lets arrive before
                # some of it is read (a shorter one just waits for its other packets)
                if not held or want:
                    if (r._msg_total < 0 and peek_prefix_c(r, &length, &size)
                            and length <= <uint64_t>piece
                            and r.window._limit >= r.read_offset + <uint64_t>size + length):
                        pending = True
                    else:
                        if rest is None:
                            rest = []
                        rest.append(s.stream_id)
                if not s.readable_listed:  # (the next incarnation may have listed it already)
                    s.readable_listed = True
                    if self.readable is None:
                        self.readable = []
                    self.readable.append(s)
            else:
                s.readable_signalled = False
        return moved, rest, held, pending

    cdef int on_consumed(self, _Stream s, uint64_t consumed) except -1:
        cdef double rtt = self.rtt.smoothed_rtt
        cdef RecvStream r = s.recv
        # RecvStream.should_update_window(): no credit once the final size is known
        if not (r._reset or r._stopped or r.final_size >= 0) and r.window.should_update_c():
            r.window.update_c(self.now, rtt)
            s.owed |= OWE_MAX_STREAM_DATA
            self.schedule(s)
        self.recv_window.consumed_c(consumed)
        if self.recv_window.should_update_c():
            self.recv_window.update_c(self.now, rtt)
            self.owed |= OWE_MAX_DATA
            self.noted = True
        self.check_recv_closed(s)
        return 0

    cdef _Stream lookup(self, uint64_t stream_id):
        return self.find(stream_id)  # (which keeps what it found for the next lookup)

    cdef _Stream new_stream(self, uint64_t stream_id, bint local=True):
        """State for a new id: made by us (``local``: our half is the one about to be used)
        or by a peer frame (its half). The other half is a shared empty placeholder until used.
        A released stream object nothing else refers to is reused (``stream_pool``)."""
        cdef _Stream s = None
        cdef SendStream x
        cdef RecvStream r
        if self.stream_pool is not None:
            obj = self.stream_pool.take()
            if obj is not None:
                s = <_Stream>obj
        if s is None:
            s = _Stream.__new__(_Stream)
            s.send = _NO_SEND
            s.recv = _NO_RECV
        s.start(stream_id, self.peer_stream_limit)
        # a reused stream's halves are complete: the one this id needs is renewed in place
        # when nothing else refers to it (else taken from its pool), the other goes to its
        # pool (no local refers to a pooled half: it could not be taken again at once)
        if local:
            x = s.send
            if x is not _NO_SEND and Py_REFCNT(x) == 2:  # (s and x)
                x.renew_c(stream_id)
            else:
                x = None
                self.pool_send(s.send)
                s.send = _NO_SEND
                s.send = self.new_send(stream_id)
            self.pool_recv(s.recv)
            s.recv = _NO_RECV
        else:
            r = s.recv
            if r is not _NO_RECV and Py_REFCNT(r) == 2:
                r.renew_c(stream_id, self.window_max, self.window_initial)
            else:
                r = None
                self.pool_recv(s.recv)
                s.recv = _NO_RECV
                s.recv = self.new_recv(stream_id)
            self.pool_send(s.send)
            s.send = _NO_SEND
        self.tab_put(stream_id, s)
        self.last = <PyObject*>s
        return s

    cdef SendStream new_send(self, uint64_t stream_id):
        """A new, empty send half (unbounded here: drivers apply back-pressure), reused from
        ``send_pool`` when one there is referred to by nothing else."""
        cdef SendStream x
        if self.send_pool is not None:
            obj = self.send_pool.take()
            if obj is not None:
                x = <SendStream>obj
                x.renew_c(stream_id)
                return x
        return SendStream(stream_id, 0)

    cdef RecvStream new_recv(self, uint64_t stream_id):
        """A new receive half with this connection's window, reused like ``new_send``."""
        cdef RecvStream r
        if self.recv_pool is not None:
            obj = self.recv_pool.take()
            if obj is not None:
                r = <RecvStream>obj
                r.renew_c(stream_id, self.window_max, self.window_initial)
                return r
        return RecvStream(stream_id, self.window_max, self.window_initial)

    cdef int pool_send(self, SendStream x) except -1:
        """A send half that is complete (everything acknowledged, or reset) and replaced."""
        if x is _NO_SEND:
            return 0
        if self.send_pool is None:
            self.send_pool = Pool()
        if self.send_pool.n < POOL_MAX:
            x.shed_c()
            self.send_pool.put(x)
        return 0

    cdef int pool_recv(self, RecvStream r) except -1:
        """A receive half read to its end (or reset) and replaced."""
        if r is _NO_RECV:
            return 0
        if self.recv_pool is None:
            self.recv_pool = Pool()
        if self.recv_pool.n < POOL_MAX:
            r.shed_c()
            self.recv_pool.put(r)
        return 0

    cdef int drop_pools(self) except -1:
        """The connection went quiet: what waits for reuse is given back, and the stream table
        shrinks to what it holds."""
        self.stream_pool = self.send_pool = self.recv_pool = None
        if self.send_queue is not None and self.send_queue.n == 0:
            self.send_queue = None
        if self.readable is not None:
            self.prune_readable()
        if self.tab_live == 0:
            # no stream: no table
            PyMem_Free(self.tab_entries)
            PyMem_Free(self.tab_index)
            self.tab_entries = NULL
            self.tab_index = NULL
            self.tab_used = self.tab_usable = 0
            self.tab_mask = 0
        elif self.tab_usable > 8 and self.tab_live * 4 < self.tab_usable:
            self.tab_resize(self.tab_live)
        return 0

    cdef _Stream local_stream(self, object stream_id):
        cdef uint64_t v
        cdef _Stream s
        if exact_id(stream_id, &v):  # (the common case: one conversion, no Python comparison)
            s = self.find(v)
            return s if s is not None else self.new_stream(v)
        s = self.find_key(stream_id)
        if s is not None:
            return s
        if not isinstance(stream_id, int) or isinstance(stream_id, bool):
            raise TypeError("stream id must be an int")
        if not 0 <= stream_id <= MAX_STREAM_ID:
            raise ValueError("stream id must be 0 <= id < 2**62")
        return self.new_stream(stream_id)

    cdef SendStream writable_half(self, _Stream s):
        """The send half a new message of ``s`` goes to: the live incarnation, a new one if
        none is live, or the next one while the live one is ending (PROTOCOL.md §16.7)."""
        cdef SendStream x = s.send
        if not s.send_opened:
            if x is _NO_SEND or x.write_offset or x._finished or x._reset:
                x = None  # the old half may be reused at once: nothing may refer to it
                self.pool_send(s.send)
                s.send = _NO_SEND
                x = self.new_send(s.stream_id)
                s.send = x
                s.blocked_reported = -1
                s.send_limit = self.peer_stream_limit
            # incarnations are numbered across the connection: records of one whose stream
            # object was released never match a later one
            self.gen_seq += 1
            s.send_gen = self.gen_seq
            s.send_opened = True
            s.counted = False
            self.streams_waiting += 1
            if self.idle_halves is not None and self.pressure():
                self.end_idle_halves()
            return x
        if x._finished or x._reset:
            if s.send_next is None:
                s.busy = True  # its next halves end only when credit is wanted
                s.send_next = self.new_send(s.stream_id)
                self.streams_waiting += 1
            return s.send_next
        return x

    cdef int send_complete(self, _Stream s) except -1:
        """Our live half needs nothing more (its bytes and FIN, or its RESET_STREAM, were
        acknowledged; or it ended before the peer saw it): the next incarnation goes live, or
        the half goes idle. Control frames of the peer in packets numbered below
        ``send_min_pn`` concern an earlier incarnation."""
        cdef SendStream nxt = s.send_next
        s.send_min_pn = self.largest_seen() + 1
        s.owed &= ~OWE_RESET_STREAM
        if nxt is not None:
            s.send_next = None
            self.pool_send(s.send)
            s.send = nxt
            self.gen_seq += 1
            s.send_gen = self.gen_seq
            s.counted = False  # already among the waiting halves since send_next was made
            s.blocked_reported = -1
            s.send_limit = self.peer_stream_limit
            self.schedule(s)
        else:
            s.send_opened = False
            self.maybe_release(s)
        return 0

    cdef int after_ack(self, _Stream s) except -1:
        """After an acknowledgement for our live half: a message half with every byte
        acknowledged and nothing queued ends (FIN); a half whose FIN and bytes are all
        acknowledged is complete."""
        cdef SendStream x = s.send
        if x._reset or not s.send_opened:
            return 0
        if x._finished:
            if x.fin_acked and x._base == x.write_offset:
                self.send_complete(s)
        elif (x._base == x.write_offset and x.write_offset != 0 and x._msg_remaining == 0
                and not s.pinned):
            # every message acknowledged: the half may end. It does at once if its credit is
            # wanted, else when it is (end_idle_halves) or after a quiet period; until then a
            # new message continues it without a round trip
            if self.end_now(s):
                x.finish()
                self.schedule(s)
            elif s.idle_since < 0.0:
                s.idle_since = self.now
                s.idle_gen = s.send_gen
                if self.idle_halves is None:
                    self.idle_halves = Ring()
                self.idle_halves.push(s, 0, 0, 0, self.now)
        return 0

    cdef bint pressure(self):
        """Every stream credit the peer gave is taken by our halves, open or waiting."""
        return (<int64_t>self.streams_counted + self.streams_waiting
                >= <int64_t>self.peer_stream_credit)

    cdef bint end_now(self, _Stream s):
        """Does our half of ``s``, whose messages are all written, end now (PROTOCOL.md §16.7)?
        Yes when every stream credit of the peer is taken by our halves, open or waiting; and
        already when half of the peer's window (its initial MAX_STREAMS) is, unless a message
        for this id came while one of its halves was ending (the id is in use: ending each
        half would make every message wait a round trip for the one before): a half that
        ends with its messages needs no frame of its own and gives its credit back a round
        trip sooner."""
        cdef int64_t taken = <int64_t>self.streams_counted + self.streams_waiting
        if not s.busy:
            taken += <int64_t>(self.peer_streams_window // 2)
        return taken >= <int64_t>self.peer_stream_credit

    cdef int drop_stale_idle(self) except -1:
        """Forget the oldest listings of halves that took messages since (a half in use is
        listed again each time its messages are all acknowledged): the idle timer then waits
        for a half really idle, not for a stale listing."""
        cdef Ring q = self.idle_halves
        cdef RingItem* it
        while q is not None and q.n:
            it = q.first()
            if (<_Stream>it.obj).idle_since == it.t:
                return 0
            q.drop()
        self.idle_halves = None
        return 0

    cdef int end_idle_halves(self, double now=-1.0, double span=0.0) except -1:
        """End (FIN) our halves whose messages were all acknowledged (all of them, or with
        ``now`` those idle for 3 PTO: the deadline of TIMER_STREAM_IDLE) and that took nothing
        since: their credit comes back once the
        peer has the FIN. Ending them only after 3 PTO of quiet (or at once when their credit
        is wanted) lets a stream used back and forth keep one incarnation."""
        cdef _Stream s
        cdef SendStream x
        cdef double since
        cdef Ring q = self.idle_halves
        while q is not None and q.n:
            since = q.first().t
            if now >= 0.0 and since + span > now:
                return 0
            s = <_Stream>q.first().obj
            q.drop()
            x = s.send
            if s.idle_since != since:
                continue  # it took messages since (and may be listed again, later)
            s.idle_since = -1.0
            if (s.send_gen == s.idle_gen and s.send_opened and not x._finished and not x._reset
                    and x._base == x.write_offset and x._msg_remaining == 0):
                x.finish()
                self.schedule(s)
        self.idle_halves = None
        return 0

    cdef int maybe_release(self, _Stream s) except -1:
        """Drop the state of a stream both of whose halves are idle."""
        if (not s.send_opened and s.send_next is None and not s.recv_opened and not s.owed
                and not s.queued and not s.pinned and not s.credit_wait
                and s.in_table):
            self.tab_del(s)
            if self.stream_pool is None:
                self.stream_pool = Pool()
            if self.stream_pool.n < POOL_MAX:
                s.send.shed_c()
                self.stream_pool.put(s)
        return 0

    cdef void schedule(self, _Stream s):
        if not s.queued:
            s.queued = True
            if self.send_queue is None:
                self.send_queue = Ring()
            self.send_queue.push(s)
        self.noted = True

    cdef int check_recv_closed(self, _Stream s) except -1:
        """Once the peer's half of ``s`` was read to its end (or reset): its credit goes back
        and the next incarnation, if one arrived meanwhile, takes its place; else the half is
        remembered among the newest ``max_streams`` finished ones (PROTOCOL.md §16.7). The
        credit of a half finished while more than ``max_streams`` finished halves are still
        unresolved is held back until one resolves: what a peer opens and finishes costs
        bounded memory even if it never acknowledges anything."""
        cdef int64_t w
        if not s.recv_opened or s.closed_counted or not recv_closed(s.recv):
            return 0
        s.closed_counted = True
        if s.recv_next is not None:
            # the next incarnation opened (and was counted) once this one was resolved
            w = s.recv_w
            self.pool_recv(s.recv)
            s.recv = s.recv_next
            s.recv_next = None
            self.gen_seq += 1
            s.recv_gen = self.gen_seq
            s.recv_done = False
            s.recv_w = -1
            s.recv_min_pn = w
            s.closed_counted = False
            s.readable_signalled = False
            self.give_credit(1)
            if data_complete(s.recv):
                self.recv_complete(s)
            if message_ready_c(s.recv, 1):
                self.signal_readable(s)
            return self.check_recv_closed(s)
        if self.finished is None:
            self.finished = Ring()
        self.finished.push(s, s.recv_gen)
        if s.recv_w < 0:
            self.unresolved += 1
            if self.unresolved > self.finished_max:
                self.credit_owed += 1
            else:
                self.give_credit(1)
        else:
            self.give_credit(1)
        self.trim_finished()
        return 0

    cdef int give_credit(self, uint64_t n) except -1:
        """Raise the peer's stream limit by ``n``. MAX_STREAMS goes out at once when the peer
        has opened every half the limit it knows allows (it may be waiting), or when an eighth
        of ``max_streams`` has come back since the last one; else the new limit goes with the
        next packet this side sends (an ACK at the latest), so that credit given back a message
        at a time comes back in batches, not in a packet for each (PROTOCOL.md §16.7)."""
        self.max_streams_local += n
        if (self.max_streams_local - self.streams_announced >= self.credit_batch
                or self.peer_opened >= self.streams_announced):
            self.owed |= OWE_MAX_STREAMS
            self.noted = True
        else:
            self.credit_lazy = True
        return 0

    cdef int drop_unread(self, _Stream s, uint64_t code) except -1:
        """The application stopped reading a half whose bytes all arrived: it ends here as if
        reset; its unread bytes count as consumed for connection flow control."""
        cdef RecvStream r = s.recv
        cdef uint64_t unread = <uint64_t>r.final_size - r.read_offset
        r.reset(code, r.final_size)
        s.readable_signalled = False
        s.owed &= ~OWE_STOP_SENDING
        if unread:
            self.recv_window.consumed_c(unread)
            if self.recv_window.should_update_c():
                self.recv_window.update_c(self.now, self.rtt.smoothed_rtt)
                self.owed |= OWE_MAX_DATA
                self.noted = True
        if not s.recv_done:
            self.recv_complete(s)
        self.check_recv_closed(s)
        return 0

    cdef int trim_finished(self) except -1:
        """Forget the oldest finished peer halves beyond the newest ``max_streams``, as far as
        they are resolved (an unresolved one stops the walk: its credit may be held back)."""
        cdef _Stream s
        cdef Ring q = self.finished
        if self.applying:
            self.trim_due = True  # (after the packet's stream frames: see _receive)
            return 0
        self.trim_due = False
        while q is not None and q.n > self.finished_max:
            s = <_Stream>q.first().obj
            if (s.recv_gen == q.first().a and s.recv_opened and s.closed_counted
                    and s.in_table):
                if s.recv_w < 0:
                    break
                q.drop()
                if not s.pinned:
                    self.forget_recv(s)
            else:
                q.drop()  # reopened or released since
        if q is not None and q.n == 0:
            self.finished = None
        return 0

    cdef int forget_recv(self, _Stream s) except -1:
        """Drop a finished and resolved peer half. Frames for an id without a live half in
        packets numbered below ``_stale_below`` may be late ones of a forgotten incarnation."""
        if s.recv_w > self.stale_below:
            self.stale_below = s.recv_w
        s.recv_opened = False
        s.closed_counted = False
        s.recv_done = False
        s.recv_w = -1
        s.readable_signalled = False
        self.pool_recv(s.recv)
        s.recv = _NO_RECV  # the next incarnation gets a new one
        self.maybe_release(s)
        return 0

    cdef int recv_complete(self, _Stream s) except -1:
        """Every byte of the peer's half and its end arrived: from now on a frame for this id
        is a late copy or the next incarnation's, told apart once the half is resolved (once
        the floor of our application space passes ``recv_c``: every packet that carried a frame
        of it was listed in an ACK of ours the peer has acknowledged)."""
        s.recv_done = True
        s.recv_c = self.largest_seen()
        if s.recv_c < self.app.rx_floor:
            # completed outside a packet (the application stopped reading) with every packet
            # received already below the floor: resolved at once (the peer's packets numbered
            # from recv_c up were sent after it had all of them acknowledged)
            s.recv_w = s.recv_c
            return 0
        if self.tomb is None:
            self.tomb = Ring()
        self.tomb.push(s, s.recv_gen, <uint64_t>s.recv_c)
        if s.recv_c > self.tomb_hi:
            self.tomb_hi = s.recv_c
        return 0

    cdef int floor_moved(self, int64_t floor) except -1:
        """The floor of our application space rose to ``floor`` while the packet ``rx_pn`` was
        processed (it acknowledged an ACK of ours): the complete halves below it are resolved.
        The peer had every frame of theirs acknowledged before it sent the acknowledgements
        that raised the floor, all in packets numbered at most the largest received so far
        (``w``), and sent none of them after: a frame for their ids in a packet numbered ``w`` or
        above belongs to a new incarnation (PROTOCOL.md §16.7)."""
        cdef _Stream s
        cdef int64_t w = self.largest_seen()
        cdef Ring q = self.tomb
        cdef RingItem* it
        # (recv_c only grows in completion order)
        while q.n and <int64_t>q.first().b < floor:
            it = q.first()
            s = <_Stream>it.obj
            if (s.recv_gen == it.a and s.recv_done and s.recv_w < 0
                    and s.in_table):
                s.recv_w = w
                if s.closed_counted:
                    self.unresolved -= 1
                    if self.credit_owed > 0:
                        self.credit_owed -= 1
                        self.give_credit(1)
            q.drop()
        if q.n == 0:
            self.tomb = None
            self.tomb_hi = -1
        self.trim_finished()
        return 0

    cdef int open_recv(self, _Stream s, int64_t min_pn) except -1:
        """A new incarnation of the peer's half of ``s`` (counts against our MAX_STREAMS)."""
        if self.peer_opened >= self.max_streams_local:
            raise ProtocolError(f"stream {s.stream_id} exceeds the stream limit",
                                ErrorCode.STREAM_LIMIT_ERROR)
        self.peer_opened += 1
        if s.recv_gen != 0 or s.recv is _NO_RECV:
            self.pool_recv(s.recv)
            s.recv = _NO_RECV  # (first: new_recv may take that very half again)
            s.recv = self.new_recv(s.stream_id)
        self.gen_seq += 1
        s.recv_gen = self.gen_seq
        s.recv_opened = True
        s.recv_done = False
        s.recv_w = -1
        s.closed_counted = False
        s.readable_signalled = False
        s.recv_min_pn = min_pn
        return 0

    cdef _Stream route(self, uint64_t stream_id, uint64_t end, bint* nxt):
        """The stream whose receive half a peer STREAM or RESET_STREAM frame (in the 1-RTT
        packet ``rx_pn``, reaching offset ``end``) belongs to, opening a half if it starts one;
        ``nxt[0]`` is set when the frame is for the incarnation after the one still being read.
        Raises _DropPacket when the frame may be a late copy of an earlier incarnation; None
        when it must be one: it would start a new incarnation beyond the stream credit a new
        half has (PROTOCOL.md §16.7)."""
        cdef _Stream s = self.lookup(stream_id)
        cdef int64_t pn = self.rx_pn
        cdef int64_t w
        nxt[0] = False
        if s is None or not s.recv_opened:
            if pn < self.stale_below:
                raise _DropPacket()
            if end > self.window_initial and self.stale_below > 0:
                return None
            if s is None:
                s = self.new_stream(stream_id, False)
            self.open_recv(s, self.stale_below)
            return s
        if not s.recv_done:
            if pn < s.recv_min_pn:
                raise _DropPacket()
            return s
        if pn <= s.recv_c:
            # the peer reopens an id only once we acknowledged the complete half, in a
            # packet numbered above every one we had then: this frame is of this incarnation
            return s
        w = s.recv_w
        if w < 0 or pn < w:
            raise _DropPacket()
        # the next incarnation
        if end > self.window_initial:
            return None
        if s.closed_counted:
            # the finished one is only remembered: the new one replaces it
            self.open_recv(s, w)
            return s
        if s.recv_next is None:
            if self.peer_opened >= self.max_streams_local:
                raise ProtocolError(f"stream {stream_id} exceeds the stream limit",
                                    ErrorCode.STREAM_LIMIT_ERROR)
            self.peer_opened += 1
            s.recv_next = self.new_recv(stream_id)
            s.recv_next_hi = pn
        elif data_complete(s.recv_next) and pn > s.recv_next_hi:
            # a third incarnation waits until the second one is read (a frame in a packet not
            # above every one that carried the second's frames is the second's: the peer sends
            # a third only after an ACK written once the second was complete)
            raise _DropPacket()
        elif pn > s.recv_next_hi:
            s.recv_next_hi = pn
        nxt[0] = True
        return s

    cdef int forget_resolved(self) except -1:
        """A quiet connection forgets every finished peer half already resolved (raising the
        watermark as trim_finished does for the oldest): any frame the peer sends from now on
        is in a packet numbered above them all, so nothing can be taken for a late copy that is
        not one, and an idle connection keeps no list of finished streams."""
        cdef _Stream s
        cdef Ring q = self.finished
        cdef Ring kept = None
        cdef uint64_t gen
        self.finished = None
        while q.n:
            s = <_Stream>q.first().obj
            gen = q.first().a
            q.drop()
            if (s.recv_gen == gen and s.recv_opened and s.closed_counted
                    and s.in_table):
                if s.recv_w < 0:
                    if kept is None:
                        kept = Ring()
                    kept.push(s, gen)  # unresolved: its credit may be held back
                elif not s.pinned:
                    self.forget_recv(s)
        self.finished = kept
        return 0

    cdef bint ambiguous(self, uint64_t stream_id) except -1:
        """Would a STREAM or RESET_STREAM frame for ``stream_id`` in the packet being processed
        (``rx_pn``) be one whose incarnation cannot be told yet? (The tests of route, without
        its effects.) Every one is while ``refuse`` is set: the packet cannot be recorded as
        received (_spaces.space_can_record), so its stream frames must not act."""
        if self.refuse:
            return True
        cdef _Stream s = self.lookup(stream_id)
        cdef int64_t pn = self.rx_pn
        if s is None or not s.recv_opened:
            return pn < self.stale_below
        if not s.recv_done:
            return pn < s.recv_min_pn
        if pn <= s.recv_c:
            return False
        if s.recv_w < 0 or pn < s.recv_w:
            return True
        return (not s.closed_counted and s.recv_next is not None
                and data_complete(s.recv_next) and pn > s.recv_next_hi)

    cdef int late_acks(self, list ranges) except -1:
        """Stream data of 1-RTT packets declared lost and since forgotten by recovery, that
        this ACK shows arrived after all: acknowledged now, so it is not sent again. Recovery
        recognises an acknowledgement of a lost packet only for about four PTOs; past that, data
        resent after the peer completed and resolved its half would be read as the next
        incarnation's (PROTOCOL.md §16.7)."""
        cdef list pns = self.lost_streams_pns
        cdef dict recs = self.lost_streams
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
                    s = self.lookup(sid)
                    if s is not None and s.send_gen == gen and not s.send._reset:
                        h0 = held(s.send)
                        s.send.on_acked_c(off, length, fin)
                        self.send_buffered -= h0 - held(s.send)
                        self.after_ack(s)
            del pns[i:j]
        if not pns:
            self.lost_streams = self.lost_streams_pns = None
        return 0

    cdef int on_stream(self, uint64_t stream_id, uint64_t offset, const uint8_t* data,
                          Py_ssize_t length, bint fin, int frame_type) except -1:
        cdef bint nxt
        cdef _Stream s = self.route(stream_id, offset + <uint64_t>length, &nxt)
        cdef RecvStream r = live_half(s, nxt)
        cdef int64_t new
        if r is None:
            return 0
        new = r.insert_c(offset, data, length, fin)
        if new:
            self.data_received += <uint64_t>new
            if self.data_received > self.recv_window._limit:
                raise ProtocolError("connection flow control limit exceeded",
                                    _FLOW_CONTROL_ERROR, frame_type)
        self.stream_bytes_received += length
        if nxt:
            return 0  # read once the current incarnation is
        if r._stopped:
            if data_complete(r):
                self.drop_unread(s, s.stop_code)
            return 0
        if not s.readable_signalled and message_ready_c(r, 1):
            self.signal_readable(s)
        if not s.recv_done and data_complete(r):
            self.recv_complete(s)
        self.check_recv_closed(s)
        return 0

    cdef int on_control_frame(self, object frame, double now) except -1:
        """The frames about streams and flow control other than STREAM (RFC 9000 §19.4-19.13)
        the receive path hands over by wire type."""
        cdef int t = frame.wire_type
        if t == 0x04:
            return self.on_reset_stream(frame, now)
        if t == 0x05:
            return self.on_stop_sending(frame)
        if t == 0x10:
            return self.on_max_data(frame)
        if t == 0x11:
            return self.on_max_stream_data(frame)
        if t == 0x12 or t == 0x13:
            return self.on_max_streams(frame)
        if t == 0x14:
            return self.on_data_blocked(frame)
        if t == 0x15:
            return self.on_stream_data_blocked(frame)
        if t == 0x16:
            return self.on_streams_blocked(frame)
        return 0

    cdef int on_streams_blocked(self, object frame) except -1:
        """The peer cannot open a half beyond ``frame.limit``: if that is the limit last
        announced, credit not announced yet goes now, not with the next packet (about an older
        limit, the frame crossed the MAX_STREAMS that raised it)."""
        if self.credit_lazy and frame.limit >= self.streams_announced:
            self.owed |= OWE_MAX_STREAMS
            self.noted = True
        return 0

    cdef int on_reset_stream(self, object frame, double now) except -1:
        cdef bint nxt
        cdef _Stream s = self.route(frame.stream_id, frame.final_size, &nxt)
        cdef RecvStream r = live_half(s, nxt)
        if r is None:
            return 0
        before = r.highest_offset
        r.reset(frame.error_code, frame.final_size)
        if not nxt:
            s.readable_signalled = False
        grown = max(0, frame.final_size - before)
        self.data_received += grown
        if self.data_received > self.recv_window._limit:
            raise ProtocolError("connection flow control limit exceeded", _FLOW_CONTROL_ERROR,
                                0x04)  # RESET_STREAM
        # the bytes the peer will never send count as consumed for connection flow control
        unread = frame.final_size - r.read_offset
        if unread > 0:
            self.recv_window.on_consumed(unread)
            if self.recv_window.should_update():
                # the credit those bytes held must go back to the peer, or it may stall
                self.recv_window.update(now, self.rtt.smoothed_rtt)
                self.owed |= OWE_MAX_DATA
        self.events.append(StreamReset(frame.stream_id, frame.error_code))
        if not nxt:
            if not s.recv_done:
                self.recv_complete(s)
            self.check_recv_closed(s)
        return 0

    cdef int on_stop_sending(self, object frame) except -1:
        cdef _Stream s = self.lookup(frame.stream_id)
        if s is None or not s.send_opened or not s.counted or self.rx_pn < s.send_min_pn:
            # our sending half of that stream was never opened toward the peer (only we open
            # it), or the frame is about an earlier incarnation: nothing to stop, no state to
            # create, no RESET_STREAM to send (PROTOCOL.md §16.6, §16.7)
            return 0
        self.events.append(StopSendingReceived(frame.stream_id, frame.error_code))
        if not s.send._reset and not s.send.is_finished:
            self.send_buffered -= held(s.send)
            s.send.reset(frame.error_code)
            s.owed |= OWE_RESET_STREAM
            s.reset_code = frame.error_code
            self.schedule(s)
        return 0

    cdef int on_max_data(self, object frame) except -1:
        if frame.maximum > self.peer_max_data:
            self.peer_max_data = frame.maximum
            self.requeue_blocked()
        return 0

    cdef int on_max_stream_data(self, object frame) except -1:
        cdef _Stream s = self.lookup(frame.stream_id)
        if s is None or not s.send_opened or self.rx_pn < s.send_min_pn:
            return 0  # credit for a sending half we never opened: ignored (PROTOCOL.md §16.6)
        if frame.maximum > s.send_limit:
            s.send_limit = frame.maximum
            if s.send.has_pending_c():
                self.schedule(s)
        return 0

    cdef int on_max_streams(self, object frame) except -1:
        cdef _Stream s
        cdef int64_t room
        if frame.maximum <= self.peer_stream_credit:
            return 0
        self.peer_stream_credit = frame.maximum
        # wake as many halves waiting for credit as the new credit lets open, oldest first
        room = <int64_t>self.peer_stream_credit - <int64_t>self.streams_counted
        cdef Ring q = self.credit_waiters
        while q is not None and q.n and room > 0:
            s = <_Stream>q.first().obj
            q.drop()
            s.credit_wait = False
            if s.send_opened and not s.counted and s.in_table:
                self.schedule(s)
                room -= 1
            else:
                self.maybe_release(s)
        if q is not None and q.n == 0:
            self.credit_waiters = None
        return 0

    cdef int requeue_blocked(self) except -1:
        cdef _Stream s
        for s in self.stream_list():
            if s.send.has_pending_c():
                self.schedule(s)
        return 0

    cdef int on_data_blocked(self, object frame) except -1:
        if self.recv_window._limit > frame.limit:
            self.owed |= OWE_MAX_DATA  # our update was lost: repeat it
        return 0

    cdef int on_stream_data_blocked(self, object frame) except -1:
        cdef _Stream s = self.lookup(frame.stream_id)
        if (s is not None and s.recv_opened and s.recv.max_offset > frame.limit
                and not s.recv.is_finished):
            s.owed |= OWE_MAX_STREAM_DATA
            self.schedule(s)
        return 0

    cdef int write_frames(self, Buffer buf, Py_ssize_t end, _Sent rec) except -1:
        """Fill the packet from the streams with something to send, round robin."""
        cdef bint fin
        cdef Py_ssize_t rounds, header, avail, length
        cdef int64_t conn_credit
        cdef uint64_t sid, flow_limit, before, off
        cdef _Stream s
        cdef SendStream send
        cdef int n0
        cdef Ring queue = self.send_queue
        rounds = queue.n
        while rounds > 0 and end - buf._pos > 24 and queue.n > 0:
            rounds -= 1
            s = <_Stream>queue.first().obj
            sid = s.stream_id
            send = s.send
            # control frames of this stream (one that does not fit keeps the stream first);
            # each record carries the incarnation of the half it concerns
            if s.owed:
                n0 = rec.nrec
                if pay(buf, &s.owed, FR_RESET_STREAM, end, rec, sid, s.reset_code,
                             send._final_size):
                    break
                if rec.nrec != n0:
                    record_at(rec, rec.nrec - 1).gen = s.send_gen
                    n0 = rec.nrec
                if pay(buf, &s.owed, FR_STOP_SENDING, end, rec, sid, s.stop_code):
                    break
                if rec.nrec != n0:
                    record_at(rec, rec.nrec - 1).gen = s.recv_gen
                    n0 = rec.nrec
                if pay(buf, &s.owed, FR_MAX_STREAM_DATA, end, rec, sid, s.recv.window._limit):
                    break
                if rec.nrec != n0:
                    record_at(rec, rec.nrec - 1).gen = s.recv_gen
            if send.has_pending_c():
                # stream credit (MAX_STREAMS): the first frame of an incarnation consumes one
                if send._offset_sent == 0 and not send.fin_sent and not s.counted:
                    if self.streams_counted >= self.peer_stream_credit:
                        if (self.streams_blocked_reported != <int64_t>self.peer_stream_credit
                                and put_frame(buf, end, rec, FR_STREAMS_BLOCKED,
                                                    self.peer_stream_credit)):
                            self.streams_blocked_reported = self.peer_stream_credit
                        queue.drop()
                        s.queued = False
                        if self.idle_halves is not None:
                            self.end_idle_halves()
                        if not s.credit_wait:
                            # woken by MAX_STREAMS (on_max_streams), oldest first
                            s.credit_wait = True
                            if self.credit_waiters is None:
                                self.credit_waiters = Ring()
                            self.credit_waiters.push(s)
                        continue
                conn_credit = <int64_t>self.peer_max_data - <int64_t>self.data_sent
                if conn_credit < 0:
                    conn_credit = 0
                flow_limit = send._offset_sent + <uint64_t>conn_credit
                if s.send_limit < flow_limit:
                    flow_limit = s.send_limit
                if (not send._finished and not s.pinned and send._msg_remaining == 0
                        and self.end_now(s)):
                    # credit is scarce: the half ends with the messages it has (FIN with
                    # the last of them), not a round trip later in a frame of its own
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
                            self.streams_counted += 1
                            self.streams_waiting -= 1
                        c_push_stream_frame_header(buf, sid, off, length, fin)
                        if length:
                            buf.c_push_ref(send.data_at(off), length)  # (sealed from there)
                        add_record(rec, FR_STREAM, sid, off, length, fin, s.send_gen)
                        self.data_sent += send._offset_sent - before
                if send.has_pending_c() and end - buf._pos <= header + 1:
                    break  # packet full: keep this stream first for the next packet
                if (send.has_pending_c() and not send._lost
                        and send._offset_sent >= flow_limit):
                    # flow-control blocked: tell the peer once per limit (RFC 9000 §4.1)
                    if (send._offset_sent >= s.send_limit
                            and s.blocked_reported != <int64_t>s.send_limit):
                        if put_frame(buf, end, rec, FR_STREAM_DATA_BLOCKED, sid, s.send_limit):
                            s.blocked_reported = s.send_limit
                    elif (self.data_blocked_reported != <int64_t>self.peer_max_data
                            and self.data_sent >= self.peer_max_data
                            and put_frame(buf, end, rec, FR_DATA_BLOCKED, self.peer_max_data)):
                        self.data_blocked_reported = self.peer_max_data
                    queue.drop()
                    s.queued = False
                    continue
            queue.drop()
            if send.has_pending_c():
                queue.push(s)  # round robin
            else:
                s.queued = False
                if not s.send_opened:
                    self.maybe_release(s)
        return 0


cdef class StreamView:
    """A read-only mapping view of a connection's stream table (``StreamSet.streams``):
    stream id -> its state, in the order the ids were added."""

    cdef StreamSet sset

    def __cinit__(self, StreamSet sset):
        self.sset = sset

    def __len__(self):
        return self.sset.tab_live

    def __getitem__(self, key):
        s = self.sset.find_key(key)
        if s is None:
            raise KeyError(key)
        return s

    def __contains__(self, key):
        return self.sset.find_key(key) is not None

    def __iter__(self):
        return iter(self.keys())

    def get(self, key, default=None):
        s = self.sset.find_key(key)
        return default if s is None else s

    def keys(self):
        return [s.stream_id for s in self.sset.stream_list()]

    def values(self):
        return self.sset.stream_list()

    def items(self):
        return [(s.stream_id, s) for s in self.sset.stream_list()]


Mapping.register(StreamView)
