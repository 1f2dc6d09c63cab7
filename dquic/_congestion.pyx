# cython: language_level=3, cdivision=True
"""Congestion controllers and the pacer.

* ``CongestionController`` — the base class: in-flight accounting, recovery periods and a plain
  halving response to congestion. Subclass it (in Cython or Python) to plug in another algorithm;
  every hook is a ``cpdef`` method so a Python override is honoured when ``dquic._recovery``
  calls it.
* ``NewReno`` — RFC 9002 §7 and Appendix B.
* ``Cubic`` — RFC 9438, with HyStart++ (RFC 9406) in the initial slow start. The default.
* ``Pacer`` — a token bucket spreading a window's worth of packets over a round trip
  (RFC 9002 §7.7).

All times are float seconds passed in by the caller; nothing here reads a clock.
"""
from libc.math cimport INFINITY, cbrt, fabs

__all__ = ["CongestionController", "NewReno", "Cubic", "Pacer"]

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


cdef class Pacer:
    """Token-bucket pacer (RFC 9002 §7.7).

    Call ``update(cwnd, srtt, slow_start)`` whenever the window or smoothed RTT changes,
    ``next_send_time(now)`` before sending (a value ``<= now`` means send now, otherwise arm a
    timer for it), and ``on_sent(size, now)`` after each packet. The rate is
    ``gain * cwnd / srtt`` (``slow_start_gain`` in slow start) and up to ``burst_packets``
    datagrams may leave back to back.
    """

    def __init__(self, Py_ssize_t max_datagram_size=1200, double burst_packets=10.0,
                 double gain=1.25, double slow_start_gain=2.0):
        if max_datagram_size <= 0 or burst_packets < 1.0 or gain <= 0.0 or slow_start_gain <= 0.0:
            raise ValueError("invalid pacer parameters")
        self.max_datagram_size = max_datagram_size
        self.burst_packets = burst_packets
        self.gain = gain
        self.slow_start_gain = slow_start_gain
        self.rate = INFINITY
        self.capacity = burst_packets * max_datagram_size
        self.tokens = self.capacity
        self.last_time = -INFINITY

    cpdef void update(self, Py_ssize_t cwnd, double srtt, bint slow_start=False):
        """Set the rate from the congestion window and smoothed RTT (bytes per second)."""
        cdef double g = self.slow_start_gain if slow_start else self.gain
        cdef double burst = self.burst_packets * self.max_datagram_size
        if srtt <= 0.0 or cwnd <= 0:
            self.rate = INFINITY
        else:
            self.rate = g * cwnd / srtt
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
