# Typed interface of dquic._protection for other compiled modules (see _protection.pyx).
from libc.stdint cimport int64_t, uint64_t


cdef class OneRttKeys


cdef class _HeaderProtection:
    cdef object _ctx
    cdef object _key
    cdef bint _chacha
    cdef bint _reset
    cpdef bytes mask(self, sample)


cdef class _Keys:
    cdef readonly bytes secret
    cdef public object aead
    cdef unsigned char iv[12]
    cdef bytes nonce(self, uint64_t pn)


cdef class PacketProtection:
    cdef readonly OneRttKeys keys
    cdef readonly bint sending
    cdef readonly int tag_size


cdef class OneRttKeys:
    cdef readonly str cipher
    cdef readonly object confidentiality_limit
    cdef readonly int64_t integrity_limit
    cdef readonly int64_t key_update_interval
    cdef int64_t _conf_limit
    cdef public _HeaderProtection _hp_send
    cdef public _HeaderProtection _hp_recv
    cdef public _Keys _send
    cdef public _Keys _recv
    cdef public _Keys _prev_recv
    cdef public _Keys _next_recv
    cdef int64_t _recv_first_pn
    cdef readonly int key_phase
    cdef readonly int64_t generation
    cdef readonly int64_t key_updates
    cdef readonly int64_t packets_sent_in_phase
    cdef readonly int64_t packets_received_in_phase
    cdef readonly int64_t failed_decryptions
    cdef readonly bint integrity_limit_reached
    cdef readonly PacketProtection sender
    cdef readonly PacketProtection receiver
    cdef _rotate(self)
    cdef bytes _seal(self, plain_header, plain_payload, packet_number)
    cdef _fail(self)
    cdef tuple _open(self, packet, pn_offset_obj, expected_obj)
