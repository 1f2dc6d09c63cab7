# C-level API of dquic._packet: building and sealing packets (see _packet.pyx).
from libc.stdint cimport int64_t, uint32_t, uint64_t

from dquic._codec cimport Buffer
from dquic._spaces cimport _Sent, _Space
from dquic._wire cimport pn_length


cdef enum:
    # idle send buffers kept (one per thread building packets at the same time), and their
    # size: the largest max_datagram_size (Configuration.validate: at most 65527)
    SEND_SCRATCH_MAX = 16
    SEND_SCRATCH_SIZE = 65536

cdef Buffer take_scratch(Py_ssize_t size)
cdef void give_scratch(Buffer b)
cdef int start_packet(Buffer buf, _Space space, int ptype, object dcid, object scid, object token,
                      int64_t* pn_out, int* pn_len_out, Py_ssize_t* length_off) except -1
cdef int pad_to(Buffer buf, Py_ssize_t total) except -1
cdef object finish_packet(Buffer buf, object sealer, bint null_seal, Py_ssize_t hdr_end,
                          Py_ssize_t length_off, int64_t pn, int pn_len, unsigned char* dst)
cdef int put_frame(Buffer buf, Py_ssize_t end, _Sent rec, int kind, uint64_t a=*, uint64_t b=*,
                   uint64_t c=*, const unsigned char* tail=*, Py_ssize_t tail_len=*) except -1
cdef int pay(Buffer buf, uint32_t* owed, int kind, Py_ssize_t end, _Sent rec, uint64_t a=*,
             uint64_t b=*, uint64_t c=*, const unsigned char* tail=*,
             Py_ssize_t tail_len=*) except -1


cdef inline int start_short_packet(Buffer buf, _Space space, object dcid, int64_t* pn_out,
                                   int* pn_len_out) except -1:
    """``start_packet`` for a 1-RTT packet (short header, RFC 9000 §17.3.1; the sealer sets the
    key-phase bit), inline: run for every packet built."""
    cdef int64_t pn = space.next_pn
    cdef int pn_len = pn_length(pn, space.largest_acked)
    space.next_pn += 1
    buf._pos = 0
    buf._ngather = 0
    buf.c_push_uint(0x40 | (pn_len - 1), 1)
    buf.c_push_object(dcid)
    buf.c_push_uint((<uint64_t>pn) & ((((<uint64_t>1) << (8 * pn_len))) - 1), pn_len)
    pn_out[0] = pn
    pn_len_out[0] = pn_len
    return 0
