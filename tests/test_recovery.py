"""Loss recovery (RFC 9002 §5, §6, Appendix A) with a virtual clock."""
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dquic._congestion import CongestionController, NewReno
from dquic._recovery import APPLICATION, HANDSHAKE, Recovery, RttEstimator, SentPacket
from dquic.errors import ErrorCode, ProtocolError

MDS = 1200


def make(cc=None, **kw):
    cc = cc if cc is not None else NewReno()
    return Recovery(cc, **kw), cc


def send(rec, pn, t, space=APPLICATION, size=MDS, **kw):
    pkt = SentPacket(pn, space, t, size, **kw)
    rec.on_packet_sent(pkt)
    return pkt


def pns(pkts):
    return [p.packet_number for p in pkts]


# ---------------------------------------------------------------- RTT estimator (§5.3)
def test_rtt_initial_values():
    r = RttEstimator()
    assert r.smoothed_rtt == pytest.approx(0.333)
    assert r.rttvar == pytest.approx(0.333 / 2)
    assert not r.has_sample and r.min_rtt == 0.0
    assert RttEstimator(0.1).smoothed_rtt == pytest.approx(0.1)
    with pytest.raises(ValueError):
        RttEstimator(0.0)


def test_rtt_first_sample_ignores_ack_delay():
    r = RttEstimator()
    r.update(0.1, 0.05, 0.025, True)
    assert r.has_sample
    assert (r.latest_rtt, r.smoothed_rtt, r.min_rtt) == (0.1, 0.1, 0.1)
    assert r.rttvar == pytest.approx(0.05)


def test_rtt_subsequent_samples_follow_rfc_formulas():
    r = RttEstimator()
    r.update(0.1, 0.0, 0.025, True)
    r.update(0.2, 0.01, 0.025, True)
    adjusted = 0.2 - 0.01
    rttvar = 0.75 * 0.05 + 0.25 * abs(0.1 - adjusted)
    srtt = 0.875 * 0.1 + 0.125 * adjusted
    assert r.rttvar == pytest.approx(rttvar)
    assert r.smoothed_rtt == pytest.approx(srtt)
    assert r.min_rtt == 0.1 and r.latest_rtt == 0.2


def test_rtt_ack_delay_capped_after_confirmation_only():
    a, b = RttEstimator(), RttEstimator()
    for r in (a, b):
        r.update(0.1, 0.0, 0.025, True)
    a.update(0.3, 0.1, 0.025, True)      # capped to 0.025
    b.update(0.3, 0.1, 0.025, False)     # not capped before confirmation
    assert a.smoothed_rtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.275)
    assert b.smoothed_rtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.2)


def test_rtt_ack_delay_not_subtracted_below_min_rtt():
    r = RttEstimator()
    r.update(0.1, 0.0, 0.025, True)
    r.update(0.11, 0.02, 0.025, True)    # 0.11 < 0.1 + 0.02: use 0.11 unadjusted
    assert r.smoothed_rtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.11)
    r.update(0.05, 0.04, 0.025, True)    # min_rtt ignores ack delay
    assert r.min_rtt == 0.05


def _reference_rtt(samples, max_ack_delay, confirmed):
    srtt = rttvar = min_rtt = None
    for latest, delay in samples:
        if srtt is None:
            srtt, rttvar, min_rtt = latest, latest / 2, latest
            continue
        min_rtt = min(min_rtt, latest)
        if confirmed:
            delay = min(delay, max_ack_delay)
        adj = latest - delay if latest >= min_rtt + delay else latest
        rttvar = 0.75 * rttvar + 0.25 * abs(srtt - adj)
        srtt = 0.875 * srtt + 0.125 * adj
    return srtt, rttvar, min_rtt


@given(st.lists(st.tuples(st.floats(1e-4, 2.0), st.floats(0.0, 0.1)), min_size=1, max_size=50),
       st.booleans())
def test_rtt_matches_reference(samples, confirmed):
    r = RttEstimator()
    for latest, delay in samples:
        r.update(latest, delay, 0.025, confirmed)
    srtt, rttvar, min_rtt = _reference_rtt(samples, 0.025, confirmed)
    assert r.smoothed_rtt == pytest.approx(srtt)
    assert r.rttvar == pytest.approx(rttvar)
    assert r.min_rtt == pytest.approx(min_rtt)


# ---------------------------------------------------------------- ACK processing
def test_ack_of_unsent_packet_raises_protocol_violation():
    rec, _ = make()
    send(rec, 0, 0.0)
    with pytest.raises(ProtocolError) as ei:
        rec.on_ack_received(APPLICATION, [(0, 2)], 0.0, 0.1)
    assert ei.value.error_code == ErrorCode.PROTOCOL_VIOLATION
    with pytest.raises(ProtocolError):
        rec.on_ack_received(HANDSHAKE, [(0, 1)], 0.0, 0.1)   # nothing sent in that space


def test_malformed_range_raises():
    rec, _ = make()
    send(rec, 0, 0.0)
    with pytest.raises(ProtocolError) as ei:
        rec.on_ack_received(APPLICATION, [(1, 1)], 0.0, 0.1)
    assert ei.value.error_code == ErrorCode.FRAME_ENCODING_ERROR


def test_ack_returns_newly_acked_and_duplicates_are_harmless():
    rec, cc = make()
    for i in range(5):
        send(rec, i, i * 0.001)
    acked, lost = rec.on_ack_received(APPLICATION, [(0, 2), (3, 5)], 0.0, 0.1)
    assert pns(acked) == [0, 1, 3, 4] and lost == []
    acked, lost = rec.on_ack_received(APPLICATION, [(0, 2), (3, 5)], 0.0, 0.11)
    assert acked == [] and lost == []
    assert rec.packets_acked == 4 and rec.largest_acked(APPLICATION) == 4
    assert rec.bytes_in_flight == MDS == cc.bytes_in_flight
    assert pns(rec.outstanding(APPLICATION)) == [2]


def test_rtt_sample_only_when_largest_newly_acked_and_ack_eliciting():
    rec, _ = make()
    send(rec, 0, 0.0)
    send(rec, 1, 0.01, ack_eliciting=False)
    rec.on_ack_received(APPLICATION, [(1, 2)], 0.0, 0.1)    # only a non-ack-eliciting packet
    assert not rec.rtt.has_sample
    rec.on_ack_received(APPLICATION, [(0, 2)], 0.0, 0.2)    # largest (1) not newly acked
    assert not rec.rtt.has_sample
    send(rec, 2, 0.3)
    rec.on_ack_received(APPLICATION, [(0, 3)], 0.005, 0.35)
    assert rec.rtt.has_sample and rec.rtt.latest_rtt == pytest.approx(0.05)


def test_ack_delay_ignored_in_handshake_space():
    rec, _ = make()
    send(rec, 0, 0.0, space=HANDSHAKE)
    send(rec, 1, 0.0, space=HANDSHAKE)
    rec.on_ack_received(HANDSHAKE, [(0, 1)], 0.0, 0.1)
    rec.on_ack_received(HANDSHAKE, [(1, 2)], 0.05, 0.2)
    assert rec.rtt.smoothed_rtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.2)


def test_packet_numbers_must_increase():
    rec, _ = make()
    send(rec, 5, 0.0)
    with pytest.raises(ValueError):
        send(rec, 5, 0.1)
    send(rec, 9, 0.1)        # gaps are fine (skipped packet numbers)
    acked, _ = rec.on_ack_received(APPLICATION, [(5, 10)], 0.0, 0.2)
    assert pns(acked) == [5, 9]


# ---------------------------------------------------------------- loss detection (§6.1)
def test_packet_threshold_loss():
    rec, cc = make()
    for i in range(6):
        send(rec, i, 0.0)
    acked, lost = rec.on_ack_received(APPLICATION, [(3, 4)], 0.0, 0.05)
    assert pns(acked) == [3] and pns(lost) == [0]       # 0 + 3 <= 3
    assert rec.loss_time(APPLICATION) is not None       # 1 and 2 wait for the time threshold
    acked, lost = rec.on_ack_received(APPLICATION, [(5, 6)], 0.0, 0.051)
    assert pns(lost) == [1, 2]
    assert rec.packets_lost == 3 and rec.bytes_lost == 3 * MDS
    assert cc.bytes_in_flight == rec.bytes_in_flight == MDS


def test_time_threshold_loss_via_timer():
    rec, _ = make()
    send(rec, 0, 0.0)
    send(rec, 1, 0.01)
    acked, lost = rec.on_ack_received(APPLICATION, [(1, 2)], 0.0, 0.11)
    assert lost == []
    loss_delay = 9 / 8 * 0.1
    deadline = rec.get_loss_detection_timer()
    assert deadline == pytest.approx(0.0 + loss_delay)
    assert rec.on_loss_detection_timeout(deadline - 0.001) == ([], -1)   # early: nothing
    lost, probe = rec.on_loss_detection_timeout(deadline)
    assert pns(lost) == [0] and probe == -1
    assert rec.get_loss_detection_timer() is None        # nothing ack-eliciting in flight


def test_time_threshold_uses_granularity_floor():
    rec, _ = make()
    send(rec, 0, 0.0)
    send(rec, 1, 0.0)
    rec.on_ack_received(APPLICATION, [(1, 2)], 0.0, 0.0)    # RTT ~ 0
    assert rec.get_loss_detection_timer() == pytest.approx(0.001)


# ---------------------------------------------------------------- PTO (§6.2)
def test_pto_deadline_before_any_sample():
    rec, _ = make()
    send(rec, 0, 1.0, space=HANDSHAKE)
    base = 0.333 + 4 * 0.333 / 2
    assert rec.get_loss_detection_timer() == pytest.approx(1.0 + base)
    send(rec, 0, 1.0, space=APPLICATION)      # later deadline (adds max_ack_delay)
    assert rec.get_loss_detection_timer() == pytest.approx(1.0 + base)
    rec.on_ack_received(HANDSHAKE, [(0, 1)], 0.0, 1.2)
    rtt = rec.rtt
    expect = 1.0 + rtt.smoothed_rtt + max(4 * rtt.rttvar, 0.001) + 0.025
    assert rec.get_loss_detection_timer() == pytest.approx(expect)


def test_pto_backoff_and_reset():
    rec, _ = make()
    send(rec, 0, 0.0)
    rec.on_ack_received(APPLICATION, [(0, 1)], 0.0, 0.1)
    send(rec, 1, 0.2)
    base = rec.rtt.pto_base(0.001) + 0.025
    t1 = rec.get_loss_detection_timer()
    assert t1 == pytest.approx(0.2 + base)
    lost, space = rec.on_loss_detection_timeout(t1)
    assert (lost, space) == ([], APPLICATION) and rec.pto_count == 1
    assert rec.probes_needed == 2
    send(rec, 2, t1, is_probe=True)
    t2 = rec.get_loss_detection_timer()
    assert t2 == pytest.approx(t1 + 2 * base)
    rec.on_loss_detection_timeout(t2)
    send(rec, 3, t2)
    assert rec.get_loss_detection_timer() == pytest.approx(t2 + 4 * base)
    assert rec.pto_expirations == 2
    rec.on_ack_received(APPLICATION, [(3, 4)], 0.0, t2 + 0.1)
    assert rec.pto_count == 0


def test_pto_picks_earliest_space():
    rec, _ = make()
    send(rec, 0, 0.0, space=APPLICATION)
    send(rec, 0, 0.5, space=HANDSHAKE)
    _, space = rec.on_loss_detection_timeout(100.0)
    assert space == APPLICATION


def test_no_timer_without_ack_eliciting_in_flight():
    rec, _ = make()
    assert rec.get_loss_detection_timer() is None
    send(rec, 0, 0.0, ack_eliciting=False)
    assert rec.get_loss_detection_timer() is None
    assert rec.on_loss_detection_timeout(10.0) == ([], -1)


# ---------------------------------------------------------------- persistent congestion (§7.6)
def _establish_rtt(rec, t=0.0):
    send(rec, 0, t)
    rec.on_ack_received(APPLICATION, [(0, 1)], 0.0, t + 0.1)
    return t + 0.1


def test_persistent_congestion_collapses_window():
    rec, cc = make()
    t = _establish_rtt(rec)
    duration = (rec.rtt.pto_base(0.001) + 0.025) * 3
    # packets 1..8 spread over more than the duration, all lost; 9 acked later
    for i in range(1, 9):
        send(rec, i, t + i * duration / 6)
    send(rec, 9, t + 2 * duration)
    acked, lost = rec.on_ack_received(APPLICATION, [(9, 10)], 0.0, t + 2 * duration + 0.1)
    assert pns(lost) == list(range(1, 9))
    assert rec.persistent_congestions == 1
    # collapsed to the minimum window, then (RFC 9002 A.7 order) slow start on packet 9's ACK
    assert cc.congestion_window == cc.minimum_window + MDS


def test_no_persistent_congestion_when_packet_between_acked():
    rec, cc = make()
    t = _establish_rtt(rec)
    duration = (rec.rtt.pto_base(0.001) + 0.025) * 3
    for i in range(1, 9):
        send(rec, i, t + i * duration / 6)
    send(rec, 9, t + 2 * duration)
    rec.on_ack_received(APPLICATION, [(4, 5)], 0.0, t + 4 * duration / 6 + 0.01)
    acked, lost = rec.on_ack_received(APPLICATION, [(4, 5), (9, 10)], 0.0, t + 2 * duration + 0.1)
    assert rec.persistent_congestions == 0
    assert cc.congestion_window > cc.minimum_window


def test_no_persistent_congestion_within_duration_or_before_first_sample():
    rec, cc = make()
    for i in range(8):                 # sent before any RTT sample
        send(rec, i, i * 1.0)
    send(rec, 8, 9.0)
    rec.on_ack_received(APPLICATION, [(8, 9)], 0.0, 9.1)
    assert rec.persistent_congestions == 0
    rec2, cc2 = make()
    t = _establish_rtt(rec2)
    for i in range(1, 9):
        send(rec2, i, t + i * 0.001)
    send(rec2, 9, t + 0.01)
    rec2.on_ack_received(APPLICATION, [(9, 10)], 0.0, t + 0.2)
    assert rec2.persistent_congestions == 0


# ---------------------------------------------------------------- spurious losses
def test_spurious_loss_counted():
    calls = []

    class Spy(NewReno):
        def on_spurious_congestion(self, now):
            calls.append(now)

    rec, cc = make(Spy())
    for i in range(5):
        send(rec, i, 0.0)
    _, lost = rec.on_ack_received(APPLICATION, [(4, 5)], 0.0, 0.1)
    assert pns(lost) == [0, 1]
    acked, lost = rec.on_ack_received(APPLICATION, [(0, 1), (4, 5)], 0.0, 0.12)
    assert acked == [] and rec.spurious_losses == 1 and calls == [0.12]
    rec.on_ack_received(APPLICATION, [(0, 2), (4, 5)], 0.0, 0.13)
    assert rec.spurious_losses == 2
    rec.on_ack_received(APPLICATION, [(0, 2), (4, 5)], 0.0, 0.14)
    assert rec.spurious_losses == 2          # counted once


def test_lost_memory_is_bounded():
    rec, _ = make(max_lost_tracked=4)
    for i in range(20):
        send(rec, i, 0.0)
    rec.on_ack_received(APPLICATION, [(19, 20)], 0.0, 0.1)
    rec.on_ack_received(APPLICATION, [(0, 20)], 0.0, 0.11)
    assert rec.spurious_losses == 4


# ---------------------------------------------------------------- discard
def test_discard_space_removes_bytes_without_loss():
    rec, cc = make()
    send(rec, 0, 0.0, space=HANDSHAKE)
    send(rec, 1, 0.0, space=HANDSHAKE)
    send(rec, 0, 0.0, space=APPLICATION)
    cwnd = cc.congestion_window
    assert cc.bytes_in_flight == 3 * MDS
    rec.discard_space(HANDSHAKE)
    assert cc.bytes_in_flight == MDS == rec.bytes_in_flight
    assert cc.congestion_window == cwnd and rec.packets_lost == 0
    assert rec.is_discarded(HANDSHAKE)
    assert rec.on_ack_received(HANDSHAKE, [(0, 2)], 0.0, 0.1) == ([], [])
    with pytest.raises(ValueError):
        send(rec, 2, 0.1, space=HANDSHAKE)
    assert rec.get_loss_detection_timer() == pytest.approx(0.999 + 0.025)


# ---------------------------------------------------------------- plumbing
def test_python_subclass_controller_is_driven():
    events = []

    class Recorder(CongestionController):
        def on_packet_sent(self, sent_bytes, now):
            events.append(("sent", sent_bytes))
            super().on_packet_sent(sent_bytes, now)

        def on_packets_acked(self, acked, largest_time_sent, now, sample, srtt, min_rtt):
            events.append(("acked", acked, sample > 0))
            super().on_packets_acked(acked, largest_time_sent, now, sample, srtt, min_rtt)

        def on_packets_lost(self, lost_bytes, now):
            events.append(("lost", lost_bytes))
            super().on_packets_lost(lost_bytes, now)

        def on_congestion_event(self, time_sent, now):
            events.append(("event", time_sent))

    cc = Recorder()
    rec = Recovery(cc)
    for i in range(5):
        send(rec, i, i * 0.01)
    rec.on_ack_received(APPLICATION, [(1, 2), (4, 5)], 0.0, 0.2)
    assert events[:5] == [("sent", MDS)] * 5
    assert ("lost", 2 * MDS) in events and ("event", 0.02) in events
    assert events[-1] == ("acked", 2 * MDS, True)
    assert cc.bytes_in_flight == MDS == rec.bytes_in_flight   # only pn 3 outstanding


def test_ack_only_packets_memory_bounded():
    rec, _ = make(max_tracked=100)
    send(rec, 0, 0.0)
    for i in range(1, 1000):
        send(rec, i, i * 1e-3, ack_eliciting=False)
    assert len(rec.outstanding(APPLICATION)) <= 101
    assert pns(rec.outstanding(APPLICATION))[0] == 0      # in-flight packet kept


def test_unknown_space_rejected():
    rec, _ = make()
    with pytest.raises(ValueError):
        rec.on_ack_received(2, [(0, 1)], 0.0, 0.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 40), st.integers(1, 6)),
                min_size=1, max_size=60))
def test_accounting_invariants(ops):
    """Random sends/ACKs: each packet is reported acked or lost at most once, and the
    in-flight bytes always match the outstanding packets (both in Recovery and the controller)."""
    rec, cc = make()
    now = 0.0
    next_pn = 0
    seen = set()
    for kind, a, b in ops:
        now += 0.01
        if kind <= 1:
            for _ in range(b):
                send(rec, next_pn, now, ack_eliciting=(next_pn % 5 != 4))
                next_pn += 1
        elif kind == 2 and next_pn:
            start = min(a, next_pn - 1)
            stop = min(start + b, next_pn)
            acked, lost = rec.on_ack_received(APPLICATION, [(start, stop)], 0.0, now)
            for p in acked + lost:
                assert p.packet_number not in seen
                seen.add(p.packet_number)
        else:
            t = rec.get_loss_detection_timer()
            if t is not None:
                now = max(now, t)
                lost, _ = rec.on_loss_detection_timeout(now)
                for p in lost:
                    assert p.packet_number not in seen
                    seen.add(p.packet_number)
        out = rec.outstanding(APPLICATION)
        assert not (set(pns(out)) & seen)
        inflight = sum(p.sent_bytes for p in out if p.in_flight)
        assert rec.bytes_in_flight == inflight == cc.bytes_in_flight
        assert len(out) + len(seen) == next_pn


def test_loss_timer_takes_precedence_over_pto():
    rec, _ = make()
    send(rec, 0, 0.04)
    send(rec, 1, 0.05)
    send(rec, 2, 0.06)
    rec.on_ack_received(APPLICATION, [(1, 2)], 0.0, 0.15)
    t = rec.get_loss_detection_timer()
    assert t == pytest.approx(0.04 + 9 / 8 * 0.1)     # loss time of packet 0, not a PTO
    assert rec.loss_time(APPLICATION) == pytest.approx(t)
    lost, probe = rec.on_loss_detection_timeout(t)
    assert pns(lost) == [0] and probe == -1 and rec.pto_count == 0


def test_sent_packet_defaults():
    p = SentPacket(7, APPLICATION, 1.5, 1000, frames=("stream", 0))
    assert p.in_flight and p.ack_eliciting and not p.is_probe and p.frames == ("stream", 0)
    q = SentPacket(8, APPLICATION, 1.5, 50, ack_eliciting=False)
    assert not q.in_flight
    r = SentPacket(9, APPLICATION, 1.5, 1200, ack_eliciting=False, in_flight=True)
    assert r.in_flight
    with pytest.raises(ValueError):
        SentPacket(-1, APPLICATION, 0.0, 1)


def test_recovery_caps_ack_delay_once_confirmed():
    rec, _ = make()
    rec.handshake_confirmed = True
    send(rec, 0, 0.0)
    rec.on_ack_received(APPLICATION, [(0, 1)], 0.0, 0.1)
    send(rec, 1, 1.0)
    rec.on_ack_received(APPLICATION, [(0, 2)], 0.5, 1.3)     # delay capped at 25 ms
    assert rec.rtt.smoothed_rtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.275)


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 1000.0), st.floats(0.001, 0.2), st.floats(0.0001, 0.5))
def test_loss_timer_firing_always_declares_the_loss(t0, gap, rtt):
    """The loss timer deadline and the time-threshold test use the same arithmetic, so a timer
    fired exactly at its deadline declares the loss (no re-arm at the same instant)."""
    rec, _ = make()
    send(rec, 0, t0)
    send(rec, 1, t0 + gap)
    rec.on_ack_received(APPLICATION, [(1, 2)], 0.0, t0 + gap + rtt)
    if rec.outstanding(APPLICATION):
        deadline = rec.get_loss_detection_timer()
        assert deadline == rec.loss_time(APPLICATION)
        lost, probe = rec.on_loss_detection_timeout(deadline)
        assert pns(lost) == [0] and probe == -1


def test_set_congestion_controller_transfers_in_flight():
    rec, old = make()
    send(rec, 0, 0.0)
    send(rec, 1, 0.0)
    rec.on_ack_received(APPLICATION, [(0, 1)], 0.0, 0.1)
    new = NewReno()
    rec.set_congestion_controller(new, reset_rtt=True)
    assert rec.congestion is new and new.bytes_in_flight == MDS
    assert not rec.rtt.has_sample and rec.rtt.smoothed_rtt == pytest.approx(0.333)
    rec.on_ack_received(APPLICATION, [(1, 2)], 0.0, 0.2)
    assert new.bytes_in_flight == 0 and old.bytes_in_flight == MDS
