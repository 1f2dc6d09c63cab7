# Inline wire primitives shared by every compiled module: variable-length integers (RFC 9000
# §16), fixed-size big-endian fields, and packet-number truncation and recovery (RFC 9000 §17.1,
# Appendix A.2 and A.3).
#
# A .pxd without a .pyx: every function is `cdef inline`, compiled into each module that
# cimports it, so there is no dquic._wire module at run time and no call through a pointer:
#
#     from dquic._wire cimport varint_len, varint_read, varint_write
#
# They work on C pointers and C integers and check nothing their callers have not: the pointer
# functions read or write exactly the bytes they are told are there.
from libc.stdint cimport int64_t, uint64_t


# ------------------------------------------------------------------------------ varints
cdef inline int varint_len(uint64_t v) noexcept nogil:
    """Size in bytes (1, 2, 4 or 8) of the minimal varint encoding of v; 0 if v >= 2**62."""
    if v < 0x40:
        return 1
    if v < 0x4000:
        return 2
    if v < 0x40000000:
        return 4
    if v < ((<uint64_t>1) << 62):
        return 8
    return 0


cdef inline uint64_t varint_get(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    """The value of the n-byte varint at p (n = 1 << (p[0] >> 6), all n bytes present)."""
    if n == 1:
        return p[0]
    if n == 2:
        return ((<uint64_t>(p[0] & 0x3F)) << 8) | p[1]
    if n == 4:
        return (((<uint64_t>(p[0] & 0x3F)) << 24) | ((<uint64_t>p[1]) << 16)
                | ((<uint64_t>p[2]) << 8) | p[3])
    return (((<uint64_t>(p[0] & 0x3F)) << 56) | ((<uint64_t>p[1]) << 48)
            | ((<uint64_t>p[2]) << 40) | ((<uint64_t>p[3]) << 32)
            | ((<uint64_t>p[4]) << 24) | ((<uint64_t>p[5]) << 16)
            | ((<uint64_t>p[6]) << 8) | p[7])


cdef inline Py_ssize_t varint_read(const unsigned char* p, Py_ssize_t avail, uint64_t* out) noexcept nogil:
    """Decode the varint at p (avail bytes there) into out; return the bytes consumed, or 0 if
    fewer than it needs are available."""
    cdef Py_ssize_t n
    if avail < 1:
        return 0
    n = (<Py_ssize_t>1) << (p[0] >> 6)
    if avail < n:
        return 0
    out[0] = varint_get(p, n)
    return n


cdef inline void varint_write(unsigned char* p, uint64_t v, int n) noexcept nogil:
    """Write v as an n-byte varint (n in 1, 2, 4, 8; v must fit, see varint_len)."""
    if n == 1:
        p[0] = <unsigned char>v
    elif n == 2:
        p[0] = <unsigned char>(0x40 | (v >> 8))
        p[1] = <unsigned char>v
    elif n == 4:
        p[0] = <unsigned char>(0x80 | (v >> 24))
        p[1] = <unsigned char>(v >> 16)
        p[2] = <unsigned char>(v >> 8)
        p[3] = <unsigned char>v
    else:
        p[0] = <unsigned char>(0xC0 | (v >> 56))
        p[1] = <unsigned char>(v >> 48)
        p[2] = <unsigned char>(v >> 40)
        p[3] = <unsigned char>(v >> 32)
        p[4] = <unsigned char>(v >> 24)
        p[5] = <unsigned char>(v >> 16)
        p[6] = <unsigned char>(v >> 8)
        p[7] = <unsigned char>v


cdef inline uint64_t varint_prefixed_payload_len(uint64_t total) noexcept nogil:
    """Payload bytes of a ``varint(length) || payload`` item that takes ``total`` bytes in all
    (a stream message, PROTOCOL.md §8)."""
    if total >= 1 and varint_len(total - 1) == 1:
        return total - 1
    if total >= 2 and varint_len(total - 2) == 2:
        return total - 2
    if total >= 4 and varint_len(total - 4) == 4:
        return total - 4
    if total >= 8 and varint_len(total - 8) == 8:
        return total - 8
    return total


# ------------------------------------------------------------------------------ fixed-size fields
cdef inline uint64_t be_read(const unsigned char* p, int n) noexcept nogil:
    """The n-byte big-endian unsigned integer at p (a truncated packet number, a version)."""
    cdef uint64_t v = 0
    cdef int i
    for i in range(n):
        v = (v << 8) | p[i]
    return v


cdef inline void be_write(unsigned char* p, uint64_t v, int n) noexcept nogil:
    """Write the low n bytes of v at p, big-endian."""
    cdef int i
    for i in range(n - 1, -1, -1):
        p[i] = <unsigned char>v
        v >>= 8


# ------------------------------------------------------------------------------ packet numbers
cdef inline int pn_length(int64_t pn, int64_t largest_acked) except -1:
    """Bytes (1..4) needed to send packet number ``pn`` truncated when the peer has acknowledged
    up to ``largest_acked`` (negative: nothing yet): enough to represent twice the packets in
    flight (RFC 9000 §17.1, Appendix A.2). ValueError when ``largest_acked >= pn`` or more than
    2**31 packets are unacknowledged."""
    cdef int64_t unacked
    if largest_acked < 0:
        unacked = pn + 1
    else:
        if largest_acked >= pn:
            raise ValueError("largest_acked must be smaller than full_pn")
        unacked = pn - largest_acked
    if unacked < (1 << 7):
        return 1
    if unacked < (1 << 15):
        return 2
    if unacked < (1 << 23):
        return 3
    if unacked < 0x80000000:
        return 4
    raise ValueError("too many unacknowledged packets to encode the packet number")


cdef inline uint64_t pn_truncate(uint64_t pn, int nbytes) noexcept nogil:
    """The low ``nbytes`` bytes of ``pn``, as sent on the wire."""
    return pn & (((<uint64_t>1) << (8 * nbytes)) - 1)


cdef inline int64_t pn_decode(int64_t truncated, int nbits, int64_t expected) noexcept nogil:
    """The full packet number whose low ``nbits`` bits are ``truncated`` and which is closest
    to ``expected`` (the largest packet number received in the space plus one, 0..2**62), RFC
    9000 Appendix A.3. Never negative; above 2**62-1 only when no packet number fits."""
    cdef int64_t win = (<int64_t>1) << nbits
    cdef int64_t hwin = win >> 1
    cdef int64_t candidate = (expected & ~(win - 1)) | truncated
    if candidate <= expected - hwin and candidate < ((<int64_t>1) << 62) - win:
        return candidate + win
    if candidate > expected + hwin and candidate >= win:
        return candidate - win
    return candidate
