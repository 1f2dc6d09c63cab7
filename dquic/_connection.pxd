# C-level layout of dquic._connection (the sans-IO connection, see _connection.pyx).
#
# Other compiled modules may `cimport CoreConnection` to drive a connection without Python-level
# attribute lookups; the Python API (receive_datagram, datagrams_to_send, ...) is the contract.
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from dquic._codec cimport Buffer
from dquic._congestion cimport CongestionController, Pacer
from dquic._ranges cimport RangeSet
from dquic._recovery cimport Recovery, SentPacket
from dquic._streams cimport FlowWindow, RecvStream, SendStream


# What a sent packet carried: one record per frame that its acknowledgement or loss acts on,
# in packet order. `kind` names the frame; a, b, c are its integer fields in wire order, and a
# field the frame does not have carries what the connection needs to act (a datagram's id, a
# crypto frame's packet-number space).
cdef enum FrameKind:
    FR_STREAM = 0                  # a stream id, b offset, c length, fin
    FR_CRYPTO = 1                  # a offset, b length, c space
    FR_DATAGRAM = 2                # a length, b datagram id
    FR_HANDSHAKE_DONE = 3
    FR_MAX_DATA = 4                # a maximum
    FR_MAX_STREAMS = 5             # a maximum
    FR_MAX_STREAM_DATA = 6         # a stream id, b maximum
    FR_RESET_STREAM = 7            # a stream id, b error code, c final size
    FR_STOP_SENDING = 8            # a stream id, b error code
    FR_NEW_CONNECTION_ID = 9       # a sequence, b retire prior to, c connection ID length
    FR_RETIRE_CONNECTION_ID = 10   # a sequence
    # frames written but not recorded: nothing happens when they are acknowledged or lost
    FR_UNRECORDED = 11
    FR_PING = 11
    FR_PATH_CHALLENGE = 12
    FR_PATH_RESPONSE = 13
    FR_DATA_BLOCKED = 14           # a limit
    FR_STREAM_DATA_BLOCKED = 15    # a stream id, b limit
    FR_STREAMS_BLOCKED = 16        # a limit
    FR_KINDS = 17


cdef struct FrameRecord:
    uint64_t a
    uint64_t b
    uint64_t c
    uint8_t kind
    uint8_t fin
    uint32_t gen                   # stream frames: the incarnation of the half (_Stream)


# A FIFO of 64-bit values: storage made on first use and given back once emptied.
cdef struct U64Queue:
    uint64_t* items
    uint32_t n
    uint32_t cap


# Control frames the connection owes its peer (a stream's own are in _Stream.owed). Loss of a
# recorded frame puts it back here; the frame writers pay it off (CoreConnection._pay, _put_frame).
cdef struct Pending:
    uint32_t once                  # 1 << FR_x for each frame owed once: HANDSHAKE_DONE,
                                   # MAX_DATA, MAX_STREAMS, PING, PATH_CHALLENGE
    U64Queue new_cids              # sequence numbers of our connection IDs to announce
    U64Queue retire_cids           # sequence numbers of the peer's connection IDs to retire
    U64Queue path_responses        # PATH_CHALLENGE data to echo, as big-endian integers


cdef class _Space:
    cdef public RangeSet rx
    cdef public int64_t rx_floor
    cdef public int64_t largest_rx
    cdef public double largest_rx_time
    cdef public bint ack_pending
    cdef public int unacked_eliciting
    cdef public double ack_deadline      # < 0: no ACK deadline armed
    cdef public int64_t next_pn
    cdef public SendStream crypto_send
    cdef public RecvStream crypto_recv
    cdef public bint discarded
    cdef public int64_t largest_acked


cdef class _Stream:
    cdef public uint64_t stream_id
    cdef public SendStream send
    cdef public RecvStream recv
    cdef public uint64_t send_limit
    cdef public bint readable_signalled
    cdef public bint send_opened
    cdef public bint recv_opened
    cdef public uint32_t owed            # 1 << FR_x for each frame owed: RESET_STREAM,
                                         # STOP_SENDING, MAX_STREAM_DATA
    cdef public uint64_t reset_code      # the error code of the RESET_STREAM owed
    cdef public uint64_t stop_code       # the error code of the STOP_SENDING owed
    cdef public int64_t blocked_reported
    cdef public bint queued
    cdef public bint closed_counted      # the peer's half was read to its end (credit given)
    cdef public bint counted             # our half consumed one of the peer's MAX_STREAMS credits
    # lifecycle (PROTOCOL.md §16.7): each half has incarnations, numbered by *_gen
    cdef public bint pinned              # a byte stream: never finished automatically
    cdef public bint credit_wait         # in CoreConnection._credit_waiters
    cdef public double idle_since        # when it was listed in CoreConnection._idle_halves, or -1
    cdef public uint32_t idle_gen        # its send_gen then
    cdef public uint32_t send_gen
    cdef public SendStream send_next     # messages written after our half was closed
    cdef public int64_t send_min_pn      # peer control frames for our half below this are old
    cdef public uint32_t recv_gen
    cdef public bint recv_done           # the peer's half is complete (all bytes and FIN, or reset)
    cdef public int64_t recv_w           # its watermark once resolved, else -1
    cdef public int64_t recv_c           # the largest packet number received when it completed
    cdef public int64_t recv_lo          # the smallest packet number that carried a frame of it
    cdef public int64_t recv_min_pn      # peer frames for this half below this may be older
    cdef public RecvStream recv_next     # the next incarnation, while this one is still read
    cdef public int64_t recv_next_lo     # recv_lo of recv_next


# A sent packet with its frame records: the first ones in a small C array, any more in a
# C array of its own, and the ACK it carried as two fields. Instances are recycled by the
# connection once recovery hands them back.
cdef class _Sent(SentPacket):
    cdef int nrec                        # records written
    cdef FrameRecord recs[8]             # the first INLINE_RECORDS of them
    cdef FrameRecord* more               # the rest (made on first need, kept for reuse)
    cdef int more_cap
    cdef int ack_space                   # -1: no ACK frame
    cdef uint64_t ack_lo                 # the ACK frame listed every packet received from here up
    cdef uint64_t ack_floor


cdef class CoreConnection:
    # public state
    cdef public object config
    cdef public bint is_client
    cdef public object peer_addr
    cdef public object host_cid
    cdef public object peer_cid
    cdef public object original_dcid
    cdef public list cid_changes
    cdef public dict _work               # the driving endpoint's set of connections with output to build
    cdef public object peer_key
    cdef public long long packets_received
    cdef public long long packets_dropped
    cdef public long long duplicate_packets
    cdef public long long bytes_sent
    cdef public long long bytes_received
    cdef public long long stream_bytes_received
    cdef public list _spaces
    cdef public dict _streams
    cdef public FlowWindow _recv_window
    cdef public Recovery _recovery
    cdef public CongestionController _cc

    cdef public object _random
    cdef public object _reset_token
    cdef public int _state
    cdef public list _events
    # connection IDs
    cdef public dict _host_cids
    cdef public long long _host_cid_seq
    cdef public dict _peer_cids
    cdef public long long _peer_cid_seq
    cdef public long long _retired_below
    cdef public set _retiring      # peer CID sequences retired, RETIRE_CONNECTION_ID not yet acknowledged
    cdef Pending _pending                # control frames owed to the peer
    cdef public bint _peer_cid_set_by_server
    # spaces, recovery
    cdef public _Space _hs
    cdef public _Space _app
    cdef public Pacer _pacer
    cdef public double _pacing_deadline        # < 0: none
    cdef int _probes[2]
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
    cdef public bint _app_seal_null
    cdef public bint _app_open_null
    cdef public int _app_tag
    cdef public bint _handshake_confirmed
    # streams and flow control
    cdef public object _send_queue
    cdef public uint64_t _peer_max_data
    cdef public uint64_t _peer_stream_limit
    cdef public uint64_t _data_sent
    cdef public int64_t _data_blocked_reported
    cdef public uint64_t _data_received
    cdef public uint64_t _peer_stream_credit
    cdef public uint64_t _peer_opened
    cdef public uint64_t _max_streams_local
    cdef public int64_t _streams_blocked_reported
    cdef public uint64_t _streams_counted
    cdef public int64_t _streams_waiting         # our live halves not yet opened (no credit yet)
    cdef public object _credit_waiters           # deque of streams waiting for stream credit
    cdef public object _idle_halves              # deque of _Stream: our halves all acknowledged, oldest first
    cdef public object _idle_times               # deque of floats: when each was listed (no tuple per listing)
    cdef public uint64_t _send_buffered          # bytes written to our halves, not yet acknowledged
    cdef public object _finished                 # deque of (_Stream, gen): peer halves read to their end
    cdef public Py_ssize_t _finished_max         # how many of them are always remembered
    cdef public int64_t _credit_owed             # stream credits held back until one resolves
    cdef public int64_t _unresolved              # finished peer halves not yet resolved
    cdef public list _tomb_new                   # complete peer halves awaiting an ACK covering them
    cdef public int64_t _tomb_lo                 # the smallest recv_lo among them
    cdef public object _tomb_wait                # deque of (packet number, list of (_Stream, gen))
    cdef public dict _lost_streams              # pn -> ((sid, gen, offset, length, fin), ...) of 1-RTT packets declared lost
    cdef public list _lost_streams_pns          # their packet numbers, ascending
    cdef public int64_t _stale_below             # frames for halves without state below: old
    cdef public int64_t _rx_pn                   # packet number of the 1-RTT packet being processed
    cdef public uint32_t _gen_seq                # last incarnation number given to a stream half
    cdef public _Stream _last_stream            # one-entry cache in front of _streams
    # datagrams
    cdef public object _datagrams
    cdef public long long _datagram_seq
    # paths
    cdef public long long _bytes_received_on_path
    cdef public long long _bytes_sent_on_path
    cdef public bint _address_validated
    cdef public object _path_challenge
    cdef public object _previous_addr
    cdef public object _old_keys_deadline        # when to drop pre-key-update keys, or None
    cdef public bint _eliciting_since_receive
    cdef public object _retry_scid
    cdef public object _retry_token
    cdef public object _qlog
    # timers
    cdef public bint _started
    cdef public double _created
    cdef public double _last_activity
    cdef public double _last_eliciting_sent
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
    cdef public uint64_t _stream_window_max
    cdef public uint64_t _stream_window_initial
    # scratch buffers and recycled records, shared by all connections (see _connection.pyx)
    cdef public Buffer _sbuf                 # borrowed while packets are built, else None
    cdef public Buffer _rbuf
    cdef public list _free_sent

    # --- internal C API ---
    cdef _Stream _lookup(self, uint64_t stream_id)
    cdef _Stream _new_stream(self, uint64_t stream_id, bint local=*)
    cdef _Stream _local_stream(self, object stream_id)
    cdef void _schedule(self, _Stream s)
    cdef int _check_recv_closed(self, _Stream s) except -1
    cdef int _give_credit(self, uint64_t n) except -1
    cdef int _drop_unread(self, _Stream s, uint64_t code) except -1
    cdef int _trim_finished(self) except -1
    cdef int _forget_recv(self, _Stream s) except -1
    cdef int _recv_complete(self, _Stream s) except -1
    cdef int _resolve(self, uint64_t acked_pn, uint64_t ack_lo) except -1
    cdef _Stream _route(self, uint64_t stream_id, uint64_t end, bint* nxt)
    cdef int _open_recv(self, _Stream s, int64_t min_pn) except -1
    cdef bint _ambiguous(self, uint64_t stream_id) except -1
    cdef int _stream_frame_at(self, const uint8_t* p, Py_ssize_t n, Py_ssize_t pos) except -1
    cdef int _send_complete(self, _Stream s) except -1
    cdef int _after_ack(self, _Stream s) except -1
    cdef int _maybe_release(self, _Stream s) except -1
    cdef bint _pressure(self)
    cdef int _end_idle_halves(self, double now=*) except -1
    cdef int _drop_stale_idle(self) except -1
    cdef int _forget_resolved(self) except -1
    cdef SendStream _writable_half(self, _Stream s)
    cdef int _on_consumed(self, _Stream s, uint64_t consumed) except -1
    cdef double _pto(self)
    cdef int _fill_timers(self, double* t) except -1
    cdef bint _handshake_pending(self)
    cdef double _effective_idle_timeout(self)
    cdef bint _idle_release_pending(self)
    cdef double _idle_release_time(self)
    cdef int _release_idle(self) except -1
    cdef int64_t _amplification_room(self)
    cdef int _check_app_limited(self, Py_ssize_t mds) except -1
    cdef int _count_sent(self, Py_ssize_t total) except -1
    cdef void _return_scratch(self)
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
    cdef int _on_stream_c(self, uint64_t stream_id, uint64_t offset, const uint8_t* data,
                          Py_ssize_t length, bint fin, int frame_type) except -1
    cdef int _on_ack_c(self, int space_id, list ranges, uint64_t ack_delay, double now) except -1
    cdef int _on_packet_acked(self, _Sent pkt) except -1
    cdef int _on_packet_lost(self, _Sent pkt) except -1
    cdef int _late_acks(self, list ranges) except -1
    cdef int _record_acked(self, FrameRecord* r, bint declared_lost) except -1
    cdef int _record_lost(self, FrameRecord* r) except -1
    cdef void _recycle(self, _Sent pkt)
    # sending
    cdef _Sent _new_sent(self)
    cdef int _start_packet(self, int space_id, Py_ssize_t limit, int64_t* pn, int* pn_len,
                           Py_ssize_t* length_off) except -1
    cdef object _finish_packet(self, int space_id, Py_ssize_t hdr_end, Py_ssize_t length_off,
                               int64_t pn, int pn_len, unsigned char* dst=*)
    cdef int _write_ack(self, _Space space, int space_id, double now, _Sent rec) except -1
    cdef int _record_sent(self, _Sent rec, int space_id, int64_t pn, Py_ssize_t size,
                          bint eliciting, double now) except -1
    cdef object _build_handshake_datagram(self, double now, Py_ssize_t mds)
    cdef object _build_app_packet(self, double now, Py_ssize_t mds, unsigned char* dst=*)
    cdef int _put_frame(self, Py_ssize_t end, _Sent rec, int kind, uint64_t a=*, uint64_t b=*,
                        uint64_t c=*, const unsigned char* tail=*, Py_ssize_t tail_len=*) except -1
    cdef int _pay(self, uint32_t* owed, int kind, Py_ssize_t end, _Sent rec, uint64_t a=*,
                  uint64_t b=*, uint64_t c=*, const unsigned char* tail=*,
                  Py_ssize_t tail_len=*) except -1
    cdef bint _has_control_frames(self)
    cdef int _write_control_frames(self, Py_ssize_t end, _Sent rec) except -1
    cdef int _write_path_frames(self, Py_ssize_t end, _Sent rec) except -1
    cdef int _write_datagrams(self, Py_ssize_t end, _Sent rec) except -1
    cdef int _write_stream_frames(self, Py_ssize_t end, _Sent rec) except -1
