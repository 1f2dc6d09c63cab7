# Typed interface of dquic._protection for other compiled modules (see _protection.pyx).
# libcrypto objects are held as void* here so that modules cimporting this file need no
# OpenSSL headers.
from libc.stdint cimport int64_t, uint64_t

from dquic._codec cimport Gather


cdef class OneRttKeys


cdef class _HeaderProtection:
    cdef object _ctx
    cdef object _key
    cdef bint _chacha
    cdef bint _reset
    cdef bint _openssl
    cdef void* _octx
    cdef int _init_openssl(self) except -1
    cdef int c_mask(self, const unsigned char* sample, unsigned char* mask) except -1
    cdef void release_c(self) noexcept
    cpdef bytes mask(self, sample)
    cdef bytes _ecb(self, const unsigned char* sample)


cdef class _Keys:
    cdef readonly bytes secret
    cdef public object aead
    cdef unsigned char iv[12]
    cdef unsigned char _key[32]
    cdef bint _chacha
    cdef bint _openssl
    cdef const void* _cipher
    cdef void* _ectx
    cdef void* _dctx
    cdef int _setup(self, cipher, bytes key, bytes iv, backend) except -1
    cdef void* _context(self, bint sealing) except NULL
    cdef void release_c(self) noexcept
    cdef void c_nonce(self, uint64_t pn, unsigned char* n) noexcept nogil
    cdef bytes nonce(self, uint64_t pn)
    cdef int c_seal(self, uint64_t pn, const unsigned char* ad, Py_ssize_t adlen,
                    const unsigned char* src, Py_ssize_t n, unsigned char* dst,
                    const Gather* g=*, int ng=*) except -1
    cdef object c_open(self, uint64_t pn, const unsigned char* ad, Py_ssize_t adlen,
                       const unsigned char* src, Py_ssize_t n, unsigned char* into=*)


cdef class PacketProtection:
    cdef readonly OneRttKeys keys
    cdef readonly bint sending
    cdef readonly int tag_size
    cdef bytes c_seal(self, const unsigned char* header, Py_ssize_t hlen,
                      const unsigned char* payload, Py_ssize_t plen, int64_t packet_number)
    cdef Py_ssize_t c_seal_into(self, const unsigned char* header, Py_ssize_t hlen,
                                const unsigned char* payload, Py_ssize_t plen,
                                int64_t packet_number, unsigned char* dst,
                                const Gather* g=*, int ng=*) except -1
    cdef object c_open(self, const unsigned char* packet, Py_ssize_t n, Py_ssize_t pn_offset,
                       int64_t expected_packet_number, int64_t* packet_number, unsigned char* first_byte,
                       unsigned char* into=*)


cdef class OneRttKeys:
    cdef readonly str cipher
    cdef readonly str backend
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
    cdef bytes _seal_c(self, const unsigned char* h, Py_ssize_t hlen, const unsigned char* payload,
                       Py_ssize_t plen, object payload_obj, int64_t packet_number)
    cdef Py_ssize_t _seal_into(self, const unsigned char* h, Py_ssize_t hlen,
                               const unsigned char* payload, Py_ssize_t plen, object payload_obj,
                               int64_t packet_number, unsigned char* dst,
                               const Gather* g=*, int ng=*) except -1
    cdef _fail(self)
    cdef tuple _open(self, packet, pn_offset_obj, expected_obj)
    cdef object _open_c(self, const unsigned char* d, Py_ssize_t dlen, Py_ssize_t pn_offset,
                        int64_t expected, int64_t* pn_out, unsigned char* first_out,
                        unsigned char* into=*)
