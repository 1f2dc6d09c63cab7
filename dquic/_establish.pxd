# C-level layout of dquic._establish: the root of the core connection's class chain, which
# declares the state of a connection (every class of the chain, and the Python API, reads it) and
# owns the establishment of the connection (see _establish.pyx).
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from dquic._cids cimport CidState
from dquic._codec cimport Buffer
from dquic._congestion cimport CongestionController, Pacer
from dquic._paths cimport PathState
from dquic._recovery cimport Recovery
from dquic._sender cimport Sender
from dquic._spaces cimport _Space
from dquic._streamset cimport StreamSet

cdef enum:
    # connection states
    _HANDSHAKING = 0
    _ESTABLISHED = 1
    _CLOSING = 2
    _DRAINING = 3
    _TERMINATED = 4


cdef class ConnectionSetup:
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
    cdef public int _ack_eliciting_threshold
    cdef public int _ack_delay_exponent
    cdef public double _max_ack_delay
    # scratch buffers and recycled records, shared by all connections (see _connection.pyx)
    cdef public Buffer _rbuf
    cdef public list _free_sent

    # the establishment (_establish.pyx)
    cdef int _set_app_protection(self, object seal, object open_) except -1
    cdef int _confirm_handshake(self) except -1
    cdef int _on_retry(self, object hdr, object packet) except -1
    cdef int _on_version_negotiation(self, object hdr) except -1
    # closing, which the establishment and the receive path call: CoreConnection's
    # (_connection.pyx, the top of the chain)
    cdef int _protocol_error(self, object exc) except -1
    cdef int _enter_closing(self, int state, object now) except -1
    cdef int _emit_terminated(self, object ev) except -1


cdef inline void note_work(ConnectionSetup conn):
    # tell the endpoint driving this connection (if any) that it has output to build: the
    # endpoint then polls only the connections that asked, not all of them
    cdef dict work = conn._work
    if work is not None:
        work[conn] = None


cdef inline void flush_noted(ConnectionSetup conn):
    # the stream table scheduled a stream, or the sender has more to send than it built: ask
    # the driving endpoint to build output
    if conn._sset.noted or conn._tx.noted:
        conn._sset.noted = False
        conn._tx.noted = False
        note_work(conn)
