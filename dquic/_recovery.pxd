# Loss detection and RTT estimation (RFC 9002 §5, §6, Appendix A).
from dquic._congestion cimport CongestionController

cdef enum:
    SPACE_HANDSHAKE = 0       # long-header packets
    SPACE_APPLICATION = 1     # short-header packets
    NUM_SPACES = 2


cdef class SentPacket:
    cdef public long long packet_number
    cdef public int space
    cdef public double time_sent
    cdef public Py_ssize_t sent_bytes
    cdef public bint ack_eliciting
    cdef public bint in_flight
    cdef public bint is_probe
    cdef public bint pmtu_probe   # a path MTU probe (PING + PADDING): its loss is no congestion signal
    cdef public object frames     # opaque to recovery: what the connection must retransmit/confirm
    cdef public bint declared_lost  # declared lost earlier; reported in ``acked`` if acked later
    # delivery-rate sampling state at send time (draft-cheng-iccrg-delivery-rate-estimation)
    cdef public long long delivered
    cdef public double delivered_time
    cdef public double first_sent_time
    cdef public bint is_app_limited
    cdef long long _episode       # congestion episode this packet's loss belongs to (0: none)


cdef inline void start_sent(SentPacket pkt, long long packet_number, int space, double time_sent,
                            Py_ssize_t sent_bytes, bint ack_eliciting, bint in_flight,
                            bint is_probe) noexcept:
    """Fill in a packet's record as it is sent (a new record or a recycled one): what the
    sender knows, and recovery's own per-packet state fresh (``frames`` is left alone)."""
    pkt.packet_number = packet_number
    pkt.space = space
    pkt.time_sent = time_sent
    pkt.sent_bytes = sent_bytes
    pkt.ack_eliciting = ack_eliciting
    pkt.in_flight = in_flight
    pkt.is_probe = is_probe
    pkt.pmtu_probe = False
    pkt.declared_lost = False
    pkt.delivered = 0
    pkt.delivered_time = 0.0
    pkt.first_sent_time = 0.0
    pkt.is_app_limited = False
    pkt._episode = 0


cdef class RttEstimator:
    cdef public double latest_rtt
    cdef public double smoothed_rtt
    cdef public double rttvar
    cdef public double min_rtt
    cdef public double initial_rtt
    cdef public bint has_sample
    cpdef void update(self, double latest_rtt, double ack_delay, double max_ack_delay,
                      bint handshake_confirmed)
    cpdef double pto_base(self, double granularity)
    cpdef void reset(self)


cdef class _Space:
    cdef list slots               # slots[i] holds packet number base + i (None once gone)
    cdef Py_ssize_t head          # slots[:head] are all gone
    cdef long long base
    cdef long long largest_sent
    cdef long long largest_acked
    cdef double loss_time         # 0 < loss_time: earliest time-threshold loss (else -1)
    cdef double time_of_last_ack_eliciting
    cdef Py_ssize_t ack_eliciting_in_flight
    cdef Py_ssize_t bytes_in_flight
    cdef Py_ssize_t outstanding   # SentPacket objects still held
    cdef Py_ssize_t not_in_flight # ... of which not in flight (ACK-only)
    cdef dict lost                # packet number -> SentPacket declared lost (spurious detection)
    cdef list lost_pns            # the same packet numbers, ascending (both None while empty)
    cdef bint discarded


cdef class Recovery:
    cdef public CongestionController congestion
    cdef public RttEstimator rtt
    cdef public double max_ack_delay
    cdef public int packet_threshold
    cdef public double time_threshold
    cdef public double granularity
    cdef public int persistent_congestion_threshold
    cdef public bint handshake_confirmed
    cdef public int pto_count
    cdef public int probes_needed
    cdef public Py_ssize_t max_lost_tracked
    cdef public Py_ssize_t max_tracked
    cdef public double first_rtt_sample_time
    # statistics
    cdef public long long packets_sent
    cdef public long long packets_acked
    cdef public long long packets_lost
    cdef public long long pmtu_probes_lost     # path MTU probes lost (not in packets_lost)
    cdef public long long bytes_lost
    cdef public long long spurious_losses
    cdef public long long persistent_congestions
    cdef public long long pto_expirations
    cdef public long long congestion_undos
    # adaptive reordering tolerance (RFC 9002 §6.1, RFC 8985 style)
    cdef public bint adaptive_reordering
    cdef public bint packet_threshold_disabled
    cdef public int base_packet_threshold
    cdef public int max_packet_threshold
    cdef public double base_time_threshold
    cdef public double max_time_threshold
    cdef public int reordering_decay
    cdef public long long max_reordering_seen
    cdef int _genuine_streak
    # congestion undo bookkeeping
    cdef long long _episode
    cdef Py_ssize_t _episode_left
    cdef bint _episode_undoable
    # delivery-rate estimation (connection-wide counters)
    cdef public long long delivered
    cdef public double delivered_time
    cdef public double first_sent_time
    cdef public long long app_limited_until
    cdef public double last_delivery_rate
    cdef _Space _sp0
    cdef _Space _sp1

    cdef inline _Space _space(self, int space)
    cpdef void on_packet_sent(self, SentPacket pkt)
    cpdef tuple on_ack_received(self, int space, object ranges, double ack_delay, double now)
    cpdef object get_loss_detection_timer(self)
    cpdef tuple on_loss_detection_timeout(self, double now)
    cpdef void discard_space(self, int space)
    cpdef long long largest_acked(self, int space)
    cpdef long long largest_sent(self, int space)
    cdef list _detect_lost(self, _Space sp, double now)
    cdef void _on_lost(self, _Space sp, list lost, double now)
    cdef bint _persistent(self, _Space sp, list lost)
    cdef void _compact(self, _Space sp)
    cdef void _evict_not_in_flight(self, _Space sp)
    cdef double _pto_time(self, int* out_space)
    cdef void _prune_lost(self, _Space sp, double now)
    cdef void _rate_sample(self, SentPacket newest, Py_ssize_t nbytes, double now)
    cdef int _ack_lost(self, _Space sp, long long start, long long stop, list out) except -1
    cdef void _on_spurious(self, _Space sp, SentPacket pkt, long long prior_largest, double now)
    cdef void _confirm_lost(self, SentPacket pkt)
    cpdef void on_app_limited(self)
