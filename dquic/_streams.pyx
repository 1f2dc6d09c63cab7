# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, autotestdict=False
"""Compiled stream state: send buffers, receive reassembly, message framing, flow windows.

Every stream id (``0 <= id < 2**62``) has two independent halves: a :class:`SendStream` for
our bytes to the peer and a :class:`RecvStream` for the peer's bytes to us (PROTOCOL.md).
A stream's bytes are a sequence of messages, each ``varint(length) || bytes`` with the
variable-length integer encoding of RFC 9000 §16; an empty message is the single byte 0x00.

Buffers are C memory indexed by absolute stream offsets (RFC 9000 §2.2).  All index
arithmetic below is checked by construction (offsets are validated against the buffer's
bounds before any access), which is why bounds checking is disabled in this module.
"""
cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcmp, memcpy

from dquic._ranges cimport RangeSet
from dquic._wire cimport varint_len as _varint_size, varint_write as _varint_put

from dquic.errors import ErrorCode, ProtocolError

cdef uint64_t VARINT_MAX = (<uint64_t>1 << 62) - 1
# Above this capacity an emptied send buffer is released instead of kept for reuse.
cdef Py_ssize_t KEEP_IDLE_BUFFER = 1 << 16
# A half reused for another stream (renew_c) keeps a buffer up to this size.
cdef Py_ssize_t KEEP_REUSED_BUFFER = 4096


# Both halves keep their bytes in a ring (``_buf``, ``_cap`` bytes): copying ``n`` bytes into
# it, or out of it, at position ``p``, wrapping around its end
cdef inline void ring_put(uint8_t* buf, Py_ssize_t cap, Py_ssize_t p, const uint8_t* src,
                          Py_ssize_t n) noexcept:
    cdef Py_ssize_t first = cap - p
    if first >= n:
        memcpy(buf + p, src, <size_t>n)
    else:
        memcpy(buf + p, src, <size_t>first)
        memcpy(buf, src + first, <size_t>(n - first))


cdef inline void ring_get(uint8_t* dst, const uint8_t* buf, Py_ssize_t cap, Py_ssize_t p,
                          Py_ssize_t n) noexcept:
    cdef Py_ssize_t first = cap - p
    if first >= n:
        memcpy(dst, buf + p, <size_t>n)
    else:
        memcpy(dst, buf + p, <size_t>first)
        memcpy(dst + first, buf, <size_t>(n - first))

DEFAULT_SEND_BUFFER = 1 << 24


def message_prefix(length):
    """The length prefix of a message of ``length`` bytes (minimal varint, RFC 9000 §16)."""
    cdef uint64_t n
    cdef uint8_t tmp[8]
    if length < 0 or length > VARINT_MAX:
        raise ValueError("message length out of range")
    n = length
    cdef int size = _varint_size(n)
    _varint_put(tmp, n, size)
    return PyBytes_FromStringAndSize(<char*>tmp, size)


# ---------------------------------------------------------------------- flow windows

cdef class FlowWindow:
    """Receive-side flow-control limit with automatic window growth (RFC 9000 §4.1, §4.2).

    ``FlowWindow(initial, maximum)``: the advertised ``limit`` starts at ``initial`` (the value
    sent in transport parameters).  Call ``on_consumed(n)`` as the application reads bytes;
    when ``should_update()`` is True call ``update(now, rtt)`` and send the returned limit in
    MAX_STREAM_DATA (or MAX_DATA for the connection-level window).

    Auto-tuning: when successive updates are less than two round trips apart, the application
    drains faster than the window lets the peer send, so the window doubles (up to
    ``maximum``); otherwise it stays the same.
    """

    def __init__(self, uint64_t initial, uint64_t maximum=0):
        self.reset_c(initial, maximum)

    cdef void reset_c(self, uint64_t initial, uint64_t maximum) noexcept:
        """Start over as ``FlowWindow(initial, maximum)`` (a reused receive half)."""
        if maximum < initial:
            maximum = initial
        self._limit = initial
        self.window = initial
        self.maximum = maximum
        self.consumed = 0
        self._consumed_at_update = 0
        self._last_update = -1.0

    cdef void consumed_c(self, uint64_t n) noexcept:
        self.consumed += n

    cdef bint should_update_c(self) noexcept:
        # Half the window consumed since the last update (RFC 9000 §4.2 suggests updating
        # before the peer becomes blocked, without sending an update per packet).
        return (self.consumed - self._consumed_at_update) * 2 >= self.window and self.window > 0

    cdef uint64_t update_c(self, double now, double rtt) noexcept:
        cdef uint64_t new_limit
        if self._last_update >= 0.0 and rtt > 0.0 and now - self._last_update < 2.0 * rtt:
            if self.window < self.maximum:
                self.window = self.window * 2 if self.window else 1
                if self.window > self.maximum:
                    self.window = self.maximum
        self._last_update = now
        self._consumed_at_update = self.consumed
        new_limit = self.consumed + self.window
        if new_limit > self._limit:
            self._limit = new_limit
        return self._limit

    def on_consumed(self, uint64_t n):
        """Record ``n`` more bytes consumed by the application; then check ``should_update()``."""
        self.consumed_c(n)

    def should_update(self):
        """True when half the window was consumed since the last update: call ``update()``."""
        return self.should_update_c()

    def update(self, double now, double rtt):
        """Compute and adopt the new limit (never lower than before) and return it.

        ``now`` is the current time and ``rtt`` the smoothed RTT, both in seconds.  Send the
        result to the peer (MAX_STREAM_DATA / MAX_DATA).
        """
        return self.update_c(now, rtt)

    @property
    def limit(self):
        """The advertised limit: the peer may send bytes up to this absolute offset."""
        return self._limit

    @limit.setter
    def limit(self, uint64_t value):
        if value < self._limit:
            raise ValueError("a flow-control limit can only grow (RFC 9000 §4.1)")
        self._limit = value

    def __repr__(self):
        return "FlowWindow(limit=%d, window=%d, maximum=%d, consumed=%d)" % (
            self._limit, self.window, self.maximum, self.consumed)


# ---------------------------------------------------------------------- both halves

cdef class _StreamHalf:
    """What the two halves of a stream share: the stream id, a C buffer of the half's bytes
    (``_buf``, ``_cap`` bytes allocated, a ring from ``_head``) freed with the half, and the
    reset state (``reset()`` of a send half, RESET_STREAM for a receive half)."""

    def __cinit__(self, *args, **kwargs):
        self._buf = NULL
        self._cap = 0
        self._head = 0

    def __dealloc__(self):
        if self._buf is not NULL:
            PyMem_Free(self._buf)
            self._buf = NULL

    cdef void _renew_half(self, uint64_t stream_id) noexcept:
        """The shared part of a half's reuse for another stream id or incarnation: a small
        buffer is kept (emptied), a large one given back."""
        if self._cap > KEEP_REUSED_BUFFER:
            PyMem_Free(self._buf)
            self._buf = NULL
            self._cap = 0
        self._head = 0
        self.stream_id = stream_id
        self._reset_code = 0
        self._reset = False

    def __sizeof__(self):
        # the object plus its C buffer (what sys.getsizeof reports)
        return type(self).__basicsize__ + self._cap

    @property
    def is_reset(self):
        return self._reset

    @property
    def reset_code(self):
        """The error code of the reset, or None."""
        return self._reset_code if self._reset else None


# ---------------------------------------------------------------------- send side

@cython.no_gc  # holds only leaf objects (range sets): no cycle can pass through it
cdef class SendStream(_StreamHalf):
    """Our half of a stream: message framing, send buffer, retransmission and FIN state.

    ``SendStream(stream_id, max_buffer=16 MiB)``; ``max_buffer`` bounds the bytes held (written
    but not yet acknowledged as a contiguous prefix), 0 = unlimited.

    Typical use: ``write_message()`` (or ``begin_message()`` + ``write_partial()``), then the
    connection repeatedly calls ``next_chunk()`` to fill STREAM frames and reports each sent
    frame's fate with ``on_acked()`` / ``on_lost()``.  ``finish()`` closes the stream with a
    FIN; ``reset()`` abandons it (the connection then sends RESET_STREAM).
    """

    def __init__(self, uint64_t stream_id, max_buffer=DEFAULT_SEND_BUFFER):
        if stream_id > VARINT_MAX:
            raise ValueError("stream id out of range")
        if max_buffer < 0:
            raise ValueError("max_buffer must be >= 0")
        self.stream_id = stream_id
        self.max_buffer = max_buffer
        self._acked = RangeSet()
        self._retx = RangeSet()
        self._inflight = RangeSet()
        self._plain = True

    cdef void renew_c(self, uint64_t stream_id) noexcept:
        """Become a new, empty half of ``stream_id`` with the same ``max_buffer``, as if just
        made (the connection reuses halves whose stream state it released)."""
        self._renew_half(stream_id)
        if not self._plain:
            # (a plain half left its sets empty: a reused one mostly needs no touch of them)
            self._inflight.clear_c()
            self._retx.clear_c()
            self._acked.clear_c()
            self._lost = False
            self._plain = True
        self._base = 0
        self.write_offset = 0
        self._offset_sent = 0
        self.bytes_in_flight = 0
        self._bytes_retransmitted = 0
        self._msg_remaining = 0
        self._final_size = 0
        self._finished = False
        self._fin_pending = False
        self.fin_sent = False
        self.fin_acked = False

    # ------------------------------------------------------------------ buffer management

    cdef int _check_writable(self, uint64_t n) except -1:
        if self._reset:
            raise ValueError("stream was reset")
        if self._finished:
            raise ValueError("stream was finished")
        if self.write_offset + n > VARINT_MAX:
            raise ValueError("stream offset would exceed 2**62-1")
        if self.max_buffer and (self.write_offset - self._base) + n > self.max_buffer:
            raise BufferError("send buffer full (%d of %d bytes held)" % (
                self.write_offset - self._base, self.max_buffer))
        return 0

    cdef int _append(self, const uint8_t* data, Py_ssize_t n) except -1:
        """Copy ``n`` bytes to the end of the buffer (capacity checked by the caller's limits).

        The buffer is a ring: the byte at absolute offset ``x`` lives at
        ``_buf[(_head + x - _base) % _cap]``, so acknowledged bytes are released without moving
        the rest; it only grows (one copy, straightened out) when the data does not fit.
        """
        cdef Py_ssize_t used = <Py_ssize_t>(self.write_offset - self._base)
        cdef Py_ssize_t need = used + n, cap, tail
        cdef uint8_t* mem
        if n <= 0:
            return 0
        if need > self._cap:
            cap = self._cap * 2
            if cap < need:
                cap = need
            if cap < 256:
                cap = 256
            mem = <uint8_t*>PyMem_Malloc(<size_t>cap)
            if mem is NULL:
                raise MemoryError()
            if used:
                ring_get(mem, self._buf, self._cap, self._head, used)
            if self._buf is not NULL:
                PyMem_Free(self._buf)
            self._buf = mem
            self._cap = cap
            self._head = 0
        tail = self._head + used
        if tail >= self._cap:
            tail -= self._cap
        ring_put(self._buf, self._cap, tail, data, n)
        self.write_offset += <uint64_t>n
        return 0

    cdef void _drop_acked_prefix(self) noexcept:
        """Advance ``_base`` to the acknowledged prefix, releasing the bytes below it."""
        if self._acked.count() == 0 or self._acked.start_at(0) != 0:
            return
        self._release_to(self._acked.stop_at(0))

    cdef void _release_to(self, uint64_t prefix) noexcept:
        """Advance ``_base`` to ``prefix`` (every byte below it acknowledged), releasing them."""
        if prefix <= self._base:
            return
        self._head += <Py_ssize_t>(prefix - self._base)
        if self._head >= self._cap:
            self._head -= self._cap
        self._base = prefix
        if self._base == self.write_offset:
            self._head = 0
            if self._cap > KEEP_IDLE_BUFFER:
                PyMem_Free(self._buf)
                self._buf = NULL
                self._cap = 0

    cdef int _materialize(self) except -1:
        """Leave the plain state (``_plain``): the acknowledged and in-flight ranges it implied
        go into their sets, which from now on say what was acknowledged, is in flight or lost
        (until every byte sent is acknowledged in order again: ``_settle``)."""
        if not self._plain:
            return 0
        if self._base:
            self._acked.add_range(0, self._base)
        if self._offset_sent > self._base:
            self._inflight.add_range(self._base, self._offset_sent)
        self._plain = False
        return 0

    cdef const uint8_t* data_at(self, uint64_t offset) noexcept:
        """Pointer to the buffered byte at absolute ``offset`` (``acked_offset <= offset``);
        ``contiguous_at(offset)`` bytes follow it in memory (the ring wraps after them).

        Valid until the next call that writes, acknowledges or resets.
        """
        cdef Py_ssize_t pos = self._head + <Py_ssize_t>(offset - self._base)
        if pos >= self._cap:
            pos -= self._cap
        return self._buf + pos

    cdef Py_ssize_t contiguous_at(self, uint64_t offset) noexcept:
        """Bytes readable from ``data_at(offset)`` before the ring wraps."""
        cdef Py_ssize_t pos = self._head + <Py_ssize_t>(offset - self._base)
        if pos >= self._cap:
            pos -= self._cap
        return self._cap - pos

    # ------------------------------------------------------------------ writing

    def write_message(self, data):
        """Append one message (``varint(len) || data``) and return the bytes appended.

        ``data`` is any C-contiguous buffer (bytes, bytearray, memoryview, numpy array).
        Raises ``ValueError`` after ``finish()``/``reset()`` or while a message opened with
        ``begin_message()`` is incomplete, and ``BufferError`` when the message does not fit in
        ``max_buffer`` (see ``writable``).  Call ``next_chunk()`` afterwards to send it.
        """
        return self.write_message_c(data)

    cdef Py_ssize_t write_message_c(self, object data) except -1:
        """``write_message`` as a C call (the connection's send path)."""
        cdef Py_buffer view
        cdef uint8_t prefix[8]
        cdef int size
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if self._msg_remaining:
                raise ValueError("the previous message is incomplete (%d bytes owed)" % self._msg_remaining)
            size = _varint_size(<uint64_t>view.len)
            self._check_writable(<uint64_t>(view.len + size))
            _varint_put(prefix, <uint64_t>view.len, size)
            self._append(prefix, size)
            self._append(<const uint8_t*>view.buf, view.len)
            return size + view.len
        finally:
            PyBuffer_Release(&view)

    def begin_message(self, uint64_t length):
        """Start a message of ``length`` bytes whose body follows in ``write_partial()`` calls.

        For messages larger than the send buffer: write the body piece by piece as space frees
        up.  Returns the prefix size.  No other message may be written until the body is done.
        """
        cdef uint8_t prefix[8]
        cdef int size
        if self._msg_remaining:
            raise ValueError("the previous message is incomplete (%d bytes owed)" % self._msg_remaining)
        if length > VARINT_MAX:
            raise ValueError("message length out of range")
        size = _varint_size(length)
        self._check_writable(size)
        if self.write_offset + size + length > VARINT_MAX:
            raise ValueError("stream offset would exceed 2**62-1")
        _varint_put(prefix, length, size)
        self._append(prefix, size)
        self._msg_remaining = length
        return size

    def write_partial(self, data):
        """Append body bytes of the message opened by ``begin_message()``; returns their count.

        Raises ``ValueError`` if ``data`` is longer than what the message still owes.
        """
        cdef Py_buffer view
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if <uint64_t>view.len > self._msg_remaining:
                raise ValueError("more bytes than the message length announced")
            self._check_writable(<uint64_t>view.len)
            self._append(<const uint8_t*>view.buf, view.len)
            self._msg_remaining -= <uint64_t>view.len
            return view.len
        finally:
            PyBuffer_Release(&view)

    cpdef finish(self):
        """Mark the end of the stream (FIN after the last written byte); no more writes.

        Idempotent.  Raises ``ValueError`` after ``reset()`` or inside an incomplete message.
        """
        if self._reset:
            raise ValueError("stream was reset")
        if self._finished:
            return
        if self._msg_remaining:
            raise ValueError("the current message is incomplete (%d bytes owed)" % self._msg_remaining)
        self._finished = True
        self._fin_pending = True
        self._final_size = self.write_offset

    def reset(self, uint64_t error_code):
        """Abandon the stream: drop all buffered data and return the final size.

        The final size is the highest offset ever sent (RFC 9000 §4.5); the connection sends
        RESET_STREAM(stream_id, error_code, final_size).  Later calls return the same value.
        """
        if self._reset:
            return self._final_size
        self._materialize()
        self._reset = True
        self._reset_code = error_code
        self._final_size = self._offset_sent
        self._fin_pending = False
        self._retx.clear_c()
        self._lost = False
        self._inflight.clear_c()
        self.bytes_in_flight = 0
        self._msg_remaining = 0
        if self._buf is not NULL:
            PyMem_Free(self._buf)
            self._buf = NULL
        self._cap = 0
        self._head = 0
        return self._final_size

    # ------------------------------------------------------------------ sending

    cdef int next_chunk_c(self, Py_ssize_t max_len, uint64_t flow_limit, uint64_t* offset,
                          Py_ssize_t* length, bint* fin) except -1:
        """C version of ``next_chunk``: returns 1 and fills the outputs, or 0 if nothing to send.

        Read the bytes with ``data_at(offset[0])`` before mutating the stream again.
        """
        cdef uint64_t start, stop, n
        if self._reset:
            return 0
        if max_len > 0 and self._lost:
            # Retransmissions first, lowest offset first (RFC 9000 §13.3).
            start = self._retx.start_at(0)
            stop = self._retx.stop_at(0)
            n = stop - start
            if n > <uint64_t>max_len:
                n = <uint64_t>max_len
            if n > <uint64_t>self.contiguous_at(start):
                n = <uint64_t>self.contiguous_at(start)  # the rest follows the ring's wrap
            self._retx.subtract_range(start, start + n)
            self._lost = self._retx._n != 0
            self.bytes_in_flight += n - self._inflight.overlap(start, start + n)
            self._inflight.add_range(start, start + n)
            self._bytes_retransmitted += n
            return _chunk_out(self, start, n, offset, length, fin)
        if max_len > 0 and self.write_offset > self._offset_sent and flow_limit > self._offset_sent:
            start = self._offset_sent
            n = self.write_offset - start
            if n > <uint64_t>max_len:
                n = <uint64_t>max_len
            if n > flow_limit - start:
                n = flow_limit - start
            if n > <uint64_t>self.contiguous_at(start):
                n = <uint64_t>self.contiguous_at(start)  # the rest follows the ring's wrap
            self._offset_sent = start + n
            self.bytes_in_flight += n
            if not self._plain:  # (plain: in flight is [_base, _offset_sent) as it stands)
                self._inflight.add_range(start, start + n)
            return _chunk_out(self, start, n, offset, length, fin)
        if self._fin_pending and self._offset_sent == self.write_offset:
            offset[0] = self.write_offset
            length[0] = 0
            fin[0] = True
            self._fin_pending = False
            self.fin_sent = True
            return 1
        return 0

    def next_chunk(self, Py_ssize_t max_len, uint64_t flow_limit):
        """Pick the next bytes for a STREAM frame and mark them in flight.

        Returns ``(offset, data: bytes, fin)`` or ``None``.  Lost ranges go first (lowest offset
        first, not limited by flow control: they were within credit when first sent), then new
        data with ``offset + len(data) <= flow_limit`` (pass the smaller of the stream's and the
        connection's credit as an absolute stream offset), then a FIN-only chunk (empty data)
        once everything else is sent.  At most ``max_len`` data bytes.  Record the frame and
        later call ``on_acked()`` or ``on_lost()`` with ``(offset, len(data), fin)``.
        """
        cdef uint64_t offset
        cdef Py_ssize_t length
        cdef bint fin
        if not self.next_chunk_c(max_len, flow_limit, &offset, &length, &fin):
            return None
        if length:
            data = PyBytes_FromStringAndSize(<const char*>self.data_at(offset), length)
        else:
            data = b""
        return (offset, data, fin)

    # ------------------------------------------------------------------ feedback

    cdef int on_acked_c(self, uint64_t offset, uint64_t length, bint fin) except -1:
        cdef uint64_t stop = offset + length
        cdef RangeSet fl, ak
        if self._reset:
            return 0
        if self._plain:
            if stop <= self._offset_sent and (offset == self._base or length == 0):
                # in order: the in-flight bytes just above the acknowledged prefix, or a
                # FIN-only frame (no byte moves); neither set is touched
                if length:
                    self.bytes_in_flight -= length
                    self._release_to(stop)
                if fin and self._finished:
                    self.fin_acked = True
                    self._fin_pending = False
                return 0
            self._materialize()
        fl = self._inflight
        ak = self._acked
        if (length and offset == self._base and stop <= self._offset_sent and not self._lost
                and fl._n and fl._r[0] == offset and fl._r[1] >= stop
                and ((ak._n == 0 and offset == 0)
                     or (ak._n == 1 and ak._r[0] == 0 and ak._r[1] == offset))):
            # the usual case: the bytes just above the acknowledged prefix, sent once, all of
            # them in flight and the first of what is: the ranges move by their ends
            self.bytes_in_flight -= length
            if fl._r[1] > stop:
                fl._r[0] = stop
            elif fl._n == 1:
                fl._n = 0
            else:
                fl.subtract_range(offset, stop)
            if ak._n == 0:  # (a range set always has room for one pair)
                ak._r[0] = 0
                ak._n = 1
            ak._r[1] = stop
            self._drop_acked_prefix()
            _settle(self)
            if fin and self._finished:
                self.fin_acked = True
                self._fin_pending = False
            return 0
        _out_of_flight(self, offset, stop, "acknowledged")
        if length:
            if self._lost:
                self._retx.subtract_range(offset, stop)
                self._lost = self._retx._n != 0
            self._acked.add_range(offset, stop)
            self._drop_acked_prefix()
            _settle(self)
        if fin and self._finished:
            self.fin_acked = True
            self._fin_pending = False
        return 0

    cdef int on_lost_c(self, uint64_t offset, uint64_t length, bint fin) except -1:
        cdef uint64_t stop = offset + length, pos, a, b
        cdef Py_ssize_t i, n
        if self._reset:
            return 0
        self._materialize()
        _out_of_flight(self, offset, stop, "lost")
        if length:
            # Queue the parts not acknowledged meanwhile (RFC 9000 §13.3: data acknowledged in
            # any packet is never sent again).
            pos = offset
            n = self._acked.count()
            i = 0
            while i < n and pos < stop:
                a = self._acked.start_at(i)
                b = self._acked.stop_at(i)
                i += 1
                if b <= pos:
                    continue
                if a >= stop:
                    break
                if a > pos:
                    self._retx.add_range(pos, a)
                pos = b
            if pos < stop:
                self._retx.add_range(pos, stop)
            self._lost = self._retx._n != 0
        if fin and self._finished and not self.fin_acked:
            self._fin_pending = True
        return 0

    def on_acked(self, uint64_t offset, uint64_t length, bint fin=False):
        """A STREAM frame ``(offset, length, fin)`` sent by ``next_chunk()`` was acknowledged.

        Frees the acknowledged prefix of the buffer.  Ignored after ``reset()``.
        """
        self.on_acked_c(offset, length, fin)

    def on_lost(self, uint64_t offset, uint64_t length, bint fin=False):
        """A STREAM frame was declared lost: its unacknowledged bytes (and FIN) are queued again."""
        self.on_lost_c(offset, length, fin)

    cdef bint has_pending_c(self) noexcept:
        return not self._reset and (self.write_offset > self._offset_sent or self._fin_pending
                                    or self._lost)

    def has_pending(self):
        """True when ``next_chunk()`` has something to send, ignoring flow control."""
        return self.has_pending_c()

    cdef void release_idle_c(self) noexcept:
        if self._buf is not NULL and self._base == self.write_offset:
            PyMem_Free(self._buf)
            self._buf = NULL
            self._cap = 0
            self._head = 0
        self._acked.shrink_c()
        self._retx.shrink_c()
        self._inflight.shrink_c()

    def release_idle(self):
        """Give back memory the stream does not need while nothing moves: the send buffer
        when every byte written was acknowledged, unused range capacity. Later writes
        allocate again."""
        self.release_idle_c()

    cdef void shed_c(self) noexcept:
        """Before the half waits for reuse: a buffer too large to keep is given back (when
        every byte written was acknowledged)."""
        if self._cap > KEEP_REUSED_BUFFER and self._base == self.write_offset:
            PyMem_Free(self._buf)
            self._buf = NULL
            self._cap = 0
            self._head = 0

    def blocked_at(self, uint64_t flow_limit):
        """True when new data waits but ``flow_limit`` is exhausted (send STREAM_DATA_BLOCKED)."""
        return (not self._reset and self.write_offset > self._offset_sent
                and self._offset_sent >= flow_limit)

    # ------------------------------------------------------------------ state

    @property
    def offset_sent(self):
        """Highest offset ever sent (the new-data frontier)."""
        return self._offset_sent

    @property
    def acked_offset(self):
        """End of the contiguous acknowledged prefix."""
        return self._base

    @property
    def buffered(self):
        """Bytes held in memory: written minus the acknowledged prefix (0 after reset)."""
        return 0 if self._reset else self.write_offset - self._base

    @property
    def writable(self):
        """Bytes ``write_message()`` may append now (prefix included); -1 if unlimited."""
        if self._reset or self._finished:
            return 0
        if not self.max_buffer:
            return -1
        held = self.write_offset - self._base
        return self.max_buffer - held if held < self.max_buffer else 0

    @property
    def pending_new_bytes(self):
        """Written bytes never sent yet."""
        return 0 if self._reset else self.write_offset - self._offset_sent

    @property
    def pending_retransmit_bytes(self):
        """Lost bytes waiting to be sent again."""
        return self._retx.total_c()

    @property
    def is_finished(self):
        """True once the FIN and every byte were acknowledged."""
        return (self._finished and self.fin_acked and not self._reset
                and self._base == self.write_offset)

    @property
    def is_closed_for_writing(self):
        """True after ``finish()`` or ``reset()``."""
        return self._finished or self._reset

    @property
    def final_size(self):
        """Final size once known (after ``finish()`` or ``reset()``), else -1."""
        return self._final_size if (self._finished or self._reset) else -1

    @property
    def bytes_retransmitted(self):
        return self._bytes_retransmitted

    def __repr__(self):
        return ("SendStream(id=%d, written=%d, sent=%d, acked=%d, in_flight=%d, fin=%s, reset=%s)"
                % (self.stream_id, self.write_offset, self._offset_sent, self._base,
                   self.bytes_in_flight, self._finished, self._reset))


cdef inline int _chunk_out(SendStream x, uint64_t start, uint64_t n, uint64_t* offset,
                           Py_ssize_t* length, bint* fin) noexcept:
    # next_chunk_c hands out [start, start + n): with the FIN when it ends a finished stream
    # whose FIN was not acknowledged yet
    offset[0] = start
    length[0] = <Py_ssize_t>n
    fin[0] = x._finished and start + n == x.write_offset and not x.fin_acked
    if fin[0]:
        x._fin_pending = False
        x.fin_sent = True
    return 1


cdef inline void _settle(SendStream x) noexcept:
    # back to the plain state once the sets say what it implies: nothing lost, acknowledged
    # [0, _base) (the prefix was just released), in flight [_base, _offset_sent)
    cdef RangeSet fl = x._inflight, ak = x._acked
    if x._lost or ak._n > 1 or (ak._n == 1 and (ak._r[0] != 0 or ak._r[1] != x._base)):
        return
    if fl._n == 0:
        if x._offset_sent != x._base:
            return
    elif fl._n != 1 or fl._r[0] != x._base or fl._r[1] != x._offset_sent:
        return
    fl.clear_c()
    ak.clear_c()
    x._plain = True


cdef inline int _out_of_flight(SendStream x, uint64_t offset, uint64_t stop, str fate) except -1:
    # the acknowledged or lost (``fate``) range [offset, stop) no longer counts as in flight
    if stop > x._offset_sent or stop < offset:
        raise ValueError("%s range [%d, %d) was never sent" % (fate, offset, stop))
    if stop > offset:
        x.bytes_in_flight -= x._inflight.overlap(offset, stop)
        x._inflight.subtract_range(offset, stop)
    return 0


# ---------------------------------------------------------------------- receive side

# The receive buffer is a ring from the read head (RecvStream._ensure): where an absolute
# offset lives in it, a comparison and a copy out that may wrap around its end (inline: they
# run for every piece received and every message read)
cdef inline Py_ssize_t _ring_at(RecvStream r, uint64_t x) noexcept:
    cdef Py_ssize_t p = r._head + <Py_ssize_t>(x - r.read_offset)
    return p - r._cap if p >= r._cap else p


cdef inline bint _ring_differs(RecvStream r, uint64_t x, const uint8_t* src, Py_ssize_t n) noexcept:
    cdef Py_ssize_t p = _ring_at(r, x), first = r._cap - p
    if first >= n:
        return memcmp(r._buf + p, src, <size_t>n) != 0
    return (memcmp(r._buf + p, src, <size_t>first) != 0
            or memcmp(r._buf, src + first, <size_t>(n - first)) != 0)


cdef inline object _ring_bytes(RecvStream r, Py_ssize_t n):
    """The ``n`` bytes at the read head as ``bytes`` (the head does not move)."""
    cdef Py_ssize_t first = r._cap - r._head
    if first >= n:
        return PyBytes_FromStringAndSize(<const char*>(r._buf + r._head), n)
    data = PyBytes_FromStringAndSize(NULL, n)
    ring_get(<uint8_t*>PyBytes_AS_STRING(data), r._buf, r._cap, r._head, n)
    return data


@cython.no_gc  # holds only leaf objects (a range set, a flow window): no cycle can pass through it
cdef class RecvStream(_StreamHalf):
    """The peer's half of a stream: reassembly, message delivery, flow control, final size.

    ``RecvStream(stream_id, max_buffer, initial_window=0)``: the peer may send up to
    ``max_offset`` (initially ``initial_window``, or ``max_buffer`` if 0); the window
    auto-tunes up to ``max_buffer`` (see :class:`FlowWindow`).  Memory held never exceeds
    ``max_offset - read_offset`` (at most ``max_buffer`` bytes).

    Feed STREAM frames to ``insert()``, RESET_STREAM to ``reset()``; read with
    ``read_message()``; after reads, if ``should_update_window()`` send MAX_STREAM_DATA with
    ``next_window(now, rtt)``.
    """

    def __init__(self, uint64_t stream_id, uint64_t max_buffer, uint64_t initial_window=0):
        if stream_id > VARINT_MAX:
            raise ValueError("stream id out of range")
        if initial_window == 0:
            initial_window = max_buffer
        self.stream_id = stream_id
        self.final_size = -1
        self._msg_total = -1
        self._recv = RangeSet()
        self.window = FlowWindow(initial_window, max_buffer)

    cdef void renew_c(self, uint64_t stream_id, uint64_t max_buffer,
                      uint64_t initial_window) noexcept:
        """Become ``RecvStream(stream_id, max_buffer, initial_window)`` as if just made (the
        connection reuses halves whose stream state it released)."""
        if initial_window == 0:
            initial_window = max_buffer
        self._renew_half(stream_id)
        self.read_offset = 0
        self.highest_offset = 0
        self.final_size = -1
        self._msg_total = -1
        self._msg_remaining = 0
        if self._gaps:
            self._recv.clear_c()
            self._gaps = False
        self._contig = 0
        self.window.reset_c(initial_window, max_buffer)
        self._stopped = False

    # ------------------------------------------------------------------ internals

    cdef int _ensure(self, uint64_t end) except -1:
        """Make ``_buf`` cover absolute offsets up to ``end`` (``end <= max_offset``).

        The buffer is a ring from the read head (``_head``, the byte at ``read_offset``): what
        is read is released without moving the rest, so a reader that leaves part of a large
        message behind each time never has it moved again; it only grows (one copy,
        straightened out) when ``end`` lies beyond a whole buffer from the read head."""
        cdef Py_ssize_t need = <Py_ssize_t>(end - self.read_offset)
        cdef Py_ssize_t span = 0, cap, limit
        cdef uint8_t* mem
        if need <= self._cap:
            return 0
        if received_top(self) > self.read_offset:
            span = <Py_ssize_t>(received_top(self) - self.read_offset)
        limit = <Py_ssize_t>(self.window._limit - self.read_offset)
        cap = self._cap * 2
        if cap < 1024:
            cap = 1024
        if cap > limit:
            cap = limit
        if cap < need:
            cap = need
        mem = <uint8_t*>PyMem_Malloc(<size_t>cap)
        if mem is NULL:
            raise MemoryError()
        if span:
            ring_get(mem, self._buf, self._cap, self._head, span)
        PyMem_Free(self._buf)
        self._buf = mem
        self._cap = cap
        self._head = 0
        return 0

    cdef void _consume(self, uint64_t n) noexcept:
        """Advance the read head by ``n`` contiguous bytes."""
        self.read_offset += n
        self._head += <Py_ssize_t>n
        if self._head >= self._cap:
            self._head -= self._cap
        self.window.consumed_c(n)
        if received_top(self) <= self.read_offset:
            # Nothing stored above the read head: restart at the front of the buffer.
            self._head = 0

    # ------------------------------------------------------------------ input

    cdef int64_t insert_c(self, uint64_t offset, const uint8_t* data, Py_ssize_t n, bint fin) except -1:
        """C version of ``insert``; returns the increase of the highest received offset."""
        cdef uint64_t end = offset + <uint64_t>n
        cdef uint64_t s, a, b, old_highest = self.highest_offset
        cdef uint64_t one[2]
        cdef uint64_t* rr
        cdef Py_ssize_t i, cnt
        if offset > VARINT_MAX or end > VARINT_MAX:
            raise ProtocolError("stream offset beyond 2**62-1", ErrorCode.FRAME_ENCODING_ERROR)
        # Final size rules (RFC 9000 §4.5).
        if self.final_size >= 0:
            if end > <uint64_t>self.final_size:
                raise ProtocolError("data beyond the final size", ErrorCode.FINAL_SIZE_ERROR)
            if fin and end != <uint64_t>self.final_size:
                raise ProtocolError("final size changed", ErrorCode.FINAL_SIZE_ERROR)
        elif fin and end < self.highest_offset:
            raise ProtocolError("final size below data already received", ErrorCode.FINAL_SIZE_ERROR)
        # Flow control (RFC 9000 §4.1).
        if end > self.window._limit:
            raise ProtocolError("stream data beyond the flow-control limit",
                                ErrorCode.FLOW_CONTROL_ERROR)
        s = offset if offset > self.read_offset else self.read_offset
        if not self._gaps and offset > self._contig and end > s and not self._reset:
            # a gap: from now on the ranges are kept in the set (without one, what arrived is
            # [0, _contig), the usual case, kept without touching the set)
            if self._contig:
                self._recv.add_range(0, self._contig)
            self._gaps = True
        if self._gaps:
            rr = self._recv._r
            cnt = self._recv._n
        else:
            one[0] = 0
            one[1] = self._contig
            rr = one
            cnt = 1
        if not (self._reset or self._stopped) and end > s:
            # Bytes already received and still buffered must match (RFC 9000 §2.2); bytes
            # already read were released and cannot be compared.
            i = 0
            while i < cnt:
                a = rr[2 * i]
                b = rr[2 * i + 1]
                i += 1
                if b <= s:
                    continue
                if a >= end:
                    break
                if a < s:
                    a = s
                if b > end:
                    b = end
                if _ring_differs(self, a, data + <Py_ssize_t>(a - offset), <Py_ssize_t>(b - a)):
                    raise ProtocolError("retransmitted stream data differs from the original",
                                        ErrorCode.PROTOCOL_VIOLATION)
            self._ensure(end)
            ring_put(self._buf, self._cap, _ring_at(self, s), data + <Py_ssize_t>(s - offset),
                     <Py_ssize_t>(end - s))
        if not self._reset and end > s:
            # (stopped: not stored, but which bytes arrived is still known: ``data_complete``)
            if not self._gaps:
                if end > self._contig:
                    self._contig = end
            else:
                self._recv.add_range(s, end)
                if self._recv._r[0] == 0:
                    self._contig = self._recv._r[1]
                    if self._recv._n == 1:
                        # the gaps are filled: back to [0, _contig) without the set
                        self._recv.clear_c()
                        self._gaps = False
        if fin:
            self.final_size = <int64_t>end
        if end > self.highest_offset:
            self.highest_offset = end
        return <int64_t>(self.highest_offset - old_highest)

    def insert(self, uint64_t offset, data, bint fin=False):
        """Add the bytes of a STREAM frame at absolute ``offset``; returns the new-bytes count.

        Handles reordering, overlaps and duplicates.  The result is how far the highest
        received offset advanced (charge it to the connection-level flow control).  Raises
        ``ProtocolError`` with FINAL_SIZE_ERROR (data past, or a change of, the final size),
        FLOW_CONTROL_ERROR (beyond ``max_offset``) or PROTOCOL_VIOLATION (overlapping bytes
        that differ from buffered ones; bytes already read are no longer compared).  After
        ``reset()``/``stop()`` the checks still apply but nothing is stored.
        """
        cdef Py_buffer view
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            return self.insert_c(offset, <const uint8_t*>view.buf, view.len, fin)
        finally:
            PyBuffer_Release(&view)

    def reset(self, uint64_t error_code, uint64_t final_size):
        """Apply RESET_STREAM: check the final size, discard all data; returns new bytes.

        The return value is how far the highest received offset advanced to ``final_size``
        (charge it to connection-level flow control; the unread bytes ``final_size -
        read_offset`` may also be credited back to the connection window).  Raises
        ``ProtocolError`` FINAL_SIZE_ERROR on a contradiction, FLOW_CONTROL_ERROR if
        ``final_size`` exceeds ``max_offset``.
        """
        cdef uint64_t old = self.highest_offset
        if self.final_size >= 0 and final_size != <uint64_t>self.final_size:
            raise ProtocolError("final size changed", ErrorCode.FINAL_SIZE_ERROR)
        if final_size < self.highest_offset:
            raise ProtocolError("final size below data already received", ErrorCode.FINAL_SIZE_ERROR)
        if final_size > self.window._limit:
            raise ProtocolError("final size beyond the flow-control limit",
                                ErrorCode.FLOW_CONTROL_ERROR)
        self.final_size = <int64_t>final_size
        self.highest_offset = final_size
        if not self._reset:
            self._reset = True
            self._reset_code = error_code
            self._release()
        return self.highest_offset - old

    def stop(self):
        """The application stops reading (STOP_SENDING): release buffers, discard future data.

        Later ``insert()`` calls still check flow control and the final size, and record which
        bytes arrived (``data_complete``) without storing them.
        """
        self._stopped = True
        self._release()

    cdef void _release(self) noexcept:
        if self._buf is not NULL:
            PyMem_Free(self._buf)
            self._buf = NULL
        self._cap = 0
        self._head = 0

    cdef void release_idle_c(self) noexcept:
        if self._buf is not NULL and received_top(self) <= self.read_offset:
            self._release()  # nothing is stored above the read head
        self._recv.shrink_c()

    def release_idle(self):
        """Give back memory the stream does not need while nothing moves: the reassembly
        buffer when every byte received was read, unused range capacity. Later data
        allocates again."""
        self.release_idle_c()

    cdef void shed_c(self) noexcept:
        """Before the half waits for reuse: a buffer too large to keep is given back (when
        nothing is stored above the read head)."""
        if self._cap > KEEP_REUSED_BUFFER and received_top(self) <= self.read_offset:
            self._release()

    # ------------------------------------------------------------------ reading

    def next_message_info(self):
        """``(total_len, available)`` for the message at the read head.

        ``total_len`` is -1 while its length prefix is incomplete (``available`` is then 0);
        ``available`` is how many of its unread body bytes are contiguous now.
        """
        cdef uint64_t length, avail
        cdef int size
        if self._reset or self._stopped:
            return (-1, 0)
        avail = contiguous_end_c(self) - self.read_offset
        if self._msg_total >= 0:
            return (self._msg_total, min(avail, self._msg_remaining))
        if not peek_prefix_c(self, &length, &size):
            return (-1, 0)
        return (length, min(avail - <uint64_t>size, length))

    def read_message(self, Py_ssize_t max_bytes):
        """Read up to ``max_bytes`` of the current message: ``(data, end)`` or ``None``.

        ``end`` is True when ``data`` completes the message; otherwise keep calling to get the
        rest.  An empty message yields ``(b"", True)``.  ``None`` when nothing of the current
        message is available yet.  Call ``should_update_window()`` after reading.
        """
        cdef bint end
        data = self.read_piece_c(max_bytes, &end)
        return None if data is None else (data, end)

    cdef object read_piece_c(self, Py_ssize_t max_bytes, bint* end):
        """``read_message`` without the tuple: the piece (bytes), ``end[0]`` set when it
        completes the message; None when nothing of the current message is available."""
        cdef uint64_t length, avail, n
        cdef int size
        if max_bytes <= 0:
            raise ValueError("max_bytes must be > 0")
        if self._reset or self._stopped:
            return None
        if self._msg_total < 0:
            if not peek_prefix_c(self, &length, &size):
                return None
            avail = contiguous_end_c(self) - self.read_offset - <uint64_t>size
            if length == 0:
                self._consume(size)
                end[0] = True
                return b""
            if avail == 0:
                return None
            self._consume(size)
            self._msg_total = <int64_t>length
            self._msg_remaining = length
        avail = contiguous_end_c(self) - self.read_offset
        if avail > self._msg_remaining:
            avail = self._msg_remaining
        if avail == 0:
            return None
        n = avail if avail < <uint64_t>max_bytes else <uint64_t>max_bytes
        data = _ring_bytes(self, <Py_ssize_t>n)
        self._consume(n)
        self._msg_remaining -= n
        end[0] = self._msg_remaining == 0
        if end[0]:
            self._msg_total = -1
        return data

    def message_ready(self, Py_ssize_t max_bytes):
        """True when ``read_message(max_bytes)`` would return a whole message, a message's end,
        or exactly ``max_bytes`` bytes (so partial deliveries come in full-size pieces).
        """
        return message_ready_c(self, max_bytes)

    def read(self, Py_ssize_t max_bytes):
        """Raw contiguous bytes at the read head, ignoring message framing (tests, debugging).

        Do not mix with ``read_message()`` on the same stream.
        """
        cdef uint64_t avail
        if max_bytes <= 0 or self._reset or self._stopped:
            return b""
        avail = contiguous_end_c(self) - self.read_offset
        if avail > <uint64_t>max_bytes:
            avail = <uint64_t>max_bytes
        if avail == 0:
            return b""
        data = _ring_bytes(self, <Py_ssize_t>avail)
        self._consume(avail)
        return data

    # ------------------------------------------------------------------ flow control

    def should_update_window(self):
        """True when the application consumed half the window since the last MAX_STREAM_DATA."""
        if self._reset or self._stopped or self.final_size >= 0:
            # No credit is needed once the final size is known.
            return False
        return self.window.should_update_c()

    def next_window(self, double now, double rtt):
        """Raise ``max_offset`` (auto-tuned, see FlowWindow) and return it for MAX_STREAM_DATA."""
        return self.window.update_c(now, rtt)

    @property
    def max_offset(self):
        """Flow-control limit: the peer may send up to this offset.  Can only be raised."""
        return self.window._limit

    @max_offset.setter
    def max_offset(self, uint64_t value):
        self.window.limit = value

    @property
    def readable(self):
        """Contiguous bytes available at the read head (raw, prefixes included)."""
        if self._reset or self._stopped:
            return 0
        return contiguous_end_c(self) - self.read_offset

    @property
    def buffered(self):
        """Received bytes held in memory (beyond the read head)."""
        if self._reset or self._stopped:
            return 0
        if not self._gaps:
            return self._contig - self.read_offset if self._contig > self.read_offset else 0
        return self._recv.overlap(self.read_offset, self.highest_offset)

    @property
    def allocated(self):
        """Bytes of memory allocated for the reassembly buffer."""
        return self._cap

    @property
    def data_complete(self):
        """True when every byte up to the final size was received."""
        return self.final_size >= 0 and contiguous_end_c(self) >= <uint64_t>self.final_size

    @property
    def is_finished(self):
        """True when the FIN was received and all data was read."""
        return (not self._reset and self.final_size >= 0
                and self.read_offset == <uint64_t>self.final_size)

    @property
    def at_message_boundary(self):
        """True when no message is partly read."""
        return self._msg_total < 0

    @property
    def is_truncated(self):
        """True when all data up to the final size arrived but ends inside a message.

        The peer broke the message framing: the connection should treat it as a
        PROTOCOL_VIOLATION.  Detected as soon as the data is complete, before reading.
        """
        cdef uint64_t length, final
        cdef int size
        if self._reset or self._stopped or not self.data_complete:
            return False
        final = <uint64_t>self.final_size
        if self._msg_total >= 0:
            return self.read_offset + self._msg_remaining > final
        if self.read_offset == final:
            return False
        if not peek_prefix_c(self, &length, &size):
            return True
        return self.read_offset + <uint64_t>size + length > final

    def __repr__(self):
        return ("RecvStream(id=%d, read=%d, highest=%d, max_offset=%d, final=%d, reset=%s)"
                % (self.stream_id, self.read_offset, self.highest_offset, self.window._limit,
                   self.final_size, self._reset))
