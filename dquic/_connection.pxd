# C-level layout of dquic._connection (the sans-IO connection, see _connection.pyx).
#
# Other compiled modules may `cimport CoreConnection` to drive a connection without Python-level
# attribute lookups; the Python API (receive_datagram, datagrams_to_send, ...) is the contract.
# The connection's state is declared at the root of its class chain (_establish.pxd: the
# establishment), the receive path in _receive.pxd.
from libc.stdint cimport int64_t

from dquic._receive cimport PacketReceiver


cdef class CoreConnection(PacketReceiver):
    # --- internal C API ---
    cdef int _fill_timers(self, double* t) except -1
    cdef bint _handshake_pending(self)
    cdef double _effective_idle_timeout(self)
    cdef bint _idle_release_pending(self)
    cdef double _idle_release_time(self)
    cdef int _release_idle(self) except -1
    cdef int64_t _amplification_room(self)
    # closing and migration (the chain's lower links call them)
    cdef int _protocol_error(self, object exc) except -1
    cdef int _enter_closing(self, int state, object now) except -1
    cdef int _emit_terminated(self, object ev) except -1
    cdef int _on_peer_address_change(self, object addr, double now) except -1
    # sending
    cdef list _transmit(self, double now, Py_ssize_t max_bytes, Py_ssize_t max_segments,
                        bint trains)
    cdef object _send_close(self, double now)
