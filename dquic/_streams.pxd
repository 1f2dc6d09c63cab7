# cython: language_level=3
"""C-level interface of dquic._streams: stream send buffers, receive reassembly, flow windows.

Compiled modules ``cimport`` these classes and call the ``*_c`` methods with C integers and
pointers; the Python methods of the same names wrap them.
"""
cimport cython
from libc.stdint cimport int64_t, uint8_t, uint64_t

from dquic._ranges cimport RangeSet
from dquic._wire cimport varint_get


@cython.final
cdef class FlowWindow:
    cdef uint64_t _limit              # advertised limit (absolute offset)
    cdef readonly uint64_t window     # current window size (grows by auto-tuning up to maximum)
    cdef readonly uint64_t maximum    # the window never grows beyond this
    cdef readonly uint64_t consumed   # total bytes consumed by the application so far
    cdef uint64_t _consumed_at_update
    cdef double _last_update          # time of the last update(); < 0 before the first

    cdef void reset_c(self, uint64_t initial, uint64_t maximum) noexcept
    cdef void consumed_c(self, uint64_t n) noexcept
    cdef bint should_update_c(self) noexcept
    cdef uint64_t update_c(self, double now, double rtt) noexcept


cdef class _StreamHalf:
    cdef readonly uint64_t stream_id
    cdef uint8_t* _buf                # the half's bytes (PyMem), _cap allocated, a ring from _head
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _head
    cdef uint64_t _reset_code
    cdef bint _reset

    cdef void _renew_half(self, uint64_t stream_id) noexcept


@cython.final
cdef class SendStream(_StreamHalf):
    # _buf: unacknowledged [_base, write_offset) from _buf[_head]
    cdef uint64_t _base               # absolute offset of _buf[_head] (== acknowledged prefix)
    cdef readonly uint64_t write_offset     # total bytes written (prefixes included)
    cdef uint64_t _offset_sent
    cdef readonly uint64_t bytes_in_flight  # sent and neither acknowledged nor declared lost
    cdef uint64_t _bytes_retransmitted
    cdef readonly uint64_t max_buffer       # 0 = unlimited
    cdef uint64_t _msg_remaining      # bytes still owed to a message opened with begin_message()
    cdef uint64_t _final_size
    cdef RangeSet _acked              # acknowledged byte ranges (including the prefix)
    cdef RangeSet _retx               # lost byte ranges to send again
    cdef RangeSet _inflight           # sent byte ranges neither acknowledged nor lost
    cdef bint _plain                  # the usual case, kept without the two sets above (left
                                      # empty): acknowledged is [0, _base), in flight
                                      # [_base, _offset_sent), nothing lost (_materialize)
    cdef bint _finished
    cdef bint _fin_pending
    cdef bint _lost                   # _retx is not empty (read without touching the set)
    cdef readonly bint fin_sent
    cdef readonly bint fin_acked

    cdef int _append(self, const uint8_t* data, Py_ssize_t n) except -1
    cdef Py_ssize_t write_message_c(self, object data) except -1
    cdef int _check_writable(self, uint64_t n) except -1
    cdef void _drop_acked_prefix(self) noexcept
    cdef void _release_to(self, uint64_t prefix) noexcept
    cdef int _materialize(self) except -1
    cpdef finish(self)

    cdef int next_chunk_c(self, Py_ssize_t max_len, uint64_t flow_limit, uint64_t* offset,
                          Py_ssize_t* length, bint* fin) except -1
    cdef const uint8_t* data_at(self, uint64_t offset) noexcept
    cdef Py_ssize_t contiguous_at(self, uint64_t offset) noexcept
    cdef int on_acked_c(self, uint64_t offset, uint64_t length, bint fin) except -1
    cdef int on_lost_c(self, uint64_t offset, uint64_t length, bint fin) except -1
    cdef bint has_pending_c(self) noexcept
    cdef void release_idle_c(self) noexcept
    cdef void renew_c(self, uint64_t stream_id) noexcept
    cdef void shed_c(self) noexcept


@cython.final
cdef class RecvStream(_StreamHalf):
    # _buf: a ring; the byte at absolute offset x is _buf[(_head + x - read_offset) % _cap]
    cdef readonly uint64_t read_offset     # bytes consumed by the application, prefixes included
    cdef readonly uint64_t highest_offset  # largest offset + len received (or RESET_STREAM's final size)
    cdef readonly int64_t final_size  # from FIN or RESET_STREAM; -1 while unknown
    cdef int64_t _msg_total           # length of the message being read, -1 at a boundary
    cdef uint64_t _msg_remaining      # body bytes of that message not yet read
    cdef RangeSet _recv               # byte ranges received (read ones included), while _gaps;
    cdef bint _gaps                   # else left empty: what arrived is [0, _contig) (the usual
                                      # case, kept without touching the set)
    cdef uint64_t _contig             # the end of those received without a gap from offset 0
                                      # (kept here: the readiness checks need not touch _recv)
    cdef readonly FlowWindow window   # behind max_offset
    cdef bint _stopped

    cdef int _ensure(self, uint64_t end) except -1
    cdef void _consume(self, uint64_t n) noexcept
    cdef void _release(self) noexcept

    cdef int64_t insert_c(self, uint64_t offset, const uint8_t* data, Py_ssize_t n, bint fin) except -1
    cdef object read_piece_c(self, Py_ssize_t max_bytes, bint* end)
    cdef void release_idle_c(self) noexcept
    cdef void renew_c(self, uint64_t stream_id, uint64_t max_buffer, uint64_t initial_window) noexcept
    cdef void shed_c(self) noexcept


cdef inline uint64_t received_top(RecvStream r) noexcept:
    """The end of the highest byte range received (0 before any)."""
    if not r._gaps:
        return r._contig
    return r._recv._r[2 * r._recv._n - 1] if r._recv._n else 0


cdef inline uint64_t contiguous_end_c(RecvStream r) noexcept:
    """The end of the bytes received without a gap from offset 0 (read ones included)."""
    return r._contig


cdef inline bint peek_prefix_c(RecvStream r, uint64_t* length, int* size) noexcept:
    """The length prefix of the message at the read head, if it has arrived whole."""
    cdef uint64_t end = contiguous_end_c(r)
    cdef int s, i
    cdef uint8_t tmp[8]
    if end <= r.read_offset or r._buf is NULL:
        return False
    s = 1 << (r._buf[r._head] >> 6)
    if end - r.read_offset < <uint64_t>s:
        return False
    if r._head + s <= r._cap:
        length[0] = varint_get(r._buf + r._head, s)
    else:
        # (the prefix wraps around the end of the ring)
        for i in range(s):
            tmp[i] = r._buf[(r._head + i) % r._cap]
        length[0] = varint_get(tmp, s)
    size[0] = s
    return True


cdef inline bint message_ready_c(RecvStream r, Py_ssize_t max_bytes) noexcept:
    """``RecvStream.message_ready``: a whole message, a message's end or ``max_bytes`` bytes
    of one are readable. (Inline, with no method call: it runs several times per message.)"""
    cdef uint64_t end, avail, want
    cdef int size
    if r._reset or r._stopped or max_bytes <= 0:
        return False
    end = contiguous_end_c(r)
    if end <= r.read_offset:
        return False
    avail = end - r.read_offset
    if r._msg_total >= 0:
        want = r._msg_remaining
    else:
        if not peek_prefix_c(r, &want, &size):
            return False
        avail -= <uint64_t>size
    if want > <uint64_t>max_bytes:
        want = <uint64_t>max_bytes
    return avail >= want
