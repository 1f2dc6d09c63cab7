# cython: language_level=3, cdivision=True
"""Congestion controllers and the pacer.

* ``CongestionController`` — the base class: in-flight accounting, recovery periods and a plain
  halving response to congestion. Subclass it (in Cython or Python) to plug in another algorithm;
  every hook is a ``cpdef`` method so a Python override is honoured when ``dquic._recovery``
  calls it.
* ``NewReno`` — RFC 9002 §7 and Appendix B.
* ``Cubic`` — RFC 9438, with HyStart++ (RFC 9406) in the initial slow start. The default.
* ``Bbr`` — a model-based controller after BBR v1 (bottleneck bandwidth and round-trip
  propagation time), with a loss-rate exit from startup and from bandwidth probing.
* ``Pacer`` — a token bucket spreading a window's worth of packets over a round trip
  (RFC 9002 §7.7).

All times are float seconds passed in by the caller; nothing here reads a clock.
"""
from libc.math cimport INFINITY, cbrt, fabs

__all__ = ["CongestionController", "NewReno", "Cubic", "Bbr", "Pacer"]

# RFC 9002 §7.2: initial window = min(10 * max_datagram_size, max(14720, 2 * max_datagram_size)).
cdef Py_ssize_t _initial_window(Py_ssize_t mds):
    cdef Py_ssize_t cap = 2 * mds
    if cap < 14720:
        cap = 14720
    if 10 * mds < cap:
        return 10 * mds
    return cap


# HyStart++ constants (RFC 9406 §4.3)
cdef double HS_MIN_RTT_THRESH = 0.004
cdef double HS_MAX_RTT_THRESH = 0.016
cdef double HS_MIN_RTT_DIVISOR = 8.0
cdef int HS_N_RTT_SAMPLE = 8
cdef double HS_CSS_GROWTH_DIVISOR = 4.0
cdef int HS_CSS_ROUNDS = 5


cdef class CongestionController:
    """Base congestion controller: in-flight accounting and a halving response to loss.

    ``dquic._recovery.Recovery`` drives it: ``on_packet_sent`` for each in-flight packet,
    ``on_packets_acked`` once per ACK frame, ``on_packets_lost`` then ``on_congestion_event``
    for each batch of lost packets. The connection asks ``can_send(size)`` / ``available()``
    before building a packet. Subclasses override the growth rule (``on_packets_acked``) and the
    reduction rule (``on_congestion_event``); a Python subclass must call
    ``super().__init__(...)`` and should call the base ``on_packets_acked`` /
    ``on_packets_lost`` (or update ``bytes_in_flight`` itself).
    """

    def __init__(self, Py_ssize_t max_datagram_size=1200, initial_window=None,
                 minimum_window=None, maximum_window=None):
        if max_datagram_size < 1200:
            raise ValueError("max_datagram_size must be at least 1200")
        self.max_datagram_size = max_datagram_size
        self.initial_window = (_initial_window(max_datagram_size) if initial_window is None
                               else int(initial_window))
        self.minimum_window = 2 * max_datagram_size if minimum_window is None else int(minimum_window)
        self.maximum_window = (1 << 26) if maximum_window is None else int(maximum_window)
        if not (0 < self.minimum_window <= self.initial_window <= self.maximum_window):
            raise ValueError("need 0 < minimum_window <= initial_window <= maximum_window")
        self.congestion_window = self.initial_window
        self.bytes_in_flight = 0
        self.ssthresh = INFINITY
        self.in_recovery = False
        self.recovery_start_time = -INFINITY
        self.is_app_limited = False
        self.congestion_events = 0
        self.persistent_congestion_events = 0
        self.congestion_undos = 0
        self._undo_valid = False
        self._undo_cwnd = 0
        self._undo_ssthresh = INFINITY
        self._undo_recovery_start = -INFINITY

    def __repr__(self):
        return (f"{type(self).__name__}(cwnd={self.congestion_window}, "
                f"in_flight={self.bytes_in_flight}, ssthresh={self.ssthresh})")

    cdef void _remove_in_flight(self, Py_ssize_t nbytes):
        self.bytes_in_flight -= nbytes
        if self.bytes_in_flight < 0:
            self.bytes_in_flight = 0

    cpdef void on_packet_sent(self, Py_ssize_t sent_bytes, double now):
        """Count an in-flight packet just sent (RFC 9002 A.5 / B.4)."""
        self.bytes_in_flight += sent_bytes

    cpdef void on_packets_acked(self, Py_ssize_t acked_bytes, double largest_time_sent, double now,
                                double rtt_sample, double smoothed_rtt, double min_rtt):
        """Newly acknowledged in-flight bytes (one call per ACK frame).

        Removes them from ``bytes_in_flight`` and ends the recovery period once a packet sent
        after it started is acknowledged. The base class does not grow the window.
        """
        self._remove_in_flight(acked_bytes)
        if self.in_recovery and largest_time_sent > self.recovery_start_time:
            self.in_recovery = False

    cpdef void on_packets_lost(self, Py_ssize_t lost_bytes, double now):
        """Remove in-flight bytes declared lost; call ``on_congestion_event`` next."""
        self._remove_in_flight(lost_bytes)

    cpdef void on_congestion_event(self, double time_sent, double now):
        """Loss (or ECN-CE) of a packet sent at ``time_sent``: reduce once per recovery period.

        RFC 9002 §7.3.2: a new recovery period starts at ``now``; losses of packets sent before
        it are part of the same event and do not reduce the window again.
        """
        if self._in_recovery_period(time_sent):
            return
        self._save_undo()
        self.recovery_start_time = now
        self.in_recovery = True
        self.congestion_events += 1
        self.ssthresh = <double>(self.congestion_window // 2)
        if self.ssthresh < self.minimum_window:
            self.ssthresh = self.minimum_window
        self.congestion_window = <Py_ssize_t>self.ssthresh

    cpdef void on_persistent_congestion(self, double now):
        """Persistent congestion (RFC 9002 §7.6.2): collapse to the minimum window."""
        self.persistent_congestion_events += 1
        self.congestion_window = self.minimum_window
        self.recovery_start_time = -INFINITY
        self.in_recovery = False

    cpdef void on_packet_discarded(self, Py_ssize_t sent_bytes):
        """Forget in-flight bytes whose keys were dropped, without a congestion signal (§6.4)."""
        self._remove_in_flight(sent_bytes)

    cdef void _save_undo(self):
        # Remember the state a reduction is about to change (subclasses extend this).
        self._undo_valid = True
        self._undo_cwnd = self.congestion_window
        self._undo_ssthresh = self.ssthresh
        self._undo_recovery_start = self.recovery_start_time

    cdef void _restore_undo(self):
        # Window and threshold return to at least their values before the reduction (growth
        # since is kept, as in RFC 4015's response); the recovery period is cancelled, so a
        # later genuine loss reduces again.
        if self._undo_cwnd > self.congestion_window:
            self.congestion_window = self._undo_cwnd
        if self._undo_ssthresh > self.ssthresh:
            self.ssthresh = self._undo_ssthresh
        self.recovery_start_time = self._undo_recovery_start
        self.in_recovery = False

    cpdef void on_spurious_congestion(self, double now):
        """Undo the latest reduction: every loss that caused it was acknowledged later.

        Recovery calls this once all packets declared lost since the controller last reduced
        (``congestion_events`` grew) have been acknowledged after all. Restores the window,
        slow-start threshold (and a subclass's own state) saved by the reduction; a second
        call without a new reduction does nothing.
        """
        if not self._undo_valid:
            return
        self._undo_valid = False
        self.congestion_undos += 1
        self._restore_undo()

    cpdef void on_rate_sample(self, double delivery_rate, double rtt, long long delivered,
                              long long prior_delivered, bint is_app_limited, double now):
        """A delivery-rate sample (draft-cheng-iccrg-delivery-rate-estimation), per ACK frame.

        ``delivery_rate`` is bytes/s over the sample interval, ``rtt`` the round trip of the
        newest acknowledged packet, ``delivered`` the connection's total delivered bytes and
        ``prior_delivered`` its value when that packet was sent (a round trip has passed once
        ``prior_delivered`` reaches the ``delivered`` seen at the round's start).
        ``is_app_limited`` flags samples the application, not the path, limited. Called after
        ``on_packets_acked``. Window-based controllers ignore it.
        """
        pass

    cpdef double pacing_rate(self):
        """Bytes/s the sender should pace at, or 0.0 to let the Pacer derive it from the window.

        Rate-based controllers (BBR) return their pacing rate; pass it to ``Pacer.update``.
        """
        return 0.0

    cpdef bint can_send(self, Py_ssize_t size=1200):
        """True when ``size`` more bytes fit in the congestion window."""
        return self.bytes_in_flight + size <= self.congestion_window

    cpdef Py_ssize_t available(self):
        """Bytes that may still be sent now (never negative)."""
        cdef Py_ssize_t a = self.congestion_window - self.bytes_in_flight
        return a if a > 0 else 0

    cpdef bint in_slow_start(self):
        """True while the window is below the slow-start threshold."""
        return self.congestion_window < self.ssthresh

    def congestion_state(self, app_limited=False):
        """The controller's state under the names of qlog's congestion_state_updated:
        "recovery" (a reduction's recovery period), "application_limited" (``is_app_limited``,
        or ``app_limited`` when the sender knows it had nothing to send while the window had
        room), "slow_start" (``in_slow_start()``) or "congestion_avoidance". Read only while
        tracing (dquic.qlog writes each change)."""
        if self.in_recovery:
            return "recovery"
        if app_limited or self.is_app_limited:
            return "application_limited"
        return "slow_start" if self.in_slow_start() else "congestion_avoidance"


cdef class NewReno(CongestionController):
    """NewReno (RFC 9002 §7.3, Appendix B): slow start, then +1 datagram per window acked."""

    def __init__(self, *args, **kwargs):
        CongestionController.__init__(self, *args, **kwargs)
        self._ca_acked = 0.0

    cpdef void on_packets_acked(self, Py_ssize_t acked_bytes, double largest_time_sent, double now,
                                double rtt_sample, double smoothed_rtt, double min_rtt):
        """Grow the window: slow start adds the bytes acked, avoidance one datagram per window.

        Bytes of packets sent before the current recovery period started do not grow the window
        (B.5); nor do acknowledgements while the sender is application-limited (§7.8).
        """
        cdef Py_ssize_t steps
        self._remove_in_flight(acked_bytes)
        if self.in_recovery and largest_time_sent > self.recovery_start_time:
            self.in_recovery = False
        if self._in_recovery_period(largest_time_sent) or self.is_app_limited:
            return
        if self.congestion_window < self.ssthresh:
            self.congestion_window += acked_bytes
        else:
            self._ca_acked += acked_bytes
            if self._ca_acked >= self.congestion_window:
                steps = <Py_ssize_t>(self._ca_acked // self.congestion_window)
                self._ca_acked -= steps * self.congestion_window
                self.congestion_window += steps * self.max_datagram_size
        if self.congestion_window > self.maximum_window:
            self.congestion_window = self.maximum_window

    cpdef void on_congestion_event(self, double time_sent, double now):
        """Halve the window once per recovery period (B.6)."""
        if self._in_recovery_period(time_sent):
            return
        CongestionController.on_congestion_event(self, time_sent, now)
        self._ca_acked = 0.0


cdef class Cubic(CongestionController):
    """CUBIC (RFC 9438) with HyStart++ (RFC 9406) during the initial slow start.

    After a congestion event the window follows ``W_cubic(t) = C*(t-K)**3 + W_max`` (in
    datagrams, ``t`` seconds since the avoidance epoch began), never below the Reno-friendly
    estimate ``W_est``. ``beta`` is the multiplicative decrease (0.7), ``c`` the scaling
    constant (0.4); fast convergence lowers ``W_max`` when a flow loses before regaining it.
    """

    def __init__(self, Py_ssize_t max_datagram_size=1200, initial_window=None,
                 minimum_window=None, maximum_window=None, double c=0.4, double beta=0.7,
                 bint fast_convergence=True, bint hystart=True):
        CongestionController.__init__(self, max_datagram_size, initial_window, minimum_window,
                                      maximum_window)
        if not (0.0 < beta < 1.0) or c <= 0.0:
            raise ValueError("need 0 < beta < 1 and c > 0")
        self.c = c
        self.beta = beta
        self.fast_convergence = fast_convergence
        self.hystart = hystart
        self.w_max = 0.0
        self.k = 0.0
        self.epoch_start = -INFINITY
        self.cwnd_epoch = 0.0
        self.w_est = 0.0
        self._cwnd = <double>self.congestion_window
        self.in_css = False
        self.css_rounds = 0
        self.css_baseline_min_rtt = INFINITY
        self.last_round_min_rtt = INFINITY
        self.current_round_min_rtt = INFINITY
        self.rtt_sample_count = 0
        self.round_marker = -INFINITY
        self.hystart_exits = 0

    cpdef double w_cubic(self, double t):
        """RFC 9438 eq. 1 in bytes: ``C*(t-K)**3 * mds + W_max``."""
        cdef double d = t - self.k
        return self.c * d * d * d * self.max_datagram_size + self.w_max

    cdef void _new_round(self, double now):
        # RFC 9406 §4.2: a round ends when a packet sent after the round began is acknowledged.
        self.last_round_min_rtt = self.current_round_min_rtt
        self.current_round_min_rtt = INFINITY
        self.rtt_sample_count = 0
        self.round_marker = now
        if self.in_css:
            self.css_rounds += 1

    cdef void _hystart_on_ack(self, double largest_time_sent, double now, double rtt_sample):
        cdef double thresh
        if largest_time_sent >= self.round_marker:
            self._new_round(now)
            if self.in_css and self.css_rounds >= HS_CSS_ROUNDS:
                # RFC 9406 §4.2: CSS lasted CSS_ROUNDS rounds: leave slow start for good.
                self.in_css = False
                self.hystart_exits += 1
                self.ssthresh = self._cwnd
                return
        if rtt_sample > 0.0:
            if rtt_sample < self.current_round_min_rtt:
                self.current_round_min_rtt = rtt_sample
            self.rtt_sample_count += 1
        if self.rtt_sample_count < HS_N_RTT_SAMPLE:
            return
        if not self.in_css:
            if self.last_round_min_rtt == INFINITY or self.current_round_min_rtt == INFINITY:
                return
            thresh = self.last_round_min_rtt / HS_MIN_RTT_DIVISOR
            if thresh < HS_MIN_RTT_THRESH:
                thresh = HS_MIN_RTT_THRESH
            elif thresh > HS_MAX_RTT_THRESH:
                thresh = HS_MAX_RTT_THRESH
            if self.current_round_min_rtt >= self.last_round_min_rtt + thresh:
                # Delay increase: enter Conservative Slow Start.
                self.in_css = True
                self.css_rounds = 0
                self.css_baseline_min_rtt = self.current_round_min_rtt
        elif self.current_round_min_rtt < self.css_baseline_min_rtt:
            # The RTT increase was spurious: resume ordinary slow start.
            self.in_css = False
            self.css_baseline_min_rtt = INFINITY

    cdef void _ca_on_ack(self, Py_ssize_t acked_bytes, double now, double smoothed_rtt):
        cdef double mds = <double>self.max_datagram_size
        cdef double t, target, w_cub, alpha
        if self.epoch_start == -INFINITY:
            # RFC 9438 §4.2: a new avoidance epoch starts with the first ACK after recovery.
            self.epoch_start = now
            self.cwnd_epoch = self._cwnd
            self.w_est = self._cwnd
            if self.w_max <= self._cwnd:
                self.w_max = self._cwnd
                self.k = 0.0
            else:
                self.k = cbrt((self.w_max - self.cwnd_epoch) / (self.c * mds))
        t = now - self.epoch_start
        # Reno-friendly estimate (§4.3); alpha becomes 1 once W_est has reached W_max.
        if self.w_est < self.w_max:
            alpha = 3.0 * (1.0 - self.beta) / (1.0 + self.beta)
        else:
            alpha = 1.0
        self.w_est += alpha * acked_bytes * mds / self._cwnd
        w_cub = self.w_cubic(t)
        if w_cub < self.w_est:
            if self.w_est > self._cwnd:
                self._cwnd = self.w_est
        else:
            # Concave/convex region (§4.4, §4.5): target one RTT ahead, clamped.
            target = self.w_cubic(t + smoothed_rtt)
            if target < self._cwnd:
                target = self._cwnd
            elif target > 1.5 * self._cwnd:
                target = 1.5 * self._cwnd
            self._cwnd += (target - self._cwnd) * acked_bytes / self._cwnd

    cpdef void on_packets_acked(self, Py_ssize_t acked_bytes, double largest_time_sent, double now,
                                double rtt_sample, double smoothed_rtt, double min_rtt):
        """Grow by slow start (HyStart++ while ssthresh is unset) or by the CUBIC function."""
        if self.congestion_window != <Py_ssize_t>self._cwnd:
            self._cwnd = <double>self.congestion_window   # assigned from outside
        self._remove_in_flight(acked_bytes)
        if self.in_recovery and largest_time_sent > self.recovery_start_time:
            self.in_recovery = False
        if self._in_recovery_period(largest_time_sent) or self.is_app_limited:
            return
        if self._cwnd < self.ssthresh:
            if self.hystart and self.ssthresh == INFINITY:
                self._hystart_on_ack(largest_time_sent, now, rtt_sample)
                if self.in_css:
                    self._cwnd += acked_bytes / HS_CSS_GROWTH_DIVISOR
                elif self._cwnd < self.ssthresh:
                    self._cwnd += acked_bytes
            else:
                self._cwnd += acked_bytes
        else:
            self._ca_on_ack(acked_bytes, now, smoothed_rtt)
        if self._cwnd > self.maximum_window:
            self._cwnd = <double>self.maximum_window
        self.congestion_window = <Py_ssize_t>self._cwnd

    cpdef void on_congestion_event(self, double time_sent, double now):
        """Multiplicative decrease by ``beta`` with fast convergence (RFC 9438 §4.6, §4.7)."""
        cdef double cwnd
        if self._in_recovery_period(time_sent):
            return
        if self.congestion_window != <Py_ssize_t>self._cwnd:
            self._cwnd = <double>self.congestion_window   # assigned from outside
        cwnd = self._cwnd
        self._save_undo()
        self.recovery_start_time = now
        self.in_recovery = True
        self.congestion_events += 1
        self.in_css = False
        if self.fast_convergence and cwnd < self.w_max:
            self.w_max = cwnd * (1.0 + self.beta) / 2.0
        else:
            self.w_max = cwnd
        cwnd = cwnd * self.beta
        if cwnd < self.minimum_window:
            cwnd = <double>self.minimum_window
        self.ssthresh = cwnd
        self._cwnd = cwnd
        self.congestion_window = <Py_ssize_t>cwnd
        self.epoch_start = -INFINITY

    cdef void _save_undo(self):
        CongestionController._save_undo(self)
        self._undo_fcwnd = self._cwnd
        self._undo_w_max = self.w_max
        self._undo_k = self.k
        self._undo_epoch_start = self.epoch_start
        self._undo_cwnd_epoch = self.cwnd_epoch
        self._undo_w_est = self.w_est

    cdef void _restore_undo(self):
        # RFC 9438 §4.9: on a spurious congestion event restore W_max, K, the epoch and the
        # window as they were before the reduction.
        if self.congestion_window != <Py_ssize_t>self._cwnd:
            self._cwnd = <double>self.congestion_window
        CongestionController._restore_undo(self)
        if self._undo_fcwnd > self._cwnd:
            self._cwnd = self._undo_fcwnd
        self.congestion_window = <Py_ssize_t>self._cwnd
        self.w_max = self._undo_w_max
        self.k = self._undo_k
        self.epoch_start = self._undo_epoch_start
        self.cwnd_epoch = self._undo_cwnd_epoch
        self.w_est = self._undo_w_est

    cpdef void on_persistent_congestion(self, double now):
        """Collapse to the minimum window; the next epoch restarts from slow start (§4.8)."""
        CongestionController.on_persistent_congestion(self, now)
        self._cwnd = <double>self.congestion_window
        self.epoch_start = -INFINITY
        self.in_css = False
        if self.ssthresh == INFINITY:
            self.ssthresh = self.minimum_window


# BBR constants (after draft-cardwell-iccrg-bbr-congestion-control-00, BBR v1)
BBR_STARTUP = 0
BBR_DRAIN = 1
BBR_PROBE_BW = 2
BBR_PROBE_RTT = 3
cdef double BBR_HIGH_GAIN = 2.885          # 2/ln(2): doubles the delivery rate each round
cdef int BBR_BW_ROUNDS = 10                # max filter window, in round trips
cdef int BBR_CYCLE_LEN = 8
cdef int BBR_LOSS_MIN_PACKETS = 8          # a round needs this many losses to count as lossy
cdef double[8] BBR_PACING_GAINS = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]


cdef class Bbr(CongestionController):
    """A BBR (v1-like) controller: paces at the measured bottleneck bandwidth, caps in-flight
    data at twice the bandwidth-delay product, and mostly ignores random loss.

    The model is fed by delivery-rate samples from recovery (``on_rate_sample``):
    ``btl_bw`` is the maximum delivery rate over the last 10 round trips, ``min_rtt`` the
    minimum RTT over ``min_rtt_window`` seconds. Modes: STARTUP (gain 2.885 until the
    bandwidth stops growing by 25 % for three rounds, or a round loses more than
    ``loss_threshold`` of its data and at least 8 datagrams), DRAIN (empty the queue startup built), PROBE_BW (pacing
    gain cycling 1.25, 0.75, 1 x 6, one phase per min_rtt, entered at a pseudo-random phase
    drawn from ``seed`` and the flow's delivered byte count; a lossy round ends the probe
    early and drops the bandwidth maxima older than the previous round) and PROBE_RTT (every ``min_rtt_window`` without a lower RTT: 4 packets in
    flight for ``probe_rtt_duration`` and a round trip, to re-measure the propagation delay).

    The congestion window is ``cwnd_gain * BDP`` plus three datagrams; ``pacing_rate()`` gives
    ``pacing_gain * btl_bw`` in bytes/s, which the connection should hand to
    ``Pacer.update(..., pacing_rate=cc.pacing_rate())``. Losses do not reduce the window;
    persistent congestion shrinks it to the minimum until the next acknowledgement, which
    restores the previous window (the model, not the loss, decides the rate).
    """

    def __init__(self, Py_ssize_t max_datagram_size=1200, initial_window=None,
                 minimum_window=None, maximum_window=None, double initial_rtt=0.1,
                 double min_rtt_window=10.0, double probe_rtt_duration=0.2,
                 double loss_threshold=0.02, unsigned long long seed=1):
        if minimum_window is None:
            minimum_window = 4 * max_datagram_size
        if initial_window is None:
            initial_window = max(_initial_window(max_datagram_size), int(minimum_window))
        CongestionController.__init__(self, max_datagram_size, initial_window, minimum_window,
                                      maximum_window)
        if initial_rtt <= 0.0 or min_rtt_window <= 0.0 or probe_rtt_duration < 0.0:
            raise ValueError("invalid BBR timing parameters")
        if not (0.0 < loss_threshold < 1.0):
            raise ValueError("loss_threshold must be in (0, 1)")
        self.initial_rtt = initial_rtt
        self.min_rtt_window = min_rtt_window
        self.probe_rtt_duration = probe_rtt_duration
        self.loss_threshold = loss_threshold
        self.high_gain = BBR_HIGH_GAIN
        self.mode = BBR_STARTUP
        self.pacing_gain = BBR_HIGH_GAIN
        self.cwnd_gain = BBR_HIGH_GAIN
        self.btl_bw = 0.0
        self.min_rtt = INFINITY
        self.min_rtt_stamp = -INFINITY
        self.filled_pipe = False
        self.round_count = 0
        self.full_bw = 0.0
        self.full_bw_count = 0
        self.cycle_index = 0
        self.cycle_stamp = 0.0
        self.probe_rtt_rounds = 0
        self.bw_resets = 0
        self._next_round_delivered = 0
        self._round_start = False
        for i in range(10):
            self._bw_rounds[i] = 0.0
            self._bw_round_of[i] = -1
        self._probe_rtt_done = -1.0
        self._probe_rtt_round_end = 0
        self._probe_rtt_round_done = False
        self._prior_cwnd = 0
        self._restore_after_loss = False
        self._round_lost = 0
        self._round_delivered = 0
        self._last_delivered = 0
        self._rng = seed * 6364136223846793005ULL + 1442695040888963407ULL

    def __repr__(self):
        return (f"Bbr(mode={self.mode}, btl_bw={self.btl_bw:.0f}, min_rtt={self.min_rtt:.4f}, "
                f"cwnd={self.congestion_window}, in_flight={self.bytes_in_flight})")

    cdef double _bdp(self, double gain):
        # gain * btl_bw * min_rtt in bytes; -1 before the first samples
        if self.btl_bw <= 0.0 or self.min_rtt == INFINITY:
            return -1.0
        return gain * self.btl_bw * self.min_rtt

    cpdef bint in_slow_start(self):
        """True during STARTUP."""
        return self.mode == BBR_STARTUP

    cpdef double pacing_rate(self):
        """``pacing_gain * btl_bw`` in bytes/s (before any sample: the initial window over the
        initial RTT, times the startup gain)."""
        cdef double rtt
        if self.btl_bw <= 0.0:
            rtt = self.min_rtt if self.min_rtt != INFINITY else self.initial_rtt
            return self.high_gain * self.congestion_window / rtt
        return self.pacing_gain * self.btl_bw

    cpdef void on_packets_acked(self, Py_ssize_t acked_bytes, double largest_time_sent, double now,
                                double rtt_sample, double smoothed_rtt, double min_rtt):
        """Remove the bytes from flight and grow the window toward its model target."""
        self._remove_in_flight(acked_bytes)
        if self.in_recovery and largest_time_sent > self.recovery_start_time:
            self.in_recovery = False
        self._set_cwnd(acked_bytes)

    cpdef void on_packets_lost(self, Py_ssize_t lost_bytes, double now):
        """Remove the bytes from flight and count them toward this round's loss rate."""
        self._remove_in_flight(lost_bytes)
        self._round_lost += lost_bytes

    cpdef void on_congestion_event(self, double time_sent, double now):
        """No window reduction: BBR reacts to a round's loss rate, not to single losses."""
        if self._in_recovery_period(time_sent):
            return
        self.recovery_start_time = now
        self.in_recovery = True

    cpdef void on_persistent_congestion(self, double now):
        """Shrink to the minimum window; the next acknowledgement restores the previous one."""
        self.persistent_congestion_events += 1
        if self.congestion_window > self._prior_cwnd:
            self._prior_cwnd = self.congestion_window
        self._restore_after_loss = True
        self.congestion_window = self.minimum_window

    cpdef void on_rate_sample(self, double delivery_rate, double rtt, long long delivered,
                              long long prior_delivered, bint is_app_limited, double now):
        """Update the model (round trips, bandwidth, min RTT) and the mode from one sample."""
        cdef bint rtt_expired
        cdef double total
        self._round_delivered += delivered - self._last_delivered
        self._last_delivered = delivered
        # round trips are counted in delivered data (a packet sent after the round began
        # was acknowledged)
        self._round_start = False
        if prior_delivered >= self._next_round_delivered:
            self._next_round_delivered = delivered
            self.round_count += 1
            self._round_start = True
        self._update_bw(delivery_rate, is_app_limited)
        if self._round_start:
            # loss response: a round that lost more than loss_threshold of its data ends
            # startup, or the current bandwidth probe
            total = <double>(self._round_lost + self._round_delivered)
            if (self._round_lost > self.loss_threshold * total
                    and self._round_lost >= BBR_LOSS_MIN_PACKETS * self.max_datagram_size):
                if not self.filled_pipe and self.btl_bw > 0.0:
                    self.filled_pipe = True
                elif self.mode == BBR_PROBE_BW and self.pacing_gain > 1.0:
                    self.cycle_index = 1
                    self.cycle_stamp = now
                    self.pacing_gain = BBR_PACING_GAINS[1]
                if self.mode == BBR_PROBE_BW:
                    self._forget_old_bw()
            self._round_lost = 0
            self._round_delivered = 0
            self._check_full_pipe(is_app_limited)
        if self.mode == BBR_STARTUP and self.filled_pipe:
            self.mode = BBR_DRAIN
            self.pacing_gain = 1.0 / self.high_gain
            self.cwnd_gain = 1.0
        if self.mode == BBR_DRAIN and self.bytes_in_flight <= self._bdp(1.0):
            self._enter_probe_bw(now)
        if self.mode == BBR_PROBE_BW:
            self._update_cycle(now, delivered)
        # windowed min RTT; PROBE_RTT once it went min_rtt_window without a new minimum
        rtt_expired = (self.min_rtt != INFINITY
                       and now > self.min_rtt_stamp + self.min_rtt_window)
        if rtt > 0.0 and (rtt <= self.min_rtt or rtt_expired):
            self.min_rtt = rtt
            self.min_rtt_stamp = now
        self._check_probe_rtt(now, rtt_expired)
        self._set_cwnd(0)

    cdef void _update_bw(self, double rate, bint app_limited):
        cdef int slot = <int>(self.round_count % BBR_BW_ROUNDS)
        cdef int i
        cdef double best = 0.0
        # app-limited samples only count when they exceed the estimate (they understate)
        if app_limited and rate < self.btl_bw:
            return
        if self._bw_round_of[slot] != self.round_count:
            self._bw_round_of[slot] = self.round_count
            self._bw_rounds[slot] = 0.0
        if rate > self._bw_rounds[slot]:
            self._bw_rounds[slot] = rate
        for i in range(BBR_BW_ROUNDS):
            if (self._bw_round_of[i] > self.round_count - BBR_BW_ROUNDS
                    and self._bw_rounds[i] > best):
                best = self._bw_rounds[i]
        self.btl_bw = best

    cdef void _forget_old_bw(self):
        # A round that lost more than loss_threshold of its data says the path no longer
        # delivers what the older maxima claim: the flow sent at its estimate and the
        # bottleneck queue overflowed. Keep only the samples of the round just finished and
        # the one starting, so the estimate falls to what the path gives now. Without this,
        # flows sharing a bottleneck each keep the maximum they saw in the last ten rounds,
        # the estimates add up to more than the link, the queue stays full and every flow is
        # capped by its window (2 x its own estimated BDP) with no force moving the shares
        # toward fairness: a flow that started late stayed small for tens of seconds.
        cdef int i
        cdef double best = 0.0
        for i in range(BBR_BW_ROUNDS):
            if self._bw_round_of[i] < self.round_count - 1:
                self._bw_round_of[i] = -1
                self._bw_rounds[i] = 0.0
            elif self._bw_rounds[i] > best:
                best = self._bw_rounds[i]
        if best > 0.0:
            self.btl_bw = best
        self.bw_resets += 1

    cdef void _check_full_pipe(self, bint app_limited):
        if self.filled_pipe or app_limited:
            return
        if self.btl_bw >= self.full_bw * 1.25:
            self.full_bw = self.btl_bw
            self.full_bw_count = 0
            return
        self.full_bw_count += 1
        if self.full_bw_count >= 3:
            self.filled_pipe = True

    cdef void _enter_probe_bw(self, double now):
        cdef int idx
        cdef unsigned long long x
        self.mode = BBR_PROBE_BW
        self.cwnd_gain = 2.0
        # Start at a pseudo-random phase other than the draining one, so flows do not probe
        # in step. Flows that leave PROBE_RTT together (they all see the queue drain at the
        # same moment) would otherwise draw the same phase whenever they share a seed, which
        # every connection built with the default one does; mixing in the flow's own
        # delivered byte count makes the draws differ per connection yet stay reproducible.
        self._rng = self._rng * 6364136223846793005ULL + 1442695040888963407ULL
        x = self._rng ^ (<unsigned long long>self._last_delivered * 0x9E3779B97F4A7C15ULL)
        x ^= x >> 31
        x *= 0xBF58476D1CE4E5B9ULL
        x ^= x >> 29
        idx = <int>((x >> 33) % (BBR_CYCLE_LEN - 1))
        if idx >= 1:
            idx += 1
        self.cycle_index = idx
        self.cycle_stamp = now
        self.pacing_gain = BBR_PACING_GAINS[idx]

    cdef void _update_cycle(self, double now, long long delivered_bytes):
        cdef bint full_length = now - self.cycle_stamp > self.min_rtt
        cdef bint advance
        if self.pacing_gain == 1.0:
            advance = full_length
        elif self.pacing_gain > 1.0:
            advance = full_length and (self._round_lost > 0
                                       or self.bytes_in_flight >= self._bdp(self.pacing_gain))
        else:
            advance = full_length or self.bytes_in_flight <= self._bdp(1.0)
        if advance:
            self.cycle_index = (self.cycle_index + 1) % BBR_CYCLE_LEN
            self.cycle_stamp = now
            self.pacing_gain = BBR_PACING_GAINS[self.cycle_index]

    cdef void _check_probe_rtt(self, double now, bint rtt_expired):
        if self.mode != BBR_PROBE_RTT and rtt_expired:
            self.mode = BBR_PROBE_RTT
            self.probe_rtt_rounds += 1
            self.pacing_gain = 1.0
            self.cwnd_gain = 1.0
            if self.congestion_window > self._prior_cwnd:
                self._prior_cwnd = self.congestion_window
            self._probe_rtt_done = -1.0
        if self.mode != BBR_PROBE_RTT:
            return
        if self._probe_rtt_done < 0.0:
            if self.bytes_in_flight <= 4 * self.max_datagram_size:
                self._probe_rtt_done = now + self.probe_rtt_duration
                self._probe_rtt_round_done = False
                self._next_round_delivered = self._last_delivered
        else:
            if self._round_start:
                self._probe_rtt_round_done = True
            if self._probe_rtt_round_done and now > self._probe_rtt_done:
                self.min_rtt_stamp = now
                self._restore_after_loss = True
                if self.filled_pipe:
                    self._enter_probe_bw(now)
                else:
                    self.mode = BBR_STARTUP
                    self.pacing_gain = self.high_gain
                    self.cwnd_gain = self.high_gain

    cdef void _set_cwnd(self, Py_ssize_t acked):
        cdef double target
        cdef Py_ssize_t cwnd = self.congestion_window
        if self.mode == BBR_PROBE_RTT:
            if cwnd > 4 * self.max_datagram_size:
                cwnd = 4 * self.max_datagram_size
        else:
            if self._restore_after_loss:
                self._restore_after_loss = False
                if self._prior_cwnd > cwnd:
                    cwnd = self._prior_cwnd
                self._prior_cwnd = 0
            target = self._bdp(self.cwnd_gain)
            if target < 0.0:
                cwnd += acked                       # no model yet: grow as in slow start
            else:
                target += 3 * self.max_datagram_size
                if self.filled_pipe:
                    cwnd += acked
                    if cwnd > target:
                        cwnd = <Py_ssize_t>target
                elif cwnd < target:
                    cwnd += acked
        if cwnd < self.minimum_window:
            cwnd = self.minimum_window
        if cwnd > self.maximum_window:
            cwnd = self.maximum_window
        self.congestion_window = cwnd


cdef class Pacer:
    """Token-bucket pacer (RFC 9002 §7.7).

    Call ``update(cwnd, srtt, cc.in_slow_start(), cc.pacing_rate())`` whenever the window or
    smoothed RTT changes, ``next_send_time(now)`` before sending (a value ``<= now`` means send
    now, otherwise arm a timer for it), and ``on_sent(size, now)`` after each packet. The rate
    is the controller's pacing rate when it gives one, else ``gain * cwnd / srtt``
    (``slow_start_gain`` in slow start). Up to ``burst_packets`` datagrams may leave back to
    back (never more than the window); at high rates a burst may hold up to ``burst_time``
    seconds' worth of the rate, at most ``max_burst_packets`` datagrams (a user-space sender
    cannot wake up every ten packets at gigabits per second, and one burst then fits one
    segmentation-offload send); with a controller's rate, a burst is about ``burst_time``
    seconds' worth of that rate (at least two datagrams, at most ``max_burst_packets``).
    """

    def __init__(self, Py_ssize_t max_datagram_size=1200, double burst_packets=10.0,
                 double gain=1.25, double slow_start_gain=2.0, double burst_time=0.001,
                 double max_burst_packets=64.0):
        if (max_datagram_size <= 0 or burst_packets < 1.0 or gain <= 0.0
                or slow_start_gain <= 0.0 or burst_time < 0.0 or max_burst_packets < burst_packets):
            raise ValueError("invalid pacer parameters")
        self.max_datagram_size = max_datagram_size
        self.burst_packets = burst_packets
        self.max_burst_packets = max_burst_packets
        self.burst_time = burst_time
        self.gain = gain
        self.slow_start_gain = slow_start_gain
        self.rate = INFINITY
        self.capacity = burst_packets * max_datagram_size
        self.tokens = self.capacity
        self.last_time = -INFINITY

    cpdef void update(self, Py_ssize_t cwnd, double srtt, bint slow_start=False,
                      double pacing_rate=0.0):
        """Set the rate (bytes per second): ``pacing_rate`` when positive (a rate-based
        controller's ``pacing_rate()``), else from the congestion window and smoothed RTT."""
        cdef double g = self.slow_start_gain if slow_start else self.gain
        cdef double burst = self.burst_packets * self.max_datagram_size
        cdef double most = self.max_burst_packets * self.max_datagram_size
        if pacing_rate > 0.0:
            self.rate = pacing_rate
            # A rate-based controller's rate is what it means to put on the path: a burst of
            # burst_packets at, say, 2 Mbit/s is a third of such a flow's window arriving at
            # once at the bottleneck, where a full queue drops the tail of it. Allow about
            # burst_time worth of the rate (at least two datagrams) instead.
            burst = pacing_rate * self.burst_time
            if burst < 2.0 * self.max_datagram_size:
                burst = 2.0 * self.max_datagram_size
            if burst > most:
                burst = most
        elif srtt <= 0.0 or cwnd <= 0:
            self.rate = INFINITY
        else:
            self.rate = g * cwnd / srtt
            # fast paths: up to burst_time worth of the rate in one burst
            if self.rate * self.burst_time > burst:
                burst = self.rate * self.burst_time
                if burst > most:
                    burst = most
        # Never allow a burst larger than the window itself.
        if cwnd > 0 and burst > cwnd:
            burst = <double>cwnd
        if burst < self.max_datagram_size:
            burst = <double>self.max_datagram_size
        self.capacity = burst
        if self.tokens > burst:
            self.tokens = burst

    cdef double _tokens_at(self, double now):
        cdef double tokens = self.tokens
        if now > self.last_time:
            if self.rate == INFINITY or self.last_time == -INFINITY:
                return self.capacity
            tokens += (now - self.last_time) * self.rate
            if tokens > self.capacity:
                tokens = self.capacity
        return tokens

    cpdef double next_send_time(self, double now):
        """Earliest time a full-size datagram may be sent; ``<= now`` means immediately."""
        cdef double tokens = self._tokens_at(now)
        if tokens >= self.max_datagram_size or self.rate == INFINITY:
            return now
        return now + (self.max_datagram_size - tokens) / self.rate

    cpdef void on_sent(self, Py_ssize_t size, double now):
        """Spend ``size`` bytes of budget for a packet sent at ``now``."""
        cdef double tokens = self._tokens_at(now)
        if now > self.last_time:
            self.last_time = now
        tokens -= size
        # Bound the debt to one burst so a stale rate cannot stall sending for long.
        if tokens < -self.capacity:
            tokens = -self.capacity
        self.tokens = tokens
