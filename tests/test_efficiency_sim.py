"""Transfer efficiency of the congestion controllers over the simulator (no packet protection).

Each scenario is seeded and deterministic. The figures asserted are the ones measured, less
a margin; see the comments for the measured values. The paths:

* lossy: 1 % random loss, 50 ms RTT (25 ms each way), 100 Mbit/s bottleneck with a queue of
  one bandwidth-delay product, 30 s of bulk transfer;
* blackhole: 2 s during which every datagram in both directions is dropped;
* shared: two connections from two clients through one bottleneck queue;
* reordering: 2 % of datagrams delayed by 10 ms, no loss.
"""
import pytest

from dquic.config import Configuration
from dquic.endpoint import Endpoint
from dquic.testing.apps import CLIENT_ADDR, SERVER_ADDR, EndpointNode, make_pair
from dquic.testing.sim import LinkConfig, jain_fairness

RTT = 0.05
MBIT = 1e6


def _configs(cc):
    return (Configuration(encryption=False, congestion_control=cc),
            Configuration(is_client=False, encryption=False, congestion_control=cc))


def _bulk(cc, bandwidth, seconds, seed, **impairments):
    """A client uploading one large message over the given path; returns the network, the
    server node and the client connection once the handshake is done and the data queued."""
    bdp = int(bandwidth / 8 * RTT)
    fwd = LinkConfig(delay=RTT / 2, bandwidth=bandwidth, queue_limit=bdp, **impairments)
    rev_kw = {"blackholes": impairments["blackholes"]} if "blackholes" in impairments else {}
    rev = LinkConfig(delay=RTT / 2, **rev_kw)
    ccfg, scfg = _configs(cc)
    net, client, server, conn = make_pair(fwd, reverse=rev, seed=seed, client_config=ccfg,
                                          server_config=scfg)
    net.run(until=lambda: conn.handshake_complete, max_time=5.0)
    conn.send_message(0, bytes(int(bandwidth / 8 * seconds * 1.2)))
    return net, server, conn


def _goodput(net, server, seconds):
    start = server.bytes_received
    net.run_for(seconds)
    return (server.bytes_received - start) * 8 / seconds


# ---------------------------------------------------------------- (a) + (b) 1 % random loss
# Measured (seed 1, 30 s, bits of application data per second over 100 Mbit/s):
#   cubic 2.6 Mbit/s, newreno 2.1 Mbit/s, bbr 92.3 Mbit/s (bbr 87 Mbit/s when the connection
#   paces at cc.pacing_rate(), measured over 10 s).
# CUBIC and NewReno sit where their response functions put them: at p = 1 % the Reno-friendly
# window 1.22 / sqrt(p) ~ 12 datagrams per 50 ms RTT ~ 2.4-3 Mbit/s (RFC 9438 §5.1); the cubic
# term alone would allow even less at this RTT. Only a controller that does not treat random
# loss as congestion (BBR) can use the path.
LOSSY_MIN = {"cubic": 2.0 * MBIT, "newreno": 1.6 * MBIT, "bbr": 75 * MBIT}


@pytest.mark.parametrize("cc", ["cubic", "newreno", "bbr"])
def test_goodput_with_one_percent_random_loss(cc):
    bandwidth = 100 * MBIT
    net, server, conn = _bulk(cc, bandwidth, 30.0, seed=1, loss=0.01)
    goodput = _goodput(net, server, 30.0)
    st = conn.stats
    print(f"lossy {cc}: {goodput / MBIT:.1f} Mbit/s, lost {st.bytes_lost}, "
          f"retransmitted {st.bytes_retransmitted}, spurious {st.spurious_losses}")
    assert goodput >= LOSSY_MIN[cc], goodput
    assert goodput <= bandwidth
    # (b) no more retransmitted than lost (ratio measured 0.98 for each controller)
    assert st.bytes_lost > 0
    assert st.bytes_retransmitted <= 1.5 * st.bytes_lost
    assert st.spurious_losses <= 0.05 * st.packets_lost


# ---------------------------------------------------------------- (c) 2 s blackhole
@pytest.mark.parametrize("cc", ["cubic", "bbr"])
def test_recovers_quickly_after_blackhole(cc):
    bandwidth = 20 * MBIT
    hole = (3.0, 5.0)
    net, server, conn = _bulk(cc, bandwidth, 12.0, seed=2, blackholes=[hole])
    net.run_for(hole[0] - net.now)
    before = conn.stats
    net.run_for(hole[1] - net.now)
    during = conn.stats
    # resend of what the blackhole swallowed is bounded by what was in flight, not a storm
    assert during.packets_sent - before.packets_sent <= before.cwnd // 1200 + 20
    step = 0.05
    rates = []
    for _ in range(int(3.0 / step)):
        rates.append(_goodput(net, server, step))
    after = conn.stats
    first_good = next((i for i, r in enumerate(rates) if r >= 0.5 * bandwidth), None)
    first_flow = next((i for i, r in enumerate(rates) if r > 0), None)
    assert first_good is not None and first_flow is not None
    recovery_time = (first_good + 1) * step
    # most of the wait is the exponentially backed-off PTO (RFC 9002 §6.2.1) finding the
    # path again; once a probe gets through, half the bottleneck is reached within a few RTTs
    ramp = (first_good - first_flow) * step
    print(f"blackhole {cc}: first delivery {first_flow * step:.2f} s after, ramp {ramp:.2f} s")
    assert ramp <= RAMP_MAX[cc], ramp
    print(f"blackhole {cc}: recovered in {recovery_time:.2f} s, sent during "
          f"{during.packets_sent - before.packets_sent}, retransmitted "
          f"{after.bytes_retransmitted - before.bytes_retransmitted}, lost "
          f"{after.bytes_lost - before.bytes_lost}")
    assert recovery_time <= RECOVERY_MAX[cc], recovery_time
    assert after.bytes_retransmitted - before.bytes_retransmitted <= 2 * (
        after.bytes_lost - before.bytes_lost) + 200_000


RECOVERY_MAX = {"cubic": 2.5, "bbr": 2.5}      # measured 1.85 s and 0.55 s
RAMP_MAX = {"cubic": 0.15, "bbr": 0.15}       # measured 0.00 s (first 50 ms step)


# ---------------------------------------------------------------- (d) two flows, one bottleneck
# Measured (seed 3, last 20 of 30 s, 10 Mbit/s): cubic 4.2 / 5.6 Mbit/s (Jain 0.98), bbr pacing
# at its own rate 5.1 / 4.7 Mbit/s (Jain 0.998; with other Bbr seeds 0.997-1.0). Each BBR flow
# keeps its bandwidth maximum for ten rounds, so the estimates add up to more than the link and
# the queue overflows (~5 % loss per flow); a lossy round drops a flow's older maxima, which is
# what lets a late-starting flow catch up.
@pytest.mark.parametrize("cc", ["cubic", "bbr"])
def test_two_connections_share_a_bottleneck(cc):
    bandwidth = 10 * MBIT
    bdp = int(bandwidth / 8 * RTT)
    ccfg, scfg = _configs(cc)
    net, c1, server, conn1 = make_pair(seed=3, client_config=ccfg, server_config=scfg)
    c2_addr = ("198.51.100.8", 50001)
    c2 = EndpointNode(Endpoint(ccfg, random_bytes=_rand(4)))
    net.add_node(c2, c2_addr)
    fwd = LinkConfig(delay=RTT / 2, bandwidth=bandwidth, queue_limit=bdp)
    rev = LinkConfig(delay=RTT / 2)
    net.link(CLIENT_ADDR, SERVER_ADDR, fwd, rev)
    net.link(c2_addr, SERVER_ADDR, fwd, rev)
    net.share_bottleneck((CLIENT_ADDR, SERVER_ADDR), (c2_addr, SERVER_ADDR))
    conn2 = c2.endpoint.connect(SERVER_ADDR, net.now)
    net.run(until=lambda: conn1.handshake_complete and conn2.handshake_complete, max_time=5.0)
    total = int(bandwidth / 8 * 30)
    conn1.send_message(0, bytes(total))
    net.run_for(0.5)                              # the second flow joins a busy path
    conn2.send_message(0, bytes(total))
    net.run_for(10.0)
    start = {c: c.stream_bytes_received for c in server.endpoint.connections}
    net.run_for(20.0)
    shares = [c.stream_bytes_received - start[c] for c in server.endpoint.connections]
    assert len(shares) == 2
    print(f"shared {cc}: {[x * 8 / 20.0 / MBIT for x in shares]} Mbit/s")
    fairness = jain_fairness(shares)
    utilisation = sum(shares) * 8 / 20.0 / bandwidth
    assert fairness >= 0.95, (fairness, shares)
    assert utilisation >= 0.85, utilisation


def _rand(seed):
    import random

    rng = random.Random(seed)
    return lambda n: bytes(rng.getrandbits(8) for _ in range(n))


# ---------------------------------------------------------------- (e) reordering only
@pytest.mark.parametrize("cc", ["cubic"])
def test_reordering_is_not_mistaken_for_loss(cc):
    bandwidth = 100 * MBIT
    net, server, conn = _bulk(cc, bandwidth, 6.0, seed=5, reorder=0.02, reorder_delay=0.010)
    goodput = _goodput(net, server, 6.0)
    st = conn.stats
    print(f"reordering {cc}: {goodput / MBIT:.1f} Mbit/s, spurious {st.spurious_losses}, "
          f"lost {st.packets_lost}")
    # thousands of datagrams are reordered; only the first few are taken for losses before
    # the thresholds adapt, and those reductions are undone
    assert st.spurious_losses <= 50, st.spurious_losses
    assert goodput >= 0.8 * bandwidth, goodput
