# cython: language_level=3
"""C-level interface of dquic._streams: stream send buffers, receive reassembly, flow windows.

Compiled modules ``cimport`` these classes and call the ``*_c`` methods with C integers and
pointers; the Python methods of the same names wrap them.
"""
from libc.stdint cimport int64_t, uint8_t, uint64_t

from dquic._ranges cimport RangeSet


cdef class FlowWindow:
    cdef uint64_t _limit              # advertised limit (absolute offset)
    cdef uint64_t _window             # current window size
    cdef uint64_t _maximum            # the window never grows beyond this
    cdef uint64_t _consumed           # bytes consumed by the application
    cdef uint64_t _consumed_at_update
    cdef double _last_update          # time of the last update(); < 0 before the first

    cdef void consumed_c(self, uint64_t n) noexcept
    cdef bint should_update_c(self) noexcept
    cdef uint64_t update_c(self, double now, double rtt) noexcept


cdef class SendStream:
    cdef readonly uint64_t stream_id
    cdef uint8_t* _buf                # ring: unacknowledged [_base, _write_offset) from _buf[_head]
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _head
    cdef uint64_t _base               # absolute offset of _buf[_head] (== acknowledged prefix)
    cdef uint64_t _write_offset
    cdef uint64_t _offset_sent
    cdef uint64_t _inflight_bytes
    cdef uint64_t _bytes_retransmitted
    cdef uint64_t _max_buffer         # 0 = unlimited
    cdef uint64_t _msg_remaining      # bytes still owed to a message opened with begin_message()
    cdef uint64_t _reset_code
    cdef uint64_t _final_size
    cdef RangeSet _acked              # acknowledged byte ranges (including the prefix)
    cdef RangeSet _retx               # lost byte ranges to send again
    cdef RangeSet _inflight           # sent byte ranges neither acknowledged nor lost
    cdef bint _finished
    cdef bint _fin_pending
    cdef bint _fin_sent
    cdef bint _fin_acked
    cdef bint _reset

    cdef int _append(self, const uint8_t* data, Py_ssize_t n) except -1
    cdef int _check_writable(self, uint64_t n) except -1
    cdef void _drop_acked_prefix(self) noexcept

    cdef int next_chunk_c(self, Py_ssize_t max_len, uint64_t flow_limit, uint64_t* offset,
                          Py_ssize_t* length, bint* fin) except -1
    cdef const uint8_t* data_at(self, uint64_t offset) noexcept
    cdef Py_ssize_t contiguous_at(self, uint64_t offset) noexcept
    cdef int on_acked_c(self, uint64_t offset, uint64_t length, bint fin) except -1
    cdef int on_lost_c(self, uint64_t offset, uint64_t length, bint fin) except -1
    cdef bint has_pending_c(self) noexcept
    cdef void release_idle_c(self) noexcept


cdef class RecvStream:
    cdef readonly uint64_t stream_id
    cdef uint8_t* _buf                # byte at absolute offset x is _buf[_head + x - _read_offset]
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _head
    cdef uint64_t _read_offset
    cdef uint64_t _highest
    cdef int64_t _final_size          # -1 while unknown
    cdef uint64_t _reset_code
    cdef int64_t _msg_total           # length of the message being read, -1 at a boundary
    cdef uint64_t _msg_remaining      # body bytes of that message not yet read
    cdef RangeSet _recv               # byte ranges received (read ones included)
    cdef FlowWindow _fw
    cdef bint _reset
    cdef bint _stopped

    cdef int _ensure(self, uint64_t end) except -1
    cdef uint64_t _contiguous_end(self) noexcept
    cdef void _consume(self, uint64_t n) noexcept
    cdef int _peek_prefix(self, uint64_t* length, int* size) noexcept
    cdef void _release(self) noexcept

    cdef int64_t insert_c(self, uint64_t offset, const uint8_t* data, Py_ssize_t n, bint fin) except -1
    cdef void release_idle_c(self) noexcept
