# C-level layout of dquic._cids: one connection's connection IDs (see _cids.pyx).
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcmp

from dquic._spaces cimport U64Queue


cdef class CidState:
    cdef public object host_cid          # ours, as the peer addresses us now
    cdef public object peer_cid          # the peer's, as we address it now
    cdef public dict host_cids           # sequence -> our connection ID
    cdef public long long host_cid_seq   # the last sequence number we issued
    cdef public dict peer_cids           # sequence -> (the peer's connection ID, reset token or None)
    cdef public long long peer_cid_seq   # the sequence number of peer_cid
    cdef public long long retired_below  # peer IDs with lower sequence numbers are retired
    cdef public set retiring             # peer sequences retired, RETIRE_CONNECTION_ID not yet acknowledged
    cdef public bint peer_cid_set_by_server
    cdef public list changes             # ("add"/"remove", cid) / ("reset"/"unreset", token) for the
                                         # endpoint's routing; None while there is nothing to report
    cdef U64Queue new_cids               # sequence numbers of our IDs to announce (NEW_CONNECTION_ID)
    cdef U64Queue retire_cids            # sequence numbers of the peer's IDs to retire
    cdef object _config                  # its new_connection_id(random) makes our IDs
    cdef object _random
    cdef Py_ssize_t _active_limit        # our active_connection_id_limit
    cdef Py_ssize_t _cid_len

    cdef void change(self, object item)
    cdef bint knows(self, object cid)
    cdef int issue(self) except -1
    cdef int issue_spares(self, Py_ssize_t limit) except -1
    cdef bint switch_peer_cid(self) except -1
    cdef int retire_peer_cid(self, uint64_t seq) except -1
    cdef int server_chose(self, object scid) except -1
    cdef int on_new_connection_id(self, uint64_t seq, object cid, object token,
                                  uint64_t retire_prior_to) except -1
    cdef int on_retire_connection_id(self, uint64_t seq) except -1
    cdef int on_retire_acked(self, uint64_t seq) except -1
    cdef int on_new_cid_lost(self, uint64_t seq) except -1
    cdef int on_retire_lost(self, uint64_t seq) except -1


# inline: asked for every packet received / built
cdef inline bint cid_is_current(CidState c, const uint8_t* dcid) noexcept:
    """``dcid`` (``cid_len`` bytes) is ``c.host_cid``: the common case, without an object."""
    hc = c.host_cid
    return (PyBytes_CheckExact(hc) and PyBytes_GET_SIZE(hc) == c._cid_len
            and memcmp(dcid, PyBytes_AS_STRING(hc), c._cid_len) == 0)


cdef inline bint cid_frames_owed(CidState c) noexcept:
    """NEW_CONNECTION_ID or RETIRE_CONNECTION_ID frames are owed."""
    return c.new_cids.n > 0 or c.retire_cids.n > 0
