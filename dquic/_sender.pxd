# C-level layout of dquic._sender: building one connection's packets (see _sender.pyx).
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

from dquic._cids cimport CidState
from dquic._codec cimport Buffer
from dquic._congestion cimport Pacer
from dquic._paths cimport PathState
from dquic._recovery cimport Recovery
from dquic._spaces cimport FrameRecord, Pending, _Sent, _Space
from dquic._streamset cimport StreamSet


# Path MTU discovery (PROTOCOL.md §14.7)
cdef enum:
    # Without the local route's MTU (a driver tells it: CoreConnection.set_route_mtu) the
    # search stops here: a 1500-byte Ethernet MTU less the IPv6 and UDP headers.
    PMTU_DEFAULT_CEILING = 1452
    # The search ends when the size known to pass is within this many bytes of the smallest
    # known to fail (or of the ceiling).
    PMTU_STEP = 16
    # Probes of one size lost in a row before that size counts as too large (RFC 8899
    # MAX_PROBES).
    PMTU_MAX_PROBES = 3
    # Bytes a connection sends on a path before it probes there: short exchanges (a request
    # and its reply, a handshake) never pay for probes they would not profit from.
    PMTU_START_BYTES = 24000
    # Probe timeouts in a row after which a connection sending larger datagrams than the base
    # size falls back to it (the path may have stopped carrying them).
    PMTU_BLACK_HOLE_PTOS = 3


cdef class Sender:
    # what it writes from (the connection's sub-objects)
    cdef readonly bint is_client
    cdef readonly list seal                      # [handshake sealer, 1-RTT sealer] (the connection's list)
    cdef readonly _Space hs
    cdef readonly _Space app
    cdef readonly CidState cids
    cdef readonly PathState paths
    cdef readonly StreamSet sset
    cdef readonly Recovery recovery              # and its congestion controller
    cdef readonly Pacer pacer                    # None without pacing
    cdef object reset_token                      # cid -> its stateless reset token
    cdef public list events                      # the connection's event list (shared)
    cdef readonly Py_ssize_t mds                 # the datagram size used now (path MTU discovery raises it)
    cdef Py_ssize_t ack_ranges_per_frame         # ranges above the floor before an ACK asks
    cdef int ack_delay_exponent
    # its own state
    cdef public Buffer sbuf                      # borrowed while packets are built, else None
    cdef public object app_seal                  # the 1-RTT sealer (None before the handshake)
    cdef public bint app_seal_null
    cdef public int app_tag
    cdef public object retry_token               # a client's Retry token (INITIAL packets)
    cdef public object qlog
    cdef Pending pending                         # control frames owed once (HANDSHAKE_DONE, PING)
    cdef int probes[2]                           # probe packets a PTO asks for, by space
    cdef public double pacing_deadline           # < 0: none
    cdef public object datagrams                 # deque of (id, data) to send; None while empty
    cdef public long long datagram_seq
    cdef public double last_eliciting_sent
    cdef public bint eliciting_since_receive
    # for the connection, after transmit
    cdef public double idle_restart              # restart the idle timer from here (< 0: no)
    cdef public bint noted                       # more to send than one call built
    # our latest ack-eliciting packet with a full application ACK (the floor rises when it is
    # acknowledged; see _spaces.pyx): its number (-1: none in flight) and that ACK's largest
    cdef public int64_t ask_pn
    cdef public int64_t asked_hi
    cdef public double ask_time                  # when it was sent
    # path MTU discovery (RFC 9000 §14.3, RFC 8899; PROTOCOL.md §14.7): a binary search for
    # the largest datagram the path carries, between mds (known to pass) and pmtu_hi
    # (sizes fit 32 bits: an idle connection's state is counted in bytes)
    cdef int64_t pmtu_probe_pn
    cdef int64_t pmtu_start                      # paths.bytes_sent when the search (re)started
    cdef readonly int32_t base_mds               # the size every path carries (config)
    cdef readonly int32_t pmtu_max               # the search's ceiling (config, peer, local route)
    cdef readonly int32_t pmtu_hi                # the largest size not yet known to fail
    cdef readonly int32_t pmtu_probe_size        # the size being tried (0: none)
    cdef readonly uint32_t pmtu_probes_sent
    cdef public bint pmtud                       # discovery allowed (config.mtu_discovery)
    cdef readonly uint8_t pmtu_fails             # probes of the size being tried lost in a row
    cdef readonly uint8_t pmtu_failed_sizes      # sizes found too large in this search

    cdef Py_ssize_t transmit(self, double now, Py_ssize_t max_bytes, Py_ssize_t max_segments,
                             bint trains, list out) except -1
    cdef Py_ssize_t datagram_each(self, bint app, int most, double now, bint trains,
                                  list out) except -1
    cdef Py_ssize_t coalesce_app(self, double now, list out, bint trains) except -1
    cdef void return_scratch(self)
    cdef int check_app_limited(self, Py_ssize_t mds) except -1
    cdef int begin_packet(self, int space_id, Py_ssize_t limit, int64_t* pn_out, int* pn_len_out,
                          Py_ssize_t* length_off) except -1
    cdef int packet_type(self, int space_id) except -1
    cdef int pad_handshake(self) except -1
    cdef bint floor_wanted(self, double now) noexcept
    cdef int ask_settled(self) except -1
    cdef int record_sent(self, _Sent rec, int space_id, int64_t pn, Py_ssize_t size,
                         bint eliciting, double now) except -1
    cdef object build_handshake_datagram(self, double now, Py_ssize_t mds)
    cdef object build_app_packet(self, double now, Py_ssize_t mds, unsigned char* dst=*)
    cdef bint has_control_frames(self)
    cdef int write_control_frames(self, Py_ssize_t end, _Sent rec) except -1
    cdef int write_path_frames(self, Py_ssize_t end, _Sent rec) except -1
    cdef int write_datagrams(self, Py_ssize_t end, _Sent rec) except -1
    # what was sent: acknowledged or lost
    cdef int on_ack(self, int space_id, list ranges, double delay, double now) except -1
    cdef int on_loss_timeout(self, double now) except -1
    cdef int trace_recovery(self, double now, int space_id, list lost) except -1
    cdef int requeue_for_probe(self, int space_id) except -1
    cdef int on_packet_acked(self, _Sent pkt) except -1
    cdef int record_acked(self, FrameRecord* r, bint declared_lost) except -1
    cdef int on_packet_lost(self, _Sent pkt) except -1
    cdef int record_lost(self, FrameRecord* r) except -1
    # path MTU discovery
    cdef inline bint pmtu_due(self) noexcept:
        # the search goes on and no probe is in flight
        return self.pmtud and self.pmtu_probe_pn < 0 and self.pmtu_hi - self.mds >= PMTU_STEP
    cdef int pmtu_limit(self, Py_ssize_t ceiling) except -1
    cdef int pmtu_restart(self) except -1
    cdef int pmtu_route(self, Py_ssize_t payload) except -1
    cdef int set_datagram_size(self, Py_ssize_t size) except -1
    cdef Py_ssize_t pmtu_next(self) noexcept
    cdef int maybe_probe_pmtu(self, double now, bint trains, list out) except -1
    cdef int pmtu_acked(self) except -1
    cdef int pmtu_lost(self) except -1


cdef int trace_keys(object qlog, object seal, double now, object trigger) except -1
