# cython: language_level=3
"""The network path of one connection: the peer's address and its validation (RFC 9000 §8-9;
compiled).

Theory of operation
-------------------
A ``PathState`` knows where the peer is (``peer_addr``), whether that address is validated, and
what was received from and sent to it since it became the path: until the address is validated
we send at most three times what we received there (``amplification_room``, RFC 9000 §8.1).

When the peer's highest-numbered non-probing packet comes from another address the connection
moves the path there (``move``): the counters start again, the address is no longer validated,
and a PATH_CHALLENGE with fresh random data is owed; the matching PATH_RESPONSE validates it
(``on_response``, which reports the move) and no answer by the deadline (the connection's
TIMER_PATH_VALIDATION) takes the path back to the last validated address
(``validation_failed``). PATH_CHALLENGEs the peer sends are echoed (``on_challenge``: at most
``MAX_PENDING_PATH_RESPONSES`` wait, more are dropped).

The connection writes the frames (it builds the packets); nothing here knows the connection.
"""
from libc.stdint cimport uint64_t

from dquic._spaces cimport OWE_PATH_CHALLENGE, q_clear, q_push
from dquic._wire cimport be_read

__all__ = ["PathState", "MAX_PENDING_PATH_RESPONSES"]

#: PATH_RESPONSEs waiting to be sent, at most (more challenges are not answered)
MAX_PENDING_PATH_RESPONSES = 4
cdef uint32_t _MAX_RESPONSES = MAX_PENDING_PATH_RESPONSES


cdef class PathState:
    """Where the peer is and whether its address is validated (see the module docstring)."""

    def __init__(self, peer_addr, bint validated):
        self.peer_addr = peer_addr
        self.previous_addr = None
        self.bytes_received = 0
        self.bytes_sent = 0
        self.validated = validated
        self.challenge = None

    def __dealloc__(self):
        q_clear(&self.responses)

    cdef bint awaits_validation(self, bint is_client) noexcept:
        """Server whose client address is not validated and no path validation runs."""
        return not self.validated and not is_client and self.challenge is None

    cdef double deadline(self) except? -2.0:
        """When the PATH_CHALLENGE out is given up, or -1."""
        return -1.0 if self.challenge is None else self.challenge[2]

    cdef int on_challenge(self, const unsigned char* data) except -1:
        """The peer's PATH_CHALLENGE (8 bytes of data): owe the PATH_RESPONSE."""
        if self.responses.n < _MAX_RESPONSES:
            q_push(&self.responses, be_read(data, 8))
        return 0

    cdef object on_response(self, object data):
        """A PATH_RESPONSE: if it answers our challenge the address is validated. Returns the
        address the peer moved from when that completes a move, else None."""
        pc = self.challenge
        if pc is None or data != pc[0]:
            return None
        self.challenge = None
        self.owed &= ~OWE_PATH_CHALLENGE
        self.validated = True
        old = self.previous_addr
        self.previous_addr = None
        if old is not None and old != self.peer_addr:
            return old
        return None

    cdef int move(self, object addr, object challenge, double deadline) except -1:
        """The peer moved to ``addr``: validate it with ``challenge`` (8 bytes) by ``deadline``."""
        if self.previous_addr is None:
            self.previous_addr = self.peer_addr
        self.peer_addr = addr
        self.bytes_received = 0
        self.bytes_sent = 0
        self.validated = False
        self.challenge = (challenge, addr, deadline)
        self.owed |= OWE_PATH_CHALLENGE
        return 0

    cdef int validation_failed(self) except -1:
        """No PATH_RESPONSE in time: back to the last validated path (RFC 9000 §9.3.2)."""
        self.challenge = None
        self.owed &= ~OWE_PATH_CHALLENGE
        if self.previous_addr is not None:
            self.peer_addr = self.previous_addr
            self.previous_addr = None
        self.validated = True
        return 0
