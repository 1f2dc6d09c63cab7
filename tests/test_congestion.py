"""Congestion controllers (NewReno, CUBIC + HyStart++), the pacer and the factory."""
import heapq
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dquic import congestion
from dquic._congestion import BBR_DRAIN, BBR_PROBE_BW, BBR_PROBE_RTT, BBR_STARTUP, Bbr
from dquic._congestion import CongestionController, Cubic, NewReno, Pacer
from dquic._recovery import APPLICATION, Recovery, SentPacket

MDS = 1200
INF = math.inf


def ack(cc, nbytes, time_sent, now, sample=0.1, srtt=0.1, min_rtt=0.1):
    cc.on_packets_acked(nbytes, time_sent, now, sample, srtt, min_rtt)


def lose(cc, nbytes, time_sent, now):
    cc.on_packets_lost(nbytes, now)
    cc.on_congestion_event(time_sent, now)


# ---------------------------------------------------------------- base class
def test_defaults_and_window_queries():
    cc = CongestionController()
    assert cc.congestion_window == 10 * MDS and cc.minimum_window == 2 * MDS
    assert cc.ssthresh == INF and not cc.in_recovery
    assert cc.can_send(MDS) and cc.available() == 10 * MDS
    for _ in range(10):
        cc.on_packet_sent(MDS, 0.0)
    assert not cc.can_send(1) and cc.available() == 0
    cc.on_packet_discarded(MDS)
    assert cc.bytes_in_flight == 9 * MDS and cc.can_send(MDS)
    # RFC 9002 §7.2: min(10*mds, max(14720, 2*mds))
    assert CongestionController(max_datagram_size=1500).congestion_window == 14720
    with pytest.raises(ValueError):
        CongestionController(max_datagram_size=100)
    with pytest.raises(ValueError):
        CongestionController(initial_window=MDS)          # below the minimum window


# ---------------------------------------------------------------- NewReno
def test_newreno_slow_start_doubles_per_round():
    cc = NewReno()
    for _ in range(10):
        cc.on_packet_sent(MDS, 0.0)
    ack(cc, 10 * MDS, 0.0, 0.1)
    assert cc.congestion_window == 20 * MDS and cc.bytes_in_flight == 0


def test_newreno_congestion_avoidance_one_mds_per_window():
    cc = NewReno()
    cc.on_packet_sent(MDS, 0.0)
    lose(cc, MDS, 0.0, 0.1)
    assert cc.congestion_window == 5 * MDS and cc.ssthresh == 5 * MDS
    now = 0.2
    for _ in range(5):           # one window acknowledged, in pieces
        cc.on_packet_sent(MDS, now)
        ack(cc, MDS, now, now + 0.1)
    assert cc.congestion_window == 6 * MDS
    assert not cc.in_recovery


def test_newreno_one_reduction_per_round():
    cc = NewReno(initial_window=40 * MDS)
    for i in range(40):
        cc.on_packet_sent(MDS, i * 0.001)
    lose(cc, MDS, 0.005, 1.0)
    assert cc.congestion_window == 20 * MDS and cc.in_recovery
    lose(cc, MDS, 0.02, 1.01)            # sent before the recovery period began
    assert cc.congestion_window == 20 * MDS and cc.congestion_events == 1
    ack(cc, 5 * MDS, 0.03, 1.02)          # acks of old packets: no growth, still recovering
    assert cc.congestion_window == 20 * MDS and cc.in_recovery
    cc.on_packet_sent(MDS, 1.05)
    ack(cc, MDS, 1.05, 1.15)              # a packet sent after recovery began: recovery ends
    assert not cc.in_recovery
    lose(cc, MDS, 1.1, 1.2)               # new round: reduce again
    assert cc.congestion_window == 10 * MDS and cc.congestion_events == 2


def test_newreno_persistent_congestion_and_app_limited():
    cc = NewReno()
    cc.on_persistent_congestion(1.0)
    assert cc.congestion_window == cc.minimum_window
    cc.is_app_limited = True
    cc.on_packet_sent(MDS, 1.1)
    ack(cc, MDS, 1.1, 1.2)
    assert cc.congestion_window == cc.minimum_window
    cc.is_app_limited = False
    cc.on_packet_sent(MDS, 1.3)
    ack(cc, MDS, 1.3, 1.4)
    assert cc.congestion_window == cc.minimum_window + MDS


def test_window_never_exceeds_maximum():
    for cls in (NewReno, Cubic):
        cc = cls(maximum_window=30 * MDS)
        for i in range(10):
            cc.on_packet_sent(10 * MDS, i)
            ack(cc, 10 * MDS, i, i + 0.1)
        assert cc.congestion_window == 30 * MDS


# ---------------------------------------------------------------- CUBIC (RFC 9438)
def _cubic_after_loss(w_max_pkts=100, **kw):
    cc = Cubic(initial_window=w_max_pkts * MDS, hystart=False, **kw)
    cc.on_packet_sent(MDS, 0.0)
    lose(cc, MDS, 0.0, 0.0)
    return cc


def test_cubic_beta_reduction_and_k():
    cc = _cubic_after_loss(100)
    assert cc.congestion_window == pytest.approx(70 * MDS, abs=1)
    assert cc.ssthresh == pytest.approx(70 * MDS)
    assert cc.w_max == pytest.approx(100 * MDS)
    cc.on_packet_sent(MDS, 0.01)
    ack(cc, MDS, 0.01, 0.11)              # first ACK after recovery starts the epoch
    assert cc.k == pytest.approx(((100 - 70) / 0.4) ** (1 / 3))


def _drive_rounds(cc, start, rtt, rounds, record=None):
    """Acknowledge one full window per RTT, acked in 10 pieces."""
    return _ack_rounds(cc, [rtt] * rounds, start, record)


def _ack_rounds(cc, rtts, start=0.0, record=None):
    """Each round: the window's worth of packets is acked in 10 ACKs with that round's RTT
    (``record`` collects (time, window) after each round)."""
    now = start
    for rtt in rtts:
        piece = max(cc.congestion_window // 10, 1)
        for _ in range(10):
            cc.on_packet_sent(piece, now)
            ack(cc, piece, now, now + rtt, rtt, rtt, rtt)
        now += rtt
        if record is not None:
            record.append((now, cc.congestion_window))
    return now


def test_cubic_window_follows_cubic_function():
    rtt = 0.1
    cc = _cubic_after_loss(100, fast_convergence=False)
    trace = []
    _drive_rounds(cc, 0.0, rtt, 60, trace)
    epoch = cc.epoch_start
    k = cc.k
    for now, w in trace[3:]:
        t = now - epoch
        expected = 0.4 * (t - k) ** 3 * MDS + 100 * MDS
        # the window tracks W_cubic(t + RTT) from below, staying within a few datagrams
        assert w == pytest.approx(max(expected, 70 * MDS), rel=0.08)
    # plateau near W_max around t = K, then convex growth beyond
    at_k = [w for now, w in trace if abs(now - epoch - k) < rtt]
    assert at_k and all(abs(w - 100 * MDS) < 6 * MDS for w in at_k)
    assert trace[-1][1] > 100 * MDS


def test_cubic_reno_friendly_region():
    # Tiny RTT: the Reno estimate W_est outgrows the cubic curve, and CUBIC follows W_est.
    rtt = 0.001
    cc = _cubic_after_loss(10)
    _drive_rounds(cc, 0.0, rtt, 300)
    t = 300 * rtt
    assert cc.congestion_window > cc.w_cubic(t)
    alpha = 3 * (1 - 0.7) / (1 + 0.7)
    # W_est grows by alpha datagrams per round (alpha becomes 1 above W_max)
    assert cc.congestion_window >= (7 + alpha * 290) * MDS * 0.9
    assert cc.w_est == pytest.approx(cc.congestion_window, rel=0.02)


def test_cubic_fast_convergence():
    cc = _cubic_after_loss(100)
    w1 = cc.congestion_window            # 70
    cc.on_packet_sent(MDS, 0.5)
    lose(cc, MDS, 0.5, 0.5)              # new loss before W_max regained
    assert cc.w_max == pytest.approx(w1 * (1 + 0.7) / 2, rel=1e-3)
    assert cc.congestion_window == pytest.approx(w1 * 0.7, abs=1)
    nofc = _cubic_after_loss(100, fast_convergence=False)
    nofc.on_packet_sent(MDS, 0.5)
    lose(nofc, MDS, 0.5, 0.5)
    assert nofc.w_max == pytest.approx(w1, abs=1)


def test_cubic_minimum_window_and_persistent_congestion():
    cc = Cubic(hystart=False)
    for i in range(10):
        cc.on_packet_sent(MDS, i)
        lose(cc, MDS, i, i)
    assert cc.congestion_window == cc.minimum_window
    cc.on_persistent_congestion(20.0)
    assert cc.congestion_window == cc.minimum_window and not cc.in_recovery


# ---------------------------------------------------------------- HyStart++ (RFC 9406)

def test_hystart_enters_css_on_rtt_increase_and_exits_slow_start():
    cc = Cubic()
    t = _ack_rounds(cc, [0.1] * 3)
    assert not cc.in_css and cc.ssthresh == INF
    w = cc.congestion_window
    t = _ack_rounds(cc, [0.13], t)   # +30 ms > max(4 ms, min(16 ms, 100/8 ms))
    assert cc.in_css
    grew = cc.congestion_window - w
    assert grew < 0.9 * w                # growth slowed (divided by 4 once in CSS)
    w = cc.congestion_window
    t = _ack_rounds(cc, [0.13], t)
    assert cc.in_css and cc.congestion_window - w == pytest.approx(w / 4, rel=0.05)
    _ack_rounds(cc, [0.13] * 5, t)
    assert not cc.in_css and cc.ssthresh != INF and cc.hystart_exits == 1
    assert not cc.in_slow_start()


def test_hystart_spurious_css_returns_to_slow_start():
    cc = Cubic()
    t = _ack_rounds(cc, [0.1] * 3)
    t = _ack_rounds(cc, [0.13], t)
    assert cc.in_css
    t = _ack_rounds(cc, [0.1], t)    # RTT fell below the CSS baseline
    assert not cc.in_css and cc.ssthresh == INF
    w = cc.congestion_window
    _ack_rounds(cc, [0.1], t)
    assert cc.congestion_window >= 1.9 * w


def test_hystart_disabled_keeps_slow_start():
    cc = Cubic(hystart=False)
    _ack_rounds(cc, [0.1, 0.1, 0.1, 0.2, 0.2])
    assert not cc.in_css and cc.ssthresh == INF and cc.congestion_window == 10 * MDS * 32


def test_small_rtt_increase_does_not_trigger_css():
    cc = Cubic()
    _ack_rounds(cc, [0.1, 0.1, 0.1, 0.103, 0.105])     # below the 12.5 ms threshold
    assert not cc.in_css


# ---------------------------------------------------------------- pacer (§7.7)
def test_pacer_rate_and_spacing():
    p = Pacer(max_datagram_size=MDS, burst_packets=10)
    assert p.next_send_time(0.0) == 0.0                     # no rate yet: unpaced
    p.update(100 * MDS, 0.1)
    assert p.rate == pytest.approx(1.25 * 100 * MDS / 0.1)
    p.update(100 * MDS, 0.1, True)
    assert p.rate == pytest.approx(2.0 * 100 * MDS / 0.1)
    p.update(100 * MDS, 0.1)
    now = 1.0
    sent_at = []
    for _ in range(30):
        t = p.next_send_time(now)
        now = max(now, t)
        p.on_sent(MDS, now)
        sent_at.append(now)
    assert sent_at[:10] == [1.0] * 10                       # initial burst
    gaps = [b - a for a, b in zip(sent_at[10:], sent_at[11:])]
    assert all(g == pytest.approx(MDS / p.rate) for g in gaps)


def test_pacer_burst_limited_by_window_and_idle_refill():
    p = Pacer(burst_packets=10)
    p.update(4 * MDS, 0.1)
    assert p.capacity == 4 * MDS
    for _ in range(4):
        assert p.next_send_time(0.0) == 0.0
        p.on_sent(MDS, 0.0)
    assert p.next_send_time(0.0) > 0.0
    assert p.next_send_time(10.0) == 10.0                   # long idle: refilled, capped


@given(st.integers(2, 1000), st.floats(0.001, 2.0), st.booleans())
def test_pacer_average_rate_matches(cwnd_pkts, srtt, slow):
    p = Pacer()
    p.update(cwnd_pkts * MDS, srtt, slow)
    now = 0.0
    n = 200
    first = None
    for _ in range(n):
        now = max(now, p.next_send_time(now))
        p.on_sent(MDS, now)
        first = now if first is None else first
    # after the initial burst the average rate cannot exceed the configured rate
    burst = p.capacity
    assert (n * MDS - burst) <= p.rate * (now - first) * (1 + 1e-9) + MDS


# ---------------------------------------------------------------- factory / plug-in
def test_factory_and_registry():
    assert isinstance(congestion.create_controller(), Cubic)
    assert isinstance(congestion.create_controller("NewReno"), NewReno)
    cc = congestion.create_controller("cubic", max_datagram_size=1400)
    assert cc.max_datagram_size == 1400
    assert isinstance(congestion.create_controller("BBR"), Bbr)
    assert {"bbr", "cubic", "newreno"} <= set(congestion.available_controllers())
    with pytest.raises(ValueError):
        congestion.create_controller("no-such-controller")

    class Fixed(CongestionController):
        def on_congestion_event(self, time_sent, now):
            pass

    congestion.register("fixed-test", Fixed)
    assert "fixed-test" in congestion.available_controllers()
    fx = congestion.create_controller("fixed-test")
    fx.on_packet_sent(MDS, 0.0)
    lose(fx, MDS, 0.0, 0.1)
    assert fx.congestion_window == 10 * MDS and fx.bytes_in_flight == 0
    congestion.register("bad-test", lambda **kw: object())
    with pytest.raises(TypeError):
        congestion.create_controller("bad-test")


# ---------------------------------------------------------------- fluid sanity check
def _fluid(controller, seconds=30.0, rtt=0.05, rate=1.25e6, loss=0.01, seed=1):
    """Recovery + controller over a drop-tail bottleneck with random loss; one ACK per packet
    carrying the last few received ranges. Returns (recovery, controller, delivered_bytes, cwnds)."""
    rng = random.Random(seed)
    rec = Recovery(controller, max_ack_delay=0.0)
    rec.handshake_confirmed = True
    queue_limit = 2 * rate * rtt
    link_free = 0.0
    events = []            # (time, seq, kind, data)
    seq = 0
    now = 0.0
    pn = 0
    delivered = 0
    received = []          # packet numbers received, most recent last
    cwnds = []
    timer = None
    steps = 0
    while now < seconds and steps < 400000:
        steps += 1
        # send while the window allows (probes bypass it)
        while controller.can_send(MDS) and pn < 10**7:
            pkt = SentPacket(pn, APPLICATION, now, MDS)
            rec.on_packet_sent(pkt)
            backlog = max(link_free - now, 0.0) * rate
            if backlog + MDS <= queue_limit and rng.random() >= loss:
                link_free = max(link_free, now) + MDS / rate
                seq += 1
                heapq.heappush(events, (link_free + rtt, seq, "ack", pn))
            pn += 1
        timer = rec.get_loss_detection_timer()
        nxt = events[0][0] if events else math.inf
        if timer is not None and timer < nxt:
            now = timer
            lost, probe = rec.on_loss_detection_timeout(now)
            if probe >= 0:
                for _ in range(rec.probes_needed):
                    rec.on_packet_sent(SentPacket(pn, APPLICATION, now, MDS, is_probe=True))
                    link_free = max(link_free, now) + MDS / rate
                    seq += 1
                    heapq.heappush(events, (link_free + rtt, seq, "ack", pn))
                    pn += 1
            continue
        if not events:
            break
        now, _, _, got = heapq.heappop(events)
        received.append(got)
        del received[:-16]
        ranges = sorted((p, p + 1) for p in set(received))
        acked, lost = rec.on_ack_received(APPLICATION, ranges, 0.0, now)
        delivered += sum(p.sent_bytes for p in acked)
        cwnds.append(controller.congestion_window)
    return rec, controller, delivered, cwnds


@pytest.mark.parametrize("name", ["cubic", "newreno", "bbr"])
def test_fluid_sanity(name):
    cc = congestion.create_controller(name)
    rec, cc, delivered, cwnds = _fluid(cc)
    bdp = 1.25e6 * 0.05
    assert min(cwnds) >= cc.minimum_window
    assert max(cwnds) <= 4 * bdp + 20 * MDS      # bounded by the path, not runaway
    throughput = delivered / 30.0
    assert throughput > 0.15 * 1.25e6, throughput
    assert throughput <= 1.25e6 * 1.01
    assert rec.packets_lost > 0 and rec.bytes_in_flight == cc.bytes_in_flight
    assert rec.persistent_congestions == 0


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(["cubic", "newreno", "bbr"]),
       st.lists(st.tuples(st.integers(0, 4), st.integers(1, 40), st.floats(0.001, 0.5)),
                max_size=120))
def test_controller_invariants(name, ops):
    """Random event sequences keep the window within [minimum, maximum] and in-flight >= 0."""
    cc = congestion.create_controller(name, maximum_window=500 * MDS)
    now = 0.0
    sent = []                       # send times of outstanding packets
    for kind, n, dt in ops:
        now += dt
        if kind <= 1:
            for _ in range(n):
                cc.on_packet_sent(MDS, now)
                sent.append(now)
        elif kind == 2 and sent:
            batch, sent = sent[:n], sent[n:]
            cc.on_packets_acked(len(batch) * MDS, batch[-1], now, dt, dt, dt / 2)
        elif kind == 3 and sent:
            batch, sent = sent[:n], sent[n:]
            cc.on_packets_lost(len(batch) * MDS, now)
            cc.on_congestion_event(batch[-1], now)
        elif kind == 4:
            cc.on_persistent_congestion(now)
        assert cc.minimum_window <= cc.congestion_window <= cc.maximum_window
        assert cc.bytes_in_flight == len(sent) * MDS
        assert cc.available() >= 0


# ---------------------------------------------------------------- congestion undo
def test_base_undo_restores_once():
    cc = NewReno(initial_window=20 * MDS)
    cc.on_packet_sent(MDS, 0.0)
    lose(cc, MDS, 0.0, 0.1)
    assert cc.congestion_window == 10 * MDS and cc.in_recovery
    cc.on_spurious_congestion(0.2)
    assert cc.congestion_window == 20 * MDS and cc.ssthresh == INF and not cc.in_recovery
    assert cc.congestion_undos == 1
    cc.on_spurious_congestion(0.3)            # nothing saved any more
    assert cc.congestion_undos == 1 and cc.congestion_window == 20 * MDS


def test_undo_keeps_growth_since_reduction():
    cc = NewReno(initial_window=20 * MDS)
    lose(cc, 0, 0.0, 0.1)
    cc.congestion_window = 25 * MDS            # grew past the old window meanwhile
    cc.on_spurious_congestion(0.2)
    assert cc.congestion_window == 25 * MDS


def test_cubic_undo_restores_epoch_state():
    cc = _cubic_after_loss(100)
    _drive_rounds(cc, 0.2, 0.1, 5)
    saved = (cc.congestion_window, cc.ssthresh, cc.w_max, cc.k, cc.epoch_start, cc.w_est)
    lose(cc, 0, 1.0, 1.0)
    assert cc.congestion_window < saved[0] and cc.epoch_start == -INF
    cc.on_spurious_congestion(1.05)
    assert (cc.congestion_window, cc.ssthresh, cc.w_max, cc.k, cc.epoch_start,
            cc.w_est) == saved
    # the restored epoch continues the cubic curve rather than starting a new one
    _drive_rounds(cc, 1.1, 0.1, 1)
    assert cc.epoch_start == saved[4] and cc.congestion_window >= saved[0]


# ---------------------------------------------------------------- BBR
def _bbr_feed(cc, rate, rtt, rounds, start=0.0, delivered=0, app_limited=False, per_round=4):
    """Feed ``rounds`` round trips of rate samples; returns (now, delivered)."""
    now = start
    for _ in range(rounds):
        round_start_delivered = delivered
        step = max(int(rate * rtt / per_round), 1)
        for _ in range(per_round):
            now += rtt / per_round
            delivered += step
            cc.on_rate_sample(rate, rtt, delivered, round_start_delivered, app_limited, now)
    return now, delivered


def test_bbr_startup_drain_probe_bw():
    cc = Bbr(initial_rtt=0.05)
    assert cc.mode == BBR_STARTUP and cc.in_slow_start()
    assert cc.pacing_rate() == pytest.approx(2.885 * cc.congestion_window / 0.05)
    now, d = 0.0, 0
    for r in (1e5, 2e5, 4e5, 8e5):                 # growing: stays in startup
        now, d = _bbr_feed(cc, r, 0.05, 1, now, d)
    assert cc.mode == BBR_STARTUP and not cc.filled_pipe and cc.round_count >= 4
    now, d = _bbr_feed(cc, 8e5, 0.05, 4, now, d)    # plateau: pipe full after 3 rounds
    assert cc.filled_pipe and cc.btl_bw == pytest.approx(8e5)
    assert cc.mode in (BBR_DRAIN, BBR_PROBE_BW)
    cc.bytes_in_flight = 0                          # drained
    now, d = _bbr_feed(cc, 8e5, 0.05, 1, now, d)
    assert cc.mode == BBR_PROBE_BW and not cc.in_slow_start()
    bdp = 8e5 * 0.05
    assert cc.congestion_window <= 2 * bdp + 3 * MDS
    assert cc.pacing_rate() == pytest.approx(cc.pacing_gain * 8e5)
    gains = set()
    cc.bytes_in_flight = int(2 * bdp)               # cwnd-limited: the 1.25 phase can end
    for _ in range(40):
        now, d = _bbr_feed(cc, 8e5, 0.05, 1, now, d)
        gains.add(cc.pacing_gain)
    assert gains == {1.25, 0.75, 1.0}


def test_bbr_bandwidth_filter_forgets_after_ten_rounds():
    cc = Bbr()
    now, d = _bbr_feed(cc, 1e6, 0.05, 1)
    assert cc.btl_bw == pytest.approx(1e6)
    now, d = _bbr_feed(cc, 2e5, 0.05, 9, now, d)
    assert cc.btl_bw == pytest.approx(1e6)
    now, d = _bbr_feed(cc, 2e5, 0.05, 2, now, d)
    assert cc.btl_bw == pytest.approx(2e5)
    # app-limited samples below the estimate are ignored, above it they count
    now, d = _bbr_feed(cc, 1e5, 0.05, 12, now, d, app_limited=True)
    assert cc.btl_bw == pytest.approx(2e5)
    now, d = _bbr_feed(cc, 3e5, 0.05, 1, now, d, app_limited=True)
    assert cc.btl_bw == pytest.approx(3e5)


def test_bbr_lossy_round_ends_startup_but_random_loss_does_not():
    cc = Bbr()
    now, d = _bbr_feed(cc, 1e5, 0.05, 1)
    now, d = _bbr_feed(cc, 2e5, 0.05, 1, now, d)
    cc.on_packets_lost(3 * MDS, now)                # 3 datagrams: below the minimum count
    now, d = _bbr_feed(cc, 4e5, 0.05, 1, now, d)
    assert not cc.filled_pipe
    cc.on_packets_lost(20 * MDS, now)               # > 2 % of the round and >= 8 datagrams
    now, d = _bbr_feed(cc, 8e5, 0.05, 1, now, d)
    assert cc.filled_pipe and cc.mode in (BBR_DRAIN, BBR_PROBE_BW)
    w = cc.congestion_window
    cc.on_packet_sent(MDS, now)
    lose(cc, MDS, now, now)                         # single losses never cut the window
    assert cc.congestion_window == w


def test_bbr_probe_rtt_every_window():
    cc = Bbr(min_rtt_window=1.0, probe_rtt_duration=0.2)
    now, d = _bbr_feed(cc, 1e6, 0.05, 3)
    now, d = _bbr_feed(cc, 1e6, 0.06, 20, now, d)   # no lower RTT for > 1 s
    assert cc.mode == BBR_PROBE_RTT and cc.probe_rtt_rounds == 1
    assert cc.congestion_window == 4 * MDS
    cc.bytes_in_flight = 2 * MDS
    now, d = _bbr_feed(cc, 1e6, 0.05, 6, now, d)
    assert cc.mode != BBR_PROBE_RTT and cc.congestion_window > 4 * MDS
    assert cc.min_rtt == pytest.approx(0.05)


def test_bbr_persistent_congestion_restores_window():
    cc = Bbr()
    now, d = _bbr_feed(cc, 1e6, 0.05, 3)
    w = cc.congestion_window
    cc.on_persistent_congestion(now)
    assert cc.congestion_window == cc.minimum_window == 4 * MDS
    cc.on_packet_sent(MDS, now)
    ack(cc, MDS, now, now + 0.05)
    assert cc.congestion_window >= w


def test_pacer_uses_controller_rate():
    p = Pacer(MDS, burst_packets=2)
    p.update(100 * MDS, 0.1, False, 1e6)
    assert p.rate == 1e6
    p.update(100 * MDS, 0.1, False, 0.0)
    assert p.rate == pytest.approx(1.25 * 100 * MDS / 0.1)
    assert NewReno().pacing_rate() == 0.0 and Cubic().pacing_rate() == 0.0


def test_pacer_burst_with_controller_rate_is_about_a_millisecond():
    p = Pacer(MDS, burst_packets=10)
    p.update(100 * MDS, 0.1, False, 1.25e6)          # 10 Mbit/s: 1 ms is 1250 bytes
    assert p.capacity == 2 * MDS                      # floor of two datagrams
    sent = 0
    while p.next_send_time(0.0) <= 0.0:
        p.on_sent(MDS, 0.0)
        sent += 1
        assert sent <= 10
    assert sent == 2
    p.update(100 * MDS, 0.1, False, 12.5e6 / 2)       # 50 Mbit/s: 6250 bytes
    assert p.capacity == pytest.approx(6250.0)
    p.update(100 * MDS, 0.1, False, 1e9)               # fast: max_burst_packets caps it
    assert p.capacity == 64 * MDS
    p.update(100 * MDS, 0.1)                           # window-derived rate: full burst
    assert p.capacity == 10 * MDS
    p.update(1000 * MDS, 0.001)                        # window-derived, fast: 1 ms of the rate
    assert p.capacity == 64 * MDS
    p.update(1000 * MDS, 0.05)                         # 30 MB/s: 1 ms is 30 kB
    assert p.capacity == pytest.approx(1.25 * 1000 * MDS / 0.05 * 0.001)
    p.update(20 * MDS, 0.001)                          # never more than the window
    assert p.capacity == 20 * MDS
    assert Pacer(MDS, burst_time=0.01).burst_time == 0.01
    with pytest.raises(ValueError):
        Pacer(MDS, burst_time=-1.0)


def _bbr_in_probe_bw(rate=1e6, rtt=0.05, seed=1):
    cc = Bbr(initial_rtt=rtt, seed=seed)
    now, d = 0.0, 0
    for r in (rate / 8, rate / 4, rate / 2, rate):
        now, d = _bbr_feed(cc, r, rtt, 1, now, d)
    now, d = _bbr_feed(cc, rate, rtt, 4, now, d)
    cc.bytes_in_flight = 0
    now, d = _bbr_feed(cc, rate, rtt, 1, now, d)
    assert cc.mode == BBR_PROBE_BW
    return cc, now, d


def test_bbr_lossy_round_drops_older_bandwidth_maxima():
    cc, now, d = _bbr_in_probe_bw(1e6)
    now, d = _bbr_feed(cc, 6e5, 0.05, 3, now, d)       # lower samples: the max still holds
    assert cc.btl_bw == pytest.approx(1e6) and cc.bw_resets == 0
    cc.on_packets_lost(2 * MDS, now)                    # below 8 datagrams: not a lossy round
    now, d = _bbr_feed(cc, 6e5, 0.05, 1, now, d)
    assert cc.btl_bw == pytest.approx(1e6) and cc.bw_resets == 0
    cc.on_packets_lost(20 * MDS, now)                   # > 2 % and >= 8 datagrams
    now, d = _bbr_feed(cc, 6e5, 0.05, 1, now, d)
    assert cc.bw_resets == 1
    assert cc.btl_bw == pytest.approx(6e5)             # what the path delivers now
    now, d = _bbr_feed(cc, 7e5, 0.05, 1, now, d)       # and it rises again with the samples
    assert cc.btl_bw == pytest.approx(7e5)


def test_bbr_lossy_round_in_startup_does_not_reset_the_filter():
    cc = Bbr()
    now, d = _bbr_feed(cc, 1e5, 0.05, 1)
    now, d = _bbr_feed(cc, 4e5, 0.05, 1, now, d)
    cc.on_packets_lost(20 * MDS, now)
    now, d = _bbr_feed(cc, 2e5, 0.05, 1, now, d)
    assert cc.filled_pipe and cc.bw_resets == 0 and cc.btl_bw == pytest.approx(4e5)


def test_bbr_start_phase_differs_between_flows_with_one_seed():
    # Flows that leave PROBE_RTT together must not probe in step even though every
    # connection is built with the default seed: the flow's delivered bytes are mixed in.
    phases = set()
    for per_round in range(2, 14):
        cc = Bbr(initial_rtt=0.05)
        now, d = 0.0, 0
        for r in (1.25e5, 2.5e5, 5e5, 1e6):
            now, d = _bbr_feed(cc, r, 0.05, 1, now, d, per_round=per_round)
        now, d = _bbr_feed(cc, 1e6, 0.05, 4, now, d, per_round=per_round)
        cc.bytes_in_flight = 0
        now, d = _bbr_feed(cc, 1e6, 0.05, 1, now, d, per_round=per_round)
        assert cc.mode == BBR_PROBE_BW and cc.pacing_gain != 0.75
        phases.add(cc.cycle_index)
    assert len(phases) >= 3
    # deterministic: the same history gives the same phase
    a, _, _ = _bbr_in_probe_bw(seed=7)
    b, _, _ = _bbr_in_probe_bw(seed=7)
    assert a.cycle_index == b.cycle_index
