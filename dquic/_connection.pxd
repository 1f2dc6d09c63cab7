# C-level layout of dquic._connection (the sans-IO connection, see _connection.pyx).
#
# Other compiled modules may `cimport CoreConnection` to drive a connection without Python-level
# attribute lookups; the Python API (receive_datagram, datagrams_to_send, ...) is the contract.
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from dquic._cids cimport CidState
from dquic._codec cimport Buffer
from dquic._congestion cimport CongestionController, Pacer
from dquic._ranges cimport RangeSet
from dquic._paths cimport PathState
from dquic._recovery cimport Recovery, SentPacket
from dquic._sender cimport Sender
from dquic._spaces cimport FrameRecord, Pending, _Sent, _Space
from dquic._streams cimport FlowWindow, RecvStream, SendStream
from dquic._streamset cimport StreamSet, _Stream


cdef class CoreConnection:
    # public state
    cdef public object config
    cdef public bint is_client
    cdef public object original_dcid
    cdef public dict _work               # the driving endpoint's set of connections with output to build
    cdef public object peer_key
    cdef public long long packets_received
    cdef public long long packets_dropped
    cdef public long long duplicate_packets
    cdef public long long bytes_sent
    cdef public long long bytes_received
    cdef public list _spaces
    cdef public Recovery _recovery
    cdef public CongestionController _cc

    cdef public object _random
    cdef public object _reset_token
    cdef public int _state
    cdef public list _events
    # connection IDs
    cdef public CidState _cids
    # spaces, recovery
    cdef public _Space _hs
    cdef public _Space _app
    # transport parameters
    cdef public object _local_params
    cdef public object _peer_params
    cdef public double _peer_idle_timeout
    cdef public double _peer_max_ack_delay
    cdef public int _peer_ack_delay_exponent
    cdef public uint64_t _peer_max_datagram_frame
    # handshake and protection
    cdef public object _handshake
    cdef public list _seal
    cdef public list _open
    cdef public object _app_seal
    cdef public object _app_open
    cdef public bint _app_open_null
    cdef public bint _handshake_confirmed
    # streams and flow control
    cdef public StreamSet _sset
    cdef public Sender _tx
    cdef public Pacer _pacer
    # datagrams
    cdef public long long _datagram_seq
    # paths
    cdef public PathState _paths
    cdef public object _old_keys_deadline        # when to drop pre-key-update keys, or None
    cdef public object _retry_scid
    cdef public object _qlog
    # timers
    cdef public bint _started
    cdef public double _created
    cdef public double _last_activity
    cdef public double _idle_timeout
    cdef public object _close_deadline
    cdef public object _close_frame
    cdef public double _close_sent_at
    cdef public bint _local_close
    cdef public bint _await_close_reply
    cdef public bint _close_reply_owed
    cdef public bint _close_resend
    cdef public int _closing_rx
    cdef public double _now_hint
    cdef public double _idle_released_at
    # configuration copied at construction (hot path)
    cdef public int _cid_len
    cdef public Py_ssize_t _mds
    cdef public Py_ssize_t _max_ack_ranges
    cdef public Py_ssize_t _ack_ranges_per_frame
    cdef public int _ack_eliciting_threshold
    cdef public int _ack_delay_exponent
    cdef public double _max_ack_delay
    # scratch buffers and recycled records, shared by all connections (see _connection.pyx)
    cdef public Buffer _rbuf
    cdef public list _free_sent

    # --- internal C API ---
    cdef int _stream_frame_at(self, const uint8_t* p, Py_ssize_t n, Py_ssize_t pos) except -1
    cdef double _pto(self)
    cdef int _fill_timers(self, double* t) except -1
    cdef bint _handshake_pending(self)
    cdef double _effective_idle_timeout(self)
    cdef bint _idle_release_pending(self)
    cdef double _idle_release_time(self)
    cdef int _release_idle(self) except -1
    cdef int64_t _amplification_room(self)
    cdef int _set_app_protection(self, object seal, object open_) except -1
    cdef bint _short_dcid_ok(self, const uint8_t* dcid)
    cdef bint _awaits_validation(self)
    cdef bint _dcid_chosen_by_us(self, const uint8_t* dcid)
    # receiving
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
    cdef int _dispatch_frame(self, int space_id, object frame, double now) except -1
    cdef int _on_ack_c(self, int space_id, list ranges, uint64_t ack_delay, double now) except -1
    # sending
    cdef list _transmit(self, double now, Py_ssize_t max_bytes, Py_ssize_t max_segments,
                        bint trains)
    cdef object _send_close(self, double now)
