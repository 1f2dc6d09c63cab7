# C-level layout of dquic._paths: the network path of one connection (see _paths.pyx).
from libc.stdint cimport int64_t, uint32_t

from dquic._spaces cimport OWE_PATH_CHALLENGE, U64Queue


cdef class PathState:
    cdef public object peer_addr         # where the peer is now
    cdef public object previous_addr     # the last validated address, while a new one is validated
    cdef public long long bytes_received # on the current path (anti-amplification, RFC 9000 §8.1)
    cdef public long long bytes_sent
    cdef public bint validated           # the peer's address is validated
    cdef public object challenge         # (data, addr, deadline) of the PATH_CHALLENGE out, or None
    cdef uint32_t owed                   # OWE_PATH_CHALLENGE until the challenge is sent
    cdef U64Queue responses              # PATH_CHALLENGE data to echo, as big-endian integers

    cdef bint awaits_validation(self, bint is_client) noexcept
    cdef double deadline(self) except? -2.0
    cdef int on_challenge(self, const unsigned char* data) except -1
    cdef object on_response(self, object data)
    cdef int move(self, object addr, object challenge, double deadline) except -1
    cdef int validation_failed(self) except -1


# inline: asked for every packet built
cdef inline int64_t amplification_room(PathState p) noexcept:
    """Bytes we may still send to the peer's address (unbounded once it is validated)."""
    if p.validated:
        return (<int64_t>1) << 62
    return 3 * p.bytes_received - p.bytes_sent


cdef inline bint path_frames_owed(PathState p) noexcept:
    """PATH_RESPONSE or PATH_CHALLENGE frames are owed."""
    return p.responses.n > 0 or (p.owed & OWE_PATH_CHALLENGE) != 0
