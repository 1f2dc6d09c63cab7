# Congestion controllers (RFC 9002 §7, RFC 9438 CUBIC, RFC 9406 HyStart++) and the pacer (§7.7).
#
# Interface contract between dquic._recovery and a controller (all times are float seconds
# supplied by the caller, all sizes are bytes):
#
#   on_packet_sent(sent_bytes, now)          once per in-flight packet sent
#   on_packets_acked(acked_bytes, largest_time_sent, now, rtt_sample, smoothed_rtt, min_rtt)
#                                            once per ACK frame that newly acknowledges in-flight
#                                            packets: acked_bytes is their total size,
#                                            largest_time_sent the newest send time among them,
#                                            rtt_sample the RTT measured from this ACK (0.0 when
#                                            this ACK gave no sample)
#   on_packets_lost(lost_bytes, now)         once per batch of in-flight packets declared lost
#                                            (removes them from bytes_in_flight only)
#   on_congestion_event(time_sent, now)      after a loss batch, with the newest send time among
#                                            the lost packets; ignored while that packet was sent
#                                            inside the current recovery period (one reduction
#                                            per round trip)
#   on_persistent_congestion(now)            collapse to the minimum window (§7.6.2)
#   on_packet_discarded(sent_bytes)          keys dropped: forget bytes without a loss signal
#   on_spurious_congestion(now)              every loss of the latest congestion episode (the
#                                            losses since the last reduction) was acknowledged
#                                            later: undo that reduction
#   on_rate_sample(delivery_rate, rtt, delivered, prior_delivered, is_app_limited, now)
#                                            once per ACK frame with a valid delivery-rate sample
#                                            (after on_packets_acked); rate in bytes/s
#   pacing_rate()                            bytes/s the connection should pace at, or 0.0 for
#                                            the Pacer's own cwnd/srtt rule
#
# Batching per ACK frame (rather than per packet) keeps the per-packet path free of Python
# calls; CUBIC and NewReno both grow by "bytes acknowledged" so the batch is exact for them.

cdef class CongestionController:
    cdef public Py_ssize_t congestion_window
    cdef public Py_ssize_t bytes_in_flight
    cdef public double ssthresh
    cdef public Py_ssize_t max_datagram_size
    cdef public Py_ssize_t initial_window
    cdef public Py_ssize_t minimum_window
    cdef public Py_ssize_t maximum_window
    cdef public bint in_recovery
    cdef public double recovery_start_time
    cdef public bint is_app_limited
    cdef public long long congestion_events
    cdef public long long persistent_congestion_events
    cdef public long long congestion_undos
    # state before the latest reduction, for on_spurious_congestion
    cdef bint _undo_valid
    cdef Py_ssize_t _undo_cwnd
    cdef double _undo_ssthresh
    cdef double _undo_recovery_start

    cpdef void on_packet_sent(self, Py_ssize_t sent_bytes, double now)
    cpdef void on_packets_acked(self, Py_ssize_t acked_bytes, double largest_time_sent, double now,
                                double rtt_sample, double smoothed_rtt, double min_rtt)
    cpdef void on_packets_lost(self, Py_ssize_t lost_bytes, double now)
    cpdef void on_congestion_event(self, double time_sent, double now)
    cpdef void on_persistent_congestion(self, double now)
    cpdef void on_packet_discarded(self, Py_ssize_t sent_bytes)
    cpdef void on_spurious_congestion(self, double now)
    cpdef void on_rate_sample(self, double delivery_rate, double rtt, long long delivered,
                              long long prior_delivered, bint is_app_limited, double now)
    cpdef double pacing_rate(self)
    cdef void _save_undo(self)
    cdef void _restore_undo(self)
    cpdef bint can_send(self, Py_ssize_t size=*)
    cpdef Py_ssize_t available(self)
    cpdef bint in_slow_start(self)
    cdef inline bint _in_recovery_period(self, double time_sent):
        return time_sent <= self.recovery_start_time
    cdef void _remove_in_flight(self, Py_ssize_t nbytes)


cdef class NewReno(CongestionController):
    cdef double _ca_acked          # bytes acknowledged toward the next +1 MSS in avoidance


cdef class Cubic(CongestionController):
    cdef public double c
    cdef public double beta
    cdef public bint fast_convergence
    cdef public bint hystart
    # CUBIC state (RFC 9438 §4), windows in bytes
    cdef public double w_max
    cdef public double k
    cdef public double epoch_start
    cdef public double cwnd_epoch
    cdef public double w_est
    cdef double _cwnd                 # fractional congestion window
    cdef double _undo_fcwnd, _undo_w_max, _undo_k, _undo_epoch_start, _undo_cwnd_epoch
    cdef double _undo_w_est
    # HyStart++ state (RFC 9406 §4)
    cdef public bint in_css
    cdef public int css_rounds
    cdef public double css_baseline_min_rtt
    cdef public double last_round_min_rtt
    cdef public double current_round_min_rtt
    cdef public int rtt_sample_count
    cdef public double round_marker
    cdef public long long hystart_exits
    cdef void _new_round(self, double now)
    cdef void _hystart_on_ack(self, double largest_time_sent, double now, double rtt_sample)
    cdef void _ca_on_ack(self, Py_ssize_t acked_bytes, double now, double smoothed_rtt)
    cpdef double w_cubic(self, double t)


cdef class Pacer:
    cdef public Py_ssize_t max_datagram_size
    cdef public double burst_packets
    cdef public double gain
    cdef public double slow_start_gain
    cdef public double rate
    cdef public double capacity
    cdef public double tokens
    cdef public double last_time
    cpdef void update(self, Py_ssize_t cwnd, double srtt, bint slow_start=*, double pacing_rate=*)
    cpdef double next_send_time(self, double now)
    cpdef void on_sent(self, Py_ssize_t size, double now)
    cdef double _tokens_at(self, double now)
    cdef public double burst_time          # seconds of a controller-given rate one burst may hold
    cdef public double max_burst_packets   # largest burst at high rates


cdef class Bbr(CongestionController):
    cdef public int mode                  # BBR_STARTUP / BBR_DRAIN / BBR_PROBE_BW / BBR_PROBE_RTT
    cdef public double btl_bw             # bytes/s: windowed max of delivery-rate samples
    cdef public double min_rtt            # seconds: windowed min (min_rtt_window)
    cdef public double min_rtt_stamp
    cdef public double min_rtt_window
    cdef public double probe_rtt_duration
    cdef public double pacing_gain
    cdef public double cwnd_gain
    cdef public double high_gain
    cdef public double loss_threshold
    cdef public bint filled_pipe
    cdef public long long round_count
    cdef public double full_bw
    cdef public int full_bw_count
    cdef public int cycle_index
    cdef public double cycle_stamp
    cdef public double initial_rtt
    cdef public long long probe_rtt_rounds
    cdef long long _next_round_delivered
    cdef bint _round_start
    cdef double _bw_rounds[10]       # per-round maxima, indexed by round_count % 10
    cdef long long _bw_round_of[10]
    cdef double _probe_rtt_done
    cdef long long _probe_rtt_round_end
    cdef bint _probe_rtt_round_done
    cdef Py_ssize_t _prior_cwnd
    cdef bint _restore_after_loss
    cdef long long _round_lost
    cdef long long _round_delivered
    cdef long long _last_delivered
    cdef unsigned long long _rng
    cdef void _update_bw(self, double rate, bint app_limited)
    cdef void _check_full_pipe(self, bint app_limited)
    cdef void _update_cycle(self, double now, long long delivered_bytes)
    cdef void _enter_probe_bw(self, double now)
    cdef void _check_probe_rtt(self, double now, bint rtt_expired)
    cdef double _bdp(self, double gain)
    cdef void _set_cwnd(self, Py_ssize_t acked)
    # (appended, so modules built against the earlier layout keep working)
    cdef public long long bw_resets       # lossy PROBE_BW rounds that dropped older bw maxima
    cdef void _forget_old_bw(self)
