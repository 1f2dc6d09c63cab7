# cython: language_level=3, cdivision=True
"""Loss detection and RTT estimation (RFC 9002 §5, §6 and Appendix A).

The connection owns one ``Recovery`` per path. It calls

* ``on_packet_sent(SentPacket(...))`` for every packet it sends (ACK-only packets included, with
  ``ack_eliciting=False``);
* ``on_ack_received(space, ranges, ack_delay, now)`` for every ACK frame, and handles the
  returned acknowledged and lost packets (their ``frames``);
* ``get_loss_detection_timer()`` after either of those and arms a timer for the returned
  deadline (``None``: disarm);
* ``on_loss_detection_timeout(now)`` when that timer fires; a ``probe_space`` other than -1 asks
  for ``probes_needed`` ack-eliciting probe packets in that space (retransmitted data if any,
  else PING), sent even if the congestion window is full;
* ``discard_space(space)`` when the keys of a packet number space are dropped.

Packet number spaces: 0 is the handshake space (long-header packets), 1 the application space
(short-header packets). Times are float seconds chosen by the caller; nothing reads a clock.
"""
from libc.math cimport INFINITY, ldexp

from dquic._congestion cimport CongestionController
from dquic.errors import ErrorCode, ProtocolError

__all__ = ["SentPacket", "RttEstimator", "Recovery", "HANDSHAKE", "APPLICATION"]

HANDSHAKE = SPACE_HANDSHAKE
APPLICATION = SPACE_APPLICATION

cdef int ACK_FRAME_TYPE = 0x02
cdef long long MAX_PN_GAP = 1 << 16

# Slot markers for packet numbers that are no longer outstanding. ``None`` marks numbers never
# sent (gaps) or forgotten; the markers below are needed by the persistent-congestion check
# ("no packet sent between them was acknowledged", RFC 9002 §7.6.2).
cdef object _ACKED = object()
cdef object _LOST = object()


cdef class SentPacket:
    """A sent packet as loss recovery tracks it (RFC 9002 A.1.1).

    ``frames`` is opaque: the connection stores whatever it needs to retransmit on loss or to
    mark delivered on acknowledgement; recovery never looks inside. ``in_flight`` defaults to
    ``ack_eliciting`` (a packet counts toward bytes in flight when it is ack-eliciting or
    carries PADDING; pass ``in_flight=True`` for padded ACK-only packets).

    ``declared_lost`` becomes True when recovery reports the packet lost; such a packet can
    still show up later in the ``acked`` list of ``on_ack_received`` (a spurious loss): its
    frames were delivered after all. ``delivered``, ``delivered_time``, ``first_sent_time`` and
    ``is_app_limited`` are filled in by ``Recovery.on_packet_sent`` for delivery-rate sampling.
    """

    def __init__(self, long long packet_number, int space, double time_sent, Py_ssize_t sent_bytes,
                 bint ack_eliciting=True, in_flight=None, object frames=None, bint is_probe=False):
        if packet_number < 0 or sent_bytes < 0:
            raise ValueError("packet_number and sent_bytes must be non-negative")
        start_sent(self, packet_number, space, time_sent, sent_bytes, ack_eliciting,
                   ack_eliciting if in_flight is None else bool(in_flight), is_probe)
        self.frames = frames

    def __repr__(self):
        return (f"SentPacket(pn={self.packet_number}, space={self.space}, t={self.time_sent:.6f}, "
                f"bytes={self.sent_bytes}, ack_eliciting={self.ack_eliciting}, "
                f"in_flight={self.in_flight})")


cdef class RttEstimator:
    """Round-trip time estimate (RFC 9002 §5).

    Before the first sample ``smoothed_rtt = initial_rtt`` and ``rttvar = initial_rtt / 2``
    (§5.3); ``min_rtt`` is 0 and ``has_sample`` False until ``update`` is first called.
    """

    def __init__(self, double initial_rtt=0.333):
        if not initial_rtt > 0.0:
            raise ValueError("initial_rtt must be positive")
        self.initial_rtt = initial_rtt
        self.reset()

    cpdef void reset(self):
        """Forget all samples (e.g. after a path change)."""
        self.latest_rtt = 0.0
        self.smoothed_rtt = self.initial_rtt
        self.rttvar = self.initial_rtt / 2.0
        self.min_rtt = 0.0
        self.has_sample = False

    cpdef void update(self, double latest_rtt, double ack_delay, double max_ack_delay,
                      bint handshake_confirmed):
        """Add one RTT sample (RFC 9002 §5.3).

        ``latest_rtt`` is now minus the send time of the largest newly acknowledged packet,
        ``ack_delay`` the peer-reported delay in seconds. Once the handshake is confirmed the
        delay is capped at ``max_ack_delay``; it is subtracted only when the result stays at or
        above ``min_rtt``. ``min_rtt`` itself ignores ack delay.
        """
        cdef double adjusted, diff
        if ack_delay < 0.0:
            ack_delay = 0.0
        self.latest_rtt = latest_rtt
        if not self.has_sample:
            self.has_sample = True
            self.min_rtt = latest_rtt
            self.smoothed_rtt = latest_rtt
            self.rttvar = latest_rtt / 2.0
            return
        if latest_rtt < self.min_rtt:
            self.min_rtt = latest_rtt
        if handshake_confirmed and ack_delay > max_ack_delay:
            ack_delay = max_ack_delay
        adjusted = latest_rtt
        if latest_rtt >= self.min_rtt + ack_delay:
            adjusted = latest_rtt - ack_delay
        diff = self.smoothed_rtt - adjusted
        if diff < 0.0:
            diff = -diff
        self.rttvar = 0.75 * self.rttvar + 0.25 * diff
        self.smoothed_rtt = 0.875 * self.smoothed_rtt + 0.125 * adjusted

    cpdef double pto_base(self, double granularity):
        """``smoothed_rtt + max(4 * rttvar, granularity)`` (RFC 9002 §6.2.1), no backoff."""
        cdef double v = 4.0 * self.rttvar
        if v < granularity:
            v = granularity
        return self.smoothed_rtt + v

    def __repr__(self):
        return (f"RttEstimator(latest={self.latest_rtt:.6f}, smoothed={self.smoothed_rtt:.6f}, "
                f"rttvar={self.rttvar:.6f}, min={self.min_rtt:.6f})")


cdef class _Space:
    """Sent-packet state of one packet number space."""

    def __cinit__(self):
        self.slots = []
        self.head = 0
        self.base = 0
        self.largest_sent = -1
        self.largest_acked = -1
        self.loss_time = -1.0
        self.time_of_last_ack_eliciting = -1.0
        self.ack_eliciting_in_flight = 0
        self.bytes_in_flight = 0
        self.outstanding = 0
        self.not_in_flight = 0
        self.lost = None        # both made on the first loss tracked, dropped when emptied
        self.lost_pns = None
        self.discarded = False


cdef void _track_lost(_Space sp, SentPacket pkt):
    # losses are declared in packet number order, so this is nearly always an append
    if sp.lost is None:
        sp.lost = {}
        sp.lost_pns = []
    cdef list pns = sp.lost_pns
    cdef long long pn = pkt.packet_number
    cdef Py_ssize_t i
    sp.lost[pn] = pkt
    i = len(pns)
    while i > 0 and <long long>pns[i - 1] > pn:
        i -= 1
    pns.insert(i, pn)


def _pn_key(SentPacket pkt):
    return pkt.packet_number


cdef inline void _forget(_Space sp, SentPacket pkt):
    # Remove an outstanding packet's contribution to the space's counters.
    sp.outstanding -= 1
    if pkt.in_flight:
        sp.bytes_in_flight -= pkt.sent_bytes
        if pkt.ack_eliciting:
            sp.ack_eliciting_in_flight -= 1
    else:
        sp.not_in_flight -= 1


cdef class Recovery:
    """Per-path loss recovery state: sent packets, RTT, loss detection and PTO (RFC 9002).

    ``congestion`` is any ``dquic._congestion.CongestionController`` (including Python
    subclasses); recovery reports sent, acknowledged, lost and discarded in-flight bytes to it.
    """

    def __init__(self, CongestionController congestion not None, double max_ack_delay=0.025,
                 double initial_rtt=0.333, int packet_threshold=3, double time_threshold=9.0 / 8.0,
                 double granularity=0.001, int persistent_congestion_threshold=3,
                 Py_ssize_t max_lost_tracked=256, Py_ssize_t max_tracked=32768,
                 bint adaptive_reordering=True, int max_packet_threshold=64,
                 double max_time_threshold=2.0, int reordering_decay=64):
        if packet_threshold < 1 or time_threshold < 1.0 or granularity <= 0.0:
            raise ValueError("invalid loss detection thresholds")
        if max_ack_delay < 0.0 or persistent_congestion_threshold < 1:
            raise ValueError("invalid max_ack_delay or persistent_congestion_threshold")
        if max_lost_tracked < 0 or max_tracked < 1:
            raise ValueError("invalid tracking limits")
        if max_packet_threshold < packet_threshold or max_time_threshold < time_threshold:
            raise ValueError("maximum reordering thresholds below the initial ones")
        if reordering_decay < 1:
            raise ValueError("reordering_decay must be at least 1")
        self.congestion = congestion
        self.rtt = RttEstimator(initial_rtt)
        self.max_ack_delay = max_ack_delay
        self.packet_threshold = packet_threshold
        self.time_threshold = time_threshold
        self.granularity = granularity
        self.persistent_congestion_threshold = persistent_congestion_threshold
        self.handshake_confirmed = False
        self.pto_count = 0
        self.probes_needed = 0
        self.max_lost_tracked = max_lost_tracked
        self.max_tracked = max_tracked
        self.first_rtt_sample_time = -1.0
        self.packets_sent = 0
        self.packets_acked = 0
        self.packets_lost = 0
        self.pmtu_probes_lost = 0
        self.bytes_lost = 0
        self.spurious_losses = 0
        self.persistent_congestions = 0
        self.pto_expirations = 0
        self.congestion_undos = 0
        self.adaptive_reordering = adaptive_reordering
        self.base_packet_threshold = packet_threshold
        self.max_packet_threshold = max_packet_threshold
        self.base_time_threshold = time_threshold
        self.max_time_threshold = max_time_threshold
        self.reordering_decay = reordering_decay
        self.max_reordering_seen = 0
        self._genuine_streak = 0
        self._episode = 0
        self._episode_left = 0
        self._episode_undoable = False
        self.delivered = 0
        self.delivered_time = 0.0
        self.first_sent_time = 0.0
        self.app_limited_until = 0
        self.last_delivery_rate = 0.0
        self._sp0 = _Space()
        self._sp1 = _Space()

    cdef inline _Space _space(self, int space):
        if space == SPACE_HANDSHAKE:
            return self._sp0
        if space == SPACE_APPLICATION:
            return self._sp1
        raise ValueError(f"unknown packet number space {space}")

    # ------------------------------------------------------------------ read-only views
    @property
    def bytes_in_flight(self):
        """In-flight bytes over both spaces (equals the controller's unless it was reset)."""
        return self._sp0.bytes_in_flight + self._sp1.bytes_in_flight

    @property
    def ack_eliciting_in_flight(self):
        """Number of ack-eliciting packets in flight over both spaces."""
        return self._sp0.ack_eliciting_in_flight + self._sp1.ack_eliciting_in_flight

    cpdef long long largest_acked(self, int space):
        """Largest packet number the peer acknowledged in ``space`` (-1 if none)."""
        return self._space(space).largest_acked

    cpdef long long largest_sent(self, int space):
        """Largest packet number sent in ``space`` (-1 if none)."""
        return self._space(space).largest_sent

    def loss_time(self, int space):
        """Pending time-threshold loss deadline of ``space``, or None."""
        cdef _Space sp = self._space(space)
        return sp.loss_time if sp.loss_time >= 0.0 else None

    def outstanding(self, int space):
        """Packets of ``space`` neither acknowledged nor declared lost, in packet number order."""
        cdef _Space sp = self._space(space)
        return [p for p in sp.slots[sp.head:] if isinstance(p, SentPacket)]

    def is_discarded(self, int space):
        """True once ``discard_space(space)`` was called."""
        return self._space(space).discarded

    def set_congestion_controller(self, CongestionController congestion not None,
                                  bint reset_rtt=False):
        """Replace the congestion controller (e.g. on a new network path, RFC 9000 §9.4).

        The new controller takes over the current in-flight bytes so that later ACKs and losses
        balance. With ``reset_rtt`` the RTT estimator starts over from ``initial_rtt`` too.
        """
        congestion.bytes_in_flight = self._sp0.bytes_in_flight + self._sp1.bytes_in_flight
        self.congestion = congestion
        if reset_rtt:
            self.rtt.reset()
            self.first_rtt_sample_time = -1.0

    # ------------------------------------------------------------------ sending
    cpdef void on_packet_sent(self, SentPacket pkt):
        """Record a packet just sent (RFC 9002 A.5). Packet numbers must increase per space.

        In-flight bytes are reported to the congestion controller. Call
        ``get_loss_detection_timer()`` afterwards when the packet was ack-eliciting.
        """
        cdef _Space sp = self._space(pkt.space)
        cdef long long pn = pkt.packet_number
        cdef long long gap
        cdef Py_ssize_t n
        cdef object obj
        if sp.discarded:
            raise ValueError("packet sent in a discarded packet number space")
        if pn <= sp.largest_sent:
            raise ValueError("packet numbers must increase within a space")
        n = len(sp.slots)
        if sp.head == n:
            if n:
                sp.slots = []
            sp.head = 0
            sp.base = pn
        else:
            gap = pn - (sp.base + n)
            if gap > 0:
                if gap > MAX_PN_GAP:
                    raise ValueError("packet number gap too large")
                sp.slots.extend([None] * <Py_ssize_t>gap)
        sp.slots.append(pkt)
        sp.outstanding += 1
        sp.largest_sent = pn
        self.packets_sent += 1
        if pkt.in_flight:
            # delivery-rate sampling (draft-cheng-iccrg-delivery-rate-estimation §3.2): an idle
            # sender restarts the send and delivery intervals at this packet
            if self._sp0.bytes_in_flight + self._sp1.bytes_in_flight == 0:
                self.first_sent_time = pkt.time_sent
                self.delivered_time = pkt.time_sent
            pkt.delivered = self.delivered
            pkt.delivered_time = self.delivered_time
            pkt.first_sent_time = self.first_sent_time
            pkt.is_app_limited = self.app_limited_until != 0
            if pkt.ack_eliciting:
                sp.time_of_last_ack_eliciting = pkt.time_sent
                sp.ack_eliciting_in_flight += 1
            sp.bytes_in_flight += pkt.sent_bytes
            self.congestion.on_packet_sent(pkt.sent_bytes, pkt.time_sent)
        else:
            sp.not_in_flight += 1
            if sp.not_in_flight > self.max_tracked:
                self._evict_not_in_flight(sp)

    cdef void _evict_not_in_flight(self, _Space sp):
        # Bound memory: forget the oldest packets that are not in flight (ACK-only packets the
        # peer never acknowledged) down to half the limit; they play no part in loss detection
        # or congestion control. One pass per max_tracked/2 such packets: amortised O(1).
        cdef Py_ssize_t i, n = len(sp.slots)
        cdef Py_ssize_t target = self.max_tracked // 2
        cdef object obj
        for i in range(sp.head, n):
            if sp.not_in_flight <= target:
                break
            obj = sp.slots[i]
            if isinstance(obj, SentPacket) and not (<SentPacket>obj).in_flight:
                _forget(sp, <SentPacket>obj)
                sp.slots[i] = None
        self._compact(sp)

    # ------------------------------------------------------------------ acknowledgements
    cpdef tuple on_ack_received(self, int space, object ranges, double ack_delay, double now):
        """Process one ACK frame (RFC 9002 A.7); returns ``(acked, lost)`` lists of SentPacket.

        ``ranges`` are ascending half-open ``(start, stop)`` packet number ranges as the ACK
        decoder yields them; ``ack_delay`` is already in seconds (ignored in the handshake
        space). Raises ``ProtocolError(PROTOCOL_VIOLATION)`` when a packet number larger than
        any sent is acknowledged.

        ``acked`` also holds packets that were declared lost earlier and are acknowledged now
        (``pkt.declared_lost`` is True): their frames reached the peer, so the caller marks
        them delivered (and must not send that data again); they are not in flight any more
        and do not count toward the congestion controller's acknowledged bytes. Such a
        spurious loss widens the reordering thresholds and, once every loss of a congestion
        episode turned out spurious, undoes the window reduction
        (``CongestionController.on_spurious_congestion``).
        Call ``get_loss_detection_timer()`` next.
        """
        cdef _Space sp = self._space(space)
        cdef list rl
        cdef list newly = []
        cdef list spurious = None
        cdef list lost
        cdef object r, obj
        cdef SentPacket pkt
        cdef SentPacket largest_pkt = None
        cdef SentPacket newest = None
        cdef long long start, stop, largest = -1, pn, lo, hi, end, prior_largest
        cdef Py_ssize_t i, n
        cdef Py_ssize_t acked_bytes = 0, spurious_bytes = 0
        cdef bint any_in_flight = False
        cdef bint includes_ack_eliciting = False
        cdef double largest_time_sent = -INFINITY
        cdef double rtt_sample = 0.0

        if sp.discarded:
            return [], []
        rl = ranges if type(ranges) is list else list(ranges)
        if not rl:
            return [], []
        for r in rl:
            start = r[0]
            stop = r[1]
            if start < 0 or stop <= start:
                raise ProtocolError("malformed ACK range", ErrorCode.FRAME_ENCODING_ERROR,
                                    ACK_FRAME_TYPE)
            if stop - 1 > largest:
                largest = stop - 1
        if largest > sp.largest_sent:
            raise ProtocolError("ACK of a packet number that was never sent",
                                ErrorCode.PROTOCOL_VIOLATION, ACK_FRAME_TYPE)

        n = len(sp.slots)
        end = sp.base + n
        for r in rl:
            start = r[0]
            stop = r[1]
            if sp.lost:
                if spurious is None:
                    spurious = []
                self._ack_lost(sp, start, stop, spurious)
            lo = start if start > sp.base + sp.head else sp.base + sp.head
            hi = stop if stop < end else end
            pn = lo
            while pn < hi:
                i = <Py_ssize_t>(pn - sp.base)
                obj = sp.slots[i]
                if isinstance(obj, SentPacket):
                    pkt = <SentPacket>obj
                    sp.slots[i] = _ACKED
                    _forget(sp, pkt)
                    newly.append(pkt)
                    if pkt.in_flight:
                        any_in_flight = True
                        acked_bytes += pkt.sent_bytes
                        if pkt.time_sent > largest_time_sent:
                            largest_time_sent = pkt.time_sent
                        # rate sample from the most recently sent packet (ties: larger pn)
                        if newest is None or pkt.time_sent >= newest.time_sent:
                            newest = pkt
                    if pkt.ack_eliciting:
                        includes_ack_eliciting = True
                    if largest_pkt is None or pn > largest_pkt.packet_number:
                        largest_pkt = pkt
                elif obj is _LOST:
                    sp.slots[i] = _ACKED
                pn += 1

        prior_largest = sp.largest_acked
        if spurious:
            for pkt in spurious:
                spurious_bytes += pkt.sent_bytes
                if pkt.ack_eliciting:
                    includes_ack_eliciting = True
                if largest_pkt is None or pkt.packet_number > largest_pkt.packet_number:
                    largest_pkt = pkt
                self._on_spurious(sp, pkt, prior_largest, now)
            newly.extend(spurious)
            if len(newly) > len(spurious):
                newly.sort(key=_pn_key)
        if not newly:
            return newly, []

        self.packets_acked += len(newly)
        if largest > sp.largest_acked:
            sp.largest_acked = largest

        # RFC 9002 §5.1: sample only when the largest acknowledged is newly acknowledged and
        # something ack-eliciting was newly acknowledged.
        if largest_pkt.packet_number == largest and includes_ack_eliciting:
            rtt_sample = now - largest_pkt.time_sent
            if rtt_sample < 1e-6:
                rtt_sample = 1e-6
            if space != SPACE_APPLICATION:
                ack_delay = 0.0
            self.rtt.update(rtt_sample, ack_delay, self.max_ack_delay, self.handshake_confirmed)
            if self.first_rtt_sample_time < 0.0:
                self.first_rtt_sample_time = now

        lost = self._detect_lost(sp, now)
        if lost:
            self._on_lost(sp, lost, now)
        if any_in_flight:
            self.congestion.on_packets_acked(acked_bytes, largest_time_sent, now, rtt_sample,
                                             self.rtt.smoothed_rtt, self.rtt.min_rtt)
        if acked_bytes or spurious_bytes:
            self._rate_sample(newest, acked_bytes + spurious_bytes, now)
        # The client-side exception of A.7 (keep backing off until the server validated the
        # address) is not applied: an acknowledgement always resets the backoff.
        self.pto_count = 0
        self._prune_lost(sp, now)
        self._compact(sp)
        return newly, lost

    cdef void _rate_sample(self, SentPacket newest, Py_ssize_t nbytes, double now):
        # draft-cheng-iccrg-delivery-rate-estimation §3.3: the sample spans from the send of the
        # newest acknowledged packet back to the delivery state recorded when it was sent; the
        # longer of the send and ACK intervals guards against ACK compression.
        cdef double send_elapsed, ack_elapsed, interval, rate
        cdef long long delivered
        self.delivered += nbytes
        self.delivered_time = now
        if self.app_limited_until and self.delivered > self.app_limited_until:
            self.app_limited_until = 0
        if newest is None:
            return
        self.first_sent_time = newest.time_sent
        send_elapsed = newest.time_sent - newest.first_sent_time
        ack_elapsed = now - newest.delivered_time
        interval = send_elapsed if send_elapsed > ack_elapsed else ack_elapsed
        delivered = self.delivered - newest.delivered
        # intervals shorter than min_rtt would overestimate the rate (§3.3)
        if interval <= 0.0 or interval < self.rtt.min_rtt or delivered <= 0:
            return
        rate = delivered / interval
        self.last_delivery_rate = rate
        self.congestion.on_rate_sample(rate, now - newest.time_sent, self.delivered,
                                       newest.delivered, newest.is_app_limited, now)

    cpdef void on_app_limited(self):
        """Mark the sender application-limited (rate estimation draft §3.4).

        Call when the connection could have sent (congestion window and pacer allow it) but
        had nothing to send. Rate samples taken until the data in flight now is delivered are
        flagged ``is_app_limited`` so controllers do not mistake them for the path's capacity.
        """
        cdef long long mark = self.delivered + self._sp0.bytes_in_flight + self._sp1.bytes_in_flight
        self.app_limited_until = mark if mark > 0 else 1

    cdef int _ack_lost(self, _Space sp, long long start, long long stop, list out) except -1:
        # Move the tracked lost packets acknowledged by [start, stop) to ``out``: a binary
        # search in the ascending lost_pns, so an ACK frame costs O(ranges * log(lost)).
        cdef list pns = sp.lost_pns
        cdef Py_ssize_t n = len(pns), lo = 0, hi, mid, j
        if n == 0 or stop <= <long long>pns[0] or start > <long long>pns[n - 1]:
            return 0
        hi = n
        while lo < hi:
            mid = (lo + hi) >> 1
            if <long long>pns[mid] < start:
                lo = mid + 1
            else:
                hi = mid
        j = lo
        while j < n and <long long>pns[j] < stop:
            out.append(sp.lost.pop(pns[j]))
            j += 1
        if j > lo:
            del pns[lo:j]
            if not pns:
                sp.lost = sp.lost_pns = None
        return 0

    cdef void _on_spurious(self, _Space sp, SentPacket pkt, long long prior_largest, double now):
        # A packet declared lost was acknowledged: the network reordered (or delayed) it.
        # Adaptive thresholds (RFC 9002 §6.1 allows them; RFC 8985 §6.2 does the same with its
        # reordering window): the packet threshold grows to the observed reordering distance
        # + 1, up to max_packet_threshold (deeper reordering switches packet-threshold detection
        # off, leaving the time threshold), and the time threshold grows to the observed delay
        # in RTTs + 1/8, up to max_time_threshold. Both decay after reordering_decay losses in a
        # row turn out genuine (_confirm_lost).
        cdef long long dist
        cdef double base, ratio
        self.spurious_losses += 1
        self._genuine_streak = 0
        if self.adaptive_reordering:
            dist = prior_largest - pkt.packet_number
            if dist > self.max_reordering_seen:
                self.max_reordering_seen = dist
            if dist >= self.max_packet_threshold:
                self.packet_threshold = self.max_packet_threshold
                self.packet_threshold_disabled = True
            elif dist + 1 > self.packet_threshold:
                self.packet_threshold = <int>(dist + 1)
            base = self.rtt.latest_rtt
            if self.rtt.smoothed_rtt > base:
                base = self.rtt.smoothed_rtt
            if base > 0.0:
                ratio = (now - pkt.time_sent) / base + 0.125
                if ratio > self.max_time_threshold:
                    ratio = self.max_time_threshold
                if ratio > self.time_threshold:
                    self.time_threshold = ratio
        if pkt._episode != 0 and pkt._episode == self._episode and self._episode_undoable:
            self._episode_left -= 1
            if self._episode_left <= 0:
                # every loss of the episode was spurious: undo the reduction (RFC 9002 §7.3
                # leaves undo to the controller; cf. RFC 4015, RFC 8985 §9.3)
                self._episode_undoable = False
                self.congestion_undos += 1
                self.congestion.on_spurious_congestion(now)

    cdef void _confirm_lost(self, SentPacket pkt):
        # A tracked lost packet was never acknowledged within the tracking horizon (or was
        # evicted): treat the loss as genuine.
        if pkt._episode != 0 and pkt._episode == self._episode:
            self._episode_undoable = False
        if not self.adaptive_reordering:
            return
        self._genuine_streak += 1
        if self._genuine_streak >= self.reordering_decay:
            self._genuine_streak = 0
            self.packet_threshold_disabled = False
            self.packet_threshold = (self.base_packet_threshold
                                     + (self.packet_threshold - self.base_packet_threshold) // 2)
            self.time_threshold = (self.base_time_threshold
                                   + (self.time_threshold - self.base_time_threshold) / 2.0)

    cdef void _prune_lost(self, _Space sp, double now):
        # Lost packets are remembered until about four PTOs after they were sent (and at most
        # max_lost_tracked of them); an acknowledgement after that is not recognised.
        cdef double horizon
        cdef list pns = sp.lost_pns
        cdef Py_ssize_t j = 0, n
        if pns is None:
            return
        n = len(pns)
        horizon = now - 4.0 * (self.rtt.pto_base(self.granularity) + self.max_ack_delay)
        while j < n and (<SentPacket>sp.lost[pns[j]]).time_sent < horizon:
            self._confirm_lost(<SentPacket>sp.lost.pop(pns[j]))
            j += 1
        if j:
            del pns[:j]
            if not pns:
                sp.lost = sp.lost_pns = None

    cdef void _compact(self, _Space sp):
        cdef Py_ssize_t n = len(sp.slots)
        while sp.head < n and not isinstance(sp.slots[sp.head], SentPacket):
            sp.head += 1
        if sp.head == n:
            if n:
                sp.base += n
                sp.slots = []
            sp.head = 0
        elif sp.head >= 64 and 2 * sp.head >= n:
            del sp.slots[:sp.head]
            sp.base += sp.head
            sp.head = 0

    # ------------------------------------------------------------------ loss detection
    cdef list _detect_lost(self, _Space sp, double now):
        # RFC 9002 A.10: packet threshold (§6.1.1) and time threshold (§6.1.2).
        cdef list lost = []
        cdef double loss_delay, t
        cdef long long largest_acked = sp.largest_acked
        cdef long long pthresh
        cdef Py_ssize_t i, end
        cdef object obj
        cdef SentPacket pkt
        sp.loss_time = -1.0
        if largest_acked < 0:
            return lost
        loss_delay = self.rtt.latest_rtt
        if self.rtt.smoothed_rtt > loss_delay:
            loss_delay = self.rtt.smoothed_rtt
        loss_delay *= self.time_threshold
        if loss_delay < self.granularity:
            loss_delay = self.granularity
        # packet threshold (§6.1.1), unless reordering deeper than the cap switched it off
        pthresh = (<long long>1 << 62) if self.packet_threshold_disabled else self.packet_threshold
        end = <Py_ssize_t>(largest_acked - sp.base + 1)
        if end > len(sp.slots):
            end = len(sp.slots)
        for i in range(sp.head, end):
            obj = sp.slots[i]
            if not isinstance(obj, SentPacket):
                continue
            pkt = <SentPacket>obj
            # compare as time_sent + loss_delay <= now, the same expression that sets
            # loss_time below, so a timer firing at loss_time always declares the loss
            if (pkt.time_sent + loss_delay <= now
                    or largest_acked >= pkt.packet_number + pthresh):
                sp.slots[i] = _LOST
                _forget(sp, pkt)
                lost.append(pkt)
            else:
                t = pkt.time_sent + loss_delay
                if sp.loss_time < 0.0 or t < sp.loss_time:
                    sp.loss_time = t
        return lost

    cdef void _on_lost(self, _Space sp, list lost, double now):
        cdef SentPacket pkt
        cdef Py_ssize_t lost_bytes = 0
        cdef bint any_in_flight = False
        cdef double latest = -INFINITY
        cdef long long events_before = self.congestion.congestion_events
        cdef Py_ssize_t probes = 0
        for pkt in lost:
            pkt.declared_lost = True
            if pkt.pmtu_probe:
                # a path MTU probe larger than the path carries is lost by design: its bytes
                # leave the flight without a congestion signal (RFC 9000 §14.4)
                probes += 1
                self.pmtu_probes_lost += 1
                if pkt.in_flight:
                    self.congestion.on_packet_discarded(pkt.sent_bytes)
                continue
            if not pkt.in_flight:
                continue
            any_in_flight = True
            lost_bytes += pkt.sent_bytes
            if pkt.time_sent > latest:
                latest = pkt.time_sent
        self.packets_lost += len(lost) - probes
        if not any_in_flight:
            return
        self.bytes_lost += lost_bytes
        self.congestion.on_packets_lost(lost_bytes, now)
        self.congestion.on_congestion_event(latest, now)
        if self.congestion.congestion_events != events_before:
            # the controller reduced: a new congestion episode, undoable while all its losses
            # may still turn out spurious (losses inside the recovery period join it)
            self._episode += 1
            self._episode_left = 0
            self._episode_undoable = True
        for pkt in lost:
            if not pkt.in_flight or pkt.pmtu_probe:
                continue
            if self.max_lost_tracked and pkt.ack_eliciting:
                if self._episode_undoable:
                    pkt._episode = self._episode
                    self._episode_left += 1
                _track_lost(sp, pkt)
                if len(sp.lost_pns) > self.max_lost_tracked:
                    self._confirm_lost(<SentPacket>sp.lost.pop(sp.lost_pns.pop(0)))
            else:
                self._episode_undoable = False   # this loss could never be shown spurious
        if self._persistent(sp, lost):
            self.persistent_congestions += 1
            self.congestion.on_persistent_congestion(now)

    cdef bint _persistent(self, _Space sp, list lost):
        # RFC 9002 §7.6: two ack-eliciting packets, both lost, sent more than the persistent
        # congestion duration apart, with no packet sent between them acknowledged, and both
        # sent after the first RTT sample. Checked within one space and one loss batch.
        cdef double duration, run_start = 0.0
        cdef long long prev = -1
        cdef bint in_run = False
        cdef SentPacket pkt
        cdef Py_ssize_t i
        if not self.rtt.has_sample or len(lost) < 2:
            return False
        duration = ((self.rtt.pto_base(self.granularity) + self.max_ack_delay)
                    * self.persistent_congestion_threshold)
        for pkt in lost:
            if (not pkt.ack_eliciting or pkt.pmtu_probe
                    or pkt.time_sent < self.first_rtt_sample_time):
                continue
            if in_run:
                for i in range(<Py_ssize_t>(prev + 1 - sp.base), <Py_ssize_t>(pkt.packet_number - sp.base)):
                    if i >= 0 and sp.slots[i] is _ACKED:
                        in_run = False
                        break
            if not in_run:
                in_run = True
                run_start = pkt.time_sent
            prev = pkt.packet_number
            if pkt.time_sent - run_start > duration:
                return True
        return False

    # ------------------------------------------------------------------ timers
    cdef double _pto_time(self, int* out_space):
        # RFC 9002 A.8 GetPtoTimeAndSpace. The application space is not skipped before the
        # handshake is confirmed (data may be in flight there first); its PTO includes the
        # peer's max_ack_delay.
        cdef int e = self.pto_count if self.pto_count < 30 else 30
        cdef double duration = ldexp(self.rtt.pto_base(self.granularity), e)
        cdef double best = INFINITY, t
        cdef _Space sp
        out_space[0] = -1
        sp = self._sp0
        if not sp.discarded and sp.ack_eliciting_in_flight > 0:
            t = sp.time_of_last_ack_eliciting + duration
            if t < best:
                best = t
                out_space[0] = SPACE_HANDSHAKE
        sp = self._sp1
        if not sp.discarded and sp.ack_eliciting_in_flight > 0:
            t = sp.time_of_last_ack_eliciting + duration + ldexp(self.max_ack_delay, e)
            if t < best:
                best = t
                out_space[0] = SPACE_APPLICATION
        return best

    cpdef object get_loss_detection_timer(self):
        """Deadline for ``on_loss_detection_timeout`` (RFC 9002 A.8), or None to disarm.

        The earliest pending time-threshold loss if any; otherwise the PTO deadline when
        ack-eliciting packets are in flight, backed off by ``2 ** pto_count``. The client
        anti-deadlock timer (PTO with nothing in flight before address validation) is not
        armed: the connection keeps its own handshake timer for that.
        """
        cdef int s
        cdef double t = -1.0
        if self._sp0.loss_time >= 0.0:
            t = self._sp0.loss_time
        if self._sp1.loss_time >= 0.0 and (t < 0.0 or self._sp1.loss_time < t):
            t = self._sp1.loss_time
        if t >= 0.0:
            return t
        t = self._pto_time(&s)
        if s < 0:
            return None
        return t

    cpdef tuple on_loss_detection_timeout(self, double now):
        """Handle the loss detection timer (RFC 9002 A.9); returns ``(lost, probe_space)``.

        If a time-threshold loss is due, the packets are declared lost and ``probe_space`` is
        -1. Otherwise, if the PTO is due, ``pto_count`` grows by one and ``probe_space`` names
        the space in which to send ``probes_needed`` ack-eliciting probes. A call before the
        deadline does nothing and returns ``([], -1)``. Re-arm with
        ``get_loss_detection_timer()`` afterwards.
        """
        cdef _Space sp = None
        cdef list lost
        cdef int s
        cdef double t
        if self._sp0.loss_time >= 0.0:
            sp = self._sp0
        if self._sp1.loss_time >= 0.0 and (sp is None or self._sp1.loss_time < sp.loss_time):
            sp = self._sp1
        if sp is not None:
            if sp.loss_time > now:
                return [], -1
            lost = self._detect_lost(sp, now)
            if lost:
                self._on_lost(sp, lost, now)
                self._compact(sp)
            return lost, -1
        t = self._pto_time(&s)
        if s < 0 or t > now:
            return [], -1
        self.pto_count += 1
        self.pto_expirations += 1
        self.probes_needed = 2     # §6.2.4: one or two; two makes a single loss survivable
        return [], s

    # ------------------------------------------------------------------ key discard
    cpdef void discard_space(self, int space):
        """Drop all state of ``space`` once its keys are discarded (RFC 9002 §6.4, A.11).

        Its in-flight bytes leave the congestion controller without being treated as lost;
        later ACKs for the space are ignored and sending in it is an error.
        """
        cdef _Space sp = self._space(space)
        if sp.discarded:
            return
        if sp.bytes_in_flight > 0:
            self.congestion.on_packet_discarded(sp.bytes_in_flight)
        sp.slots = []
        sp.head = 0
        sp.base = sp.largest_sent + 1
        sp.loss_time = -1.0
        sp.time_of_last_ack_eliciting = -1.0
        sp.ack_eliciting_in_flight = 0
        sp.bytes_in_flight = 0
        sp.outstanding = 0
        sp.not_in_flight = 0
        if sp.lost:
            self._episode_undoable = False
        sp.lost = sp.lost_pns = None
        sp.discarded = True
        self.pto_count = 0
