# C-level layout of dquic._receive: the receive path of the core connection (see _receive.pyx).
from libc.stdint cimport int64_t, uint8_t, uint64_t

from dquic._establish cimport ConnectionSetup
from dquic._spaces cimport _Space


cdef class PacketReceiver(ConnectionSetup):
    cdef double _pto(self)
    cdef bint _short_dcid_ok(self, const uint8_t* dcid)
    cdef bint _awaits_validation(self)
    cdef bint _dcid_chosen_by_us(self, const uint8_t* dcid)
    cdef int _receive_short(self, object data, const uint8_t* p, Py_ssize_t start,
                            Py_ssize_t end, object addr, double now) except -1
    cdef int _receive_long(self, object hdr, object data, Py_ssize_t start, Py_ssize_t end,
                           object addr, double now) except -1
    cdef int _after_open(self, int space_id, _Space space, object opener, int64_t pn, int first,
                         const uint8_t* payload, Py_ssize_t plen, object pobj, Py_ssize_t poff,
                         bint is_long, object hdr, Py_ssize_t packet_len, object addr,
                         double now, bint to_our_cid) except -1
    cdef int _process_frames(self, int space_id, const uint8_t* p, Py_ssize_t n, object pobj,
                             Py_ssize_t poff, double now, bint long_header, bint* eliciting,
                             bint* non_probing) except -1
    cdef int _stream_frame_at(self, const uint8_t* p, Py_ssize_t n, Py_ssize_t pos) except -1
    cdef int _dispatch_frame(self, int space_id, object frame, double now) except -1
    cdef int _undecryptable(self, object packet, double now) except -1
    cdef int _on_ack_c(self, int space_id, list ranges, uint64_t ack_delay, double now) except -1
    # migration: CoreConnection's (_connection.pyx)
    cdef int _on_peer_address_change(self, object addr, double now) except -1
