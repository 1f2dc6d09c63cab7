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
@pytest.mark.parametrize("space, ranges, code", [
    (APPLICATION, [(0, 2)], ErrorCode.PROTOCOL_VIOLATION),   # acknowledges unsent packet 1
    (HANDSHAKE, [(0, 1)], ErrorCode.PROTOCOL_VIOLATION),     # nothing sent in that space
    (APPLICATION, [(1, 1)], ErrorCode.FRAME_ENCODING_ERROR),  # an empty range
], ids=["unsent-packet", "unsent-space", "malformed-range"])
def test_bad_ack_raises(space, ranges, code):
    rec, _ = make()
    send(rec, 0, 0.0)
    with pytest.raises(ProtocolError) as ei:
        rec.on_ack_received(space, ranges, 0.0, 0.1)
    assert ei.value.error_code == code


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


def _spread_over_two_durations():
    """An RTT sample, then packets 1..8 sent across more than the persistent-congestion
    duration and 9 at twice the duration: ``(rec, cc, t, duration)``, t the time of the sample."""
    rec, cc = make()
    t = _establish_rtt(rec)
    duration = (rec.rtt.pto_base(0.001) + 0.025) * 3
    for i in range(1, 9):
        send(rec, i, t + i * duration / 6)
    send(rec, 9, t + 2 * duration)
    return rec, cc, t, duration


def test_persistent_congestion_collapses_window():
    # packets 1..8 spread over more than the duration, all lost; 9 acked later
    rec, cc, t, duration = _spread_over_two_durations()
    acked, lost = rec.on_ack_received(APPLICATION, [(9, 10)], 0.0, t + 2 * duration + 0.1)
    assert pns(lost) == list(range(1, 9))
    assert rec.persistent_congestions == 1
    # collapsed to the minimum window, then (RFC 9002 A.7 order) slow start on packet 9's ACK
    assert cc.congestion_window == cc.minimum_window + MDS


def test_no_persistent_congestion_when_packet_between_acked():
    rec, cc, t, duration = _spread_over_two_durations()
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
def test_spurious_loss_returned_as_acked_once():
    rec, cc = make(adaptive_reordering=False)
    pkts = [send(rec, i, 0.0, frames=("f", i)) for i in range(5)]
    _, lost = rec.on_ack_received(APPLICATION, [(4, 5)], 0.0, 0.1)
    assert pns(lost) == [0, 1] and all(p.declared_lost for p in lost)
    assert not pkts[2].declared_lost
    inflight = rec.bytes_in_flight
    assert inflight == cc.bytes_in_flight == 2 * MDS
    acked, lost = rec.on_ack_received(APPLICATION, [(0, 1), (4, 5)], 0.0, 0.105)
    assert pns(acked) == [0] and acked[0] is pkts[0] and acked[0].frames == ("f", 0)
    assert acked[0].declared_lost and lost == [] and rec.spurious_losses == 1
    # a spurious packet is not in flight: the counters do not move
    assert rec.bytes_in_flight == cc.bytes_in_flight == inflight
    acked, _ = rec.on_ack_received(APPLICATION, [(0, 3), (4, 5)], 0.0, 0.11)
    assert pns(acked) == [1, 2] and [p.declared_lost for p in acked] == [True, False]
    assert rec.spurious_losses == 2 and rec.bytes_in_flight == cc.bytes_in_flight == MDS
    acked, _ = rec.on_ack_received(APPLICATION, [(0, 3), (4, 5)], 0.0, 0.111)
    assert acked == [] and rec.spurious_losses == 2          # reported once


def test_spurious_loss_found_after_slots_compacted():
    rec, cc = make(adaptive_reordering=False)
    for i in range(200):
        send(rec, i, 0.0)
    _, lost = rec.on_ack_received(APPLICATION, [(1, 200)], 0.0, 0.1)
    assert pns(lost) == [0] and rec.outstanding(APPLICATION) == []
    for i in range(200, 210):
        send(rec, i, 0.2)
    acked, _ = rec.on_ack_received(APPLICATION, [(0, 205)], 0.0, 0.25)
    assert pns(acked) == [0] + list(range(200, 205)) and acked[0].declared_lost
    assert rec.bytes_in_flight == cc.bytes_in_flight == 5 * MDS


def test_lost_memory_is_bounded():
    rec, _ = make(max_lost_tracked=4, adaptive_reordering=False)
    for i in range(20):
        send(rec, i, 0.0)
    rec.on_ack_received(APPLICATION, [(19, 20)], 0.0, 0.1)
    acked, _ = rec.on_ack_received(APPLICATION, [(0, 20)], 0.0, 0.11)
    # 0..16 were lost, only the newest four are remembered; 17 and 18 are plainly acked
    assert rec.spurious_losses == 4 and pns(acked) == [13, 14, 15, 16, 17, 18]


def test_lost_memory_expires():
    rec, _ = make(adaptive_reordering=False)
    for i in range(4):
        send(rec, i, 0.0)
    rec.on_ack_received(APPLICATION, [(3, 4)], 0.0, 0.1)          # 0 lost
    send(rec, 4, 5.0)
    rec.on_ack_received(APPLICATION, [(3, 5)], 0.0, 5.1)          # long after: forgotten
    acked, _ = rec.on_ack_received(APPLICATION, [(0, 5)], 0.0, 5.2)
    assert 0 not in pns(acked) and rec.spurious_losses == 0


# ---------------------------------------------------------------- reordering tolerance
def _reorder_episode(rec, first_pn, t, depth, late):
    """Send depth + 1 packets at t; ACK all but the first (declaring it lost by the packet
    threshold when depth >= threshold), then ACK the first ``late`` seconds later."""
    for i in range(depth + 1):
        send(rec, first_pn + i, t)
    _, lost = rec.on_ack_received(APPLICATION, [(first_pn + 1, first_pn + depth + 1)], 0.0,
                                  t + 0.1)
    acked, _ = rec.on_ack_received(APPLICATION, [(first_pn, first_pn + depth + 1)], 0.0,
                                   t + 0.1 + late)
    return lost, acked


def test_packet_threshold_adapts_to_reordering_distance():
    rec, _ = make()
    assert rec.packet_threshold == 3 and rec.base_packet_threshold == 3
    lost, acked = _reorder_episode(rec, 0, 0.0, 10, 0.001)
    assert pns(lost) == [0] and pns(acked) == [0] and rec.spurious_losses == 1
    # packet 0 acknowledged after packet 10: distance 10 -> threshold 11
    assert rec.packet_threshold == 11 and rec.max_reordering_seen == 10
    # the same depth no longer causes a loss
    lost, acked = _reorder_episode(rec, 11, 1.0, 10, 0.001)
    assert lost == [] and pns(acked) == [11] and rec.spurious_losses == 1
    # a shallower episode does not lower it
    _reorder_episode(rec, 22, 2.0, 5, 0.001)
    assert rec.packet_threshold == 11


def test_packet_threshold_capped_then_disabled():
    rec, _ = make(max_packet_threshold=8)
    _reorder_episode(rec, 0, 0.0, 6, 0.001)
    assert rec.packet_threshold == 7 and not rec.packet_threshold_disabled
    _reorder_episode(rec, 7, 1.0, 12, 0.001)
    assert rec.packet_threshold == 8 and rec.packet_threshold_disabled
    # only the time threshold declares losses now
    for i in range(20, 40):
        send(rec, i, 2.0)
    _, lost = rec.on_ack_received(APPLICATION, [(39, 40)], 0.0, 2.05)
    assert lost == [] and rec.loss_time(APPLICATION) is not None


def test_time_threshold_widens_and_is_capped():
    rec, _ = make(packet_threshold=100, max_packet_threshold=200)
    send(rec, 0, 0.0)
    send(rec, 1, 0.01)
    rec.on_ack_received(APPLICATION, [(1, 2)], 0.0, 0.11)     # rtt 0.1
    t = rec.get_loss_detection_timer()
    lost, _ = rec.on_loss_detection_timeout(t)
    assert pns(lost) == [0]
    acked, _ = rec.on_ack_received(APPLICATION, [(0, 2)], 0.0, 0.14)
    assert acked[0].declared_lost
    assert rec.time_threshold == pytest.approx(0.14 / 0.1 + 0.125)
    assert rec.base_time_threshold == 1.125
    send(rec, 2, 1.0)
    send(rec, 3, 1.0)
    rec.on_ack_received(APPLICATION, [(3, 4)], 0.0, 1.1)
    acked, lost = rec.on_ack_received(APPLICATION, [(2, 4)], 0.0, 1.135)
    assert pns(acked) == [2] and not acked[0].declared_lost     # tolerated now
    # a very late ACK cannot push the threshold beyond max_time_threshold
    send(rec, 4, 2.0)
    send(rec, 5, 2.0)
    rec.on_ack_received(APPLICATION, [(5, 6)], 0.0, 2.1)
    lost, _ = rec.on_loss_detection_timeout(rec.get_loss_detection_timer())
    rec.on_ack_received(APPLICATION, [(4, 6)], 0.0, 2.9)
    assert rec.time_threshold == rec.max_time_threshold == 2.0


def test_reordering_thresholds_decay_after_genuine_losses():
    rec, _ = make(reordering_decay=4, max_lost_tracked=2)
    _reorder_episode(rec, 0, 0.0, 10, 0.001)
    raised_p, raised_t = rec.packet_threshold, rec.time_threshold
    assert raised_p == 11
    pn = 11
    for k in range(4):            # genuine losses, forgotten (pruned) one round later
        for i in range(13):
            send(rec, pn + i, 10.0 * (k + 1))
        rec.on_ack_received(APPLICATION, [(pn + 1, pn + 13)], 0.0, 10.0 * (k + 1) + 0.05)
        pn += 13
        assert rec.packet_threshold == 11
    for i in range(13):
        send(rec, pn + i, 50.0)
    rec.on_ack_received(APPLICATION, [(pn + 1, pn + 13)], 0.0, 50.05)
    assert rec.packet_threshold == 3 + (11 - 3) // 2
    assert rec.time_threshold == pytest.approx(1.125 + (raised_t - 1.125) / 2)


def test_adaptive_reordering_off_keeps_thresholds():
    rec, _ = make(adaptive_reordering=False)
    _reorder_episode(rec, 0, 0.0, 10, 0.03)
    assert rec.packet_threshold == 3 and rec.time_threshold == 1.125
    assert rec.spurious_losses == 1 and rec.max_reordering_seen == 0


def test_reordering_limits_validated():
    cc = NewReno()
    with pytest.raises(ValueError):
        Recovery(cc, packet_threshold=10, max_packet_threshold=5)
    with pytest.raises(ValueError):
        Recovery(cc, time_threshold=1.5, max_time_threshold=1.2)
    with pytest.raises(ValueError):
        Recovery(cc, reordering_decay=0)


# ---------------------------------------------------------------- congestion undo
def _grow(rec, cc, n=40):
    for i in range(n):
        send(rec, i, 0.0)
    rec.on_ack_received(APPLICATION, [(0, n)], 0.0, 0.05)


def test_spurious_episode_undoes_reduction():
    from dquic._congestion import Cubic
    for cc in (NewReno(), Cubic()):
        rec, _ = make(cc, adaptive_reordering=False)
        _grow(rec, cc)
        before = (cc.congestion_window, cc.ssthresh)
        for i in range(40, 50):
            send(rec, i, 0.1)
        _, lost = rec.on_ack_received(APPLICATION, [(0, 40), (43, 50)], 0.0, 0.15)
        assert pns(lost) == [40, 41, 42]
        assert cc.congestion_window < before[0] and cc.in_recovery
        rec.on_ack_received(APPLICATION, [(0, 41), (43, 50)], 0.0, 0.16)
        assert cc.congestion_window < before[0] and rec.congestion_undos == 0
        rec.on_ack_received(APPLICATION, [(0, 50)], 0.0, 0.17)
        assert rec.congestion_undos == 1 and cc.congestion_undos == 1
        assert (cc.congestion_window, cc.ssthresh) == before and not cc.in_recovery
        # a later loss reduces again (the recovery period was cancelled)
        for i in range(50, 60):
            send(rec, i, 0.2)
        cwnd = cc.congestion_window
        rec.on_ack_received(APPLICATION, [(0, 50), (53, 60)], 0.0, 0.25)
        assert cc.congestion_window < cwnd and cc.congestion_events == 2


def test_episode_with_genuine_loss_is_not_undone():
    rec, cc = make(max_lost_tracked=2, adaptive_reordering=False)
    _grow(rec, cc)
    for i in range(40, 50):
        send(rec, i, 0.1)
    rec.on_ack_received(APPLICATION, [(0, 40), (43, 50)], 0.0, 0.15)   # 40..42 lost
    reduced = cc.congestion_window
    # 40 was pushed out of the tracked set (treated as genuine): no undo even if the rest
    # turns out spurious
    rec.on_ack_received(APPLICATION, [(0, 50)], 0.0, 0.16)
    assert rec.spurious_losses == 2 and rec.congestion_undos == 0
    assert cc.congestion_window == reduced


def test_losses_inside_recovery_join_the_episode():
    rec, cc = make(adaptive_reordering=False)
    _grow(rec, cc)
    before = cc.congestion_window
    for i in range(40, 50):
        send(rec, i, 0.1)
    rec.on_ack_received(APPLICATION, [(0, 40), (41, 44)], 0.0, 0.15)   # 40 lost, reduction
    rec.on_ack_received(APPLICATION, [(0, 40), (41, 44), (46, 50)], 0.0, 0.16)  # 44, 45 lost
    assert cc.congestion_events == 1 and rec.packets_lost == 3
    rec.on_ack_received(APPLICATION, [(0, 44), (46, 50)], 0.0, 0.17)
    assert rec.congestion_undos == 0
    rec.on_ack_received(APPLICATION, [(0, 50)], 0.0, 0.18)
    assert rec.congestion_undos == 1 and cc.congestion_window == before


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
    """Random sends/ACKs: each packet is reported acked at most once and lost at most once
    (lost first, when both), acked only if it was acknowledged, and the in-flight bytes always
    match the outstanding packets (both in Recovery and the controller)."""
    rec, cc = make()
    now = 0.0
    next_pn = 0
    seen = set()
    was_acked = set()
    was_lost = set()
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
            for p in acked:
                assert p.packet_number not in was_acked and start <= p.packet_number < stop
                assert p.declared_lost == (p.packet_number in was_lost)
                was_acked.add(p.packet_number)
                seen.add(p.packet_number)
            for p in lost:
                assert p.packet_number not in seen and p.declared_lost
                was_lost.add(p.packet_number)
                seen.add(p.packet_number)
        else:
            t = rec.get_loss_detection_timer()
            if t is not None:
                now = max(now, t)
                lost, _ = rec.on_loss_detection_timeout(now)
                for p in lost:
                    assert p.packet_number not in seen
                    was_lost.add(p.packet_number)
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


# ---------------------------------------------------------------- delivery-rate sampling
class _RateSpy(NewReno):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.samples = []

    def on_rate_sample(self, rate, rtt, delivered, prior_delivered, app_limited, now):
        self.samples.append((rate, rtt, delivered, prior_delivered, app_limited, now))


def test_delivery_rate_matches_paced_sending():
    cc = _RateSpy(initial_window=1 << 24)
    rec, _ = make(cc)
    for pn in range(400):                      # 1200 bytes every ms, each acked 50 ms later
        send(rec, pn, pn * 0.001)
        if pn >= 50:
            rec.on_ack_received(APPLICATION, [(0, pn - 49)], 0.0, pn * 0.001)
    rates = [s[0] for s in cc.samples]
    assert rates and rates[-1] == pytest.approx(1.2e6, rel=0.03)
    rate, rtt, delivered, prior, app_limited, now = cc.samples[-1]
    assert rtt == pytest.approx(0.05) and delivered == rec.delivered == 350 * MDS
    assert not app_limited and prior < delivered
    assert rec.last_delivery_rate == rates[-1]


def test_rate_sample_needs_interval_of_min_rtt():
    cc = _RateSpy()
    rec, _ = make(cc)
    send(rec, 0, 0.0)
    rec.on_ack_received(APPLICATION, [(0, 1)], 0.0, 0.1)      # interval 0.1 >= min_rtt
    assert len(cc.samples) == 1 and cc.samples[0][0] == pytest.approx(MDS / 0.1)
    # a padded ACK-only packet (in flight, no RTT sample) acknowledged 20 ms after it left:
    # the interval is shorter than min_rtt, so it would overstate the rate
    send(rec, 1, 1.0, ack_eliciting=False, in_flight=True)
    rec.on_ack_received(APPLICATION, [(0, 2)], 0.0, 1.02)
    assert len(cc.samples) == 1 and rec.delivered == 2 * MDS


def test_app_limited_marks_samples_until_delivered():
    cc = _RateSpy()
    rec, _ = make(cc)
    send(rec, 0, 0.0)
    rec.on_app_limited()
    assert rec.app_limited_until == MDS
    send(rec, 1, 0.01)
    rec.on_ack_received(APPLICATION, [(0, 1)], 0.0, 0.1)
    assert rec.app_limited_until == MDS           # not past the mark yet
    rec.on_ack_received(APPLICATION, [(0, 2)], 0.0, 0.12)
    assert cc.samples[-1][4] is True and rec.app_limited_until == 0
    send(rec, 2, 0.2)
    rec.on_ack_received(APPLICATION, [(0, 3)], 0.0, 0.3)
    assert cc.samples[-1][4] is False
